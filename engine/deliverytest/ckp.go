package deliverytest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
)

// CK-04: a durable worker's witness CheckpointID() equals its configured
// id, on the handle and in every delivery.
func scenarioCK04(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "ck-04 witness:id"
	seqs := appendN(t, env, "ck04", 2)
	var mu sync.Mutex
	var witnesses []*delivery.AtLeastOnce
	cfg := durableConfig(env, id)
	cfg.BatchSize = 1
	w := startWorker(t, env.Source, regionOf("ck04"), cfg, func(_ context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
		mu.Lock()
		witnesses = append(witnesses, d.Witness)
		mu.Unlock()
		if b[len(b)-1].Seq == seqs[1] {
			return delivery.Stop
		}
		return delivery.Continue
	})
	if w.Witness() == nil {
		t.Fatal("durable worker has no witness")
	}
	if got := w.Witness().CheckpointID(); got != id {
		t.Fatalf("Witness().CheckpointID() = %q, want %q", got, id)
	}
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(witnesses) != 2 {
		t.Fatalf("%d deliveries, want 2", len(witnesses))
	}
	for i, wit := range witnesses {
		if wit != w.Witness() || wit.CheckpointID() != id {
			t.Fatalf("delivery %d: witness %p (%q), want the worker's %p (%q)", i, wit, wit.CheckpointID(), w.Witness(), id)
		}
	}
}

// CKP-03: no record ⇒ the worker starts at (0, false); nothing is written
// until the first successful batch creates the record.
func scenarioCKP03(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "ckp-03"
	wantNoRecord(t, env, id)
	hand := newHandoff()
	w := startWorker(t, env.Source, regionOf("ckp03"), durableConfig(env, id), hand.handler)
	seqs := appendN(t, env, "ckp03", 2)

	batch := hand.next(t)
	if batch[0].Seq != seqs[0] {
		t.Fatalf("first delivered seq %d, want %d (a fresh worker starts from the beginning)", batch[0].Seq, seqs[0])
	}
	if st := w.Stats(); st.Committed != 0 || st.CommittedStarted {
		t.Fatalf("committed during the first batch = (%d, %v), want (0, false)", st.Committed, st.CommittedStarted)
	}
	wantNoRecord(t, env, id) // nothing at start, nothing before the batch completes
	hand.answer(t, delivery.Stop)
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	last := batch[len(batch)-1].Seq
	wantRecord(t, env, id, last)
	if _, rev, _ := loadRecord(t, env, id); rev == 0 {
		t.Fatal("created record has revision 0")
	}
}

// corruptStart runs CKP-04/05: a record of garbage bytes and a matching
// event; the handler is never called and Join reports the corruption at
// the canonical location.
func corruptStart(t *testing.T, newEnv NewEnv, id string, stopAtOnce bool) {
	env := newEnv(t)
	env.PlantRecord(t, id, []byte("not-msgpack"))
	appendN(t, env, "corrupt", 1)
	calls := newTally()
	w := startWorker(t, env.Source, regionOf("corrupt"), durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		calls.add(b)
		return delivery.Continue
	})
	var err error
	if stopAtOnce {
		err = stopAndJoinWithin(t, w)
	} else {
		err = joinWithin(t, w)
	}
	wantErr(t, "Join", err, checkpoint.ErrCorrupt)
	var ce *checkpoint.CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("Join = %v, want a *CheckpointCorruptError", err)
	}
	if want := env.Checkpoints.Location(id); ce.Location != want || ce.ID != id {
		t.Fatalf("corrupt error at (%q, %q), want (%q, %q)", ce.ID, ce.Location, id, want)
	}
	if n := calls.calls(); n != 0 {
		t.Fatalf("handler called %d times, want never", n)
	}
}

// CKP-04: a corrupt record stops the worker before its handler runs.
func scenarioCKP04(t *testing.T, newEnv NewEnv) { corruptStart(t, newEnv, "ckp-04", false) }

// CKP-05: as CKP-04 with StopAndJoin right after start.
func scenarioCKP05(t *testing.T, newEnv NewEnv) { corruptStart(t, newEnv, "ckp-05", true) }

