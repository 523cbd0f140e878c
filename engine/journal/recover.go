package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/batfleet/batfleet/engine"
)

// recovery rebuilds a Store's state from its directory: it checks every
// frame, truncates a torn tail, cancels uncommitted batches and fences,
// and rebuilds the index, the entity clocks and the idempotency keys.
type recovery struct {
	s       *Store
	ranges  []engine.Range // loaded from the ranges file
	added   []engine.Range // cancelled by this recovery
	maxEnd  uint64         // one past the highest seq seen in any frame
	batch   *openBatch
	fenced  []pendingEntry // fenced entries awaiting a fence commit
	segNum  uint32
	indexed int

	writeEnd int64 // where the last good write (a group, or a frame outside groups) ends in this segment

	groupFrames []groupedFrame // scratch: the checked frames of the group being applied
}

type openBatch struct {
	first, count uint64
	seg          uint32
	beginOff     int64
	entries      []pendingEntry
}

type pendingEntry struct {
	seq  uint64
	meta entryMeta
}

// recover runs recovery. It leaves s.segs, s.active*, the index, the
// clocks, the keys and the gate ready for the committer.
func (s *Store) recover() error {
	rc := &recovery{s: s}
	rs, err := loadRanges(s.dir)
	if err != nil {
		return err
	}
	rc.ranges = rs

	nums, err := listSegments(s.dir)
	if err != nil {
		return err
	}
	if len(nums) == 0 {
		f, err := createSegment(s.dir, 0)
		if err != nil {
			return fmt.Errorf("journal: create first segment: %w", err)
		}
		s.segs = []*os.File{f}
		s.activeNum, s.activeSize, s.zeroEnd = 0, segmentHeaderLen, segmentHeaderLen
	}
	for i, num := range nums {
		last := i == len(nums)-1
		path := filepath.Join(s.dir, segmentName(num))
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("journal: open segment: %w", err)
		}
		s.segs = append(s.segs, f)
		if nums[0] != 0 {
			return &CorruptionError{Path: path, Reason: "segment numbering does not start at 0"}
		}
		rc.segNum = num
		truncateAt, err := rc.scanSegment(f, path, last)
		if err != nil {
			return err
		}
		if last {
			if rc.batch != nil {
				// The tail batch never committed: cancel its range and cut it off.
				rc.cancel(engine.Range{Start: rc.batch.first, End: rc.batch.first + rc.batch.count})
				if rc.batch.seg == num && rc.batch.beginOff < truncateAt {
					truncateAt = rc.batch.beginOff
				}
				rc.batch = nil
			}
			rc.endFence()
			if err := rc.persistRanges(); err != nil {
				return err
			}
			zeroEnd, err := rc.truncate(f, path, truncateAt)
			if err != nil {
				return err
			}
			s.activeNum, s.activeSize, s.zeroEnd = num, max(truncateAt, segmentHeaderLen), zeroEnd
		}
	}

	for i, f := range s.segs {
		length := int64(0) // a sealed segment: its size
		if i == len(s.segs)-1 {
			length = s.cfg.SegmentBytes + mapSlack // the active one grows
		}
		b, err := mapSegment(f, length)
		if err != nil {
			s.log.Warn("reading payloads with pread: segment not mapped", "error", err)
		}
		s.maps.add(b)
	}

	allocated := rc.maxEnd
	all := rc.allRanges()
	if n := len(all); n > 0 && all[n-1].End > allocated {
		allocated = all[n-1].End
	}
	s.gate.setRanges(all)
	s.gate.resume(allocated)
	if err := s.gate.publish(allocated); err != nil {
		return err
	}
	s.evictKeys(allocated)
	s.log.Debug("journal recovered", "segments", len(s.segs), "entries", rc.indexed,
		"allocated", allocated, "cancelled-ranges", len(all))
	return nil
}

