package checkpointtest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
)

// Target is one checkpoint store under test, together with the
// hooks the conformance suite needs to damage it.
type Target struct {
	// Store is the store under test, fresh and empty.
	Store checkpoint.Store
	// PlantRaw stores data as the record bytes of id, exactly as the store
	// would hold the bytes of an encoded record, so that Load decodes data
	// as the record. Any framing the store adds (a file header,
	// a KV revision) must stay valid: the record bytes themselves are what
	// the suite corrupts. Required.
	PlantRaw func(t testing.TB, id string, data []byte)
	// BreakIO makes Load and Save of id fail with an I/O error until the
	// returned repair is called, which restores the previous state (the
	// record, if any, as it was). id may not have a record yet. Nil when
	// the store cannot inject I/O faults; the fault subtests then skip.
	BreakIO func(t testing.TB, id string) (repair func())
}

// conformanceOpTimeout bounds every store call of the suite.
const conformanceOpTimeout = 30 * time.Second

// conformanceValidIDs are the valid checkpoint ids of case CK-03, and a
// few more that probe key mappings: an id kept readable verbatim, ids that
// differ only in case, and ids sharing long prefixes (a store that splits
// long keys into parts must still keep them apart).
func conformanceValidIDs() []string {
	long := strings.Repeat("x", 1024)
	return []string{
		"witness-cursor",
		"a.b",
		"a b",
		"名前",
		"x:y@z",
		`a\b`,
		"*",
		">",
		long,
		"a_b-C9",
		"a_b-c9",
		long[:1023],
		long[:200],
		long[:201],
		strings.Repeat("é", 512),
		strings.Repeat("é", 100),
		strings.Repeat("é", 100) + "x",
	}
}

// RunConformance runs the checkpoint-store conformance suite
// (catalogue CKP-17) against the stores newStore builds. newStore is
// called once per subtest and must return an empty store that belongs to
// that subtest (clean it up with t.Cleanup). Subtest names start with the
// catalogue id they check, e.g. "CKP-17/absent-is-not-found".
//
// engine/checkpoint runs it against the memory and file stores, kvckpt
// against the JetStream KV store with an embedded nats-server per subtest.
//
// The suite asserts only what every store must do: errors are matched with
// errors.Is and errors.As, never by text, and revisions are compared only for
// order, never for exact values.
func RunConformance(t *testing.T, newStore func(t testing.TB) Target) {
	t.Helper()
	subtests := []struct {
		name string
		run  func(t *testing.T, tg Target)
	}{
		{"CKP-17/absent-is-not-found", ckptAbsentIsNotFound},
		{"CKP-17/create-returns-revision", ckptCreateReturnsRevision},
		{"CKP-17/create-again-conflicts", ckptCreateAgainConflicts},
		{"CKP-17/stale-update-conflicts", ckptStaleUpdateConflicts},
		{"CKP-17/update-of-absent-conflicts", ckptUpdateOfAbsentConflicts},
		{"CKP-17/current-update-advances", ckptCurrentUpdateAdvances},
		{"CKP-17/revisions-strictly-increase", ckptRevisionsStrictlyIncrease},
		{"CKP-17/corrupt-bytes", ckptCorruptBytes},
		{"CKP-17/io-fault-keeps-record", ckptIOFaultKeepsRecord},
		{"CKP-17/io-fault-on-absent-record", ckptIOFaultOnAbsent},
		{"CKP-17/cancelled-context", ckptCancelledContext},
		{"CKP-17/concurrent-updaters-one-wins", ckptConcurrentUpdaters},
		{"CKP-17/concurrent-creators-one-wins", ckptConcurrentCreators},
		{"CKP-01/round-trip-all-fields", ckptRoundTripAllFields},
		{"CKP-02/golden-records-load", ckptGoldenRecordsLoad},
		{"CKP-12/process-boot-ns-ignored", ckptProcessBootIgnored},
		{"CK-03/valid-ids-are-independent", ckptValidIDsIndependent},
		{"CK-03/locations-are-distinct", ckptLocationsDistinct},
	}
	for _, st := range subtests {
		t.Run(st.name, func(t *testing.T) {
			tg := newStore(t)
			if tg.Store == nil || tg.PlantRaw == nil {
				t.Fatal("conformance target needs Store and PlantRaw")
			}
			st.run(t, tg)
		})
	}
}