// CKP-07: a record of entity:cursor-a read by a worker for entity:cursor-b
// ⇒ ErrRegionMismatch naming both identities.
func scenarioCKP07(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "ckp-07"
	regionA := engine.RegionEntity("entity:cursor-a")
	regionB := engine.RegionEntity("entity:cursor-b")
	identA := regionA.Identity()
	plantRecord(t, env, id, checkpoint.Record{Position: 0, Started: false, RegionIdentity: &identA, JournalID: journalID(t, env), Owner: "other", UpdatedMs: 1})
	env.Append(t, engine.Event{Coordinate: engine.MustCoordinate("entity:cursor-b", "scenario"), Kind: engine.KindData, Payload: []byte("b")})
	calls := newTally()
	w := startWorker(t, env.Source, regionB, durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		calls.add(b)
		return delivery.Continue
	})
	err := joinWithin(t, w)
	wantErr(t, "Join", err, checkpoint.ErrRegionMismatch)
	var rm *checkpoint.RegionMismatchError
	if !errors.As(err, &rm) {
		t.Fatalf("Join = %v, want a *RegionMismatchError", err)
	}
	if !strings.Contains(rm.Expected, "entity:cursor-b") || rm.Expected != regionB.Identity() {
		t.Fatalf("Expected = %q, want %q", rm.Expected, regionB.Identity())
	}
	if rm.Stored == nil || *rm.Stored != identA {
		t.Fatalf("Stored = %v, want %q", rm.Stored, identA)
	}
	if want := env.Checkpoints.Location(id); rm.Location != want {
		t.Fatalf("Location = %q, want %q", rm.Location, want)
	}
	if n := calls.calls(); n != 0 {
		t.Fatalf("handler called %d times, want never", n)
	}
}

// CKP-10: a save that fails on Stop ⇒ one batch, Join reports
// ErrCheckpointWriteFailed{ID}; the I/O variant needs env.BreakRecord, the
// compare-and-swap variant bumps the revision from inside the handler.
func scenarioCKP10(t *testing.T, newEnv NewEnv) {
	t.Run("io", func(t *testing.T) {
		env := newEnv(t)
		if env.BreakRecord == nil {
			t.Log("backend has no BreakRecord: the I/O variant is not run here (the CAS variant is)")
			return
		}
		const id = "ckp-10-io"
		seqs := appendN(t, env, "ckp10", 2)
		var hookMu sync.Mutex
		var hookIDs []string
		var hookErrs []error
		cfg := durableConfig(env, id)
		cfg.OnCheckpointFailure = func(id string, err error) {
			hookMu.Lock()
			defer hookMu.Unlock()
			hookIDs, hookErrs = append(hookIDs, id), append(hookErrs, err)
		}
		hand := newHandoff()
		w := startWorker(t, env.Source, regionOf("ckp10"), cfg, hand.handler)
		batch := hand.next(t)
		repair := env.BreakRecord(t, id) // while the batch is in the handler
		hand.answer(t, delivery.Stop)
		err := joinWithin(t, w)
		wantErr(t, "Join", err, delivery.ErrCheckpointWriteFailed, checkpoint.ErrIO)
		if errors.Is(err, checkpoint.ErrConflict) {
			t.Fatalf("Join = %v: an I/O failure must not match ErrCheckpointConflict", err)
		}
		var we *delivery.CheckpointWriteError
		if !errors.As(err, &we) || we.ID != id {
			t.Fatalf("Join = %v, want a *CheckpointWriteError for %q", err, id)
		}
		if st := w.Stats(); st.Batches != 1 || st.SaveFailures != 1 || st.Saves != 0 {
			t.Fatalf("stats %+v, want 1 batch, 1 failed save, 0 saves", st)
		}
		hookMu.Lock()
		if len(hookIDs) != 1 || hookIDs[0] != id || !errors.Is(hookErrs[0], checkpoint.ErrIO) {
			t.Fatalf("OnCheckpointFailure calls %q %v, want one for %q with an I/O error", hookIDs, hookErrs, id)
		}
		hookMu.Unlock()
		repair()
		wantNoRecord(t, env, id)

		// The record never moved, so a new worker redelivers the batch.
		again := newHandoff()
		w2 := startWorker(t, env.Source, regionOf("ckp10"), durableConfig(env, id), again.handler)
		if b := again.next(t); b[0].Seq != seqs[0] || b[0].Seq != batch[0].Seq {
			t.Fatalf("after the failed save the next worker starts at %d, want %d", b[0].Seq, seqs[0])
		}
		again.answer(t, delivery.StopWithRollback)
		if err := joinWithin(t, w2); err != nil {
			t.Fatalf("second worker Join = %v", err)
		}
	})
	t.Run("cas", func(t *testing.T) {
		env := newEnv(t)
		const id = "ckp-10-cas"
		seqs := appendN(t, env, "ckp10", 2)
		var bumped checkpoint.Revision
		var herr firstErr
		calls := newTally()
		cfg := durableConfig(env, id)
		cfg.BatchSize = 1
		w := startWorker(t, env.Source, regionOf("ckp10"), cfg, func(ctx context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
			calls.add(b)
			if b[0].Seq == seqs[0] {
				return delivery.Continue
			}
			// Another writer moves the revision under the worker.
			rec, rev, err := env.Checkpoints.Load(ctx, id)
			if err != nil {
				herr.set("handler load: %v", err)
				return delivery.Stop
			}
			if bumped, err = env.Checkpoints.Save(ctx, id, rec, rev); err != nil {
				herr.set("handler bump: %v", err)
			}
			return delivery.Stop
		})
		err := joinWithin(t, w)
		herr.check(t)
		wantErr(t, "Join", err, delivery.ErrCheckpointWriteFailed, checkpoint.ErrConflict)
		var we *delivery.CheckpointWriteError
		if !errors.As(err, &we) || we.ID != id {
			t.Fatalf("Join = %v, want a *CheckpointWriteError for %q", err, id)
		}
		calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 1})
		if st := w.Stats(); st.Conflicts != 1 || st.Saves != 1 {
			t.Fatalf("stats %+v, want 1 save and 1 conflict", st)
		}
		wantRecord(t, env, id, seqs[0]) // the bump kept the first save's position
		if _, rev, _ := loadRecord(t, env, id); rev != bumped {
			t.Fatalf("stored revision %d, want the bumped %d", rev, bumped)
		}
	})
}

