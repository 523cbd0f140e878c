package delivery

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/hashicorp/go-hclog"
)

// Handle is the control surface shared by workers (and, later, reactors).
type Handle interface {
	// Stop requests stop; idempotent and non-blocking.
	Stop()
	// Join waits for the worker to exit without requesting stop, and returns
	// the first recorded error or nil, the same to every call.
	Join() error
	// StopAndJoin is Stop then Join.
	StopAndJoin() error
}

// WorkerStats are a worker's counters.
type WorkerStats struct {
	Batches          uint64 // handler calls
	Events           uint64 // entries handed to the handler
	Saves            uint64 // successful checkpoint saves
	SaveFailures     uint64 // failed or conflicting saves
	Conflicts        uint64 // saves that lost a compare-and-swap
	GapObservations  uint64
	GapSequences     uint64 // sequences covered by gap observations
	Restarts         uint64 // handler panics that restarted
	TransientErrors  uint64 // source errors retried
	Committed        uint64 // committed position
	CommittedStarted bool
	// Riding out checkpoint-store outages (commit.go):
	CheckpointRetries uint64        // loads and saves retried after transient store errors
	Reconciled        uint64        // held commits found to have landed after all
	PendingCommit     bool          // a handled batch waits for its commit now
	CheckpointOutage  time.Duration // total time spent waiting for the store
	// Handler failures (failure.go, park.go):
	Failures       uint64 // failed handler calls (Fail or panic)
	Retries        uint64 // handler calls that retried after a failure
	ParkedEntities uint64 // entities parked now
	ParkedEntries  uint64 // entries parked now (of those entities)
	Replayed       uint64 // parked entries handed back by replays
}

// Worker is a supervised cursor worker: one goroutine pulling a
// region from a source, handing batches to a handler, committing durable
// checkpoints with compare-and-swap, and restarting after handler panics
// under its policy.
type Worker struct {
	src     Source
	region  engine.Region
	cfg     WorkerConfig
	handler Handler
	log     hclog.Logger
	witness *AtLeastOnce

	baseCtx  context.Context // values for handler and saves; never cancelled
	stopCtx  context.Context // cancelled by Stop or the start context
	stop     context.CancelFunc
	done     chan struct{}
	errOnce  sync.Once
	err      error
	hookOnce sync.Once

	lastPanic   atomic.Pointer[string]
	lastFailure atomic.Pointer[failure]
	stats       struct {
		batches, events, saves, saveFailures, conflicts atomic.Uint64
		gaps, gapSeqs, restarts, transient, committed   atomic.Uint64
		committedStarted                                atomic.Bool
		checkpointRetries, reconciled                   atomic.Uint64
		pendingCommit                                   atomic.Bool
		outageNanos                                     atomic.Int64
		failures, retries                               atomic.Uint64
		parkedEntities, parkedEntries, replayed         atomic.Uint64
	}
}

var _ Handle = (*Worker)(nil)

// StartWorker validates cfg, region and the checkpoint id synchronously
// (starting nothing on failure), mints the witness when durable, and
// starts the worker goroutine. Checkpoint loading happens inside it, so
// startup failures surface through Join. Cancelling ctx is the same as
// Stop. The worker uses src until it exits.
func StartWorker(ctx context.Context, src Source, region engine.Region, cfg WorkerConfig, h Handler) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := region.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, &engine.ConfigError{Field: "handler", Rule: "must not be nil"}
	}
	cfg = cfg.withDefaults()
	w := &Worker{
		src: src, region: region, cfg: cfg, handler: h,
		baseCtx: context.WithoutCancel(ctx),
		done:    make(chan struct{}),
	}
	w.log = cfg.Logger.Named("worker").With("worker", cfg.WorkerID, "region", region.Spec())
	if cfg.CheckpointID != "" {
		w.witness = &AtLeastOnce{checkpointID: cfg.CheckpointID}
		w.log = w.log.With("checkpoint-id", cfg.CheckpointID)
	}
	w.stopCtx, w.stop = context.WithCancel(ctx)
	go w.run()
	return w, nil
}