// ---- helpers -----------------------------------------------------------

func ckptCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), conformanceOpTimeout)
	t.Cleanup(cancel)
	return ctx
}

// ckptRecord is a record with every field set, distinguishable by pos.
func ckptRecord(pos uint64, owner string) checkpoint.Record {
	ident := engine.RegionEntity("entity:conformance").Identity()
	return checkpoint.Record{
		Position:       pos,
		Started:        true,
		RegionIdentity: &ident,
		JournalID:      "0123456789abcdef0123456789abcdef",
		Owner:          owner,
		UpdatedMs:      1_700_000_000_000 + pos,
	}
}

func ckptFormat(r checkpoint.Record) string {
	ident := "<nil>"
	if r.RegionIdentity != nil {
		ident = fmt.Sprintf("%q", *r.RegionIdentity)
	}
	return fmt.Sprintf("{Position:%d Started:%t RegionIdentity:%s JournalID:%q Owner:%q UpdatedMs:%d}",
		r.Position, r.Started, ident, r.JournalID, r.Owner, r.UpdatedMs)
}

func ckptSave(t testing.TB, s checkpoint.Store, id string, rec checkpoint.Record, expected checkpoint.Revision) checkpoint.Revision {
	t.Helper()
	rev, err := s.Save(ckptCtx(t), id, rec, expected)
	if err != nil {
		t.Fatalf("save %q (expected revision %d): %v", ckptShort(id), expected, err)
	}
	if rev == 0 {
		t.Fatalf("save %q returned revision 0", ckptShort(id))
	}
	if expected != 0 && rev <= expected {
		t.Fatalf("save %q: revision %d after %d, want a larger one", ckptShort(id), rev, expected)
	}
	return rev
}

// ckptExpectRecord loads id and checks it holds want at revision wantRev.
func ckptExpectRecord(t testing.TB, s checkpoint.Store, id string, want checkpoint.Record, wantRev checkpoint.Revision) {
	t.Helper()
	got, rev, err := s.Load(ckptCtx(t), id)
	if err != nil {
		t.Fatalf("load %q: %v", ckptShort(id), err)
	}
	if rev != wantRev {
		t.Errorf("load %q: revision %d, want %d", ckptShort(id), rev, wantRev)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("load %q:\n got %s\nwant %s", ckptShort(id), ckptFormat(got), ckptFormat(want))
	}
}

func ckptExpectNotFound(t testing.TB, s checkpoint.Store, id string) {
	t.Helper()
	_, _, err := s.Load(ckptCtx(t), id)
	if !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("load %q: error %v, want ErrCheckpointNotFound", ckptShort(id), err)
	}
	if errors.Is(err, checkpoint.ErrCorrupt) || errors.Is(err, checkpoint.ErrIO) {
		t.Fatalf("load %q: not found, but also matches corrupt or I/O: %v", ckptShort(id), err)
	}
}

func ckptExpectConflict(t testing.TB, err error, what string) {
	t.Helper()
	if !errors.Is(err, checkpoint.ErrConflict) {
		t.Fatalf("%s: error %v, want ErrCheckpointConflict", what, err)
	}
	if errors.Is(err, checkpoint.ErrIO) || errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("%s: conflict also matches I/O or corrupt: %v", what, err)
	}
}

func ckptExpectIO(t testing.TB, err error, what string) {
	t.Helper()
	if !errors.Is(err, checkpoint.ErrIO) {
		t.Fatalf("%s: error %v, want ErrCheckpointIO", what, err)
	}
	for _, other := range []error{checkpoint.ErrCorrupt, checkpoint.ErrConflict, checkpoint.ErrNotFound} {
		if errors.Is(err, other) {
			t.Fatalf("%s: I/O error also matches %v: %v", what, other, err)
		}
	}
}

// ckptShort keeps long ids readable in failure messages.
func ckptShort(id string) string {
	if len(id) <= 40 {
		return id
	}
	return fmt.Sprintf("%s…(%d bytes)", id[:20], len(id))
}

// ---- subtests ----------------------------------------------------------