// CKP-11: 100 events; a durable worker (batch 1) stops after 50; the
// writer restarts and 50 more are appended; a worker (batch 8, same id)
// gets exactly the other 100, none from the first run.
func scenarioCKP11(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "ckp-11"
	first := appendN(t, env, "ckp11", 100)
	run1 := newTally()
	cfg := durableConfig(env, id)
	cfg.BatchSize = 1
	w := startWorker(t, env.Source, regionOf("ckp11"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		run1.add(b)
		if b[0].Seq == first[49] {
			return delivery.Stop
		}
		return delivery.Continue
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("first run Join = %v", err)
	}
	if got := run1.delivered(); !slices.Equal(got, first[:50]) {
		t.Fatalf("first run delivered %v, want %v", got, first[:50])
	}
	wantRecord(t, env, id, first[49])

	if env.Reopen != nil {
		env = env.Reopen(t)
	} else {
		t.Log("backend has no Reopen: the second run resumes on the same writer incarnation")
	}
	second := appendN(t, env, "ckp11", 50)
	want := append(slices.Clone(first[50:]), second...)
	run2 := newTally()
	cfg = durableConfig(env, id)
	cfg.BatchSize = 8
	w = startWorker(t, env.Source, regionOf("ckp11"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		run2.add(b)
		if b[len(b)-1].Seq == second[len(second)-1] {
			return delivery.Stop
		}
		return delivery.Continue
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("second run Join = %v", err)
	}
	if got := run2.delivered(); !slices.Equal(got, want) {
		t.Fatalf("second run delivered %d seqs %v, want exactly %d: %v", len(got), got, len(want), want)
	}
	_, batches := run2.snapshot()
	for i, b := range batches {
		if len(b) > 8 {
			t.Fatalf("batch %d has %d entries, want at most 8", i, len(b))
		}
	}
	wantRecord(t, env, id, second[len(second)-1])
}

// CKP-13: a save failing on Continue keeps the previous record; a new
// worker redelivers the batch.
func scenarioCKP13(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "ckp-13"
	seqs := appendN(t, env, "ckp13", 3)
	rc := &recordingCheckpoints{Store: env.Checkpoints}
	calls := newTally()
	cfg := durableConfig(env, id)
	cfg.Checkpoints = rc
	cfg.BatchSize = 1
	w := startWorker(t, env.Source, regionOf("ckp13"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		calls.add(b)
		if b[0].Seq == seqs[1] {
			rc.failNextSave(fmt.Errorf("%w: injected save failure", checkpoint.ErrIO))
		}
		return delivery.Continue
	})
	err := joinWithin(t, w)
	wantErr(t, "Join", err, delivery.ErrCheckpointWriteFailed, checkpoint.ErrIO)
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 1})
	if st := w.Stats(); st.Committed != seqs[0] || !st.CommittedStarted {
		t.Fatalf("committed (%d, %v), want (%d, true)", st.Committed, st.CommittedStarted, seqs[0])
	}
	wantRecord(t, env, id, seqs[0])

	hand := newHandoff()
	w2 := startWorker(t, env.Source, regionOf("ckp13"), durableConfig(env, id), hand.handler)
	if b := hand.next(t); b[0].Seq != seqs[1] {
		t.Fatalf("new worker starts at %d, want the failed batch's %d", b[0].Seq, seqs[1])
	}
	hand.answer(t, delivery.StopWithRollback)
	if err := joinWithin(t, w2); err != nil {
		t.Fatalf("second worker Join = %v", err)
	}
	wantRecord(t, env, id, seqs[0])
}

