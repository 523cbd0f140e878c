package workerapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/kvckpt"
	"github.com/prometheus/client_golang/prometheus"
)

// RunConfig configures `worker run`.
type RunConfig struct {
	Version    string // the binary's version, for batfleet_build_info
	NATS       cli.NATSFlags
	Journal    string
	Region     string
	Checkpoint string // "" runs an in-memory worker (or a group member)
	// Group makes the worker a member of that consumer group (exclusive
	// with Checkpoint), over Partitions partitions with Session.
	Group       string
	Partitions  int
	Session     time.Duration
	GroupBucket string
	Bucket      string // KV bucket of checkpoints
	Replicas    int    // replicas of a bucket this worker creates
	Batch       int
	Idle        time.Duration
	Restart     string
	// Attempts is how often an entry is handed to the handler before it
	// is exhausted (1: no retries); RetryBackoff the wait before the first
	// retry (doubling to 5 s).
	Attempts     int
	RetryBackoff time.Duration
	// OnPoison is what becomes of an exhausted entry: "restart" (the
	// Restart policy decides) or "park" (parked in ParkedBucket with its
	// entity's later entries).
	OnPoison     string
	ParkedBucket string
	// From is where a checkpoint with no record starts: beginning (also
	// ""), end, seq:N or time:RFC3339 (delivery.ParseStartFrom).
	From        string
	ID          string
	Out         string // file path, or "-" for stdout
	Exec        string // shell command line of a long-running handler
	ExecTimeout time.Duration
	// CheckpointOutage bounds how long a checkpoint store outage is
	// ridden out (0: unbounded).
	CheckpointOutage time.Duration
	// WaitWriter is how long to wait at start for a writer of the journal
	// when none answers: WaitForever (the binary's default) waits for one,
	// 0 gives up at once, D gives up after D (a *NoWriterError).
	WaitWriter time.Duration
	HTTP       string
	Stdout     io.Writer
	Stderr     io.Writer
	Log        hclog.Logger
}

