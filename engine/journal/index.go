package journal

import (
	"sort"
	"strings"
	"sync"

	"github.com/batfleet/batfleet/engine"
)

// The index maps sequences to small fixed-size metadata records and keeps
// sequence-ordered postings so a region query touches only candidates:
//
//   - entries: a seq-addressed chunked array of entryMeta (48 bytes each);
//   - an entity trie keyed by ":"-separated segments, whose every node keeps
//     the postings of all entities at or below it, so an entity-prefix
//     region is one posting list;
//   - postings per scope and per exact kind.
//
// Coordinates are interned: an entry refers to its coordinate by a 32-bit
// id. Payloads stay in the segment files.

const (
	chunkShift = 16
	chunkSize  = 1 << chunkShift

	metaPresent = 1 << 0
	metaKeyed   = 1 << 1
	metaHidden  = 1 << 2 // staged in a fence that was cancelled
	// metaFencedPending marks a recovered fenced entry awaiting its fence
	// commit; it never reaches the index.
	metaFencedPending = 1 << 3
)

type entryMeta struct {
	id     [16]byte
	wallMs int64
	coord  uint32
	clock  uint32
	seg    uint32
	off    uint32 // payload offset in the segment file
	plen   uint32
	kind   engine.Kind
	flags  uint8
}

type coordInfo struct {
	entity uint32
	scope  uint32
	c      engine.Coordinate
}

type entityInfo struct {
	name   string
	chain  []*trieNode // the trie nodes from the top segment down to this entity
	bucket uint16      // engine.Bucket(name)
}

type trieNode struct {
	children map[string]*trieNode
	postings postings
}

type scopeInfo struct {
	name     string
	postings postings
}

type index struct {
	mu sync.RWMutex

	chunks [][]entryMeta
	count  int // present entries (hidden included)

	coords   []coordInfo
	coordIDs map[[2]uint32]uint32

	entities  []entityInfo
	entityIDs map[string]uint32
	root      trieNode

	scopes   []scopeInfo
	scopeIDs map[string]uint32

	kinds map[engine.Kind]*postings

	// buckets are the postings of each entity bucket, so that a consumer
	// group's partition pull merges only the lists of its buckets.
	buckets [engine.Buckets]postings
}

func newIndex() *index {
	return &index{
		coordIDs:  make(map[[2]uint32]uint32),
		entityIDs: make(map[string]uint32),
		scopeIDs:  make(map[string]uint32),
		kinds:     make(map[engine.Kind]*postings),
	}
}

// internCoord returns the id of coordinate c, interning its entity, its
// scope and the pair as needed. Caller holds mu for writing (or is
// recovery, before the store is shared).
func (ix *index) internCoord(c engine.Coordinate) uint32 {
	e, ok := ix.entityIDs[c.Entity()]
	if !ok {
		e = ix.newEntity(c.Entity())
	}
	sc, ok := ix.scopeIDs[c.Scope()]
	if !ok {
		sc = ix.newScope(c.Scope())
	}
	key := [2]uint32{e, sc}
	if id, ok := ix.coordIDs[key]; ok {
		return id
	}
	return ix.addCoord(key, c)
}

// internCoordBytes is internCoord for the entity and scope of a frame read
// back from disk; it allocates only for names seen for the first time, and
// fails when a new pair is not a valid coordinate (a frame no append could
// have written).
func (ix *index) internCoordBytes(entity, scope []byte) (uint32, error) {
	e, ok := ix.entityIDs[string(entity)]
	if !ok {
		e = ix.newEntity(string(entity))
	}
	sc, ok := ix.scopeIDs[string(scope)]
	if !ok {
		sc = ix.newScope(string(scope))
	}
	key := [2]uint32{e, sc}
	if id, ok := ix.coordIDs[key]; ok {
		return id, nil
	}
	c, err := engine.NewCoordinate(ix.entities[e].name, ix.scopes[sc].name)
	if err != nil {
		return 0, err
	}
	return ix.addCoord(key, c), nil
}

func (ix *index) newEntity(s string) uint32 {
	id := uint32(len(ix.entities))
	node := &ix.root
	var chain []*trieNode
	for rest := s; ; {
		seg, tail, more := strings.Cut(rest, ":")
		if node.children == nil {
			node.children = make(map[string]*trieNode)
		}
		child := node.children[seg]
		if child == nil {
			child = &trieNode{}
			node.children[seg] = child
		}
		chain = append(chain, child)
		node = child
		if !more {
			break
		}
		rest = tail
	}
	ix.entities = append(ix.entities, entityInfo{name: s, chain: chain, bucket: engine.Bucket(s)})
	ix.entityIDs[s] = id
	return id
}

