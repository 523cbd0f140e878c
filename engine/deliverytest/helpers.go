package deliverytest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
)

// ---------------------------------------------------------------------------
// Helpers

// waitLimit bounds every wait of the scenarios. It is generous: the race
// detector and slow CI disks must not turn a pass into a timeout.
const waitLimit = 10 * time.Second

// eventually polls cond until it holds, failing the test after waitLimit.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// entityOf is the entity a scenario named name appends to.
func entityOf(name string) string { return "entity:" + name }

// regionOf is the region matching exactly the events of entityOf(name).
func regionOf(name string) engine.Region { return engine.RegionEntity(entityOf(name)) }

// scenarioEvent is a DATA event on entityOf(name).
func scenarioEvent(name, payload string) engine.Event {
	return engine.Event{
		Coordinate: engine.MustCoordinate(entityOf(name), "scenario"),
		Kind:       engine.KindData,
		Payload:    []byte(payload),
	}
}

// appendN appends n events to entityOf(name) as one atomic batch and
// returns their seqs in order.
func appendN(t testing.TB, env Env, name string, n int) []uint64 {
	t.Helper()
	events := make([]engine.Event, n)
	for i := range events {
		events[i] = scenarioEvent(name, fmt.Sprintf("%s-%d", name, i))
	}
	rs := env.Append(t, events...)
	seqs := make([]uint64, len(rs))
	for i, r := range rs {
		seqs[i] = r.Seq
	}
	return seqs
}

// durableConfig is the default config with checkpoint id id in env's store.
func durableConfig(env Env, id string) delivery.WorkerConfig {
	cfg := delivery.DefaultWorkerConfig()
	cfg.CheckpointID = id
	cfg.Checkpoints = env.Checkpoints
	return cfg
}

// startWorker starts a worker on src with a background context and stops
// it (bounded wait) when the test ends.
func startWorker(t testing.TB, src delivery.Source, region engine.Region, cfg delivery.WorkerConfig, h delivery.Handler) *delivery.Worker {
	t.Helper()
	return startWorkerCtx(t, context.Background(), src, region, cfg, h)
}

func startWorkerCtx(t testing.TB, ctx context.Context, src delivery.Source, region engine.Region, cfg delivery.WorkerConfig, h delivery.Handler) *delivery.Worker {
	t.Helper()
	w, err := delivery.StartWorker(ctx, src, region, cfg, h)
	if err != nil {
		t.Fatalf("StartWorker: %v", err)
	}
	t.Cleanup(func() {
		w.Stop()
		select {
		case <-w.Done():
		case <-time.After(2 * waitLimit):
			t.Errorf("worker did not exit within %v of Stop", 2*waitLimit)
		}
	})
	return w
}

// joinWithin waits (bounded) for w to exit and returns Join's result.
func joinWithin(t testing.TB, w *delivery.Worker) error {
	t.Helper()
	select {
	case <-w.Done():
	case <-time.After(waitLimit):
		t.Fatalf("worker did not exit within %v", waitLimit)
	}
	return w.Join()
}

// stopAndJoinWithin stops w and waits (bounded) for it.
func stopAndJoinWithin(t testing.TB, w *delivery.Worker) error {
	t.Helper()
	w.Stop()
	return joinWithin(t, w)
}

// loadRecord loads id from env's checkpoint store; found is false when no
// record exists. Any other error fails the test.
func loadRecord(t testing.TB, env Env, id string) (rec checkpoint.Record, rev checkpoint.Revision, found bool) {
	t.Helper()
	rec, rev, err := env.Checkpoints.Load(context.Background(), id)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return checkpoint.Record{}, 0, false
	}
	if err != nil {
		t.Fatalf("load checkpoint %q: %v", id, err)
	}
	return rec, rev, true
}