// CKP-14: a record of another journal fails the start with
// ErrJournalMismatch before the handler runs; a record without a
// journal id loads and the next save adds it.
func scenarioCKP14(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "ckp14", 2)
	ident := regionOf("ckp14").Identity()
	current := journalID(t, env)
	other := strings.Repeat("ab", 16)
	if other == current {
		other = strings.Repeat("cd", 16)
	}

	t.Run("foreign", func(t *testing.T) {
		const id = "ckp-14-foreign"
		plantRecord(t, env, id, checkpoint.Record{Position: seqs[0], Started: true, RegionIdentity: &ident, JournalID: other, Owner: "other", UpdatedMs: 1})
		calls := newTally()
		w := startWorker(t, env.Source, regionOf("ckp14"), durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
			calls.add(b)
			return delivery.Continue
		})
		err := joinWithin(t, w)
		wantErr(t, "Join", err, checkpoint.ErrJournalMismatch)
		var jm *checkpoint.JournalMismatchError
		if !errors.As(err, &jm) || jm.Stored != other || jm.Current != current {
			t.Fatalf("Join = %v, want a *JournalMismatchError{%s, %s}", err, other, current)
		}
		if n := calls.calls(); n != 0 {
			t.Fatalf("handler called %d times, want never", n)
		}
	})
	t.Run("absent", func(t *testing.T) {
		const id = "ckp-14-absent"
		plantRecord(t, env, id, checkpoint.Record{Position: seqs[0], Started: true, RegionIdentity: &ident})
		hand := newHandoff()
		w := startWorker(t, env.Source, regionOf("ckp14"), durableConfig(env, id), hand.handler)
		if b := hand.next(t); b[0].Seq != seqs[1] {
			t.Fatalf("resumed at %d, want %d", b[0].Seq, seqs[1])
		}
		hand.answer(t, delivery.Stop)
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join = %v", err)
		}
		if rec := wantRecord(t, env, id, seqs[1]); rec.JournalID != current {
			t.Fatalf("saved journal_id %q, want %q", rec.JournalID, current)
		}
	})
}

