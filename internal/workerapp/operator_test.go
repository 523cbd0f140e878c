package workerapp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/internal/natstest"
	"github.com/batfleet/batfleet/kvckpt"
)

// The operator's defects of issue 16, worker side: each test fails
// without its fix.

// TestOutHandlerDevicesAndPipes (issue 16, 1): --out on a device or a
// pipe writes the batch and does not fail on fsync, which only regular
// files support.
func TestOutHandlerDevicesAndPipes(t *testing.T) {
	batch := testEntries()
	t.Run("dev null", func(t *testing.T) {
		h, err := newOutHandler(os.DevNull, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if msg := handleRecovering(h, batch); msg != "" {
			t.Fatalf("--out %s: %s", os.DevNull, msg)
		}
	})
	t.Run("pipe", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		// The pipe opened by path, as /dev/stdout is when stdout is piped.
		h, err := newOutHandler(fmt.Sprintf("/dev/fd/%d", w.Fd()), nil)
		if err != nil {
			t.Fatal(err)
		}
		read := make(chan []byte, 1)
		go func() { // ends at EOF: both write ends are closed below
			b, _ := io.ReadAll(r)
			read <- b
		}()
		msg := handleRecovering(h, batch)
		_ = h.Close()
		_ = w.Close()
		got := <-read
		if msg != "" {
			t.Fatalf("--out on a pipe: %s", msg)
		}
		if string(got) != testEntryLines {
			t.Errorf("pipe got\n%s\nwant\n%s", got, testEntryLines)
		}
	})
	t.Run("stdout is a regular file: synced", func(t *testing.T) {
		f, err := os.Create(t.TempDir() + "/stdout")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		h, err := newOutHandler("-", f)
		if err != nil {
			t.Fatal(err)
		}
		if !h.sync || h.own {
			t.Errorf("--out - on a regular file: sync %v own %v, want sync and not owned", h.sync, h.own)
		}
	})
}

// handleRecovering runs the --out handler on batch and returns the text of
// its panic ("" when it did not panic).
func handleRecovering(h *outHandler, batch []engine.Entry) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint(r)
		}
	}()
	h.handle(context.Background(), batch, nil)
	return ""
}

