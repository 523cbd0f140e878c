package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// PollResult is one answer of the pull primitive (SPEC §6.2).
type PollResult struct {
	Entries   []Entry  // ascending by seq
	Snapshot  Snapshot // read before the query: the snapshot to park on
	Visible   uint64   // the visible bound of the snapshot the query used
	Cancelled []Range  // cancelled ranges intersecting the scanned interval
}

// maxCoalesceGap is the largest hole between two payloads that one read
// still spans: reading a little extra beats another system call.
const maxCoalesceGap = 1024

// Poll returns up to max visible entries of region after position (or
// from the beginning when started is false), ascending by seq, with the
// epoch read before the query, the visible bound and the cancelled ranges
// intersecting the scanned interval: [expected, last returned seq] or,
// with no entries, [expected, visible), where expected is position+1 if
// started, else 0. A pull changes no store state. Any payload that cannot
// be read fails the whole poll with ErrEntryUnreadable.
func (s *Store) Poll(ctx context.Context, region Region, position uint64, started bool, max int) (PollResult, error) {
	return s.poll(ctx, region, position, started, max, byteLimit{})
}

// PollWithin is Poll that also stops before the returned entries' size
// passes maxBytes, counting each entry as its payload, entity and scope
// plus perEntry bytes; it always returns the first match. The fleet writer
// uses it to fit replies under the NATS max payload. maxBytes 0 means no
// bound.
func (s *Store) PollWithin(ctx context.Context, region Region, position uint64, started bool, max, maxBytes, perEntry int) (PollResult, error) {
	return s.poll(ctx, region, position, started, max, byteLimit{budget: maxBytes, perEntry: perEntry})
}

func (s *Store) poll(ctx context.Context, region Region, position uint64, started bool, max int, lim byteLimit) (PollResult, error) {
	if err := region.Validate(); err != nil {
		return PollResult{}, err
	}
	if s.closing.Load() {
		return PollResult{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return PollResult{}, err
	}
	res := PollResult{Snapshot: s.Latest()}
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
	coords := make([]Coordinate, len(hits))
	for i := range hits {
		coords[i] = s.ix.coords[hits[i].meta.coord].c
	}
	segs := s.segs
	s.ix.mu.RUnlock()

	end := visible
	if len(hits) > 0 {
		end = hits[len(hits)-1].seq + 1
	}
	if rs := intersecting(ranges, expected, end); len(rs) > 0 {
		res.Cancelled = append([]Range(nil), rs...)
	}
	if len(hits) == 0 {
		return res, nil
	}
	entries, err := s.materialise(hits, coords, segs)
	if err != nil {
		return PollResult{}, err
	}
	res.Entries = entries
	return res, nil
}

// materialise reads the payloads of hits, coalescing nearby payloads of
// one segment into one read.
func (s *Store) materialise(hits []hit, coords []Coordinate, segs []*os.File) ([]Entry, error) {
	entries := make([]Entry, len(hits))
	for i := 0; i < len(hits); {
		seg := hits[i].meta.seg
		start := int64(hits[i].meta.off)
		end := start + int64(hits[i].meta.plen)
		j := i + 1
		for j < len(hits) && hits[j].meta.seg == seg {
			off := int64(hits[j].meta.off)
			if off < end || off-end > maxCoalesceGap || off+int64(hits[j].meta.plen)-start > 4<<20 {
				break
			}
			end = off + int64(hits[j].meta.plen)
			j++
		}
		span := make([]byte, end-start)
		if err := s.readSpan(segs, seg, span, start, hits[i:j]); err != nil {
			return nil, err
		}
		for k := i; k < j; k++ {
			m := &hits[k].meta
			rel := int64(m.off) - start
			entries[k] = Entry{
				Seq: hits[k].seq, ID: m.id, Kind: m.kind, Coordinate: coords[k],
				Clock: m.clock, WallMs: m.wallMs, Payload: span[rel : rel+int64(m.plen) : rel+int64(m.plen)],
			}
		}
		i = j
	}
	return entries, nil
}

func (s *Store) readSpan(segs []*os.File, seg uint32, span []byte, off int64, hits []hit) error {
	if s.cfg.faults != nil && s.cfg.faults.readPayload != nil {
		for _, h := range hits {
			if err := s.cfg.faults.readPayload(h.seq); err != nil {
				return &EntryUnreadableError{Seq: h.seq, Cause: err}
			}
		}
	}
	if int(seg) >= len(segs) {
		return &EntryUnreadableError{Seq: hits[0].seq, Cause: fmt.Errorf("segment %d not open", seg)}
	}
	n, err := segs[seg].ReadAt(span, off)
	if n == len(span) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	if errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	// Report the first entry the short read cut into.
	for _, h := range hits {
		if int64(h.meta.off)+int64(h.meta.plen)-off > int64(n) {
			return &EntryUnreadableError{Seq: h.seq, Cause: err}
		}
	}
	return &EntryUnreadableError{Seq: hits[0].seq, Cause: err}
}