// Stop requests stop. An idle park or backoff ends at once; an in-flight
// batch completes and its action (save included) is applied.
func (w *Worker) Stop() { w.stop() }

// Join waits for the worker to exit and returns the first recorded error.
func (w *Worker) Join() error {
	<-w.done
	return w.err
}

// StopAndJoin requests stop and waits.
func (w *Worker) StopAndJoin() error {
	w.Stop()
	return w.Join()
}

// Done is closed when the worker has exited (after its last checkpoint
// write returned).
func (w *Worker) Done() <-chan struct{} { return w.done }

// Witness returns the worker's witness (nil for in-memory workers).
func (w *Worker) Witness() *AtLeastOnce { return w.witness }

// LastPanic returns the text of the last handler panic ("" if none).
func (w *Worker) LastPanic() string {
	if p := w.lastPanic.Load(); p != nil {
		return *p
	}
	return ""
}

// LastFailure returns the text of the last handler failure, a panic's or
// an error's ("" if none).
func (w *Worker) LastFailure() string {
	if f := w.lastFailure.Load(); f != nil {
		return f.text
	}
	return ""
}

// Stats returns a snapshot of the worker's counters.
func (w *Worker) Stats() WorkerStats {
	return WorkerStats{
		Batches: w.stats.batches.Load(), Events: w.stats.events.Load(),
		Saves: w.stats.saves.Load(), SaveFailures: w.stats.saveFailures.Load(),
		Conflicts: w.stats.conflicts.Load(), GapObservations: w.stats.gaps.Load(),
		GapSequences: w.stats.gapSeqs.Load(), Restarts: w.stats.restarts.Load(),
		TransientErrors: w.stats.transient.Load(), Committed: w.stats.committed.Load(),
		CommittedStarted:  w.stats.committedStarted.Load(),
		CheckpointRetries: w.stats.checkpointRetries.Load(), Reconciled: w.stats.reconciled.Load(),
		PendingCommit: w.stats.pendingCommit.Load(), CheckpointOutage: time.Duration(w.stats.outageNanos.Load()),
		Failures: w.stats.failures.Load(), Retries: w.stats.retries.Load(),
		ParkedEntities: w.stats.parkedEntities.Load(), ParkedEntries: w.stats.parkedEntries.Load(),
		Replayed: w.stats.replayed.Load(),
	}
}

// record keeps the first error; later ones are logged only.
func (w *Worker) record(err error) {
	first := false
	w.errOnce.Do(func() { w.err, first = err, true })
	if !first {
		w.log.Debug("later error not recorded (first error wins)", "error", err)
	}
}

func (w *Worker) stopping() bool { return w.stopCtx.Err() != nil }

func (w *Worker) durable() bool { return w.witness != nil }

// position is the worker's committed resume point.
type position struct {
	pos     uint64
	started bool
}

func (w *Worker) setCommitted(p position) {
	w.stats.committed.Store(p.pos)
	w.stats.committedStarted.Store(p.started)
}

func (w *Worker) run() {
	defer close(w.done)
	defer func() {
		if p := recover(); p != nil {
			text := panicText(p)
			w.log.Error("worker crashed", "panic", text, "stack", string(debug.Stack()))
			w.record(&WorkerCrashedError{Panic: text})
		}
	}()
	w.loop()
}

