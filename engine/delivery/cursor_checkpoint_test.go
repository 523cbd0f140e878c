package delivery

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/checkpointtest"
	"github.com/batfleet/batfleet/engine/journal"
)

// Tests of a manual cursor's durable binding (SPEC §6.3, revised):
// LoadCheckpoint applies every load rule of §8.5 (checkpoint.Load, the
// worker's own), and SaveCheckpoint writes a complete record with
// compare-and-swap on the revision it loaded or last saved. Before the
// revision, LoadCheckpoint applied rules 1-3 only (a cursor resumed on
// another region's position) and SaveCheckpoint took the store, id and
// revision from its caller and wrote no journal id or owner.

// ccpRecord is a complete record of region at (pos, started), bound to
// journal.
func ccpRecord(region engine.Region, pos uint64, started bool, journal string) checkpoint.Record {
	ident := region.Identity()
	return checkpoint.Record{Position: pos, Started: started, RegionIdentity: &ident, JournalID: journal, Owner: "planted", UpdatedMs: 1}
}

// ccpPlant stores rec as the record of id (over whatever is stored) and
// returns its revision.
func ccpPlant(t testing.TB, store checkpoint.Store, id string, rec checkpoint.Record) checkpoint.Revision {
	t.Helper()
	_, rev, err := store.Load(context.Background(), id)
	if err != nil && !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("load %q before planting: %v", id, err)
	}
	rev, err = store.Save(context.Background(), id, rec, rev)
	if err != nil {
		t.Fatalf("plant %q: %v", id, err)
	}
	return rev
}

// ccpLoad returns the stored record of id, failing the test when there is
// none.
func ccpLoad(t testing.TB, store checkpoint.Store, id string) (checkpoint.Record, checkpoint.Revision) {
	t.Helper()
	rec, rev, err := store.Load(context.Background(), id)
	if err != nil {
		t.Fatalf("load %q: %v", id, err)
	}
	return rec, rev
}

// ccpSameRecord fails unless the stored record of id is still want at
// revision rev.
func ccpSameRecord(t testing.TB, store checkpoint.Store, id string, want checkpoint.Record, rev checkpoint.Revision) {
	t.Helper()
	got, gotRev := ccpLoad(t, store, id)
	if gotRev != rev || got.Position != want.Position || got.Started != want.Started || got.JournalID != want.JournalID ||
		got.Owner != want.Owner || got.UpdatedMs != want.UpdatedMs || (got.RegionIdentity == nil) != (want.RegionIdentity == nil) ||
		got.RegionIdentity != nil && *got.RegionIdentity != *want.RegionIdentity {
		t.Fatalf("record %q = %+v at revision %d, want %+v at revision %d (untouched)", id, got, gotRev, want, rev)
	}
}

// ccpSetup is a journal with three events on entity:a (seqs 1-3) and two
// on entity:b (seqs 4-5), and an empty memory checkpoint store.
func ccpSetup(t testing.TB) (*journal.Store, *checkpoint.MemoryStore, string) {
	t.Helper()
	s := openTestStore(t, journal.Config{})
	for range 3 {
		mustAppend(t, s, ev("entity:a", "s", "a"))
	}
	for range 2 {
		mustAppend(t, s, ev("entity:b", "s", "b"))
	}
	return s, checkpoint.NewMemoryStore(), s.JournalID().String()
}

