package journal

import (
	"math/rand/v2"
	"sort"
	"testing"
)

// The blocked posting list must behave exactly like a sorted slice:
// at, len and search agree with it around every block boundary.
func TestPostings_MatchesSortedSlice(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	var p postings
	var want []uint64
	seq := uint64(0)
	for _, n := range []int{0, 1, 3, 4, 5, postingBlock - 1, postingBlock, postingBlock + 1, 3*postingBlock + 17} {
		for len(want) < n {
			seq += 1 + uint64(rng.IntN(5))
			p.add(seq)
			want = append(want, seq)
		}
		if p.len() != len(want) {
			t.Fatalf("len %d, want %d", p.len(), len(want))
		}
		for i, w := range want {
			if got := p.at(i); got != w {
				t.Fatalf("n=%d: at(%d) = %d, want %d", n, i, got, w)
			}
		}
		for from := uint64(0); from <= seq+1; from += 1 + uint64(rng.IntN(3)) {
			wi := sort.Search(len(want), func(i int) bool { return want[i] >= from })
			if got := p.search(from); got != wi {
				t.Fatalf("n=%d: search(%d) = %d, want %d", n, from, got, wi)
			}
		}
	}
	for i, b := range p.blocks[:len(p.blocks)-1] {
		if len(b) != postingBlock {
			t.Fatalf("block %d holds %d seqs, want %d (only the last may be partial)", i, len(b), postingBlock)
		}
	}
}

// Appending to a long list never copies it: a full block is never
// reallocated.
func TestPostings_AppendDoesNotCopyFullBlocks(t *testing.T) {
	var p postings
	for i := range postingBlock + 1 {
		p.add(uint64(i))
	}
	first := &p.blocks[0][0]
	for i := range 5 * postingBlock {
		p.add(uint64(postingBlock + 1 + i))
	}
	if &p.blocks[0][0] != first {
		t.Fatal("the first (full) block was reallocated by later appends")
	}
}
