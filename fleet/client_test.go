package fleet

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet/internal/wire"
	"github.com/batfleet/batfleet/fleet/internal/wire/wiretest"
)

// recorder is a worker handler that records what it was handed.
type recorder struct {
	mu      sync.Mutex
	seqs    []uint64
	counts  map[uint64]int
	gaps    []delivery.GapObservation
	batches [][]uint64
	handled map[uint64]time.Time // first delivery of each seq
}

func newRecorder() *recorder {
	return &recorder{counts: map[uint64]int{}, handled: map[uint64]time.Time{}}
}

func (r *recorder) handle(_ context.Context, batch []engine.Entry, d *delivery.Delivery) delivery.Action {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var seqs []uint64
	for _, e := range batch {
		seqs = append(seqs, e.Seq)
		r.counts[e.Seq]++
		if _, ok := r.handled[e.Seq]; !ok {
			r.handled[e.Seq] = now
		}
	}
	r.seqs = append(r.seqs, seqs...)
	r.batches = append(r.batches, seqs)
	r.gaps = append(r.gaps, d.Gaps...)
	return delivery.Continue
}

func (r *recorder) handledAt(seq uint64) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.handled[seq]
	return at, ok
}

func (r *recorder) has(seq uint64) bool { _, ok := r.handledAt(seq); return ok }

func (r *recorder) delivered() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.seqs...)
}

func (r *recorder) observations() []delivery.GapObservation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery.GapObservation(nil), r.gaps...)
}

// exactlyOnce fails unless every seq of want was handled exactly once, in
// order, and nothing else was.
func (r *recorder) exactlyOnce(t testing.TB, want []uint64) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for seq, n := range r.counts {
		if n != 1 {
			t.Errorf("seq %d handled %d times", seq, n)
		}
	}
	if fmt.Sprint(r.seqs) != fmt.Sprint(want) {
		t.Errorf("handled %v, want %v", r.seqs, want)
	}
}

func workerConfig(idle time.Duration, batch int) delivery.WorkerConfig {
	cfg := delivery.DefaultWorkerConfig()
	cfg.IdleTimeout = idle
	cfg.BatchSize = batch
	return cfg
}

func appendTo(t testing.TB, store *journal.Store, entity string, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := 0; i < n; i++ {
		rc, err := store.Append(testCtx(t), event(t, entity, []byte(fmt.Sprint(i))))
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		seqs = append(seqs, rc.Seq)
	}
	return seqs
}

func stopWorker(t testing.TB, w *delivery.Worker) {
	t.Helper()
	start := time.Now()
	if err := w.StopAndJoin(); err != nil {
		t.Errorf("StopAndJoin: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("StopAndJoin took %v", took)
	}
}

// publishEpoch publishes a crafted epoch message and waits until c's
// subscription has taken it.
func publishEpoch(t testing.TB, nc *nats.Conn, c *Client, em wire.EpochMessage) {
	t.Helper()
	before, err := c.sub.Delivered()
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(c.subj.Epoch, wire.EncodeEpoch(em)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the client to receive the epoch message", func() bool {
		n, _ := c.sub.Delivered()
		return n > before
	})
}

// ---------------------------------------------------------------------
// Waking (WRK-07, VIS-15, WRK-18).
// ---------------------------------------------------------------------

// WRK-07 †: an idle remote worker (idle timeout 10 s) handles a new event
// promptly after its append is acknowledged: its held pull is answered,
// not the idle timeout.
func TestRemoteWorkerWakesOnEpoch(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, envOpts{inproc: tr.inproc})
			ctx := testCtx(t)
			rec := newRecorder()
			wk, err := delivery.StartWorker(ctx, e.c, engine.RegionEntity("order"), workerConfig(10*time.Second, 64), rec.handle)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				// Let the worker go idle: after each event its next pull
				// finds nothing and is held by the writer, so once i+1
				// pulls were held it has handled every earlier event.
				waitFor(t, 5*time.Second, "the worker to go idle", func() bool { return e.w.Stats().PullsHeld >= uint64(i+1) })
				rcs, err := e.c.Append(ctx, []engine.Event{event(t, "order", []byte{byte(i)})})
				if err != nil {
					t.Fatal(err)
				}
				acked := time.Now()
				waitFor(t, 5*time.Second, "the handler", func() bool { return rec.has(rcs[0].Seq) })
				at, _ := rec.handledAt(rcs[0].Seq)
				latency := at.Sub(acked)
				t.Logf("event %d handled %v after its append was acknowledged", i, latency)
				if latency > time.Second {
					t.Errorf("handled %v after the ack; the idle timeout is 10 s, the held pull should wake it", latency)
				}
			}
			stopWorker(t, wk) // WRK-08: an idle worker stops at once
		})
	}
}

