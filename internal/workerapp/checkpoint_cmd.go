package workerapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/kvckpt"
)

// `worker checkpoint get|set|reset ID` reads, moves or resets one
// checkpoint record, as `kafka-consumer-groups --reset-offsets` does for
// an inactive group:
//
//   - get prints the record; it creates nothing (a missing bucket is an
//     error) and needs no writer.
//   - set --position SEQ stores (SEQ, started): the next worker resumes
//     after SEQ. SEQ must be below the writer's visible bound; "end" is
//     the bound - 1 (skip everything appended so far).
//   - reset stores (0, not started): the next worker starts from the
//     beginning. It needs no writer.
//
// set and reset keep the record's region identity, journal id and epoch,
// write Owner CheckpointCmdOwner+"set"/"reset" and UpdatedMs now, and
// replace the record with a compare-and-swap against the revision they
// read: a worker committing meanwhile makes the command fail, having
// written nothing; a worker committing after it loses its own
// compare-and-swap and stops with a conflict.
//
// The liveness rule: a record last committed by a worker less than
// --alive-window ago (UpdatedMs, default DefaultAliveWindow) is held by a
// live owner, and set and reset refuse it unless --force. A worker
// commits only when it handles events, so an idle worker looks inactive
// once the window has passed; if it is in fact running, it stops with a
// conflict at its next commit and the next worker resumes where the
// command put the checkpoint. A record written by this command (Owner
// starting with CheckpointCmdOwner) has no live owner by this rule.
//
// A consumer group's partition checkpoint (id "group:NAME:P") is owned by
// whichever member claimed it, fenced by its epoch: set and reset refuse
// it unless --force, and with --force keep the epoch unchanged.

// DefaultAliveWindow is the default --alive-window of `worker checkpoint
// set|reset`: a checkpoint committed less than this long ago has a live
// owner. Twice fleet.DefaultIdleTimeout: a busy worker commits every
// batch, far more often.
const DefaultAliveWindow = 2 * fleet.DefaultIdleTimeout

// CheckpointCmdOwner prefixes the Owner that `worker checkpoint set|reset`
// write into the record ("worker-checkpoint-set", "...-reset").
const CheckpointCmdOwner = "worker-checkpoint-"

// groupCheckpointPrefix starts the id of a consumer group's partition
// checkpoint ("group:NAME:P").
const groupCheckpointPrefix = "group:"

// CheckpointConfig configures `worker checkpoint get|set|reset`.
type CheckpointConfig struct {
	NATS    cli.NATSFlags
	Journal string
	Bucket  string // checkpoints
	ID      string // the checkpoint (required)
	// Position is set's --position: a seq, or "end" (required for set).
	Position string
	// Force moves a checkpoint whose owner looks alive, or a group
	// partition's checkpoint.
	Force bool
	// AliveWindow is --alive-window (0: DefaultAliveWindow).
	AliveWindow time.Duration
	JSON        bool // get
	Out         io.Writer
	Log         hclog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// CheckpointView is one checkpoint record, as `worker checkpoint get
// --json` prints it.
type CheckpointView struct {
	ID       string `json:"id"`
	Position uint64 `json:"position"`
	// Started is false for a checkpoint that has handled nothing: the
	// next worker starts from the beginning (Position is then 0).
	Started        bool    `json:"started"`
	Region         string  `json:"region"`          // as --region takes it ("" when none is stored)
	RegionIdentity string  `json:"region_identity"` // as stored
	JournalID      string  `json:"journal_id"`
	Owner          string  `json:"owner"`
	UpdatedMs      uint64  `json:"updated_ms"`
	LastCommit     string  `json:"last_commit"` // UpdatedMs as RFC 3339
	AgeSeconds     float64 `json:"age_seconds"` // how long ago, when read
	Epoch          uint64  `json:"epoch"`
	Revision       uint64  `json:"revision"`
}

// CheckpointMove is what `worker checkpoint set|reset` did.
type CheckpointMove struct {
	ID             string
	Old, New       checkpoint.Record
	OldRev, NewRev checkpoint.Revision
}

// UnknownCheckpointError reports a checkpoint with no record. It matches
// fleet.ErrUnknownCheckpoint.
type UnknownCheckpointError struct {
	ID, Journal, Bucket string
}

func (e *UnknownCheckpointError) Error() string {
	return fmt.Sprintf("unknown checkpoint %q: journal %s has no record of it in bucket %q (see worker status)", e.ID, e.Journal, e.Bucket)
}

func (e *UnknownCheckpointError) Is(target error) bool { return target == fleet.ErrUnknownCheckpoint }

// ErrCheckpointAlive: `worker checkpoint set|reset` refused a checkpoint
// whose owner looks alive, or a group partition's (no --force).
var ErrCheckpointAlive = errors.New("checkpoint has a live owner")

// ParseCheckpointPosition parses set's --position: a seq, or "end".
// end is true for "end".
func ParseCheckpointPosition(s string) (seq uint64, end bool, err error) {
	switch s {
	case "":
		return 0, false, errors.New("--position is required: the seq the next worker resumes after (or end)")
	case "end":
		return 0, true, nil
	}
	seq, err = strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("--position %q: must be a sequence number (a whole number >= 0) or end", s)
	}
	return seq, false, nil
}