func (rc *recovery) allRanges() []engine.Range {
	all, _ := engine.NormalizeRanges(append(append([]engine.Range(nil), rc.ranges...), rc.added...))
	return all
}

func (rc *recovery) cancel(r engine.Range) {
	if r.Start < r.End {
		rc.added = append(rc.added, r)
	}
}

// persistRanges writes the ranges file when recovery cancelled anything not
// already recorded. It runs before any truncation, so a crash in between
// repeats the same recovery.
func (rc *recovery) persistRanges() error {
	all := rc.allRanges()
	if slices.Equal(all, rc.ranges) {
		return nil
	}
	if err := saveRanges(rc.s.dir, all); err != nil {
		return fmt.Errorf("journal: persist cancelled ranges: %w", err)
	}
	rc.ranges, rc.added = all, nil
	return nil
}

// truncate cuts the last segment at its valid end. An all-zero rest (the
// preallocation of a writer that did not close) is kept as preallocated
// space. It returns how far the segment is zero-filled.
func (rc *recovery) truncate(f *os.File, path string, at int64) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if at < segmentHeaderLen {
		rc.s.log.Warn("rewriting a torn segment header", "path", path)
		if err := writeSegmentHeader(f); err != nil {
			return 0, fmt.Errorf("journal: rewrite segment header: %w", err)
		}
		return segmentHeaderLen, nil
	}
	if st.Size() == at {
		return at, nil
	}
	end, err := nonZeroEnd(f, at, st.Size())
	if err != nil {
		return 0, fmt.Errorf("journal: read segment tail: %w", err)
	}
	if end == at {
		rc.s.log.Debug("keeping the preallocated tail of the last segment", "path", path, "offset", at, "bytes", st.Size()-at)
		return st.Size(), nil
	}
	rc.s.log.Warn("truncating torn journal tail", "path", path, "offset", at, "bytes", st.Size()-at)
	if err := f.Truncate(at); err != nil {
		return 0, fmt.Errorf("journal: truncate torn tail: %w", err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("journal: sync truncated segment: %w", err)
	}
	return at, nil
}

func (rc *recovery) cancelled(seq uint64) bool {
	for _, set := range [][]engine.Range{rc.ranges, rc.added} {
		if len(engine.Intersecting(set, seq, seq+1)) > 0 {
			return true
		}
	}
	return false
}

// scanSegment checks and applies every frame of one segment. It returns
// the offset where valid data ends (where a torn tail starts).
func (rc *recovery) scanSegment(f *os.File, path string, last bool) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	if size < segmentHeaderLen {
		if last {
			return 0, nil // torn header of a segment that never got a frame
		}
		return 0, &CorruptionError{Path: path, Reason: "segment shorter than its header"}
	}
	hdr := make([]byte, segmentHeaderLen)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return 0, fmt.Errorf("journal: read segment header: %w", err)
	}
	if err := checkSegmentHeader(path, hdr); err != nil {
		return 0, err
	}
	rc.writeEnd = segmentHeaderLen

	buf := make([]byte, 0, 4<<20)
	base := int64(segmentHeaderLen) // file offset of buf[0]
	pos := 0
	eof := false
	fill := func() error {
		n := copy(buf[:cap(buf)], buf[pos:])
		base += int64(pos)
		pos = 0
		buf = buf[:n]
		if n == cap(buf) {
			nb := make([]byte, n, 2*cap(buf))
			copy(nb, buf)
			buf = nb
		}
		m, err := f.ReadAt(buf[n:cap(buf)], base+int64(n))
		buf = buf[:n+m]
		if errors.Is(err, io.EOF) || base+int64(n+m) >= size {
			eof = true
			return nil
		}
		return err
	}
	if err := fill(); err != nil {
		return 0, err
	}
	var fr decodedFrame
	for {
		off := base + int64(pos)
		if off == size {
			return off, nil
		}
		err := decodeFrame(buf[pos:], &fr)
		if errors.Is(err, errFrameShort) && !eof {
			if err := fill(); err != nil {
				return 0, fmt.Errorf("journal: read segment: %w", err)
			}
			continue
		}
		if err != nil {
			return rc.badFrame(f, path, last, off, size, err)
		}
		if fr.typ != frameGroup {
			if err := rc.apply(&fr, off); err != nil {
				return 0, &CorruptionError{Path: path, Offset: off, Reason: err.Error()}
			}
			pos += fr.size
			rc.writeEnd = off + int64(fr.size)
			continue
		}
		// A group: check all of it before applying any of it, so a torn
		// last group can be cut off whole.
		g := fr
		extent := g.size + int(g.c)
		for len(buf)-pos < extent && !eof {
			if err := fill(); err != nil {
				return 0, fmt.Errorf("journal: read segment: %w", err)
			}
		}
		off = base + int64(pos)
		frames, bad, cause := checkGroup(buf[pos:min(len(buf), pos+extent)], extent, rc.groupFrames[:0])
		rc.groupFrames = frames
		if cause != nil {
			return rc.badGroup(f, path, last, off, off+int64(bad), int64(extent), g.a, g.b, size, cause)
		}
		for i := range frames {
			at := off + int64(frames[i].off)
			if err := rc.apply(&frames[i].fr, at); err != nil {
				return 0, &CorruptionError{Path: path, Offset: at, Reason: err.Error()}
			}
		}
		rc.seen(g.b)
		pos += extent
		rc.writeEnd = base + int64(pos)
	}
}