func (ix *index) newScope(s string) uint32 {
	id := uint32(len(ix.scopes))
	ix.scopes = append(ix.scopes, scopeInfo{name: s})
	ix.scopeIDs[s] = id
	return id
}

func (ix *index) addCoord(key [2]uint32, c engine.Coordinate) uint32 {
	id := uint32(len(ix.coords))
	ix.coords = append(ix.coords, coordInfo{entity: key[0], scope: key[1], c: c})
	ix.coordIDs[key] = id
	return id
}

// slot returns the metadata slot for seq, growing the array as needed.
func (ix *index) slot(seq uint64) *entryMeta {
	ci := int(seq >> chunkShift)
	for len(ix.chunks) <= ci {
		ix.chunks = append(ix.chunks, make([]entryMeta, chunkSize))
	}
	return &ix.chunks[ci][seq&(chunkSize-1)]
}

// get returns the metadata of seq, or nil if nothing is indexed there.
func (ix *index) get(seq uint64) *entryMeta {
	ci := int(seq >> chunkShift)
	if ci >= len(ix.chunks) {
		return nil
	}
	m := &ix.chunks[ci][seq&(chunkSize-1)]
	if m.flags&metaPresent == 0 {
		return nil
	}
	return m
}

// insert indexes one entry. Sequences must be inserted in ascending order.
// Caller holds mu for writing (or is recovery).
func (ix *index) insert(seq uint64, m entryMeta) {
	m.flags |= metaPresent
	*ix.slot(seq) = m
	ix.count++
	ci := ix.coords[m.coord]
	for _, n := range ix.entities[ci.entity].chain {
		n.postings.add(seq)
	}
	ix.scopes[ci.scope].postings.add(seq)
	ix.buckets[ix.entities[ci.entity].bucket].add(seq)
	kl := ix.kinds[m.kind]
	if kl == nil {
		kl = &postings{}
		ix.kinds[m.kind] = kl
	}
	kl.add(seq)
}

// hide marks the entries of r as hidden (a cancelled fence's staged writes).
func (ix *index) hide(r engine.Range) {
	for s := r.Start; s < r.End; s++ {
		if m := ix.get(s); m != nil {
			m.flags |= metaHidden
		}
	}
}

// entityNode returns the trie node for an entity prefix, or nil.
func (ix *index) entityNode(prefix string) *trieNode {
	node := &ix.root
	for rest := prefix; ; {
		seg, tail, more := strings.Cut(rest, ":")
		node = node.children[seg]
		if node == nil {
			return nil
		}
		if !more {
			return node
		}
		rest = tail
	}
}

// byteLimit bounds a query by the size of what it returns: each entry
// costs its payload, entity and scope plus perEntry; the first entry is
// always returned. budget 0 means no bound.
type byteLimit struct {
	budget   int
	perEntry int
}

// hit is one query result: a sequence and a copy of its metadata.
type hit struct {
	seq  uint64
	meta entryMeta
}