// validate checks the flags of `worker checkpoint cmd`.
func (c CheckpointConfig) validate(cmd string) error {
	var msgs []string
	if c.ID == "" {
		msgs = append(msgs, fmt.Sprintf("checkpoint %s needs the checkpoint's id (worker checkpoint %s ID)", cmd, cmd))
	} else if err := checkpoint.ValidateID(c.ID); err != nil {
		msgs = append(msgs, fmt.Sprintf("checkpoint id %q: %v", c.ID, err))
	}
	if cmd == "set" {
		if _, _, err := ParseCheckpointPosition(c.Position); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if c.AliveWindow < 0 {
		msgs = append(msgs, fmt.Sprintf("--alive-window %s: must be > 0 (0 means %s)", c.AliveWindow, DefaultAliveWindow))
	}
	if c.Bucket != "" {
		if err := checkBucketFlag("--bucket", c.Bucket); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if len(msgs) > 0 {
		return cli.Usagef("%s", strings.Join(msgs, "; "))
	}
	return nil
}

// withDefaults fills what may be left zero: Log, Out.
func (c CheckpointConfig) withDefaults() CheckpointConfig {
	if c.Log == nil {
		c.Log = hclog.NewNullLogger()
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	return c
}

func (c CheckpointConfig) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// checkpointSession is a connection, the bound store and the record read.
// Its ctx ends as soon as the server refuses the connection a permission
// (fleet.WatchRefusals): the command's calls then end at once.
type checkpointSession struct {
	ctx   context.Context
	close func()
	nc    *nats.Conn
	store *kvckpt.Store
	rec   checkpoint.Record
	rev   checkpoint.Revision
}

// openCheckpoint connects, binds the existing bucket (creating nothing)
// and loads the record of cfg.ID.
func openCheckpoint(ctx context.Context, cfg CheckpointConfig, name string) (*checkpointSession, *fleet.Client, error) {
	nc, err := cfg.NATS.Connect(cfg.NATS.URL, name, cfg.Log)
	if err != nil {
		return nil, nil, &cli.NATSError{Err: err}
	}
	ctx, stopWatch := fleet.WatchRefusals(ctx, nc)
	s := &checkpointSession{ctx: ctx, close: func() { stopWatch(); nc.Close() }, nc: nc}
	fail := func(err error) (*checkpointSession, *fleet.Client, error) {
		err = fleet.ExplainRefusal(nc, err) // a refused permission ends or times out a request
		s.close()
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(err)
	}
	if s.store, err = bindCheckpoints(ctx, js, cfg.Journal, cfg.Bucket); err != nil {
		return fail(err)
	}
	s.rec, s.rev, err = s.store.Load(ctx, cfg.ID)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return fail(&UnknownCheckpointError{ID: cfg.ID, Journal: cfg.Journal, Bucket: s.store.Bucket()})
	}
	if err != nil {
		return fail(err)
	}
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: cfg.Journal, Logger: cfg.Log})
	if err != nil {
		return fail(err)
	}
	s.close = func() { _ = client.Close(); stopWatch(); nc.Close() }
	return s, client, nil
}

