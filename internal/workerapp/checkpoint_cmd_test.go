package workerapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/kvckpt"
)

// `worker checkpoint get|set|reset` (issue 16): each test fails without
// the command, or with a rule of it broken.

// TestCheckpointCmdFlagsNameTheRule: bad input is a usage error naming
// the flag (or the id) and the rule, before anything connects (the NATS
// URL points nowhere).
func TestCheckpointCmdFlagsNameTheRule(t *testing.T) {
	nowhere := cli.NATSFlags{URL: "nats://127.0.0.1:1"}
	tests := []struct {
		name string
		cmd  string
		cfg  CheckpointConfig
		want string
	}{
		{"no id", "get", CheckpointConfig{}, "checkpoint get needs the checkpoint's id"},
		{"bad id", "reset", CheckpointConfig{ID: "a\x01b"}, `checkpoint id "a\x01b": `},
		{"no position", "set", CheckpointConfig{ID: "c"}, "--position is required"},
		{"malformed position", "set", CheckpointConfig{ID: "c", Position: "-3"}, `--position "-3": must be a sequence number (a whole number >= 0) or end`},
		{"position with a unit", "set", CheckpointConfig{ID: "c", Position: "12s"}, `--position "12s": must be a sequence number`},
		{"negative alive window", "reset", CheckpointConfig{ID: "c", AliveWindow: -time.Second}, "--alive-window -1s: must be > 0"},
		{"bad bucket", "get", CheckpointConfig{ID: "c", Bucket: "a.b"}, `--bucket "a.b": must be`},
	}
	run := map[string]func(context.Context, CheckpointConfig) error{
		"get":   func(ctx context.Context, c CheckpointConfig) error { _, err := CheckpointGet(ctx, c); return err },
		"set":   func(ctx context.Context, c CheckpointConfig) error { _, err := CheckpointSet(ctx, c); return err },
		"reset": func(ctx context.Context, c CheckpointConfig) error { _, err := CheckpointReset(ctx, c); return err },
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.NATS, tt.cfg.Journal = nowhere, "main"
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := run[tt.cmd](ctx, tt.cfg)
			if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("checkpoint %s: %v, want a usage error containing %q", tt.cmd, err, tt.want)
			}
		})
	}
}

func TestParseCheckpointPosition(t *testing.T) {
	tests := []struct {
		in      string
		seq     uint64
		end     bool
		wantErr bool
	}{
		{"0", 0, false, false}, {"41", 41, false, false}, {"end", 0, true, false},
		{"", 0, false, true}, {"-1", 0, false, true}, {"1e3", 0, false, true}, {"END", 0, false, true},
	}
	for _, tt := range tests {
		seq, end, err := ParseCheckpointPosition(tt.in)
		if seq != tt.seq || end != tt.end || (err != nil) != tt.wantErr {
			t.Errorf("ParseCheckpointPosition(%q) = %d, %t, %v; want %d, %t, error %t", tt.in, seq, end, err, tt.seq, tt.end, tt.wantErr)
		}
	}
}

// TestCheckpointCmdLivenessRule: a record a worker committed within
// --alive-window (default DefaultAliveWindow) is refused without --force;
// older ones, and ones this command wrote, are not; a group partition's
// is refused without --force whatever its age.
func TestCheckpointCmdLivenessRule(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	at := func(ago time.Duration) uint64 { return uint64(now.Add(-ago).UnixMilli()) }
	tests := []struct {
		name    string
		id      string
		rec     checkpoint.Record
		window  time.Duration
		force   bool
		wantErr error
	}{
		{"committed 1s ago", "c", checkpoint.Record{Owner: "w1", UpdatedMs: at(time.Second)}, 0, false, ErrCheckpointAlive},
		{"just inside the default window", "c", checkpoint.Record{Owner: "w1", UpdatedMs: at(DefaultAliveWindow - time.Millisecond)}, 0, false, ErrCheckpointAlive},
		{"at the default window", "c", checkpoint.Record{Owner: "w1", UpdatedMs: at(DefaultAliveWindow)}, 0, false, nil},
		{"older than a short window", "c", checkpoint.Record{Owner: "w1", UpdatedMs: at(2 * time.Second)}, time.Second, false, nil},
		{"recent but forced", "c", checkpoint.Record{Owner: "w1", UpdatedMs: at(0)}, 0, true, nil},
		{"written by this command", "c", checkpoint.Record{Owner: CheckpointCmdOwner + "set", UpdatedMs: at(0)}, 0, false, nil},
		{"group partition, old", "group:g:3", checkpoint.Record{Owner: "m1", UpdatedMs: at(time.Hour), Epoch: 4}, 0, false, ErrCheckpointAlive},
		{"group partition, forced", "group:g:3", checkpoint.Record{Owner: "m1", UpdatedMs: at(0), Epoch: 4}, 0, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := CheckpointConfig{ID: tt.id, AliveWindow: tt.window, Force: tt.force, Now: func() time.Time { return now }}
			err := checkMovable(cfg, tt.rec)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("checkMovable = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "--force") {
				t.Errorf("refusal %q does not name --force", err)
			}
		})
	}
}

