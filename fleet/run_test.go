package fleet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/nats-io/nats-server/v2/server"
)

func TestRunWorkerRefusesBadOptions(t *testing.T) {
	e := newEnv(t, envOpts{})
	ok := func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action { return delivery.Continue }
	for _, tc := range []struct {
		name    string
		opts    WorkerOptions
		wantErr error
		field   string
	}{
		{"bad region", WorkerOptions{Region: "entity=*", Handler: ok}, engine.ErrInvalidRegion, "WorkerOptions.Region"},
		{"region syntax", WorkerOptions{Region: "owner=me", Handler: ok}, engine.ErrInvalidRegion, "WorkerOptions.Region"},
		{"no handler", WorkerOptions{}, engine.ErrInvalidConfig, "WorkerOptions.Handler"},
		{"bad batch", WorkerOptions{Handler: ok, BatchSize: -1}, engine.ErrInvalidConfig, "BatchSize"},
		{"bad checkpoint id", WorkerOptions{Handler: ok, Checkpoint: "a/b"}, checkpoint.ErrInvalidID, "WorkerOptions.Checkpoint"},
		{"bad journal", WorkerOptions{Handler: ok, Journal: "a.b"}, engine.ErrInvalidJournalName, "Journal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := RunWorker(ctx, e.cnc, tc.opts)
			if err == nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("RunWorker = %v, want an error matching %v that names %s", err, tc.wantErr, tc.field)
			}
		})
	}
}

// RunWorker returns nil once its context ends, after the worker stopped;
// a durable worker resumes where the last one committed.
func TestRunWorkerStopsWithItsContext(t *testing.T) {
	e := newEnv(t, envOpts{server: func(o *server.Options) { o.JetStream = true }})
	first := appendTo(t, e.store, "order", 3)
	run := func(want []uint64) {
		t.Helper()
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		got := make(chan uint64, 16)
		done := make(chan error, 1)
		go func() {
			done <- RunWorker(ctx, e.cnc, WorkerOptions{Journal: testJournal, Region: "entity=order", Checkpoint: "run-ctx",
				Handler: func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
					for _, en := range b {
						got <- en.Seq
					}
					return delivery.Continue
				}})
		}()
		for _, seq := range want {
			select {
			case s := <-got:
				if s != seq {
					t.Fatalf("handled seq %d, want %d", s, seq)
				}
			case err := <-done:
				t.Fatalf("RunWorker returned %v before handling seq %d", err, seq)
			case <-time.After(10 * time.Second):
				t.Fatalf("seq %d not handled", seq)
			}
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("RunWorker after cancel = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("RunWorker did not return after its context ended")
		}
		select {
		case s := <-got:
			t.Fatalf("seq %d handled again", s)
		default:
		}
	}
	run(first)
	run(appendTo(t, e.store, "order", 2))
}
