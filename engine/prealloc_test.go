package engine

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// crashCopy copies the files of an open journal's directory into a new
// directory: what a process killed at this moment leaves behind (its
// writes are in the page cache; nothing was trimmed).
func crashCopy(t testing.TB, dir string) string {
	t.Helper()
	out := t.TempDir()
	for name, b := range dirSnapshot(t, dir) {
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// segmentEnd returns the end of the last frame of a segment file, and the
// file's size.
func segmentEnd(t testing.TB, path string) (end, size int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	frames := readDiskFrames(t, path)
	if len(frames) == 0 {
		return segmentHeaderLen, st.Size()
	}
	return frames[len(frames)-1].end(), st.Size()
}

// checkZeroTail fails t unless path holds only zeros from off to its end.
func checkZeroTail(t testing.TB, path string, off int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.IndexFunc(data[off:], func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("%s: non-zero byte at offset %d, in the preallocated tail from %d", path, off+int64(i), off)
	}
}

func TestPreallocation_ZeroTailWhileOpenTrimmedOnClose(t *testing.T) {
	dir := t.TempDir()
	s := openJournal(t, dir, Config{})
	for i := range 20 {
		mustAppend(t, s, journalEvent(i, false))
	}
	path := journalSegPath(dir, 0)
	end, size := segmentEnd(t, path)
	if size < end+zeroChunkMin/2 {
		t.Fatalf("open journal: segment is %d bytes with frames up to %d: want a preallocated zero tail", size, end)
	}
	checkZeroTail(t, path, end)

	closeJournal(t, s)
	end, size = segmentEnd(t, path)
	if size != end {
		t.Fatalf("closed journal: segment is %d bytes, frames end at %d: the tail was not trimmed", size, end)
	}
}

// A writer killed with its preallocated tail in place: the reopen keeps
// the zeros as preallocated space (no truncation), appends into them, and
// everything reads back.
func TestPreallocation_CrashKeepsZeroTail(t *testing.T) {
	dir := t.TempDir()
	s := openJournal(t, dir, Config{})
	for i := range 10 {
		mustAppend(t, s, journalEvent(i, i%2 == 0))
	}
	orig := pollJournal(t, s).Entries
	crashed := crashCopy(t, dir)
	path := journalSegPath(crashed, 0)
	end, size := segmentEnd(t, path)
	if size <= end {
		t.Fatalf("no zero tail to recover from: size %d, frames end at %d", size, end)
	}

	s2 := openJournal(t, crashed, Config{})
	checkSurvivors(t, pollJournal(t, s2).Entries, orig, uint64(len(orig)), uint64(len(orig)))
	end2, size2 := segmentEnd(t, path)
	if size2 != size || end2 <= end {
		t.Fatalf("after reopen: size %d (was %d), frames end at %d (was %d): want the open event written into the kept tail",
			size2, size, end2, end)
	}
	checkZeroTail(t, path, end2)
	appendAfterRecovery(t, s2, uint64(len(orig))+1)
	closeJournal(t, s2)
	s3 := openJournal(t, crashed, Config{})
	if got := len(pollJournal(t, s3).Entries); got != len(orig)+4 {
		t.Fatalf("second reopen: %d entries, want %d", got, len(orig)+4)
	}
}

// Catalogue: VIS-14.
//
// Torn writes into preallocated space: a power loss can keep a prefix or
// some pages of the last group, followed by the zeros that were there. The
// group is cut off (its batch cancelled); anything a torn write cannot
// explain is corruption.
func TestVIS14_TornWriteIntoZeroTail(t *testing.T) {
	// Three single events, then an atomic batch of three: the batch is the
	// last group, written with one write.
	build := func(t *testing.T) (dir string, orig []Entry, batch []diskFrame) {
		src := t.TempDir()
		s := openJournal(t, src, Config{})
		for i := range 3 {
			mustAppend(t, s, journalEvent(i, false))
		}
		if _, err := s.AppendBatch(context.Background(), []Event{journalEvent(3, false), journalEvent(4, false), journalEvent(5, false)}); err != nil {
			t.Fatal(err)
		}
		orig = pollJournal(t, s).Entries
		dir = crashCopy(t, src)
		frames := readDiskFrames(t, journalSegPath(dir, 0))
		batch = frames[len(frames)-5:] // begin, 3 events, commit
		if batch[0].typ != frameBatchBegin || batch[4].typ != frameBatchCommit {
			t.Fatalf("unexpected layout: %+v", frames)
		}
		return dir, orig, batch
	}
	zeroFrom := func(off int64) func([]byte) []byte {
		return func(b []byte) []byte { clear(b[off:]); return b }
	}
	torn := []struct {
		name   string
		damage func(b []diskFrame) func([]byte) []byte
	}{
		{"prefix ends inside an event", func(b []diskFrame) func([]byte) []byte { return zeroFrom(b[2].off + int64(b[2].size)/2) }},
		{"prefix ends inside a frame header", func(b []diskFrame) func([]byte) []byte { return zeroFrom(b[3].off + 3) }},
		{"prefix ends after one length byte", func(b []diskFrame) func([]byte) []byte {
			return func(d []byte) []byte { clear(d[b[3].off:]); d[b[3].off] = 1; return d }
		}},
		{"commit frame lost", func(b []diskFrame) func([]byte) []byte { return zeroFrom(b[4].off) }},
		{"commit frame cut inside its first seq", func(b []diskFrame) func([]byte) []byte {
			return zeroFrom(b[4].off + frameHeaderLen + 4)
		}},
	}
	for _, tc := range torn {
		t.Run(tc.name, func(t *testing.T) {
			dir, orig, batch := build(t)
			path := journalSegPath(dir, 0)
			editJournalFile(t, path, tc.damage(batch))
			s := openJournal(t, dir, Config{})
			res := pollJournal(t, s)
			checkSurvivors(t, res.Entries, orig, 4, 7)
			if got := s.CancelledRanges(); len(got) != 1 || got[0] != (Range{4, 7}) {
				t.Fatalf("cancelled ranges %v, want [4,7)", got)
			}
			frames := readDiskFrames(t, path)
			if f := frames[len(frames)-1]; f.off != batch[0].off || f.seq != 7 {
				t.Fatalf("open event at offset %d seq %d, want offset %d seq 7 (where the batch began)", f.off, f.seq, batch[0].off)
			}
		})
	}

	corrupt := []struct {
		name   string
		damage func(b []diskFrame) func([]byte) []byte
		at     func(b []diskFrame) int64 // the offset reported
	}{
		{"an earlier page lost, a later one kept",
			func(b []diskFrame) func([]byte) []byte { return zeroRange(b[1].off, b[2].off) },
			func(b []diskFrame) int64 { return b[1].off }},
		{"a damaged event before the batch",
			func(b []diskFrame) func([]byte) []byte { return xorAt(b[0].off-5, 0x40) },
			func(b []diskFrame) int64 { return -1 }}, // the frame before the batch
		{"garbage far into the zero tail",
			func(b []diskFrame) func([]byte) []byte {
				return func(d []byte) []byte { clear(d[b[4].off:]); d[b[4].end()+4000] = 0x7f; return d }
			},
			func(b []diskFrame) int64 { return b[4].off }},
	}
	for _, tc := range corrupt {
		t.Run(tc.name, func(t *testing.T) {
			dir, _, batch := build(t)
			path := journalSegPath(dir, 0)
			frames := readDiskFrames(t, path)
			editJournalFile(t, path, tc.damage(batch))
			before := dirSnapshot(t, dir)
			_, err := Open(dir, Config{})
			off := tc.at(batch)
			if off < 0 {
				off = frames[len(frames)-6].off
			}
			checkCorruption(t, err, path, off)
			checkDirUnchanged(t, dir, before)
		})
	}
}

// A full segment is cut back to its frames before the next one starts:
// sealed segments hold no zero tail, and the active one does.
func TestPreallocation_RotationSealsSegment(t *testing.T) {
	dir := t.TempDir()
	s := openJournal(t, dir, Config{SegmentBytes: 1 << 20})
	big := journalEvent(0, false)
	big.Payload = bytes.Repeat([]byte{'b'}, 100<<10)
	for range 12 {
		mustAppend(t, s, big)
	}
	segs, err := listSegments(dir)
	if err != nil || len(segs) < 2 {
		t.Fatalf("segments %v (%v): want a rotation", segs, err)
	}
	for _, n := range segs[:len(segs)-1] {
		if end, size := segmentEnd(t, journalSegPath(dir, n)); size != end {
			t.Errorf("sealed segment %d: %d bytes, frames end at %d", n, size, end)
		}
	}
	active := journalSegPath(dir, segs[len(segs)-1])
	end, size := segmentEnd(t, active)
	if size <= end {
		t.Errorf("active segment: %d bytes, frames end at %d: want a preallocated tail", size, end)
	}
	checkZeroTail(t, active, end)
	want := len(pollJournal(t, s).Entries)

	// A crash now: the copy reopens with every entry.
	s2 := openJournal(t, crashCopy(t, dir), Config{SegmentBytes: 1 << 20})
	if got := len(pollJournal(t, s2).Entries); got != want+1 {
		t.Fatalf("after a crash: %d entries, want %d and the open event", got, want)
	}
}

func TestPreallocTarget(t *testing.T) {
	const seg = 128 << 20
	cases := []struct{ need, segBytes, want int64 }{
		{need: 100, segBytes: seg, want: 100 + zeroChunkMin},
		{need: 300 << 10, segBytes: seg, want: 600 << 10},
		{need: 10 << 20, segBytes: seg, want: 11 << 20},
		{need: seg - 100, segBytes: seg, want: seg}, // not past the rotation point
		{need: seg + 100, segBytes: seg, want: seg + 100},
	}
	for _, c := range cases {
		if got := preallocTarget(c.need, c.segBytes); got != c.want {
			t.Errorf("preallocTarget(%d, %d) = %d, want %d", c.need, c.segBytes, got, c.want)
		}
	}
}
