package deliverytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
)

// RST-01: RestartBounded{2, 5 s}, one-shot panic at e2, batch 1 ⇒ counts
// {1:1, 2:2, 3:1}; StopAndJoin nil.
func scenarioRST01(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "rst01", 3)
	calls := newTally()
	cfg := delivery.DefaultWorkerConfig()
	cfg.Retry = delivery.NoRetry() // the restart policy's own behaviour, without retries
	cfg.BatchSize = 1
	cfg.Restart = delivery.RestartBounded{MaxRestarts: 2, Within: 5 * time.Second}
	w := startWorker(t, env.Source, regionOf("rst01"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		if n := calls.add(b); b[0].Seq == seqs[1] && n == 1 {
			panic("rst-01: one-shot")
		}
		return delivery.Continue
	})
	eventually(t, "e3 to be handled", func() bool { return calls.count(seqs[2]) > 0 })
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 2, seqs[2]: 1})
	if st := w.Stats(); st.Restarts != 1 {
		t.Fatalf("restarts %d, want 1", st.Restarts)
	}
	if got := w.LastPanic(); got != "rst-01: one-shot" {
		t.Fatalf("LastPanic = %q", got)
	}
}

// alwaysPanics runs a worker whose handler panics on every call under
// policy and returns it with the number of calls and the hook's calls.
func alwaysPanics(t *testing.T, env Env, name string, policy delivery.RestartPolicy) (w *delivery.Worker, calls int, hook []string, err error) {
	t.Helper()
	appendN(t, env, name, 1)
	var n atomic.Int64
	var hookMu sync.Mutex
	cfg := delivery.DefaultWorkerConfig()
	cfg.Retry = delivery.NoRetry() // the restart policy's own behaviour, without retries
	cfg.Restart = policy
	cfg.OnRestartBudgetExhausted = func(last string) {
		hookMu.Lock()
		hook = append(hook, last)
		hookMu.Unlock()
	}
	w = startWorker(t, env.Source, regionOf(name), cfg, func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action {
		panic(fmt.Sprintf("boom %d", n.Add(1)))
	})
	err = joinWithin(t, w)
	hookMu.Lock()
	defer hookMu.Unlock()
	return w, int(n.Load()), slices.Clone(hook), err
}

// RST-02: RestartBounded{1, 5 s}, always panics ⇒ 2 invocations,
// ErrRestartBudgetExhausted; the store still accepts appends.
func scenarioRST02(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	_, calls, _, err := alwaysPanics(t, env, "rst02", delivery.RestartBounded{MaxRestarts: 1, Within: 5 * time.Second})
	wantErr(t, "Join", err, delivery.ErrRestartBudgetExhausted)
	if calls != 2 {
		t.Fatalf("%d invocations, want 2", calls)
	}
	appendN(t, env, "rst02", 1)
}

// RST-03: RestartOnce, always panics ⇒ 2 invocations, the hook fires once,
// ErrRestartBudgetExhausted carries the last panic text.
func scenarioRST03(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	w, calls, hook, err := alwaysPanics(t, env, "rst03", delivery.RestartOnce{})
	wantErr(t, "Join", err, delivery.ErrRestartBudgetExhausted)
	if calls != 2 {
		t.Fatalf("%d invocations, want 2", calls)
	}
	var be *delivery.BudgetExhaustedError
	if !errors.As(err, &be) || be.LastPanic != "boom 2" {
		t.Fatalf("Join = %v, want a *BudgetExhaustedError with last panic %q", err, "boom 2")
	}
	if !slices.Equal(hook, []string{"boom 2"}) {
		t.Fatalf("hook calls %q, want exactly one with %q", hook, "boom 2")
	}
	if got := w.LastPanic(); got != "boom 2" {
		t.Fatalf("LastPanic = %q, want %q", got, "boom 2")
	}
}

// RST-04: RestartBounded{0, any} ⇒ 1 invocation, exhausted.
func scenarioRST04(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	_, calls, hook, err := alwaysPanics(t, env, "rst04", delivery.RestartBounded{MaxRestarts: 0, Within: time.Hour})
	wantErr(t, "Join", err, delivery.ErrRestartBudgetExhausted)
	if calls != 1 || len(hook) != 1 {
		t.Fatalf("%d invocations, %d hook calls, want 1 and 1", calls, len(hook))
	}
}

// RST-05: RestartBounded{1, 50 ms}; the 2nd attempt sleeps 75 ms then
// panics (the window has passed, so the count resets); the 3rd returns
// Stop ⇒ 3 attempts, Join nil. The sleep only guarantees a lower bound on
// elapsed time, which is what makes the outcome certain.
func scenarioRST05(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "rst05", 1)
	calls := newTally()
	cfg := delivery.DefaultWorkerConfig()
	cfg.Retry = delivery.NoRetry() // the restart policy's own behaviour, without retries
	cfg.Restart = delivery.RestartBounded{MaxRestarts: 1, Within: 50 * time.Millisecond}
	w := startWorker(t, env.Source, regionOf("rst05"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		switch calls.add(b) {
		case 1:
			panic("rst-05: first")
		case 2:
			time.Sleep(75 * time.Millisecond)
			panic("rst-05: second, after the window")
		}
		return delivery.Stop
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 3})
}

// RST-08: a durable worker panicking after batch k is redelivered from its
// in-memory committed position; the checkpoint store is loaded once.
func scenarioRST08(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "rst-08"
	seqs := appendN(t, env, "rst08", 3)
	rc := &recordingCheckpoints{Store: env.Checkpoints}
	calls := newTally()
	cfg := durableConfig(env, id)
	cfg.Checkpoints = rc
	cfg.BatchSize = 1
	w := startWorker(t, env.Source, regionOf("rst08"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		n := calls.add(b)
		if b[0].Seq == seqs[2] {
			if n == 1 {
				panic("rst-08: after batch 2")
			}
			return delivery.Stop
		}
		return delivery.Continue
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 1, seqs[2]: 2})
	if got := calls.delivered(); !slices.Equal(got, []uint64{seqs[0], seqs[1], seqs[2], seqs[2]}) {
		t.Fatalf("delivery order %v", got)
	}
	if n := rc.loadCount(); n != 1 {
		t.Fatalf("checkpoint store loaded %d times, want once", n)
	}
	wantRecord(t, env, id, seqs[2])
}

// RST-09: a panic value becomes text: a string as is, an error by its
// message, anything else by fmt.Sprint; exposed as LastPanic and in
// ErrRestartBudgetExhausted.
func scenarioRST09(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	appendN(t, env, "rst09", 1)
	for _, tc := range []struct {
		value any
		want  string
	}{
		{"boom", "boom"},
		{errors.New("bad"), "bad"},
		{42, "42"},
	} {
		cfg := delivery.DefaultWorkerConfig()
		cfg.Retry = delivery.NoRetry() // the restart policy's own behaviour, without retries
		cfg.Restart = delivery.RestartBounded{MaxRestarts: 0}
		w := startWorker(t, env.Source, regionOf("rst09"), cfg, func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action {
			panic(tc.value)
		})
		err := joinWithin(t, w)
		var be *delivery.BudgetExhaustedError
		if !errors.As(err, &be) || be.LastPanic != tc.want {
			t.Fatalf("panic(%#v): Join = %v, want last panic %q", tc.value, err, tc.want)
		}
		if got := w.LastPanic(); got != tc.want {
			t.Fatalf("panic(%#v): LastPanic = %q, want %q", tc.value, got, tc.want)
		}
	}
}