// TestFlagsNameValuesAsTyped (issue 16, 8): a value a typed flag refuses
// is reported with the flag as users type it, its value and the rule.
func TestFlagsNameValuesAsTyped(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     [2]string
		wantErr string // "" for none
		check   func(t *testing.T, idle, wait time.Duration, batch int)
	}{
		{name: "duration without unit", args: []string{"--idle", "5"}, wantErr: "--idle 5: a duration needs a unit, e.g. 5s"},
		{name: "not a duration", args: []string{"--idle=soon"}, wantErr: "--idle soon: not a duration: want a number with a unit, e.g. 500ms, 30s, 5m or 1h30m"},
		{name: "not a number", args: []string{"--batch", "lots"}, wantErr: "--batch lots: not a whole number"},
		{name: "negative wait", args: []string{"--wait-writer", "-1s"}, wantErr: "--wait-writer -1s: must be >= 0 (0: do not wait), or forever"},
		{name: "environment names the variable", env: [2]string{"BATFLEET_IDLE", "5"}, wantErr: `BATFLEET_IDLE="5": a duration needs a unit, e.g. 5s`},
		{name: "unknown flag", args: []string{"--bogus"}, wantErr: "unknown flag --bogus"},
		{name: "defaults", check: func(t *testing.T, idle, wait time.Duration, batch int) {
			if idle != 30*time.Second || wait != WaitForever || batch != 64 {
				t.Errorf("defaults: idle %v wait %v batch %d", idle, wait, batch)
			}
		}},
		{name: "values", args: []string{"--idle", "1m", "--wait-writer", "0", "--batch", "0x10"}, check: func(t *testing.T, idle, wait time.Duration, batch int) {
			if idle != time.Minute || wait != 0 || batch != 16 {
				t.Errorf("parsed: idle %v wait %v batch %d", idle, wait, batch)
			}
		}},
		{name: "forever", args: []string{"--wait-writer", "2s", "--wait-writer", "forever"}, check: func(t *testing.T, _, wait time.Duration, _ int) {
			if wait != WaitForever {
				t.Errorf("--wait-writer forever: %v", wait)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env[0] != "" {
				t.Setenv(tt.env[0], tt.env[1])
			}
			fs := pflag.NewFlagSet("worker run", pflag.ContinueOnError)
			f := NewFlags(fs)
			var idle, wait time.Duration
			var batch int
			f.Duration(&idle, "idle", 30*time.Second, "")
			f.UntilForever(&wait, "wait-writer", "")
			f.Int(&batch, "batch", 64, "")
			err := f.Parse(tt.args)
			if tt.wantErr != "" {
				if !errors.Is(err, cli.ErrUsage) || err.Error() != tt.wantErr {
					t.Fatalf("Parse(%q) = %v, want the usage error %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.args, err)
			}
			tt.check(t, idle, wait, batch)
			if got := fs.Lookup("wait-writer").DefValue; got != "forever" {
				t.Errorf("--wait-writer's default shows as %q, want forever", got)
			}
		})
	}
}

// TestRunNamesFlagsAsTyped (issue 16, 8): Run's usage errors name flags
// as users type them, without Go field names or package prefixes.
func TestRunNamesFlagsAsTyped(t *testing.T) {
	base := RunConfig{Out: "-", Batch: 1, Idle: time.Second, Restart: "once", ExecTimeout: time.Second,
		Attempts: 3, RetryBackoff: 100 * time.Millisecond, OnPoison: "restart", ParkedBucket: "batfleet_parked",
		NATS: cli.NATSFlags{URL: "nats://127.0.0.1:1"}, Log: hclog.NewNullLogger()}
	tests := []struct {
		name string
		mod  func(*RunConfig)
		want string
	}{
		{"category out of range", func(c *RunConfig) { c.Region = "category=16" }, "--region: category 16: out of range, want 0-15 (or 0x0-0xf)"},
		{"entity star", func(c *RunConfig) { c.Region = "entity=*" }, `--region: entity prefix "*" is not a glob; omit the prefix to match every entity`},
		{"inverted clock", func(c *RunConfig) { c.Region = "clock=9-3" }, "--region: clock 9-3: the start is after the end (want LO-HI with LO <= HI)"},
		{"scope separator", func(c *RunConfig) { c.Region = "scope=a|b" }, `--region: scope: contains "|" or "=" (byte 1)`},
		{"batch 0", func(c *RunConfig) { c.Batch = 0 }, "--batch 0: must be >= 1 (the most entries per handler call)"},
		{"idle 0", func(c *RunConfig) { c.Idle = 0 }, "--idle 0s: must be > 0 (how long the writer holds an idle pull, e.g. 30s)"},
		{"from bogus", func(c *RunConfig) { c.From = "yesterday" }, `--from "yesterday": want beginning, end, seq:N or time:RFC3339 (e.g. time:2026-12-04T10:00:00Z)`},
		{"from bad time", func(c *RunConfig) { c.From = "time:2026-12-04" }, `--from "time:2026-12-04": want beginning, end, seq:N or time:RFC3339 (e.g. time:2026-12-04T10:00:00Z)`},
		{"several at once", func(c *RunConfig) { c.Batch, c.ExecTimeout, c.CheckpointOutage = -1, 0, -time.Second },
			"--batch -1: must be >= 1 (the most entries per handler call); " +
				"--exec-timeout 0s: must be > 0 (how long --exec may take to answer a batch, e.g. 30s); " +
				"--checkpoint-outage -1s: must be >= 0 (0 rides out any outage)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mod(&cfg)
			err := Run(context.Background(), cfg)
			if !errors.Is(err, cli.ErrUsage) || err.Error() != tt.want {
				t.Fatalf("Run: %v\nwant the usage error %q", err, tt.want)
			}
		})
	}
}

// TestReadOnlyCommandsCreateNoBucket (issue 16, 3): status, group ls and
// group describe on a bucket that does not exist fail, naming it, and
// create nothing.
func TestReadOnlyCommandsCreateNoBucket(t *testing.T) {
	rig := newFleetRig(t)
	ctx := context.Background()
	log := hclog.NewNullLogger()
	st := StatusConfig{NATS: rig.natsf, Journal: "main", Bucket: "typo", Out: io.Discard, Log: log}
	gc := GroupConfig{NATS: rig.natsf, Journal: "main", Bucket: "typo", GroupBucket: "typo_groups", Name: "g", Out: io.Discard, Log: log}
	calls := []struct {
		name string
		call func() error
		want string
	}{
		{"status --bucket typo", func() error { _, err := Status(ctx, st); return err },
			`checkpoint bucket "typo" does not exist (is --bucket typo right? read-only commands create nothing)`},
		{"status (default bucket)", func() error {
			c := st
			c.Bucket = kvckpt.DefaultBucket
			_, err := Status(ctx, c)
			return err
		}, `checkpoint bucket "batfleet_checkpoints" does not exist: no worker has used it on this NATS deployment yet`},
		{"group ls --group-bucket typo_groups", func() error { _, err := GroupList(ctx, gc); return err },
			`groups bucket "typo_groups" does not exist (is --group-bucket typo_groups right?`},
		{"group describe g --group-bucket typo_groups", func() error { _, err := GroupDescribe(ctx, gc); return err },
			`groups bucket "typo_groups" does not exist`},
	}
	for _, c := range calls {
		err := c.call()
		var mb *MissingBucketError
		if !errors.As(err, &mb) || !errors.Is(err, jetstream.ErrBucketNotFound) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v\nwant a *MissingBucketError saying %q", c.name, err, c.want)
		}
	}
	// With the groups bucket in place, describe fails on the missing
	// checkpoint bucket instead.
	if _, err := rig.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "typo_groups", History: 8}); err != nil {
		t.Fatal(err)
	}
	if _, err := GroupDescribe(ctx, gc); err == nil || !strings.Contains(err.Error(), `checkpoint bucket "typo" does not exist`) {
		t.Errorf("group describe --bucket typo: %v, want the missing checkpoint bucket named", err)
	}
	var out bytes.Buffer
	c := gc
	c.Out = &out
	if infos, err := GroupList(ctx, c); err != nil || len(infos) != 0 || !strings.Contains(out.String(), "(no groups)") {
		t.Errorf("group ls on an empty groups bucket: %v, %v\n%s", infos, err, out.String())
	}
	for _, b := range []string{"typo", kvckpt.DefaultBucket} {
		if bucketExists(t, rig.js, b) {
			t.Errorf("bucket %s was created by a read-only command", b)
		}
	}
}

