package workerapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/internal/natstest"
	"github.com/batfleet/batfleet/kvckpt"
)

// poll calls cond until it holds, failing the test after limit.
func poll(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond) // polling state another goroutine moves
	}
}

// poisonScript is an --exec child that answers "fail SEQ" for the first
// entry of entity poison in a batch (the entries before it handled)
// until $D/healed exists, and appends "seq entity" of every entry it
// handles to $D/handled.
const poisonScript = `while IFS= read -r line; do
	case "$line" in
	'{"batch_end":true}')
		if [ -n "$fail" ]; then echo "fail $fail poisoned entity"; else echo continue; fi
		fail= ;;
	*)
		[ -n "$fail" ] && continue
		seq=${line#'{"seq":'}; seq=${seq%%,*}
		ent=${line#*'"entity":"'}; ent=${ent%%'"'*}
		if [ "$ent" = poison ] && [ ! -e "$D/healed" ]; then fail=$seq
		else echo "$seq $ent" >> "$D/handled"; fi ;;
	esac
done
`

// handledSeqs reads $D/handled: the seqs the script handled, by entity,
// in the order handled.
func handledSeqs(t *testing.T, dir string) map[string][]uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "handled"))
	if errors.Is(err, os.ErrNotExist) {
		return map[string][]uint64{}
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]uint64{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		seq, ent, _ := strings.Cut(l, " ")
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			t.Fatalf("handled line %q", l)
		}
		out[ent] = append(out[ent], n)
	}
	return out
}

func (c ParkedConfig) withOut(w io.Writer) ParkedConfig {
	c.Out = w
	return c
}

