package delivery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/journal"
)

// Tests of WorkerConfig validation and defaults, the restart policy field
// above all (SPEC §9.1, §9.5).

// cfgFields returns the fields of every *engine.ConfigError in err's tree
// (Validate joins one per problem).
func cfgFields(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if ce, ok := e.(*engine.ConfigError); ok {
			out = append(out, ce.Field)
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// cfgStart calls StartWorker, turning a panic into a test failure. A
// worker it did start is stopped when the test ends.
func cfgStart(t *testing.T, src Source, cfg WorkerConfig, h Handler) (w *Worker, err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("StartWorker panicked: %v", p)
		}
	}()
	w, err = StartWorker(context.Background(), src, engine.RegionAll(), cfg, h)
	if w != nil {
		t.Cleanup(func() { _ = w.StopAndJoin() })
	}
	return w, err
}

// cfgAlwaysPanics counts its calls and panics on each.
func cfgAlwaysPanics(calls *atomic.Int64) Handler {
	return func(context.Context, []engine.Entry, *Delivery) Action {
		n := calls.Add(1)
		panic(fmt.Sprint("call ", n))
	}
}

// TestWRK15_RestartNilPointerRejected: a Restart holding a nil pointer
// ((*RestartBounded)(nil), (*RestartOnce)(nil)) is an invalid config
// naming Restart, reported by Validate and StartWorker without a panic
// and with nothing started. (Before the fix Validate called the nil
// pointer's validate method: a nil-pointer panic in StartWorker.)
// Catalogue: WRK-15.
func TestWRK15_RestartNilPointerRejected(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	mustAppend(t, s, ev("cfg", "s", "1"))
	for _, p := range []RestartPolicy{(*RestartBounded)(nil), (*RestartOnce)(nil)} {
		t.Run(fmt.Sprintf("%T", p), func(t *testing.T) {
			cfg := DefaultWorkerConfig()
			cfg.Restart = p
			var verr error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("Validate panicked: %v", r)
					}
				}()
				verr = cfg.Validate()
			}()
			var calls atomic.Int64
			w, err := cfgStart(t, s, cfg, cfgAlwaysPanics(&calls))
			for what, e := range map[string]error{"Validate": verr, "StartWorker": err} {
				var ce *engine.ConfigError
				if !errors.Is(e, engine.ErrInvalidConfig) || !errors.As(e, &ce) || ce.Field != "Restart" ||
					!strings.Contains(e.Error(), fmt.Sprintf("%T", p)) {
					t.Fatalf("%s = %v, want ErrInvalidConfig on Restart naming %T", what, e, p)
				}
			}
			if w != nil || calls.Load() != 0 {
				t.Fatalf("StartWorker started a worker (%v), handler called %d times", w, calls.Load())
			}
		})
	}
}

// TestWRK15_RestartValidation: RestartBounded with a negative Within is
// an invalid config (as a value or a pointer); Within 0 is fine; non-nil
// pointers to valid policies work like the values.
// Catalogue: WRK-15.
func TestWRK15_RestartValidation(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	mustAppend(t, s, ev("cfg", "s", "1"))
	for _, p := range []RestartPolicy{
		RestartBounded{MaxRestarts: 3, Within: -1},
		RestartBounded{Within: -time.Second},
		&RestartBounded{MaxRestarts: 1, Within: -time.Millisecond},
	} {
		cfg := DefaultWorkerConfig()
		cfg.Retry = NoRetry() // the restart policy's own behaviour, without retries
		cfg.Restart = p
		var calls atomic.Int64
		w, err := cfgStart(t, s, cfg, cfgAlwaysPanics(&calls))
		var ce *engine.ConfigError
		if !errors.Is(err, engine.ErrInvalidConfig) || !errors.As(err, &ce) || ce.Field != "Restart.Within" || w != nil {
			t.Fatalf("Restart %#v: StartWorker = (%v, %v), want ErrInvalidConfig on Restart.Within", p, w, err)
		}
	}
	// Valid policies, also behind pointers: an always-panicking handler
	// runs once more than the restarts they allow.
	for _, tc := range []struct {
		p     RestartPolicy
		calls int64
	}{
		{RestartBounded{MaxRestarts: 0, Within: 0}, 1},
		{&RestartBounded{MaxRestarts: 1, Within: time.Hour}, 2},
		{&RestartOnce{}, 2},
	} {
		cfg := DefaultWorkerConfig()
		cfg.Retry = NoRetry() // the restart policy's own behaviour, without retries
		cfg.Restart = tc.p
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Restart %#v: Validate = %v", tc.p, err)
		}
		var calls atomic.Int64
		w, err := cfgStart(t, s, cfg, cfgAlwaysPanics(&calls))
		if err != nil {
			t.Fatalf("Restart %#v: StartWorker = %v", tc.p, err)
		}
		if err := fltJoin(t, w); !errors.Is(err, ErrRestartBudgetExhausted) || calls.Load() != tc.calls {
			t.Fatalf("Restart %#v: Join = %v after %d calls, want ErrRestartBudgetExhausted after %d", tc.p, err, calls.Load(), tc.calls)
		}
	}
}