// CKP-15: (1000, true) with visible bound 10 ⇒ ErrAhead{1000,
// 10}; (visible-1, true) resumes; (1000, false) starts from the beginning.
func scenarioCKP15(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "ckp15", 9)
	info, err := env.Source.Info(context.Background())
	if err != nil {
		t.Fatalf("source info: %v", err)
	}
	visible := info.Visible
	if visible != seqs[len(seqs)-1]+1 {
		t.Fatalf("visible bound %d, want %d", visible, seqs[len(seqs)-1]+1)
	}
	ident := regionOf("ckp15").Identity()
	jid := info.JournalID.String()
	plant := func(id string, pos uint64, started bool) {
		plantRecord(t, env, id, checkpoint.Record{Position: pos, Started: started, RegionIdentity: &ident, JournalID: jid, Owner: "planted", UpdatedMs: 1})
	}

	ahead := func(t *testing.T, id string, pos uint64) {
		plant(id, pos, true)
		calls := newTally()
		w := startWorker(t, env.Source, regionOf("ckp15"), durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
			calls.add(b)
			return delivery.Continue
		})
		err := joinWithin(t, w)
		wantErr(t, "Join", err, checkpoint.ErrAhead)
		var ae *checkpoint.AheadError
		if !errors.As(err, &ae) || ae.Position != pos || ae.Visible != visible {
			t.Fatalf("Join = %v, want *AheadError{%d, %d}", err, pos, visible)
		}
		if n := calls.calls(); n != 0 {
			t.Fatalf("handler called %d times, want never", n)
		}
	}
	t.Run("ahead", func(t *testing.T) { ahead(t, "ckp-15-ahead", 1000) })
	t.Run("at-visible", func(t *testing.T) { ahead(t, "ckp-15-at-visible", visible) })
	// As CKP-05 for rules 5-6: a worker whose stop is requested before it
	// starts (its start context is already cancelled) must still report the
	// ahead checkpoint, on a source whose Info honours
	// its context as a remote source's request does.
	t.Run("ahead-stop-requested", func(t *testing.T) {
		const id = "ckp-15-ahead-stopped"
		plant(id, 1000, true)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		calls := newTally()
		w := startWorkerCtx(t, ctx, ctxSource{env.Source}, regionOf("ckp15"), durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
			calls.add(b)
			return delivery.Continue
		})
		err := joinWithin(t, w)
		if !errors.Is(err, checkpoint.ErrAhead) {
			t.Errorf("Join = %v, want ErrCheckpointAhead: load rules 5-6 must be applied even when stop was requested before start", err)
		}
		if n := calls.calls(); n != 0 {
			t.Fatalf("handler called %d times, want never", n)
		}
	})
	t.Run("last-visible", func(t *testing.T) {
		plant("ckp-15-last", visible-1, true)
		hand := newHandoff()
		w := startWorker(t, env.Source, regionOf("ckp15"), durableConfig(env, "ckp-15-last"), hand.handler)
		next := appendN(t, env, "ckp15", 1)[0]
		if b := hand.next(t); b[0].Seq != next {
			t.Fatalf("resumed at %d, want the new event %d", b[0].Seq, next)
		}
		hand.answer(t, delivery.Stop)
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join = %v", err)
		}
	})
	t.Run("not-started", func(t *testing.T) {
		plant("ckp-15-unstarted", 1000, false)
		hand := newHandoff()
		w := startWorker(t, env.Source, regionOf("ckp15"), durableConfig(env, "ckp-15-unstarted"), hand.handler)
		if b := hand.next(t); b[0].Seq != seqs[0] {
			t.Fatalf("started at %d, want the beginning %d", b[0].Seq, seqs[0])
		}
		hand.answer(t, delivery.StopWithRollback)
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join = %v", err)
		}
	})
}