func ckptAbsentIsNotFound(t *testing.T, tg Target) {
	ckptExpectNotFound(t, tg.Store, "absent")
	ckptSave(t, tg.Store, "present", ckptRecord(1, "w"), 0)
	ckptExpectNotFound(t, tg.Store, "absent")
	ckptExpectNotFound(t, tg.Store, "presen")
	ckptExpectNotFound(t, tg.Store, "present2")
}

func ckptCreateReturnsRevision(t *testing.T, tg Target) {
	rec := ckptRecord(7, "creator")
	rev := ckptSave(t, tg.Store, "cursor", rec, 0)
	ckptExpectRecord(t, tg.Store, "cursor", rec, rev)
}

func ckptCreateAgainConflicts(t *testing.T, tg Target) {
	first := ckptRecord(1, "first")
	rev := ckptSave(t, tg.Store, "cursor", first, 0)
	_, err := tg.Store.Save(ckptCtx(t), "cursor", ckptRecord(2, "second"), 0)
	ckptExpectConflict(t, err, "second create")
	ckptExpectRecord(t, tg.Store, "cursor", first, rev)
}

func ckptStaleUpdateConflicts(t *testing.T, tg Target) {
	rev1 := ckptSave(t, tg.Store, "cursor", ckptRecord(1, "w"), 0)
	rec2 := ckptRecord(2, "w")
	rev2 := ckptSave(t, tg.Store, "cursor", rec2, rev1)

	_, err := tg.Store.Save(ckptCtx(t), "cursor", ckptRecord(3, "stale"), rev1)
	ckptExpectConflict(t, err, "update from a stale revision")
	_, err = tg.Store.Save(ckptCtx(t), "cursor", ckptRecord(4, "future"), rev2+1000)
	ckptExpectConflict(t, err, "update from a revision never handed out")
	ckptExpectRecord(t, tg.Store, "cursor", rec2, rev2)
}

func ckptUpdateOfAbsentConflicts(t *testing.T, tg Target) {
	// A revision of another id is no licence to create this one.
	rev := ckptSave(t, tg.Store, "other", ckptRecord(1, "w"), 0)
	_, err := tg.Store.Save(ckptCtx(t), "cursor", ckptRecord(2, "w"), rev)
	ckptExpectConflict(t, err, "update of an absent record")
	ckptExpectNotFound(t, tg.Store, "cursor")
}

func ckptCurrentUpdateAdvances(t *testing.T, tg Target) {
	rev1 := ckptSave(t, tg.Store, "cursor", ckptRecord(1, "w"), 0)
	rec2 := ckptRecord(2, "w")
	rev2, err := tg.Store.Save(ckptCtx(t), "cursor", rec2, rev1)
	if err != nil {
		t.Fatalf("update from the current revision: %v", err)
	}
	if rev2 <= rev1 {
		t.Fatalf("update: revision %d after %d, want a strictly larger one", rev2, rev1)
	}
	ckptExpectRecord(t, tg.Store, "cursor", rec2, rev2)
}

func ckptRevisionsStrictlyIncrease(t *testing.T, tg Target) {
	var rev checkpoint.Revision
	for i := range 20 {
		rec := ckptRecord(uint64(i), "w")
		next := ckptSave(t, tg.Store, "cursor", rec, rev)
		if next <= rev {
			t.Fatalf("save %d: revision %d after %d", i, next, rev)
		}
		rev = next
		ckptExpectRecord(t, tg.Store, "cursor", rec, rev)
		// Saves of another id interleave; they must not disturb this one.
		if i%5 == 0 {
			ckptSave(t, tg.Store, fmt.Sprintf("other-%d", i), ckptRecord(99, "o"), 0)
		}
	}
}

