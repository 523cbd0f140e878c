package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Action is what a handler asks the worker to do after a batch.
type Action int

const (
	// Continue saves the post-batch position (durable workers) and goes on.
	Continue Action = iota
	// Stop saves the post-batch position (durable workers) and stops.
	Stop
	// StopWithRollback stops without saving; the batch will be delivered
	// again to the next worker on this checkpoint.
	StopWithRollback
)

func (a Action) String() string {
	switch a {
	case Continue:
		return "continue"
	case Stop:
		return "stop"
	case StopWithRollback:
		return "stop-with-rollback"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Delivery is the context of one batch.
type Delivery struct {
	// Witness is non-nil iff the worker is durable.
	Witness *AtLeastOnce
	// Gaps are the gap observations of this batch (recomputed on
	// redelivery).
	Gaps []GapObservation
}

// EffectKey returns the stable effect key of entry e of this batch.
func (d *Delivery) EffectKey(e Entry) EffectKey { return DeriveEffectKey(d.Witness, e) }

// Handler handles one batch of 1..BatchSize entries. A panic is a handler
// failure under the restart policy. Its ctx is not cancelled by Stop: an
// in-flight batch always completes. Handlers must be idempotent.
type Handler func(ctx context.Context, batch []Entry, d *Delivery) Action

// WorkerConfig configures a cursor worker. Start from DefaultWorkerConfig:
// unlike other configs, a zero BatchSize or IdleTimeout is rejected
// (ErrInvalidConfig), as a zero batch never delivers and a zero timeout
// busy-spins.
type WorkerConfig struct {
	// BatchSize is the most entries per handler call (default 64; > 0).
	BatchSize int
	// IdleTimeout bounds a park when the region has nothing new (default
	// 10 ms; > 0). Epoch wake-ups make delivery edge-triggered; the timeout
	// is the safety net for a lost wake-up, and the base of the backoff
	// after transient source errors (doubling to at most 1 s).
	IdleTimeout time.Duration
	// Restart is the handler-panic policy (default RestartOnce; nil means
	// RestartOnce).
	Restart RestartPolicy
	// CheckpointID makes the worker durable: its position is saved in
	// Checkpoints under this id after each Continue or Stop.
	CheckpointID string
	// Checkpoints is the checkpoint store; required when CheckpointID is set.
	Checkpoints CheckpointStore
	// WorkerID is saved as the record's owner (default host-pid-random).
	WorkerID string
	// Clock drives the restart window (default SystemClock()).
	Clock Clock
	// WallClock stamps updated_ms (default time.Now).
	WallClock func() time.Time
	// SaveTimeout bounds each checkpoint load and save (default 30 s).
	SaveTimeout time.Duration
	// OnRestartBudgetExhausted fires at most once, with the last panic text.
	OnRestartBudgetExhausted func(lastPanic string)
	// OnCheckpointFailure receives the id and the original error of a
	// failed save; without it the failure is logged at error level.
	OnCheckpointFailure func(id string, err error)
	// Logger receives the worker's logs; nil means none.
	Logger hclog.Logger
}

// DefaultWorkerConfig returns the documented defaults: batch 64, idle
// 10 ms, RestartOnce, in-memory (no checkpoint id), no hooks.
func DefaultWorkerConfig() WorkerConfig {
	return WorkerConfig{
		BatchSize:   64,
		IdleTimeout: 10 * time.Millisecond,
		Restart:     RestartOnce{},
	}
}

// Validate reports every problem of c at once.
func (c WorkerConfig) Validate() error {
	var errs []error
	if c.BatchSize <= 0 {
		errs = append(errs, &ConfigError{Field: "BatchSize", Rule: "must be > 0"})
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, &ConfigError{Field: "IdleTimeout", Rule: "must be > 0"})
	}
	if c.Restart != nil {
		if err := c.Restart.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.SaveTimeout < 0 {
		errs = append(errs, &ConfigError{Field: "SaveTimeout", Rule: "must be >= 0 (0 means 30s)"})
	}
	if c.CheckpointID != "" {
		if err := ValidateCheckpointID(c.CheckpointID); err != nil {
			errs = append(errs, err)
		}
		if c.Checkpoints == nil {
			errs = append(errs, &ConfigError{Field: "Checkpoints", Rule: "is required with a CheckpointID"})
		}
	}
	return errors.Join(errs...)
}

func (c WorkerConfig) withDefaults() WorkerConfig {
	if c.Restart == nil {
		c.Restart = RestartOnce{}
	}
	if c.WorkerID == "" {
		c.WorkerID = defaultWorkerID()
	}
	if c.Clock == nil {
		c.Clock = SystemClock()
	}
	if c.WallClock == nil {
		c.WallClock = time.Now
	}
	if c.SaveTimeout == 0 {
		c.SaveTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

func defaultWorkerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

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
}

// Worker is a supervised cursor worker (SPEC §9): one goroutine pulling a
// region from a source, handing batches to a handler, committing durable
// checkpoints with compare-and-swap, and restarting after handler panics
// under its policy.
type Worker struct {
	src     Source
	region  Region
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

	lastPanic atomic.Pointer[string]
	stats     struct {
		batches, events, saves, saveFailures, conflicts atomic.Uint64
		gaps, gapSeqs, restarts, transient, committed   atomic.Uint64
		committedStarted                                atomic.Bool
	}
}

var _ Handle = (*Worker)(nil)

// StartWorker validates cfg, region and the checkpoint id synchronously
// (starting nothing on failure), mints the witness when durable, and
// starts the worker goroutine. Checkpoint loading happens inside it, so
// startup failures surface through Join. Cancelling ctx is the same as
// Stop. The worker uses src until it exits.
func StartWorker(ctx context.Context, src Source, region Region, cfg WorkerConfig, h Handler) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := region.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, &ConfigError{Field: "handler", Rule: "must not be nil"}
	}
	cfg = cfg.withDefaults()
	w := &Worker{
		src: src, region: region, cfg: cfg, handler: h,
		baseCtx: context.WithoutCancel(ctx),
		done:    make(chan struct{}),
	}
	w.log = cfg.Logger.Named("worker").With("worker", cfg.WorkerID, "region", region.Identity())
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

// Stats returns a snapshot of the worker's counters.
func (w *Worker) Stats() WorkerStats {
	return WorkerStats{
		Batches: w.stats.batches.Load(), Events: w.stats.events.Load(),
		Saves: w.stats.saves.Load(), SaveFailures: w.stats.saveFailures.Load(),
		Conflicts: w.stats.conflicts.Load(), GapObservations: w.stats.gaps.Load(),
		GapSequences: w.stats.gapSeqs.Load(), Restarts: w.stats.restarts.Load(),
		TransientErrors: w.stats.transient.Load(), Committed: w.stats.committed.Load(),
		CommittedStarted: w.stats.committedStarted.Load(),
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
			w.log.Error("worker crashed", "panic", text)
			w.record(&WorkerCrashedError{Panic: text})
		}
	}()
	w.loop()
}

func (w *Worker) loop() {
	cfg := w.cfg
	// 1. Build the cursor. Loading runs even if stop was already requested:
	// a broken checkpoint must be reported.
	cur := &Cursor{src: w.src, region: w.region}
	var rp resumePoint
	if w.durable() {
		ctx, cancel := context.WithTimeout(w.baseCtx, cfg.SaveTimeout)
		var err error
		rp, err = loadCheckpoint(ctx, cfg.Checkpoints, cfg.CheckpointID, w.region)
		cancel()
		if err != nil {
			w.log.Error("cannot resume from checkpoint", "error", err)
			w.record(err)
			return
		}
	}
	info, ok := w.fetchInfo()
	if !ok {
		return
	}
	journalID := info.JournalID.String()
	if err := checkAgainstSource(rp.record, rp.position, rp.started, info); err != nil {
		w.log.Error("checkpoint does not fit the journal", "error", err)
		w.record(err)
		return
	}
	cur.Restore(rp.position, rp.started)
	committed := position{rp.position, rp.started}
	w.setCommitted(committed)
	rev := rp.revision
	rst := restartState{windowStart: cfg.Clock.Now()}
	backoff := time.Duration(0)
	w.log.Debug("worker started", "position", committed.pos, "started", committed.started)

	for !w.stopping() {
		batch, gaps, snap, err := cur.pollBatch(w.stopCtx, cfg.BatchSize)
		if err != nil {
			if w.stopping() {
				return
			}
			if errors.Is(err, ErrTransient) {
				backoff = nextBackoff(backoff, cfg.IdleTimeout)
				w.stats.transient.Add(1)
				w.log.Warn("source unavailable; retrying", "error", err, "backoff", backoff)
				if !w.sleep(backoff) {
					return
				}
				continue
			}
			w.log.Error("poll failed", "error", err)
			w.record(err)
			return
		}
		backoff = 0
		if snap.Incarnation != info.Incarnation && snap.Incarnation != (ID128{}) {
			// A new writer incarnation: re-check journal and bound against
			// what this worker committed.
			if info, ok = w.fetchInfo(); !ok {
				return
			}
			if info.JournalID.String() != journalID {
				w.record(&JournalMismatchError{Stored: journalID, Current: info.JournalID.String()})
				return
			}
			if committed.started && committed.pos >= info.Visible {
				w.record(&AheadError{Position: committed.pos, Visible: info.Visible})
				return
			}
			w.log.Info("source has a new incarnation", "incarnation", info.Incarnation.String())
		}
		if len(batch) == 0 {
			w.src.Park(w.stopCtx, snap, cfg.IdleTimeout)
			continue
		}

		w.stats.batches.Add(1)
		w.stats.events.Add(uint64(len(batch)))
		for _, g := range gaps {
			w.stats.gaps.Add(1)
			for _, r := range g.Ranges {
				w.stats.gapSeqs.Add(r.End - r.Start)
			}
		}
		action, panicked, text := w.callHandler(batch, &Delivery{Witness: w.witness, Gaps: gaps})
		if panicked {
			w.lastPanic.Store(&text)
			if cfg.Restart.allow(&rst, cfg.Clock.Now()) {
				w.stats.restarts.Add(1)
				w.log.Warn("handler panicked; restarting at the committed position",
					"panic", text, "position", committed.pos, "policy", cfg.Restart.String())
				cur.Restore(committed.pos, committed.started) // the store is not re-read
				continue
			}
			w.log.Error("handler panicked; restart budget exhausted", "panic", text, "policy", cfg.Restart.String())
			w.hookOnce.Do(func() {
				if cfg.OnRestartBudgetExhausted != nil {
					cfg.OnRestartBudgetExhausted(text)
				}
			})
			w.record(&BudgetExhaustedError{LastPanic: text})
			return
		}

		post := position{}
		post.pos, post.started = cur.Checkpoint()
		switch action {
		case Continue, Stop:
			if w.durable() {
				newRev, err := w.save(post, rev, journalID)
				if err != nil {
					if action == Continue {
						cur.Restore(committed.pos, committed.started)
					}
					w.record(&CheckpointWriteError{ID: cfg.CheckpointID, Cause: err})
					return
				}
				rev = newRev
			}
			committed = post
			w.setCommitted(committed)
			if action == Stop {
				w.log.Debug("handler asked to stop", "position", committed.pos)
				return
			}
		case StopWithRollback:
			cur.Restore(committed.pos, committed.started)
			w.log.Debug("handler asked to stop with rollback", "position", committed.pos)
			return
		default:
			w.record(&ConfigError{Field: "handler action", Rule: fmt.Sprintf("%v is not Continue, Stop or StopWithRollback", action)})
			return
		}
	}
}

// fetchInfo reads the source's bounds, retrying transient errors with
// backoff until stop. ok is false when the worker must exit (an error was
// recorded, or stop was requested).
func (w *Worker) fetchInfo() (SourceInfo, bool) {
	backoff := time.Duration(0)
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
		if w.stopping() {
			return SourceInfo{}, false
		}
		if !errors.Is(err, ErrTransient) {
			w.record(err)
			return SourceInfo{}, false
		}
		backoff = nextBackoff(backoff, w.cfg.IdleTimeout)
		w.stats.transient.Add(1)
		w.log.Warn("source unavailable; retrying", "error", err, "backoff", backoff)
		if !w.sleep(backoff) {
			return SourceInfo{}, false
		}
	}
}

