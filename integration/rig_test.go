package integration

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/checkpointtest"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/natstest"
	"github.com/batfleet/batfleet/kvckpt"
)

// journal is the journal name every test serves.
const journalName = "main"

// waitLimit bounds the waits of the tests here; generous, so that the race
// detector and a slow shared machine do not turn a pass into a timeout.
const waitLimit = 20 * time.Second

// rig is one fleet on one embedded JetStream server reached over loopback
// TCP: a writer node (a journal directory, its *journal.Store and a
// fleet.Writer on a connection of its own) and a worker node (a
// fleet.Client and a kvckpt.Store on another connection).
//
// Cleanup order, registered by newRig: workers (registered later by the
// tests, so they stop first) → client and writer → store → both
// connections → server → directories.
type rig struct {
	Server      *server.Server
	Dir         string // journal directory
	WriterNC    *nats.Conn
	ClientNC    *nats.Conn
	JS          jetstream.JetStream // on ClientNC
	Client      *fleet.Client
	Checkpoints *kvckpt.Store
	Parked      *kvckpt.ParkedStore
	KV          jetstream.KeyValue // the checkpoint bucket, for planting records

	mu     sync.Mutex
	store  *journal.Store
	writer *fleet.Writer
	faults *checkpointtest.Faulty // env's wrapper of Checkpoints
}

// newRig starts a server, opens the journal, serves it and connects the
// worker side. Everything is closed when the test ends.
func newRig(t testing.TB) *rig {
	t.Helper()
	dir := t.TempDir() // before the server: removed after it shut down
	srv := natstest.StartServer(t)
	wnc, _ := natstest.Connect(t, srv, nats.Name("batfleet-writer-node"))
	cnc, js := natstest.Connect(t, srv, nats.Name("batfleet-worker-node"))
	r := &rig{Server: srv, Dir: dir, WriterNC: wnc, ClientNC: cnc, JS: js}
	r.openWriter(t)
	t.Cleanup(func() { r.closeWriter(t) })

	client, err := fleet.NewClient(cnc, fleet.ClientConfig{Journal: journalName})
	if err != nil {
		t.Fatalf("fleet client: %v", err)
	}
	t.Cleanup(func() {
		if err := client.Close(); err != nil {
			t.Errorf("close client: %v", err)
		}
	})
	r.Client = client

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ck, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: journalName})
	if err != nil {
		t.Fatalf("kvckpt open: %v", err)
	}
	kv, err := js.KeyValue(ctx, ck.Bucket())
	if err != nil {
		t.Fatalf("bind checkpoint bucket: %v", err)
	}
	parked, err := ck.OpenParked(ctx, "")
	if err != nil {
		t.Fatalf("open parked bucket: %v", err)
	}
	r.Checkpoints, r.KV, r.Parked = ck, kv, parked
	return r
}

// Store returns the writer's current journal.
func (r *rig) Store() *journal.Store {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.store
}

// Writer returns the current writer service.
func (r *rig) Writer() *fleet.Writer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writer
}

// openWriter opens the journal directory (a new incarnation) and serves it
// on WriterNC.
func (r *rig) openWriter(t testing.TB) {
	t.Helper()
	s, err := journal.Open(r.Dir, journal.Config{MaxEntryBytes: fleet.MaxEntryBytes(r.WriterNC.MaxPayload())})
	if err != nil {
		t.Fatalf("open journal %s: %v", r.Dir, err)
	}
	w, err := fleet.NewWriter(r.WriterNC, s, fleet.WriterConfig{Journal: journalName})
	if err != nil {
		_ = s.Close()
		t.Fatalf("fleet writer: %v", err)
	}
	r.mu.Lock()
	r.store, r.writer = s, w
	r.mu.Unlock()
}

// closeWriter stops the writer service, then closes its journal. A
// journal the test already closed (WRK-10) is fine: Close is idempotent.
func (r *rig) closeWriter(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	s, w := r.store, r.writer
	r.mu.Unlock()
	if w == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Errorf("close writer: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("close journal: %v", err)
	}
}

// restartWriter is a clean writer restart: close writer and journal, open
// the same directory again (a new incarnation), serve it on the same
// connection. Client and checkpoint store stay.
func (r *rig) restartWriter(t testing.TB) {
	t.Helper()
	r.closeWriter(t)
	if t.Failed() {
		t.FailNow()
	}
	r.openWriter(t)
}