func ckptCorruptBytes(t *testing.T, tg Target) {
	valid := checkpoint.Encode(ckptRecord(300, "w"))
	cases := []struct {
		name string
		data []byte
	}{
		{"not-msgpack", []byte("not-msgpack")},
		{"empty", []byte{}},
		{"array", []byte{0x92, 0x01, 0xc3}},
		{"nil", []byte{0xc0}},
		{"truncated-last-byte", valid[:len(valid)-1]},
		{"truncated-half", valid[:len(valid)/2]},
		{"map-without-started", []byte{0x81, 0xa8, 'p', 'o', 's', 'i', 't', 'i', 'o', 'n', 0x05}},
		{"position-is-a-string", []byte{0x82, 0xa8, 'p', 'o', 's', 'i', 't', 'i', 'o', 'n', 0xa1, '5', 0xa7, 's', 't', 'a', 'r', 't', 'e', 'd', 0xc3}},
		{"trailing-bytes", append(append([]byte(nil), valid...), 0xc0)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := "corrupt-" + c.name
			tg.PlantRaw(t, id, c.data)
			_, _, err := tg.Store.Load(ckptCtx(t), id)
			if !errors.Is(err, checkpoint.ErrCorrupt) {
				t.Fatalf("load: error %v, want ErrCheckpointCorrupt", err)
			}
			if errors.Is(err, checkpoint.ErrIO) || errors.Is(err, checkpoint.ErrNotFound) {
				t.Fatalf("load: corrupt also matches I/O or not found: %v", err)
			}
			var ce *checkpoint.CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("load: error %v (%T) is no *checkpoint.CorruptError", err, err)
			}
			if ce.ID != id {
				t.Errorf("CheckpointCorruptError.ID = %q, want %q", ce.ID, id)
			}
			if ce.Location == "" {
				t.Errorf("CheckpointCorruptError.Location is empty")
			} else if loc := tg.Store.Location(id); ce.Location != loc {
				t.Errorf("CheckpointCorruptError.Location = %q, want the canonical %q", ce.Location, loc)
			}
			if ce.Reason == "" {
				t.Errorf("CheckpointCorruptError.Reason is empty")
			}
			// A corrupt record exists: a create must not silently replace it.
			_, err = tg.Store.Save(ckptCtx(t), id, ckptRecord(0, "w"), 0)
			ckptExpectConflict(t, err, "create over a corrupt record")
			if _, _, err := tg.Store.Load(ckptCtx(t), id); !errors.Is(err, checkpoint.ErrCorrupt) {
				t.Fatalf("load after the refused create: %v, want still ErrCheckpointCorrupt", err)
			}
		})
	}
}

func ckptIOFaultKeepsRecord(t *testing.T, tg Target) {
	if tg.BreakIO == nil {
		t.Fatal("Target.BreakIO is required: every store must show that an I/O fault leaves its record intact")
	}
	rec := ckptRecord(5, "before")
	rev := ckptSave(t, tg.Store, "cursor", rec, 0)
	other := ckptRecord(6, "bystander")
	otherRev := ckptSave(t, tg.Store, "bystander", other, 0)

	repair := tg.BreakIO(t, "cursor")
	_, _, err := tg.Store.Load(ckptCtx(t), "cursor")
	ckptExpectIO(t, err, "load during the fault")
	_, err = tg.Store.Save(ckptCtx(t), "cursor", ckptRecord(9, "during"), rev)
	ckptExpectIO(t, err, "save during the fault")
	repair()

	ckptExpectRecord(t, tg.Store, "cursor", rec, rev)
	ckptExpectRecord(t, tg.Store, "bystander", other, otherRev)
	// The failed save did not consume the revision: an update from it works.
	after := ckptRecord(10, "after")
	rev2 := ckptSave(t, tg.Store, "cursor", after, rev)
	ckptExpectRecord(t, tg.Store, "cursor", after, rev2)
}

func ckptIOFaultOnAbsent(t *testing.T, tg Target) {
	if tg.BreakIO == nil {
		t.Fatal("Target.BreakIO is required: every store must show that an I/O fault leaves its record intact")
	}
	repair := tg.BreakIO(t, "fresh")
	_, _, err := tg.Store.Load(ckptCtx(t), "fresh")
	ckptExpectIO(t, err, "load during the fault")
	_, err = tg.Store.Save(ckptCtx(t), "fresh", ckptRecord(1, "during"), 0)
	ckptExpectIO(t, err, "create during the fault")
	repair()

	ckptExpectNotFound(t, tg.Store, "fresh")
	rec := ckptRecord(2, "after")
	rev := ckptSave(t, tg.Store, "fresh", rec, 0)
	ckptExpectRecord(t, tg.Store, "fresh", rec, rev)
}

