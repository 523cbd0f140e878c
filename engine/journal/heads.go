package journal

import "github.com/batfleet/batfleet/engine"

// Head is what a matcher needs of a visible entry: everything a region
// tests, without the payload.
type Head struct {
	Seq        uint64
	Coordinate engine.Coordinate
	Kind       engine.Kind
	Clock      uint32
}

// Heads appends to dst the heads of the visible entries with seqs in
// [from, to), in seq order, and returns dst with the bound it scanned up
// to: to, or the visible bound when that is lower. Cancelled sequences
// are skipped. The cost is proportional to the range scanned, so a
// caller that follows the visible bound (the fleet writer matching its
// held pulls after each group commit) pays for each entry once.
func (s *Store) Heads(dst []Head, from, to uint64) ([]Head, uint64) {
	visible, ranges := s.gate.snapshot()
	to = min(to, visible)
	if from >= to {
		return dst, max(from, to)
	}
	cancelled := engine.Intersecting(ranges, from, to)
	s.ix.mu.RLock()
	defer s.ix.mu.RUnlock()
	for seq := from; seq < to; seq++ {
		for len(cancelled) > 0 && cancelled[0].End <= seq {
			cancelled = cancelled[1:]
		}
		if len(cancelled) > 0 && cancelled[0].Contains(seq) {
			seq = cancelled[0].End - 1
			continue
		}
		m := s.ix.get(seq)
		if m == nil || m.flags&metaHidden != 0 {
			continue
		}
		dst = append(dst, Head{Seq: seq, Coordinate: s.ix.coords[m.coord].c, Kind: m.kind, Clock: m.clock})
	}
	return dst, to
}