// checkpointRig is a fleetRig with events appended and a checkpoint
// bucket holding record id "c" of region entity=order.
type checkpointRig struct {
	fleetRig
	ckpts *kvckpt.Store
	seqs  []uint64
	ident string
	jid   string
}

func newCheckpointRig(t *testing.T, events int) checkpointRig {
	t.Helper()
	r := checkpointRig{fleetRig: newFleetRig(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range events {
		rc, err := r.store.Append(ctx, engine.Event{Coordinate: engine.MustCoordinate(fmt.Sprintf("order:%d", i), "s"), Kind: engine.KindData})
		if err != nil {
			t.Fatal(err)
		}
		r.seqs = append(r.seqs, rc.Seq)
	}
	info, err := r.client.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.jid = info.JournalID.String()
	r.ident = engine.RegionEntity("order").Identity()
	if r.ckpts, err = kvckpt.Open(ctx, r.js, kvckpt.Config{Journal: "main"}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r checkpointRig) plant(t *testing.T, id string, rec checkpoint.Record) checkpoint.Revision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, rev, err := r.ckpts.Load(ctx, id)
	if err != nil && !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatal(err)
	}
	rev, err = r.ckpts.Save(ctx, id, rec, rev)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func (r checkpointRig) load(t *testing.T, id string) (checkpoint.Record, checkpoint.Revision) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, rev, err := r.ckpts.Load(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return rec, rev
}

func (r checkpointRig) cfg(out *bytes.Buffer) CheckpointConfig {
	return CheckpointConfig{NATS: r.natsf, Journal: "main", Bucket: kvckpt.DefaultBucket, ID: "c", Out: out}
}

// TestCheckpointGetPrintsTheRecord: get prints every field, the region as
// --region takes it, as JSON and as a table.
func TestCheckpointGetPrintsTheRecord(t *testing.T) {
	r := newCheckpointRig(t, 3)
	updated := time.Now().Add(-90 * time.Second).UnixMilli()
	rev := r.plant(t, "c", checkpoint.Record{Position: r.seqs[1], Started: true, RegionIdentity: &r.ident, JournalID: r.jid,
		Owner: "w1", UpdatedMs: uint64(updated), Epoch: 0})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var out bytes.Buffer
	cfg := r.cfg(&out)
	cfg.JSON = true
	if _, err := CheckpointGet(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	var v CheckpointView
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("get --json: %v:\n%s", err, out.String())
	}
	want := CheckpointView{ID: "c", Position: r.seqs[1], Started: true, Region: "entity=order", RegionIdentity: r.ident,
		JournalID: r.jid, Owner: "w1", UpdatedMs: uint64(updated),
		LastCommit: time.UnixMilli(updated).UTC().Format(time.RFC3339Nano), Revision: uint64(rev)}
	age := v.AgeSeconds
	v.AgeSeconds = 0
	if v != want || age < 90 || age > 120 {
		t.Errorf("get --json = %+v (age %.1f s)\nwant %+v (age 90 s)", v, age, want)
	}

	out.Reset()
	cfg.JSON = false
	if _, err := CheckpointGet(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`CHECKPOINT\s+c`, fmt.Sprintf(`POSITION\s+%d \(the next worker resumes after seq %d\)`, r.seqs[1], r.seqs[1]),
		`REGION\s+entity=order`, `JOURNAL ID\s+` + r.jid, `OWNER\s+w1`, `LAST COMMIT\s+\S+ \(1m3\ds ago\)`,
		`EPOCH\s+0`, fmt.Sprintf(`REVISION\s+%d`, rev),
	} {
		if !regexp.MustCompile(`(?m)^` + line + `$`).MatchString(out.String()) {
			t.Errorf("get table has no line %q:\n%s", line, out.String())
		}
	}
}

// TestCheckpointCmdUnknownAndMissingBucket: an unknown id is an
// *UnknownCheckpointError; a missing bucket is a *MissingBucketError, and
// none of get, set and reset creates it.
func TestCheckpointCmdUnknownAndMissingBucket(t *testing.T) {
	r := newCheckpointRig(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	cfg := r.cfg(&out)
	cfg.ID = "nobody"
	_, err := CheckpointGet(ctx, cfg)
	var uce *UnknownCheckpointError
	if !errors.As(err, &uce) || !errors.Is(err, fleet.ErrUnknownCheckpoint) || !strings.Contains(err.Error(), `unknown checkpoint "nobody"`) {
		t.Errorf("get of an unknown id: %v", err)
	}
	cfg.Position = "0"
	if _, err := CheckpointSet(ctx, cfg); !errors.Is(err, fleet.ErrUnknownCheckpoint) {
		t.Errorf("set of an unknown id: %v", err)
	}
	if _, err := CheckpointReset(ctx, cfg); !errors.Is(err, fleet.ErrUnknownCheckpoint) {
		t.Errorf("reset of an unknown id: %v", err)
	}

	cfg.Bucket = "typo"
	for name, f := range map[string]func() error{
		"get":   func() error { _, err := CheckpointGet(ctx, cfg); return err },
		"set":   func() error { _, err := CheckpointSet(ctx, cfg); return err },
		"reset": func() error { _, err := CheckpointReset(ctx, cfg); return err },
	} {
		var mbe *MissingBucketError
		if err := f(); !errors.As(err, &mbe) || !errors.Is(err, jetstream.ErrBucketNotFound) {
			t.Errorf("%s --bucket typo: %v, want a *MissingBucketError", name, err)
		}
		if bucketExists(t, r.js, "typo") {
			t.Fatalf("%s --bucket typo created the bucket", name)
		}
	}
	if out.Len() != 0 {
		t.Errorf("failures printed %q", out.String())
	}
}

// TestCheckpointSetAndReset: set moves the record with a compare-and-swap,
// keeping its region, journal id and epoch; a position at or past the
// visible bound is refused; end is the bound - 1; reset goes back to the
// beginning; the former holder's next save conflicts.
func TestCheckpointSetAndReset(t *testing.T) {
	r := newCheckpointRig(t, 5)
	old := uint64(time.Now().Add(-time.Hour).UnixMilli())
	rev := r.plant(t, "c", checkpoint.Record{Position: r.seqs[4], Started: true, RegionIdentity: &r.ident, JournalID: r.jid,
		Owner: "w1", UpdatedMs: old, Epoch: 7})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	cfg := r.cfg(&out)

	visible := r.seqs[4] + 1
	cfg.Position = fmt.Sprint(visible)
	_, err := CheckpointSet(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("--position %d: beyond the journal's visible bound %d", visible, visible)) {
		t.Fatalf("set past the visible bound: %v", err)
	}
	if _, got := r.load(t, "c"); got != rev {
		t.Fatalf("a refused set wrote revision %d", got)
	}

	cfg.Position = fmt.Sprint(r.seqs[1])
	m, err := CheckpointSet(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec, rev2 := r.load(t, "c")
	if rec.Position != r.seqs[1] || !rec.Started || *rec.RegionIdentity != r.ident || rec.JournalID != r.jid ||
		rec.Epoch != 7 || rec.Owner != CheckpointCmdOwner+"set" || rev2 != m.NewRev || m.OldRev != rev {
		t.Errorf("after set: %+v rev %d (move %+v)", rec, rev2, m)
	}
	wantLine := fmt.Sprintf("checkpoint c set: position %d → %d (revision %d → %d)\n", r.seqs[4], r.seqs[1], rev, rev2)
	if out.String() != wantLine {
		t.Errorf("set printed %q, want %q", out.String(), wantLine)
	}
	// The former holder (it read revision rev) loses its next save.
	if _, err := r.ckpts.Save(ctx, "c", checkpoint.Record{Position: r.seqs[4], Started: true, RegionIdentity: &r.ident}, rev); !errors.Is(err, checkpoint.ErrConflict) {
		t.Errorf("a save against the revision before set: %v, want a conflict", err)
	}

	out.Reset()
	cfg.Position = "end"
	if _, err := CheckpointSet(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if rec, _ := r.load(t, "c"); rec.Position != visible-1 || !rec.Started {
		t.Errorf("set --position end: %+v, want position %d", rec, visible-1)
	}

	out.Reset()
	if _, err := CheckpointReset(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	rec, rev3 := r.load(t, "c")
	if rec.Position != 0 || rec.Started || *rec.RegionIdentity != r.ident || rec.JournalID != r.jid || rec.Epoch != 7 {
		t.Errorf("after reset: %+v", rec)
	}
	if want := fmt.Sprintf("checkpoint c reset: position %d → beginning (revision %d → %d)\n", visible-1, rev3-1, rev3); out.String() != want {
		t.Errorf("reset printed %q, want %q", out.String(), want)
	}
}

// TestCheckpointCmdRefusesLiveOwner: a record committed a moment ago is
// refused by set and reset (nothing is written) and moved with --force.
func TestCheckpointCmdRefusesLiveOwner(t *testing.T) {
	r := newCheckpointRig(t, 3)
	rev := r.plant(t, "c", checkpoint.Record{Position: r.seqs[2], Started: true, RegionIdentity: &r.ident, JournalID: r.jid,
		Owner: "busy-worker", UpdatedMs: uint64(time.Now().UnixMilli())})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	cfg := r.cfg(&out)
	cfg.Position = fmt.Sprint(r.seqs[0])
	if _, err := CheckpointSet(ctx, cfg); !errors.Is(err, ErrCheckpointAlive) || !strings.Contains(err.Error(), "held by worker busy-worker") {
		t.Errorf("set of a live checkpoint: %v", err)
	}
	if _, err := CheckpointReset(ctx, cfg); !errors.Is(err, ErrCheckpointAlive) {
		t.Errorf("reset of a live checkpoint: %v", err)
	}
	if _, got := r.load(t, "c"); got != rev || out.Len() != 0 {
		t.Fatalf("refused commands wrote revision %d, printed %q", got, out.String())
	}
	cfg.Force = true
	if _, err := CheckpointReset(ctx, cfg); err != nil {
		t.Fatalf("reset --force: %v", err)
	}
	if rec, _ := r.load(t, "c"); rec.Started {
		t.Errorf("reset --force left %+v", rec)
	}
}