// Run runs a remote worker until its handler stops it, it fails, or ctx
// is cancelled (then the batch in hand is finished and committed).
func Run(ctx context.Context, cfg RunConfig) error {
	log := cfg.Log
	region, err := engine.ParseRegion(cfg.Region)
	if err != nil {
		return cli.Usagef("--region: %s", regionRule(err))
	}
	policy, err := ParseRestart(cfg.Restart)
	if err != nil {
		return cli.Usagef("%v", err)
	}
	if err := runFlagErrors(cfg); err != nil {
		return err
	}
	if (cfg.Out == "") == (cfg.Exec == "") {
		return cli.Usagef("give exactly one handler: --out FILE|- or --exec 'CMD ARGS'")
	}
	retry, park, err := poisonFlags(cfg)
	if err != nil {
		return err
	}
	from, err := delivery.ParseStartFrom(cfg.From)
	if err != nil {
		return cli.Usagef("--from %q: want beginning, end, seq:N or time:RFC3339 (e.g. time:2026-12-04T10:00:00Z)", cfg.From)
	}
	wcfg := delivery.DefaultWorkerConfig()
	wcfg.BatchSize, wcfg.IdleTimeout, wcfg.Restart, wcfg.Retry = cfg.Batch, cfg.Idle, policy, retry
	wcfg.WorkerID, wcfg.Logger, wcfg.CheckpointOutage, wcfg.From = cfg.ID, log, cfg.CheckpointOutage, from
	// The registry exists before the workers, whose hooks feed its
	// histograms; it is served only with --http.
	version := cfg.Version
	if version == "" {
		version = "unknown"
	}
	reg := cli.NewRegistry("worker", version)
	lat := newWorkerLatencies(reg)
	wcfg.ObserveHandler, wcfg.ObserveSave = lat.handler, lat.save
	if cfg.Checkpoint != "" {
		if err := checkpoint.ValidateID(cfg.Checkpoint); err != nil {
			return cli.Usagef("--checkpoint: %v", err)
		}
	}
	// Validated before connecting, without the checkpoint binding: the
	// store is set once the bucket is open.
	if err := wcfg.Validate(); err != nil {
		return workerConfigErrors(err)
	}
	var gcfg fleet.GroupConfig
	if cfg.Group != "" {
		if cfg.Checkpoint != "" {
			return cli.Usagef("--group excludes --checkpoint: a group's partitions have checkpoints of their own")
		}
		if _, ok := region.Partition(); ok {
			return cli.Usagef("--region: a group's region must not name a partition (members add their own)")
		}
		gcfg = fleet.GroupConfig{Journal: cfg.Journal, Name: cfg.Group, Region: region, Partitions: cfg.Partitions,
			Session: cfg.Session, MemberID: cfg.ID, Bucket: cfg.GroupBucket, Replicas: cfg.Replicas, Worker: wcfg, Logger: log}
		if err := groupFlagErrors(gcfg); err != nil {
			return err
		}
	}

	nc, err := cfg.NATS.Connect(cfg.NATS.URL, "batfleet-worker", log)
	if err != nil {
		return &cli.NATSError{Err: err}
	}
	defer nc.Close()
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: cfg.Journal, Logger: log})
	if err != nil {
		return err
	}
	defer client.Close()
	var ckpts *kvckpt.Store
	var js jetstream.JetStream
	if cfg.Checkpoint != "" || cfg.Group != "" {
		js, err = jetstream.New(nc)
		if err != nil {
			return err
		}
		err = rideOut(ctx, "open the checkpoint bucket", cfg.CheckpointOutage, log, func() (err error) {
			ckpts, err = kvckpt.Open(ctx, js, kvckpt.Config{Journal: cfg.Journal, Bucket: cfg.Bucket, Replicas: cfg.Replicas})
			return err
		})
		if err != nil {
			return fmt.Errorf("checkpoint bucket: %w", err)
		}
	}
	if cfg.Checkpoint != "" {
		wcfg.CheckpointID, wcfg.Checkpoints = cfg.Checkpoint, ckpts
	}
	if park {
		var parked *kvckpt.ParkedStore
		err := rideOut(ctx, "open the parked bucket", cfg.CheckpointOutage, log, func() (err error) {
			parked, err = ckpts.OpenParked(ctx, cfg.ParkedBucket)
			return err
		})
		if err != nil {
			return fmt.Errorf("parked bucket: %w", err)
		}
		wcfg.Parked, gcfg.Worker.Parked = parked, parked
	}

	var handler delivery.Handler
	var closeHandler func() error
	if cfg.Out != "" {
		h, err := newOutHandler(cfg.Out, cfg.Stdout)
		if err != nil {
			return cli.Usagef("%v", err)
		}
		handler, closeHandler = h.handle, h.Close
	} else {
		h := newExecHandler(cfg.Exec, cfg.ExecTimeout, cfg.Stderr, log)
		handler, closeHandler = h.handle, h.Close
	}
	defer closeHandler()

	if err := awaitWriter(ctx, client, cfg.Journal, cfg.WaitWriter, log); err != nil {
		return err
	}

	var lastBatch atomic.Int64
	counted := func(ctx context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
		a := handler(ctx, b, d)
		lastBatch.Store(time.Now().UnixMilli())
		return a
	}
	if cfg.Group != "" {
		return runMember(ctx, cfg, gcfg, nc, client, ckpts, js, counted, reg)
	}
	w, err := delivery.StartWorker(ctx, client, region, wcfg, counted)
	if err != nil {
		return cli.Usagef("%v", err)
	}
	if cfg.HTTP != "" {
		registerWorkerMetrics(reg, w, client, region)
		// Liveness never follows NATS (a NATS blip must not restart a
		// fleet); readiness does.
		live := func() error {
			select {
			case <-w.Done():
				return errors.New("worker stopped")
			default:
			}
			return nil
		}
		hs, err := cli.StartProbes(cfg.HTTP, reg, cli.Probes{Live: live, Ready: func() error {
			if err := live(); err != nil {
				return err
			}
			if !nc.IsConnected() {
				return errors.New("not connected to NATS")
			}
			return nil
		}}, log)
		if err != nil {
			w.Stop()
			_ = w.Join()
			return err
		}
		defer hs.Stop()
	}
	log.Info("worker running", "journal", cfg.Journal, "region", region.Spec(),
		"checkpoint-id", cfg.Checkpoint, "batch", cfg.Batch, "retry", wcfg.Retry.String(), "on-poison", onPoison(park))
	err = w.Join()
	if errors.Is(err, checkpoint.ErrConflict) && ckpts != nil {
		log.Debug("checkpoint conflict", "checkpoint-id", cfg.Checkpoint, "cause", err)
		err = heldBy(ckpts, cfg.Checkpoint, err)
	}
	st := w.Stats()
	log.Info("worker stopped", "events", st.Events, "batches", st.Batches, "committed", st.Committed, "error", err)
	return err
}

