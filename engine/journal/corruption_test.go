package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/batfleet/batfleet/engine"
	"github.com/vmihailenco/msgpack/v5"
)

// Corruption and torn-tail tests: each writes a small journal with the
// public API, closes it, damages its files directly, and checks the one
// outcome recovery must reach (SPEC §4.2, §4.7, doc.go "Recovery").

// diskFrame is one frame of a segment file, as recovery reads it.
type diskFrame struct {
	off    int64
	size   int
	typ    byte
	seq    uint64 // event frames
	fenced bool   // event frames
	a, b   uint64 // marker frames
	group  int64  // offset of the group frame of the write holding it (0: none)
}

func (f diskFrame) end() int64 { return f.off + int64(f.size) }

// readDiskFrames decodes every frame of the segment file at path and fails
// t on anything that does not decode (a bad header, a torn or damaged
// frame): it reads a segment that recovery has already made clean. Group
// frames are left out; each frame records the offset of the group frame of
// the write that holds it.
func readDiskFrames(t testing.TB, path string) []diskFrame {
	t.Helper()
	var out []diskFrame
	for _, f := range readDiskAllFrames(t, path) {
		if f.typ != frameGroup {
			out = append(out, f)
		}
	}
	return out
}

// readDiskAllFrames is readDiskFrames with the group frames.
func readDiskAllFrames(t testing.TB, path string) []diskFrame {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read segment: %v", err)
	}
	if len(data) < segmentHeaderLen {
		t.Fatalf("%s: %d bytes, shorter than the segment header", path, len(data))
	}
	if err := checkSegmentHeader(path, data[:segmentHeaderLen]); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []diskFrame
	var groupOff, groupEnd int64
	for pos := segmentHeaderLen; pos < len(data); {
		if !slices.ContainsFunc(data[pos:], func(b byte) bool { return b != 0 }) {
			break // the preallocated tail of an open journal
		}
		var fr decodedFrame
		if err := decodeFrame(data[pos:], &fr); err != nil {
			t.Fatalf("%s: frame at offset %d: %v", path, pos, err)
		}
		df := diskFrame{off: int64(pos), size: fr.size, typ: fr.typ, a: fr.a, b: fr.b}
		if fr.typ == frameGroup {
			groupOff, groupEnd = df.off, df.end()+int64(fr.c)
		} else if df.off < groupEnd {
			df.group = groupOff
		}
		if fr.typ == frameEvent {
			df.seq, df.fenced = fr.rec.seq, fr.rec.flags&eventFlagFenced != 0
		}
		out = append(out, df)
		pos += fr.size
	}
	return out
}

// eventFrameAt returns the event frame holding seq.
func eventFrameAt(t testing.TB, frames []diskFrame, seq uint64) diskFrame {
	t.Helper()
	for _, f := range frames {
		if f.typ == frameEvent && f.seq == seq {
			return f
		}
	}
	t.Fatalf("no event frame for seq %d", seq)
	return diskFrame{}
}

// markerFrame returns the first marker frame of type typ.
func markerFrame(t testing.TB, frames []diskFrame, typ byte) diskFrame {
	t.Helper()
	for _, f := range frames {
		if f.typ == typ {
			return f
		}
	}
	t.Fatalf("no frame of type %d", typ)
	return diskFrame{}
}

// dirSnapshot reads every regular file of dir.
func dirSnapshot(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]byte)
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[de.Name()] = b
	}
	return out
}

// checkDirUnchanged fails t unless dir holds exactly the files of before.
func checkDirUnchanged(t testing.TB, dir string, before map[string][]byte) {
	t.Helper()
	after := dirSnapshot(t, dir)
	for name, b := range before {
		a, ok := after[name]
		switch {
		case !ok:
			t.Errorf("%s was removed", name)
		case !bytes.Equal(a, b):
			t.Errorf("%s changed: %d bytes before, %d after", name, len(b), len(a))
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s was created", name)
		}
	}
}

// pollJournal returns every visible entry, lifecycle events included.
func pollJournal(t testing.TB, s *Store) engine.PollResult {
	t.Helper()
	res, err := s.Poll(context.Background(), engine.RegionAll(), 0, false, 1<<24)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	return res
}

