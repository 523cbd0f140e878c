package journal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/internal/fsx"
	"github.com/hashicorp/go-hclog"
	"github.com/vmihailenco/msgpack/v5"
)

// Store is one journal: an append-only, globally sequenced, durable event
// log in a directory, with its index and visibility gate. A Store is safe
// for concurrent use. All writes go through one committer goroutine that
// the Store owns; Close stops it and waits for it.
type Store struct {
	dir         string
	cfg         Config
	log         hclog.Logger
	lock        *fsx.Lock
	journalID   engine.ID128
	incarnation engine.ID128
	startedMs   int64

	gate *gate
	ix   *index // ix.mu also guards segs

	segs []*os.File // by segment number; the last is active
	maps segMaps    // read-only mappings of segs, for payload reads

	// Committer-owned state (the committer goroutine, or Open before it starts).
	activeNum  uint32
	activeSize int64
	zeroEnd    int64 // the active segment is zero-filled up to here (prealloc.go)
	clocks     []entityClock
	keys       map[engine.IdempotencyKey]uint64 // visible keyed entries
	evictNext  uint64                           // next seq the key evictor looks at
	inflight   map[engine.IdempotencyKey]*request
	fence      *fenceState
	failed     bool
	uuids      *uuidGen
	buf        []byte
	syncAvg    time.Duration
	syncCount  atomic.Int64 // syncs of the active segment, and their total time
	syncNanos  atomic.Int64
	lastGroup  int

	q         *reqQueue
	backlog   []*request // taken from q, not yet handled (committer-owned)
	backlogAt int
	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error
	stop      chan struct{} // closed when Close begins: releases parked readers
	done      chan struct{} // closed when the committer has exited
}

type entityClock struct {
	next     uint64 // next clock to hand out; 1<<32 means exhausted
	lastWall int64
}

// Open opens (or creates) the journal in dir. It takes an exclusive lock on
// the directory, loads or creates the journal id, makes a fresh
// incarnation id, recovers the segments (see doc.go), rebuilds the index
// and appends the OPEN_COMPLETED lifecycle event.
func Open(dir string, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal: create journal directory: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{
		dir:         dir,
		cfg:         cfg,
		log:         cfg.Logger.Named("engine"),
		lock:        lock,
		incarnation: engine.NewID128(),
		startedMs:   time.Now().UnixMilli(),
		gate:        newGate(),
		ix:          newIndex(),
		keys:        make(map[engine.IdempotencyKey]uint64),
		inflight:    make(map[engine.IdempotencyKey]*request),
		uuids:       newUUIDGen(),
		q:           newReqQueue(),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	fail := func(err error) (*Store, error) {
		_ = s.maps.unmapAll()
		for _, f := range s.segs {
			_ = f.Close()
		}
		_ = lock.Unlock()
		return nil, err
	}
	nums, err := listSegments(dir)
	if err != nil {
		return fail(err)
	}
	if s.journalID, err = loadJournalID(dir, len(nums) == 0); err != nil {
		return fail(err)
	}
	if err := s.recover(); err != nil {
		return fail(err)
	}
	go s.run()
	payload, _ := msgpack.Marshal(map[string]any{
		"incarnation": s.incarnation.String(),
		"journal_id":  s.journalID.String(),
	})
	if _, err := s.appendSystem(engine.KindOpenCompleted, payload); err != nil {
		s.shutdownCommitter()
		return fail(fmt.Errorf("journal: append open event: %w", err))
	}
	s.log.Info("journal opened", "dir", dir, "journal-id", s.journalID.String(),
		"incarnation", s.incarnation.String(), "visible", s.Visible())
	return s, nil
}

func (s *Store) appendSystem(kind engine.Kind, payload []byte) (engine.Receipt, error) {
	r := &request{kind: reqAppend, system: true, done: make(chan struct{}),
		events: []engine.Event{{Coordinate: engine.LifecycleCoordinate(), Kind: kind, Payload: payload}}}
	s.q.push(r)
	<-r.done
	if r.err != nil {
		return engine.Receipt{}, r.err
	}
	return r.receipts[0], nil
}

// Close cancels an active fence, appends CLOSE_COMPLETED, stops the
// committer, syncs and closes the segment files and releases the lock.
// Appends after Close fail ErrClosed; parked readers are released. Close is
// idempotent and returns the same result to every call.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		close(s.stop)
		r := &request{kind: reqClose, done: make(chan struct{})}
		s.q.push(r)
		<-r.done
		<-s.done
		s.failQueued()
		var errs []error
		if r.err != nil {
			errs = append(errs, r.err)
		}
		if err := s.maps.unmapAll(); err != nil {
			errs = append(errs, err)
		}
		s.ix.mu.Lock()
		for _, f := range s.segs {
			if err := f.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		s.ix.mu.Unlock()
		if err := s.lock.Unlock(); err != nil {
			errs = append(errs, err)
		}
		s.closeErr = errors.Join(errs...)
		s.log.Info("journal closed", "dir", s.dir)
	})
	return s.closeErr
}