// VIS-15 †: a caller parked on (I1, 7) wakes when a restarted writer (I2,
// small epoch) publishes; (I1, 6) never wakes it; once I2 is seen, late
// messages of I1 are ignored.
func TestClientParkAcrossWriterRestart(t *testing.T) {
	ns := startServer(t, nil)
	dir := t.TempDir()
	wnc := connect(t, ns, true)
	cnc := connect(t, ns, false)
	pnc := connect(t, ns, true) // publishes crafted epoch messages
	store1 := openStore(t, dir, journal.Config{})
	w1 := startWriter(t, wnc, store1, WriterConfig{})
	c := newClient(t, cnc, ClientConfig{})
	ctx := testCtx(t)
	jid, i1 := store1.JournalID(), store1.Incarnation()
	// A client takes epoch messages once it parks (or pulls without a
	// hold): the first park subscribes and returns at once.
	if !c.Park(ctx, engine.Snapshot{}, time.Second) {
		t.Fatal("the first park did not return at once")
	}

	for store1.Epoch() < 7 {
		appendTo(t, store1, "order", 1)
	}
	if store1.Epoch() != 7 {
		t.Fatalf("store at epoch %d, want 7", store1.Epoch())
	}
	at7 := engine.Snapshot{Incarnation: i1, Epoch: 7}
	waitFor(t, 5*time.Second, "the client to see (I1, 7)", func() bool { return c.Latest() == at7 })

	// (I1, 6) and (I1, 7) are not newer than (I1, 7): no wake-up.
	c.onEpoch(&nats.Msg{Data: wire.EncodeEpoch(wire.EpochMessage{JournalID: jid, Incarnation: i1, Epoch: 6, Visible: 1})})
	if c.Park(ctx, at7, 0) {
		t.Fatal("(I1, 6) counted as newer than (I1, 7)")
	}
	woke := make(chan bool, 1)
	go func() { woke <- c.Park(ctx, at7, 400*time.Millisecond) }()
	publishEpoch(t, pnc, c, wire.EpochMessage{JournalID: jid, Incarnation: i1, Epoch: 6, Visible: 1})
	publishEpoch(t, pnc, c, wire.EpochMessage{JournalID: jid, Incarnation: i1, Epoch: 7, Visible: 1})
	if <-woke {
		t.Fatal("an epoch message of (I1, 6) or (I1, 7) woke a caller parked on (I1, 7)")
	}
	if c.Latest() != at7 {
		t.Fatalf("latest moved to %+v", c.Latest())
	}

	// Park on (I1, 7) with a long timeout, then restart the writer.
	type parked struct {
		woke   bool
		took   time.Duration
		latest engine.Snapshot
	}
	result := make(chan parked, 1)
	go func() {
		start := time.Now()
		ok := c.Park(ctx, at7, time.Minute)
		result <- parked{ok, time.Since(start), c.Latest()}
	}()
	if err := w1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := store1.Close(); err != nil {
		t.Fatal(err)
	}
	store2 := openStore(t, dir, journal.Config{})
	i2 := store2.Incarnation()
	if i2 == i1 || store2.JournalID() != jid {
		t.Fatalf("reopened journal %v incarnation %v (was %v, %v)", store2.JournalID(), i2, jid, i1)
	}
	restarted := time.Now()
	startWriter(t, wnc, store2, WriterConfig{})
	var r parked
	select {
	case r = <-result:
	case <-time.After(30 * time.Second):
		t.Fatal("the parked caller did not wake after the writer restarted")
	}
	t.Logf("parked caller woke %v after the restart (parked %v, timeout 1m); new epoch %d", time.Since(restarted), r.took, store2.Epoch())
	if !r.woke || r.latest.Incarnation != i2 {
		t.Fatalf("park returned %v with latest %+v, want a wake-up by incarnation %v", r.woke, r.latest, i2)
	}
	if store2.Epoch() >= 7 {
		t.Errorf("new incarnation at epoch %d: the test wants it below the old one", store2.Epoch())
	}

	// Late messages of I1, however high their epoch, are ignored.
	latest := c.Latest()
	publishEpoch(t, pnc, c, wire.EpochMessage{JournalID: jid, Incarnation: i1, Epoch: 1000, Visible: 1000})
	c.onEpoch(&nats.Msg{Data: wire.EncodeEpoch(wire.EpochMessage{JournalID: jid, Incarnation: i1, Epoch: 1001, Visible: 1})})
	if got := c.Latest(); got != latest {
		t.Fatalf("a late I1 message moved latest from %+v to %+v", latest, got)
	}
	if c.Park(ctx, latest, 0) {
		t.Fatal("a late I1 message counts as newer than I2")
	}
	// A newer epoch of I2 does wake.
	go func() { woke <- c.Park(ctx, latest, 30*time.Second) }()
	appendTo(t, store2, "order", 1)
	if !<-woke {
		t.Fatal("a new I2 epoch did not wake the caller")
	}
}

