package delivery

import (
	"errors"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/journal"
)

// TestCKP15_NewIncarnationCheckedBeforeParking: the first answer of a new
// writer incarnation (a journal restored from a backup, its visible bound
// below what the worker committed) is checked before the worker parks.
// Checked only after a park, the check would see a bound that appends
// during the park had pushed past the committed position, pass, and the
// worker would go on after its old position, silently skipping the
// restored journal's sequences up to it (SPEC §9.7: rules 5-6 are re-run
// on the reply with the new incarnation).
func TestCKP15_NewIncarnationCheckedBeforeParking(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	src := newFltSource(s)
	first := mustAppend(t, s, ev("inc", "s", "1")).Seq
	cfg := DefaultWorkerConfig()
	cfg.IdleTimeout = 30 * time.Second // a park would outlast the test
	cfg.CheckpointID, cfg.Checkpoints = "inc", checkpoint.NewMemoryStore()
	rec := &fltRecorder{}
	w := fltStart(t, src, engine.RegionEntity("inc"), cfg, rec.handle)
	waitFor(t, "the first batch to commit", func() bool { return w.Stats().Committed == first })

	// The restored writer: a new incarnation whose visible bound is the
	// committed position (so the committed position is ahead of it).
	restarted, bound := engine.NewID128(), first
	src.set(func(f *fltSource) { f.incarnation, f.visible = &restarted, &bound })
	// An append elsewhere wakes the parked worker: its next poll is the
	// new incarnation's first answer, empty for its region. Parked after
	// it (30 s), it would not stop within the test's wait.
	mustAppend(t, s, ev("other", "s", "wake"))

	done := make(chan error, 1)
	go func() { done <- w.Join() }()
	select {
	case err := <-done:
		var ae *checkpoint.AheadError
		if !errors.Is(err, checkpoint.ErrAhead) || !errors.As(err, &ae) || ae.Position != first || ae.Visible != bound {
			t.Fatalf("Join = %v, want ErrAhead{%d, %d}: the check must use the bound of the first answer", err, first, bound)
		}
	case <-time.After(10 * time.Second):
		w.Stop()
		t.Fatalf("the worker did not stop at the restored writer's first answer; Join after Stop = %v", <-done)
	}
	if got := rec.got(); !equalSeqs(got, []uint64{first}) {
		t.Fatalf("handler got %v, want only [%d]", got, first)
	}
}