func (w *Worker) loop() {
	cfg := w.cfg
	// 1. Build the cursor. Loading runs even if stop was already requested:
	// a broken checkpoint must be reported.
	start, info, ok := w.resume()
	if !ok {
		return
	}
	if start.Record == nil && cfg.From != (StartFrom{}) {
		ctx, cancel := context.WithTimeout(w.stopCtx, cfg.SaveTimeout)
		p, err := cfg.From.position(ctx, w.src, info.Visible)
		cancel()
		if err != nil {
			if !w.stopping() {
				w.log.Error("cannot find the start position", "from", cfg.From.String(), "error", err)
				w.record(err)
			}
			return
		}
		start.Position, start.Started = p.pos, p.started
		w.log.Info("no checkpoint record: starting where From says", "from", cfg.From.String(), "position", p.pos, "started", p.started)
	}
	cur := &Cursor{src: w.src, region: w.region}
	defer cur.Close()
	cur.Restore(start.Position, start.Started)
	st := loopState{
		cur: cur, committed: position{start.Position, start.Started}, rev: start.Revision,
		journalID: start.JournalID, rst: restartState{windowStart: cfg.Clock.Now()},
	}
	journalID := st.journalID
	w.setCommitted(st.committed)
	retry := backoff{base: cfg.IdleTimeout}
	w.log.Debug("worker started", "position", st.committed.pos, "started", st.committed.started)
	if w.parking() && !w.loadParked(&st) {
		return
	}

	for !w.stopping() {
		if w.parking() && !w.tendParked(&st) {
			return
		}
		batch, gaps, snap, err := cur.next(w.stopCtx, cfg.BatchSize, w.parkWait(cfg.IdleTimeout))
		if err != nil {
			switch {
			case errors.Is(err, ErrTransient):
				if w.stopping() {
					return
				}
				w.stats.transient.Add(1)
				w.log.Warn("source unavailable; retrying", "error", err, "backoff", retry.next())
				if !retry.wait(w.stopCtx) {
					return
				}
				continue
			case w.stopping() && errors.Is(err, context.Canceled):
				return // the poll was cut short by Stop: nothing went wrong
			}
			// Fatal, even when Stop raced it: Join must report it.
			w.log.Error("poll failed", "error", err)
			w.record(err)
			return
		}
		retry.reset()
		if snap.Incarnation != info.Incarnation && snap.Incarnation != (engine.ID128{}) {
			// A new writer incarnation: re-check journal and bound against
			// what this worker committed.
			if info, ok = w.fetchInfo(); !ok {
				return
			}
			if err := checkpoint.CheckSource(journalID, st.committed.pos, st.committed.started, info); err != nil {
				w.log.Error("checkpoint does not fit the new writer incarnation", "error", err)
				w.record(err)
				return
			}
			w.log.Info("source has a new incarnation", "incarnation", info.Incarnation.String())
		}
		if len(batch) == 0 {
			continue // next parked
		}

		if !w.deliver(&st, batch, gaps) {
			return
		}
	}
}