// heldBy reads the record of checkpoint id after a lost compare-and-swap
// and says who holds it now: a *HeldError wrapping err.
func heldBy(store *kvckpt.Store, id string, err error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	he := &HeldError{Checkpoint: id, Err: err}
	rec, _, lerr := store.Load(ctx, id)
	switch {
	case errors.Is(lerr, checkpoint.ErrNotFound):
		he.Reset = true
	case lerr == nil:
		he.Owner = rec.Owner
		he.LastCommit = time.Since(time.UnixMilli(int64(rec.UpdatedMs)))
	}
	return he
}

// WaitForever is RunConfig.WaitWriter for "wait for a writer however
// long it takes" (--wait-writer forever, the default).
const WaitForever time.Duration = -1

// writerProbe is how often a worker waiting for a writer asks again.
const writerProbe = 500 * time.Millisecond

// awaitWriter returns once a writer answers for journal, saying once, at
// the first probe that finds none, that no writer serves it. It gives up
// after wait (a *NoWriterError) unless wait is WaitForever, and returns
// ctx's error when ctx ends first. Any other failure of the probe (a
// busy or restarting writer, a timeout) is left to the worker, which
// retries its pulls.
func awaitWriter(ctx context.Context, c *fleet.Client, journal string, wait time.Duration, log hclog.Logger) error {
	start := time.Now()
	var tick *time.Ticker
	for {
		_, err := c.Describe(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !noWriter(err) {
			if tick != nil {
				tick.Stop()
				log.Info("a writer serves the journal now", "journal", journal, "waited", time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if wait != WaitForever && time.Since(start) >= wait {
			if tick != nil {
				tick.Stop()
			}
			return &NoWriterError{Journal: journal, Waited: wait}
		}
		if tick == nil {
			until := "waiting for one (--wait-writer forever)"
			if wait != WaitForever {
				until = fmt.Sprintf("waiting for one for up to %s (--wait-writer)", wait)
			}
			log.Warn(fmt.Sprintf("no writer serves journal %q (nothing answers on its subjects: is --journal right, and is its writer running?); %s", journal, until),
				"journal", journal)
			tick = time.NewTicker(writerProbe)
		}
		select {
		case <-ctx.Done():
			tick.Stop()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// noWriter reports whether a request failed because nothing answers the
// journal's subjects (NATS no responders): fleet reports that as
// ErrUnavailable without a reply, where a writer's own 503 is a
// *fleet.RemoteError.
func noWriter(err error) bool {
	var re *fleet.RemoteError
	return errors.Is(err, fleet.ErrUnavailable) && !errors.As(err, &re)
}

// runFlagErrors checks the flags of `worker run` that the worker's own
// configuration would report by Go field name, naming each flag as it is
// typed with its value and the rule, all at once.
func runFlagErrors(cfg RunConfig) error {
	var msgs []string
	if cfg.Batch < 1 {
		msgs = append(msgs, fmt.Sprintf("--batch %d: must be >= 1 (the most entries per handler call)", cfg.Batch))
	}
	if cfg.Idle <= 0 {
		msgs = append(msgs, fmt.Sprintf("--idle %s: must be > 0 (how long the writer holds an idle pull, e.g. 30s)", cfg.Idle))
	}
	if cfg.ExecTimeout <= 0 {
		msgs = append(msgs, fmt.Sprintf("--exec-timeout %s: must be > 0 (how long --exec may take to answer a batch, e.g. 30s)", cfg.ExecTimeout))
	}
	if cfg.CheckpointOutage < 0 {
		msgs = append(msgs, fmt.Sprintf("--checkpoint-outage %s: must be >= 0 (0 rides out any outage)", cfg.CheckpointOutage))
	}
	if cfg.WaitWriter < 0 && cfg.WaitWriter != WaitForever {
		msgs = append(msgs, fmt.Sprintf("--wait-writer %s: must be >= 0, or forever", cfg.WaitWriter))
	}
	if len(msgs) > 0 {
		return cli.Usagef("%s", strings.Join(msgs, "; "))
	}
	return nil
}

// workerFlags maps delivery.WorkerConfig fields to the flags that set them.
var workerFlags = map[string]string{
	"BatchSize": "--batch", "IdleTimeout": "--idle", "CheckpointOutage": "--checkpoint-outage",
	"CheckpointID": "--checkpoint", "WorkerID": "--id",
}

// workerConfigErrors reports the worker configuration's problems by flag
// name, as a usage error (runFlagErrors catches what users can type; this
// names what is left).
func workerConfigErrors(err error) error {
	var all []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	} else {
		all = []error{err}
	}
	var msgs []string
	for _, e := range all {
		var ce *engine.ConfigError
		if errors.As(e, &ce) {
			if flag, ok := workerFlags[ce.Field]; ok {
				msgs = append(msgs, flag+": "+ce.Rule)
				continue
			}
		}
		msgs = append(msgs, displayRule(e))
	}
	return cli.Usagef("%s", strings.Join(msgs, "; "))
}

// regionRule says what is wrong with a --region value, in the words of
// the syntax (kinds and categories in hex, as typed), without the
// package prefixes of the errors it carries.
func regionRule(err error) string {
	var cat *engine.CategoryError
	var clock *engine.ClockRangeError
	var re *engine.RegionError
	switch {
	case errors.As(err, &cat):
		return fmt.Sprintf("category %d: out of range, want 0-15 (or 0x0-0xf)", cat.Category)
	case errors.As(err, &clock):
		return fmt.Sprintf("clock %d-%d: the start is after the end (want LO-HI with LO <= HI)", clock.Start, clock.End)
	case errors.As(err, &re):
		rule := displayRule(re.Rule)
		if strings.Contains(rule, re.Field) {
			return rule // "entity prefix \"*\" is not a glob…" names its field already
		}
		return re.Field + ": " + rule
	}
	return displayRule(err)
}

// displayRule is an error's text without the "engine: " prefixes its
// wrapped sentinels add (for people, never for matching).
func displayRule(err error) string {
	return strings.ReplaceAll(err.Error(), "engine: ", "")
}

// poisonFlags checks --attempts, --retry-backoff, --on-poison and
// --parked-bucket, reporting every problem at once as a usage error.
func poisonFlags(cfg RunConfig) (delivery.RetryPolicy, bool, error) {
	var msgs []string
	retry, err := ParseRetry(cfg.Attempts, cfg.RetryBackoff)
	if err != nil {
		msgs = append(msgs, err.Error())
	}
	park, err := ParseOnPoison(cfg.OnPoison, cfg.Checkpoint != "" || cfg.Group != "")
	if err != nil {
		msgs = append(msgs, err.Error())
	}
	if park {
		if err := checkBucketFlag("--parked-bucket", cfg.ParkedBucket); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if len(msgs) > 0 {
		return retry, false, cli.Usagef("%s", strings.Join(msgs, "; "))
	}
	return retry, park, nil
}

func onPoison(park bool) string {
	if park {
		return OnPoisonPark
	}
	return OnPoisonRestart
}

// rideOut runs open until it succeeds, fails for good, or the
// checkpoint store has been unavailable for outage (0: for as long as it
// takes; --checkpoint-outage): a worker started while NATS restarts or a
// bucket's stream elects a leader waits, as a running one does.
func rideOut(ctx context.Context, what string, outage time.Duration, log hclog.Logger, open func() error) error {
	start := time.Now()
	wait := 250 * time.Millisecond
	for {
		err := open()
		if err == nil || !(errors.Is(err, checkpoint.ErrUnavailable) || kvckpt.Transient(err)) || ctx.Err() != nil {
			return err
		}
		if outage > 0 && time.Since(start) >= outage {
			return fmt.Errorf("%w (unavailable for %s, --checkpoint-outage)", err, time.Since(start).Round(time.Second))
		}
		log.Warn("checkpoint store unavailable; retrying", "to", what, "error", err, "backoff", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// workerLatencies are the worker's latency histograms (a group member's
// partitions share them).
type workerLatencies struct {
	handlerCalls *prometheus.HistogramVec
	saves        *prometheus.HistogramVec
}

func newWorkerLatencies(reg *cli.Registry) workerLatencies {
	return workerLatencies{
		handlerCalls: reg.Histogram("batfleet_worker_handler_duration_seconds",
			"Handler calls, one per batch (a retry is a call of its own).", "outcome"),
		saves: reg.Histogram("batfleet_worker_checkpoint_save_duration_seconds",
			"Checkpoint saves (compare-and-swap in JetStream KV), by outcome (ok, error).", "outcome"),
	}
}

func (l workerLatencies) handler(_ int, took time.Duration) {
	l.handlerCalls.WithLabelValues("done").Observe(took.Seconds())
}

func (l workerLatencies) save(took time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	l.saves.WithLabelValues(outcome).Observe(took.Seconds())
}

// lagCounter asks the writer for a region's lag at scrape time: a count
// request per scrape (the writer counts from its index), at most one a
// second per region, bounded by a second; a failed request keeps the last
// answer.
type lagCounter struct {
	client *fleet.Client
	mu     sync.Mutex
	last   map[string]lagAnswer
}

type lagAnswer struct {
	at     time.Time
	pos    uint64
	start  bool
	events float64
}

func (l *lagCounter) count(region engine.Region, pos uint64, started bool) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := region.Identity()
	prev, seen := l.last[key]
	if seen && prev.pos == pos && prev.start == started && time.Since(prev.at) < time.Second {
		return prev.events
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	got, err := l.client.Count(ctx, region, pos, started)
	if err != nil {
		if seen {
			return prev.events
		}
		return math.NaN()
	}
	if l.last == nil {
		l.last = map[string]lagAnswer{}
	}
	a := lagAnswer{at: time.Now(), pos: pos, start: started, events: float64(got.Events)}
	l.last[key] = a
	return a.events
}

func registerWorkerMetrics(reg *cli.Registry, w *delivery.Worker, c *fleet.Client, region engine.Region) {
	c64 := func(name, help string, f func(delivery.WorkerStats) uint64) {
		reg.Counter(name, help, func() float64 { return float64(f(w.Stats())) })
	}
	c64("batfleet_worker_batches_total", "Batches handed to the handler.", func(s delivery.WorkerStats) uint64 { return s.Batches })
	c64("batfleet_worker_events_total", "Entries handed to the handler.", func(s delivery.WorkerStats) uint64 { return s.Events })
	c64("batfleet_worker_checkpoint_saves_total", "Successful checkpoint saves.", func(s delivery.WorkerStats) uint64 { return s.Saves })
	c64("batfleet_worker_checkpoint_failures_total", "Failed checkpoint saves.", func(s delivery.WorkerStats) uint64 { return s.SaveFailures })
	c64("batfleet_worker_checkpoint_conflicts_total", "Checkpoint saves that lost a compare-and-swap.", func(s delivery.WorkerStats) uint64 { return s.Conflicts })
	c64("batfleet_worker_gaps_observed_total", "Gap observations (cancelled ranges skipped).", func(s delivery.WorkerStats) uint64 { return s.GapObservations })
	c64("batfleet_worker_gap_sequences_total", "Sequences covered by gap observations.", func(s delivery.WorkerStats) uint64 { return s.GapSequences })
	c64("batfleet_worker_restarts_total", "Handler failures that restarted the worker.", func(s delivery.WorkerStats) uint64 { return s.Restarts })
	c64("batfleet_worker_source_errors_total", "Transient source errors retried.", func(s delivery.WorkerStats) uint64 { return s.TransientErrors })
	c64("batfleet_worker_checkpoint_retries_total", "Checkpoint loads and saves retried after the store was unavailable.", func(s delivery.WorkerStats) uint64 { return s.CheckpointRetries })
	c64("batfleet_worker_checkpoint_reconciled_total", "Held commits found to have landed when read back.", func(s delivery.WorkerStats) uint64 { return s.Reconciled })
	c64("batfleet_worker_handler_failures_total", "Handler calls that failed (a fail answer, an error, a timeout or a panic).", func(s delivery.WorkerStats) uint64 { return s.Failures })
	c64("batfleet_worker_handler_retries_total", "Handler calls that retried entries after a failure.", func(s delivery.WorkerStats) uint64 { return s.Retries })
	c64("batfleet_worker_replayed_entries_total", "Parked entries handed back to the handler by replays.", func(s delivery.WorkerStats) uint64 { return s.Replayed })
	reg.Gauge("batfleet_worker_parked_entities", "Entities parked now (--on-poison park).", func() float64 { return float64(w.Stats().ParkedEntities) })
	reg.Gauge("batfleet_worker_parked_entries", "Entries of the parked entities parked now.", func() float64 { return float64(w.Stats().ParkedEntries) })
	reg.Counter("batfleet_worker_checkpoint_outage_seconds_total", "Time spent waiting for an unavailable checkpoint store.", func() float64 { return w.Stats().CheckpointOutage.Seconds() })
	reg.Gauge("batfleet_worker_checkpoint_pending_commits", "Handled batches whose commit waits for the checkpoint store (0 or 1).", func() float64 {
		if w.Stats().PendingCommit {
			return 1
		}
		return 0
	})
	reg.Gauge("batfleet_worker_committed_position", "Last committed sequence.", func() float64 { return float64(w.Stats().Committed) })
	lag := &lagCounter{client: c}
	reg.Gauge("batfleet_worker_lag_events", "Events of the worker's region after its committed position, counted by the writer (what worker status shows); NaN until the writer has answered.", func() float64 {
		st := w.Stats()
		return lag.count(region, st.Committed, st.CommittedStarted)
	})
}

// StatusConfig configures `worker status`.
type StatusConfig struct {
	NATS    cli.NATSFlags
	Journal string
	Bucket  string
	JSON    bool
	Out     io.Writer
	Log     hclog.Logger
}

// CheckpointStatus is one row of `worker status`.
type CheckpointStatus struct {
	ID          string  `json:"id"`
	Region      string  `json:"region"`      // the region's identity, as stored
	RegionSpec  string  `json:"region_spec"` // the region as --region takes it
	Position    uint64  `json:"position"`
	Started     bool    `json:"started"`
	LagEvents   int64   `json:"lag_events"`   // matching events after the position, counted by the writer (-1: unknown)
	LagSeconds  float64 `json:"lag_seconds"`  // age of the oldest undelivered matching event
	Owner       string  `json:"owner"`        // the worker that saved it
	UpdatedMs   uint64  `json:"updated_ms"`   // when it was saved
	Revision    uint64  `json:"revision"`     // KV revision
	JournalID   string  `json:"journal_id"`   // the journal it is bound to
	Problem     string  `json:"problem"`      // why it cannot be used, if so
	LastCommit  string  `json:"last_commit"`  // UpdatedMs as RFC 3339
	VisibleSeqs uint64  `json:"visible_seqs"` // the writer's visible bound
}

// Status prints every checkpoint of the journal with its lag.
func Status(ctx context.Context, cfg StatusConfig) (_ []CheckpointStatus, err error) {
	nc, err := cfg.NATS.Connect(cfg.NATS.URL, "batfleet-worker-status", cfg.Log)
	if err != nil {
		return nil, &cli.NATSError{Err: err}
	}
	defer nc.Close()
	ctx, stopWatch := fleet.WatchRefusals(ctx, nc)
	defer stopWatch()
	defer func() { err = fleet.ExplainRefusal(nc, err) }()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	store, err := bindCheckpoints(ctx, js, cfg.Journal, cfg.Bucket)
	if err != nil {
		return nil, err
	}
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: cfg.Journal, Logger: cfg.Log})
	if err != nil {
		return nil, err
	}
	defer client.Close()
	info, err := client.Describe(ctx)
	if err != nil {
		return nil, fmt.Errorf("ask the writer of journal %q: %w", cfg.Journal, err)
	}
	listed, err := store.List(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var rows []CheckpointStatus
	for _, l := range listed {
		row := CheckpointStatus{ID: l.ID, LagEvents: -1, VisibleSeqs: info.Visible, Revision: uint64(l.Revision)}
		if l.Err != nil {
			row.Problem = l.Err.Error()
			rows = append(rows, row)
			continue
		}
		rec := l.Record
		row.Position, row.Started, row.Owner, row.UpdatedMs, row.JournalID = rec.Position, rec.Started, rec.Owner, rec.UpdatedMs, rec.JournalID
		row.LastCommit = time.UnixMilli(int64(rec.UpdatedMs)).UTC().Format(time.RFC3339)
		if rec.RegionIdentity != nil {
			row.Region = *rec.RegionIdentity
			row.RegionSpec = regionSpec(row.Region)
		}
		// The load rules a worker would apply, judged against
		// the record's own region: what is left to report is a record
		// with no region, of another journal, or ahead of the journal.
		region := engine.RegionAll()
		if rec.RegionIdentity != nil {
			if region, err = engine.ParseRegionIdentity(*rec.RegionIdentity); err != nil {
				row.Problem = err.Error()
				rows = append(rows, row)
				continue
			}
		}
		sourceInfo := func(context.Context) (engine.SourceInfo, error) {
			return engine.SourceInfo{JournalID: info.JournalID, Incarnation: info.Incarnation, Visible: info.Visible}, nil
		}
		if _, err := checkpoint.Check(ctx, rec, l.Revision, store.Location(l.ID), region, sourceInfo); err != nil {
			row.Problem = statusProblem(err)
		} else {
			// The writer counts the region's events from its index:
			// nothing is downloaded, whatever the lag.
			lag, err := client.Count(ctx, region, rec.Position, rec.Started)
			if err != nil {
				row.Problem = "lag: " + err.Error()
			} else {
				row.LagEvents = int64(min(lag.Events, math.MaxInt64))
				if lag.Events > 0 {
					row.LagSeconds = max(0, now.Sub(time.UnixMilli(lag.OldestMs)).Seconds())
				}
			}
		}
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	if cfg.JSON {
		enc := json.NewEncoder(cfg.Out)
		enc.SetIndent("", "  ")
		if rows == nil {
			rows = []CheckpointStatus{}
		}
		return rows, enc.Encode(rows)
	}
	return rows, printTable(cfg.Out, rows)
}

// statusProblem says in a few words why a worker would refuse a record.
func statusProblem(err error) string {
	var jm *checkpoint.JournalMismatchError
	var ahead *checkpoint.AheadError
	var rm *checkpoint.RegionMismatchError
	switch {
	case errors.As(err, &jm):
		return "bound to another journal " + jm.Stored
	case errors.As(err, &ahead):
		return fmt.Sprintf("ahead of the journal (visible bound %d)", ahead.Visible)
	case errors.As(err, &rm) && rm.Stored == nil:
		return "no region identity"
	}
	return err.Error()
}

func printTable(w io.Writer, rows []CheckpointStatus) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tREGION\tPOSITION\tLAG EVENTS\tLAG SECONDS\tOWNER\tLAST COMMIT\tPROBLEM")
	for _, r := range rows {
		pos := "-"
		if r.Started {
			pos = fmt.Sprint(r.Position)
		}
		lag := "?"
		if r.LagEvents >= 0 {
			lag = fmt.Sprint(r.LagEvents)
		}
		region := r.RegionSpec
		if region == "" {
			region = r.Region
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f\t%s\t%s\t%s\n", r.ID, region, pos, lag, r.LagSeconds, r.Owner, r.LastCommit, strings.TrimSpace(r.Problem))
	}
	if len(rows) == 0 {
		fmt.Fprintln(tw, "(no checkpoints)")
	}
	return tw.Flush()
}

// regionSpec returns the region of a stored identity as --region takes it
// (kinds in hex), or the identity itself when it does not parse.
func regionSpec(identity string) string {
	r, err := engine.ParseRegionIdentity(identity)
	if err != nil {
		return identity
	}
	return r.Spec()
}
