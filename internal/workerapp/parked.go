package workerapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/kvckpt"
)

// ParkedConfig configures `worker parked ls|replay|drop`. These commands
// create no bucket: they bind the parked bucket (and, for --group, the
// checkpoint and group buckets) only if it exists.
type ParkedConfig struct {
	NATS         cli.NATSFlags
	Journal      string
	Bucket       string // checkpoints (a group's partitions are read from it)
	GroupBucket  string
	ParkedBucket string
	Checkpoint   string // exactly one of Checkpoint and Group
	Group        string
	Entity       string // replay, drop: the entity
	JSON         bool   // ls
	Out          io.Writer
	Log          hclog.Logger
}

// ParkedRow is one parked entity, as `worker parked ls --json` prints it.
type ParkedRow struct {
	Checkpoint string `json:"checkpoint"`
	// Partition is the group partition the checkpoint belongs to (with
	// --group; -1 otherwise).
	Partition int    `json:"partition"`
	Entity    string `json:"entity"`
	FirstSeq  uint64 `json:"first_seq"` // the entry that exhausted its attempts
	LastSeq   uint64 `json:"last_seq"`  // the newest parked entry
	Count     uint64 `json:"count"`     // parked entries
	Attempts  int    `json:"attempts"`
	Error     string `json:"error"`     // the last failure's text
	ParkedMs  uint64 `json:"parked_ms"` // when, in unix ms
	Parked    string `json:"parked"`    // ParkedMs as RFC 3339
	Replay    bool   `json:"replay"`    // a replay was asked for and has not run yet
	Revision  uint64 `json:"revision"`
}

// parkedTarget is a checkpoint whose parked set a command reads.
type parkedTarget struct {
	id        string
	partition int // -1: a plain checkpoint
	in        string
}

// validate checks the flags of a parked command; needEntity for replay
// and drop.
func (c ParkedConfig) validate(cmd string, needEntity bool) error {
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
	if needEntity && c.Entity == "" {
		msgs = append(msgs, fmt.Sprintf("--entity is required: the parked entity to %s", cmd))
	}
	if err := checkBucketFlag("--parked-bucket", c.ParkedBucket); err != nil {
		msgs = append(msgs, err.Error())
	}
	if len(msgs) > 0 {
		return cli.Usagef("%s", strings.Join(msgs, "; "))
	}
	return nil
}

// parkedSession is what a parked command works with: the bound parked
// store (nil when the default bucket does not exist: nothing is parked)
// and the checkpoints to look at. Its ctx ends as soon as the server
// refuses the connection a permission (fleet.WatchRefusals).
type parkedSession struct {
	ctx     context.Context
	nc      *nats.Conn
	parked  *kvckpt.ParkedStore
	targets []parkedTarget
}

// openParked connects, binds the parked bucket and resolves the targets:
// the checkpoint, or every partition of the group (only the partition
// holding entity when entity is not ""). Nothing is created.
func openParked(ctx context.Context, cfg ParkedConfig, entity string) (parkedSession, func(), error) {
	var ps parkedSession
	nc, err := cfg.NATS.Connect(cfg.NATS.URL, "batfleet-worker-parked", cfg.Log)
	if err != nil {
		return ps, nil, &cli.NATSError{Err: err}
	}
	ctx, stopWatch := fleet.WatchRefusals(ctx, nc)
	closer := func() { stopWatch(); nc.Close() }
	ps.ctx, ps.nc = ctx, nc
	fail := func(err error) (parkedSession, func(), error) {
		err = fleet.ExplainRefusal(nc, err) // a refused permission ends or times out a request
		closer()
		return ps, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(err)
	}
	ps.parked, err = kvckpt.BindParked(ctx, js, kvckpt.Config{Journal: cfg.Journal, Bucket: cfg.ParkedBucket})
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound) && cfg.ParkedBucket == kvckpt.DefaultParkedBucket:
		// No worker ever parked anything in this NATS deployment.
		ps.parked = nil
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return fail(fmt.Errorf("parked bucket %q does not exist (no worker parks with --parked-bucket %s; is the name right?)", cfg.ParkedBucket, cfg.ParkedBucket))
	case err != nil:
		return fail(fmt.Errorf("parked bucket: %w", err))
	}
	if cfg.Checkpoint != "" {
		ps.targets = []parkedTarget{{id: cfg.Checkpoint, partition: -1, in: "checkpoint " + cfg.Checkpoint}}
		return ps, closer, nil
	}
	store, err := bindCheckpoints(ctx, js, cfg.Journal, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fail(fmt.Errorf("%w: %q (no checkpoint bucket %q)", fleet.ErrGroupNotFound, cfg.Group, cfg.Bucket))
	}
	if err != nil {
		return fail(err)
	}
	info, err := fleet.DescribeGroup(ctx, js, store, cfg.Journal, cfg.GroupBucket, cfg.Group)
	if err != nil {
		return fail(err)
	}
	only := -1
	if entity != "" {
		only = int(engine.Bucket(entity)) / (engine.Buckets / info.Partitions)
	}
	for _, p := range info.Parts {
		if only >= 0 && int(p.Index) != only {
			continue
		}
		ps.targets = append(ps.targets, parkedTarget{id: p.CheckpointID, partition: int(p.Index),
			in: fmt.Sprintf("group %s (partition %d, checkpoint %s)", cfg.Group, p.Index, p.CheckpointID)})
	}
	if len(ps.targets) == 0 {
		return fail(fmt.Errorf("group %q: no partition holds entity %s (%d partitions described)", cfg.Group, entity, len(info.Parts)))
	}
	return ps, closer, nil
}

