package journal

import "sort"

// postings is a sequence-ordered posting list kept in fixed-size blocks,
// so appending never copies the list: a slice that doubles would copy
// megabytes on the committer's path once a list is long, stalling a group.
// The first block grows by doubling (most lists are short); once it holds
// postingBlock seqs, every further block is allocated at full size.
type postings struct {
	blocks [][]uint64 // every block but the last holds exactly postingBlock seqs
	n      int
}

const (
	postingShift = 12
	postingBlock = 1 << postingShift
)

func (p *postings) add(seq uint64) {
	nb := len(p.blocks)
	if nb == 0 || len(p.blocks[nb-1]) == postingBlock {
		size := postingBlock
		if nb == 0 {
			size = 4
		}
		p.blocks = append(p.blocks, make([]uint64, 0, size))
		nb++
	}
	last := p.blocks[nb-1]
	if len(last) == cap(last) {
		grown := make([]uint64, len(last), min(2*cap(last), postingBlock))
		copy(grown, last)
		last = grown
	}
	p.blocks[nb-1] = append(last, seq)
	p.n++
}

func (p *postings) len() int { return p.n }

func (p *postings) at(i int) uint64 { return p.blocks[i>>postingShift][i&(postingBlock-1)] }

// search returns the index of the first seq >= from, or len() if none.
func (p *postings) search(from uint64) int {
	b := sort.Search(len(p.blocks), func(i int) bool {
		blk := p.blocks[i]
		return blk[len(blk)-1] >= from
	})
	if b == len(p.blocks) {
		return p.n
	}
	blk := p.blocks[b]
	return b<<postingShift + sort.Search(len(blk), func(i int) bool { return blk[i] >= from })
}