// CheckpointGet prints the record of a checkpoint (`worker checkpoint
// get`), as a table or JSON. A checkpoint with no record is an
// *UnknownCheckpointError; nothing is created.
func CheckpointGet(ctx context.Context, cfg CheckpointConfig) (CheckpointView, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate("get"); err != nil {
		return CheckpointView{}, err
	}
	s, _, err := openCheckpoint(ctx, cfg, "batfleet-worker-checkpoint")
	if err != nil {
		return CheckpointView{}, err
	}
	defer s.close()
	v := checkpointView(cfg.ID, s.rec, s.rev, cfg.now())
	if cfg.JSON {
		enc := json.NewEncoder(cfg.Out)
		enc.SetIndent("", "  ")
		return v, enc.Encode(v)
	}
	return v, printCheckpoint(cfg.Out, v)
}

func checkpointView(id string, rec checkpoint.Record, rev checkpoint.Revision, now time.Time) CheckpointView {
	v := CheckpointView{ID: id, Position: rec.Position, Started: rec.Started, JournalID: rec.JournalID, Owner: rec.Owner,
		UpdatedMs: rec.UpdatedMs, Epoch: rec.Epoch, Revision: uint64(rev)}
	if rec.RegionIdentity != nil {
		v.RegionIdentity = *rec.RegionIdentity
		v.Region = regionSpec(v.RegionIdentity)
	}
	at := time.UnixMilli(int64(rec.UpdatedMs))
	v.LastCommit = at.UTC().Format(time.RFC3339Nano)
	v.AgeSeconds = max(0, now.Sub(at).Seconds())
	return v
}

func printCheckpoint(w io.Writer, v CheckpointView) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	region := v.Region
	if v.RegionIdentity == "" {
		region = "(none stored: no worker can load it)"
	} else if region == "" {
		region = "(every entry)"
	}
	fmt.Fprintf(tw, "CHECKPOINT\t%s\n", v.ID)
	fmt.Fprintf(tw, "POSITION\t%s\n", positionText(v.Position, v.Started))
	fmt.Fprintf(tw, "REGION\t%s\n", region)
	fmt.Fprintf(tw, "JOURNAL ID\t%s\n", dashIfEmpty(v.JournalID))
	fmt.Fprintf(tw, "OWNER\t%s\n", dashIfEmpty(v.Owner))
	fmt.Fprintf(tw, "LAST COMMIT\t%s (%s ago)\n", v.LastCommit, roundAge(time.Duration(v.AgeSeconds*float64(time.Second))))
	fmt.Fprintf(tw, "EPOCH\t%d\n", v.Epoch)
	fmt.Fprintf(tw, "REVISION\t%d\n", v.Revision)
	return tw.Flush()
}