// maxGroupWrite bounds one group write: the committer closes a group once
// it holds DefaultMaxGroupBytes, so the last request it takes can add at
// most one maximal batch with its two batch frames.
func maxGroupWrite(cfg Config) int64 {
	return int64(DefaultMaxGroupBytes) + int64(cfg.MaxBatchBytes) + 2*(frameHeaderLen+markerBodyLen) + groupFrameLen
}

// checkGroup checks the frames of a group (b holds its group frame and
// what could be read of the extent bytes it spans): they must decode and
// tile the extent exactly. It returns them decoded (appended to dst; they
// point into b), or the offset in b of the first bad frame and why.
func checkGroup(b []byte, extent int, dst []groupedFrame) ([]groupedFrame, int, error) {
	for q := groupFrameLen; q < extent; {
		if q >= len(b) {
			return dst, q, errFrameShort
		}
		dst = append(dst, groupedFrame{off: q})
		fr := &dst[len(dst)-1].fr
		if err := decodeFrame(b[q:], fr); err != nil {
			return dst, q, err
		}
		if fr.typ == frameGroup || fr.typ == frameFenceCommit {
			return dst, q, &frameError{"a group frame or fence commit inside a group"}
		}
		q += fr.size
	}
	return dst, 0, nil
}

// groupedFrame is a frame of a group, at offset off from its group frame.
type groupedFrame struct {
	off int
	fr  decodedFrame
}

// badGroup decides about a group that does not check: a torn last write
// (cut off whole, its seqs cancelled) or corruption. A group is written
// with one write and synced before anything after it is written, so in
// the last segment a damaged group with nothing but zeros after its extent
// is the torn last write: any subset of its pages may have reached the
// disk before the power failed, and none of it was acknowledged. (Damage
// to that group after a completed sync looks the same; it is cut off and
// cancelled too, never delivered half.) Anything else is corruption.
func (rc *recovery) badGroup(f *os.File, path string, last bool, groupOff, badOff, extent int64, first, end uint64, size int64, cause error) (int64, error) {
	corrupt := &CorruptionError{Path: path, Offset: badOff, Reason: "in the group written at offset " + fmt.Sprint(groupOff) + ": " + cause.Error()}
	if !last {
		return 0, corrupt
	}
	dataEnd, err := nonZeroEnd(f, groupOff, size)
	if err != nil {
		return 0, fmt.Errorf("journal: read segment tail: %w", err)
	}
	if dataEnd > groupOff+extent {
		corrupt.Reason += fmt.Sprintf(" (data follows the group, up to offset %d)", dataEnd)
		return 0, corrupt
	}
	rc.s.log.Warn("cutting off a torn last group write", "path", path, "offset", groupOff,
		"seqs", engine.Range{Start: first, End: end}.String(), "damage", cause.Error(), "at", badOff)
	rc.cancel(engine.Range{Start: first, End: end})
	rc.seen(end)
	return groupOff, nil
}

