package fleet

import (
	"context"
	"sync"

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
	key := prefetchKey{position: position, started: started, max: max}
	res, err, ok := s.take(ctx, key)
	if !ok || err != nil {
		res, err = s.c.pull(ctx, s.region, position, started, max)
	}
	if err != nil {
		return engine.PollResult{}, err
	}
	if n := len(res.Entries); n > 0 && n >= max/2 {
		s.start(prefetchKey{position: res.Entries[n-1].Seq, started: true, max: max})
	}
	return res, nil
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