// TestCKP07_CursorLoadRegionMismatch: an entity:a cursor loading the
// checkpoint an entity:b cursor saved gets ErrRegionMismatch; its state
// and its binding are unchanged. (Before the fix it resumed at b's
// position: LoadCheckpoint returned nil and the state became (5, true).)
// Catalogue: CKP-07 (manual cursor, SPEC §6.3).
func TestCKP07_CursorLoadRegionMismatch(t *testing.T) {
	s, store, _ := ccpSetup(t)
	ctx := context.Background()
	regionA, regionB := engine.RegionEntity("entity:a"), engine.RegionEntity("entity:b")

	b := curNewCursor(t, s, regionB, 0)
	if err := b.LoadCheckpoint(ctx, store, "shared"); err != nil {
		t.Fatalf("b LoadCheckpoint (no record) = %v", err)
	}
	if es := curPollBatch(t, b, 10); !equalSeqs(seqsOf(es), []uint64{4, 5}) {
		t.Fatalf("b polled %v, want [4 5]", seqsOf(es))
	}
	if err := b.SaveCheckpoint(ctx); err != nil {
		t.Fatalf("b SaveCheckpoint = %v", err)
	}
	saved, rev := ccpLoad(t, store, "shared")

	a := curNewCursor(t, s, regionA, 0)
	if err := a.LoadCheckpoint(ctx, store, "mine"); err != nil {
		t.Fatalf("a LoadCheckpoint(mine) = %v", err)
	}
	a.Restore(1, true)
	err := a.LoadCheckpoint(ctx, store, "shared")
	var rm *checkpoint.RegionMismatchError
	if !errors.Is(err, checkpoint.ErrRegionMismatch) || !errors.As(err, &rm) {
		t.Fatalf("a LoadCheckpoint(shared) = %v, want ErrRegionMismatch", err)
	}
	if rm.Expected != regionA.Identity() || rm.Stored == nil || *rm.Stored != regionB.Identity() || rm.Location != store.Location("shared") {
		t.Fatalf("mismatch = %+v, want stored %q, expected %q at %q", rm, regionB.Identity(), regionA.Identity(), store.Location("shared"))
	}
	curCheckpoint(t, a, 1, true)
	if es := curPollBatch(t, a, 10); !equalSeqs(seqsOf(es), []uint64{2, 3}) {
		t.Fatalf("a polled %v after the refused load, want [2 3]", seqsOf(es))
	}
	// Still bound to its own checkpoint: the save goes there, b's record
	// is untouched.
	if err := a.SaveCheckpoint(ctx); err != nil {
		t.Fatalf("a SaveCheckpoint = %v", err)
	}
	ccpSameRecord(t, store, "shared", saved, rev)
	if mine, _ := ccpLoad(t, store, "mine"); mine.Position != 3 || !mine.Started || *mine.RegionIdentity != regionA.Identity() {
		t.Fatalf("a's record = %+v, want (3, true) on %q", mine, regionA.Identity())
	}

	// An unbound cursor that is refused stays unbound: its save writes
	// nothing anywhere.
	fresh := curNewCursor(t, s, regionA, 0)
	if err := fresh.LoadCheckpoint(ctx, store, "shared"); !errors.Is(err, checkpoint.ErrRegionMismatch) {
		t.Fatalf("fresh LoadCheckpoint(shared) = %v, want ErrRegionMismatch", err)
	}
	curCheckpoint(t, fresh, 0, false)
	curPollBatch(t, fresh, 1)
	if err := fresh.SaveCheckpoint(ctx); err != nil {
		t.Fatalf("unbound SaveCheckpoint = %v, want nil", err)
	}
	ccpSameRecord(t, store, "shared", saved, rev)

	// A record without a region identity never loads either (CKP-08).
	noRegion := ccpRecord(regionA, 2, true, s.JournalID().String())
	noRegion.RegionIdentity = nil
	ccpPlant(t, store, "no-region", noRegion)
	if err := a.LoadCheckpoint(ctx, store, "no-region"); !errors.As(err, &rm) || rm.Stored != nil {
		t.Fatalf("LoadCheckpoint(no-region) = %v, want a RegionMismatchError with no stored identity", err)
	}
	curCheckpoint(t, a, 3, true)
}