// badFrame decides whether a frame that does not decode is a torn tail
// (crash while appending: truncate) or corruption (refuse to open).
//
// Only the last segment can have a torn tail, and only one group's write
// can be torn: every earlier group was synced before the next was written.
// A torn write leaves a prefix of what it wrote (a process killed in a
// write) or, after a power loss, some of its pages; either way, followed
// by the preallocated zeros or the end of the file. So the bad frame is a
// torn tail when no checksum-valid frame follows it and it is the last
// non-zero data: it runs past the end of the file, its declared length
// covers every non-zero byte after it, or all that is left is a partial
// frame header. A valid frame after it means the frame itself was damaged
// and the data after it is real.
func (rc *recovery) badFrame(f *os.File, path string, last bool, off, size int64, cause error) (int64, error) {
	corrupt := &CorruptionError{Path: path, Offset: off, Reason: cause.Error()}
	if !last {
		return 0, corrupt
	}
	end, err := nonZeroEnd(f, off, size)
	if err != nil {
		return 0, fmt.Errorf("journal: read segment tail: %w", err)
	}
	if end == off {
		return off, nil // zero-filled rest: preallocated, or pages a crash lost
	}
	if limit := maxGroupWrite(rc.s.cfg); end-off > limit {
		corrupt.Reason += fmt.Sprintf(" (followed by %d bytes of data: more than one torn write could leave)", end-off)
		return 0, corrupt
	}
	// Read the rest of the file with the zeros after its last non-zero
	// byte (a frame may end in zeros), up to what one write and its
	// preallocation could span; tail is the part up to that last byte.
	whole := make([]byte, min(size, off+maxGroupWrite(rc.s.cfg)+zeroChunkMax)-off)
	if _, err := f.ReadAt(whole, off); err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("journal: read segment tail: %w", err)
	}
	tail := whole[:end-off]
	if off == rc.writeEnd {
		// The last write began here. If the page holding its start never
		// reached the disk, the bytes from here to the next page boundary
		// are still the zeros that were there; a torn write cannot leave
		// anything else there (it zeroes nothing, damages nothing).
		zero := func(b []byte) bool { return !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) }
		first := min(int64(len(tail)), tornPage-off%tornPage)
		// Or the group frame straddles that boundary and its part after
		// it is zeros: the page after the boundary was lost.
		straddles := first < groupFrameLen && int64(len(whole)) >= groupFrameLen && zero(whole[first:groupFrameLen])
		if zero(tail[:first]) || straddles {
			r, ok := rc.tornRest(whole[first:], end-off)
			if !ok {
				corrupt.Reason += " (a lost page, then frames of another write)"
				return 0, corrupt
			}
			rc.s.log.Warn("cutting off a torn last write whose first page was lost", "path", path,
				"offset", off, "bytes", end-off, "seqs", r.String())
			rc.cancel(r)
			rc.seen(r.End)
			return off, nil
		}
	}
	if validFrameAfter(whole) {
		corrupt.Reason += " (valid frames follow)"
		return 0, corrupt
	}
	switch {
	case errors.Is(cause, errFrameShort):
		return off, nil // the frame runs past the end of the file
	case len(tail) < frameHeaderLen:
		return off, nil // a partial frame header, then zeros
	case errors.Is(cause, errFrameCRC):
		// The length is sane (decodeFrame checks it first). A frame whose
		// checksum holds was written whole: its other faults (version,
		// type, layout) are never a torn write.
		if n := int64(binary.LittleEndian.Uint32(tail)); off+frameHeaderLen+n >= end {
			return off, nil // the last frame, only partly written
		}
	}
	return 0, corrupt
}