// VIS-15 †, worker side: a remote worker parked with a 30 s idle timeout
// follows a writer restart and handles an event appended afterwards
// within moments.
func TestRemoteWorkerFollowsWriterRestart(t *testing.T) {
	ns := startServer(t, nil)
	dir := t.TempDir()
	wnc := connect(t, ns, true)
	cnc := connect(t, ns, true)
	store1 := openStore(t, dir, journal.Config{})
	w1 := startWriter(t, wnc, store1, WriterConfig{})
	c := newClient(t, cnc, ClientConfig{})
	ctx := testCtx(t)
	want := appendTo(t, store1, "order", 2)
	rec := newRecorder()
	ckpts := checkpoint.NewMemoryStore()
	cfg := workerConfig(30*time.Second, 64)
	cfg.CheckpointID = "vis-15"
	wk, err := delivery.StartWorker(ctx, c, engine.RegionEntity("order"), withCheckpoints(cfg, ckpts), rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	// Pull 1 brings both events, pull 2 nothing and is held by I1.
	waitFor(t, 5*time.Second, "the worker's pull to be held", func() bool { return w1.Stats().PullsHeld >= 1 })
	if !rec.has(want[1]) {
		t.Fatalf("after two pulls the worker handled %v", rec.delivered())
	}

	if err := w1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := store1.Close(); err != nil {
		t.Fatal(err)
	}
	store2 := openStore(t, dir, journal.Config{})
	startWriter(t, wnc, store2, WriterConfig{})
	rcs, err := c.Append(ctx, []engine.Event{event(t, "order", []byte("after restart"))})
	if err != nil {
		t.Fatal(err)
	}
	acked := time.Now()
	want = append(want, rcs[0].Seq)
	waitFor(t, 10*time.Second, "the event appended after the restart", func() bool { return rec.has(rcs[0].Seq) })
	at, _ := rec.handledAt(rcs[0].Seq)
	t.Logf("event after the restart handled %v after its ack (idle timeout 30 s)", at.Sub(acked))
	if at.Sub(acked) > 5*time.Second {
		t.Errorf("handled %v after the ack", at.Sub(acked))
	}
	stopWorker(t, wk)
	rec.exactlyOnce(t, want)
	rc, _, err := ckpts.Load(ctx, "vis-15")
	if err != nil || rc.Position != rcs[0].Seq || rc.JournalID != store2.JournalID().String() {
		t.Fatalf("checkpoint %+v (%v), want position %d", rc, err, rcs[0].Seq)
	}
}

// WRK-18 †: with epoch messages dropped, a new event is still delivered
// within about one idle timeout.
func TestRemoteWorkerWithoutEpochMessages(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true})
	ctx := testCtx(t)
	e.c.DropEpochs(true)

	// The injection works: an epoch message no longer wakes a parked caller.
	// (An empty region, so that the poll starts no pull-ahead, whose reply
	// would carry the newer epoch and wake the caller legitimately.)
	res, err := e.c.Poll(ctx, engine.RegionEntity("nothing-here"), 0, false, 1)
	if err != nil {
		t.Fatal(err)
	}
	woke := make(chan bool, 1)
	go func() { woke <- e.c.Park(ctx, res.Snapshot, 500*time.Millisecond) }()
	before, _ := e.c.sub.Delivered()
	appendTo(t, e.store, "other", 1)
	waitFor(t, 5*time.Second, "the epoch message to arrive", func() bool { n, _ := e.c.sub.Delivered(); return n > before })
	if <-woke {
		t.Fatal("a dropped epoch message woke the parked caller")
	}

	const idle = 300 * time.Millisecond
	rec := newRecorder()
	wk, err := delivery.StartWorker(ctx, e.c, engine.RegionEntity("order"), workerConfig(idle, 64), rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		pulls := e.w.Stats().Pulls
		waitFor(t, 5*time.Second, "the worker to poll again", func() bool { return e.w.Stats().Pulls > pulls })
		rcs, err := e.c.Append(ctx, []engine.Event{event(t, "order", []byte{byte(i)})})
		if err != nil {
			t.Fatal(err)
		}
		acked := time.Now()
		waitFor(t, 10*time.Second, "the handler", func() bool { return rec.has(rcs[0].Seq) })
		at, _ := rec.handledAt(rcs[0].Seq)
		t.Logf("without epoch messages, event %d handled %v after its ack (idle timeout %v)", i, at.Sub(acked), idle)
		if at.Sub(acked) > 3*time.Second {
			t.Errorf("handled %v after the ack, want within about one idle timeout (%v)", at.Sub(acked), idle)
		}
	}
	stopWorker(t, wk)
}