// resume finds where the worker starts: for a durable worker, its
// checkpoint under every load rule (checkpoint.Load); for an
// in-memory one, the beginning. It also returns the source's info. ok is
// false when the worker must exit (an error was recorded, or stop was
// requested while the source was unavailable).
func (w *Worker) resume() (start checkpoint.Resume, info engine.SourceInfo, ok bool) {
	if !w.durable() {
		if info, ok = w.fetchInfo(); !ok {
			return checkpoint.Resume{}, info, false
		}
		return checkpoint.Resume{JournalID: info.JournalID.String()}, info, true
	}
	load := func() (checkpoint.Resume, error) {
		ctx, cancel := context.WithTimeout(w.baseCtx, w.cfg.SaveTimeout)
		defer cancel()
		return checkpoint.Load(ctx, w.cfg.Checkpoints, w.cfg.CheckpointID, w.region,
			func(context.Context) (engine.SourceInfo, error) {
				var fetched bool
				if info, fetched = w.fetchInfo(); !fetched {
					return info, errInfoAbandoned
				}
				return info, nil
			})
	}
	start, err := load()
	if errors.Is(err, checkpoint.ErrUnavailable) {
		// The store cannot be reached yet (a bucket whose stream has no
		// leader yet, a node restarting): retry with backoff until it
		// answers, Stop, or the CheckpointOutage bound.
		begin := time.Now()
		w.log.Warn("checkpoint store unavailable at start; retrying", "error", err)
		retry := backoff{base: w.cfg.IdleTimeout}
		for errors.Is(err, checkpoint.ErrUnavailable) {
			w.stats.checkpointRetries.Add(1)
			retry.next()
			if !retry.wait(w.stopCtx) {
				w.stats.outageNanos.Add(int64(time.Since(begin)))
				return start, info, false
			}
			if bound := w.cfg.CheckpointOutage; bound > 0 && time.Since(begin) > bound {
				err = fmt.Errorf("%w: unavailable for longer than CheckpointOutage (%s): %w", checkpoint.ErrUnavailable, bound, err)
				break
			}
			start, err = load()
		}
		w.stats.outageNanos.Add(int64(time.Since(begin)))
		if err == nil {
			w.log.Info("checkpoint store reachable", "outage", time.Since(begin).Round(time.Millisecond))
		}
	}
	switch {
	case errors.Is(err, errInfoAbandoned):
		return start, info, false // fetchInfo recorded why, or stop was requested
	case err != nil:
		w.log.Error("cannot resume from checkpoint", "error", err)
		w.record(err)
		return start, info, false
	case w.cfg.Epoch > 0 && (start.Record == nil || start.Record.Owner != w.cfg.WorkerID || start.Record.Epoch != w.cfg.Epoch):
		// A partition this member claimed at Epoch: the record must still
		// be its claim, or another member has claimed it since.
		owner, epoch := "", uint64(0)
		if start.Record != nil {
			owner, epoch = start.Record.Owner, start.Record.Epoch
		}
		err := fmt.Errorf("%w: %s is held by %q at epoch %d, not by this worker at epoch %d",
			checkpoint.ErrConflict, w.cfg.Checkpoints.Location(w.cfg.CheckpointID), owner, epoch, w.cfg.Epoch)
		w.log.Warn("partition claimed by another member before this one started", "error", err)
		w.record(&CheckpointWriteError{ID: w.cfg.CheckpointID, Cause: err})
		return start, info, false
	}
	return start, info, true
}

// errInfoAbandoned tells resume that fetchInfo gave up (and recorded why,
// if anything went wrong).
var errInfoAbandoned = errors.New("delivery: source info abandoned")

// fetchInfo reads the source's bounds, retrying transient errors with
// backoff until stop. ok is false when the worker must exit (an error was
// recorded, or stop was requested).
func (w *Worker) fetchInfo() (engine.SourceInfo, bool) {
	retry := backoff{base: w.cfg.IdleTimeout}
	for {
		// Not the stop context: a stop requested during startup must not
		// skip the journal and bound checks (§9.3 step 1); Stop still
		// interrupts the backoff below.
		ctx, cancel := context.WithTimeout(w.baseCtx, w.cfg.SaveTimeout)
		info, err := w.src.Info(ctx)
		cancel()
		if err == nil {
			return info, true
		}
		if !errors.Is(err, ErrTransient) {
			// Fatal, even when Stop raced it: a startup failure is
			// reported even if stop was requested (§9.3 step 1).
			w.record(err)
			return engine.SourceInfo{}, false
		}
		if w.stopping() {
			return engine.SourceInfo{}, false
		}
		w.stats.transient.Add(1)
		w.log.Warn("source unavailable; retrying", "error", err, "backoff", retry.next())
		if !retry.wait(w.stopCtx) {
			return engine.SourceInfo{}, false
		}
	}
}

func (w *Worker) callHandler(batch []engine.Entry, d *Delivery) (a Action, panicked bool, text string) {
	if observe := w.cfg.ObserveHandler; observe != nil {
		start := time.Now()
		defer func() { observe(len(batch), time.Since(start)) }()
	}
	defer func() {
		if p := recover(); p != nil {
			a, panicked, text = 0, true, panicText(p)
		}
	}()
	return w.handler(w.baseCtx, batch, d), false, ""
}
