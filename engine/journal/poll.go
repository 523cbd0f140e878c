package journal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/batfleet/batfleet/engine"
)

// Poll returns up to max visible entries of region after position (or
// from the beginning when started is false), ascending by seq, with the
// epoch read before the query, the visible bound and the cancelled ranges
// intersecting the scanned interval: [expected, last returned seq] or,
// with no entries, [expected, visible), where expected is position+1 if
// started, else 0. A pull changes no store state. Any payload that cannot
// be read fails the whole poll with ErrEntryUnreadable.
func (s *Store) Poll(ctx context.Context, region engine.Region, position uint64, started bool, max int) (engine.PollResult, error) {
	return s.poll(ctx, region, position, started, max, byteLimit{})
}

// PollWithin is Poll that also stops before the returned entries' size
// passes maxBytes, counting each entry as its payload, entity and scope
// plus perEntry bytes; it always returns the first match. The fleet writer
// uses it to fit replies under the NATS max payload. maxBytes 0 means no
// bound.
func (s *Store) PollWithin(ctx context.Context, region engine.Region, position uint64, started bool, max, maxBytes, perEntry int) (engine.PollResult, error) {
	return s.poll(ctx, region, position, started, max, byteLimit{budget: maxBytes, perEntry: perEntry})
}

func (s *Store) poll(ctx context.Context, region engine.Region, position uint64, started bool, max int, lim byteLimit) (engine.PollResult, error) {
	if err := region.Validate(); err != nil {
		return engine.PollResult{}, err
	}
	if s.closing.Load() {
		return engine.PollResult{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return engine.PollResult{}, err
	}
	res := engine.PollResult{Snapshot: s.Latest()}
	visible, ranges := s.gate.snapshot()
	res.Visible = visible
	expected := uint64(0)
	if started {
		expected = position + 1
		if position == ^uint64(0) {
			return res, nil
		}
	}
	if max <= 0 {
		return res, nil
	}

	s.ix.mu.RLock()
	hits := s.ix.query(&region, expected, visible, ranges, max, lim, make([]hit, 0, min(max, 1024)))
	coords := make([]engine.Coordinate, len(hits))
	for i := range hits {
		coords[i] = s.ix.coords[hits[i].meta.coord].c
	}
	segs := s.segs
	s.ix.mu.RUnlock()

	end := visible
	if len(hits) > 0 {
		end = hits[len(hits)-1].seq + 1
	}
	if rs := engine.Intersecting(ranges, expected, end); len(rs) > 0 {
		res.Cancelled = append([]engine.Range(nil), rs...)
	}
	if len(hits) == 0 {
		return res, nil
	}
	entries, err := s.materialise(hits, coords, segs)
	if err != nil {
		return engine.PollResult{}, err
	}
	res.Entries = entries
	return res, nil
}

// materialise copies the payloads of hits out of the segment mappings
// (reading the files where a range is not mapped) into one buffer.
func (s *Store) materialise(hits []hit, coords []engine.Coordinate, segs []*os.File) ([]engine.Entry, error) {
	total := 0
	for i := range hits {
		total += int(hits[i].meta.plen)
	}
	buf := make([]byte, total)
	entries := make([]engine.Entry, len(hits))
	o := 0
	for i := range hits {
		h := &hits[i]
		m := &h.meta
		dst := buf[o : o+int(m.plen) : o+int(m.plen)]
		o += int(m.plen)
		if err := s.readPayload(segs, h.seq, m.seg, int64(m.off), dst); err != nil {
			return nil, err
		}
		entries[i] = engine.Entry{
			Seq: h.seq, ID: m.id, Kind: m.kind, Coordinate: coords[i],
			Clock: m.clock, WallMs: m.wallMs, Payload: dst,
		}
	}
	return entries, nil
}

func (s *Store) readPayload(segs []*os.File, seq uint64, seg uint32, off int64, dst []byte) error {
	if s.cfg.faults != nil && s.cfg.faults.readPayload != nil {
		if err := s.cfg.faults.readPayload(seq); err != nil {
			return &EntryUnreadableError{Seq: seq, Cause: err}
		}
	}
	if len(dst) == 0 {
		return nil
	}
	ok, err := s.maps.copyOut(seg, off, dst)
	if err != nil {
		return &EntryUnreadableError{Seq: seq, Cause: err}
	}
	if ok {
		return nil
	}
	if int(seg) >= len(segs) {
		return &EntryUnreadableError{Seq: seq, Cause: fmt.Errorf("segment %d not open", seg)}
	}
	n, err := segs[seg].ReadAt(dst, off)
	if n == len(dst) {
		return nil
	}
	if errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return &EntryUnreadableError{Seq: seq, Cause: err}
}