// tornPage is the unit a power failure keeps or loses (the page size of
// the file systems and devices this runs on; 4 KiB everywhere we know).
const tornPage = 4096

// tornRest reads what survived of a torn last write after its lost first
// page: the frames found there (followed from one to the next, so frames
// quoted inside payloads are skipped) must be of the kinds a group holds,
// with new seqs; their seqs are returned for cancelling (empty when only
// fragments survived). A group frame or fence commit means a later write:
// not a torn last write. Frames whose seqs lie beyond what span bytes
// could hold are payload bytes that merely look like frames.
func (rc *recovery) tornRest(rest []byte, span int64) (engine.Range, bool) {
	const minFrame = frameHeaderLen + eventFixedLen + 2 // one-byte entity and scope
	maxSeqs := uint64(span/minFrame) + 1
	r := engine.Range{Start: rc.maxEnd, End: rc.maxEnd}
	var fr decodedFrame
	for i := 0; i < len(rest); {
		if !frameAt(rest[i:], &fr) {
			i++
			continue
		}
		var lo, hi uint64
		switch fr.typ {
		case frameEvent:
			lo, hi = fr.rec.seq, fr.rec.seq+1
		case frameBatchBegin, frameBatchCommit:
			lo, hi = fr.a, fr.a+fr.b
		default: // group, fence commit
			lo, hi = fr.a, fr.b
		}
		if lo < rc.maxEnd || hi < lo || hi-rc.maxEnd > maxSeqs {
			i++ // not a frame of this write: bytes of a payload
			continue
		}
		if fr.typ == frameGroup || fr.typ == frameFenceCommit {
			return engine.Range{}, false
		}
		r.End = max(r.End, hi)
		i += fr.size
	}
	return r, true
}

// validFrameAfter reports whether a checksum-valid frame starts anywhere
// in rest after its first byte. rest is the remainder of the segment.
func validFrameAfter(rest []byte) bool {
	var fr decodedFrame
	for i := 1; i < len(rest); i++ {
		if frameAt(rest[i:], &fr) {
			return true
		}
	}
	return false
}

// frameAt reports whether a checksum-valid frame starts at b[0], decoding
// it into fr; the cheap checks (length, type, version) come first, so
// scanning data byte by byte stays fast.
func frameAt(b []byte, fr *decodedFrame) bool {
	if len(b) < frameHeaderLen+2 {
		return false
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n < 2 || n > len(b)-frameHeaderLen {
		return false
	}
	if t, v := b[frameHeaderLen], b[frameHeaderLen+1]; t < frameEvent || t > frameGroup || v != frameVersion {
		return false
	}
	return decodeFrame(b, fr) == nil
}

// nonZeroEnd returns one past the last non-zero byte of f in [from, to),
// or from when that span is all zeros. It reads backwards from to, so a
// preallocated tail costs one pass over its zeros.
func nonZeroEnd(f *os.File, from, to int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for hi := to; hi > from; {
		lo := max(from, hi-int64(len(buf)))
		b := buf[:hi-lo]
		if _, err := f.ReadAt(b, lo); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] != 0 {
				return lo + int64(i) + 1, nil
			}
		}
		hi = lo
	}
	return from, nil
}

func (rc *recovery) seen(end uint64) {
	if end > rc.maxEnd {
		rc.maxEnd = end
	}
}

