package journal

import (
	"slices"
	"sync/atomic"
	"time"
)

// reqQueue is the committer's inbox. Producers (appenders, fences, Close)
// push onto a lock-free stack; the committer, its only consumer, takes
// everything queued with one swap and restores push order. The committer
// sleeps until as many requests as it is waiting for have arrived (or a
// deadline passes), and only the producer that completes that count wakes
// it: a group of N appenders costs one wake-up of the committer instead
// of N channel hand-offs, each of which locked a channel every appender
// shares.
//
// The queue is unbounded: it holds one request per caller waiting on the
// committer, plus those of callers that gave up (their ctx ended) since
// the committer last took from it; the committer drops those before
// reserving anything (request.abandoned). The fleet writer bounds its
// callers (WriterConfig.MaxInFlight).
type reqQueue struct {
	head atomic.Pointer[request] // newest first, linked by request.next
	n    atomic.Int64            // pushed and not yet taken (may lag by a push in progress)
	want atomic.Int64            // wake the consumer when n reaches this; 0: it is not asleep
	wake chan struct{}           // capacity 1; a token may be stale
}

func newReqQueue() *reqQueue { return &reqQueue{wake: make(chan struct{}, 1)} }

// push queues r. It never blocks.
func (q *reqQueue) push(r *request) {
	for {
		top := q.head.Load()
		r.next = top
		if q.head.CompareAndSwap(top, r) {
			break
		}
	}
	n := q.n.Add(1)
	if w := q.want.Load(); w > 0 && n >= w && q.want.CompareAndSwap(w, 0) {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// takeAll appends every queued request to dst, oldest first.
func (q *reqQueue) takeAll(dst []*request) []*request {
	top := q.head.Swap(nil)
	if top == nil {
		return dst
	}
	from := len(dst)
	for r := top; r != nil; {
		next := r.next
		r.next = nil
		dst = append(dst, r)
		r = next
	}
	q.n.Add(-int64(len(dst) - from))
	slices.Reverse(dst[from:])
	return dst
}

// len reports how many requests are queued.
func (q *reqQueue) len() int { return int(max(q.n.Load(), 0)) }

// wait blocks until at least k requests are queued or, when t is not nil,
// t fires. It reports false once t has fired (its channel is then
// drained: the caller must not wait on t again). Only the consumer calls
// it.
func (q *reqQueue) wait(k int64, t *time.Timer) bool {
	var expired <-chan time.Time
	if t != nil {
		expired = t.C
	}
	for {
		if q.n.Load() >= k {
			return true
		}
		q.want.Store(k)
		// A push that completed the count before want was set did not
		// wake us: look again before sleeping.
		if q.n.Load() >= k {
			q.want.Store(0)
			return true
		}
		select {
		case <-q.wake: // possibly stale: the loop checks again
		case <-expired:
			q.want.Store(0)
			return false
		}
	}
}