// wantRecord fails unless the record of id is (pos, started=true).
func wantRecord(t testing.TB, env Env, id string, pos uint64) checkpoint.Record {
	t.Helper()
	rec, _, found := loadRecord(t, env, id)
	if !found {
		t.Fatalf("checkpoint %q: no record, want position %d", id, pos)
	}
	if rec.Position != pos || !rec.Started {
		t.Fatalf("checkpoint %q = (%d, %v), want (%d, true)", id, rec.Position, rec.Started, pos)
	}
	return rec
}

// wantNoRecord fails unless id has no record.
func wantNoRecord(t testing.TB, env Env, id string) {
	t.Helper()
	if rec, _, found := loadRecord(t, env, id); found {
		t.Fatalf("checkpoint %q = (%d, %v), want no record", id, rec.Position, rec.Started)
	}
}

// plantRecord encodes rec and plants it as the record of id.
func plantRecord(t testing.TB, env Env, id string, rec checkpoint.Record) {
	t.Helper()
	env.PlantRecord(t, id, checkpoint.Encode(rec))
}

// wantErr fails unless err matches every target.
func wantErr(t testing.TB, what string, err error, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("%s = %v, want an error matching %v", what, err, target)
		}
	}
}

// journalID is the journal id of env's source.
func journalID(t testing.TB, env Env) string {
	t.Helper()
	info, err := env.Source.Info(context.Background())
	if err != nil {
		t.Fatalf("source info: %v", err)
	}
	return info.JournalID.String()
}

// tally counts handler invocations per first seq of a batch and keeps the
// batches. It is safe for use from the worker goroutine and the test.
type tally struct {
	mu      sync.Mutex
	counts  map[uint64]int
	batches [][]uint64
}

func newTally() *tally { return &tally{counts: make(map[uint64]int)} }

// add records one handler call and returns how often this batch's first
// seq has been handed over so far (1 on the first delivery).
func (c *tally) add(batch []engine.Entry) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	seqs := make([]uint64, len(batch))
	for i, e := range batch {
		seqs[i] = e.Seq
		c.counts[e.Seq]++
	}
	c.batches = append(c.batches, seqs)
	return c.counts[batch[0].Seq]
}

func (c *tally) calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.batches)
}

func (c *tally) count(seq uint64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[seq]
}

func (c *tally) snapshot() (map[uint64]int, [][]uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[uint64]int, len(c.counts))
	for k, v := range c.counts {
		m[k] = v
	}
	return m, slices.Clone(c.batches)
}

// delivered returns every delivered seq in delivery order.
func (c *tally) delivered() []uint64 {
	_, batches := c.snapshot()
	var out []uint64
	for _, b := range batches {
		out = append(out, b...)
	}
	return out
}

func (c *tally) wantCounts(t testing.TB, want map[uint64]int) {
	t.Helper()
	got, batches := c.snapshot()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("handler invocations per seq = %v, want %v (batches %v)", got, want, batches)
	}
}

// handoff lets the test hold a handler call: the handler sends its batch
// and blocks until the test replies with an action.
type handoff struct {
	entered chan []engine.Entry
	reply   chan delivery.Action
}

func newHandoff() *handoff {
	return &handoff{entered: make(chan []engine.Entry), reply: make(chan delivery.Action)}
}

// handler blocks each call until the test replies (or waitLimit passes,
// then it rolls back so a failed test still ends).
func (h *handoff) handler(_ context.Context, batch []engine.Entry, _ *delivery.Delivery) delivery.Action {
	select {
	case h.entered <- batch:
	case <-time.After(waitLimit):
		return delivery.StopWithRollback
	}
	select {
	case a := <-h.reply:
		return a
	case <-time.After(waitLimit):
		return delivery.StopWithRollback
	}
}

// next waits (bounded) for the next handler call and returns its batch.
func (h *handoff) next(t testing.TB) []engine.Entry {
	t.Helper()
	select {
	case b := <-h.entered:
		return b
	case <-time.After(waitLimit):
		t.Fatalf("handler not called within %v", waitLimit)
		return nil
	}
}