// apply applies one checked frame at offset off of the current segment. It
// fails only for an event frame whose coordinate is invalid: its checksum
// holds, so it is damage no torn write explains.
func (rc *recovery) apply(fr *decodedFrame, off int64) error {
	s := rc.s
	switch fr.typ {
	case frameEvent:
		r := &fr.rec
		rc.seen(r.seq + 1)
		coord, err := s.ix.internCoordBytes(r.entity, r.scope)
		if err != nil {
			return fmt.Errorf("event frame of seq %d: invalid coordinate: %w", r.seq, err)
		}
		s.observeClock(s.ix.coords[coord].entity, r.clock, r.wallMs)
		pe := pendingEntry{seq: r.seq, meta: entryMeta{
			id: r.id, wallMs: r.wallMs, coord: coord, clock: r.clock,
			seg: rc.segNum, off: uint32(off) + uint32(fr.payloadOff), plen: uint32(len(r.payload)), kind: r.kind,
		}}
		if r.flags&eventFlagKeyed != 0 {
			pe.meta.flags |= metaKeyed
		}
		fenced := r.flags&eventFlagFenced != 0
		if fenced {
			pe.meta.flags |= metaFencedPending
		}
		if b := rc.batch; b != nil {
			if r.seq == b.first+uint64(len(b.entries)) && r.seq < b.first+b.count {
				b.entries = append(b.entries, pe)
				return nil
			}
			rc.cancel(engine.Range{Start: b.first, End: b.first + b.count}) // interrupted batch
			rc.batch = nil
		}
		if fenced {
			rc.fenced = append(rc.fenced, pe)
			return nil
		}
		rc.endFence()
		rc.commit(pe)
	case frameBatchBegin:
		if b := rc.batch; b != nil {
			rc.cancel(engine.Range{Start: b.first, End: b.first + b.count})
		}
		rc.seen(fr.a + fr.b)
		rc.batch = &openBatch{first: fr.a, count: fr.b, seg: rc.segNum, beginOff: off}
	case frameBatchCommit:
		b := rc.batch
		rc.batch = nil
		if b == nil || b.first != fr.a || b.count != fr.b || uint64(len(b.entries)) != b.count {
			if b != nil {
				rc.cancel(engine.Range{Start: b.first, End: b.first + b.count})
			}
			s.log.Warn("batch commit without its batch; ignored", "segment", rc.segNum, "offset", off)
			return nil
		}
		for _, pe := range b.entries {
			if pe.meta.flags&metaFencedPending != 0 {
				rc.fenced = append(rc.fenced, pe)
				continue
			}
			rc.endFence()
			rc.commit(pe)
		}
	case frameFenceCommit:
		keep := rc.fenced[:0]
		for _, pe := range rc.fenced {
			if pe.seq >= fr.a && pe.seq < fr.b {
				rc.commit(pe)
			} else {
				keep = append(keep, pe)
			}
		}
		rc.fenced = keep
	}
	return nil
}

// endFence closes the fence whose writes are pending: it is called when
// an unfenced event follows them (while a fence is active, only fenced
// appends are written, so that fence ended without a commit frame) and at
// the end of the journal. Writes already in a cancelled range (a fence
// cancelled while the writer ran) are dropped; the rest, an uncommitted
// fence cut off by a crash, become one cancelled range.
func (rc *recovery) endFence() {
	var lo, hi uint64
	any := false
	for _, pe := range rc.fenced {
		if rc.cancelled(pe.seq) {
			continue
		}
		if !any || pe.seq < lo {
			lo = pe.seq
		}
		if !any || pe.seq+1 > hi {
			hi = pe.seq + 1
		}
		any = true
	}
	if any {
		rc.cancel(engine.Range{Start: lo, End: hi})
	}
	rc.fenced = rc.fenced[:0]
}

// commit indexes one recovered entry unless its seq is cancelled.
func (rc *recovery) commit(pe pendingEntry) {
	if rc.cancelled(pe.seq) {
		return
	}
	s := rc.s
	pe.meta.flags &^= metaFencedPending
	s.ix.insert(pe.seq, pe.meta)
	rc.indexed++
	if pe.meta.flags&metaKeyed != 0 {
		s.keys[engine.IdempotencyKey(pe.meta.id)] = pe.seq
	}
}