// TestHeldByNamesTheHolder (issue 16, 5): a lost compare-and-swap is
// reported with who holds the checkpoint and when it last committed, and
// still matches checkpoint.ErrConflict.
func TestHeldByNamesTheHolder(t *testing.T) {
	ns := natstest.StartServer(t)
	_, js := natstest.Connect(t, ns)
	ctx := context.Background()
	store, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: "main"})
	if err != nil {
		t.Fatal(err)
	}
	identity := engine.RegionAll().Identity()
	rec := checkpoint.Record{Position: 7, Started: true, RegionIdentity: &identity, Owner: "worker-b",
		UpdatedMs: uint64(time.Now().Add(-2 * time.Second).UnixMilli())}
	rev, err := store.Save(ctx, "dup2", rec, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, conflict := store.Save(ctx, "dup2", rec, rev+5) // a stale expected revision
	if !errors.Is(conflict, checkpoint.ErrConflict) {
		t.Fatalf("stale save: %v, want a conflict", conflict)
	}
	err = heldBy(store, "dup2", conflict)
	want := "checkpoint dup2 is held by worker worker-b (last commit 2s ago): "
	if !errors.Is(err, checkpoint.ErrConflict) || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("heldBy: %v\nwant it to start %q and match ErrConflict", err, want)
	}
	if strings.Contains(err.Error(), "err_code") || strings.Contains(err.Error(), "kv:") {
		t.Errorf("heldBy: %q carries the wrapped chain", err)
	}
	kv, err := js.KeyValue(ctx, kvckpt.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, store.Key("dup2")); err != nil { // a reset
		t.Fatalf("delete: %v", err)
	}
	if err := heldBy(store, "dup2", conflict); !strings.HasPrefix(err.Error(), "checkpoint dup2 was reset") {
		t.Errorf("heldBy after a reset: %v", err)
	}
}

// syncBuffer is a log sink safe for a logger and a polling reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAwaitWriter (issue 16, 6): with no writer for the journal the
// worker says so once and waits for one; --wait-writer bounds the wait.
func TestAwaitWriter(t *testing.T) {
	ns := natstest.StartServer(t)
	nc, _ := natstest.Connect(t, ns)
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: "typo"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	ctx := context.Background()

	for _, wait := range []time.Duration{0, 300 * time.Millisecond} {
		var logs syncBuffer
		log := hclog.New(&hclog.LoggerOptions{Output: &logs})
		start := time.Now()
		err := awaitWriter(ctx, client, "typo", wait, log)
		var nw *NoWriterError
		if !errors.As(err, &nw) || time.Since(start) < wait {
			t.Fatalf("--wait-writer %s: %v after %v, want a *NoWriterError after the wait", wait, err, time.Since(start))
		}
		want := fmt.Sprintf(`no writer serves journal "typo" (nothing answers on its subjects); gave up after --wait-writer %s (is --journal right?)`, wait)
		if err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
	}

	// Waiting for ever: one warning, then a writer comes and the wait ends.
	var logs syncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs})
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- awaitWriter(wctx, client, "typo", WaitForever, log) }()
	poll(t, 10*time.Second, "the no-writer warning", func() bool { return strings.Contains(logs.String(), `no writer serves journal "typo"`) })
	store, err := journal.Open(t.TempDir(), journal.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	w, err := fleet.NewWriter(nc, store, fleet.WriterConfig{Journal: "typo"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_ = w.Close(cctx)
	})
	if err := <-done; err != nil {
		t.Fatalf("awaitWriter once a writer serves the journal: %v", err)
	}
	if n := strings.Count(logs.String(), "no writer serves"); n != 1 {
		t.Errorf("the no-writer warning was logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "a writer serves the journal now") {
		t.Errorf("no line saying the writer came:\n%s", logs.String())
	}

	// A cancelled wait returns the context's error (exit 0 for a signal).
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	other, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: "other"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	if err := awaitWriter(cctx, other, "other", WaitForever, hclog.NewNullLogger()); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: %v, want context.Canceled", err)
	}
}
