package kvckpt

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/internal/faultproxy"
	"github.com/batfleet/batfleet/internal/natstest"
)

// countingStore counts successful saves and records every stored
// position, to see that nothing is written twice.
type countingStore struct {
	checkpoint.Store
	mu    sync.Mutex
	saved []uint64
}

func (c *countingStore) Save(ctx context.Context, id string, rec checkpoint.Record, expected checkpoint.Revision) (checkpoint.Revision, error) {
	rev, err := c.Store.Save(ctx, id, rec, expected)
	if err == nil {
		c.mu.Lock()
		c.saved = append(c.saved, rec.Position)
		c.mu.Unlock()
	}
	return rev, err
}

// TestSaveReplyLostAfterLanding: a durable worker's checkpoint save
// reaches the server and is stored, but the connection is reset before
// the reply comes back (a fault proxy between client and server cuts it
// right after forwarding the update). The save's outcome is unknown to
// the worker: it reads the key back, finds its own write, adopts its
// revision and goes on (Decision 15). No conflict, no second write of
// that position, nothing handled twice, and the worker never stops.
func TestSaveReplyLostAfterLanding(t *testing.T) {
	ts := startTestServer(t)
	proxy, err := faultproxy.New(net.JoinHostPort(ts.opts.Host, strconv.Itoa(ts.opts.Port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	_, js := natstest.ConnectURL(t, proxy.URL())
	kv := openStore(t, js, Config{Timeout: time.Second})
	store := &countingStore{Store: kv}
	j := openJournal(t)

	const id = "lost-reply"
	first, err := j.Append(testCtx(t), engine.Event{Coordinate: engine.MustCoordinate("order:1", "s"), Kind: engine.KindData})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	handled := map[uint64]int{}
	cfg := delivery.DefaultWorkerConfig()
	cfg.BatchSize, cfg.IdleTimeout, cfg.SaveTimeout = 1, 5*time.Millisecond, time.Second
	cfg.CheckpointID, cfg.Checkpoints = id, store
	w, err := delivery.StartWorker(context.Background(), j, engine.RegionEntity("order"), cfg,
		func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
			mu.Lock()
			for _, e := range b {
				handled[e.Seq]++
			}
			mu.Unlock()
			return delivery.Continue
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop(); <-w.Done() })
	waitFor(t, "the first commit", 10*time.Second, func() bool { return w.Stats().Committed == first.Seq })

	// Cut the connection right after the next update of the key is
	// forwarded to the server.
	proxy.CutAfter([]byte(kv.Key(id)))
	second, err := j.Append(testCtx(t), engine.Event{Coordinate: engine.MustCoordinate("order:2", "s"), Kind: engine.KindData})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second batch to be committed", 20*time.Second, func() bool { return w.Stats().Committed == second.Seq })
	if proxy.Cuts() != 1 {
		t.Fatalf("the proxy cut %d times, want 1", proxy.Cuts())
	}
	third, err := j.Append(testCtx(t), engine.Event{Coordinate: engine.MustCoordinate("order:3", "s"), Kind: engine.KindData})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the third batch to be committed", 20*time.Second, func() bool { return w.Stats().Committed == third.Seq })

	st := w.Stats()
	t.Logf("worker stats after the lost reply: %+v", st)
	if st.Reconciled != 1 || st.Conflicts != 0 || st.SaveFailures != 0 {
		t.Fatalf("stats %+v: want the lost save reconciled once, no conflict, no failure", st)
	}
	select {
	case <-w.Done():
		t.Fatalf("the worker stopped: %v", w.Join())
	default:
	}
	store.mu.Lock()
	saved := append([]uint64(nil), store.saved...)
	store.mu.Unlock()
	for _, p := range saved {
		if p == second.Seq {
			t.Fatalf("position %d was saved again after it landed: saves %v", p, saved)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, seq := range []uint64{first.Seq, second.Seq, third.Seq} {
		if handled[seq] != 1 {
			t.Fatalf("seq %d handled %d times, want once (handled %v)", seq, handled[seq], handled)
		}
	}
	rec, _, err := kv.Load(testCtx(t), id)
	if err != nil || rec.Position != third.Seq {
		t.Fatalf("stored record %+v, %v; want position %d", rec, err, third.Seq)
	}
}
