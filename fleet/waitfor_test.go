package fleet

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
)

// Catalogue: PSN-07. Append, then WaitFor(seq): it returns only after the
// handler's commit through seq; a checkpoint whose region has no match up
// to seq returns at once; an unknown checkpoint is an error, not a hang.
func TestPSN07_WaitForCheckpoint(t *testing.T) {
	g := newGroupEnv(t)
	e := g.e
	gate := make(chan struct{})
	var opened sync.Once
	open := func() { opened.Do(func() { close(gate) }) }
	handling := make(chan uint64, 16)
	// The first event is handled at once, so the checkpoint exists.
	first := appendTo(t, e.store, "order", 1)[0]
	cfg := workerConfig(5*time.Second, 64)
	cfg.CheckpointID, cfg.Checkpoints = "psn-07", g.ckpts
	w, err := delivery.StartWorker(context.Background(), e.c, engine.RegionEntity("order"), cfg,
		func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
			if b[len(b)-1].Seq == first {
				return delivery.Continue
			}
			handling <- b[len(b)-1].Seq
			<-gate
			return delivery.Continue
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopWorker(t, w) })
	t.Cleanup(open) // before the stop: a failed test must not leave the handler blocked
	waitFor(t, 10*time.Second, "the first commit", func() bool {
		rec, _, err := g.ckpts.Load(testCtx(t), "psn-07")
		return err == nil && rec.Position == first
	})

	seq := appendTo(t, e.store, "order", 1)[0]
	waited := make(chan error, 1)
	go func() { waited <- WaitFor(testCtx(t), e.c, g.ckpts, "psn-07", seq) }()
	select {
	case got := <-handling:
		if got != seq {
			t.Fatalf("handler got %d, want %d", got, seq)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never got the event")
	}
	// The handler holds the batch: WaitFor must not return. Checking
	// that something did not happen needs a window; a false pass is
	// possible only if WaitFor is wrong.
	select {
	case err := <-waited:
		t.Fatalf("WaitFor returned %v before the handler's commit", err)
	case <-time.After(50 * time.Millisecond):
	}
	open()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("WaitFor = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitFor did not return after the commit")
	}
	rec, _, err := g.ckpts.Load(testCtx(t), "psn-07")
	if err != nil || rec.Position < seq {
		t.Fatalf("after WaitFor the record is %+v, %v; want position >= %d", rec, err, seq)
	}

	// An event of another region: nothing to wait for, at once.
	other := appendTo(t, e.store, "invoice", 1)[0]
	start := time.Now()
	if err := WaitFor(testCtx(t), e.c, g.ckpts, "psn-07", other); err != nil {
		t.Fatalf("WaitFor of a seq outside the region = %v", err)
	}
	t.Logf("WaitFor of a seq outside the region returned after %v", time.Since(start))

	// Unknown checkpoint: an error at once.
	if err := WaitFor(testCtx(t), e.c, g.ckpts, "no-such-checkpoint", seq); !errors.Is(err, ErrUnknownCheckpoint) {
		t.Fatalf("WaitFor of an unknown checkpoint = %v, want ErrUnknownCheckpoint", err)
	}
	// A context that ends: the wait ends with it.
	ctx, cancel := context.WithTimeout(testCtx(t), 100*time.Millisecond)
	defer cancel()
	close(handling) // the handler must not be reached: nothing more is appended to order
	if err := WaitFor(ctx, e.c, g.ckpts, "psn-07", other+1000); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor of a future seq = %v, want the context's deadline", err)
	}
}

// Catalogue: PSN-07 for a group: WaitForGroup returns once every
// partition has committed through seq or has nothing to wait for; an
// unknown group is ErrGroupNotFound.
func TestPSN07_WaitForGroup(t *testing.T) {
	g := newGroupEnv(t)
	e := g.e
	g.member(t, "wait", "m1", 4, nil)
	want := map[string][]uint64{}
	seqs := g.appendAccounts(t, 40, 8, want)
	last := seqs[len(seqs)-1]
	if err := WaitForGroup(testCtx(t), e.c, g.ckpts, g.js, "", "wait", last); err != nil {
		t.Fatalf("WaitForGroup = %v", err)
	}
	for p := uint16(0); p < 4; p++ {
		rec, _, err := g.ckpts.Load(testCtx(t), partitionCheckpointID("wait", p))
		if err != nil {
			t.Fatalf("partition %d: %v", p, err)
		}
		// Every partition holding one of the entities has handled its last.
		for ent, s := range want {
			if engine.Bucket(ent)/(engine.Buckets/4) == p && rec.Position < s[len(s)-1] {
				t.Fatalf("partition %d at %d after WaitForGroup, but %s's last event is %d", p, rec.Position, ent, s[len(s)-1])
			}
		}
	}
	if n, _ := g.log.count(seqs); n != len(seqs) {
		t.Fatalf("%d of %d events handled when WaitForGroup returned", n, len(seqs))
	}
	if err := WaitForGroup(testCtx(t), e.c, g.ckpts, g.js, "", "no-such-group", last); !errors.Is(err, ErrGroupNotFound) {
		t.Fatalf("WaitForGroup of an unknown group = %v, want ErrGroupNotFound", err)
	}
}
