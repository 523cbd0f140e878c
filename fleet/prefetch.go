package fleet

import (
	"context"
	"sync"

	"github.com/batfleet/batfleet/engine"
)

// Pull-ahead: a worker polls, runs its handler, saves its checkpoint and
// polls again from the last entry it was given. While the handler and the
// save run, the client already asks the writer for the next batch, so the
// pull's round trip overlaps the work. Pulls change no writer state, and a
// reply fetched a little earlier is a valid answer (its snapshot was read
// before its query), so using it changes nothing but the timing. A
// prefetched reply is used only by a Poll for exactly the region, position
// and size it was made for; anything else (a rollback, a restart, another
// region) discards it.

type prefetchKey struct {
	region   string // identity
	position uint64
	started  bool
	max      int
}

type prefetch struct {
	key  prefetchKey
	done chan struct{}
	res  engine.PollResult
	err  error
}

// prefetcher keeps at most one pull in flight per region.
type prefetcher struct {
	mu      sync.Mutex
	pending map[string]*prefetch // by region identity
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
	closed  bool
}

func newPrefetcher() *prefetcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &prefetcher{pending: make(map[string]*prefetch), ctx: ctx, cancel: cancel}
}

// take returns the prefetched reply for key, waiting for it if it is still
// in flight, or ok=false when there is none for exactly that key (a stale
// one is discarded).
func (p *prefetcher) take(ctx context.Context, key prefetchKey) (res engine.PollResult, err error, ok bool) {
	p.mu.Lock()
	pf := p.pending[key.region]
	if pf != nil {
		delete(p.pending, key.region)
	}
	p.mu.Unlock()
	if pf == nil || pf.key != key {
		return engine.PollResult{}, nil, false
	}
	select {
	case <-pf.done:
		return pf.res, pf.err, true
	case <-ctx.Done():
		return engine.PollResult{}, nil, false
	}
}

// start begins fetching for key with fetch, unless the prefetcher is
// closed or a prefetch for the region is already in flight.
func (p *prefetcher) start(key prefetchKey, fetch func(ctx context.Context) (engine.PollResult, error)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.pending[key.region] != nil {
		return
	}
	pf := &prefetch{key: key, done: make(chan struct{})}
	p.pending[key.region] = pf
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(pf.done)
		pf.res, pf.err = fetch(p.ctx)
	}()
}

// close cancels prefetches in flight and waits for them.
func (p *prefetcher) close() {
	p.mu.Lock()
	p.closed = true
	p.pending = map[string]*prefetch{}
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
}
