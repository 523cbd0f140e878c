package workerapp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/batfleet/batfleet/engine/checkpoint"
)

// rideOut (found by the chaos run: a worker started right after a NATS
// restart exited 1 on "bind bucket: context deadline exceeded"): an
// unavailable checkpoint store at start is waited out, as a running
// worker waits one out; --checkpoint-outage bounds the wait; any other
// error returns at once.
func TestRideOutWaitsForTheCheckpointStore(t *testing.T) {
	unavailable := fmt.Errorf("%w: bind bucket: %w", checkpoint.ErrUnavailable, context.DeadlineExceeded)
	ctx := context.Background()
	log := hclog.NewNullLogger()

	calls := 0
	err := rideOut(ctx, "open", 0, log, func() error {
		if calls++; calls < 3 {
			return unavailable
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("rideOut = %v after %d calls, want success on the third", err, calls)
	}

	calls = 0
	permanent := errors.New("bucket unusable")
	if err := rideOut(ctx, "open", 0, log, func() error { calls++; return permanent }); !errors.Is(err, permanent) || calls != 1 {
		t.Errorf("a permanent error: %v after %d calls, want it at once", err, calls)
	}

	start := time.Now()
	err = rideOut(ctx, "open", 300*time.Millisecond, log, func() error { return unavailable })
	if !errors.Is(err, checkpoint.ErrUnavailable) || !strings.Contains(err.Error(), "--checkpoint-outage") {
		t.Errorf("bounded by --checkpoint-outage: %v", err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Errorf("gave up after %v, before the outage bound", time.Since(start))
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := rideOut(cctx, "open", 0, log, func() error { return unavailable }); err == nil {
		t.Error("a stopped worker kept waiting")
	}
}