// shutdownCommitter stops the committer without the close event (Open
// failures).
func (s *Store) shutdownCommitter() {
	s.closing.Store(true)
	close(s.stop)
	r := &request{kind: reqStop, done: make(chan struct{})}
	s.q.push(r)
	<-s.done
	s.failQueued()
	_ = s.maps.unmapAll()
	for _, f := range s.segs {
		_ = f.Close()
	}
}

// failQueued answers requests still queued after the committer exited
// (which makes the backlog this goroutine's). A request pushed after this
// is never answered: its caller saw s.done closed and returned ErrClosed.
func (s *Store) failQueued() {
	for _, r := range s.q.takeAll(s.backlog[s.backlogAt:]) {
		r.finish(nil, ErrClosed)
	}
	s.backlog, s.backlogAt = nil, 0
}

// Dir returns the journal directory.
// MaxEntryBytes is the largest entry (entity, scope and payload bytes)
// the store accepts (Config.MaxEntryBytes).
func (s *Store) MaxEntryBytes() int { return s.cfg.MaxEntryBytes }

func (s *Store) Dir() string { return s.dir }

// JournalID returns the journal's permanent random id.
func (s *Store) JournalID() engine.ID128 { return s.journalID }

// Incarnation returns this writer start's random id.
func (s *Store) Incarnation() engine.ID128 { return s.incarnation }

// StartedMs returns when this incarnation started, in unix milliseconds.
func (s *Store) StartedMs() int64 { return s.startedMs }

// Epoch returns the current visibility epoch (0 at open, +1 per publish).
func (s *Store) Epoch() uint64 { return s.gate.epoch.Load() }

// Visible returns the visibility watermark: seq s is visible iff s <
// Visible() and s lies in no cancelled range.
func (s *Store) Visible() uint64 {
	v, _ := s.gate.snapshot()
	return v
}

// CancelledRanges returns the normalised cancelled ranges.
func (s *Store) CancelledRanges() []engine.Range {
	_, rs := s.gate.snapshot()
	return append([]engine.Range(nil), rs...)
}

// Stats is a snapshot of a Store's counters.
type Stats struct {
	Allocated uint64 // next sequence to hand out
	Visible   uint64 // visibility watermark
	Epoch     uint64
	Entries   int // indexed entries (fence-hidden ones included)
	Cancelled []engine.Range
}

// Stats returns a snapshot of the store's counters.
func (s *Store) Stats() Stats {
	epoch := s.Epoch()
	alloc, vis := s.gate.frontiers()
	s.ix.mu.RLock()
	n := s.ix.count
	s.ix.mu.RUnlock()
	return Stats{Allocated: alloc, Visible: vis, Epoch: epoch, Entries: n, Cancelled: s.CancelledRanges()}
}

// Changed returns the current epoch and a channel that is closed when the
// epoch next moves. The fleet writer uses it to publish epoch messages.
func (s *Store) Changed() (uint64, <-chan struct{}) { return s.gate.changed() }

// Append appends one event and returns once it is durable and visible.
func (s *Store) Append(ctx context.Context, ev engine.Event) (engine.Receipt, error) {
	r := &request{}
	r.one[0] = ev
	if err := s.initAppend(r, r.one[:]); err != nil {
		return engine.Receipt{}, err
	}
	rs, err := s.do(ctx, r)
	if err != nil {
		return engine.Receipt{}, err
	}
	return rs[0], nil
}

// AppendBatch appends events atomically: once it returns nil they are all
// durable and visible together; on error none of them ever becomes visible
// (a failure after reservation leaves a cancelled range). Batches are
// all-keyed or all-unkeyed. If ctx ends while the append is in flight, the
// outcome is unknown to the caller: retry with idempotency keys.
func (s *Store) AppendBatch(ctx context.Context, events []engine.Event) ([]engine.Receipt, error) {
	r, err := s.newAppend(events)
	if err != nil {
		return nil, err
	}
	return s.do(ctx, r)
}

// do hands r to the committer and waits for its outcome.
//
// Queuing never blocks (reqqueue.go). A caller whose ctx ends marks its
// request abandoned: if the committer has not reached it yet, it is
// dropped before anything is reserved or written; otherwise its outcome is
// unknown to the caller (retry with idempotency keys). Once r is queued,
// waiting on r.done
// and ctx suffices unless the store was closing after the push: a request
// queued before Close began is answered (by the committer, or by
// failQueued after it exits), because Close queues its own request behind
// it. Otherwise s.done tells whether the queue was already drained.
// Selecting on as few channels as possible matters: every appender shares
// s.done (and often ctx.Done()), and a blocking select locks and queues on
// each of its channels.
func (s *Store) do(ctx context.Context, r *request) ([]engine.Receipt, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if s.closing.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.q.push(r)
	// A nil channel never fires and costs a select nothing: s.done is
	// watched only when Close had begun by the push.
	var closed <-chan struct{}
	if s.closing.Load() {
		closed = s.done
	}
	select {
	case <-r.done:
	case <-closed:
		select {
		case <-r.done:
		default:
			return nil, ErrClosed
		}
	case <-ctx.Done():
		r.abandoned.Store(true)
		return nil, ctx.Err()
	}
	return r.receipts, r.err
}

