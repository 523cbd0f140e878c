package workerapp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
)

// DefaultWaitTimeout is the default --timeout of `worker wait`.
const DefaultWaitTimeout = 30 * time.Second

// WaitConfig configures `worker wait`.
type WaitConfig struct {
	NATS        cli.NATSFlags
	Journal     string
	Bucket      string // checkpoints
	GroupBucket string
	Checkpoint  string // exactly one of Checkpoint and Group
	Group       string
	Through     string // the seq, as given (required)
	Timeout     time.Duration
	Log         hclog.Logger
}

// ParseThrough parses --through: a seq, as `writer append` prints them.
func ParseThrough(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("--through is required: the seq to wait for (a line `writer append` printed)")
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("--through %q: must be a sequence number (a whole number >= 0)", s)
	}
	return seq, nil
}

func (c WaitConfig) validate() (uint64, error) {
	var msgs []string
	switch {
	case (c.Checkpoint == "") == (c.Group == ""):
		msgs = append(msgs, "give exactly one of --checkpoint ID or --group NAME")
	case c.Checkpoint != "":
		if err := checkpoint.ValidateID(c.Checkpoint); err != nil {
			msgs = append(msgs, fmt.Sprintf("--checkpoint: %v", err))
		}
	default:
		if err := engine.ValidateJournalName(c.Group); err != nil {
			msgs = append(msgs, fmt.Sprintf("--group %q: must be 1 to 64 characters of [A-Za-z0-9_-]", c.Group))
		}
	}
	seq, err := ParseThrough(c.Through)
	if err != nil {
		msgs = append(msgs, err.Error())
	}
	if c.Timeout <= 0 {
		msgs = append(msgs, fmt.Sprintf("--timeout %s: must be > 0", c.Timeout))
	}
	if len(msgs) > 0 {
		return 0, cli.Usagef("%s", strings.Join(msgs, "; "))
	}
	return seq, nil
}

// Wait runs `worker wait`: it returns nil once the checkpoint (for a
// group: every partition) has committed through the seq, or its region
// has no entry up to the seq left to handle. A checkpoint with no record,
// or a group that does not exist, is an error at once (no checkpoint
// bucket is created); a wait that outlasts cfg.Timeout is a
// *WaitTimeoutError (ErrWaitTimeout).
func Wait(ctx context.Context, cfg WaitConfig) error {
	seq, err := cfg.validate()
	if err != nil {
		return err
	}
	what := "checkpoint " + cfg.Checkpoint
	if cfg.Group != "" {
		what = "group " + cfg.Group
	}
	nc, err := cfg.NATS.Connect(cfg.NATS.URL, "batfleet-worker-wait", cfg.Log)
	if err != nil {
		return &cli.NATSError{Err: err}
	}
	defer nc.Close()
	ctx, stopWatch := fleet.WatchRefusals(ctx, nc)
	defer stopWatch()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: cfg.Journal, Logger: cfg.Log})
	if err != nil {
		return err
	}
	defer client.Close()

	wctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	store, err := bindCheckpoints(wctx, js, cfg.Journal, cfg.Bucket)
	if err == nil {
		if cfg.Group != "" {
			err = fleet.WaitForGroup(wctx, client, store, js, cfg.GroupBucket, cfg.Group, seq)
		} else {
			err = fleet.WaitFor(wctx, client, store, cfg.Checkpoint, seq)
		}
	}
	switch {
	case err == nil:
		cfg.Log.Debug("reached", "through", seq, "waited", time.Since(start).Round(time.Millisecond), "what", what)
		return nil
	case errors.Is(context.Cause(ctx), fleet.ErrPermission):
		return context.Cause(ctx)
	case ctx.Err() != nil:
		return fmt.Errorf("interrupted while waiting for %s to commit through seq %d", what, seq)
	case wctx.Err() != nil:
		te := &WaitTimeoutError{What: what, Through: seq, Timeout: cfg.Timeout}
		if store != nil && cfg.Checkpoint != "" {
			lctx, lcancel := context.WithTimeout(ctx, 2*time.Second)
			rec, _, lerr := store.Load(lctx, cfg.Checkpoint)
			lcancel()
			switch {
			case lerr == nil && rec.Started:
				te.Where = fmt.Sprintf("it is at position %d", rec.Position)
			case lerr == nil:
				te.Where = "it has committed nothing yet"
			}
		}
		return te
	case errors.Is(err, jetstream.ErrBucketNotFound) && cfg.Group != "":
		return fmt.Errorf("%w: %q (no checkpoint bucket %q)", fleet.ErrGroupNotFound, cfg.Group, cfg.Bucket)
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return fmt.Errorf("%w: %q (no checkpoint bucket %q)", fleet.ErrUnknownCheckpoint, cfg.Checkpoint, cfg.Bucket)
	}
	return err
}
