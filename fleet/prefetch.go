package fleet

import (
	"context"
	"sync"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet/internal/wire"
)

// Pull-ahead: a worker polls, runs its handler, saves its checkpoint and
// polls again from the last entry it was given. While the handler and the
// save run, the client already asks the writer for the next batch, so the
// pull's round trip overlaps the work. Pulls change no writer state, and a
// reply fetched a little earlier is a valid answer (its snapshot was read
// before its query), so using it changes nothing but the timing.
//
// Pull-ahead belongs to one consumer: each cursor polls through its own
// stream (delivery.Streamer), which keeps at most one pull ahead for
// exactly the position and size that consumer will ask for next; anything
// else (a rollback, a restart) discards it. Two cursors on one region and
// client never see each other's pull-ahead.

var _ delivery.Streamer = (*Client)(nil)

// stream is one cursor's pulls of a region through a Client.
type stream struct {
	c      *Client
	region engine.Region

	mu      sync.Mutex
	pending *prefetch // at most one pull ahead
	closed  bool
	seen    engine.ID128 // the writer incarnation of the last reply
}

type prefetchKey struct {
	position uint64
	started  bool
	max      int
}

type prefetch struct {
	key    prefetchKey
	done   chan struct{}
	cancel context.CancelFunc
	res    engine.PollResult
	err    error
}

// Stream returns a stream of region for one consumer: Poll through it
// pulls ahead for that consumer only. Close it when done (a Cursor does).
func (c *Client) Stream(region engine.Region) delivery.Stream {
	return &stream{c: c, region: region}
}

// Poll is Client.Poll with this stream's pull-ahead: a prefetched reply
// for exactly (position, started, max) is used; after a batch of at least
// half of max, the next pull starts in the background.
func (s *stream) Poll(ctx context.Context, position uint64, started bool, max int) (engine.PollResult, error) {
	if max <= 0 {
		return engine.PollResult{Snapshot: s.c.Latest()}, nil
	}
	max = min(max, wire.MaxPullEntries)
	if _, err := s.c.epochs(); err != nil {
		return engine.PollResult{}, err
	}
	key := prefetchKey{position: position, started: started, max: max}
	res, err, ok := s.take(ctx, key)
	if !ok || err != nil {
		res, err = s.c.pull(ctx, s.region, position, started, max)
	}
	if err != nil {
		return engine.PollResult{}, err
	}
	s.saw(res.Snapshot.Incarnation)
	s.pullAhead(res, max)
	return res, nil
}

// MaxHold is the longest a client asks the writer to hold a pull (the
// writer's default maximum; a writer's info reply can lower it); a longer
// wait is a series of holds.
const MaxHold = 30 * time.Second

// PollWait is Poll that, when nothing matches, asks the writer to hold the
// pull until a matching entry is visible or wait passes (a held pull), so
// an idle consumer costs the writer nothing per append that does not
// concern it and wakes with one round trip. A pull ahead that found
// something is used first. An empty answer that comes early (a writer at
// its cap of held pulls, or one without held pulls) falls back to parking
// on epoch messages for the rest of wait.
func (s *stream) PollWait(ctx context.Context, position uint64, started bool, max int, wait time.Duration) (engine.PollResult, error) {
	if wait <= 0 || max <= 0 {
		return s.Poll(ctx, position, started, max)
	}
	max = min(max, wire.MaxPullEntries)
	key := prefetchKey{position: position, started: started, max: max}
	if res, err, ok := s.take(ctx, key); ok && err == nil && len(res.Entries) > 0 {
		s.pullAhead(res, max)
		return res, nil
	}
	begin := time.Now()
	// A hold of a writer that is gone (it restarted without answering:
	// a crash) is abandoned as soon as its successor's epoch arrives.
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(contextOf(s.c.retirement()), cancel)
	defer stop()
	hold := min(wait, MaxHold)
	if granted := time.Duration(s.c.maxHold.Load()); granted > 0 {
		hold = min(hold, granted) // the writer's maximum, from its info reply
	}
	res, err := s.c.pullWait(hctx, s.region, position, started, max, hold, s.seenIncarnation())
	if err != nil && ctx.Err() == nil && hctx.Err() != nil {
		return engine.PollResult{Snapshot: s.c.Latest()}, nil // re-poll the new incarnation
	}
	if err != nil {
		return engine.PollResult{}, err
	}
	first := s.saw(res.Snapshot.Incarnation)
	if len(res.Entries) > 0 || first {
		// Entries, or the first word of a new writer incarnation (which
		// answered without holding): the caller checks it before waiting.
		s.pullAhead(res, max)
		return res, nil
	}
	if took := time.Since(begin); took < hold/2 {
		// Answered empty long before the hold was up: a writer at its cap
		// of held pulls, or one that does not hold. Park on epoch
		// messages for the rest of wait instead.
		s.c.Park(ctx, res.Snapshot, wait-took)
	}
	return res, nil
}

// saw records the incarnation of a reply and reports whether it differs
// from the one seen before (not for the first reply of the stream).
func (s *stream) saw(inc engine.ID128) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := s.seen != (engine.ID128{}) && inc != s.seen
	s.seen = inc
	return changed
}

func (s *stream) seenIncarnation() engine.ID128 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}

// pullAhead starts the next pull after a batch of at least half of max.
func (s *stream) pullAhead(res engine.PollResult, max int) {
	if n := len(res.Entries); n > 0 && n >= max/2 {
		s.start(prefetchKey{position: res.Entries[n-1].Seq, started: true, max: max})
	}
}

// take returns the prefetched reply for key, waiting for it if it is still
// in flight, or ok=false when there is none for exactly that key (a stale
// one is discarded).
func (s *stream) take(ctx context.Context, key prefetchKey) (res engine.PollResult, err error, ok bool) {
	s.mu.Lock()
	pf := s.pending
	s.pending = nil
	s.mu.Unlock()
	if pf == nil {
		return engine.PollResult{}, nil, false
	}
	if pf.key != key {
		pf.cancel()
		return engine.PollResult{}, nil, false
	}
	select {
	case <-pf.done:
		return pf.res, pf.err, true
	case <-ctx.Done():
		pf.cancel()
		return engine.PollResult{}, nil, false
	}
}

// start begins pulling key in the background, unless the stream or its
// client is closed or a pull ahead is already in flight.
func (s *stream) start(key prefetchKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.pending != nil {
		return
	}
	ctx, cancel, ok := s.c.background()
	if !ok {
		return
	}
	pf := &prefetch{key: key, done: make(chan struct{}), cancel: cancel}
	s.pending = pf
	go func() {
		defer s.c.bg.Done()
		defer close(pf.done)
		defer cancel()
		pf.res, pf.err = s.c.pull(ctx, s.region, key.position, key.started, key.max)
	}()
}

// Close cancels the stream's pull ahead; later polls still work, without
// pulling ahead.
func (s *stream) Close() {
	s.mu.Lock()
	s.closed = true
	pf := s.pending
	s.pending = nil
	s.mu.Unlock()
	if pf != nil {
		pf.cancel()
	}
}

// contextOf returns a context that ends when done is closed.
func contextOf(done <-chan struct{}) context.Context { return doneContext(done) }

// doneContext is a context whose Done is a given channel.
type doneContext <-chan struct{}

func (doneContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (d doneContext) Done() <-chan struct{}     { return d }
func (d doneContext) Err() error {
	select {
	case <-d:
		return context.Canceled
	default:
		return nil
	}
}
func (doneContext) Value(any) any { return nil }