// newAppend validates events and builds the request: coordinates, kinds,
// sizes and idempotency keys are checked here, before anything is reserved.
func (s *Store) newAppend(events []engine.Event) (*request, error) {
	r := &request{}
	if err := s.initAppend(r, events); err != nil {
		return nil, err
	}
	return r, nil
}

// initAppend validates events and makes r the append request for them.
func (s *Store) initAppend(r *request, events []engine.Event) error {
	if len(events) == 0 {
		return ErrEmptyBatch
	}
	if len(events) > s.cfg.MaxBatchEvents {
		return fmt.Errorf("%w: %d events (max %d)", ErrBatchTooLarge, len(events), s.cfg.MaxBatchEvents)
	}
	keyed := !events[0].Key.IsZero()
	total := 0
	for i := range events {
		ev := &events[i]
		if err := ev.Coordinate.Validate(); err != nil {
			return &engine.InvalidCoordinateError{Index: i, Reason: err}
		}
		if err := ev.Kind.CheckAppendable(i); err != nil {
			return err
		}
		entity, scope := ev.Coordinate.Entity(), ev.Coordinate.Scope()
		if n := len(entity) + len(scope) + len(ev.Payload); n > s.cfg.MaxEntryBytes {
			return fmt.Errorf("%w: event %d: %d bytes of entity, scope and payload (max %d)", ErrEntryTooLarge, i, n, s.cfg.MaxEntryBytes)
		}
		total += eventFrameLen(len(entity), len(scope), len(ev.Payload))
		if ev.Key.IsZero() == keyed {
			return ErrIdempotencyPartialBatch
		}
	}
	if total > s.cfg.MaxBatchBytes {
		return fmt.Errorf("%w: %d bytes (max %d)", ErrBatchTooLarge, total, s.cfg.MaxBatchBytes)
	}
	if keyed && len(events) > 1 {
		seen := make(map[engine.IdempotencyKey]struct{}, len(events))
		for _, ev := range events {
			if _, dup := seen[ev.Key]; dup {
				return fmt.Errorf("%w: key %s repeated in one batch", ErrIdempotencyConflict, ev.Key)
			}
			seen[ev.Key] = struct{}{}
		}
	}
	r.kind, r.events, r.keyed, r.size, r.done = reqAppend, events, keyed, total, make(chan struct{})
	return nil
}

// BeginFence starts a visibility fence: until CommitFence, appends go
// through AppendFenced, are durable and indexed, but stay invisible;
// unfenced appends fail ErrFenceActive. Fences are an engine-level API.
func (s *Store) BeginFence(ctx context.Context) error {
	_, err := s.do(ctx, &request{kind: reqFenceBegin, done: make(chan struct{})})
	return err
}

// CommitFence makes every write staged in the fence visible at once: it
// records the commit durably, then publishes (the epoch moves only now).
func (s *Store) CommitFence(ctx context.Context) error {
	_, err := s.do(ctx, &request{kind: reqFenceCommit, done: make(chan struct{})})
	return err
}

// CancelFence cancels the active fence: its staged writes stay on disk,
// hidden forever, their range is persisted as cancelled, pending fenced
// appends fail ErrFenceCancelled, and the epoch does not move.
func (s *Store) CancelFence(ctx context.Context) error {
	_, err := s.do(ctx, &request{kind: reqFenceCancel, done: make(chan struct{})})
	return err
}

// FencedAppend is an append staged in a fence.
type FencedAppend struct {
	s *Store
	r *request
}

// AppendFenced stages events in the active fence and returns once they are
// durable. Wait returns their receipts when the fence commits, or
// ErrFenceCancelled when it is cancelled.
func (s *Store) AppendFenced(ctx context.Context, events []engine.Event) (*FencedAppend, error) {
	r, err := s.newAppend(events)
	if err != nil {
		return nil, err
	}
	r.fenced = true
	r.staged = make(chan struct{})
	if s.closing.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.q.push(r)
	select {
	case <-r.staged:
		return &FencedAppend{s: s, r: r}, nil
	case <-r.done:
		if r.err != nil {
			return nil, r.err
		}
		// A keyed retry answered at once: Wait returns its receipts.
		return &FencedAppend{s: s, r: r}, nil
	case <-s.done:
		return nil, ErrClosed
	case <-ctx.Done():
		r.abandoned.Store(true)
		return nil, ctx.Err()
	}
}

// Wait returns the receipts once the fence commits, or the error that
// ended the append (ErrFenceCancelled when the fence was cancelled).
func (f *FencedAppend) Wait(ctx context.Context) ([]engine.Receipt, error) {
	select {
	case <-f.r.done:
		return f.r.receipts, f.r.err
	case <-f.s.done:
		select {
		case <-f.r.done:
			return f.r.receipts, f.r.err
		default:
			return nil, ErrClosed
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