// CKP-16: two workers on one id and region while events are appended: at
// most one keeps committing, the other stops with a conflict, and the
// stored position never decreases.
func scenarioCKP16(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "ckp-16"
	rc := &recordingCheckpoints{Store: env.Checkpoints}
	start := func(owner string) *delivery.Worker {
		cfg := durableConfig(env, id)
		cfg.Checkpoints = rc
		cfg.WorkerID = owner
		cfg.BatchSize = 4
		return startWorker(t, env.Source, regionOf("ckp16"), cfg, func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action {
			return delivery.Continue
		})
	}
	a, b := start("ckp-16-a"), start("ckp-16-b")
	workers := map[string]*delivery.Worker{"ckp-16-a": a, "ckp-16-b": b}

	appended := 0
	eventually(t, "one of two competing workers to stop", func() bool {
		select {
		case <-a.Done():
			return true
		case <-b.Done():
			return true
		default:
		}
		appendN(t, env, "ckp16", 1)
		appended++
		return false
	})
	loser, winner := "ckp-16-a", "ckp-16-b"
	select {
	case <-a.Done():
	default:
		loser, winner = winner, loser
	}
	err := joinWithin(t, workers[loser])
	wantErr(t, "loser Join", err, delivery.ErrCheckpointWriteFailed, checkpoint.ErrConflict)
	t.Logf("%s lost after %d appends: %v", loser, appended, err)
	savesAtLoss := len(rc.saved())

	// The winner keeps committing.
	more := appendN(t, env, "ckp16", 5)
	last := more[len(more)-1]
	w := workers[winner]
	eventually(t, "the winner to commit the last event", func() bool {
		st := w.Stats()
		return st.CommittedStarted && st.Committed == last
	})
	select {
	case <-w.Done():
		t.Fatalf("the winner stopped too: %v", w.Join())
	default:
	}
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("winner Join = %v", err)
	}

	saves := rc.saved()
	for _, s := range saves[savesAtLoss:] {
		if s.Rec.Owner != winner {
			t.Fatalf("save by %q at revision %d after %s stopped", s.Rec.Owner, s.Rev, loser)
		}
	}
	slices.SortFunc(saves, func(x, y savedRecord) int { return cmp.Compare(x.Rev, y.Rev) })
	for i := 1; i < len(saves); i++ {
		if saves[i].Rev == saves[i-1].Rev {
			t.Fatalf("two successful saves share revision %d", saves[i].Rev)
		}
		if saves[i].Rec.Position < saves[i-1].Rec.Position {
			t.Fatalf("stored position went back from %d (rev %d, %s) to %d (rev %d, %s)",
				saves[i-1].Rec.Position, saves[i-1].Rev, saves[i-1].Rec.Owner,
				saves[i].Rec.Position, saves[i].Rev, saves[i].Rec.Owner)
		}
	}
	wantRecord(t, env, id, last)
}

// CKP-18: every save writes owner = WorkerID and updated_ms from the
// WallClock, with region identity and journal id.
func scenarioCKP18(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id, owner = "ckp-18", "worker-ckp-18"
	seqs := appendN(t, env, "ckp18", 2)
	rc := &recordingCheckpoints{Store: env.Checkpoints}
	var wall atomic.Int64
	cfg := durableConfig(env, id)
	cfg.Checkpoints = rc
	cfg.BatchSize = 1
	cfg.WorkerID = owner
	cfg.WallClock = func() time.Time { return time.UnixMilli(wall.Load()) }
	stamps := map[uint64]int64{seqs[0]: 1_700_000_000_123, seqs[1]: 1_700_000_000_456}
	w := startWorker(t, env.Source, regionOf("ckp18"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		wall.Store(stamps[b[0].Seq])
		if b[0].Seq == seqs[1] {
			return delivery.Stop
		}
		return delivery.Continue
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	saves := rc.saved()
	if len(saves) != 2 {
		t.Fatalf("%d saves, want 2", len(saves))
	}
	ident, jid := regionOf("ckp18").Identity(), journalID(t, env)
	for i, s := range saves {
		r := s.Rec
		if r.Position != seqs[i] || !r.Started || r.Owner != owner || r.UpdatedMs != uint64(stamps[seqs[i]]) ||
			r.RegionIdentity == nil || *r.RegionIdentity != ident || r.JournalID != jid {
			t.Fatalf("save %d = %+v, want position %d, owner %q, updated_ms %d, region %q, journal %q",
				i, r, seqs[i], owner, stamps[seqs[i]], ident, jid)
		}
	}
	rec := wantRecord(t, env, id, seqs[1])
	if rec.Owner != owner || rec.UpdatedMs != uint64(stamps[seqs[1]]) || rec.JournalID != jid ||
		rec.RegionIdentity == nil || *rec.RegionIdentity != ident {
		t.Fatalf("stored record %+v, want owner %q, updated_ms %d, journal %q, region %q", rec, owner, stamps[seqs[1]], jid, ident)
	}
}

// ---------------------------------------------------------------------------
// Worker lifecycle and actions