// ---------------------------------------------------------------------
// Writer down (WRK-16).
// ---------------------------------------------------------------------

// WRK-16 †: while the writer is down a remote worker retries — transient
// errors counted, committed position unchanged, no restart budget used,
// Join not returned — and when the writer is back (restarted, a new
// incarnation) it resumes with no loss and no duplicate.
func TestRemoteWorkerRetriesWhileWriterDown(t *testing.T) {
	ns := startServer(t, nil)
	dir := t.TempDir()
	wnc := connect(t, ns, true)
	cnc := connect(t, ns, false)
	store1 := openStore(t, dir, journal.Config{})
	w1 := startWriter(t, wnc, store1, WriterConfig{})
	c := newClient(t, cnc, ClientConfig{Timeout: 2 * time.Second})
	ctx := testCtx(t)

	want := appendTo(t, store1, "order", 3)
	rec := newRecorder()
	ckpts := checkpoint.NewMemoryStore()
	cfg := workerConfig(100*time.Millisecond, 2)
	cfg.CheckpointID = "wrk-16"
	wk, err := delivery.StartWorker(ctx, c, engine.RegionEntity("order"), withCheckpoints(cfg, ckpts), rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the first events to be committed", func() bool {
		st := wk.Stats()
		return st.CommittedStarted && st.Committed == want[2]
	})

	if err := w1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	base := wk.Stats()
	waitFor(t, 10*time.Second, "the worker to retry", func() bool { return wk.Stats().TransientErrors >= base.TransientErrors+3 })
	// Events appended while the writer is down.
	want = append(want, appendTo(t, store1, "order", 3)...)
	st := wk.Stats()
	if st.Committed != base.Committed || st.Batches != base.Batches || st.Restarts != 0 || st.SaveFailures != 0 {
		t.Fatalf("while the writer was down: %+v (before %+v)", st, base)
	}
	select {
	case <-wk.Done():
		t.Fatalf("the worker exited while the writer was down: %v", wk.Join())
	default:
	}
	t.Logf("%d transient errors while the writer was down", st.TransientErrors-base.TransientErrors)

	// The writer comes back, restarted on the same journal.
	if err := store1.Close(); err != nil {
		t.Fatal(err)
	}
	store2 := openStore(t, dir, journal.Config{})
	startWriter(t, wnc, store2, WriterConfig{})
	want = append(want, appendTo(t, store2, "order", 2)...)
	last := want[len(want)-1]
	waitFor(t, 10*time.Second, "the worker to catch up", func() bool { return wk.Stats().Committed == last })
	stopWorker(t, wk)
	rec.exactlyOnce(t, want)
	if st := wk.Stats(); st.Restarts != 0 || st.SaveFailures != 0 {
		t.Errorf("final stats %+v", st)
	}
	rc, _, err := ckpts.Load(ctx, "wrk-16")
	if err != nil || rc.Position != last || !rc.Started || rc.JournalID != store2.JournalID().String() {
		t.Fatalf("checkpoint %+v (%v), want position %d", rc, err, last)
	}
}

