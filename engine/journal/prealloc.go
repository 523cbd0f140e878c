package journal

import (
	"fmt"
)

// Preallocation. The active segment is kept zero-filled ahead of its
// written end (zeroEnd ≥ activeSize). A group then overwrites blocks the
// file system has already allocated inside the file's durable size, so
// its sync (fdatasync, see syncData) flushes only those data pages: no
// block allocation, no size change and no metadata journal commit per
// group. On ext4 this keeps a group's sync time nearly flat in the group's
// size (measured here: a 43 KB overwrite syncs in about the time of a
// 100-byte append) instead of growing with it. fallocate is not used: its
// unwritten extents must be converted on first write, which is again a
// metadata commit.
//
// The zeros are written synchronously by the committer, in front of the
// group that needs them, and synced by that group's sync; they cost write
// bandwidth once per byte of journal. A sealed segment is cut back to its
// written end before the next one starts (recovery treats anything after
// the frames of an earlier segment as corruption); Close trims the active
// one. After a crash, recovery keeps an all-zero tail and truncates one
// that holds a torn write. Unlike an appending write, an overwrite's pages
// can reach the disk in any order if the power fails during its sync: each
// group write starts with a group frame so recovery can cut a torn one off
// whole (recover.go). Written bytes are never zero-filled again (writeAt
// keeps zeroEnd at or past them).

const (
	zeroChunkMin = 64 << 10 // first extension of a segment
	zeroChunkMax = 1 << 20  // later extensions: each costs ≈ 1–2 ms of writes
)

var zeroBlock [zeroChunkMax]byte

// preallocTarget returns how far to zero-fill when the active segment must
// hold need bytes: need plus a headroom that doubles with the segment's
// size from zeroChunkMin to zeroChunkMax, not past SegmentBytes (where the
// segment rotates) unless need itself is past it.
func preallocTarget(need, segmentBytes int64) int64 {
	headroom := min(max(need, zeroChunkMin), zeroChunkMax)
	return max(need, min(need+headroom, segmentBytes))
}

// ensureZeroed zero-fills the active segment up to at least need bytes. It
// is best effort: on failure the group is written anyway (extending the
// file as an append would), and only a failure of that write fails the
// group. Bytes that were zeroed stay a harmless zero tail.
func (s *Store) ensureZeroed(need int64) {
	// Invariant: zeroEnd >= activeSize (writeAt keeps it), so zeros never
	// land on written bytes; the max is a second guard.
	from := max(s.zeroEnd, s.activeSize)
	if need <= from {
		return
	}
	f := s.segs[s.activeNum]
	target := preallocTarget(need, s.cfg.SegmentBytes)
	for off := from; off < target; {
		p := zeroBlock[:min(int64(len(zeroBlock)), target-off)]
		var n int
		var err error
		if s.cfg.faults != nil && s.cfg.faults.zeroWrite != nil {
			n, err = s.cfg.faults.zeroWrite(f, p, off)
		} else {
			n, err = f.WriteAt(p, off)
		}
		off += int64(n)
		if off > s.zeroEnd {
			s.zeroEnd = off
		}
		if err != nil {
			s.log.Warn("could not preallocate the journal segment; appending without", "path", f.Name(), "error", err)
			return
		}
	}
}

// trimActive cuts the active segment back to its written end and syncs it.
func (s *Store) trimActive() error {
	if s.zeroEnd <= s.activeSize {
		return nil
	}
	f := s.segs[s.activeNum]
	if err := f.Truncate(s.activeSize); err != nil {
		return fmt.Errorf("journal: trim segment %s: %w", f.Name(), err)
	}
	s.zeroEnd = s.activeSize
	if err := f.Sync(); err != nil {
		return fmt.Errorf("journal: sync trimmed segment %s: %w", f.Name(), err)
	}
	return nil
}

// truncateActive cuts the active segment at off (a failed append's bytes),
// dropping the preallocated tail with them.
func (s *Store) truncateActive(off int64) error {
	err := s.segs[s.activeNum].Truncate(off)
	if err == nil {
		s.zeroEnd = off
	}
	return err
}
