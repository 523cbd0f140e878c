package journal

// Torn writes after a power failure, found in a review of the group-frame
// recovery: the page holding the start of the last write lost (with or
// without complete frames after it, after a fence commit, straddling
// pages), damage to an acknowledged group followed by a torn one (refused),
// payloads that quote frames, and groups larger than the recovery's read
// buffer.

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"runtime"
	"strings"
	"testing"

	"github.com/batfleet/batfleet/engine"
)

// nextPage returns the first page boundary after off.
func nextPage(off int64) int64 { return (off/tornPage + 1) * tornPage }

func bigEvents(n, size int, tag string) []engine.Event {
	out := make([]engine.Event, n)
	for i := range out {
		out[i] = ev("r2"+tag, "s", tag+strings.Repeat("x", size))
	}
	return out
}

func groupFrames(t *testing.T, path string) []diskFrame {
	t.Helper()
	var out []diskFrame
	for _, f := range readDiskAllFrames(t, path) {
		if f.typ == frameGroup {
			out = append(out, f)
		}
	}
	return out
}

// tornSource opens a journal in a new directory and appends three small
// events: what each torn-write case builds on.
func tornSource(t *testing.T) (string, *Store) {
	t.Helper()
	src := t.TempDir()
	s := openJournal(t, src, Config{})
	for i := range 3 {
		mustAppend(t, s, journalEvent(i, false))
	}
	return src, s
}