// answer releases the held handler call with action a.
func (h *handoff) answer(t testing.TB, a delivery.Action) {
	t.Helper()
	select {
	case h.reply <- a:
	case <-time.After(waitLimit):
		t.Fatalf("handler did not take its answer within %v", waitLimit)
	}
}

// spySource wraps a Source, counting polls and parks; with pollPanic set,
// Poll panics with that value.
type spySource struct {
	delivery.Source
	polls     atomic.Int64
	parks     atomic.Int64
	pollPanic any
}

func (s *spySource) Poll(ctx context.Context, region engine.Region, position uint64, started bool, max int) (engine.PollResult, error) {
	s.polls.Add(1)
	if s.pollPanic != nil {
		panic(s.pollPanic)
	}
	return s.Source.Poll(ctx, region, position, started, max)
}

func (s *spySource) Park(ctx context.Context, snap engine.Snapshot, timeout time.Duration) bool {
	s.parks.Add(1)
	return s.Source.Park(ctx, snap, timeout)
}

// ctxSource wraps a Source so that Info and Poll fail once their context
// is done, as a remote source's requests do (the local store answers Info
// without looking at its context).
type ctxSource struct{ delivery.Source }

func (s ctxSource) Info(ctx context.Context) (engine.SourceInfo, error) {
	if err := ctx.Err(); err != nil {
		return engine.SourceInfo{}, err
	}
	return s.Source.Info(ctx)
}

func (s ctxSource) Poll(ctx context.Context, region engine.Region, position uint64, started bool, max int) (engine.PollResult, error) {
	if err := ctx.Err(); err != nil {
		return engine.PollResult{}, err
	}
	return s.Source.Poll(ctx, region, position, started, max)
}

// savedRecord is one successful save seen by a recordingCheckpoints.
type savedRecord struct {
	Rev checkpoint.Revision
	Rec checkpoint.Record
}

// recordingCheckpoints wraps a checkpoint.Store: it counts loads, records
// every successful save, and can fail the next save with an injected
// error.
type recordingCheckpoints struct {
	checkpoint.Store
	mu       sync.Mutex
	loads    int
	saves    []savedRecord
	failNext error
}

func (r *recordingCheckpoints) Load(ctx context.Context, id string) (checkpoint.Record, checkpoint.Revision, error) {
	r.mu.Lock()
	r.loads++
	r.mu.Unlock()
	return r.Store.Load(ctx, id)
}

func (r *recordingCheckpoints) Save(ctx context.Context, id string, rec checkpoint.Record, expected checkpoint.Revision) (checkpoint.Revision, error) {
	r.mu.Lock()
	if err := r.failNext; err != nil {
		r.failNext = nil
		r.mu.Unlock()
		return 0, err
	}
	r.mu.Unlock()
	rev, err := r.Store.Save(ctx, id, rec, expected)
	if err == nil {
		r.mu.Lock()
		r.saves = append(r.saves, savedRecord{Rev: rev, Rec: rec})
		r.mu.Unlock()
	}
	return rev, err
}

// failNextSave makes the next Save return err without reaching the store.
func (r *recordingCheckpoints) failNextSave(err error) {
	r.mu.Lock()
	r.failNext = err
	r.mu.Unlock()
}

func (r *recordingCheckpoints) loadCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loads
}

func (r *recordingCheckpoints) saved() []savedRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.saves)
}

// firstErr keeps the first error a handler reports; handlers run on the
// worker goroutine, so they report here and the test checks after Join.
type firstErr struct {
	mu  sync.Mutex
	err error
}

func (f *firstErr) set(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = fmt.Errorf(format, args...)
	}
}

func (f *firstErr) check(t testing.TB) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		t.Fatal(f.err)
	}
}

// ---------------------------------------------------------------------------
// Checkpoint ids and durable checkpoints