// positionText says where a worker resumes from a (position, started).
func positionText(pos uint64, started bool) string {
	if !started {
		return "beginning (nothing handled yet)"
	}
	return fmt.Sprintf("%d (the next worker resumes after seq %d)", pos, pos)
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// CheckpointSet moves a checkpoint so the next worker resumes after
// cfg.Position (`worker checkpoint set`).
func CheckpointSet(ctx context.Context, cfg CheckpointConfig) (CheckpointMove, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate("set"); err != nil {
		return CheckpointMove{}, err
	}
	seq, end, _ := ParseCheckpointPosition(cfg.Position)
	s, client, err := openCheckpoint(ctx, cfg, "batfleet-worker-checkpoint-set")
	if err != nil {
		return CheckpointMove{}, err
	}
	defer s.close()
	if err := checkMovable(cfg, s.rec); err != nil {
		return CheckpointMove{}, err
	}
	info, err := client.Describe(s.ctx)
	if err != nil {
		return CheckpointMove{}, fmt.Errorf("ask the writer of journal %q for its visible bound: %w", cfg.Journal, fleet.ExplainRefusal(s.nc, err))
	}
	if s.rec.JournalID != "" && s.rec.JournalID != info.JournalID.String() {
		return CheckpointMove{}, fmt.Errorf("checkpoint %s is bound to journal id %s, but the writer of journal %s serves %s: its positions mean nothing there (reset it instead)",
			cfg.ID, s.rec.JournalID, cfg.Journal, info.JournalID)
	}
	rec := s.rec
	switch {
	case end && info.Visible == 0:
		rec.Position, rec.Started = 0, false // nothing to skip
	case end:
		rec.Position, rec.Started = info.Visible-1, true
	case seq >= info.Visible:
		return CheckpointMove{}, fmt.Errorf("--position %d: beyond the journal's visible bound %d (the position must be a seq the writer has made visible, 0 to %d; or end)",
			seq, info.Visible, int64(info.Visible)-1)
	default:
		rec.Position, rec.Started = seq, true
	}
	return moveCheckpoint(cfg, s, rec, "set")
}

// CheckpointReset moves a checkpoint back to the beginning (`worker
// checkpoint reset`): the next worker delivers its region from the start.
func CheckpointReset(ctx context.Context, cfg CheckpointConfig) (CheckpointMove, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate("reset"); err != nil {
		return CheckpointMove{}, err
	}
	s, _, err := openCheckpoint(ctx, cfg, "batfleet-worker-checkpoint-reset")
	if err != nil {
		return CheckpointMove{}, err
	}
	defer s.close()
	if err := checkMovable(cfg, s.rec); err != nil {
		return CheckpointMove{}, err
	}
	rec := s.rec
	rec.Position, rec.Started = 0, false
	return moveCheckpoint(cfg, s, rec, "reset")
}

// checkMovable applies the liveness rule and the group rule (see the
// comment at the top of this file) unless cfg.Force.
func checkMovable(cfg CheckpointConfig, rec checkpoint.Record) error {
	if cfg.Force {
		return nil
	}
	if strings.HasPrefix(cfg.ID, groupCheckpointPrefix) {
		return fmt.Errorf("%w: checkpoint %s is a consumer group's partition checkpoint, owned by the member that claimed it (its epoch %d fences former members): stop the group first, then give --force (the epoch is kept)",
			ErrCheckpointAlive, cfg.ID, rec.Epoch)
	}
	if strings.HasPrefix(rec.Owner, CheckpointCmdOwner) {
		return nil
	}
	window := cfg.AliveWindow
	if window == 0 {
		window = DefaultAliveWindow
	}
	age := cfg.now().Sub(time.UnixMilli(int64(rec.UpdatedMs)))
	if age < window {
		return fmt.Errorf("%w: checkpoint %s is held by worker %s (last commit %s ago, within --alive-window %s): stop that worker first, or give --force (a worker still running then stops with a conflict at its next commit)",
			ErrCheckpointAlive, cfg.ID, dashIfEmpty(rec.Owner), roundAge(age), window)
	}
	return nil
}

// moveCheckpoint writes rec over s's record with a compare-and-swap and
// prints the one confirmation line.
func moveCheckpoint(cfg CheckpointConfig, s *checkpointSession, rec checkpoint.Record, cmd string) (CheckpointMove, error) {
	now := cfg.now()
	rec.Owner = CheckpointCmdOwner + cmd
	rec.UpdatedMs = uint64(now.UnixMilli())
	rev, err := s.store.Save(s.ctx, cfg.ID, rec, s.rev)
	err = fleet.ExplainRefusal(s.nc, err)
	if errors.Is(err, checkpoint.ErrConflict) {
		return CheckpointMove{}, fmt.Errorf("checkpoint %s changed while it was being moved (a worker committed after revision %d was read): nothing was written; stop its worker and try again",
			cfg.ID, s.rev)
	}
	if err != nil {
		return CheckpointMove{}, err
	}
	m := CheckpointMove{ID: cfg.ID, Old: s.rec, New: rec, OldRev: s.rev, NewRev: rev}
	cfg.Log.Info("checkpoint moved", "checkpoint-id", cfg.ID, "old-position", s.rec.Position, "old-started", s.rec.Started,
		"position", rec.Position, "started", rec.Started, "revision", uint64(rev))
	fmt.Fprintf(cfg.Out, "checkpoint %s %s: position %s → %s (revision %d → %d)\n", cfg.ID, cmd,
		shortPosition(s.rec), shortPosition(rec), s.rev, rev)
	return m, nil
}

// shortPosition is a position for the confirmation line.
func shortPosition(rec checkpoint.Record) string {
	if !rec.Started {
		return "beginning"
	}
	return strconv.FormatUint(rec.Position, 10)
}