// TestWRK01_NilRestartIsRestartOnce: a nil Restart is valid and means
// RestartOnce: one restart, then the budget is exhausted.
// Catalogue: WRK-01.
func TestWRK01_NilRestartIsRestartOnce(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	mustAppend(t, s, ev("cfg", "s", "1"))
	cfg := DefaultWorkerConfig()
	cfg.Retry = NoRetry() // the restart policy's own behaviour, without retries
	cfg.Restart = nil
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate with a nil Restart = %v", err)
	}
	var calls atomic.Int64
	w, err := cfgStart(t, s, cfg, cfgAlwaysPanics(&calls))
	if err != nil {
		t.Fatalf("StartWorker with a nil Restart = %v", err)
	}
	if p, ok := w.cfg.Restart.(RestartOnce); !ok {
		t.Fatalf("effective Restart = %#v, want RestartOnce{}", p)
	}
	err = fltJoin(t, w)
	var be *BudgetExhaustedError
	if !errors.As(err, &be) || be.LastPanic != "call 2" || calls.Load() != 2 || w.Stats().Restarts != 1 {
		t.Fatalf("Join = %v after %d calls, %d restarts; want budget exhausted at call 2 after 1 restart",
			err, calls.Load(), w.Stats().Restarts)
	}
}

// TestWRK15_ValidateReportsEveryProblem: Validate reports all problems at
// once, each a ConfigError on its field; the boundary values are valid.
// Catalogue: WRK-15.
func TestWRK15_ValidateReportsEveryProblem(t *testing.T) {
	cfg := WorkerConfig{
		BatchSize: 0, IdleTimeout: -1, Restart: (*RestartBounded)(nil), SaveTimeout: -1,
		CheckpointID: "id",
	}
	err := cfg.Validate()
	want := []string{"BatchSize", "IdleTimeout", "Restart", "SaveTimeout", "Checkpoints"}
	if got := cfgFields(err); strings.Join(got, ",") != strings.Join(want, ",") || !errors.Is(err, engine.ErrInvalidConfig) {
		t.Fatalf("Validate = %v: fields %v, want %v", err, got, want)
	}
	cfg.CheckpointID = "bad/id"
	if err := cfg.Validate(); !errors.Is(err, checkpoint.ErrInvalidID) {
		t.Fatalf("Validate with a bad id = %v, want ErrInvalidID too", err)
	}

	ok := WorkerConfig{BatchSize: 1, IdleTimeout: 1, SaveTimeout: 0, CheckpointID: "id", Checkpoints: checkpoint.NewMemoryStore()}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(batch 1, idle 1ns, save timeout 0, id with store) = %v", err)
	}
}

// TestWRK01_Defaults: what a worker fills in for fields left zero.
// Catalogue: WRK-01.
func TestWRK01_Defaults(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	cfg := DefaultWorkerConfig()
	cfg.Restart = nil
	w, err := cfgStart(t, s, cfg, func(context.Context, []engine.Entry, *Delivery) Action { return Stop })
	if err != nil {
		t.Fatal(err)
	}
	got := w.cfg
	if got.SaveTimeout != 30*time.Second || got.WorkerID == "" || got.Clock == nil || got.WallClock == nil || got.Logger == nil ||
		got.Restart != (RestartOnce{}) || got.BatchSize != 64 || got.IdleTimeout != 10*time.Millisecond {
		t.Fatalf("effective config %+v, want the documented defaults", got)
	}
	if w.Witness() != nil {
		t.Fatal("an in-memory worker has a witness")
	}
	cfg.SaveTimeout, cfg.WorkerID = time.Second, "me"
	w, err = cfgStart(t, s, cfg, func(context.Context, []engine.Entry, *Delivery) Action { return Stop })
	if err != nil {
		t.Fatal(err)
	}
	if w.cfg.SaveTimeout != time.Second || w.cfg.WorkerID != "me" {
		t.Fatalf("effective SaveTimeout %v, WorkerID %q: set values must be kept", w.cfg.SaveTimeout, w.cfg.WorkerID)
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	prefix := fmt.Sprint(host, "-", os.Getpid(), "-")
	if a, b := DefaultWorkerID(), DefaultWorkerID(); a == b || !strings.HasPrefix(a, prefix) || len(a) != len(prefix)+6 {
		t.Fatalf("DefaultWorkerID() = %q, %q: want %s and 6 random hex digits, distinct", a, b, prefix)
	}
	if got := w.LastPanic(); got != "" {
		t.Fatalf("LastPanic() = %q without a panic, want \"\"", got)
	}
}

// TestWRKExtra_ActionAndErrorText: the texts logs and Join errors show.
func TestWRKExtra_ActionAndErrorText(t *testing.T) {
	for a, want := range map[Action]string{Continue: "continue", Stop: "stop", StopWithRollback: "stop-with-rollback", Action(7): "action(7)"} {
		if got := a.String(); got != want {
			t.Errorf("Action(%d).String() = %q, want %q", int(a), got, want)
		}
	}
	for _, tc := range []struct {
		err      error
		sentinel error
		text     string
	}{
		{&BudgetExhaustedError{LastPanic: "boom"}, ErrRestartBudgetExhausted, "restart budget exhausted: last panic: boom"},
		{&WorkerCrashedError{Panic: "kaput"}, ErrWorkerCrashed, "worker crashed: kaput"},
		{&CheckpointWriteError{ID: "ck", Cause: checkpoint.ErrConflict}, ErrCheckpointWriteFailed, `id "ck"`},
	} {
		if !errors.Is(tc.err, tc.sentinel) || !strings.Contains(tc.err.Error(), tc.text) {
			t.Errorf("%T: %q (matches %v: %v), want it to contain %q", tc.err, tc.err.Error(), tc.sentinel, errors.Is(tc.err, tc.sentinel), tc.text)
		}
	}
	if p := (RestartBounded{MaxRestarts: 2, Within: time.Second}).String(); p != "bounded:2/1s" {
		t.Errorf("RestartBounded.String() = %q", p)
	}
	if p := (RestartOnce{}).String(); p != "once" {
		t.Errorf("RestartOnce.String() = %q", p)
	}
}
