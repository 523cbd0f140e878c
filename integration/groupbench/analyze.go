package main

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// batch is one handler call, as a member logged it.
type batch struct {
	proc       int // index of the member process (its log file)
	start, end int64
	epoch      uint64
	idx        []uint64
}

// readLogs parses every member's batch log; batch.proc is the file's
// index. A torn last line (a kill -9 in the middle of a write cannot tear
// one: each batch is one write, but be safe) is dropped.
func readLogs(paths []string) ([]batch, error) {
	var out []batch
	for p, path := range paths {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 4 {
				continue
			}
			n, err := strconv.Atoi(fs[3])
			if err != nil || len(fs) != 4+n {
				continue
			}
			b := batch{proc: p, idx: make([]uint64, n)}
			b.start, _ = strconv.ParseInt(fs[0], 10, 64)
			b.end, _ = strconv.ParseInt(fs[1], 10, 64)
			b.epoch, _ = strconv.ParseUint(fs[2], 10, 64)
			for i := range n {
				b.idx[i], _ = strconv.ParseUint(fs[4+i], 10, 64)
			}
			out = append(out, b)
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	slices.SortStableFunc(out, func(a, b batch) int { return cmpInt64(a.start, b.start) })
	return out, nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// handling is what the batches say about each event of [0, n).
type handling struct {
	firstEnd  []int64 // end of the first batch that handled the event (0: never)
	distinct  int
	repeats   int // handlings beyond the first
	foreign   int // indices outside [0, n)
	orderViol int // first handlings of an event after a later event of its entity
}

// account walks the batches in start order.
func account(bs []batch, n uint64, entities int) handling {
	h := handling{firstEnd: make([]int64, n)}
	maxFirst := make([]int64, entities)
	for i := range maxFirst {
		maxFirst[i] = -1
	}
	for _, b := range bs {
		for _, i := range b.idx {
			if i >= n {
				h.foreign++
				continue
			}
			if h.firstEnd[i] != 0 {
				h.repeats++
				continue
			}
			h.firstEnd[i] = b.end
			h.distinct++
			e := int(i % uint64(entities))
			if int64(i) < maxFirst[e] {
				h.orderViol++
			} else {
				maxFirst[e] = int64(i)
			}
		}
	}
	return h
}

// rates returns the steady throughput (the middle 80 % of the events
// first handled after goNs, over the time they took) and the whole one
// (those events over goNs → the last first handling).
func rates(h handling, goNs int64) (steady, whole float64, last int64, preGo int) {
	var ts []int64
	for _, t := range h.firstEnd {
		switch {
		case t == 0:
		case t < goNs:
			preGo++
		default:
			ts = append(ts, t)
		}
	}
	if len(ts) < 10 {
		return 0, 0, 0, preGo
	}
	slices.Sort(ts)
	last = ts[len(ts)-1]
	lo, hi := len(ts)/10, len(ts)*9/10
	if d := float64(ts[hi]-ts[lo]) / 1e9; d > 0 {
		steady = float64(hi-lo) / d
	}
	if d := float64(last-goNs) / 1e9; d > 0 {
		whole = float64(len(ts)) / d
	}
	return steady, whole, last, preGo
}

// entry is one batch's visit to a partition.
type entry struct {
	start, end int64
	proc       int
}

// timelines returns every partition's visits, in start order.
func timelines(bs []batch, sys string, entities, parts int) [][]entry {
	tl := make([][]entry, parts)
	seen := make([]bool, parts)
	for _, b := range bs {
		clear(seen)
		for _, i := range b.idx {
			p := partitionOf(sys, i, entities, parts)
			if !seen[p] {
				seen[p] = true
				tl[p] = append(tl[p], entry{b.start, b.end, b.proc})
			}
		}
	}
	return tl
}

// action is something the harness did to the group.
type action struct {
	kind   string // kill, leave, join
	at     int64  // unix ns
	proc   int    // the member process killed, leaving or joining
	stored uint64 // events stored before the action
	desc   string
}

// churnFigures are the churn phase's measurements.
type churnFigures struct {
	failover       []time.Duration // per (kill, partition the victim held): kill → first batch of a new owner
	unresumed      int             // (kill, partition) pairs never resumed by another member
	backlog        []time.Duration // per kill: until every event older than the newest handled at the kill is handled
	killUnaffected []time.Duration // per (kill, partition the victim did not hold): the longest pause until the next action
	moved          []time.Duration // per graceful move: old owner's last batch end → new owner's first batch start
	movedLeave     []time.Duration
	movedJoin      []time.Duration
	unmoved        []time.Duration // per (graceful action, unmoved partition): the longest pause until the next action
	quiet          []time.Duration // per (action, partition): the longest pause in the 1.5 s before the action
	gracefulRepeat int             // repeats in batches started during graceful windows
	killRepeat     []int           // per kill: repeats in batches started until the next action
}

// analyzeChurn computes the churn figures; partitioned says whether the
// system has owned partitions (JetStream's pullers share every event).
func analyzeChurn(bs []batch, h handling, acts []action, sys string, entities, parts int, endNs int64) churnFigures {
	var f churnFigures
	tl := timelines(bs, sys, entities, parts)
	partitioned := sys != sysJS
	next := func(k int) int64 {
		if k+1 < len(acts) {
			return acts[k+1].at
		}
		return endNs
	}
	// repeats per window, from the batches in start order
	repeatsIn := func(from, to int64) int {
		n := 0
		first := h.firstEnd
		for _, b := range bs {
			if b.start < from || b.start >= to {
				continue
			}
			for _, i := range b.idx {
				if i < uint64(len(first)) && first[i] < b.end {
					n++
				}
			}
		}
		return n
	}
	if os.Getenv("GROUPS_DEBUG") != "" {
		debugGaps(tl, acts)
	}
	// movesIn returns the hand-overs whose new owner's first visit starts
	// in [from, to): old owner's last visit end → that start.
	movesIn := func(es []entry, from, to int64) []time.Duration {
		var out []time.Duration
		if !partitioned {
			return nil
		}
		for i := max(lastBefore(es, from), 0) + 1; i < len(es) && es[i].start < to; i++ {
			if es[i].start >= from && es[i].proc != es[i-1].proc {
				out = append(out, time.Duration(max(0, es[i].start-es[i-1].end)))
			}
		}
		return out
	}
	// addMoves files hand-overs under the graceful action they follow.
	addMoves := func(kind string, moves []time.Duration) {
		f.moved = append(f.moved, moves...)
		if kind == "leave" {
			f.movedLeave = append(f.movedLeave, moves...)
		} else {
			f.movedJoin = append(f.movedJoin, moves...)
		}
	}
	lastGraceful := "join"
	for k, a := range acts {
		to := next(k)
		// quiet baseline: pauses in the 1.5 s before the action, of
		// partitions not changing owner then
		qfrom := a.at - int64(1500*time.Millisecond)
		for _, es := range tl {
			if len(movesIn(es, qfrom, a.at)) > 0 || (partitioned && movingAt(es, qfrom, a.at)) {
				continue
			}
			if g := longestGap(es, qfrom, a.at, false); g > 0 {
				f.quiet = append(f.quiet, g)
			}
		}
		switch a.kind {
		case "kill":
			f.killRepeat = append(f.killRepeat, repeatsIn(a.at, to))
			f.backlog = append(f.backlog, backlogClosed(h, a.at, a.stored))
			for _, es := range tl {
				held := false
				if partitioned {
					j := lastBefore(es, a.at)
					held = j >= 0 && es[j].proc == a.proc && es[j].end > a.at-int64(time.Second)
				}
				if held {
					resumed := false
					for _, e := range es {
						if e.start >= a.at && e.proc != a.proc {
							f.failover = append(f.failover, time.Duration(e.start-a.at))
							resumed = true
							break
						}
					}
					if !resumed {
						f.unresumed++
					}
					continue
				}
				if moves := movesIn(es, a.at, to); len(moves) > 0 {
					addMoves(lastGraceful, moves) // an earlier hand-over finishing now
					continue
				}
				if partitioned && movingAt(es, a.at, to) {
					continue // a hand-over still going on at the next action: counted there
				}
				if g := longestGap(es, a.at, to, true); g > 0 {
					f.killUnaffected = append(f.killUnaffected, g)
				}
			}
		case "leave", "join":
			lastGraceful = a.kind
			f.gracefulRepeat += repeatsIn(a.at, to)
			for _, es := range tl {
				if moves := movesIn(es, a.at, to); len(moves) > 0 {
					addMoves(a.kind, moves)
					continue
				}
				if partitioned && movingAt(es, a.at, to) {
					continue // a hand-over still going on at the next action: counted there
				}
				if g := longestGap(es, a.at, to, true); g > 0 {
					f.unmoved = append(f.unmoved, g)
				}
			}
		}
	}
	return f
}

// movingAt reports whether the partition is between two owners at to: its
// last visit before to and its first visit after it, after from, are by
// different processes.
func movingAt(es []entry, from, to int64) bool {
	i := lastBefore(es, to) + 1
	return i > 0 && i < len(es) && es[i].start >= from && es[i].proc != es[i-1].proc
}

// lastBefore returns the index of the last visit starting before t, or -1.
func lastBefore(es []entry, t int64) int {
	i, _ := slices.BinarySearchFunc(es, t, func(e entry, t int64) int { return cmpInt64(e.start, t) })
	return i - 1
}

// longestGap returns the longest pause between consecutive visits (end →
// next start) among the visits starting in [from, to), counting the pause
// from the last visit before from; with straddle, also the pause that is
// still going on at to (up to the first visit after it). 0 when there is
// no such pause.
func longestGap(es []entry, from, to int64, straddle bool) time.Duration {
	var g int64
	for i := max(lastBefore(es, from), 0) + 1; i < len(es); i++ {
		if es[i].start < from {
			continue
		}
		if es[i].start >= to && !straddle {
			break
		}
		if es[i].start >= to { // a pause still going on at to: its part in the window
			g = max(g, to-es[i-1].end)
			break
		}
		g = max(g, es[i].start-es[i-1].end)
	}
	return time.Duration(g)
}

// backlogClosed returns how long after t every event stored before t
// (the first stored of them) was handled.
func backlogClosed(h handling, t int64, stored uint64) time.Duration {
	var last int64
	for i := uint64(0); i < stored && i < uint64(len(h.firstEnd)); i++ {
		last = max(last, h.firstEnd[i])
	}
	if last <= t {
		return 0
	}
	return time.Duration(last - t)
}

// percentile returns the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}

// debugGaps prints every pause over 300 ms with the actions around it
// (GROUPS_DEBUG=1).
func debugGaps(tl [][]entry, acts []action) {
	if len(acts) == 0 {
		return
	}
	t0 := acts[0].at
	rel := func(t int64) string { return fmt.Sprintf("%+.3fs", float64(t-t0)/1e9) }
	for _, a := range acts {
		fmt.Fprintf(os.Stderr, "debug: action %s %s proc %d at %s\n", a.kind, a.desc, a.proc, rel(a.at))
	}
	for p, es := range tl {
		for i := 1; i < len(es); i++ {
			if g := es[i].start - es[i-1].end; g > int64(300*time.Millisecond) {
				fmt.Fprintf(os.Stderr, "debug: partition %d paused %s: proc %d end %s → proc %d start %s\n", p, time.Duration(g).Round(time.Millisecond), es[i-1].proc, rel(es[i-1].end), es[i].proc, rel(es[i].start))
			}
		}
	}
}
