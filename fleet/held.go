package fleet

import (
	"container/heap"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet/internal/wire"
)

// Held pulls. A pull with wait_ms whose region has nothing
// after its position is not answered empty: the writer keeps it, as a
// record (never a goroutine), in an interest index, and answers it as
// soon as a group commit makes a matching entry visible, or empty when
// wait_ms expires. So an idle worker costs the writer nothing per append
// that does not concern it, and wakes with one round trip.
//
// The index files each held pull under the most selective part of its
// region: its entity prefix in a trie of ":"-separated segments; else its
// scope; else its exact kind; else its kind category; else its consumer
// group partition; else "every entry".
// For a newly visible entry the candidates are the pulls on the trie path
// of its entity, under its scope, its kind and its category, and the
// every-entry pulls, so matching a group commit costs time proportional to
// the held pulls that can match it, not to all of them.
//
// The lost-wakeup guard lives here: the matcher advances the bound it has
// matched up to (processed) under the index's lock, and a pull registered
// after an immediate poll that saw a lower visible bound first checks the
// entries in between itself. There is no window between "nothing yet" and
// "held".

// partitionFiled reports whether a pull of region r is filed under its
// partition (it names no entity, scope or kind to file it under).
func partitionFiled(r engine.Region) (engine.Partition, bool) {
	p, ok := r.Partition()
	_, hasE := r.EntityPrefix()
	_, hasS := r.Scope()
	mode := r.Kind().Mode()
	return p, ok && p.Count > 1 && !hasE && !hasS && mode != engine.KindFilterExact && mode != engine.KindFilterCategory
}

// heldPull is one held pull request.
type heldPull struct {
	req     micro.Request
	pull    wire.PullRequest
	expires time.Time
	at      int                    // index in the expiry heap
	set     map[*heldPull]struct{} // the index set it is filed in
}

// matches reports whether h's region selects head, after h's position.
func (h *heldPull) matches(head *journal.Head) bool {
	if h.pull.Started && head.Seq <= h.pull.Position {
		return false
	}
	return h.pull.Region.Matches(head.Coordinate.Entity(), head.Coordinate.Scope(), head.Kind, head.Clock)
}

type holdNode struct {
	children map[string]*holdNode
	pulls    map[*heldPull]struct{}
}

// holds is the interest index of a writer's held pulls.
type holds struct {
	mu        sync.Mutex
	n         int
	max       int
	closed    bool
	processed uint64 // visible bound up to which advances were matched
	trie      holdNode
	byScope   map[string]map[*heldPull]struct{}
	byKind    map[engine.Kind]map[*heldPull]struct{}
	byCat     map[uint16]map[*heldPull]struct{}
	byPart    map[engine.Partition]map[*heldPull]struct{}
	counts    map[uint16]int // partition counts filed in byPart, with their number of pulls
	all       map[*heldPull]struct{}
	expiry    expiryHeap
	kick      chan struct{} // an earlier expiry than the matcher waits for
}

func newHolds(max int, processed uint64) *holds {
	return &holds{
		max: max, processed: processed,
		byScope: map[string]map[*heldPull]struct{}{},
		byKind:  map[engine.Kind]map[*heldPull]struct{}{},
		byCat:   map[uint16]map[*heldPull]struct{}{},
		byPart:  map[engine.Partition]map[*heldPull]struct{}{},
		counts:  map[uint16]int{},
		all:     map[*heldPull]struct{}{},
		kick:    make(chan struct{}, 1),
	}
}

// setFor returns the set a pull of region r is filed in, creating it when
// create is set (nil otherwise when missing).
func (hs *holds) setFor(r engine.Region, create bool) map[*heldPull]struct{} {
	get := func(m map[*heldPull]struct{}, store func(map[*heldPull]struct{})) map[*heldPull]struct{} {
		if m == nil && create {
			m = map[*heldPull]struct{}{}
			store(m)
		}
		return m
	}
	if p, ok := r.EntityPrefix(); ok {
		node := &hs.trie
		for _, seg := range strings.Split(p, ":") {
			child := node.children[seg]
			if child == nil {
				if !create {
					return nil
				}
				if node.children == nil {
					node.children = map[string]*holdNode{}
				}
				child = &holdNode{}
				node.children[seg] = child
			}
			node = child
		}
		return get(node.pulls, func(m map[*heldPull]struct{}) { node.pulls = m })
	}
	if s, ok := r.Scope(); ok {
		return get(hs.byScope[s], func(m map[*heldPull]struct{}) { hs.byScope[s] = m })
	}
	switch f := r.Kind(); f.Mode() {
	case engine.KindFilterExact:
		return get(hs.byKind[f.Kind()], func(m map[*heldPull]struct{}) { hs.byKind[f.Kind()] = m })
	case engine.KindFilterCategory:
		return get(hs.byCat[f.Category()], func(m map[*heldPull]struct{}) { hs.byCat[f.Category()] = m })
	}
	if p, ok := r.Partition(); ok && p.Count > 1 {
		return get(hs.byPart[p], func(m map[*heldPull]struct{}) { hs.byPart[p] = m })
	}
	return hs.all
}