// WRK-16 †: with no writer at all, a worker backing off (first backoff =
// its 5 s idle timeout) stops at once when asked, with no error, and never
// calls its handler.
func TestRemoteWorkerStopWhileBackingOff(t *testing.T) {
	ns := startServer(t, nil)
	cnc := connect(t, ns, true)
	c := newClient(t, cnc, ClientConfig{})
	ctx := testCtx(t)
	for _, durable := range []bool{false, true} {
		t.Run(fmt.Sprintf("durable=%v", durable), func(t *testing.T) {
			cfg := workerConfig(5*time.Second, 8)
			var ckpts checkpoint.Store
			if durable {
				cfg.CheckpointID = "backoff"
				ckpts = checkpoint.NewMemoryStore()
			}
			wk, err := delivery.StartWorker(ctx, c, engine.RegionAll(), withCheckpoints(cfg, ckpts), func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action {
				t.Error("handler called with no writer")
				return delivery.Stop
			})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "a transient error", func() bool { return wk.Stats().TransientErrors >= 1 })
			select {
			case <-wk.Done():
				t.Fatalf("worker gave up: %v", wk.Join())
			default:
			}
			start := time.Now()
			err = wk.StopAndJoin()
			took := time.Since(start)
			t.Logf("StopAndJoin while backing off took %v", took)
			if err != nil || took > time.Second {
				t.Fatalf("StopAndJoin = %v after %v, want nil within 1 s", err, took)
			}
		})
	}
}

// ---------------------------------------------------------------------
// Gap observations (GAP-10).
// ---------------------------------------------------------------------

// GAP-10 †: for batches crossing cancelled ranges the handler of a remote
// worker gets exactly what a local worker's handler and a local cursor
// record, and the metrics agree.
func TestRemoteGapsMatchLocal(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true})
	ctx := testCtx(t)
	st := e.store
	cancelFence := func(entity string, n int) {
		t.Helper()
		if err := st.BeginFence(ctx); err != nil {
			t.Fatal(err)
		}
		var evs []engine.Event
		for i := 0; i < n; i++ {
			evs = append(evs, event(t, entity, []byte("hidden")))
		}
		if _, err := st.AppendFenced(ctx, evs); err != nil {
			t.Fatal(err)
		}
		if err := st.CancelFence(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := appendTo(t, st, "gap", 1)
	cancelFence("gap", 2) // a matching entity's cancelled range
	appendTo(t, st, "other", 1)
	cancelFence("other", 1) // another entity's (GAP-08: observed too)
	want = append(want, appendTo(t, st, "gap", 2)...)
	cancelFence("gap", 1)
	want = append(want, appendTo(t, st, "gap", 1)...)
	if n := len(st.CancelledRanges()); n != 3 {
		t.Fatalf("%d cancelled ranges, want 3", n)
	}
	region := engine.RegionEntity("gap")

	for _, batch := range []int{1, 2, 8} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			// What a local cursor records.
			cur, err := delivery.NewCursor(st, region)
			if err != nil {
				t.Fatal(err)
			}
			if err := cur.WithGapConfig(delivery.GapConfig{Capacity: 100}); err != nil {
				t.Fatal(err)
			}
			for {
				es, err := cur.PollBatch(ctx, batch)
				if err != nil {
					t.Fatal(err)
				}
				if len(es) == 0 {
					break
				}
			}
			expected := cur.TakeGaps()
			if len(expected) < 2 {
				t.Fatalf("the local cursor recorded %v", expected)
			}

			run := func(src delivery.Source) (*recorder, delivery.WorkerStats) {
				rec := newRecorder()
				wk, err := delivery.StartWorker(ctx, src, region, workerConfig(10*time.Millisecond, batch), rec.handle)
				if err != nil {
					t.Fatal(err)
				}
				waitFor(t, 10*time.Second, "all events", func() bool { return rec.has(want[len(want)-1]) })
				stopWorker(t, wk)
				return rec, wk.Stats()
			}
			local, localStats := run(st)
			remote, remoteStats := run(e.c)

			if fmt.Sprint(remote.delivered()) != fmt.Sprint(local.delivered()) || fmt.Sprint(local.delivered()) != fmt.Sprint(want) {
				t.Fatalf("delivered: remote %v, local %v, want %v", remote.delivered(), local.delivered(), want)
			}
			if !reflect.DeepEqual(local.observations(), expected) {
				t.Errorf("local worker observed %v, the cursor recorded %v", local.observations(), expected)
			}
			if !reflect.DeepEqual(remote.observations(), local.observations()) {
				t.Errorf("remote worker observed %v, local %v", remote.observations(), local.observations())
			}
			if remoteStats.GapObservations != localStats.GapObservations || remoteStats.GapSequences != localStats.GapSequences ||
				localStats.GapObservations != uint64(len(expected)) {
				t.Errorf("gap metrics: remote %d/%d, local %d/%d", remoteStats.GapObservations, remoteStats.GapSequences,
					localStats.GapObservations, localStats.GapSequences)
			}
		})
	}
}