func nextBackoff(cur, base time.Duration) time.Duration {
	if cur == 0 {
		return min(base, time.Second)
	}
	return min(2*cur, time.Second)
}

// sleep waits d or until stop; it reports false on stop.
func (w *Worker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.stopCtx.Done():
		return false
	}
}

func (w *Worker) callHandler(batch []Entry, d *Delivery) (a Action, panicked bool, text string) {
	defer func() {
		if p := recover(); p != nil {
			a, panicked, text = 0, true, panicText(p)
		}
	}()
	return w.handler(w.baseCtx, batch, d), false, ""
}

// save commits p with compare-and-swap against rev.
func (w *Worker) save(p position, rev Revision, journalID string) (Revision, error) {
	ident := w.region.Identity()
	rec := CheckpointRecord{
		Position: p.pos, Started: p.started, RegionIdentity: &ident, JournalID: journalID,
		Owner: w.cfg.WorkerID, UpdatedMs: uint64(w.cfg.WallClock().UnixMilli()),
	}
	ctx, cancel := context.WithTimeout(w.baseCtx, w.cfg.SaveTimeout)
	defer cancel()
	newRev, err := w.cfg.Checkpoints.Save(ctx, w.cfg.CheckpointID, rec, rev)
	if err == nil {
		w.stats.saves.Add(1)
		return newRev, nil
	}
	w.stats.saveFailures.Add(1)
	if errors.Is(err, ErrCheckpointConflict) {
		w.stats.conflicts.Add(1)
	}
	if w.cfg.OnCheckpointFailure != nil {
		w.cfg.OnCheckpointFailure(w.cfg.CheckpointID, err)
	} else {
		w.log.Error("checkpoint save failed; stopping", "error", err, "position", p.pos)
	}
	return 0, err
}
