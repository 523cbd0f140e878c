package delivery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/hashicorp/go-hclog"
)

// rstEpoch is the injected t=0 of the restart-window tests.
var rstEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// TestRST06_BoundedWindowInjectedClock: window from t=0,
// RestartBounded{1, 100ms}: a panic at 0 is allowed; the next at 100 ms or
// 100.9 ms (not strictly past the window in whole ms) exhausts; at 101 ms
// the window resets and it is allowed.
// Catalogue: RST-06.
func TestRST06_BoundedWindowInjectedClock(t *testing.T) {
	p := RestartBounded{MaxRestarts: 1, Within: 100 * time.Millisecond}
	for _, tc := range []struct {
		name string
		next time.Duration
		want bool
	}{
		{"100ms", 100 * time.Millisecond, false},
		{"100.9ms", 100*time.Millisecond + 900*time.Microsecond, false},
		{"101ms", 101 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := restartState{windowStart: rstEpoch}
			if !p.allow(&st, rstEpoch) {
				t.Fatal("panic at t=0 not allowed")
			}
			now := rstEpoch.Add(tc.next)
			if got := p.allow(&st, now); got != tc.want {
				t.Fatalf("panic at %v: allowed = %v, want %v", tc.next, got, tc.want)
			}
			if tc.want && (!st.windowStart.Equal(now) || st.restarts != 1) {
				t.Fatalf("after the reset: window start %v, restarts %d; want %v, 1", st.windowStart.Sub(rstEpoch), st.restarts, tc.next)
			}
		})
	}
	t.Run("zero-never-restarts", func(t *testing.T) {
		st := restartState{windowStart: rstEpoch}
		zero := RestartBounded{MaxRestarts: 0, Within: time.Millisecond}
		for _, at := range []time.Duration{0, time.Hour} {
			if zero.allow(&st, rstEpoch.Add(at)) {
				t.Fatalf("RestartBounded{0} allowed a restart at %v", at)
			}
		}
	})
	t.Run("clock-before-window", func(t *testing.T) {
		st := restartState{windowStart: rstEpoch}
		if !p.allow(&st, rstEpoch.Add(-time.Hour)) || p.allow(&st, rstEpoch.Add(-time.Hour)) {
			t.Fatal("a clock behind the window start must count as elapsed 0")
		}
	})
}

// TestRST07_OnceNeverResets: RestartOnce at t=0 and t=1h ⇒ the second
// exhausts (nothing between two panics, successes included, resets it:
// the policy is only consulted on panics).
// Catalogue: RST-07.
func TestRST07_OnceNeverResets(t *testing.T) {
	var p RestartOnce
	st := restartState{windowStart: rstEpoch}
	if !p.allow(&st, rstEpoch) {
		t.Fatal("first panic not allowed")
	}
	if p.allow(&st, rstEpoch.Add(time.Hour)) {
		t.Fatal("second panic an hour later allowed")
	}
}

// TestRST09_PanicText: a string as is, an error by Error(), anything else
// by fmt.Sprint.
// Catalogue: RST-09.
func TestRST09_PanicText(t *testing.T) {
	for _, tc := range []struct {
		value any
		want  string
	}{
		{"boom", "boom"},
		{errors.New("bad"), "bad"},
		{42, "42"},
		{fmt.Errorf("wrapped: %w", errors.New("bad")), "wrapped: bad"},
		{struct{ A, B int }{1, 2}, "{1 2}"},
		{time.Second, "1s"}, // a Stringer, through fmt.Sprint
	} {
		if got := panicText(tc.value); got != tc.want {
			t.Errorf("panicText(%#v) = %q, want %q", tc.value, got, tc.want)
		}
	}
}

// TestWRK13_FirstErrorWins: error A recorded, then failure B ⇒ Join
// returns A, to every call.
// Catalogue: WRK-13.
func TestWRK13_FirstErrorWins(t *testing.T) {
	w := &Worker{log: hclog.NewNullLogger(), done: make(chan struct{})}
	a, b := errors.New("A"), errors.New("B")
	w.record(a)
	w.record(b)
	close(w.done)
	for i := 0; i < 3; i++ {
		if err := w.Join(); err != a {
			t.Fatalf("Join call %d = %v, want the first error %v", i+1, err, a)
		}
	}
}