// ---------------------------------------------------------------------
// Appends.
// ---------------------------------------------------------------------

func TestClientAppendIdempotency(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true})
	ctx := testCtx(t)

	// Client.Append gives unkeyed events random UUIDv7 keys: each entry's
	// id is its key, and distinct.
	rcs, err := e.c.Append(ctx, []engine.Event{event(t, "idm", []byte("a")), event(t, "idm", []byte("b")), event(t, "idm", []byte("c"))})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[[16]byte]bool{}
	for i, rc := range rcs {
		if rc.ID == ([16]byte{}) || ids[rc.ID] || rc.Replayed {
			t.Errorf("receipt %d: %+v", i, rc)
		}
		if rc.ID[6]>>4 != 7 || rc.ID[8]>>6 != 2 {
			t.Errorf("receipt %d: id %x is not a UUIDv7", i, rc.ID)
		}
		if ms := int64(rc.ID[0])<<40 | int64(rc.ID[1])<<32 | int64(rc.ID[2])<<24 | int64(rc.ID[3])<<16 | int64(rc.ID[4])<<8 | int64(rc.ID[5]); time.Since(time.UnixMilli(ms)).Abs() > time.Minute {
			t.Errorf("receipt %d: id %x carries time %v", i, rc.ID, time.UnixMilli(ms))
		}
		ids[rc.ID] = true
		if i > 0 && rc.Seq != rcs[i-1].Seq+1 {
			t.Errorf("batch not contiguous: %+v", rcs)
		}
	}
	res, err := e.store.Poll(ctx, engine.RegionEntity("idm"), 0, false, 10)
	if err != nil || len(res.Entries) != 3 {
		t.Fatalf("store has %d entries (%v)", len(res.Entries), err)
	}
	for i, en := range res.Entries {
		if en.Seq != rcs[i].Seq || en.ID != rcs[i].ID {
			t.Errorf("entry %d: seq %d id %x, receipt %+v", i, en.Seq, en.ID, rcs[i])
		}
	}

	// The same request body sent twice: the second reply replays the first.
	keyed := []engine.Event{event(t, "idm:k", []byte("1")), event(t, "idm:k", []byte("2"))}
	keyed[0].Key = engine.DeriveIdempotencyKey("client-test", []byte("1"))
	keyed[1].Key = engine.DeriveIdempotencyKey("client-test", []byte("2"))
	body := wire.EncodeAppendRequest(keyed)
	send := func() []engine.Receipt {
		t.Helper()
		msg, err := e.cnc.Request(e.subj.Append, body, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rcs, err := wire.DecodeAppendReply(msg.Data)
		if err != nil {
			t.Fatalf("append reply: %v (%v)", err, msg.Header)
		}
		return rcs
	}
	first := send()
	allocated, epoch := e.store.Stats().Allocated, e.store.Epoch()
	second := send()
	if len(first) != 2 || len(second) != 2 {
		t.Fatalf("receipts %v, %v", first, second)
	}
	for i := range first {
		if first[i].Replayed || !second[i].Replayed || first[i].Seq != second[i].Seq || first[i].ID != second[i].ID || first[i].ID != keyed[i].Key {
			t.Errorf("event %d: first %+v, second %+v (key %x)", i, first[i], second[i], keyed[i].Key)
		}
	}
	// Client.Append keeps caller keys: a third send replays too.
	third, err := e.c.Append(ctx, keyed)
	if err != nil {
		t.Fatal(err)
	}
	for i := range third {
		if !third[i].Replayed || third[i].Seq != first[i].Seq {
			t.Errorf("Client.Append of known keys: %+v, first %+v", third[i], first[i])
		}
	}
	if a, ep := e.store.Stats().Allocated, e.store.Epoch(); a != allocated || ep != epoch {
		t.Errorf("replays wrote: allocated %d → %d, epoch %d → %d", allocated, a, epoch, ep)
	}

	// A partial keyed batch, in either order.
	unkeyed := event(t, "idm:p", nil)
	for name, batch := range map[string][]engine.Event{
		"unkeyed first": {unkeyed, keyed[0]},
		"keyed first":   {keyed[0], unkeyed},
	} {
		if _, err := e.c.Append(ctx, batch); !errors.Is(err, journal.ErrIdempotencyPartialBatch) {
			t.Errorf("Client.Append of a partial keyed batch (%s): %v, want ErrIdempotencyPartialBatch", name, err)
		}
	}
	// Sent as is, the writer refuses it 400 and writes nothing.
	_, err = e.c.request(ctx, e.subj.Append, wire.EncodeAppendRequest([]engine.Event{keyed[0], unkeyed}))
	var re *RemoteError
	if !errors.Is(err, ErrBadRequest) || !errors.As(err, &re) || !strings.Contains(re.Description, journal.ErrIdempotencyPartialBatch.Error()) {
		t.Errorf("partial keyed batch on the wire: %v", err)
	}
	if _, err := e.c.Append(ctx, nil); !errors.Is(err, journal.ErrEmptyBatch) {
		t.Errorf("empty append: %v", err)
	}
	if a := e.store.Stats().Allocated; a != allocated {
		t.Errorf("refused appends wrote: allocated %d → %d", allocated, a)
	}
}

