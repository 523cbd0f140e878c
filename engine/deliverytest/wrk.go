package deliverytest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
)

// WRK-01: DefaultWorkerConfig ⇒ batch 64, idle 10 ms, RestartOnce, no
// checkpoint id, no hooks.
func scenarioWRK01(t *testing.T, _ NewEnv) {
	cfg := delivery.DefaultWorkerConfig()
	if cfg.BatchSize != 64 || cfg.IdleTimeout != 10*time.Millisecond {
		t.Fatalf("batch %d, idle %v, want 64, 10ms", cfg.BatchSize, cfg.IdleTimeout)
	}
	if _, ok := cfg.Restart.(delivery.RestartOnce); !ok {
		t.Fatalf("restart policy %v, want RestartOnce", cfg.Restart)
	}
	if cfg.CheckpointID != "" || cfg.Checkpoints != nil {
		t.Fatalf("checkpoint id %q / store %v, want in-memory", cfg.CheckpointID, cfg.Checkpoints)
	}
	if cfg.OnRestartBudgetExhausted != nil || cfg.OnCheckpointFailure != nil {
		t.Fatal("default config has hooks")
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
}

// WRK-02: a durable worker passes a witness with its id with every batch;
// an in-memory worker passes nil.
func scenarioWRK02(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "wrk02", 3)
	run := func(cfg delivery.WorkerConfig) (*delivery.Worker, []*delivery.AtLeastOnce) {
		var mu sync.Mutex
		var got []*delivery.AtLeastOnce
		cfg.BatchSize = 1
		w := startWorker(t, env.Source, regionOf("wrk02"), cfg, func(_ context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
			mu.Lock()
			got = append(got, d.Witness)
			mu.Unlock()
			if b[0].Seq == seqs[2] {
				return delivery.Stop
			}
			return delivery.Continue
		})
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join = %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 3 {
			t.Fatalf("%d batches, want 3", len(got))
		}
		return w, got
	}
	w, got := run(durableConfig(env, "wrk-02"))
	for i, wit := range got {
		if wit == nil || wit != w.Witness() || wit.CheckpointID() != "wrk-02" {
			t.Fatalf("durable batch %d: witness %v, want the worker's witness for %q", i, wit, "wrk-02")
		}
	}
	w, got = run(delivery.DefaultWorkerConfig())
	if w.Witness() != nil {
		t.Fatal("in-memory worker has a witness")
	}
	for i, wit := range got {
		if wit != nil {
			t.Fatalf("in-memory batch %d: witness %v, want nil", i, wit)
		}
	}
}

