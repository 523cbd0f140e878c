package journal

import (
	"context"

	"github.com/batfleet/batfleet/engine"
)

// CountResult is what Count found: the visible entries of a region after
// a position, counted from the index without reading a payload.
type CountResult struct {
	// Count is the number of matching visible entries after the position.
	Count uint64
	// OldestWallMs is the wall time of the first of them (0 when Count
	// is 0): how long the oldest unhandled entry has waited.
	OldestWallMs int64
	// Visible is the visible bound the count ran up to.
	Visible uint64
	// Snapshot is the epoch read before counting.
	Snapshot engine.Snapshot
}

// countChunk is how many matches Count takes from the index per hold of
// its read lock, so that a long count does not stall the committer.
const countChunk = 4096

// Count counts the visible entries of region after position (from the
// beginning when started is false), skipping cancelled and hidden ones,
// exactly as Poll would deliver them, but from the index alone: no
// payload is read and nothing is copied, so counting a lag of millions
// costs what scanning the region's postings costs. ctx is checked between
// chunks of 4,096 matches.
func (s *Store) Count(ctx context.Context, region engine.Region, position uint64, started bool) (CountResult, error) {
	if err := region.Validate(); err != nil {
		return CountResult{}, err
	}
	if s.closing.Load() {
		return CountResult{}, ErrClosed
	}
	res := CountResult{Snapshot: s.Latest()}
	visible, ranges := s.gate.snapshot()
	res.Visible = visible
	from := uint64(0)
	if started {
		if position == ^uint64(0) {
			return res, nil
		}
		from = position + 1
	}
	hits := make([]hit, 0, countChunk)
	for from < visible {
		if err := ctx.Err(); err != nil {
			return CountResult{}, err
		}
		s.ix.mu.RLock()
		hits = s.ix.query(&region, from, visible, ranges, countChunk, byteLimit{}, hits[:0])
		s.ix.mu.RUnlock()
		if len(hits) == 0 {
			break
		}
		if res.Count == 0 {
			res.OldestWallMs = hits[0].meta.wallMs
		}
		res.Count += uint64(len(hits))
		if len(hits) < countChunk {
			break
		}
		from = hits[len(hits)-1].seq + 1
	}
	return res, nil
}