// TestPSN04_ExecFailParksEntity: an --exec child that answers "fail SEQ"
// for one entity's entries gets that entity parked (from its first entry
// on, in order) while every other entity is delivered; after the child
// heals, a replay hands the parked entries back in seq order (PSN-06).
func TestPSN04_ExecFailParksEntity(t *testing.T) {
	store, err := journal.Open(t.TempDir(), journal.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	ctx := context.Background()
	var poisonSeqs []uint64
	others := map[string][]uint64{}
	var last uint64
	for i := range 60 {
		ent := fmt.Sprintf("e%d", i%4)
		if i%6 == 5 {
			ent = "poison"
		}
		r, err := store.Append(ctx, engine.Event{Coordinate: engine.MustCoordinate(ent, "s"), Kind: engine.KindData})
		if err != nil {
			t.Fatal(err)
		}
		if ent == "poison" {
			poisonSeqs = append(poisonSeqs, r.Seq)
		} else {
			others[ent] = append(others[ent], r.Seq)
		}
		last = r.Seq
	}

	dir := t.TempDir()
	h := newTestExec(t, "D='"+dir+"'\n"+poisonScript, 10*time.Second)
	mem := checkpoint.NewMemoryStore()
	retry, err := ParseRetry(2, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	cfg := delivery.DefaultWorkerConfig()
	cfg.CheckpointID, cfg.Checkpoints, cfg.Parked, cfg.Retry = "psn", mem, mem, retry
	cfg.BatchSize, cfg.ParkedRefresh = 8, 20*time.Millisecond
	w, err := delivery.StartWorker(ctx, store, engine.RegionAll(), cfg, h.handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.StopAndJoin() })

	poll(t, 20*time.Second, "the worker committed everything", func() bool {
		st := w.Stats()
		return st.CommittedStarted && st.Committed == last
	})
	list, err := mem.ListParked(ctx, "psn")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("parked set %+v, want the entity poison alone", list)
	}
	p := list[0]
	if p.Entity != "poison" || p.FirstSeq != poisonSeqs[0] || p.LastSeq != poisonSeqs[len(poisonSeqs)-1] ||
		p.Count != uint64(len(poisonSeqs)) || p.Attempts != 2 || !strings.Contains(p.Error, "poisoned entity") {
		t.Fatalf("parked %+v, want poison seqs %d..%d (%d entries) after 2 attempts with the child's text",
			p.Parked, poisonSeqs[0], poisonSeqs[len(poisonSeqs)-1], len(poisonSeqs))
	}
	got := handledSeqs(t, dir)
	if len(got["poison"]) != 0 {
		t.Errorf("poison entries handled: %v", got["poison"])
	}
	for ent, want := range others {
		if fmt.Sprint(dedup(got[ent])) != fmt.Sprint(want) {
			t.Errorf("entity %s handled %v, want %v", ent, got[ent], want)
		}
	}
	if st := w.Stats(); st.Failures < 2 || st.Retries < 1 || st.ParkedEntities != 1 || st.ParkedEntries != uint64(len(poisonSeqs)) {
		t.Errorf("stats %+v, want >= 2 failures, >= 1 retry, 1 parked entity with %d entries", st, len(poisonSeqs))
	}

	// Heal the child, ask for a replay as `worker parked replay` does.
	if err := os.WriteFile(filepath.Join(dir, "healed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p.Replay = true
	if _, err := mem.PutParked(ctx, "psn", p.Parked, p.Revision); err != nil {
		t.Fatal(err)
	}
	poll(t, 20*time.Second, "the replay unparked the entity", func() bool {
		l, err := mem.ListParked(ctx, "psn")
		return err == nil && len(l) == 0
	})
	if got := handledSeqs(t, dir)["poison"]; fmt.Sprint(got) != fmt.Sprint(poisonSeqs) {
		t.Errorf("replayed %v, want %v in seq order", got, poisonSeqs)
	}
	if st := w.Stats(); st.Replayed != uint64(len(poisonSeqs)) || st.ParkedEntities != 0 {
		t.Errorf("stats after the replay %+v, want %d replayed and nothing parked", st, len(poisonSeqs))
	}
}

// dedup drops repeats of a seq (retries deliver entries again).
func dedup(seqs []uint64) []uint64 {
	var out []uint64
	seen := map[uint64]bool{}
	for _, s := range seqs {
		if !seen[s] {
			out = append(out, s)
			seen[s] = true
		}
	}
	return out
}

// fleetRig is an embedded NATS server and a writer serving a journal.
type fleetRig struct {
	natsf  cli.NATSFlags
	js     jetstream.JetStream
	store  *journal.Store
	client *fleet.Client
	w      *fleet.Writer
}

func newFleetRig(t *testing.T) fleetRig {
	t.Helper()
	ns := natstest.StartServer(t)
	nc, js := natstest.Connect(t, ns)
	store, err := journal.Open(t.TempDir(), journal.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	w, err := fleet.NewWriter(nc, store, fleet.WriterConfig{Journal: "main"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Close(ctx)
	})
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: "main"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return fleetRig{natsf: cli.NATSFlags{URL: ns.ClientURL()}, js: js, store: store, client: client, w: w}
}

func bucketExists(t *testing.T, js jetstream.JetStream, bucket string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := js.KeyValue(ctx, bucket)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("bind %s: %v", bucket, err)
	}
	return err == nil
}

// TestParkedCommandsCreateNothing: on a fresh NATS deployment, parked ls
// prints that nothing is parked, replay and drop say the entity is not
// parked, wait says the checkpoint or group is unknown, and none of them
// creates a bucket; a --parked-bucket that does not exist is an error.
func TestParkedCommandsCreateNothing(t *testing.T) {
	rig := newFleetRig(t)
	ctx := context.Background()
	log := hclog.NewNullLogger()
	pc := ParkedConfig{NATS: rig.natsf, Journal: "main", Bucket: kvckpt.DefaultBucket, GroupBucket: fleet.DefaultGroupBucket,
		ParkedBucket: kvckpt.DefaultParkedBucket, Checkpoint: "orders", Log: log}

	var out bytes.Buffer
	c := pc
	c.Out = &out
	rows, err := ParkedList(ctx, c)
	if err != nil || len(rows) != 0 || !strings.Contains(out.String(), "(nothing parked)") {
		t.Errorf("parked ls: %v, %v\n%s\nwant nothing parked", rows, err, out.String())
	}
	out.Reset()
	c.JSON = true
	if _, err := ParkedList(ctx, c); err != nil || strings.TrimSpace(out.String()) != "[]" {
		t.Errorf("parked ls --json: %v, printed %q; want []", err, out.String())
	}
	c.JSON, c.ParkedBucket = false, "no_such_bucket"
	if _, err := ParkedList(ctx, c); err == nil || !strings.Contains(err.Error(), `parked bucket "no_such_bucket" does not exist`) {
		t.Errorf("parked ls --parked-bucket no_such_bucket: %v, want an error saying it does not exist", err)
	}
	c = pc
	c.Out, c.Entity = io.Discard, "order:7"
	var np *NotParkedError
	for name, f := range map[string]func(context.Context, ParkedConfig) error{"replay": parkedReplay, "drop": parkedDrop} {
		if err := f(ctx, c); !errors.As(err, &np) || err.Error() != "entity order:7 is not parked in checkpoint orders" {
			t.Errorf("parked %s of an entity never parked: %v", name, err)
		}
	}
	c.Checkpoint, c.Group = "", "nogroup"
	if _, err := ParkedList(ctx, c); !errors.Is(err, fleet.ErrGroupNotFound) {
		t.Errorf("parked ls --group nogroup: %v, want ErrGroupNotFound", err)
	}

	wc := WaitConfig{NATS: rig.natsf, Journal: "main", Bucket: kvckpt.DefaultBucket, GroupBucket: fleet.DefaultGroupBucket,
		Checkpoint: "orders", Through: "1", Timeout: 10 * time.Second, Log: log}
	start := time.Now()
	if err := Wait(ctx, wc); !errors.Is(err, fleet.ErrUnknownCheckpoint) {
		t.Errorf("wait on a checkpoint with no bucket: %v, want ErrUnknownCheckpoint", err)
	}
	wc.Checkpoint, wc.Group = "", "nogroup"
	if err := Wait(ctx, wc); !errors.Is(err, fleet.ErrGroupNotFound) {
		t.Errorf("wait on a group with no bucket: %v, want ErrGroupNotFound", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the unknown waits took %v, want an answer at once", d)
	}
	for _, b := range []string{kvckpt.DefaultParkedBucket, kvckpt.DefaultBucket, fleet.DefaultGroupBucket, "no_such_bucket"} {
		if bucketExists(t, rig.js, b) {
			t.Errorf("bucket %s was created by a read-only command", b)
		}
	}

	// With the checkpoint bucket in place, an unknown id is still unknown.
	if _, err := kvckpt.Open(ctx, rig.js, kvckpt.Config{Journal: "main"}); err != nil {
		t.Fatal(err)
	}
	wc.Checkpoint, wc.Group = "orders", ""
	if err := Wait(ctx, wc); !errors.Is(err, fleet.ErrUnknownCheckpoint) {
		t.Errorf("wait on an unknown checkpoint: %v, want ErrUnknownCheckpoint", err)
	}
}

// TestParkedListReplayDrop drives parked ls, replay and drop against a
// parked record in KV, and wait against a worker's checkpoint.
func TestParkedListReplayDrop(t *testing.T) {
	rig := newFleetRig(t)
	ctx := context.Background()
	ckpts, err := kvckpt.Open(ctx, rig.js, kvckpt.Config{Journal: "main"})
	if err != nil {
		t.Fatal(err)
	}
	parked, err := ckpts.OpenParked(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	rec := checkpoint.Parked{Entity: "order:7", FirstSeq: 3, LastSeq: 9, Count: 3, Attempts: 3,
		Error: "entry 3: card declined\nsecond line", ParkedMs: uint64(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixMilli())}
	if _, err := parked.PutParked(ctx, "orders", rec, 0); err != nil {
		t.Fatal(err)
	}
	other := checkpoint.Parked{Entity: "order:8", FirstSeq: 4, LastSeq: 4, Count: 1, Attempts: 1, Error: "x"}
	if _, err := parked.PutParked(ctx, "other", other, 0); err != nil {
		t.Fatal(err)
	}
	pc := ParkedConfig{NATS: rig.natsf, Journal: "main", Bucket: kvckpt.DefaultBucket, GroupBucket: fleet.DefaultGroupBucket,
		ParkedBucket: kvckpt.DefaultParkedBucket, Checkpoint: "orders", Log: hclog.NewNullLogger()}

	var out bytes.Buffer
	c := pc
	c.Out = &out
	if _, err := ParkedList(ctx, c); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, want := range []string{"CHECKPOINT", "ENTITY", "FIRST SEQ", "orders", "order:7", "2026-01-02T03:04:05Z", "entry 3: card declined second line"} {
		if !strings.Contains(table, want) {
			t.Errorf("parked ls table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "order:8") {
		t.Errorf("parked ls of checkpoint orders shows another checkpoint's entity:\n%s", table)
	}
	out.Reset()
	c.JSON = true
	if _, err := ParkedList(ctx, c); err != nil {
		t.Fatal(err)
	}
	var rows []ParkedRow
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("parked ls --json printed %q: %v", out.String(), err)
	}
	if len(rows) != 1 || rows[0].Entity != "order:7" || rows[0].Checkpoint != "orders" || rows[0].Partition != -1 ||
		rows[0].FirstSeq != 3 || rows[0].LastSeq != 9 || rows[0].Count != 3 || rows[0].Attempts != 3 || rows[0].Replay || rows[0].Revision == 0 {
		t.Errorf("parked ls --json = %+v", rows)
	}

	// Replay marks the record; a second replay says it is pending.
	out.Reset()
	c = pc
	c.Out, c.Entity = &out, "order:7"
	if got, err := ParkedReplay(ctx, c); err != nil || !got.Replay || got.Count != 3 {
		t.Fatalf("replay: %+v, %v", got, err)
	}
	if !strings.Contains(out.String(), "replay of entity order:7 in checkpoint orders requested: 3 entries, seqs 3..9") {
		t.Errorf("replay printed %q", out.String())
	}
	list, err := parked.ListParked(ctx, "orders")
	if err != nil || len(list) != 1 || !list[0].Replay {
		t.Fatalf("after replay: %+v, %v; want the record marked for replay", list, err)
	}
	out.Reset()
	if _, err := ParkedReplay(ctx, c); err != nil || !strings.Contains(out.String(), "already requested") {
		t.Errorf("second replay: %v, printed %q", err, out.String())
	}

	// Drop deletes it; then it is not parked any more.
	out.Reset()
	if _, err := ParkedDrop(ctx, c); err != nil || !strings.Contains(out.String(), "dropped entity order:7 from checkpoint orders: 3 parked entries") {
		t.Fatalf("drop: %v, printed %q", err, out.String())
	}
	if list, err := parked.ListParked(ctx, "orders"); err != nil || len(list) != 0 {
		t.Fatalf("after drop: %+v, %v", list, err)
	}
	var np *NotParkedError
	if _, err := ParkedDrop(ctx, c); !errors.As(err, &np) {
		t.Errorf("second drop: %v, want NotParkedError", err)
	}
	if list, err := parked.ListParked(ctx, "other"); err != nil || len(list) != 1 {
		t.Errorf("the other checkpoint's parked set: %+v, %v; want it untouched", list, err)
	}
}

// TestPSN07_Wait: wait returns once a worker's checkpoint has committed
// through the seq, at once for a region the seq does not concern, and
// times out with ErrWaitTimeout (saying where the checkpoint is) for a
// seq never reached.
func TestPSN07_Wait(t *testing.T) {
	rig := newFleetRig(t)
	ctx := context.Background()
	var last uint64
	for i := range 20 {
		r, err := rig.store.Append(ctx, engine.Event{Coordinate: engine.MustCoordinate(fmt.Sprintf("order:%d", i), "s"), Kind: engine.KindData})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Seq
	}
	ckpts, err := kvckpt.Open(ctx, rig.js, kvckpt.Config{Journal: "main"})
	if err != nil {
		t.Fatal(err)
	}
	// A worker whose handler holds its batches until released.
	release := make(chan struct{})
	start := func(id string, region engine.Region, h delivery.Handler) *delivery.Worker {
		cfg := delivery.DefaultWorkerConfig()
		cfg.CheckpointID, cfg.Checkpoints, cfg.IdleTimeout, cfg.BatchSize = id, ckpts, time.Second, 8
		w, err := delivery.StartWorker(ctx, rig.client, region, cfg, h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.StopAndJoin() })
		return w
	}
	cont := func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action { return delivery.Continue }
	// "users" commits once (its one entry), then nothing up to last
	// concerns it.
	r, err := rig.store.Append(ctx, engine.Event{Coordinate: engine.MustCoordinate("user:1", "s"), Kind: engine.KindData})
	if err != nil {
		t.Fatal(err)
	}
	users := start("users", engine.RegionEntity("user"), cont)
	poll(t, 10*time.Second, "users committed", func() bool { return users.Stats().Committed == r.Seq })
	// "orders" commits its first batch (8 entries), then its handler holds
	// the next one until released.
	calls := 0
	orders := start("orders", engine.RegionEntity("order"), func(ctx context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
		if calls++; calls == 1 {
			return delivery.Continue
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return delivery.Continue
	})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // before the workers' cleanups: a held handler must not block their stop
	poll(t, 10*time.Second, "orders committed its first batch", func() bool { return orders.Stats().CommittedStarted })
	firstBatch := orders.Stats().Committed

	wc := WaitConfig{NATS: rig.natsf, Journal: "main", Bucket: kvckpt.DefaultBucket, GroupBucket: fleet.DefaultGroupBucket,
		Checkpoint: "orders", Through: strconv.FormatUint(last, 10), Timeout: 300 * time.Millisecond, Log: hclog.NewNullLogger()}
	err = Wait(ctx, wc)
	want := fmt.Sprintf("timed out after 300ms: checkpoint orders has not committed through seq %d (it is at position %d)", last, firstBatch)
	if !errors.Is(err, ErrWaitTimeout) || err.Error() != want {
		t.Fatalf("wait while the handler holds a batch: %v, want %q", err, want)
	}
	releaseAll()
	wc.Timeout = 20 * time.Second
	if err := Wait(ctx, wc); err != nil {
		t.Fatalf("wait through %d: %v", last, err)
	}
	// The users region has nothing up to last: at once.
	wc.Checkpoint, wc.Timeout = "users", 5*time.Second
	if err := Wait(ctx, wc); err != nil {
		t.Fatalf("wait on a region the seq does not concern: %v", err)
	}
	// A seq beyond the journal times out, saying where the checkpoint is.
	wc.Checkpoint, wc.Through, wc.Timeout = "orders", strconv.FormatUint(last+1000, 10), 300*time.Millisecond
	err = Wait(ctx, wc)
	var te *WaitTimeoutError
	if !errors.Is(err, ErrWaitTimeout) || !errors.As(err, &te) {
		t.Fatalf("wait beyond the journal: %v, want ErrWaitTimeout", err)
	}
	want = fmt.Sprintf("timed out after 300ms: checkpoint orders has not committed through seq %d (it is at position %d)", last+1000, last)
	if err.Error() != want {
		t.Errorf("timeout: %q, want %q", err, want)
	}
}

// TestParkedGroup: parked ls --group lists the parked entities of every
// partition; replay --group finds the entity's partition; wait --group
// waits for every partition.
func TestParkedGroup(t *testing.T) {
	rig := newFleetRig(t)
	ctx := context.Background()
	ckpts, err := kvckpt.Open(ctx, rig.js, kvckpt.Config{Journal: "main"})
	if err != nil {
		t.Fatal(err)
	}
	parked, err := ckpts.OpenParked(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	var poisonSeqs []uint64
	for i := range 40 {
		ent := fmt.Sprintf("acct:%d", i%8)
		if i%5 == 2 {
			ent = "acct:poison"
		}
		r, err := rig.store.Append(ctx, engine.Event{Coordinate: engine.MustCoordinate(ent, "s"), Kind: engine.KindData})
		if err != nil {
			t.Fatal(err)
		}
		if ent == "acct:poison" {
			poisonSeqs = append(poisonSeqs, r.Seq)
		}
		last = r.Seq
	}
	var healed atomic.Bool
	var mu sync.Mutex
	var replayed []uint64
	h := func(_ context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
		for _, e := range b {
			if e.Coordinate.Entity() != "acct:poison" {
				continue
			}
			if !healed.Load() {
				return d.FailAt(e.Seq, errors.New("poisoned"))
			}
			mu.Lock()
			replayed = append(replayed, e.Seq)
			mu.Unlock()
		}
		return delivery.Continue
	}
	wcfg := delivery.DefaultWorkerConfig()
	wcfg.Retry = delivery.RetryPolicy{Attempts: 2, Base: time.Millisecond}
	wcfg.Parked, wcfg.ParkedRefresh, wcfg.IdleTimeout = parked, 20*time.Millisecond, time.Second
	m, err := fleet.JoinGroup(ctx, rig.client, ckpts, rig.js, fleet.GroupConfig{
		Name: "accts", Region: engine.RegionEntity("acct"), Partitions: 4, MemberID: "m1",
		Session: time.Second, Heartbeat: 250 * time.Millisecond, Worker: wcfg,
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.StopAndJoin() })

	log := hclog.NewNullLogger()
	wc := WaitConfig{NATS: rig.natsf, Journal: "main", Bucket: kvckpt.DefaultBucket, GroupBucket: fleet.DefaultGroupBucket,
		Group: "accts", Through: strconv.FormatUint(last, 10), Timeout: 20 * time.Second, Log: log}
	if err := Wait(ctx, wc); err != nil {
		t.Fatalf("wait --group through %d: %v", last, err)
	}
	wantPart := int(engine.Bucket("acct:poison")) / (engine.Buckets / 4)
	pc := ParkedConfig{NATS: rig.natsf, Journal: "main", Bucket: kvckpt.DefaultBucket, GroupBucket: fleet.DefaultGroupBucket,
		ParkedBucket: kvckpt.DefaultParkedBucket, Group: "accts", Log: log}
	var out bytes.Buffer
	c := pc
	c.Out = &out
	rows, err := ParkedList(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	wantID := fmt.Sprintf("group:accts:%d", wantPart)
	if len(rows) != 1 || rows[0].Entity != "acct:poison" || rows[0].Partition != wantPart || rows[0].Checkpoint != wantID ||
		rows[0].FirstSeq != poisonSeqs[0] || rows[0].Count != uint64(len(poisonSeqs)) {
		t.Fatalf("parked ls --group = %+v, want acct:poison in partition %d from seq %d (%d entries)", rows, wantPart, poisonSeqs[0], len(poisonSeqs))
	}
	if !strings.Contains(out.String(), "PARTITION") || !strings.Contains(out.String(), wantID) {
		t.Errorf("parked ls --group table:\n%s", out.String())
	}

	healed.Store(true)
	c.Entity = "acct:nobody"
	var np *NotParkedError
	if _, err := ParkedReplay(ctx, c); !errors.As(err, &np) || !strings.Contains(err.Error(), "entity acct:nobody is not parked in group accts (partition") {
		t.Errorf("replay --group of an entity never parked: %v", err)
	}
	out.Reset()
	c.Entity = "acct:poison"
	if _, err := ParkedReplay(ctx, c); err != nil {
		t.Fatalf("replay --group: %v", err)
	}
	if !strings.Contains(out.String(), fmt.Sprintf("in group accts (partition %d, checkpoint %s) requested", wantPart, wantID)) {
		t.Errorf("replay --group printed %q", out.String())
	}
	poll(t, 20*time.Second, "the replay unparked acct:poison", func() bool {
		rows, err := ParkedList(ctx, pc.withOut(io.Discard))
		return err == nil && len(rows) == 0
	})
	mu.Lock()
	got := fmt.Sprint(replayed)
	mu.Unlock()
	if got != fmt.Sprint(poisonSeqs) {
		t.Errorf("replayed %s, want %v", got, poisonSeqs)
	}
}