// WRK-03: Stop on the first batch ⇒ Join (no stop requested) is nil; the
// record is that batch's last seq.
func scenarioWRK03(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "wrk-03"
	seqs := appendN(t, env, "wrk03", 3)
	calls := newTally()
	w := startWorker(t, env.Source, regionOf("wrk03"), durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		calls.add(b)
		return delivery.Stop
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	_, batches := calls.snapshot()
	if len(batches) != 1 || !slices.Equal(batches[0], seqs) {
		t.Fatalf("batches %v, want one batch %v", batches, seqs)
	}
	wantRecord(t, env, id, seqs[2])
}

// wrk04 runs WRK-04 on seqs (5 events): Continue@e1, StopWithRollback@e2
// ⇒ record (e1, true), Join nil.
func wrk04(t *testing.T, env Env, id string, seqs []uint64, calls *tally) {
	t.Helper()
	cfg := durableConfig(env, id)
	cfg.BatchSize = 1
	w := startWorker(t, env.Source, regionOf("wrk04"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		calls.add(b)
		if b[0].Seq == seqs[0] {
			return delivery.Continue
		}
		return delivery.StopWithRollback
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("WRK-04 run: Join = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 1})
	wantRecord(t, env, id, seqs[0])
}

// WRK-04: Continue@e1, StopWithRollback@e2 ⇒ record (e1, true); Join nil.
func scenarioWRK04(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	wrk04(t, env, "wrk-04", appendN(t, env, "wrk04", 5), newTally())
}

// WRK-05: after WRK-04, same id, batch 1: Continue@e2, e3, panic once @e4,
// Continue@e4, Stop@e5 ⇒ counts over both runs {1:1, 2:2, 3:1, 4:2, 5:1};
// record e5.
func scenarioWRK05(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "wrk-05"
	seqs := appendN(t, env, "wrk04", 5)
	calls := newTally()
	wrk04(t, env, id, seqs, calls)
	cfg := durableConfig(env, id)
	cfg.BatchSize = 1
	cfg.Retry = delivery.NoRetry() // the restart policy's own behaviour, without retries
	w := startWorker(t, env.Source, regionOf("wrk04"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		n := calls.add(b)
		switch b[0].Seq {
		case seqs[3]:
			if n == 1 {
				panic("wrk-05: one-shot failure at e4")
			}
		case seqs[4]:
			return delivery.Stop
		}
		return delivery.Continue
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 2, seqs[2]: 1, seqs[3]: 2, seqs[4]: 1})
	wantRecord(t, env, id, seqs[4])
	if st := w.Stats(); st.Restarts != 1 {
		t.Fatalf("restarts %d, want 1", st.Restarts)
	}
}

// WRK-06: durable, no record, StopWithRollback on the first batch ⇒ still
// no record.
func scenarioWRK06(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "wrk-06"
	appendN(t, env, "wrk06", 2)
	calls := newTally()
	w := startWorker(t, env.Source, regionOf("wrk06"), durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		calls.add(b)
		return delivery.StopWithRollback
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	if n := calls.calls(); n != 1 {
		t.Fatalf("handler called %d times, want 1", n)
	}
	wantNoRecord(t, env, id)
	if st := w.Stats(); st.Saves != 0 || st.CommittedStarted {
		t.Fatalf("stats %+v, want no save and nothing committed", st)
	}
}

// WRK-07: idle timeout 10 s: a matching publish runs the parked worker's
// handler in under a second.
func scenarioWRK07(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	spy := &spySource{Source: env.Source}
	entered := make(chan time.Time, 1)
	cfg := durableConfig(env, "wrk-07")
	cfg.IdleTimeout = 10 * time.Second
	w := startWorker(t, spy, regionOf("wrk07"), cfg, func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action {
		entered <- time.Now()
		return delivery.Continue
	})
	eventually(t, "the worker to park", func() bool { return spy.parks.Load() > 0 })
	published := time.Now()
	seq := appendN(t, env, "wrk07", 1)[0]
	var ran time.Time
	select {
	case ran = <-entered:
	case <-time.After(waitLimit):
		t.Fatalf("handler not run within %v of the publish", waitLimit)
	}
	latency := ran.Sub(published)
	t.Logf("publish-to-handler latency %v (idle timeout 10s)", latency)
	if latency >= time.Second {
		t.Fatalf("handler ran %v after the publish, want < 1s", latency)
	}
	eventually(t, "the batch to commit", func() bool { return w.Stats().Committed == seq })
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
}

// WRK-08: idle timeout 10 s: StopAndJoin of a parked worker returns at
// once (target 100 ms; bound 1 s); the handler never ran.
func scenarioWRK08(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	spy := &spySource{Source: env.Source}
	calls := newTally()
	cfg := durableConfig(env, "wrk-08")
	cfg.IdleTimeout = 10 * time.Second
	w := startWorker(t, spy, regionOf("wrk08"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		calls.add(b)
		return delivery.Continue
	})
	eventually(t, "the worker to park", func() bool { return spy.parks.Load() > 0 })
	begin := time.Now()
	err := stopAndJoinWithin(t, w)
	took := time.Since(begin)
	t.Logf("StopAndJoin of a parked worker took %v (target < 100ms, bound 1s)", took)
	if err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	if took >= time.Second {
		t.Fatalf("StopAndJoin took %v, want < 1s", took)
	}
	if n := calls.calls(); n != 0 {
		t.Fatalf("handler called %d times, want never", n)
	}
}

// WRK-09: Stop while the handler is busy ⇒ the batch completes and is
// saved, and the worker exits without another poll. (The catalogue's
// 300 ms block is a handler held until the test has called Stop.)
func scenarioWRK09(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "wrk-09"
	seqs := appendN(t, env, "wrk09", 2)
	spy := &spySource{Source: env.Source}
	hand := newHandoff()
	cfg := durableConfig(env, id)
	cfg.BatchSize = 1
	w := startWorker(t, spy, regionOf("wrk09"), cfg, hand.handler)
	if b := hand.next(t); b[0].Seq != seqs[0] {
		t.Fatalf("first batch at %d, want %d", b[0].Seq, seqs[0])
	}
	w.Stop()
	polls := spy.polls.Load() // the worker is inside the handler: no poll runs now
	hand.answer(t, delivery.Continue)
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	wantRecord(t, env, id, seqs[0])
	if got := spy.polls.Load(); got != polls {
		t.Fatalf("%d polls after Stop, want none", got-polls)
	}
	if st := w.Stats(); st.Batches != 1 || st.Saves != 1 {
		t.Fatalf("stats %+v, want 1 batch, 1 save", st)
	}
}

// WRK-10: a worker whose start context is cancelled, never joined, exits
// promptly and releases its source: the store can then close. This
// scenario closes env.Store itself; the backend's cleanup must tolerate it.
func scenarioWRK10(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "wrk10", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := newTally()
	w := startWorkerCtx(t, ctx, env.Source, regionOf("wrk10"), durableConfig(env, "wrk-10"), func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		calls.add(b)
		return delivery.Continue
	})
	eventually(t, "the first batch", func() bool { return calls.count(seqs[0]) == 1 })
	begin := time.Now()
	cancel()
	select {
	case <-w.Done():
	case <-time.After(waitLimit):
		t.Fatalf("worker still running %v after its start context was cancelled", waitLimit)
	}
	t.Logf("exit after cancel took %v", time.Since(begin))
	if err := env.Store.Close(); err != nil {
		t.Fatalf("store Close after the worker exited: %v", err)
	}
}

// WRK-11: batch 1 ⇒ one entry per call; batch 8 with 20 pending ⇒ 8, 8, 4.
func scenarioWRK11(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "wrk11", 20)
	sizes := func(batch int) []int {
		calls := newTally()
		cfg := delivery.DefaultWorkerConfig()
		cfg.BatchSize = batch
		w := startWorker(t, env.Source, regionOf("wrk11"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
			calls.add(b)
			if b[len(b)-1].Seq == seqs[len(seqs)-1] {
				return delivery.Stop
			}
			return delivery.Continue
		})
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("batch %d: Join = %v", batch, err)
		}
		if got := calls.delivered(); !slices.Equal(got, seqs) {
			t.Fatalf("batch %d: delivered %v, want %v", batch, got, seqs)
		}
		_, batches := calls.snapshot()
		out := make([]int, len(batches))
		for i, b := range batches {
			out[i] = len(b)
		}
		return out
	}
	if got := sizes(8); !slices.Equal(got, []int{8, 8, 4}) {
		t.Fatalf("batch 8 sizes %v, want [8 8 4]", got)
	}
	got := sizes(1)
	if len(got) != 20 || slices.ContainsFunc(got, func(n int) bool { return n != 1 }) {
		t.Fatalf("batch 1 sizes %v, want 20 × 1", got)
	}
}

// WRK-12: an in-memory worker handled 3 and stopped; a new one redelivers
// all 3.
func scenarioWRK12(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "wrk12", 3)
	run := func() []uint64 {
		calls := newTally()
		cfg := delivery.DefaultWorkerConfig()
		cfg.BatchSize = 1
		w := startWorker(t, env.Source, regionOf("wrk12"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
			calls.add(b)
			if b[0].Seq == seqs[2] {
				return delivery.Stop
			}
			return delivery.Continue
		})
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join = %v", err)
		}
		return calls.delivered()
	}
	if got := run(); !slices.Equal(got, seqs) {
		t.Fatalf("first worker got %v, want %v", got, seqs)
	}
	if got := run(); !slices.Equal(got, seqs) {
		t.Fatalf("second worker got %v, want all of %v again", got, seqs)
	}
}