// openJournal opens dir and closes the store when the test ends (Close is
// idempotent, so tests may close it earlier).
func openJournal(t testing.TB, dir string, cfg Config) *Store {
	t.Helper()
	s, err := Open(dir, cfg)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func closeJournal(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// journalEvent is the i-th event of the damage tests' journals.
func journalEvent(i int, keyed bool) engine.Event {
	e := engine.Event{
		Coordinate: engine.MustCoordinate(fmt.Sprintf("damage:e%d", i%2), "scope:damage"),
		Kind:       engine.KindData,
		Payload:    []byte(fmt.Sprintf("payload %d %s", i, bytes.Repeat([]byte{'p'}, 20+i))),
	}
	if keyed {
		e.Key = engine.DeriveIdempotencyKey("batfleet-damage-test", []byte{byte(i)})
	}
	return e
}

// writeJournal opens a fresh journal, performs appends (each one a
// single event or an atomic batch), polls everything, and closes it. It
// returns the directory and the entries visible before Close (the
// CLOSE_COMPLETED event follows them on disk).
func writeJournal(t testing.TB, cfg Config, appends ...[]engine.Event) (string, []engine.Entry) {
	t.Helper()
	dir := t.TempDir()
	s := openJournal(t, dir, cfg)
	for _, batch := range appends {
		if _, err := s.AppendBatch(context.Background(), batch); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	entries := pollJournal(t, s).Entries
	closeJournal(t, s)
	return dir, entries
}

// damageAppends is the journal most damage tests start from: open 0, e1,
// e2 (keyed), e3, batch e4-e6, e7, then close 8.
func damageAppends() [][]engine.Event {
	return [][]engine.Event{
		{journalEvent(1, false)},
		{journalEvent(2, true)},
		{journalEvent(3, false)},
		{journalEvent(4, false), journalEvent(5, false), journalEvent(6, false)},
		{journalEvent(7, false)},
	}
}

func journalSegPath(dir string, num uint32) string { return filepath.Join(dir, segmentName(num)) }

func identicalEntry(a, b engine.Entry) bool {
	return a.Seq == b.Seq && a.ID == b.ID && a.Kind == b.Kind && a.Coordinate == b.Coordinate &&
		a.Clock == b.Clock && a.WallMs == b.WallMs && bytes.Equal(a.Payload, b.Payload)
}

// checkSurvivors fails t unless got is exactly one entry for every seq
// below keepBelow, each unchanged from orig (a seq missing from orig must
// be the CLOSE_COMPLETED that followed it on disk), then this open's
// OPEN_COMPLETED at seq openSeq.
func checkSurvivors(t testing.TB, got, orig []engine.Entry, keepBelow, openSeq uint64) {
	t.Helper()
	bySeq := make(map[uint64]engine.Entry, len(orig))
	for _, e := range orig {
		bySeq[e.Seq] = e
	}
	if uint64(len(got)) != keepBelow+1 {
		t.Fatalf("after reopen: entries %v, want seqs 0-%d and the open event at %d", seqList(got), keepBelow-1, openSeq)
	}
	for i, g := range got[:keepBelow] {
		w, ok := bySeq[uint64(i)]
		switch {
		case g.Seq != uint64(i):
			t.Errorf("entry %d has seq %d", i, g.Seq)
		case ok && !identicalEntry(g, w):
			t.Errorf("entry %d changed:\n got  %+v\n want %+v", i, g, w)
		case !ok && (g.Kind != engine.KindCloseCompleted || g.Coordinate != engine.LifecycleCoordinate()):
			t.Errorf("entry %d: %+v, want the CLOSE_COMPLETED event", i, g)
		}
	}
	last := got[len(got)-1]
	if last.Seq != openSeq || last.Kind != engine.KindOpenCompleted || last.Coordinate != engine.LifecycleCoordinate() {
		t.Errorf("last entry: seq %d kind %v at %v, want OPEN_COMPLETED at seq %d at %v",
			last.Seq, last.Kind, last.Coordinate, openSeq, engine.LifecycleCoordinate())
	}
}

func seqList(es []engine.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

// appendAfterRecovery appends one user event and checks that it gets seq want.
func appendAfterRecovery(t testing.TB, s *Store, want uint64) {
	t.Helper()
	r, err := s.Append(context.Background(), journalEvent(99, false))
	if err != nil {
		t.Fatalf("append after recovery: %v", err)
	}
	if r.Seq != want {
		t.Fatalf("append after recovery got seq %d, want %d", r.Seq, want)
	}
}

// truncateJournalFile cuts path to size bytes.
func truncateJournalFile(t testing.TB, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// editJournalFile applies edit to the contents of path and writes them back.
func editJournalFile(t testing.TB, path string, edit func([]byte) []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, edit(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func xorAt(off int64, mask byte) func([]byte) []byte {
	return func(b []byte) []byte { b[off] ^= mask; return b }
}

func zeroRange(from, to int64) func([]byte) []byte {
	return func(b []byte) []byte { clear(b[from:to]); return b }
}

// TestTornTail: a damaged end of the last segment is a torn tail. Reopen
// succeeds, the damaged write (its whole group) and everything after it
// are gone, every earlier event is intact, and the file is cut back to the
// end of the last good group. The torn group's seqs, known from its group
// frame, are cancelled and never reused (it was never fsynced, so never
// acknowledged); an undamaged zero tail cancels nothing.
func TestTornTail(t *testing.T) {
	appends := damageAppends()
	type damage func(t testing.TB, path string, frames []diskFrame) // frames of the intact file
	cut := func(at func(frames []diskFrame) int64) damage {
		return func(t testing.TB, path string, frames []diskFrame) { truncateJournalFile(t, path, at(frames)) }
	}
	edit := func(e func(frames []diskFrame) func([]byte) []byte) damage {
		return func(t testing.TB, path string, frames []diskFrame) { editJournalFile(t, path, e(frames)) }
	}
	last := func(frames []diskFrame) diskFrame { return frames[len(frames)-1] }
	e7 := func(frames []diskFrame) diskFrame { return frames[len(frames)-2] }
	zeros := func(n int) func([]byte) []byte {
		return func(b []byte) []byte { return append(b, make([]byte, n)...) }
	}

	cases := []struct {
		name      string
		damage    damage
		keepBelow uint64 // entries below this seq survive
		torn      bool   // the group holding seq keepBelow is cut off and cancelled
	}{
		{name: "cut inside the last event's frame header",
			damage: cut(func(fs []diskFrame) int64 { return e7(fs).off + 3 }), keepBelow: 7, torn: true},
		{name: "cut inside the last event's fixed fields",
			damage: cut(func(fs []diskFrame) int64 { return e7(fs).off + frameHeaderLen + 20 }), keepBelow: 7, torn: true},
		{name: "cut one byte short of the last event",
			damage: cut(func(fs []diskFrame) int64 { return e7(fs).end() - 1 }), keepBelow: 7, torn: true},
		{name: "cut inside the close event",
			damage: cut(func(fs []diskFrame) int64 { return last(fs).off + 11 }), keepBelow: 8, torn: true},
		{name: "flipped checksum byte of the final frame",
			damage: edit(func(fs []diskFrame) func([]byte) []byte { return xorAt(last(fs).off+5, 0x10) }), keepBelow: 8, torn: true},
		{name: "flipped body byte of the final frame",
			damage: edit(func(fs []diskFrame) func([]byte) []byte { return xorAt(last(fs).off+frameHeaderLen+14, 0x01) }), keepBelow: 8, torn: true},
		{name: "4 KiB of zeros after the last frame",
			damage: edit(func([]diskFrame) func([]byte) []byte { return zeros(4096) }), keepBelow: 9},
		{name: "last frame overwritten with zeros",
			damage: edit(func(fs []diskFrame) func([]byte) []byte { return zeroRange(last(fs).off, last(fs).end()) }), keepBelow: 8, torn: true},
		{name: "last two frames overwritten with zeros and 4 KiB more",
			damage: edit(func(fs []diskFrame) func([]byte) []byte {
				return func(b []byte) []byte { return zeros(4096)(zeroRange(e7(fs).off, last(fs).end())(b)) }
			}), keepBelow: 7, torn: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, orig := writeJournal(t, Config{}, appends...)
			path := journalSegPath(dir, 0)
			frames := readDiskFrames(t, path)
			if got := e7(frames); got.typ != frameEvent || got.seq != 7 || last(frames).seq != 8 {
				t.Fatalf("unexpected journal layout: %+v", frames)
			}
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(t, path, frames)

			openSeq := tc.keepBelow
			var wantRanges []engine.Range
			if tc.torn {
				openSeq++ // each torn group here holds one seq
				wantRanges = []engine.Range{{Start: tc.keepBelow, End: openSeq}}
			}
			s := openJournal(t, dir, Config{})
			checkSurvivors(t, pollJournal(t, s).Entries, orig, tc.keepBelow, openSeq)
			if rs := s.CancelledRanges(); !slices.Equal(rs, wantRanges) {
				t.Errorf("cancelled ranges %v, want %v", rs, wantRanges)
			}
			if st := s.Stats(); st.Allocated != openSeq+1 || st.Visible != st.Allocated {
				t.Errorf("allocated %d visible %d, want both %d", st.Allocated, st.Visible, openSeq+1)
			}
			appendAfterRecovery(t, s, openSeq+1)
			closeJournal(t, s)

			persisted, err := loadRanges(dir)
			if err != nil || !slices.Equal(persisted, wantRanges) {
				t.Errorf("ranges file holds %v (%v), want %v", persisted, err, wantRanges)
			}
			// The torn tail was cut: the file is the surviving prefix of the
			// original, then the frames of this open, all decodable.
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			keepTo := 0 // end of the last frame that survives
			for _, f := range frames {
				if (f.typ == frameEvent && f.seq < tc.keepBelow) || (f.typ == frameBatchCommit && f.a+f.b <= tc.keepBelow) {
					keepTo = int(f.end())
				}
			}
			if !bytes.Equal(after[:keepTo], before[:keepTo]) {
				t.Errorf("surviving prefix of the segment changed")
			}
			newFrames := readDiskFrames(t, path)
			if f := newFrames[len(newFrames)-3]; f.group != int64(keepTo) || f.seq != openSeq {
				t.Errorf("first write of the reopen at offset %d seq %d, want offset %d seq %d", f.group, f.seq, keepTo, openSeq)
			}
		})
	}
}

// TestVIS14_TornBatch: a batch whose BATCH_COMMIT never reached the disk
// (the process died after its BEGIN and some frames) is cancelled on
// reopen: its whole range is persisted in visibility_ranges.fbv, none of it
// is delivered, the segment is cut back to the BEGIN, the open event
// follows the range and no seq of it is ever reused. The tail is made by
// cutting a cleanly closed journal, which leaves exactly the bytes a crash
// at that point would have left.
// Catalogue: VIS-14.
func TestVIS14_TornBatch(t *testing.T) {
	// open 0, e1, e2, batch e3-e5, close 6.
	appends := [][]engine.Event{
		{journalEvent(1, false)},
		{journalEvent(2, true)},
		{journalEvent(3, false), journalEvent(4, false), journalEvent(5, false)},
	}
	type layout struct{ begin, ev3, ev4, ev5, commit, close diskFrame }
	cases := []struct {
		name      string
		damage    func(t testing.TB, path string, l layout)
		wantRange []engine.Range // cancelled by the recovery
		openSeq   uint64
	}{
		{name: "cut inside the batch begin", // the group frame still names the batch's seqs
			damage:    func(t testing.TB, p string, l layout) { truncateJournalFile(t, p, l.begin.off+frameHeaderLen+3) },
			wantRange: []engine.Range{{Start: 3, End: 6}}, openSeq: 6},
		{name: "cut inside the group frame",
			damage:  func(t testing.TB, p string, l layout) { truncateJournalFile(t, p, l.begin.group+20) },
			openSeq: 3},
		{name: "cut right after the batch begin",
			damage:    func(t testing.TB, p string, l layout) { truncateJournalFile(t, p, l.begin.end()) },
			wantRange: []engine.Range{{Start: 3, End: 6}}, openSeq: 6},
		{name: "cut inside the 1st event",
			damage:    func(t testing.TB, p string, l layout) { truncateJournalFile(t, p, l.ev3.off+frameHeaderLen+1) },
			wantRange: []engine.Range{{Start: 3, End: 6}}, openSeq: 6},
		{name: "cut inside the 2nd event",
			damage:    func(t testing.TB, p string, l layout) { truncateJournalFile(t, p, l.ev4.off+int64(l.ev4.size/2)) },
			wantRange: []engine.Range{{Start: 3, End: 6}}, openSeq: 6},
		{name: "cut after the 3rd event, no commit",
			damage:    func(t testing.TB, p string, l layout) { truncateJournalFile(t, p, l.ev5.end()) },
			wantRange: []engine.Range{{Start: 3, End: 6}}, openSeq: 6},
		{name: "cut inside the batch commit",
			damage:    func(t testing.TB, p string, l layout) { truncateJournalFile(t, p, l.commit.end()-1) },
			wantRange: []engine.Range{{Start: 3, End: 6}}, openSeq: 6},
		{name: "batch commit and close zeroed",
			damage:    func(t testing.TB, p string, l layout) { editJournalFile(t, p, zeroRange(l.commit.off, l.close.end())) },
			wantRange: []engine.Range{{Start: 3, End: 6}}, openSeq: 6},
		{name: "batch commit checksum flipped, close cut off",
			damage: func(t testing.TB, p string, l layout) {
				truncateJournalFile(t, p, l.commit.end())
				editJournalFile(t, p, xorAt(l.commit.off+4, 0x01))
			},
			wantRange: []engine.Range{{Start: 3, End: 6}}, openSeq: 6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, orig := writeJournal(t, Config{}, appends...)
			path := journalSegPath(dir, 0)
			frames := readDiskFrames(t, path)
			l := layout{
				begin: markerFrame(t, frames, frameBatchBegin), ev3: eventFrameAt(t, frames, 3),
				ev4: eventFrameAt(t, frames, 4), ev5: eventFrameAt(t, frames, 5),
				commit: markerFrame(t, frames, frameBatchCommit), close: eventFrameAt(t, frames, 6),
			}
			if l.begin.a != 3 || l.begin.b != 3 || l.ev4.off <= l.ev3.off || l.commit.end() != l.close.group || l.begin.group == 0 {
				t.Fatalf("unexpected journal layout: %+v", frames)
			}
			tc.damage(t, path, l)

			s := openJournal(t, dir, Config{})
			res := pollJournal(t, s)
			checkSurvivors(t, res.Entries, orig, 3, tc.openSeq)
			if got := s.CancelledRanges(); !slices.Equal(got, tc.wantRange) {
				t.Fatalf("cancelled ranges %v, want %v", got, tc.wantRange)
			}
			if !slices.Equal(res.Cancelled, tc.wantRange) {
				t.Errorf("poll reports cancelled %v, want %v", res.Cancelled, tc.wantRange)
			}
			persisted, err := loadRanges(dir)
			if err != nil {
				t.Fatalf("load ranges file: %v", err)
			}
			if !slices.Equal(persisted, tc.wantRange) {
				t.Fatalf("ranges file holds %v, want %v", persisted, tc.wantRange)
			}
			// The open event was written where the batch's group began.
			reopened := readDiskFrames(t, path)
			if f := reopened[len(reopened)-1]; f.group != l.begin.group || f.seq != tc.openSeq {
				t.Errorf("open event written at offset %d seq %d, want offset %d seq %d", f.group, f.seq, l.begin.group, tc.openSeq)
			}
			appendAfterRecovery(t, s, tc.openSeq+1)
			closeJournal(t, s)

			// Reopen once more: still cancelled, never delivered, no reuse.
			s = openJournal(t, dir, Config{})
			if got := s.CancelledRanges(); !slices.Equal(got, tc.wantRange) {
				t.Fatalf("after a second reopen: cancelled ranges %v, want %v", got, tc.wantRange)
			}
			seen := map[uint64]bool{}
			for _, e := range pollJournal(t, s).Entries {
				if seen[e.Seq] {
					t.Errorf("seq %d delivered twice", e.Seq)
				}
				seen[e.Seq] = true
				for _, r := range tc.wantRange {
					if r.Contains(e.Seq) {
						t.Errorf("cancelled seq %d delivered", e.Seq)
					}
				}
			}
			if st := s.Stats(); st.Allocated != tc.openSeq+4 {
				t.Errorf("allocated %d after user event, close and open, want %d", st.Allocated, tc.openSeq+4)
			}
			closeJournal(t, s)
		})
	}
}

// TestVIS14_TornFence: writes staged in a fence that never committed (the
// process died with the fence active) are cancelled on reopen, like a torn
// batch; a fence whose commit frame reached the disk is visible.
// Catalogue: VIS-14.
func TestVIS14_TornFence(t *testing.T) {
	cases := []struct {
		name      string
		commit    bool // commit the fence before closing
		cutCommit bool // then cut inside the fence commit frame
		wantRange []engine.Range
	}{
		{name: "fence active at the crash", wantRange: []engine.Range{{Start: 2, End: 5}}},
		{name: "fence commit torn", commit: true, cutCommit: true, wantRange: []engine.Range{{Start: 2, End: 5}}},
		{name: "fence commit durable", commit: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			s := openJournal(t, dir, Config{})
			if _, err := s.Append(ctx, journalEvent(1, false)); err != nil {
				t.Fatal(err)
			}
			if err := s.BeginFence(ctx); err != nil {
				t.Fatal(err)
			}
			var staged []*FencedAppend
			for _, batch := range [][]engine.Event{{journalEvent(2, false)}, {journalEvent(3, true), journalEvent(4, true)}} {
				fa, err := s.AppendFenced(ctx, batch)
				if err != nil {
					t.Fatal(err)
				}
				staged = append(staged, fa)
			}
			if tc.commit {
				if err := s.CommitFence(ctx); err != nil {
					t.Fatal(err)
				}
				for _, fa := range staged {
					if _, err := fa.Wait(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			closeJournal(t, s) // cancels an active fence: ranges file [2,5), then CLOSE at seq 5

			// Undo what the clean close did, leaving the disk as a crash
			// before it would have: no close event, no cancellation.
			path := journalSegPath(dir, 0)
			frames := readDiskFrames(t, path)
			closeFrame := frames[len(frames)-1]
			if closeFrame.seq != 5 {
				t.Fatalf("unexpected journal layout: %+v", frames)
			}
			cutAt := closeFrame.group // the close event's whole write
			if tc.cutCommit {
				cutAt = markerFrame(t, frames, frameFenceCommit).off + 10
			}
			truncateJournalFile(t, path, cutAt)
			if err := os.Remove(filepath.Join(dir, rangesFileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}

			s = openJournal(t, dir, Config{})
			if got := s.CancelledRanges(); !slices.Equal(got, tc.wantRange) {
				t.Fatalf("cancelled ranges %v, want %v", got, tc.wantRange)
			}
			persisted, err := loadRanges(dir)
			if err != nil || !slices.Equal(persisted, tc.wantRange) {
				t.Fatalf("ranges file holds %v (%v), want %v", persisted, err, tc.wantRange)
			}
			want := []uint64{0, 1, 2, 3, 4, 5}
			if tc.wantRange != nil {
				want = []uint64{0, 1, 5}
			}
			if got := seqList(pollJournal(t, s).Entries); !slices.Equal(got, want) {
				t.Fatalf("delivered seqs %v, want %v", got, want)
			}
			appendAfterRecovery(t, s, 6)
			closeJournal(t, s)
		})
	}
}

// TestCorruptJournal: damage before the tail of the last segment, or
// anywhere in the segment header, is corruption: Open fails with an error
// matching ErrCorrupt, IsCorruption reports it, and no file of the
// directory changes.
func TestCorruptJournal(t *testing.T) {
	appends := damageAppends()
	headerCRC := func(b []byte) {
		binary.LittleEndian.PutUint32(b[12:], crc32.Checksum(b[:12], castagnoli))
	}
	cases := []struct {
		name    string
		edit    func(t testing.TB, frames []diskFrame) func([]byte) []byte
		wantOff func(t testing.TB, frames []diskFrame) int64 // the offset the error names
	}{
		{name: "flipped checksum byte of a middle frame",
			edit: func(t testing.TB, fs []diskFrame) func([]byte) []byte {
				return xorAt(eventFrameAt(t, fs, 3).off+6, 0x01)
			},
			wantOff: func(t testing.TB, fs []diskFrame) int64 { return eventFrameAt(t, fs, 3).off }},
		{name: "flipped payload byte of a middle frame",
			edit: func(t testing.TB, fs []diskFrame) func([]byte) []byte {
				return xorAt(eventFrameAt(t, fs, 3).end()-1, 0x20)
			},
			wantOff: func(t testing.TB, fs []diskFrame) int64 { return eventFrameAt(t, fs, 3).off }},
		{name: "flipped seq byte of the first frame",
			edit: func(t testing.TB, fs []diskFrame) func([]byte) []byte {
				return xorAt(fs[0].off+frameHeaderLen+14, 0x01)
			},
			wantOff: func(t testing.TB, fs []diskFrame) int64 { return fs[0].off }},
		{name: "flipped type byte of a batch begin",
			edit: func(t testing.TB, fs []diskFrame) func([]byte) []byte {
				return xorAt(markerFrame(t, fs, frameBatchBegin).off+frameHeaderLen, 0x01)
			},
			wantOff: func(t testing.TB, fs []diskFrame) int64 { return markerFrame(t, fs, frameBatchBegin).off }},
		{name: "flipped byte of a batch commit",
			edit: func(t testing.TB, fs []diskFrame) func([]byte) []byte {
				return xorAt(markerFrame(t, fs, frameBatchCommit).off+frameHeaderLen+5, 0x40)
			},
			wantOff: func(t testing.TB, fs []diskFrame) int64 { return markerFrame(t, fs, frameBatchCommit).off }},
		{name: "middle frame zeroed",
			edit: func(t testing.TB, fs []diskFrame) func([]byte) []byte {
				f := eventFrameAt(t, fs, 3)
				return zeroRange(f.off, f.end())
			},
			wantOff: func(t testing.TB, fs []diskFrame) int64 { return eventFrameAt(t, fs, 3).off }},
		{name: "length of a middle frame shortened",
			edit:    func(t testing.TB, fs []diskFrame) func([]byte) []byte { return xorAt(eventFrameAt(t, fs, 3).off, 0x01) },
			wantOff: func(t testing.TB, fs []diskFrame) int64 { return eventFrameAt(t, fs, 3).off }},
		// A flipped bit in a length field can make a middle frame claim to
		// run past the end of the file. The frames after it are intact, so
		// this is corruption, not a torn tail.
		{name: "length of a middle frame pointing past the end of the file",
			edit: func(t testing.TB, fs []diskFrame) func([]byte) []byte {
				return xorAt(eventFrameAt(t, fs, 3).off+2, 0x01)
			},
			wantOff: func(t testing.TB, fs []diskFrame) int64 { return eventFrameAt(t, fs, 3).off }},
		{name: "length of a middle frame over the frame limit",
			edit: func(t testing.TB, fs []diskFrame) func([]byte) []byte {
				return xorAt(eventFrameAt(t, fs, 3).off+3, 0x80)
			},
			wantOff: func(t testing.TB, fs []diskFrame) int64 { return eventFrameAt(t, fs, 3).off }},
		{name: "garbage segment header",
			edit: func(testing.TB, []diskFrame) func([]byte) []byte {
				return func(b []byte) []byte { copy(b, "garbage-garbage!"); return b }
			},
			wantOff: func(testing.TB, []diskFrame) int64 { return 0 }},
		{name: "segment header checksum flipped",
			edit:    func(testing.TB, []diskFrame) func([]byte) []byte { return xorAt(13, 0x01) },
			wantOff: func(testing.TB, []diskFrame) int64 { return 0 }},
		{name: "segment header reserved byte set",
			edit:    func(testing.TB, []diskFrame) func([]byte) []byte { return xorAt(10, 0x01) },
			wantOff: func(testing.TB, []diskFrame) int64 { return 0 }},
		{name: "segment format version 2",
			edit: func(testing.TB, []diskFrame) func([]byte) []byte {
				return func(b []byte) []byte { b[8] = 2; headerCRC(b); return b }
			},
			wantOff: func(testing.TB, []diskFrame) int64 { return 0 }},
		{name: "segment header zeroed",
			edit:    func(testing.TB, []diskFrame) func([]byte) []byte { return zeroRange(0, segmentHeaderLen) },
			wantOff: func(testing.TB, []diskFrame) int64 { return 0 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := writeJournal(t, Config{}, appends...)
			path := journalSegPath(dir, 0)
			frames := readDiskFrames(t, path)
			editJournalFile(t, path, tc.edit(t, frames))
			before := dirSnapshot(t, dir)

			s, err := Open(dir, Config{})
			if err == nil {
				entries := pollJournal(t, s).Entries
				_ = s.Close()
				last := entries[len(entries)-1]
				t.Fatalf("Open succeeded on a corrupt journal: it now delivers seqs %v, the last (seq %d) being "+
					"this open's event %v; before the damage seqs 0-8 were durable and visible",
					seqList(entries), last.Seq, last.Kind)
			}
			checkCorruption(t, err, path, tc.wantOff(t, frames))
			checkDirUnchanged(t, dir, before)

			// It fails the same way every time.
			_, err = Open(dir, Config{})
			checkCorruption(t, err, path, tc.wantOff(t, frames))
			checkDirUnchanged(t, dir, before)
		})
	}
}

// checkCorruption fails t unless err is a *CorruptionError for path at off
// that matches ErrCorrupt and IsCorruption.
func checkCorruption(t testing.TB, err error, path string, off int64) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) || !IsCorruption(err) {
		t.Fatalf("error = %v, want one matching ErrCorrupt", err)
	}
	var ce *CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *CorruptionError", err)
	}
	if ce.Path != path || ce.Offset != off {
		t.Errorf("corruption reported at %s offset %d, want %s offset %d", ce.Path, ce.Offset, path, off)
	}
}

// TestCorruptEarlierSegment: a segment that is not the last cannot have a
// torn tail; any damage in it is corruption.
func TestCorruptEarlierSegment(t *testing.T) {
	cfg := Config{SegmentBytes: 1 << 20}
	big := func(i int) []engine.Event {
		e := journalEvent(i, false)
		e.Payload = bytes.Repeat([]byte{byte('a' + i)}, 400<<10)
		return []engine.Event{e}
	}
	cases := []struct {
		name    string
		damage  func(t testing.TB, dir string, last diskFrame) // last frame of segment 0
		wantOff func(last diskFrame) int64
		path    string // file the error names
	}{
		{name: "last frame of segment 0 cut",
			damage:  func(t testing.TB, dir string, f diskFrame) { truncateJournalFile(t, journalSegPath(dir, 0), f.end()-7) },
			wantOff: func(f diskFrame) int64 { return f.off }, path: segmentName(0)},
		{name: "last frame of segment 0 checksum flipped",
			damage: func(t testing.TB, dir string, f diskFrame) {
				editJournalFile(t, journalSegPath(dir, 0), xorAt(f.off+4, 0x08))
			},
			wantOff: func(f diskFrame) int64 { return f.off }, path: segmentName(0)},
		{name: "last frame of segment 0 zeroed",
			damage: func(t testing.TB, dir string, f diskFrame) {
				editJournalFile(t, journalSegPath(dir, 0), zeroRange(f.off, f.end()))
			},
			wantOff: func(f diskFrame) int64 { return f.off }, path: segmentName(0)},
		{name: "zeros after the last frame of segment 0",
			damage: func(t testing.TB, dir string, f diskFrame) {
				editJournalFile(t, journalSegPath(dir, 0), func(b []byte) []byte { return append(b, make([]byte, 4096)...) })
			},
			wantOff: func(f diskFrame) int64 { return f.end() }, path: segmentName(0)},
		{name: "segment 0 missing",
			damage: func(t testing.TB, dir string, f diskFrame) {
				if err := os.Remove(journalSegPath(dir, 0)); err != nil {
					t.Fatal(err)
				}
			},
			wantOff: func(diskFrame) int64 { return 0 }, path: segmentName(1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := writeJournal(t, cfg, big(1), big(2), big(3), big(4), big(5))
			if _, err := os.Stat(journalSegPath(dir, 1)); err != nil {
				t.Fatalf("the journal did not rotate: %v", err)
			}
			frames := readDiskFrames(t, journalSegPath(dir, 0))
			tc.damage(t, dir, frames[len(frames)-1])
			before := dirSnapshot(t, dir)

			_, err := Open(dir, cfg)
			checkCorruption(t, err, filepath.Join(dir, tc.path), tc.wantOff(frames[len(frames)-1]))
			checkDirUnchanged(t, dir, before)
		})
	}
}

// TestCorruptOpenGuards: a journal_id that is missing next to segments is
// corruption (never silently replaced by a new identity); a second Open of
// a directory that is open fails ErrLocked and leaves the first
// store working.
func TestCorruptOpenGuards(t *testing.T) {
	appends := [][]engine.Event{{journalEvent(1, false)}, {journalEvent(2, true)}}
	t.Run("journal_id missing", func(t *testing.T) {
		dir, _ := writeJournal(t, Config{}, appends...)
		idPath := filepath.Join(dir, journalIDFile)
		if err := os.Remove(idPath); err != nil {
			t.Fatal(err)
		}
		before := dirSnapshot(t, dir)
		_, err := Open(dir, Config{})
		checkCorruption(t, err, idPath, 0)
		checkDirUnchanged(t, dir, before)
	})
	t.Run("journal_id garbage", func(t *testing.T) {
		dir, _ := writeJournal(t, Config{}, appends...)
		idPath := filepath.Join(dir, journalIDFile)
		if err := os.WriteFile(idPath, []byte("not-a-journal-id\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		before := dirSnapshot(t, dir)
		_, err := Open(dir, Config{})
		checkCorruption(t, err, idPath, 0)
		checkDirUnchanged(t, dir, before)
	})
	t.Run("second open while open", func(t *testing.T) {
		ctx := context.Background()
		dir, _ := writeJournal(t, Config{}, appends...)
		first := openJournal(t, dir, Config{})
		id := first.JournalID()

		second, err := Open(dir, Config{})
		if err == nil {
			_ = second.Close()
			t.Fatal("second Open of an open journal succeeded")
		}
		if !errors.Is(err, ErrLocked) || IsCorruption(err) {
			t.Fatalf("second open: %v, want ErrLocked (not corruption)", err)
		}

		r, err := first.Append(ctx, journalEvent(3, false))
		if err != nil {
			t.Fatalf("first store after the refused open: %v", err)
		}
		entries := pollJournal(t, first).Entries
		if last := entries[len(entries)-1]; last.Seq != r.Seq || !bytes.Equal(last.Payload, journalEvent(3, false).Payload) {
			t.Fatalf("first store's last entry %+v, want seq %d", last, r.Seq)
		}
		closeJournal(t, first)

		third := openJournal(t, dir, Config{})
		if third.JournalID() != id {
			t.Fatalf("journal id changed: %s, was %s", third.JournalID(), id)
		}
		got := seqList(pollJournal(t, third).Entries)
		if !slices.Contains(got, r.Seq) {
			t.Fatalf("the append made beside the refused open is gone: %v", got)
		}
		closeJournal(t, third)
	})
}

// rangesFile builds a visibility_ranges.fbv image: magic, version, the
// CRC-32 (IEEE) of body, body.
func rangesFile(version uint16, body []byte) []byte {
	out := []byte(rangesMagic)
	out = binary.LittleEndian.AppendUint16(out, version)
	out = binary.LittleEndian.AppendUint32(out, crc32.ChecksumIEEE(body))
	return append(out, body...)
}

func encodeMsgpack(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type msgRange = map[string]any

// Catalogue: VIS-11.
func TestVIS11_RangesFile(t *testing.T) {
	// open 0, e1, e2, close 3.
	appends := [][]engine.Event{{journalEvent(1, false)}, {journalEvent(2, false)}}
	body := func(rs ...msgRange) []byte {
		return encodeMsgpack(t, map[string]any{"ranges": rs})
	}
	r := func(start, end uint64) msgRange { return msgRange{"start": start, "end": end} }
	valid := body(r(1, 2))

	cases := []struct {
		name       string
		file       []byte // nil: no ranges file
		wantErr    error
		wantKind   string         // RangesFileError.Kind
		wantRanges []engine.Range // on success
		wantFound  uint16         // future version
	}{
		{name: "absent"},
		{name: "v2", file: rangesFile(2, valid), wantRanges: []engine.Range{{Start: 1, End: 2}}},
		{name: "v1 loads", file: rangesFile(1, valid), wantRanges: []engine.Range{{Start: 1, End: 2}}},
		{name: "unknown extra key loads", file: rangesFile(2, encodeMsgpack(t, map[string]any{
			"ranges": []msgRange{r(1, 2)}, "note": "from a later build", "counts": []int{1, 2}})), wantRanges: []engine.Range{{Start: 1, End: 2}}},
		{name: "unknown key in a range loads", file: rangesFile(2, body(msgRange{"start": 1, "end": 2, "why": "fence"})), wantRanges: []engine.Range{{Start: 1, End: 2}}},
		{name: "no ranges loads", file: rangesFile(2, body())},
		{name: "unsorted, touching and overlapping ranges are normalised",
			file:       rangesFile(2, body(r(5, 6), r(1, 2), r(3, 4), r(4, 5), r(3, 5))),
			wantRanges: []engine.Range{{Start: 1, End: 2}, {Start: 3, End: 6}}},
		{name: "bad crc", file: func() []byte { f := rangesFile(2, valid); f[9] ^= 0x01; return f }(),
			wantErr: ErrCancelledRangesCorrupt, wantKind: "crc"},
		{name: "flipped body byte", file: func() []byte { f := rangesFile(2, valid); f[len(f)-1] ^= 0x01; return f }(),
			wantErr: ErrCancelledRangesCorrupt, wantKind: "crc"},
		{name: "version 3", file: rangesFile(3, valid), wantErr: ErrCancelledRangesFutureVersion, wantKind: "version", wantFound: 3},
		{name: "version 65535", file: rangesFile(0xffff, valid), wantErr: ErrCancelledRangesFutureVersion, wantKind: "version", wantFound: 0xffff},
		{name: "version 0", file: rangesFile(0, valid), wantErr: ErrCancelledRangesCorrupt, wantKind: "version"},
		{name: "11 bytes", file: rangesFile(2, valid)[:11], wantErr: ErrCancelledRangesCorrupt, wantKind: "short"},
		{name: "empty file", file: []byte{}, wantErr: ErrCancelledRangesCorrupt, wantKind: "short"},
		{name: "bad magic", file: func() []byte { f := rangesFile(2, valid); f[0] = 'X'; return f }(),
			wantErr: ErrCancelledRangesCorrupt, wantKind: "magic"},
		{name: "undecodable body", file: rangesFile(2, []byte{0xc1, 0x00}), wantErr: ErrCancelledRangesCorrupt, wantKind: "decode"},
		{name: "ranges of the wrong type", file: rangesFile(2, encodeMsgpack(t, map[string]any{"ranges": "1-2"})),
			wantErr: ErrCancelledRangesCorrupt, wantKind: "decode"},
		{name: "empty range", file: rangesFile(2, body(r(5, 5))), wantErr: ErrCancelledRangesCorrupt, wantKind: "range"},
		{name: "inverted range", file: rangesFile(2, body(r(1, 2), r(7, 3))), wantErr: ErrCancelledRangesCorrupt, wantKind: "range"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, orig := writeJournal(t, Config{}, appends...)
			path := filepath.Join(dir, rangesFileName)
			if tc.file != nil {
				if err := os.WriteFile(path, tc.file, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := dirSnapshot(t, dir)
			s, err := Open(dir, Config{})
			if tc.wantErr != nil {
				if err == nil {
					_ = s.Close()
					t.Fatalf("Open succeeded, want %v", tc.wantErr)
				}
				checkRangesFileError(t, err, path, tc.wantErr, tc.wantKind, tc.wantFound)
				checkDirUnchanged(t, dir, before)
				return
			}
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			t.Cleanup(func() { _ = s.Close() })
			if got := s.CancelledRanges(); !slices.Equal(got, tc.wantRanges) {
				t.Fatalf("cancelled ranges %v, want %v", got, tc.wantRanges)
			}
			// Allocation resumes past the journal's frames and every range.
			openSeq := uint64(4) // open 0, e1, e2, close 3
			if n := len(tc.wantRanges); n > 0 {
				openSeq = max(openSeq, tc.wantRanges[n-1].End)
			}
			st := s.Stats()
			if st.Allocated != openSeq+1 {
				t.Fatalf("allocated %d, want %d", st.Allocated, openSeq+1)
			}
			// Every seq below allocated is delivered or cancelled, never both.
			delivered := map[uint64]bool{}
			for _, e := range pollJournal(t, s).Entries {
				delivered[e.Seq] = true
			}
			for seq := uint64(0); seq < st.Allocated; seq++ {
				in := slices.ContainsFunc(tc.wantRanges, func(r engine.Range) bool { return r.Contains(seq) })
				if in == delivered[seq] {
					t.Errorf("seq %d: delivered %v, cancelled %v", seq, delivered[seq], in)
				}
			}
			for _, e := range orig {
				if !delivered[e.Seq] && !slices.ContainsFunc(tc.wantRanges, func(r engine.Range) bool { return r.Contains(e.Seq) }) {
					t.Errorf("seq %d lost", e.Seq)
				}
			}
			closeJournal(t, s)
		})
	}
}

// checkRangesFileError fails t unless err is a *RangesFileError for path
// of kind that matches want (and not the other ranges sentinel).
func checkRangesFileError(t testing.TB, err error, path string, want error, kind string, found uint16) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want one matching %v", err, want)
	}
	var rfe *RangesFileError
	if !errors.As(err, &rfe) {
		t.Fatalf("error %v is not a *RangesFileError", err)
	}
	if rfe.Path != path || rfe.Kind != kind {
		t.Errorf("error names %s (%s), want %s (%s)", rfe.Path, rfe.Kind, path, kind)
	}
	switch want {
	case ErrCancelledRangesFutureVersion:
		if rfe.Found != found || rfe.Supported != 2 {
			t.Errorf("future version error: Found %d Supported %d, want %d and 2", rfe.Found, rfe.Supported, found)
		}
		if errors.Is(err, ErrCancelledRangesCorrupt) || IsCorruption(err) {
			t.Errorf("a future version is not corruption: %v", err)
		}
	case ErrCancelledRangesCorrupt:
		if !IsCorruption(err) || errors.Is(err, ErrCancelledRangesFutureVersion) {
			t.Errorf("IsCorruption %v, future %v, want true and false", IsCorruption(err), errors.Is(err, ErrCancelledRangesFutureVersion))
		}
		if kind == "range" && !errors.Is(err, engine.ErrRangeMalformed) {
			t.Errorf("a malformed range should also match ErrRangeMalformed: %v", err)
		}
	}
}

// TestTornTail_SegmentHeader: a crash while a new segment file is being
// created (rotation, or the first segment of a new journal) leaves a last
// segment shorter than its 16-byte header. doc.go calls that a torn header
// of a segment that never got a frame: reopen succeeds, the segment gets a
// good header, and what is appended next must be readable after another
// reopen.
func TestTornTail_SegmentHeader(t *testing.T) {
	cases := []struct {
		name   string
		size   int // bytes of the torn header left on disk
		rotate bool
	}{
		{name: "empty new segment after rotation", size: 0, rotate: true},
		{name: "partial header of a new segment after rotation", size: 7, rotate: true},
		{name: "empty first segment", size: 0},
		{name: "partial header of the first segment", size: 11},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var dir string
			var orig []engine.Entry
			torn := uint32(0)
			if tc.rotate {
				dir, orig = writeJournal(t, Config{}, []engine.Event{journalEvent(1, false)}, []engine.Event{journalEvent(2, true)})
				orig = append(orig, engine.Entry{Seq: 3}) // the close event, compared by kind
				torn = 1
			} else {
				dir = t.TempDir()
				s := openJournal(t, dir, Config{}) // creates journal_id and segment 0
				closeJournal(t, s)
				if err := os.Remove(journalSegPath(dir, 0)); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(journalSegPath(dir, torn), segmentHeader()[:tc.size], 0o644); err != nil {
				t.Fatal(err)
			}

			s := openJournal(t, dir, Config{})
			keep := uint64(len(orig))
			res := pollJournal(t, s)
			if uint64(len(res.Entries)) != keep+1 || res.Entries[keep].Seq != keep || res.Entries[keep].Kind != engine.KindOpenCompleted {
				t.Fatalf("after reopen: %v, want seqs 0-%d then the open event", seqList(res.Entries), int(keep)-1)
			}
			appendAfterRecovery(t, s, keep+1)
			closeJournal(t, s)

			// The journal must reopen, and the segment that had the torn
			// header must now be a clean segment holding this open's frames.
			s, err := Open(dir, Config{})
			if err != nil {
				data, _ := os.ReadFile(journalSegPath(dir, torn))
				t.Fatalf("second reopen: %v\nsegment %d starts % x: the frames appended after the recovery were written "+
					"at offset 0, over the segment header", err, torn, data[:min(len(data), segmentHeaderLen)])
			}
			frames := readDiskFrames(t, journalSegPath(dir, torn))
			// open, user, close of the first reopen, then the open of this one.
			if len(frames) != 4 || frames[0].group != segmentHeaderLen || frames[0].seq != keep || frames[3].seq != keep+3 {
				t.Errorf("segment %d holds frames %+v, want seqs %d-%d right after its header", torn, frames, keep, keep+3)
			}
			defer func() { _ = s.Close() }()
			got := seqList(pollJournal(t, s).Entries)
			if want := int(keep) + 4; len(got) != want {
				t.Fatalf("after the second reopen: seqs %v, want %d entries", got, want)
			}
		})
	}
}
