package fleet

import (
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
)

// A writer whose MaxWait is below a worker's idle timeout: the client
// learns the writer's maximum from its info reply and holds for at most
// that, so the worker neither fails on a 400 naming wait_ms nor misses a
// wake-up.
func TestHLD06_ClientHoldsWithinTheWritersMaximum(t *testing.T) {
	e := newEnv(t, envOpts{writer: WriterConfig{MaxWait: time.Second}})
	ctx := testCtx(t)
	rec := newRecorder()
	wk, err := delivery.StartWorker(ctx, e.c, engine.RegionEntity("order"), workerConfig(5*time.Second, 64), rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	// Held at least twice: the first hold expired after the writer's 1 s
	// and was renewed.
	waitFor(t, 10*time.Second, "two holds", func() bool { return e.w.Stats().PullsHeld >= 2 })
	if e.w.Stats().HeldExpired == 0 {
		t.Fatalf("stats %+v: want a hold to have expired", e.w.Stats())
	}
	rcs, err := e.c.Append(ctx, []engine.Event{event(t, "order", []byte("x"))})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the handler", func() bool { return rec.has(rcs[0].Seq) })
	select {
	case <-wk.Done():
		t.Fatalf("the worker stopped: %v", wk.Join())
	default:
	}
	if n := e.w.Stats().Errors["400"]; n != 0 {
		t.Fatalf("%d pulls refused with 400", n)
	}
	stopWorker(t, wk)
}
