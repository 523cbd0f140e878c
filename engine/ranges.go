package engine

import (
	"fmt"
	"sort"
)

// Range is a half-open sequence range [Start, End).
type Range struct {
	Start uint64 `msgpack:"start"`
	End   uint64 `msgpack:"end"`
}

// Contains reports whether seq lies in r.
func (r Range) Contains(seq uint64) bool { return seq >= r.Start && seq < r.End }

func (r Range) String() string { return fmt.Sprintf("[%d, %d)", r.Start, r.End) }

// NormalizeRanges validates, sorts and merges ranges: start >= end is
// ErrRangeMalformed; ranges that overlap or touch (next.Start <= cur.End)
// merge. The input is not modified.
func NormalizeRanges(in []Range) ([]Range, error) {
	for _, r := range in {
		if r.Start >= r.End {
			return nil, &RangeError{Start: r.Start, End: r.End}
		}
	}
	if len(in) == 0 {
		return nil, nil
	}
	out := append([]Range(nil), in...)
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	merged := out[:1]
	for _, r := range out[1:] {
		last := &merged[len(merged)-1]
		if r.Start <= last.End {
			if r.End > last.End {
				last.End = r.End
			}
			continue
		}
		merged = append(merged, r)
	}
	return merged, nil
}

// Intersecting returns the ranges of the normalised list rs that intersect
// [lo, hi). The result aliases rs.
func Intersecting(rs []Range, lo, hi uint64) []Range {
	if lo >= hi {
		return nil
	}
	i := sort.Search(len(rs), func(i int) bool { return rs[i].End > lo })
	j := i
	for j < len(rs) && rs[j].Start < hi {
		j++
	}
	return rs[i:j]
}