// TestCKP14_CursorLoadJournalMismatch: a record bound to another journal
// is refused with ErrJournalMismatch, state unchanged; a record with no
// journal id loads, and the cursor's next save binds it to the source's
// journal. (Before the fix the first loaded, and no save ever wrote a
// journal id.)
// Catalogue: CKP-14 (manual cursor, SPEC §6.3).
func TestCKP14_CursorLoadJournalMismatch(t *testing.T) {
	s, store, jid := ccpSetup(t)
	ctx := context.Background()
	region := engine.RegionEntity("entity:a")
	other := engine.NewID128().String()
	foreign := ccpRecord(region, 2, true, other)
	rev := ccpPlant(t, store, "foreign", foreign)

	c := curNewCursor(t, s, region, 0)
	c.Restore(1, true)
	err := c.LoadCheckpoint(ctx, store, "foreign")
	var jm *checkpoint.JournalMismatchError
	if !errors.Is(err, checkpoint.ErrJournalMismatch) || !errors.As(err, &jm) || jm.Stored != other || jm.Current != jid {
		t.Fatalf("LoadCheckpoint(foreign) = %v, want ErrJournalMismatch{%s, %s}", err, other, jid)
	}
	curCheckpoint(t, c, 1, true)
	if err := c.SaveCheckpoint(ctx); err != nil {
		t.Fatalf("SaveCheckpoint after the refused load = %v, want nil (unbound)", err)
	}
	ccpSameRecord(t, store, "foreign", foreign, rev)

	// No journal id: loads, and the next save adds the source's.
	ccpPlant(t, store, "old", ccpRecord(region, 2, true, ""))
	if err := c.LoadCheckpoint(ctx, store, "old"); err != nil {
		t.Fatalf("LoadCheckpoint(old) = %v", err)
	}
	curCheckpoint(t, c, 2, true)
	if err := c.SaveCheckpoint(ctx); err != nil {
		t.Fatalf("SaveCheckpoint = %v", err)
	}
	if rec, _ := ccpLoad(t, store, "old"); rec.JournalID != jid || rec.Position != 2 || !rec.Started {
		t.Fatalf("record after the save = %+v, want (2, true) bound to journal %s", rec, jid)
	}
}

// TestCKP15_CursorLoadAhead: a started record at or past the visible bound
// is refused with ErrAhead, state unchanged; visible-1 resumes; a record
// that is not started is never ahead. (Before the fix (1000, true) loaded
// and the cursor silently skipped everything up to seq 1000.)
// Catalogue: CKP-15 (manual cursor, SPEC §6.3).
func TestCKP15_CursorLoadAhead(t *testing.T) {
	s, store, jid := ccpSetup(t)
	ctx := context.Background()
	region := engine.RegionEntity("entity:a")
	visible := s.Visible()
	if visible != 6 {
		t.Fatalf("visible bound = %d, want 6", visible)
	}
	c := curNewCursor(t, s, region, 0)
	c.Restore(1, true)
	for _, pos := range []uint64{1000, visible} {
		ahead := ccpRecord(region, pos, true, jid)
		rev := ccpPlant(t, store, "ahead", ahead)
		err := c.LoadCheckpoint(ctx, store, "ahead")
		var ae *checkpoint.AheadError
		if !errors.Is(err, checkpoint.ErrAhead) || !errors.As(err, &ae) || ae.Position != pos || ae.Visible != visible {
			t.Fatalf("LoadCheckpoint(%d, true) = %v, want ErrAhead{%d, %d}", pos, err, pos, visible)
		}
		curCheckpoint(t, c, 1, true)
		if err := c.SaveCheckpoint(ctx); err != nil {
			t.Fatalf("SaveCheckpoint after the refused load = %v, want nil (unbound)", err)
		}
		ccpSameRecord(t, store, "ahead", ahead, rev)
	}

	ccpPlant(t, store, "ahead", ccpRecord(region, visible-1, true, jid))
	if err := c.LoadCheckpoint(ctx, store, "ahead"); err != nil {
		t.Fatalf("LoadCheckpoint(visible-1, true) = %v", err)
	}
	curCheckpoint(t, c, visible-1, true)

	ccpPlant(t, store, "ahead", ccpRecord(region, 1000, false, jid))
	if err := c.LoadCheckpoint(ctx, store, "ahead"); err != nil {
		t.Fatalf("LoadCheckpoint(1000, false) = %v", err)
	}
	curCheckpoint(t, c, 1000, false)
	if es := curPollBatch(t, c, 10); !equalSeqs(seqsOf(es), []uint64{1, 2, 3}) {
		t.Fatalf("polled %v from (1000, false), want [1 2 3]", seqsOf(es))
	}
}

