package delivery

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/journal"
)

// A consumer group's partition worker (Group and Epoch set) starts only on
// its own claim, writes its epoch with every commit, and hands the group,
// partition and epoch to its handler.

// claimed plants the record a member's claim writes: owner at epoch, at
// position 0 of region.
func claimed(t *testing.T, store checkpoint.Store, id string, region engine.Region, owner string, epoch uint64) checkpoint.Revision {
	t.Helper()
	ident := region.Identity()
	return ccpPlant(t, store, id, checkpoint.Record{RegionIdentity: &ident, Owner: owner, Epoch: epoch, UpdatedMs: 1})
}

// Catalogue: GRP-05 (the worker's part): a partition worker whose claim
// was overtaken before it started (another owner, or a later epoch of its
// own member id) refuses to start: ErrConflict, nothing handled, the
// record untouched.
func TestGRP05_WorkerRefusesAnOvertakenClaim(t *testing.T) {
	region := engine.RegionEntity("acct").WithPartition(engine.Partition{Index: 1, Count: 4})
	for _, tc := range []struct {
		name  string
		owner string
		epoch uint64
	}{
		{"claimed by another member", "b", 3},
		{"claimed again by the same id", "a", 3},
		{"released", "", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t, journal.Config{})
			for i := range 50 {
				mustAppend(t, s, ev("acct:"+string(rune('a'+i%26)), "s", "x"))
			}
			store := checkpoint.NewMemoryStore()
			rev := claimed(t, store, "group:g:1", region, tc.owner, tc.epoch)
			before, _ := ccpLoad(t, store, "group:g:1")
			cfg := DefaultWorkerConfig()
			cfg.CheckpointID, cfg.Checkpoints = "group:g:1", store
			cfg.WorkerID, cfg.Group, cfg.Epoch = "a", "g", 2
			rec := &fltRecorder{}
			w := fltStart(t, s, region, cfg, rec.handle)
			done := make(chan error, 1)
			go func() { done <- w.Join() }()
			select {
			case err := <-done:
				if !errors.Is(err, checkpoint.ErrConflict) {
					t.Fatalf("Join = %v, want ErrConflict", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the worker did not refuse an overtaken claim")
			}
			if got := rec.got(); len(got) != 0 {
				t.Fatalf("handler got %v, want nothing", got)
			}
			ccpSameRecord(t, store, "group:g:1", before, rev)
		})
	}
}

// Catalogue: GRP-11 (the worker's part): every commit of a partition
// worker carries its owner epoch, and its handler gets the group, the
// partition and the epoch.
func TestGRP11_WorkerCommitsItsEpoch(t *testing.T) {
	part := engine.Partition{Index: 1, Count: 4}
	region := engine.RegionEntity("acct").WithPartition(part)
	s := openTestStore(t, journal.Config{})
	var mine []uint64
	for i := range 200 {
		e := ev("acct:"+string(rune('a'+i%26)), "s", "x")
		rc := mustAppend(t, s, e)
		if part.Holds(engine.Bucket(e.Coordinate.Entity())) {
			mine = append(mine, rc.Seq)
		}
	}
	if len(mine) == 0 || len(mine) == 200 {
		t.Fatalf("%d of 200 events in partition 1/4: the test needs some in and some out", len(mine))
	}
	store := checkpoint.NewMemoryStore()
	claimed(t, store, "group:g:1", region, "a", 7)
	cfg := DefaultWorkerConfig()
	cfg.BatchSize = 5
	cfg.CheckpointID, cfg.Checkpoints = "group:g:1", store
	cfg.WorkerID, cfg.Group, cfg.Epoch = "a", "g", 7
	var mu sync.Mutex
	var got []uint64
	var bad []string
	w := fltStart(t, s, region, cfg, func(_ context.Context, b []engine.Entry, d *Delivery) Action {
		mu.Lock()
		defer mu.Unlock()
		if d.Group != "g" || d.Partition != part || d.Epoch != 7 {
			bad = append(bad, d.Group)
		}
		got = append(got, seqsOf(b)...)
		return Continue
	})
	waitFor(t, "the partition's last event committed", func() bool { return w.Stats().Committed == mine[len(mine)-1] })
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("%d batches delivered without group g, partition %v, epoch 7", len(bad), part)
	}
	if !equalSeqs(got, mine) {
		t.Fatalf("handled %v, want the partition's %v", got, mine)
	}
	rec, _ := ccpLoad(t, store, "group:g:1")
	if rec.Owner != "a" || rec.Epoch != 7 || rec.Position != mine[len(mine)-1] {
		t.Fatalf("record %+v, want owner a, epoch 7, position %d", rec, mine[len(mine)-1])
	}
}