// ParkedList prints the parked set of a checkpoint, or of every partition
// of a group: one row per parked entity.
func ParkedList(ctx context.Context, cfg ParkedConfig) (rows []ParkedRow, err error) {
	if err := cfg.validate("ls", false); err != nil {
		return nil, err
	}
	ps, closer, err := openParked(ctx, cfg, "")
	if err != nil {
		return nil, err
	}
	defer closer()
	defer func() { err = fleet.ExplainRefusal(ps.nc, err) }()
	ctx = ps.ctx
	rows = []ParkedRow{}
	if ps.parked != nil {
		for _, t := range ps.targets {
			list, err := ps.parked.ListParked(ctx, t.id)
			if err != nil {
				return nil, err
			}
			for _, p := range list {
				rows = append(rows, parkedRow(t, p))
			}
		}
	}
	if cfg.JSON {
		enc := json.NewEncoder(cfg.Out)
		enc.SetIndent("", "  ")
		return rows, enc.Encode(rows)
	}
	return rows, printParked(cfg.Out, rows, cfg.Group != "")
}

func parkedRow(t parkedTarget, p checkpoint.ParkedRevision) ParkedRow {
	return ParkedRow{
		Checkpoint: t.id, Partition: t.partition, Entity: p.Entity, FirstSeq: p.FirstSeq, LastSeq: p.LastSeq,
		Count: p.Count, Attempts: p.Attempts, Error: p.Error, ParkedMs: p.ParkedMs,
		Parked: time.UnixMilli(int64(p.ParkedMs)).UTC().Format(time.RFC3339), Replay: p.Replay, Revision: uint64(p.Revision),
	}
}

func printParked(w io.Writer, rows []ParkedRow, group bool) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	head := "CHECKPOINT\tENTITY\tFIRST SEQ\tLAST SEQ\tENTRIES\tATTEMPTS\tPARKED\tREPLAY\tERROR"
	if group {
		head = "PARTITION\t" + head
	}
	fmt.Fprintln(tw, head)
	for _, r := range rows {
		replay := "-"
		if r.Replay {
			replay = "requested"
		}
		if group {
			fmt.Fprintf(tw, "%d\t", r.Partition)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", r.Checkpoint, r.Entity, r.FirstSeq, r.LastSeq, r.Count,
			r.Attempts, r.Parked, replay, oneLine(r.Error))
	}
	if len(rows) == 0 {
		fmt.Fprintln(tw, "(nothing parked)")
	}
	return tw.Flush()
}

// oneLine keeps a table row on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// casTries bounds how often replay and drop re-read a parked record that
// changed under them (the worker moves it forward as it parks entries).
const casTries = 10

