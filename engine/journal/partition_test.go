package journal

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/batfleet/batfleet/engine"
)

// Catalogue: GRP-01 (the journal's half): a partition pull returns
// exactly the region's entries whose entity is in the partition's
// buckets, in order, whichever other parts the region has, across
// cancelled ranges; the partitions of a count cover every entry once.
func TestGRP01_PartitionPulls(t *testing.T) {
	s := openTestStore(t, Config{})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		e := fmt.Sprintf("acct:%d", rng.IntN(400))
		if i%7 == 0 {
			e = fmt.Sprintf("user:%d:%d", rng.IntN(50), rng.IntN(3))
		}
		ev := engine.Event{Coordinate: engine.MustCoordinate(e, []string{"a", "b"}[rng.IntN(2)]), Kind: engine.Kind(0x1000 | uint16(rng.IntN(3))), Payload: []byte{byte(i)}}
		if _, err := s.Append(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		if i == 1500 { // a cancelled range in the middle
			curCancelledFence(t, s, []engine.Event{ev, ev})
		}
	}
	all := pollAll(t, s, engine.RegionAll())
	for _, base := range []engine.Region{
		engine.RegionAll(), engine.RegionScope("a"), engine.RegionAll().WithExact(0x1001),
		engine.RegionAll().WithCategory(1), engine.RegionEntity("user"), engine.RegionEntity("acct:7"),
	} {
		for _, count := range []uint16{1, 2, 16, 1024} {
			covered := map[uint64]int{}
			for i := range count {
				p := engine.Partition{Index: i, Count: count}
				r := base.WithPartition(p)
				var want []uint64
				for _, e := range all {
					if base.Matches(e.Coordinate.Entity(), e.Coordinate.Scope(), e.Kind, e.Clock) && p.Holds(engine.Bucket(e.Coordinate.Entity())) {
						want = append(want, e.Seq)
					}
				}
				got := seqsOf(pollAll(t, s, r))
				if !slices.Equal(got, want) {
					t.Fatalf("%s: %d entries %v…, want %d %v…", r.Identity(), len(got), head(got), len(want), head(want))
				}
				for _, seq := range got {
					covered[seq]++
				}
			}
			for _, e := range all {
				if base.Matches(e.Coordinate.Entity(), e.Coordinate.Scope(), e.Kind, e.Clock) && covered[e.Seq] != 1 {
					t.Fatalf("%s over %d partitions: seq %d in %d partitions", base.Identity(), count, e.Seq, covered[e.Seq])
				}
			}
		}
	}
}

func head(s []uint64) []uint64 { return s[:min(len(s), 8)] }