// TestCKP03_CursorLoadNotFound: no record ⇒ the cursor starts at
// (0, false), whatever its state was, and its first save creates the
// record, complete (region identity, the source's journal id, an owner,
// updated_ms).
// Catalogue: CKP-03 (manual cursor, SPEC §6.3).
func TestCKP03_CursorLoadNotFound(t *testing.T) {
	s, store, jid := ccpSetup(t)
	ctx := context.Background()
	region := engine.RegionEntity("entity:a")
	c := curNewCursor(t, s, region, 0)
	c.Restore(3, true)
	if err := c.LoadCheckpoint(ctx, store, "new"); err != nil {
		t.Fatalf("LoadCheckpoint(new) = %v", err)
	}
	curCheckpoint(t, c, 0, false)
	if _, _, err := store.Load(ctx, "new"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("record after a load = %v, want none (loading writes nothing)", err)
	}
	if es := curPollBatch(t, c, 2); !equalSeqs(seqsOf(es), []uint64{1, 2}) {
		t.Fatalf("polled %v, want [1 2]", seqsOf(es))
	}
	before := time.Now().UnixMilli()
	if err := c.SaveCheckpoint(ctx); err != nil {
		t.Fatalf("first SaveCheckpoint = %v", err)
	}
	after := time.Now().UnixMilli()
	rec, rev := ccpLoad(t, store, "new")
	if rev == 0 || rec.Position != 2 || !rec.Started || rec.RegionIdentity == nil || *rec.RegionIdentity != region.Identity() ||
		rec.JournalID != jid || rec.Owner == "" || rec.UpdatedMs < uint64(before) || rec.UpdatedMs > uint64(after) {
		t.Fatalf("created record %+v (revision %d), want (2, true), region %q, journal %s, an owner, updated_ms in [%d, %d]",
			rec, rev, region.Identity(), jid, before, after)
	}
}

// TestCKPExtra_CursorLoadStoreFailures: the store-only rules: an invalid
// id fails first, an unreadable record is ErrIO and an undecodable one
// ErrCorrupt; neither changes the cursor.
func TestCKPExtra_CursorLoadStoreFailures(t *testing.T) {
	s, mem, _ := ccpSetup(t)
	ctx := context.Background()
	store := checkpointtest.NewFaulty(mem)
	c := curNewCursor(t, s, engine.RegionEntity("entity:a"), 0)
	c.Restore(2, true)
	if err := c.LoadCheckpoint(ctx, store, "with/slash"); !errors.Is(err, checkpoint.ErrInvalidID) {
		t.Fatalf("LoadCheckpoint(with/slash) = %v, want ErrInvalidID", err)
	}
	if err := store.Plant(ctx, "garbage", []byte("not-msgpack")); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadCheckpoint(ctx, store, "garbage"); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("LoadCheckpoint(garbage) = %v, want ErrCorrupt", err)
	}
	repair := store.Break("broken")
	defer repair()
	if err := c.LoadCheckpoint(ctx, store, "broken"); !errors.Is(err, checkpoint.ErrIO) || errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("LoadCheckpoint(broken) = %v, want ErrIO", err)
	}
	curCheckpoint(t, c, 2, true)
	if err := c.SaveCheckpoint(ctx); err != nil {
		t.Fatalf("SaveCheckpoint of a cursor never bound = %v, want nil", err)
	}
}

