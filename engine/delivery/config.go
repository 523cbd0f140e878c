package delivery

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"reflect"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
)

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
	// Restart is the policy for handler failures that retries did not cure
	// (default RestartOnce; nil means RestartOnce).
	Restart RestartPolicy
	// Retry is how failed batches are retried before Restart (or
	// parking) is consulted (default DefaultRetryPolicy: 3 attempts,
	// 100 ms doubling to 5 s; NoRetry() for none).
	Retry RetryPolicy
	// Parked enables parking (requires CheckpointID): an entry that
	// exhausts its retries is parked in this store with every later entry
	// of its entity, and the worker goes on with all other entities; see
	// checkpoint.Parked. nil hands exhausted entries to Restart.
	Parked checkpoint.ParkStore
	// ParkedRefresh is how often a worker with parked entities re-reads
	// its parked set, to see replays and drops asked for by operators
	// (default 1 s).
	ParkedRefresh time.Duration
	// CheckpointID makes the worker durable: its position is saved in
	// Checkpoints under this id after each Continue or Stop.
	CheckpointID string
	// Checkpoints is the checkpoint store; required when CheckpointID is set.
	Checkpoints checkpoint.Store
	// Group and Epoch make the worker one partition of a consumer group's
	// member (set by fleet's group members, not by hand): every save
	// writes Epoch as the record's owner epoch, the handler's Delivery
	// carries both, and the worker refuses to start unless the stored
	// record is this owner's at this epoch (so a claim another member made
	// since cannot be overwritten).
	Group string
	Epoch uint64
	// From is where the worker starts while its checkpoint has no record
	// (a new durable worker before its first commit, or an in-memory
	// worker): FromBeginning (the default), FromEnd, FromSeq or FromTime.
	// A stored record always wins. A consumer group resolves it when it
	// first claims a partition that has no record (the claim record keeps
	// that start).
	From StartFrom
	// WorkerID is saved as the record's owner (default host-pid-random).
	WorkerID string
	// Clock drives the restart window (default SystemClock()).
	Clock Clock
	// WallClock stamps updated_ms (default time.Now).
	WallClock func() time.Time
	// SaveTimeout bounds each checkpoint load and save (default 30 s).
	SaveTimeout time.Duration
	// CheckpointOutage bounds how long the worker rides out a checkpoint
	// store that is unavailable (checkpoint.ErrUnavailable: timeouts, no
	// responders, a lost connection, a leader election) at start or while
	// a handled batch's commit is held; then it stops with an error
	// matching checkpoint.ErrUnavailable. 0 (the default) waits for as
	// long as it takes; Stop always ends the wait.
	CheckpointOutage time.Duration
	// OnRestartBudgetExhausted fires at most once, with the last panic text.
	OnRestartBudgetExhausted func(lastPanic string)
	// OnCheckpointFailure receives the id and the original error of a
	// failed save; without it the failure is logged at error level.
	OnCheckpointFailure func(id string, err error)
	// ObserveHandler, when set, receives each handler call's entries and
	// duration (a retry is a call of its own); ObserveSave each checkpoint
	// save's duration and outcome. Both are called from the worker's
	// goroutine (keep them quick: a histogram's Observe): for latency
	// metrics.
	ObserveHandler func(entries int, took time.Duration)
	ObserveSave    func(took time.Duration, err error)
	// Logger receives the worker's logs; nil means none.
	Logger hclog.Logger
}

// DefaultWorkerConfig returns the documented defaults: batch 64, idle
// 10 ms, RestartOnce, DefaultRetryPolicy, in-memory (no checkpoint id), no hooks.
func DefaultWorkerConfig() WorkerConfig {
	return WorkerConfig{
		BatchSize:   64,
		IdleTimeout: 10 * time.Millisecond,
		Restart:     RestartOnce{},
		Retry:       DefaultRetryPolicy(),
	}
}

// Validate reports every problem of c at once.
func (c WorkerConfig) Validate() error {
	var errs []error
	if c.BatchSize <= 0 {
		errs = append(errs, &engine.ConfigError{Field: "BatchSize", Rule: "must be > 0"})
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, &engine.ConfigError{Field: "IdleTimeout", Rule: "must be > 0"})
	}
	if c.Restart != nil {
		if v := reflect.ValueOf(c.Restart); v.Kind() == reflect.Pointer && v.IsNil() {
			errs = append(errs, &engine.ConfigError{Field: "Restart", Rule: fmt.Sprintf("is a nil %T (leave it nil for RestartOnce)", c.Restart)})
		} else if err := c.Restart.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.Retry.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Parked != nil && c.CheckpointID == "" {
		errs = append(errs, &engine.ConfigError{Field: "Parked", Rule: "requires a CheckpointID (the parked set belongs to a checkpoint)"})
	}
	if c.ParkedRefresh < 0 {
		errs = append(errs, &engine.ConfigError{Field: "ParkedRefresh", Rule: "must be >= 0 (0 means 1s)"})
	}
	if c.CheckpointOutage < 0 {
		errs = append(errs, &engine.ConfigError{Field: "CheckpointOutage", Rule: "must be >= 0 (0 means unbounded)"})
	}
	if c.SaveTimeout < 0 {
		errs = append(errs, &engine.ConfigError{Field: "SaveTimeout", Rule: "must be >= 0 (0 means 30s)"})
	}
	if c.CheckpointID != "" {
		if err := checkpoint.ValidateID(c.CheckpointID); err != nil {
			errs = append(errs, err)
		}
		if c.Checkpoints == nil {
			errs = append(errs, &engine.ConfigError{Field: "Checkpoints", Rule: "is required with a CheckpointID"})
		}
	}
	return errors.Join(errs...)
}

func (c WorkerConfig) withDefaults() WorkerConfig {
	if c.Restart == nil {
		c.Restart = RestartOnce{}
	}
	c.Retry = c.Retry.withDefaults()
	if c.ParkedRefresh == 0 {
		c.ParkedRefresh = time.Second
	}
	if c.WorkerID == "" {
		c.WorkerID = DefaultWorkerID()
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

// DefaultWorkerID returns a worker id made of the host name, the process
// id and a random suffix: unique enough to tell the owners of checkpoints
// apart in logs and in `worker status`.
func DefaultWorkerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