// ParkedReplay asks the worker holding the checkpoint (or the entity's
// group partition) to hand the entity's parked entries back to its
// handler in seq order and then unpark it: a compare-and-swap of the
// record with Replay set. The running worker sees it within about a
// second. It returns the record as it was marked.
func ParkedReplay(ctx context.Context, cfg ParkedConfig) (_ checkpoint.Parked, err error) {
	if err := cfg.validate("replay", true); err != nil {
		return checkpoint.Parked{}, err
	}
	ps, closer, err := openParked(ctx, cfg, cfg.Entity)
	if err != nil {
		return checkpoint.Parked{}, err
	}
	defer closer()
	defer func() { err = fleet.ExplainRefusal(ps.nc, err) }()
	ctx = ps.ctx
	t := ps.targets[0]
	for range casTries {
		rec, err := findParked(ctx, ps.parked, t, cfg.Entity)
		if err != nil {
			return checkpoint.Parked{}, err
		}
		if rec.Replay {
			fmt.Fprintf(cfg.Out, "replay of entity %s in %s was already requested (%d entries, seqs %d..%d)\n",
				cfg.Entity, t.in, rec.Count, rec.FirstSeq, rec.LastSeq)
			return rec.Parked, nil
		}
		rec.Replay = true
		_, err = ps.parked.PutParked(ctx, t.id, rec.Parked, rec.Revision)
		if errors.Is(err, checkpoint.ErrConflict) {
			continue // moved forward, dropped or replayed meanwhile: read it again
		}
		if err != nil {
			return checkpoint.Parked{}, fleet.ExplainRefusal(ps.nc, err)
		}
		fmt.Fprintf(cfg.Out, "replay of entity %s in %s requested: %d entries, seqs %d..%d (the worker running it replays them within about a second)\n",
			cfg.Entity, t.in, rec.Count, rec.FirstSeq, rec.LastSeq)
		return rec.Parked, nil
	}
	return checkpoint.Parked{}, fmt.Errorf("the parked record of entity %s in %s kept changing; try again", cfg.Entity, t.in)
}

// ParkedDrop discards the entity's parked entries (they are never
// delivered) and unparks it: a compare-and-swap delete of its record. The
// running worker sees it within about a second; the entity's later entries
// flow again.
func ParkedDrop(ctx context.Context, cfg ParkedConfig) (_ checkpoint.Parked, err error) {
	if err := cfg.validate("drop", true); err != nil {
		return checkpoint.Parked{}, err
	}
	ps, closer, err := openParked(ctx, cfg, cfg.Entity)
	if err != nil {
		return checkpoint.Parked{}, err
	}
	defer closer()
	defer func() { err = fleet.ExplainRefusal(ps.nc, err) }()
	ctx = ps.ctx
	t := ps.targets[0]
	for range casTries {
		rec, err := findParked(ctx, ps.parked, t, cfg.Entity)
		if err != nil {
			return checkpoint.Parked{}, err
		}
		err = ps.parked.DeleteParked(ctx, t.id, cfg.Entity, rec.Revision)
		if errors.Is(err, checkpoint.ErrConflict) || errors.Is(err, checkpoint.ErrNotFound) {
			continue // changed meanwhile: read it again
		}
		if err != nil {
			return checkpoint.Parked{}, fleet.ExplainRefusal(ps.nc, err)
		}
		fmt.Fprintf(cfg.Out, "dropped entity %s from %s: %d parked entries, seqs %d..%d, will not be delivered\n",
			cfg.Entity, t.in, rec.Count, rec.FirstSeq, rec.LastSeq)
		return rec.Parked, nil
	}
	return checkpoint.Parked{}, fmt.Errorf("the parked record of entity %s in %s kept changing; try again", cfg.Entity, t.in)
}

// findParked returns the parked record of entity in target t, or a
// *NotParkedError.
func findParked(ctx context.Context, parked *kvckpt.ParkedStore, t parkedTarget, entity string) (checkpoint.ParkedRevision, error) {
	if parked != nil {
		list, err := parked.ListParked(ctx, t.id)
		if err != nil {
			return checkpoint.ParkedRevision{}, err
		}
		for _, p := range list {
			if p.Entity == entity {
				return p, nil
			}
		}
	}
	return checkpoint.ParkedRevision{}, &NotParkedError{Entity: entity, In: t.in}
}
