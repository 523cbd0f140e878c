package main

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batfleet/batfleet/engine"
)

// The workload both systems get: the same events, in the same order, with
// the same payload bytes, and the same handler.
const (
	payloadSize = 100
	numEntities = 10_000
	numParts    = 4 // disjoint regions (batfleet) for the 4-worker runs
	scope       = "bench"
)

// workload is n events of 100-byte payloads across 10,000 entities. Event
// i belongs to entity i%10000, and entity e to partition e%4. Its payload
// starts with i (little endian), so a handler can tell which event it
// holds; the other 92 bytes are a pattern of i.
type workload struct {
	n        int
	slab     []byte              // n payloads back to back
	coords   []engine.Coordinate // per entity: ent:p<part>:e<entity>@bench
	subjects []string            // per entity: ent.p<part>.e<entity>
	perPart  [numParts]int       // events per partition
	sum      uint64              // sum of every payload byte
}

func newWorkload(n int) *workload {
	w := &workload{n: n, slab: make([]byte, n*payloadSize)}
	for e := 0; e < numEntities; e++ {
		p := e % numParts
		w.coords = append(w.coords, engine.MustCoordinate(fmt.Sprintf("ent:p%d:e%d", p, e), scope))
		w.subjects = append(w.subjects, fmt.Sprintf("ent.p%d.e%d", p, e))
	}
	for i := 0; i < n; i++ {
		fillPayload(w.payload(i), uint64(i))
		w.perPart[(i%numEntities)%numParts]++
	}
	for _, b := range w.slab {
		w.sum += uint64(b)
	}
	return w
}

func fillPayload(p []byte, i uint64) {
	binary.LittleEndian.PutUint64(p, i)
	for j := 8; j < len(p); j++ {
		p[j] = byte(i*7 + uint64(j)*13)
	}
}

// payload returns event i's payload (capacity-limited: appends copy).
func (w *workload) payload(i int) []byte {
	return w.slab[i*payloadSize : (i+1)*payloadSize : (i+1)*payloadSize]
}

func (w *workload) entity(i int) int { return i % numEntities }

// event returns event i as a batfleet event.
func (w *workload) event(i int) engine.Event {
	return engine.Event{Coordinate: w.coords[w.entity(i)], Kind: engine.KindData, Payload: w.payload(i)}
}

// subject returns event i's JetStream subject.
func (w *workload) subject(i int) string { return w.subjects[w.entity(i)] }

// sink is the handler's state for one measured run: which events were
// handled how often, the running count and the byte sum. Both systems call
// handle for every delivered payload and account once per handler call
// (a batch for batfleet and Fetch, a message for Consume).
type sink struct {
	expected   int64
	seen       []atomic.Uint32 // by event index
	handled    atomic.Int64
	sum        atomic.Uint64
	outOfRange atomic.Int64
	done       chan struct{} // closed when handled reaches expected
	once       sync.Once

	stopWatch chan struct{}
	maxStall  atomic.Int64 // longest time without progress, ns (50 ms resolution)
}

func newSink(n int) *sink {
	s := &sink{expected: int64(n), seen: make([]atomic.Uint32, n), done: make(chan struct{}), stopWatch: make(chan struct{})}
	go s.watch()
	return s
}

// handle is the handler's work on one payload: it reads every byte (a
// sum) and records which event it was. It returns the byte sum.
func (s *sink) handle(p []byte) uint64 {
	var sum uint64
	for _, c := range p {
		sum += uint64(c)
	}
	if len(p) >= 8 {
		if i := binary.LittleEndian.Uint64(p); i < uint64(len(s.seen)) {
			s.seen[i].Add(1)
			return sum
		}
	}
	s.outOfRange.Add(1)
	return sum
}

// account counts n handled events of byte sum sum.
func (s *sink) account(n int, sum uint64) {
	s.sum.Add(sum)
	if s.handled.Add(int64(n)) >= s.expected {
		s.once.Do(func() { close(s.done) })
	}
}

// watch records the longest stretch without progress (a stalled
// consumer), sampling every 50 ms, until close.
func (s *sink) watch() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	last, since := int64(-1), time.Now()
	for {
		select {
		case <-s.stopWatch:
			return
		case now := <-t.C:
			h := s.handled.Load()
			if h != last {
				last, since = h, now
				continue
			}
			if h >= s.expected {
				continue
			}
			if d := now.Sub(since).Nanoseconds(); d > s.maxStall.Load() {
				s.maxStall.Store(d)
			}
		}
	}
}

// close stops the watcher and returns the run's check.
func (s *sink) close(label string, wantSum uint64) check {
	close(s.stopWatch)
	c := check{Label: label, Expected: s.expected, Handled: s.handled.Load(), OutOfRange: s.outOfRange.Load(),
		SumOK: s.sum.Load() == wantSum, MaxStall: time.Duration(s.maxStall.Load())}
	for i := range s.seen {
		switch v := s.seen[i].Load(); {
		case v == 0:
			c.Missing++
		case v == 1:
			c.Distinct++
		default:
			c.Distinct++
			c.Duplicates += int64(v - 1)
		}
	}
	return c
}

// check is what one measured run handled, against what it should have.
type check struct {
	Label      string
	Expected   int64
	Handled    int64
	Distinct   int64 // events handled at least once
	Missing    int64
	Duplicates int64 // deliveries beyond the first
	OutOfRange int64 // payloads that name no event of the run
	SumOK      bool  // the byte sum over handled payloads is the workload's
	MaxStall   time.Duration
	Notes      []string // e.g. missed heartbeats, redeliveries
}

// exact reports whether every event was handled exactly once.
func (c check) exact() bool {
	return c.Handled == c.Expected && c.Distinct == c.Expected && c.Missing == 0 &&
		c.Duplicates == 0 && c.OutOfRange == 0 && c.SumOK
}

func (c check) err() error {
	if c.exact() {
		return nil
	}
	return fmt.Errorf("%s: handled %d of %d (distinct %d, missing %d, duplicates %d, foreign %d, byte sum ok %v)",
		c.Label, c.Handled, c.Expected, c.Distinct, c.Missing, c.Duplicates, c.OutOfRange, c.SumOK)
}

// latency is one wake-latency series: acknowledged append or publish →
// handler start, per sample.
type latency struct {
	fromAck  []time.Duration // handler start − acknowledgement (clamped at 0)
	fromSend []time.Duration // handler start − start of the append/publish call
	early    int             // samples whose handler started before the ack arrived
	// batfleet only: the two legs of fromSend, split where the worker's
	// park returned (the epoch message arrived).
	toWake      []time.Duration
	wakeToStart []time.Duration
	// Go scheduler latency (runnable → running) over the series.
	sched schedStats
}

func (l *latency) add(send, ack, start time.Time) {
	d := start.Sub(ack)
	if d < 0 {
		l.early++
		d = 0
	}
	l.fromAck = append(l.fromAck, d)
	l.fromSend = append(l.fromSend, start.Sub(send))
}