// reopenTorn opens a journal whose last write was torn: recovery must
// accept it. The store is closed when the test ends.
func reopenTorn(t *testing.T, dir, what string) *Store {
	t.Helper()
	s, err := Open(dir, Config{})
	if err != nil {
		t.Fatalf("%s: recovery refused a torn last write: %v", what, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// lastGroup returns the last group frame of a segment and its extent end.
func lastGroupExtent(t *testing.T, path string) (diskFrame, int64) {
	t.Helper()
	gs := groupFrames(t, path)
	if len(gs) == 0 {
		t.Fatal("no groups")
	}
	g := gs[len(gs)-1]
	fs := readDiskAllFrames(t, path)
	end := g.end()
	for _, f := range fs {
		if f.group == g.off {
			end = f.end()
		}
	}
	return g, end
}

// A fence commit is a write of its own: a torn group written after it,
// with the page holding its group frame lost, is the torn last write.
func TestTornWrite_FenceCommitThenTornGroupLostFirstPage(t *testing.T) {
	ctx := context.Background()
	src, s := tornSource(t)
	if err := s.BeginFence(ctx); err != nil {
		t.Fatal(err)
	}
	fa, err := s.AppendFenced(ctx, []engine.Event{journalEvent(10, false)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CommitFence(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := fa.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendBatch(ctx, bigEvents(20, 500, "b")); err != nil {
		t.Fatal(err)
	}
	dir := crashCopy(t, src)
	path := journalSegPath(dir, 0)
	g, end := lastGroupExtent(t, path)
	fc := markerFrame(t, readDiskFrames(t, path), frameFenceCommit)
	if fc.end() != g.off {
		t.Fatalf("layout: fence commit ends at %d, last group at %d", fc.end(), g.off)
	}
	lost := nextPage(g.off)
	if lost+tornPage > end {
		t.Fatalf("layout: group [%d,%d) too small", g.off, end)
	}
	editJournalFile(t, path, zeroRange(g.off, lost)) // power loss: the page with the group frame lost
	reopenTorn(t, dir, "torn last group after a fence commit (first page lost)")
}

// The page holding the group frame lost, later pages kept, holding no
// complete frame (one large event): still the torn last write.
func TestTornWrite_LostFirstPageOnlyFragmentsKept(t *testing.T) {
	src, s := tornSource(t)
	mustAppend(t, s, ev("big", "s", strings.Repeat("y", 10000)))
	dir := crashCopy(t, src)
	path := journalSegPath(dir, 0)
	g, end := lastGroupExtent(t, path)
	lost := nextPage(g.off)
	if lost >= end {
		t.Fatal("layout")
	}
	editJournalFile(t, path, zeroRange(g.off, lost))
	reopenTorn(t, dir, "torn last write (group frame page lost, only fragments kept)")
}

// A fence commit straddling a page boundary, its first page lost: the
// torn last write.
func TestTornWrite_FenceCommitStraddlingPageFirstPageLost(t *testing.T) {
	ctx := context.Background()
	src, s := tornSource(t)
	if err := s.BeginFence(ctx); err != nil {
		t.Fatal(err)
	}
	_, end0 := lastGroupExtent(t, journalSegPath(src, 0))
	// fenced group = group frame + one event frame (entity "f", scope "s").
	fixed := int64(groupFrameLen + eventFrameLen(1, 1, 0))
	p := ((4080-(end0+fixed))%tornPage + tornPage) % tornPage
	if p == 0 {
		p = tornPage
	}
	if _, err := s.AppendFenced(ctx, []engine.Event{ev("f", "s", strings.Repeat("z", int(p)))}); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitFence(ctx); err != nil {
		t.Fatal(err)
	}
	dir := crashCopy(t, src)
	path := journalSegPath(dir, 0)
	fc := markerFrame(t, readDiskFrames(t, path), frameFenceCommit)
	if fc.off%tornPage != 4080 {
		t.Fatalf("layout: fence commit at %d", fc.off)
	}
	editJournalFile(t, path, zeroRange(fc.off, nextPage(fc.off)))
	reopenTorn(t, dir, "torn fence commit (first page lost)")
}

// Media damage to the group frame of an acknowledged group G1, then a
// power loss that loses the first page of the next group G2: a torn write
// damages nothing, so this is corruption; G1 must never be cancelled.
func TestTornWrite_DamagedAckedGroupThenTornGroup(t *testing.T) {
	ctx := context.Background()
	src, s := tornSource(t)
	if _, err := s.AppendBatch(ctx, bigEvents(5, 500, "g1")); err != nil { // G1: acknowledged
		t.Fatal(err)
	}
	if _, err := s.AppendBatch(ctx, bigEvents(20, 500, "g2")); err != nil { // G2: the last write
		t.Fatal(err)
	}
	dir := crashCopy(t, src)
	path := journalSegPath(dir, 0)
	gs := groupFrames(t, path)
	g1, g2 := gs[len(gs)-2], gs[len(gs)-1]
	editJournalFile(t, path, func(b []byte) []byte {
		b[g1.off+frameHeaderLen+6] ^= 0x40 // G1's group frame damaged (bit rot)
		clear(b[g2.off:nextPage(g2.off)])  // G2's first page lost
		return b
	})
	before := dirSnapshot(t, dir)
	_, err := Open(dir, Config{})
	checkCorruption(t, err, path, g1.off)
	checkDirUnchanged(t, dir, before)
}

// A group larger than recovery's 4 MiB read buffer, straddling reads,
// recovers intact; a prefix of it is cut off whole.
func TestTornWrite_LargeGroupAcrossReads(t *testing.T) {
	ctx := context.Background()
	src, s := tornSource(t)
	big := make([]engine.Event, 130)
	for i := range big {
		pl := bytes.Repeat([]byte{byte('a' + i%26)}, 60000)
		big[i] = engine.Event{Coordinate: engine.MustCoordinate("huge", "s"), Kind: engine.KindData, Payload: pl}
	}
	if _, err := s.AppendBatch(ctx, big); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendBatch(ctx, big[:70]); err != nil {
		t.Fatal(err)
	}
	orig := pollJournal(t, s).Entries
	crashed := crashCopy(t, src)
	closeJournal(t, s)

	s2 := openJournal(t, src, Config{})
	got := pollJournal(t, s2).Entries
	if len(got) < len(orig) {
		t.Fatalf("reopen: %d entries, want >= %d", len(got), len(orig))
	}
	for i, e := range orig {
		if !identicalEntry(e, got[i]) {
			t.Fatalf("entry %d changed", i)
		}
	}
	closeJournal(t, s2)

	// Crash copy, torn: cut the second big group 3 MiB in (a prefix).
	path := journalSegPath(crashed, 0)
	gs := groupFrames(t, path)
	g := gs[len(gs)-1]
	editJournalFile(t, path, func(b []byte) []byte { clear(b[g.off+3<<20:]); return b })
	s3 := openJournal(t, crashed, Config{})
	got = pollJournal(t, s3).Entries
	if n := 3 + 1 + 130; len(got) != n+1 { // open, 3 events, big batch, + this open
		t.Errorf("torn big group: %d entries, want %d", len(got), n+1)
	}
	for i, e := range orig[:134] {
		if !identicalEntry(e, got[i]) {
			t.Fatalf("torn big group: entry %d changed", i)
		}
	}
	if rs := s3.CancelledRanges(); len(rs) != 1 || rs[0] != (engine.Range{Start: 134, End: 204}) {
		t.Errorf("torn big group: cancelled %v, want [134,204)", rs)
	}
}

// A payload quoting an encoded frame with a far seq, in a torn write whose
// first page was lost: recovery follows frames from one to the next and
// bounds their seqs, so the quoted frame cannot steer the cancelled range
// (it once made allocation jump by millions).
func TestTornWrite_EmbeddedFrameInPayload(t *testing.T) {
	src, s := tornSource(t)
	emb, _ := appendEventFrame(nil, &eventRecord{kind: engine.KindData, seq: 1 << 22, payload: []byte("evil")}, "e", "s")
	pl := append(append(bytes.Repeat([]byte{'z'}, 6000), emb...), bytes.Repeat([]byte{'z'}, 100)...)
	mustAppend(t, s, engine.Event{Coordinate: engine.MustCoordinate("u", "s"), Kind: engine.KindData, Payload: pl})
	dir := crashCopy(t, src)
	path := journalSegPath(dir, 0)
	g, _ := lastGroupExtent(t, path)
	editJournalFile(t, path, zeroRange(g.off, nextPage(g.off)))
	s2 := reopenTorn(t, dir, "a payload quoting a frame")
	st := s2.Stats()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if st.Allocated > 1<<20 {
		t.Errorf("a seq embedded in a user payload drove allocation to %d (cancelled %v); index chunks %d, heap %d MiB",
			st.Allocated, s2.CancelledRanges(), len(s2.ix.chunks), ms.HeapAlloc>>20)
	}
}

// A 300-byte single-event append whose write straddles a page boundary,
// the first page lost: only a fragment is kept; the torn last write.
func TestTornWrite_SmallAppendStraddlingPageFirstPageLost(t *testing.T) {
	src := t.TempDir()
	s := openJournal(t, src, Config{})
	path := journalSegPath(src, 0)
	for i := 0; ; i++ {
		_, end := lastGroupExtent(t, path)
		if m := end % tornPage; m > 3900 && m < 4000 {
			break
		}
		mustAppend(t, s, ev("pad", "s", strings.Repeat("p", 40)))
		if i > 1000 {
			t.Fatal("no layout")
		}
	}
	mustAppend(t, s, ev("small", "s", strings.Repeat("q", 300)))
	dir := crashCopy(t, src)
	path = journalSegPath(dir, 0)
	g, end := lastGroupExtent(t, path)
	t.Logf("last group [%d,%d), page boundary %d", g.off, end, nextPage(g.off))
	editJournalFile(t, path, zeroRange(g.off, nextPage(g.off)))
	reopenTorn(t, dir, "torn 300-byte append (first page lost)")
}

// The torn-write property. A journal is written with appends of random
// sizes (single events and batches, payloads from a few bytes to several
// pages); its files are copied while the writer is still open (what a
// crash leaves in the page cache); then a power failure during the last
// write's sync is simulated by losing a random subset of the 4 KiB pages
// that write touched (their bytes revert to the preallocated zeros). The
// reopen must always succeed, keep every earlier entry byte for byte, and
// show the last write all (no page lost) or nothing (some page lost),
// never part; and the journal must take appends and reopen afterwards.
//
// Catalogue: VIS-14.
func TestVIS14_TornWrite_RandomPageLoss(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("BATFLEET_TORN_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("BATFLEET_TORN_SEED: %v", err)
		}
	}
	t.Logf("seed %d (repeat with BATFLEET_TORN_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x70a2))
	for iter := range 60 {
		src := t.TempDir()
		s := openJournal(t, src, Config{})
		randomAppend := func(tag string) []engine.Receipt {
			n := 1
			if rng.IntN(3) == 0 {
				n = 2 + rng.IntN(6)
			}
			evs := make([]engine.Event, n)
			for i := range evs {
				size := 1 + rng.IntN(64)
				if rng.IntN(4) == 0 {
					size = 1 + rng.IntN(9000)
				}
				evs[i] = ev("torn:"+tag, "s", strings.Repeat(string(rune('a'+rng.IntN(26))), size))
			}
			rs, err := s.AppendBatch(context.Background(), evs)
			if err != nil {
				t.Fatal(err)
			}
			return rs
		}
		for range 1 + rng.IntN(12) {
			randomAppend("before")
		}
		orig := pollJournal(t, s).Entries
		last := randomAppend("last")
		dir := crashCopy(t, src)
		closeJournal(t, s)

		path := journalSegPath(dir, 0)
		all := readDiskAllFrames(t, path)
		var g diskFrame
		for _, f := range all {
			if f.typ == frameGroup {
				g = f
			}
		}
		end := g.end()
		for _, f := range all {
			if f.group == g.off {
				end = f.end()
			}
		}
		if g.a != last[0].Seq || g.b != last[len(last)-1].Seq+1 {
			t.Fatalf("iteration %d: last group [%d, %d), want the last append %d..%d", iter, g.a, g.b, last[0].Seq, last[len(last)-1].Seq)
		}
		lost := 0
		editJournalFile(t, path, func(d []byte) []byte {
			for p := g.off / tornPage * tornPage; p < end; p += tornPage {
				if rng.IntN(3) == 0 {
					clear(d[max(p, g.off):min(p+tornPage, end)])
					lost++
				}
			}
			return d
		})

		s2, err := Open(dir, Config{})
		if err != nil {
			t.Fatalf("iteration %d (seed %d): %d of the last write's pages lost, reopen refused: %v", iter, seed, lost, err)
		}
		got := pollJournal(t, s2).Entries
		bySeq := make(map[uint64]engine.Entry, len(got))
		for _, e := range got {
			bySeq[e.Seq] = e
		}
		for _, o := range orig {
			if e, ok := bySeq[o.Seq]; !ok || !identicalEntry(e, o) {
				t.Fatalf("iteration %d (seed %d): earlier entry %d lost or changed (%d pages of the last write lost)", iter, seed, o.Seq, lost)
			}
		}
		present := 0
		for _, r := range last {
			if e, ok := bySeq[r.Seq]; ok && e.Coordinate.Entity() == "torn:last" {
				present++
			}
		}
		switch {
		case lost == 0 && present != len(last):
			t.Fatalf("iteration %d (seed %d): nothing lost, but %d of the last write's %d entries are visible", iter, seed, present, len(last))
		case lost > 0 && present != 0:
			t.Fatalf("iteration %d (seed %d): %d pages lost, yet %d of the last write's %d entries are visible", iter, seed, lost, present, len(last))
		}
		mustAppend(t, s2, ev("torn:after", "s", "x"))
		closeJournal(t, s2)
		closeJournal(t, openJournal(t, dir, Config{}))
	}
}