// add holds h, whose immediate poll found nothing below seen (its visible
// bound). It returns false when h must be answered now instead: the index
// is closed or full, or an entry that became visible since that poll, and
// was matched before h was filed, matches it (check reads those heads).
func (hs *holds) add(h *heldPull, seen uint64, check func(from, to uint64) bool) (held bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.closed || hs.n >= hs.max {
		return false
	}
	if seen < hs.processed && check(seen, hs.processed) {
		return false
	}
	h.set = hs.setFor(h.pull.Region, true)
	h.set[h] = struct{}{}
	if p, ok := partitionFiled(h.pull.Region); ok {
		hs.counts[p.Count]++
	}
	hs.n++
	heap.Push(&hs.expiry, h)
	if h.at == 0 {
		select {
		case hs.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// remove unfiles h. Caller holds mu.
func (hs *holds) remove(h *heldPull) {
	delete(h.set, h)
	if p, ok := partitionFiled(h.pull.Region); ok {
		if hs.counts[p.Count]--; hs.counts[p.Count] == 0 {
			delete(hs.counts, p.Count)
		}
	}
	heap.Remove(&hs.expiry, h.at)
	hs.n--
}

// advance matches what became visible since the last advance against the
// held pulls and removes and returns those it satisfies. visible is the
// visible bound read before the call; heads reads the entries of a range
// (journal.Store.Heads). With nothing held nothing is read: processed
// just moves to visible (a pull held later checks what it missed itself).
func (hs *holds) advance(visible uint64, heads func(from uint64) ([]journal.Head, uint64)) []*heldPull {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.n == 0 {
		hs.processed = max(hs.processed, visible)
		return nil
	}
	hds, upTo := heads(hs.processed)
	out := hs.match(hds)
	hs.processed = max(hs.processed, upTo)
	return out
}

// match removes and returns the held pulls heads satisfy. Caller holds mu.
func (hs *holds) match(heads []journal.Head) []*heldPull {
	var out []*heldPull
	take := func(set map[*heldPull]struct{}, head *journal.Head) {
		for h := range set {
			if h.matches(head) {
				hs.remove(h)
				out = append(out, h)
			}
		}
	}
	for i := range heads {
		if hs.n == 0 {
			break
		}
		head := &heads[i]
		node := &hs.trie
		for _, seg := range strings.Split(head.Coordinate.Entity(), ":") {
			if node = node.children[seg]; node == nil {
				break
			}
			take(node.pulls, head)
		}
		take(hs.byScope[head.Coordinate.Scope()], head)
		take(hs.byKind[head.Kind], head)
		take(hs.byCat[head.Kind.Category()], head)
		if len(hs.counts) > 0 {
			b := engine.Bucket(head.Coordinate.Entity())
			for c := range hs.counts {
				take(hs.byPart[engine.Partition{Index: b / (engine.Buckets / c), Count: c}], head)
			}
		}
		take(hs.all, head)
	}
	return out
}

// expired removes and returns the held pulls due at now, and the time of
// the next expiry (zero when none).
func (hs *holds) expired(now time.Time) ([]*heldPull, time.Time) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	var out []*heldPull
	for len(hs.expiry) > 0 && !hs.expiry[0].expires.After(now) {
		h := hs.expiry[0]
		hs.remove(h)
		out = append(out, h)
	}
	if len(hs.expiry) == 0 {
		return out, time.Time{}
	}
	return out, hs.expiry[0].expires
}

// count returns how many pulls are held.
func (hs *holds) count() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.n
}

// close refuses further holds and returns every held pull.
func (hs *holds) close() []*heldPull {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.closed = true
	out := make([]*heldPull, 0, len(hs.expiry))
	for len(hs.expiry) > 0 {
		h := hs.expiry[0]
		hs.remove(h)
		out = append(out, h)
	}
	return out
}

// expiryHeap orders held pulls by expiry, earliest first.
type expiryHeap []*heldPull

func (e expiryHeap) Len() int           { return len(e) }
func (e expiryHeap) Less(i, j int) bool { return e[i].expires.Before(e[j].expires) }
func (e expiryHeap) Swap(i, j int) {
	e[i], e[j] = e[j], e[i]
	e[i].at, e[j].at = i, j
}
func (e *expiryHeap) Push(x any) {
	h := x.(*heldPull)
	h.at = len(*e)
	*e = append(*e, h)
}
func (e *expiryHeap) Pop() any {
	old := *e
	h := old[len(old)-1]
	old[len(old)-1] = nil
	*e = old[:len(old)-1]
	return h
}