// rstClock is an injectable Clock whose time only moves when told to.
type rstClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *rstClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *rstClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestRST06_WorkerRestartWindowFakeClock drives the restart policies through
// real handler panics with an injected clock: the handler moves the clock
// before it panics, and the worker consults the policy at that time.
// Catalogue: RST-06.
func TestRST06_WorkerRestartWindowFakeClock(t *testing.T) {
	// step is what the handler does on one call: move the clock by
	// advance, then panic or return Continue.
	type step struct {
		advance time.Duration
		panics  bool
	}
	for _, tc := range []struct {
		name   string
		policy RestartPolicy
		events int
		steps  []step
		want   error // Join
	}{
		{
			// 0: allowed (1 of 1); 101 ms: window passed, reset, allowed;
			// 201 ms: 100 ms into the new window, exhausted.
			name: "bounded-window-resets", policy: RestartBounded{MaxRestarts: 1, Within: 100 * time.Millisecond}, events: 1,
			steps: []step{{0, true}, {101 * time.Millisecond, true}, {100 * time.Millisecond, true}},
			want:  ErrRestartBudgetExhausted,
		},
		{
			// Successes never reset the window: panic at 0 (allowed), the
			// redelivery succeeds at 50 ms, the next batch panics at 90 ms
			// (still in the window, budget spent) ⇒ exhausted.
			name: "bounded-successes-do-not-reset", policy: RestartBounded{MaxRestarts: 1, Within: 100 * time.Millisecond}, events: 2,
			steps: []step{{0, true}, {50 * time.Millisecond, false}, {40 * time.Millisecond, true}},
			want:  ErrRestartBudgetExhausted,
		},
		{
			// RST-07 at worker level: a panic, a success an hour later,
			// a panic ⇒ exhausted.
			name: "once-after-an-hour", policy: RestartOnce{}, events: 2,
			steps: []step{{0, true}, {time.Hour, false}, {0, true}},
			want:  ErrRestartBudgetExhausted,
		},
		{
			// Bounded{1, 100ms} with panics 150 ms apart never exhausts.
			name: "bounded-spaced-panics", policy: RestartBounded{MaxRestarts: 1, Within: 100 * time.Millisecond}, events: 1,
			steps: []step{{0, true}, {150 * time.Millisecond, true}, {150 * time.Millisecond, true}, {0, false}},
			want:  nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t, journal.Config{})
			for i := 0; i < tc.events; i++ {
				mustAppend(t, s, ev("rst:clock", "s", fmt.Sprint(i)))
			}
			clk := &rstClock{now: rstEpoch}
			var mu sync.Mutex
			calls := 0
			cfg := DefaultWorkerConfig()
			cfg.Retry = NoRetry() // the restart policy's own behaviour, without retries
			cfg.BatchSize = 1
			cfg.Clock = clk
			cfg.Restart = tc.policy
			h := func(_ context.Context, b []engine.Entry, _ *Delivery) Action {
				mu.Lock()
				n := calls
				calls++
				mu.Unlock()
				if n >= len(tc.steps) {
					return Stop // past the script: end the run
				}
				clk.advance(tc.steps[n].advance)
				if tc.steps[n].panics {
					panic(fmt.Sprintf("call %d", n+1))
				}
				return Continue
			}
			w, err := StartWorker(context.Background(), s, engine.RegionEntity("rst:clock"), cfg, h)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = w.StopAndJoin() })
			if tc.want != nil {
				waitFor(t, "the worker to exit", func() bool {
					select {
					case <-w.Done():
						return true
					default:
						return false
					}
				})
			} else {
				waitFor(t, "the script to run", func() bool {
					mu.Lock()
					defer mu.Unlock()
					return calls >= len(tc.steps)
				})
			}
			err = w.StopAndJoin()
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Join = %v, want %v", err, tc.want)
			}
			mu.Lock()
			defer mu.Unlock()
			if calls != len(tc.steps) {
				t.Fatalf("%d handler calls, want %d", calls, len(tc.steps))
			}
		})
	}
}