// WRK-13: the worker-level face of "first error wins": Join returns the
// one recorded error, the same to every call and to StopAndJoin. (The
// two-failure unit case is engine's restart_test.go.)
func scenarioWRK13(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "wrk-13"
	env.PlantRecord(t, id, []byte("not-msgpack"))
	w := startWorker(t, env.Source, regionOf("wrk13"), durableConfig(env, id), func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action {
		return delivery.Continue
	})
	first := joinWithin(t, w)
	wantErr(t, "Join", first, checkpoint.ErrCorrupt)
	for i := 0; i < 3; i++ {
		if err := w.Join(); err != first {
			t.Fatalf("Join call %d = %v, want the first result %v", i+2, err, first)
		}
	}
	if err := w.StopAndJoin(); err != first {
		t.Fatalf("StopAndJoin = %v, want %v", err, first)
	}
}

// WRK-14: a source whose Poll panics ⇒ Join ErrWorkerCrashed; the process
// and the store live on.
func scenarioWRK14(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	appendN(t, env, "wrk14", 1)
	spy := &spySource{Source: env.Source, pollPanic: "wrk-14: poll exploded"}
	calls := newTally()
	w := startWorker(t, spy, regionOf("wrk14"), delivery.DefaultWorkerConfig(), func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		calls.add(b)
		return delivery.Continue
	})
	err := joinWithin(t, w)
	wantErr(t, "Join", err, delivery.ErrWorkerCrashed)
	var wc *delivery.WorkerCrashedError
	if !errors.As(err, &wc) || !strings.Contains(wc.Panic, "poll exploded") {
		t.Fatalf("Join = %v, want a *WorkerCrashedError carrying the panic text", err)
	}
	if n := calls.calls(); n != 0 {
		t.Fatalf("handler called %d times, want never", n)
	}
	appendN(t, env, "wrk14", 1) // the store still works
}