// query appends to out up to max entries of region r with seq >= from and
// seq < visible, skipping cancelled seqs and hidden entries. Caller holds
// mu for reading. The cost is proportional to the candidates examined: the
// shortest posting list among the region's entity prefix, scope and kind
// (exact, or the merged lists of a category's kinds), or the sequence array
// when the region names none of them (a clock range alone, or nothing).
func (ix *index) query(r *engine.Region, from, visible uint64, cancelled []engine.Range, max int, lim byteLimit, out []hit) []hit {
	if max <= 0 || from >= visible {
		return out
	}
	var list *postings
	pick := func(l *postings) {
		if list == nil || l.len() < list.len() {
			list = l
		}
	}
	if p, ok := r.EntityPrefix(); ok {
		n := ix.entityNode(p)
		if n == nil {
			return out
		}
		pick(&n.postings)
	}
	if s, ok := r.Scope(); ok {
		id, found := ix.scopeIDs[s]
		if !found {
			return out
		}
		pick(&ix.scopes[id].postings)
	}
	if kf := r.Kind(); kf.Mode() == engine.KindFilterExact {
		l, found := ix.kinds[kf.Kind()]
		if !found {
			return out
		}
		pick(l)
	}
	// A category has no list of its own: merge the lists of its kinds,
	// unless a shorter list was picked above.
	var merge []*postings
	if kf := r.Kind(); kf.Mode() == engine.KindFilterCategory {
		total := 0
		for k, l := range ix.kinds {
			if k.Category() == kf.Category() {
				merge = append(merge, l)
				total += l.len()
			}
		}
		if total == 0 {
			return out
		}
		if list != nil && list.len() <= total {
			merge = nil
		} else if len(merge) == 1 {
			pick(merge[0])
			merge = nil
		}
	}

	// A partition has the lists of its buckets: merge them, unless a
	// shorter list was picked above (a partition of every bucket filters
	// nothing).
	if p, ok := r.Partition(); ok && p.Count > 1 && merge == nil {
		lo, hi := p.Buckets()
		total := 0
		for b := lo; b < hi; b++ {
			total += ix.buckets[b].len()
		}
		if total == 0 {
			return out
		}
		if list == nil || total < list.len() {
			list = nil
			for b := lo; b < hi; b++ {
				if ix.buckets[b].len() > 0 {
					merge = append(merge, &ix.buckets[b])
				}
			}
			if len(merge) == 1 {
				list, merge = merge[0], nil
			}
		}
	}

	ri := sort.Search(len(cancelled), func(i int) bool { return cancelled[i].End > from })
	cost := 0
	full := false
	accept := func(seq uint64) bool {
		for ri < len(cancelled) && cancelled[ri].End <= seq {
			ri++
		}
		if ri < len(cancelled) && cancelled[ri].Start <= seq {
			return false
		}
		m := ix.get(seq)
		if m == nil || m.flags&metaHidden != 0 {
			return false
		}
		ci := &ix.coords[m.coord]
		ent := &ix.entities[ci.entity]
		entity, scope := ent.name, ix.scopes[ci.scope].name
		if !r.MatchesBucket(entity, ent.bucket, scope, m.kind, m.clock) {
			return false
		}
		if lim.budget > 0 {
			c := int(m.plen) + len(entity) + len(scope) + lim.perEntry
			if len(out) > 0 && cost+c > lim.budget {
				full = true
				return false
			}
			cost += c
		}
		out = append(out, hit{seq: seq, meta: *m})
		return true
	}

	n := 0
	if merge != nil {
		// k-way merge by a min-heap of the lists' heads: a category's kind
		// lists, or a partition's bucket lists (up to 1,024/P of them).
		m := newMergeHeap(merge, from)
		for n < max && !full {
			seq, ok := m.next()
			if !ok || seq >= visible {
				break
			}
			if accept(seq) {
				n++
			}
		}
		return out
	}
	if list != nil {
		for i := list.search(from); i < list.len() && n < max && !full; i++ {
			seq := list.at(i)
			if seq >= visible {
				break
			}
			if accept(seq) {
				n++
			}
		}
		return out
	}
	for seq := from; seq < visible && n < max && !full; seq++ {
		for ri < len(cancelled) && cancelled[ri].End <= seq {
			ri++
		}
		if ri < len(cancelled) && cancelled[ri].Start <= seq {
			seq = cancelled[ri].End - 1 // jump over the cancelled range
			continue
		}
		if accept(seq) {
			n++
		}
	}
	return out
}

// mergeHeap yields the union of sorted posting lists in ascending order.
// Each heap slot caches the value at its list's head, so a step compares
// plain numbers.
type mergeHeap struct {
	lists []*postings
	heap  []mergeHead
}

type mergeHead struct {
	val  uint64 // lists[list].at(at)
	list int32
	at   int32
}

func newMergeHeap(lists []*postings, from uint64) *mergeHeap {
	m := &mergeHeap{lists: lists, heap: make([]mergeHead, 0, len(lists))}
	for j, l := range lists {
		if i := l.search(from); i < l.len() {
			m.heap = append(m.heap, mergeHead{val: l.at(i), list: int32(j), at: int32(i)})
		}
	}
	for i := len(m.heap)/2 - 1; i >= 0; i-- {
		m.down(i)
	}
	return m
}

func (m *mergeHeap) down(i int) {
	h := m.heap
	for {
		l, small := 2*i+1, i
		if l < len(h) && h[l].val < h[small].val {
			small = l
		}
		if r := l + 1; r < len(h) && h[r].val < h[small].val {
			small = r
		}
		if small == i {
			return
		}
		h[i], h[small] = h[small], h[i]
		i = small
	}
}

// next returns the smallest remaining seq.
func (m *mergeHeap) next() (uint64, bool) {
	if len(m.heap) == 0 {
		return 0, false
	}
	top := &m.heap[0]
	seq := top.val
	l := m.lists[top.list]
	if top.at++; int(top.at) < l.len() {
		top.val = l.at(int(top.at))
	} else {
		last := len(m.heap) - 1
		m.heap[0] = m.heap[last]
		m.heap = m.heap[:last]
	}
	if len(m.heap) > 0 {
		m.down(0)
	}
	return seq, true
}