// ---------------------------------------------------------------------
// Error mapping.
// ---------------------------------------------------------------------

func TestClientErrorMapping(t *testing.T) {
	t.Run("no writer", func(t *testing.T) {
		ns := startServer(t, nil)
		c := newClient(t, connect(t, ns, true), ClientConfig{AppendAttempts: 2})
		ctx := testCtx(t)
		var re *RemoteError
		check := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, ErrUnavailable) || !errors.Is(err, delivery.ErrTransient) || errors.As(err, &re) {
				t.Errorf("%s with no writer: %v, want ErrUnavailable and delivery.ErrTransient", what, err)
			}
		}
		_, err := c.Poll(ctx, engine.RegionAll(), 0, false, 10)
		check("Poll", err)
		_, err = c.Info(ctx)
		check("Info", err)
		_, err = c.Append(ctx, []engine.Event{event(t, "x", nil)})
		check("Append", err)
		// A caller that gives up gets its own error, not a transient one.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.Poll(cctx, engine.RegionAll(), 0, false, 10); !errors.Is(err, context.Canceled) || errors.Is(err, delivery.ErrTransient) {
			t.Errorf("Poll with a cancelled context: %v", err)
		}
		// Poll of max 0 asks nobody.
		if res, err := c.Poll(ctx, engine.RegionAll(), 0, false, 0); err != nil || len(res.Entries) != 0 {
			t.Errorf("Poll max 0: %v %v", res, err)
		}
	})

	t.Run("bad request", func(t *testing.T) {
		e := newEnv(t, envOpts{inproc: true})
		ctx := testCtx(t)
		_, err := e.c.Poll(ctx, engine.RegionEntity("*"), 0, false, 10)
		var re *RemoteError
		if !errors.Is(err, ErrBadRequest) || errors.Is(err, delivery.ErrTransient) || !errors.As(err, &re) ||
			re.Code != 400 || !strings.HasPrefix(re.Description, "region: ") {
			t.Fatalf("Poll of region *: %v, want a 400 naming region", err)
		}
		_, err = e.c.request(ctx, e.subj.Pull, wiretest.MP(t, wiretest.ValidPull().With("max", wire.MaxPullEntries+1)))
		if !errors.Is(err, ErrTooLarge) || errors.Is(err, delivery.ErrTransient) || !errors.As(err, &re) || re.Code != 413 {
			t.Fatalf("pull over MaxPullEntries: %v, want 413", err)
		}
		// Client.Poll clamps max itself.
		if _, err := e.c.Poll(ctx, engine.RegionAll(), 0, false, wire.MaxPullEntries*2); err != nil {
			t.Fatalf("Poll of max %d: %v", wire.MaxPullEntries*2, err)
		}
		// A bad region never reaches a worker.
		if _, err := delivery.StartWorker(ctx, e.c, engine.RegionEntity("*"), delivery.DefaultWorkerConfig(), newRecorder().handle); !errors.Is(err, engine.ErrInvalidRegion) {
			t.Fatalf("StartWorker with region *: %v", err)
		}
	})

	t.Run("odd responders", func(t *testing.T) {
		ns := startServer(t, nil)
		rnc := connect(t, ns, true)
		c := newClient(t, connect(t, ns, true), ClientConfig{Timeout: 200 * time.Millisecond, AppendAttempts: 1})
		// No deadline: the client's Timeout bounds each request (as a
		// worker's calls are bounded).
		ctx := context.Background()
		subj := wire.SubjectsFor(testJournal)
		// A pull responder that never answers: a timeout, transient.
		silent, err := rnc.Subscribe(subj.Pull, func(*nats.Msg) {})
		if err != nil {
			t.Fatal(err)
		}
		if err := rnc.Flush(); err != nil {
			t.Fatal(err)
		}
		_, err = c.Poll(ctx, engine.RegionAll(), 0, false, 1)
		if !errors.Is(err, delivery.ErrTransient) || errors.Is(err, ErrUnavailable) {
			t.Errorf("Poll of a silent writer: %v, want a transient timeout", err)
		}
		_ = silent.Unsubscribe()
		// Garbage replies: ErrRemote, not transient.
		for _, s := range []string{subj.Pull, subj.Info, subj.Append} {
			sub, err := rnc.Subscribe(s, func(m *nats.Msg) { _ = m.Respond([]byte{0xc1}) })
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
		}
		if err := rnc.Flush(); err != nil {
			t.Fatal(err)
		}
		_, err = c.Poll(ctx, engine.RegionAll(), 0, false, 1)
		if !errors.Is(err, ErrRemote) || errors.Is(err, delivery.ErrTransient) {
			t.Errorf("Poll of a garbage reply: %v", err)
		}
		_, err = c.Describe(ctx)
		if !errors.Is(err, ErrRemote) {
			t.Errorf("Describe of a garbage reply: %v", err)
		}
		_, err = c.Append(ctx, []engine.Event{event(t, "x", nil)})
		if !errors.Is(err, ErrRemote) {
			t.Errorf("Append of a garbage reply: %v", err)
		}
	})

	t.Run("codes", func(t *testing.T) {
		for _, tc := range []struct {
			code      string
			want      error
			transient bool
		}{
			{"400", ErrBadRequest, false},
			{"404", ErrUnknownJournal, false},
			{"413", ErrTooLarge, false},
			{"503", ErrUnavailable, true},
			{"500", ErrRemote, false},
			{"418", ErrRemote, false},
			{"not a number", ErrRemote, false},
		} {
			err := error(remoteError(tc.code, "why"))
			if !errors.Is(err, tc.want) || errors.Is(err, delivery.ErrTransient) != tc.transient {
				t.Errorf("code %q: %v, want %v (transient %v)", tc.code, err, tc.want, tc.transient)
			}
			for _, other := range []error{ErrBadRequest, ErrUnknownJournal, ErrTooLarge, ErrUnavailable, ErrRemote} {
				if other != tc.want && errors.Is(err, other) {
					t.Errorf("code %q also matches %v", tc.code, other)
				}
			}
			if !strings.Contains(err.Error(), "why") {
				t.Errorf("code %q: %q lost the description", tc.code, err)
			}
		}
	})
}

// withCheckpoints returns cfg with its checkpoint store set to ck.
func withCheckpoints(cfg delivery.WorkerConfig, ck checkpoint.Store) delivery.WorkerConfig {
	cfg.Checkpoints = ck
	return cfg
}