// TestCKP18_CursorSaveKeepsJournalAndCAS: a record a durable worker made
// (journal id, owner) is loaded and saved by a cursor: the save keeps the
// journal id and writes an owner and updated_ms; a second save uses the
// revision the first returned; a save by someone else in between makes
// the cursor's next save fail with ErrConflict, writing nothing. (Before
// the fix SaveCheckpoint wrote no journal id and no owner, and the caller
// passed the revision.)
// Catalogue: CKP-18 (manual cursor, SPEC §6.3).
func TestCKP18_CursorSaveKeepsJournalAndCAS(t *testing.T) {
	s, store, jid := ccpSetup(t)
	ctx := context.Background()
	region := engine.RegionEntity("entity:a")
	const id = "made-by-worker"

	cfg := DefaultWorkerConfig()
	cfg.BatchSize = 1
	cfg.CheckpointID, cfg.Checkpoints, cfg.WorkerID = id, store, "the-worker"
	w, err := StartWorker(ctx, s, region, cfg, func(context.Context, []engine.Entry, *Delivery) Action { return Stop })
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Join(); err != nil {
		t.Fatalf("worker Join = %v", err)
	}
	made, madeRev := ccpLoad(t, store, id)
	if made.Position != 1 || made.JournalID != jid || made.Owner != "the-worker" {
		t.Fatalf("worker's record = %+v, want (1, true), journal %s, owner the-worker", made, jid)
	}

	c := curNewCursor(t, s, region, 0)
	if err := c.LoadCheckpoint(ctx, store, id); err != nil {
		t.Fatalf("LoadCheckpoint = %v", err)
	}
	curCheckpoint(t, c, 1, true)
	if es := curPollBatch(t, c, 1); !equalSeqs(seqsOf(es), []uint64{2}) {
		t.Fatalf("polled %v, want [2]", seqsOf(es))
	}
	if err := c.SaveCheckpoint(ctx); err != nil {
		t.Fatalf("first SaveCheckpoint = %v", err)
	}
	first, firstRev := ccpLoad(t, store, id)
	if firstRev <= madeRev || first.Position != 2 || !first.Started || first.JournalID != jid ||
		first.Owner == "" || first.UpdatedMs == 0 || first.RegionIdentity == nil || *first.RegionIdentity != region.Identity() {
		t.Fatalf("record after the cursor's save = %+v (revision %d, was %d), want (2, true), journal %s, an owner, updated_ms",
			first, firstRev, madeRev, jid)
	}

	// The second save expects the first's revision (not the loaded one).
	curPollBatch(t, c, 1)
	if err := c.SaveCheckpoint(ctx); err != nil {
		t.Fatalf("second SaveCheckpoint = %v, want nil (CAS on the revision the first returned)", err)
	}
	second, secondRev := ccpLoad(t, store, id)
	if secondRev <= firstRev || second.Position != 3 || second.JournalID != jid || second.Owner != first.Owner {
		t.Fatalf("record after the second save = %+v (revision %d), want (3, true) over revision %d, same journal and owner",
			second, secondRev, firstRev)
	}

	// Reloading keeps the cursor's owner.
	if err := c.LoadCheckpoint(ctx, store, id); err != nil {
		t.Fatalf("reload = %v", err)
	}
	if err := c.SaveCheckpoint(ctx); err != nil {
		t.Fatalf("SaveCheckpoint after the reload = %v", err)
	}
	reloaded, reloadedRev := ccpLoad(t, store, id)
	if reloaded.Owner != first.Owner {
		t.Fatalf("owner after a reload = %q, want %q (the cursor's)", reloaded.Owner, first.Owner)
	}

	// Someone else saves: the cursor's next save conflicts and writes
	// nothing.
	theirs := ccpRecord(region, 1, true, jid)
	theirRev, err := store.Save(ctx, id, theirs, reloadedRev)
	if err != nil {
		t.Fatal(err)
	}
	err = c.SaveCheckpoint(ctx)
	if !errors.Is(err, checkpoint.ErrConflict) {
		t.Fatalf("SaveCheckpoint after another save = %v, want ErrConflict", err)
	}
	ccpSameRecord(t, store, id, theirs, theirRev)
	// The conflict does not move the cursor's expected revision.
	if err := c.SaveCheckpoint(ctx); !errors.Is(err, checkpoint.ErrConflict) {
		t.Fatalf("SaveCheckpoint again = %v, want ErrConflict", err)
	}
	ccpSameRecord(t, store, id, theirs, theirRev)
}

// TestCKPExtra_UnboundCursorSaveIsNoOp: SaveCheckpoint on a cursor bound
// to no checkpoint (in-memory) returns nil and changes nothing.
func TestCKPExtra_UnboundCursorSaveIsNoOp(t *testing.T) {
	s, _, _ := ccpSetup(t)
	c := curNewCursor(t, s, engine.RegionEntity("entity:a"), 0)
	curPollBatch(t, c, 2)
	if err := c.SaveCheckpoint(context.Background()); err != nil {
		t.Fatalf("SaveCheckpoint = %v, want nil", err)
	}
	curCheckpoint(t, c, 2, true)
	if c.bound != nil {
		t.Fatalf("an unbound cursor's save bound it to %+v", c.bound)
	}
}
