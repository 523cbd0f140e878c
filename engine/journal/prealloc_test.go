package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
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
// any subset of the pages of the last group write, followed by the zeros
// that were there. The group is cut off whole and its seqs cancelled (from
// its group frame, or from the frames that survived when the page holding
// the group frame was lost); damage to an earlier group, or data a torn
// write cannot explain, is corruption.
func TestVIS14_TornWriteIntoZeroTail(t *testing.T) {
	// Three single events, then an atomic batch of three: the batch is the
	// last group, written with one write.
	build := func(t *testing.T) (dir string, orig []engine.Entry, batch []diskFrame) {
		src := t.TempDir()
		s := openJournal(t, src, Config{})
		for i := range 3 {
			mustAppend(t, s, journalEvent(i, false))
		}
		// Events of 1.5 KB: the batch's write spans pages.
		batchEvents := []engine.Event{journalEvent(3, false), journalEvent(4, false), journalEvent(5, false)}
		for i := range batchEvents {
			batchEvents[i].Payload = bytes.Repeat([]byte{byte('a' + i)}, 1500)
		}
		if _, err := s.AppendBatch(context.Background(), batchEvents); err != nil {
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
		{"an earlier page lost, a later one kept", func(b []diskFrame) func([]byte) []byte { return zeroRange(b[1].off, b[2].off) }},
		{"the page with the group frame lost, later ones kept", func(b []diskFrame) func([]byte) []byte {
			return zeroRange(b[0].group, tornPage*(b[0].group/tornPage+1))
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
			if got := s.CancelledRanges(); len(got) != 1 || got[0] != (engine.Range{Start: 4, End: 7}) {
				t.Fatalf("cancelled ranges %v, want [4,7)", got)
			}
			frames := readDiskFrames(t, path)
			if f := frames[len(frames)-1]; f.group != batch[0].group || f.seq != 7 {
				t.Fatalf("open event written at offset %d seq %d, want offset %d seq 7 (where the batch's group began)", f.group, f.seq, batch[0].group)
			}
		})
	}

	corrupt := []struct {
		name   string
		damage func(b []diskFrame) func([]byte) []byte
		at     func(b []diskFrame) int64 // the offset reported
	}{
		{"a damaged event in the group before the batch",
			func(b []diskFrame) func([]byte) []byte { return xorAt(b[0].group-5, 0x40) },
			func(b []diskFrame) int64 { return -1 }}, // the frame before the batch's group
		{"the group frame damaged (not a torn write)",
			func(b []diskFrame) func([]byte) []byte { return xorAt(b[0].group+frameHeaderLen+6, 0x40) },
			func(b []diskFrame) int64 { return b[0].group }},
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

// A zero-fill that fails (here: at once, as with ENOSPC) leaves the group
// to be written anyway; the next group's zero-fill must start after that
// group's bytes, never over them. (Found in review: zeroing resumed from
// the stale fill mark and wiped an acknowledged entry.)
func TestPreallocation_FailedZeroFillNeverOverwritesData(t *testing.T) {
	var failNext atomic.Bool
	cfg := Config{faults: &faults{zeroWrite: func(f *os.File, p []byte, off int64) (int, error) {
		if failNext.Swap(false) {
			return 0, syscall.ENOSPC
		}
		return f.WriteAt(p, off)
	}}}
	dir := t.TempDir()
	s := openJournal(t, dir, cfg)
	ctx := context.Background()
	mustAppend(t, s, journalEvent(1, false))

	// Push the next group past the preallocated space with the zero-fill
	// failing, then append again with it working.
	big := journalEvent(2, false)
	big.Payload = bytes.Repeat([]byte("A"), 2*zeroChunkMin)
	failNext.Store(true)
	r, err := s.Append(ctx, big)
	if err != nil {
		t.Fatalf("append with the zero-fill failing: %v", err)
	}
	if failNext.Load() {
		t.Fatal("setup: the zero-fill was not attempted for the big append")
	}
	mustAppend(t, s, journalEvent(3, false))

	check := func(s *Store, when string) {
		t.Helper()
		res, err := s.Poll(ctx, engine.RegionAll(), r.Seq-1, true, 1)
		if err != nil || len(res.Entries) != 1 || res.Entries[0].Seq != r.Seq {
			t.Fatalf("%s: poll %v, %v", when, res.Entries, err)
		}
		if got := res.Entries[0].Payload; !bytes.Equal(got, big.Payload) {
			i := 0
			for i < min(len(got), len(big.Payload)) && got[i] == big.Payload[i] {
				i++
			}
			t.Fatalf("%s: acknowledged entry %d differs from what was appended from byte %d of %d (zeroed over?)",
				when, r.Seq, i, len(big.Payload))
		}
	}
	check(s, "after the next group")
	closeJournal(t, s)
	check(openJournal(t, dir, Config{}), "after reopen")
}

// Catalogue: VIS-14.
//
// A frame whose checksum holds was written whole, so it is never a torn
// write, even at the end of the last segment: one the reader cannot
// decode (here a future frame version) is corruption, not cut off.
// (Found in review.)
func TestVIS14_ChecksumValidTailFrameIsNotTorn(t *testing.T) {
	dir := t.TempDir()
	s := openJournal(t, dir, Config{})
	for i := range 3 {
		mustAppend(t, s, journalEvent(i, false))
	}
	closeJournal(t, s)
	path := journalSegPath(dir, 0)
	frames := readDiskFrames(t, path)
	last := frames[len(frames)-1]
	editJournalFile(t, path, func(d []byte) []byte {
		fr := append([]byte(nil), d[last.off:last.end()]...)
		body := fr[frameHeaderLen:]
		body[1] = frameVersion + 1
		binary.LittleEndian.PutUint64(body[14:], last.seq+1)
		binary.LittleEndian.PutUint32(fr[4:], crc32.Checksum(body, castagnoli))
		return append(d, fr...)
	})
	before := dirSnapshot(t, dir)
	_, err := Open(dir, Config{})
	checkCorruption(t, err, path, last.end())
	checkDirUnchanged(t, dir, before)
}

// Appenders racing Close: every append that returned a receipt is durable
// and visible after reopen, none hangs, the rest fail ErrClosed.
func TestClose_AppendersRacingClose(t *testing.T) {
	for round := range 10 {
		dir := t.TempDir()
		s, err := Open(dir, Config{GroupCommitLinger: 200 * time.Microsecond})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var acked []uint64
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				for i := 0; ; i++ {
					var rs []engine.Receipt
					var err error
					if i%3 == 0 {
						rs, err = s.AppendBatch(context.Background(), []engine.Event{journalEvent(g, false), journalEvent(i, false)})
					} else {
						var r engine.Receipt
						r, err = s.Append(context.Background(), journalEvent(g, false))
						rs = []engine.Receipt{r}
					}
					if err != nil {
						if !errors.Is(err, ErrClosed) {
							t.Errorf("round %d appender %d: %v", round, g, err)
						}
						return
					}
					mu.Lock()
					for _, r := range rs {
						acked = append(acked, r.Seq)
					}
					mu.Unlock()
				}
			})
		}
		// Close once some appends have landed (more each round).
		waitFor(t, "appends before Close", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(acked) >= 20*(round+1)
		})
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Close hung")
		}
		appendersDone := make(chan struct{})
		go func() { wg.Wait(); close(appendersDone) }()
		select {
		case <-appendersDone:
		case <-time.After(20 * time.Second):
			t.Fatal("an appender hung after Close")
		}
		s2 := openJournal(t, dir, Config{})
		seen := map[uint64]bool{}
		for _, e := range pollJournal(t, s2).Entries {
			seen[e.Seq] = true
		}
		for _, q := range acked {
			if !seen[q] {
				t.Fatalf("round %d: acknowledged seq %d missing after reopen", round, q)
			}
		}
		closeJournal(t, s2)
	}
}