// appendLocal appends events through the writer's store and returns the
// receipts' seqs.
func (r *rig) appendLocal(t testing.TB, events ...engine.Event) []uint64 {
	t.Helper()
	rs, err := r.Store().AppendBatch(context.Background(), events)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return receiptSeqs(rs)
}

func receiptSeqs(rs []engine.Receipt) []uint64 {
	out := make([]uint64, len(rs))
	for i, rc := range rs {
		out[i] = rc.Seq
	}
	return out
}

// dataEvent is a KindData event on entity@scope.
func dataEvent(entity, scope, payload string) engine.Event {
	return engine.Event{Coordinate: engine.MustCoordinate(entity, scope), Kind: engine.KindData, Payload: []byte(payload)}
}

// waitFor polls cond every millisecond until it holds, failing the test
// after limit.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitForWorker is waitFor that fails at once, with the worker's error,
// if w exits while the test waits for cond, and reports the worker's
// stats if it times out.
func waitForWorker(t testing.TB, w *delivery.Worker, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(time.Millisecond) {
		select {
		case <-w.Done():
			if !cond() {
				t.Fatalf("worker exited while waiting for %s: %v", what, w.Join())
			}
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; worker stats %+v", limit, what, w.Stats())
		}
	}
}

// joinWithin waits (bounded) for w to exit and returns Join's result.
func joinWithin(t testing.TB, w *delivery.Worker, limit time.Duration) error {
	t.Helper()
	select {
	case <-w.Done():
		return w.Join()
	case <-time.After(limit):
		t.Fatalf("worker did not exit within %v", limit)
		return nil
	}
}

// stopAndJoinWithin requests stop and waits (bounded) for w to exit; it
// returns Join's result.
func stopAndJoinWithin(t testing.TB, w *delivery.Worker, limit time.Duration) error {
	t.Helper()
	w.Stop()
	return joinWithin(t, w, limit)
}

// stopOnCleanup stops w (bounded wait) when the test ends, before the
// rig's clients close.
func stopOnCleanup(t testing.TB, w *delivery.Worker) {
	t.Cleanup(func() {
		w.Stop()
		select {
		case <-w.Done():
		case <-time.After(waitLimit):
			t.Errorf("worker did not exit within %v of Stop", waitLimit)
		}
	})
}

// loadCheckpoint loads id from ck; found is false when there is no record.
func loadCheckpoint(t testing.TB, ck checkpoint.Store, id string) (rec checkpoint.Record, found bool) {
	t.Helper()
	rec, _, err := ck.Load(context.Background(), id)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return checkpoint.Record{}, false
	}
	if err != nil {
		t.Fatalf("load checkpoint %q: %v", id, err)
	}
	return rec, true
}

// parkSpy wraps a Source and counts parks, so a test can wait until a
// worker is idle instead of sleeping.
type parkSpy struct {
	delivery.Source
	parks  atomic.Int64 // Park calls so far
	inPark atomic.Int32 // Park calls in progress
	deaf   atomic.Bool  // every epoch message is lost: parks last their timeout
}

func (s *parkSpy) Park(ctx context.Context, snap engine.Snapshot, timeout time.Duration) bool {
	s.parks.Add(1)
	s.inPark.Add(1)
	defer s.inPark.Add(-1)
	if s.deaf.Load() {
		// What a client that hears no epoch message does: wait for the
		// whole timeout (the safety net), or until ctx ends.
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		return false
	}
	return s.Source.Park(ctx, snap, timeout)
}

// parkedAt reports whether w is parked with committed position (pos,
// started): the worker goroutine is inside Park, and since it commits
// before it polls and parks again, this park began after that commit.
func (s *parkSpy) parkedAt(w *delivery.Worker, pos uint64, started bool) bool {
	st := w.Stats()
	return s.inPark.Load() > 0 && st.CommittedStarted == started && st.Committed == pos
}

// wantErrIs fails unless err matches target.
func wantErrIs(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s = %v, want an error matching %v", what, err, target)
	}
}

// wantNotErrIs fails if err matches target.
func wantNotErrIs(t testing.TB, what string, err, target error) {
	t.Helper()
	if errors.Is(err, target) {
		t.Fatalf("%s = %v, must not match %v", what, err, target)
	}
}

// withCheckpoints returns cfg with its checkpoint store set to ck.
func withCheckpoints(cfg delivery.WorkerConfig, ck checkpoint.Store) delivery.WorkerConfig {
	cfg.Checkpoints = ck
	return cfg
}