// ckptCancelledContext: a call whose context is already cancelled either
// completes normally or fails with ErrIO, leaving the record as it
// was; it is never reported as a conflict, corruption or absence.
func ckptCancelledContext(t *testing.T, tg Target) {
	rec := ckptRecord(1, "w")
	rev := ckptSave(t, tg.Store, "cursor", rec, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	got, gotRev, err := tg.Store.Load(ctx, "cursor")
	if err != nil {
		ckptExpectIO(t, err, "load with a cancelled context")
	} else if gotRev != rev || !reflect.DeepEqual(got, rec) {
		t.Fatalf("load with a cancelled context: %s at %d, want %s at %d", ckptFormat(got), gotRev, ckptFormat(rec), rev)
	}

	next := ckptRecord(2, "w")
	newRev, err := tg.Store.Save(ctx, "cursor", next, rev)
	if err != nil {
		ckptExpectIO(t, err, "save with a cancelled context")
		ckptExpectRecord(t, tg.Store, "cursor", rec, rev)
		return
	}
	if newRev <= rev {
		t.Fatalf("save with a cancelled context succeeded with revision %d after %d", newRev, rev)
	}
	ckptExpectRecord(t, tg.Store, "cursor", next, newRev)
}

func ckptConcurrentUpdaters(t *testing.T, tg Target) {
	const n = 8
	base := ckptSave(t, tg.Store, "cursor", ckptRecord(0, "base"), 0)
	ckptRace(t, tg, n, base)
}

func ckptConcurrentCreators(t *testing.T, tg Target) {
	ckptRace(t, tg, 8, 0)
}

// ckptRace has n savers update (or create, from 0) "cursor" from the same
// revision at once: exactly one wins, the others conflict, and the record is
// the winner's.
func ckptRace(t *testing.T, tg Target, n int, from checkpoint.Revision) {
	t.Helper()
	type result struct {
		rev checkpoint.Revision
		err error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), conformanceOpTimeout)
			defer cancel()
			<-start
			rev, err := tg.Store.Save(ctx, "cursor", ckptRecord(uint64(100+i), fmt.Sprintf("saver-%d", i)), from)
			results[i] = result{rev, err}
		}()
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, r := range results {
		switch {
		case r.err == nil:
			if winner >= 0 {
				t.Fatalf("savers %d and %d both won from revision %d (revisions %d, %d)",
					winner, i, from, results[winner].rev, r.rev)
			}
			if r.rev <= from {
				t.Fatalf("saver %d won with revision %d, not above %d", i, r.rev, from)
			}
			winner = i
		default:
			ckptExpectConflict(t, r.err, fmt.Sprintf("saver %d", i))
		}
	}
	if winner < 0 {
		t.Fatalf("no saver won from revision %d", from)
	}
	ckptExpectRecord(t, tg.Store, "cursor",
		ckptRecord(uint64(100+winner), fmt.Sprintf("saver-%d", winner)), results[winner].rev)
}

func ckptRoundTripAllFields(t *testing.T, tg Target) {
	ident := engine.RegionEntity("entity:roundtrip").Identity()
	recs := []checkpoint.Record{
		// CKP-01's record, with every CKP-18 field set.
		{Position: 42, Started: true, RegionIdentity: &ident, JournalID: "0123456789abcdef0123456789abcdef",
			Owner: "host-1234-abcdef", UpdatedMs: 1_700_000_000_123},
		// Extremes: the largest u64s, a long owner, non-ASCII text.
		{Position: ^uint64(0), Started: true, RegionIdentity: &ident, JournalID: "j",
			Owner: strings.Repeat("ö", 300), UpdatedMs: ^uint64(0)},
		// Empty optional fields stay empty (nil identity stays nil).
		{Position: 0, Started: false},
	}
	for i, rec := range recs {
		id := fmt.Sprintf("round-trip-%d", i)
		rev := ckptSave(t, tg.Store, id, rec, 0)
		ckptExpectRecord(t, tg.Store, id, rec, rev)
	}
}

// Golden records of the original four-key form.
const (
	ckptGoldenHexA = "84a8706f736974696f6e00a773746172746564c2af70726f636573735f626f6f745f6e73c0af726567696f6e5f6964656e74697479d922656e746974793d2a7c73636f70653d2a7c666163743d6e6f6e657c636c6f636b3d2a"
	ckptGoldenHexB = "84a8706f736974696f6e07a773746172746564c3af70726f636573735f626f6f745f6e73c0af726567696f6e5f6964656e74697479d938656e746974793d656e746974793a637572736f722d6c6f61642d666c61677c73636f70653d2a7c666163743d6e6f6e657c636c6f636b3d2a"
)

func ckptUnhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex: %v", err)
	}
	return b
}

func ckptGoldenRecordsLoad(t *testing.T, tg Target) {
	identA := "entity=*|scope=*|fact=none|clock=*"
	identB := "entity=entity:cursor-load-flag|scope=*|fact=none|clock=*"
	for _, g := range []struct {
		id   string
		hex  string
		want checkpoint.Record
	}{
		{"golden-a", ckptGoldenHexA, checkpoint.Record{Position: 0, Started: false, RegionIdentity: &identA}},
		{"golden-b", ckptGoldenHexB, checkpoint.Record{Position: 7, Started: true, RegionIdentity: &identB}},
	} {
		tg.PlantRaw(t, g.id, ckptUnhex(t, g.hex))
		got, rev, err := tg.Store.Load(ckptCtx(t), g.id)
		if err != nil {
			t.Fatalf("load %s: %v", g.id, err)
		}
		if rev == 0 {
			t.Errorf("load %s: revision 0", g.id)
		}
		if !reflect.DeepEqual(got, g.want) {
			t.Errorf("load %s:\n got %s\nwant %s", g.id, ckptFormat(got), ckptFormat(g.want))
		}
		// The next save updates the planted record from its revision.
		next := ckptRecord(8, "w")
		rev2 := ckptSave(t, tg.Store, g.id, next, rev)
		ckptExpectRecord(t, tg.Store, g.id, next, rev2)
	}
}

func ckptProcessBootIgnored(t *testing.T, tg Target) {
	// {position: 3, started: true, process_boot_ns: 42, region_identity: nil}
	data := []byte{0x84,
		0xa8, 'p', 'o', 's', 'i', 't', 'i', 'o', 'n', 0x03,
		0xa7, 's', 't', 'a', 'r', 't', 'e', 'd', 0xc3,
		0xaf, 'p', 'r', 'o', 'c', 'e', 's', 's', '_', 'b', 'o', 'o', 't', '_', 'n', 's', 0x2a,
		0xaf, 'r', 'e', 'g', 'i', 'o', 'n', '_', 'i', 'd', 'e', 'n', 't', 'i', 't', 'y', 0xc0,
	}
	tg.PlantRaw(t, "boot", data)
	got, rev, err := tg.Store.Load(ckptCtx(t), "boot")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if want := (checkpoint.Record{Position: 3, Started: true}); !reflect.DeepEqual(got, want) {
		t.Fatalf("load: got %s, want %s", ckptFormat(got), ckptFormat(want))
	}
	ckptSave(t, tg.Store, "boot", ckptRecord(4, "w"), rev)
}

func ckptValidIDs(t testing.TB) []string {
	t.Helper()
	ids := conformanceValidIDs()
	for _, id := range ids {
		if err := checkpoint.ValidateID(id); err != nil {
			t.Fatalf("conformance id %q is invalid: %v", ckptShort(id), err)
		}
	}
	return ids
}

func ckptValidIDsIndependent(t *testing.T, tg Target) {
	ids := ckptValidIDs(t)
	revs := make([]checkpoint.Revision, len(ids))
	for i, id := range ids {
		ckptExpectNotFound(t, tg.Store, id)
		revs[i] = ckptSave(t, tg.Store, id, ckptRecord(uint64(i), id), 0)
	}
	// A second round of updates: every id moves on its own revision.
	for i, id := range ids {
		revs[i] = ckptSave(t, tg.Store, id, ckptRecord(uint64(1000+i), id), revs[i])
	}
	for i, id := range ids {
		ckptExpectRecord(t, tg.Store, id, ckptRecord(uint64(1000+i), id), revs[i])
	}
}

func ckptLocationsDistinct(t *testing.T, tg Target) {
	seen := make(map[string]string)
	for _, id := range ckptValidIDs(t) {
		loc := tg.Store.Location(id)
		if loc == "" {
			t.Errorf("Location(%q) is empty", ckptShort(id))
			continue
		}
		if prev, dup := seen[loc]; dup {
			t.Errorf("ids %q and %q share location %q", ckptShort(prev), ckptShort(id), loc)
		}
		seen[loc] = id
	}
}
