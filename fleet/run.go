package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/kvckpt"
)

// DefaultIdleTimeout is the idle timeout of fleet workers (RunWorker and
// the worker binary): 30 s, where delivery.DefaultWorkerConfig has 10 ms.
// An idle fleet worker does not poll: its pull is held by the writer
// (wait_ms) and answered as soon as a matching entry is visible, so the
// timeout is only how long one hold lasts before it is renewed; each
// renewal is one round trip. A local worker's park is woken in-process,
// so its short default costs nothing.
const DefaultIdleTimeout = 30 * time.Second

// WorkerOptions configure RunWorker. Zero values mean the defaults.
type WorkerOptions struct {
	// Journal is the journal to consume (default "main").
	Journal string
	// Region selects the events, in the syntax of engine.ParseRegion
	// ("entity=order,scope=shop"); "" is every event.
	Region string
	// Checkpoint is the durable checkpoint id; "" runs an in-memory
	// worker, which starts from the beginning each time.
	Checkpoint string
	// Group makes the worker a member of that consumer group instead
	// (JoinGroup; exclusive with Checkpoint): the region is spread over
	// the group's members, Partitions (default 16) and Session (default
	// 3 s) configure it, WorkerID is the member id (keep it stable across
	// restarts to get the same partitions back), and the groups bucket
	// lives next to the checkpoint bucket with its Replicas.
	Group      string
	Partitions int
	Session    time.Duration
	// Handler handles each batch (required). A group member calls it
	// from one goroutine per partition it runs: it must be safe for
	// concurrent use.
	Handler delivery.Handler
	// Bucket and Replicas select the checkpoint bucket (kvckpt.Config;
	// default batfleet_checkpoints, 1 replica).
	Bucket   string
	Replicas int
	// BatchSize (default 64), IdleTimeout (default DefaultIdleTimeout),
	// Restart (default delivery.RestartOnce) and WorkerID (default
	// delivery.DefaultWorkerID()) are the worker's (delivery.WorkerConfig).
	BatchSize   int
	IdleTimeout time.Duration
	Restart     delivery.RestartPolicy
	WorkerID    string
	// From is where a checkpoint with no record starts (default
	// delivery.FromBeginning()); for a group, where each partition starts
	// when it is first claimed.
	From delivery.StartFrom
	// Retry is how failed batches are retried (default
	// delivery.DefaultRetryPolicy()).
	Retry delivery.RetryPolicy
	// Park parks entries that exhaust their retries, with every later
	// entry of their entity, in the parked bucket (ParkedBucket, default
	// kvckpt.DefaultParkedBucket), instead of handing them to Restart;
	// needs Checkpoint or Group. See delivery.WorkerConfig.Parked.
	Park         bool
	ParkedBucket string
	// Logger receives the logs of the client and the worker; nil means none.
	Logger hclog.Logger
}

// RunWorker runs a fleet worker on nc until ctx ends or the worker stops
// by itself: it parses the region, opens a Client and, for a durable
// worker, the checkpoint bucket, and starts a delivery worker with them
// (the same loop, actions and restart rules as a local worker). It returns
// nil when ctx ended it (after the batch in hand was handled and
// committed) or the handler returned Stop, and otherwise the worker's
// error (delivery.Worker.Join). Bad options are reported before anything
// starts, naming the field.
func RunWorker(ctx context.Context, nc *nats.Conn, opts WorkerOptions) error {
	if opts.Journal == "" {
		opts.Journal = "main"
	}
	if err := engine.ValidateJournalName(opts.Journal); err != nil {
		return fmt.Errorf("fleet: WorkerOptions.Journal: %w", err)
	}
	region, err := engine.ParseRegion(opts.Region)
	if err != nil {
		return fmt.Errorf("fleet: WorkerOptions.Region: %w", err)
	}
	if opts.Checkpoint != "" {
		if err := checkpoint.ValidateID(opts.Checkpoint); err != nil {
			return fmt.Errorf("fleet: WorkerOptions.Checkpoint: %w", err)
		}
	}
	if opts.Group != "" && opts.Checkpoint != "" {
		return &engine.ConfigError{Field: "WorkerOptions.Group", Rule: "excludes Checkpoint (a group's partitions have checkpoints of their own)"}
	}
	if opts.Handler == nil {
		return &engine.ConfigError{Field: "WorkerOptions.Handler", Rule: "is required"}
	}
	if opts.Park && opts.Checkpoint == "" && opts.Group == "" {
		return &engine.ConfigError{Field: "WorkerOptions.Park", Rule: "needs Checkpoint or Group (the parked set belongs to a checkpoint)"}
	}
	cfg := delivery.DefaultWorkerConfig()
	cfg.IdleTimeout = DefaultIdleTimeout
	if opts.BatchSize != 0 {
		cfg.BatchSize = opts.BatchSize
	}
	if opts.IdleTimeout != 0 {
		cfg.IdleTimeout = opts.IdleTimeout
	}
	if opts.Restart != nil {
		cfg.Restart = opts.Restart
	}
	cfg.WorkerID, cfg.Logger, cfg.From = opts.WorkerID, opts.Logger, opts.From
	if opts.Retry != (delivery.RetryPolicy{}) {
		cfg.Retry = opts.Retry
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	client, err := NewClient(nc, ClientConfig{Journal: opts.Journal, Logger: opts.Logger})
	if err != nil {
		return err
	}
	defer client.Close()
	if opts.Group != "" {
		return runMember(ctx, nc, client, region, cfg, opts)
	}
	if opts.Checkpoint != "" {
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("fleet: jetstream: %w", err)
		}
		store, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: opts.Journal, Bucket: opts.Bucket, Replicas: opts.Replicas})
		if err != nil {
			return fmt.Errorf("fleet: checkpoint bucket: %w", err)
		}
		cfg.CheckpointID, cfg.Checkpoints = opts.Checkpoint, store
		if opts.Park {
			if cfg.Parked, err = store.OpenParked(ctx, opts.ParkedBucket); err != nil {
				return fmt.Errorf("fleet: parked bucket: %w", err)
			}
		}
	}
	w, err := delivery.StartWorker(ctx, client, region, cfg, opts.Handler)
	if err != nil {
		return err
	}
	err = w.Join() // cancelling ctx stops the worker
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// runMember is RunWorker for a group member.
func runMember(ctx context.Context, nc *nats.Conn, client *Client, region engine.Region, wcfg delivery.WorkerConfig, opts WorkerOptions) error {
	gcfg := GroupConfig{
		Journal: opts.Journal, Name: opts.Group, Region: region, Partitions: opts.Partitions,
		Session: opts.Session, MemberID: opts.WorkerID, Replicas: opts.Replicas,
		Worker: wcfg, Logger: opts.Logger,
	}
	if err := gcfg.Validate(); err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("fleet: jetstream: %w", err)
	}
	store, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: opts.Journal, Bucket: opts.Bucket, Replicas: opts.Replicas})
	if err != nil {
		return fmt.Errorf("fleet: checkpoint bucket: %w", err)
	}
	if opts.Park {
		if gcfg.Worker.Parked, err = store.OpenParked(ctx, opts.ParkedBucket); err != nil {
			return fmt.Errorf("fleet: parked bucket: %w", err)
		}
	}
	m, err := JoinGroup(ctx, client, store, js, gcfg, opts.Handler)
	if err != nil {
		return err
	}
	return m.Join() // cancelling ctx is a graceful leave
}