// WRK-15: batch 0, idle 0 or -1 ms ⇒ ErrInvalidConfig; a bad id ⇒
// ErrInvalidID; a bad region ⇒ ErrInvalidRegion; all from
// StartWorker, with nothing started.
func scenarioWRK15(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "wrk15", 1)
	good := regionOf("wrk15")
	cases := []struct {
		name   string
		region engine.Region
		edit   func(*delivery.WorkerConfig)
		want   []error
	}{
		{"batch-0", good, func(c *delivery.WorkerConfig) { c.BatchSize = 0 }, []error{engine.ErrInvalidConfig}},
		{"idle-0", good, func(c *delivery.WorkerConfig) { c.IdleTimeout = 0 }, []error{engine.ErrInvalidConfig}},
		{"idle-negative", good, func(c *delivery.WorkerConfig) { c.IdleTimeout = -time.Millisecond }, []error{engine.ErrInvalidConfig}},
		{"bad-id", good, func(c *delivery.WorkerConfig) {
			c.CheckpointID, c.Checkpoints = "with/slash", env.Checkpoints
		}, []error{checkpoint.ErrInvalidID, engine.ErrPathTraversal}},
		{"bad-region", engine.RegionEntity("*"), func(*delivery.WorkerConfig) {}, []error{engine.ErrInvalidRegion, engine.ErrEntityPrefixStar}},
	}
	bad := newTally()
	for _, tc := range cases {
		cfg := delivery.DefaultWorkerConfig()
		tc.edit(&cfg)
		w, err := delivery.StartWorker(context.Background(), env.Source, tc.region, cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
			bad.add(b)
			return delivery.Continue
		})
		if w != nil {
			w.Stop()
			t.Fatalf("%s: StartWorker returned a worker (err %v)", tc.name, err)
		}
		wantErr(t, tc.name, err, tc.want...)
	}
	// A valid worker on the same event runs and ends; the rejected ones
	// never called their handler.
	calls := newTally()
	w := startWorker(t, env.Source, good, delivery.DefaultWorkerConfig(), func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		calls.add(b)
		return delivery.Stop
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("valid worker Join = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1})
	if n := bad.calls(); n != 0 {
		t.Fatalf("rejected workers' handler called %d times", n)
	}
}

// ---------------------------------------------------------------------------
// Gap observations
