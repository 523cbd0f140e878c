package journal

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
)

// propRecordingStore wraps a checkpoint store and fails the test if a
// successful save ever moves the stored position backwards.
type propRecordingStore struct {
	checkpoint.Store
	t     testing.TB
	mu    sync.Mutex
	last  uint64
	saved bool
}

func (p *propRecordingStore) Save(ctx context.Context, id string, rec checkpoint.Record, expected checkpoint.Revision) (checkpoint.Revision, error) {
	rev, err := p.Store.Save(ctx, id, rec, expected)
	if err == nil {
		p.mu.Lock()
		if p.saved && rec.Position < p.last {
			p.t.Errorf("checkpoint moved backwards: %d after %d", rec.Position, p.last)
		}
		p.last, p.saved = rec.Position, true
		p.mu.Unlock()
	}
	return rev, err
}

// TestWorkerPropertyRandomInterleavings runs durable workers, one after
// another on one checkpoint id, against a journal that grows concurrently
// with single appends, batches, cancelled fences and failed batches, while
// handlers answer Continue, Stop, StopWithRollback or panic at random.
// Invariants: every visible matching event reaches a handler at least
// once; each batch is strictly ascending and starts after the last
// committed position; the persisted checkpoint never moves backwards.
func TestWorkerPropertyRandomInterleavings(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var rngMu sync.Mutex
	roll := func(n int) int {
		rngMu.Lock()
		defer rngMu.Unlock()
		return rng.IntN(n)
	}

	g := &syncGate{}
	s := openTestStore(t, Config{faults: &faults{sync: g.hook}})
	ctx := context.Background()
	store := &propRecordingStore{Store: checkpoint.NewFileStore(t.TempDir()), t: t}
	region := engine.RegionEntity("p")
	delivered := make(map[uint64]bool)
	var delMu sync.Mutex

	appendStep := func() {
		entity := fmt.Sprintf("%s:%d", []string{"p", "q"}[roll(2)], roll(4))
		switch roll(10) {
		case 0: // a cancelled fence
			if err := s.BeginFence(ctx); err != nil {
				t.Error(err)
				return
			}
			if _, err := s.AppendFenced(ctx, []engine.Event{ev(entity, "s", "fenced")}); err != nil {
				t.Error(err)
			}
			if err := s.CancelFence(ctx); err != nil {
				t.Error(err)
			}
		case 1: // a failed batch
			g.failNext(1, errors.New("injected fsync failure"))
			if _, err := s.AppendBatch(ctx, []engine.Event{ev(entity, "s", "f1"), ev(entity, "s", "f2")}); !errors.Is(err, ErrBatchSyncFailed) {
				t.Errorf("failed batch = %v", err)
			}
		case 2, 3, 4:
			n := 2 + roll(6)
			batch := make([]engine.Event, n)
			for i := range batch {
				batch[i] = ev(entity, "s", "b")
			}
			if _, err := s.AppendBatch(ctx, batch); err != nil {
				t.Error(err)
			}
		default:
			if _, err := s.Append(ctx, ev(entity, "s", "x")); err != nil {
				t.Error(err)
			}
		}
	}

	runWorker := func(final bool) error {
		cfg := delivery.DefaultWorkerConfig()
		cfg.BatchSize = 1 + roll(8)
		cfg.CheckpointID = "property"
		cfg.Checkpoints = store
		cfg.Restart = delivery.RestartBounded{MaxRestarts: 3, Within: time.Hour}
		var committed uint64
		committedStarted := false
		handler := func(_ context.Context, es []engine.Entry, _ *delivery.Delivery) delivery.Action {
			for i, e := range es {
				if i > 0 && e.Seq <= es[i-1].Seq {
					t.Errorf("batch not ascending: %d after %d", e.Seq, es[i-1].Seq)
				}
				if !region.Matches(e.Coordinate.Entity(), e.Coordinate.Scope(), e.Kind, e.Clock) {
					t.Errorf("seq %d does not match the region", e.Seq)
				}
			}
			if committedStarted && es[0].Seq <= committed {
				t.Errorf("batch starts at %d, at or before the committed %d", es[0].Seq, committed)
			}
			delMu.Lock()
			for _, e := range es {
				delivered[e.Seq] = true
			}
			delMu.Unlock()
			a := delivery.Continue
			if !final {
				switch roll(10) {
				case 0:
					a = delivery.Stop
				case 1:
					a = delivery.StopWithRollback
				case 2:
					panic("random handler failure")
				}
			}
			if a != delivery.StopWithRollback {
				committed, committedStarted = es[len(es)-1].Seq, true
			}
			return a
		}
		// The worker's committed position starts at the stored checkpoint.
		if rec, _, err := store.Load(ctx, "property"); err == nil {
			committed, committedStarted = rec.Position, rec.Started
		}
		w, err := delivery.StartWorker(ctx, s, region, cfg, handler)
		if err != nil {
			return err
		}
		if final {
			if all := pollAll(t, s, region); len(all) > 0 {
				last := all[len(all)-1].Seq
				waitFor(t, "the final worker to catch up", func() bool {
					st := w.Stats()
					return st.CommittedStarted && st.Committed >= last
				})
			}
		} else {
			for i := 0; i < 5+roll(20); i++ {
				appendStep()
			}
		}
		err = w.StopAndJoin()
		if errors.Is(err, delivery.ErrRestartBudgetExhausted) {
			return nil // an allowed outcome of random panics
		}
		return err
	}

	for round := 0; round < 25; round++ {
		if err := runWorker(false); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if err := runWorker(true); err != nil {
		t.Fatalf("final run: %v", err)
	}
	for _, e := range pollAll(t, s, region) {
		if !delivered[e.Seq] {
			t.Fatalf("visible matching seq %d never reached a handler", e.Seq)
		}
	}
}
