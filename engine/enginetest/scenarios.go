package enginetest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
)

// Scenario is one worker case of the SPEC §13 catalogue, written against an
// Env so that it runs unchanged on every backend: the local store with the
// memory and file checkpoint stores, and a remote fleet source with the KV
// checkpoint store (the † cases).
type Scenario struct {
	ID   string // catalogue id, e.g. "WRK-05"
	Name string // short CamelCase description
	// Run runs the scenario. It calls newEnv for every fresh journal it
	// needs, so each scenario starts on an empty journal (seq 0 is
	// OPEN_COMPLETED, user events start at 1).
	Run func(t *testing.T, newEnv NewEnv)
}

// RunWorkerScenarios runs every scenario of WorkerScenarios as a subtest
// named ID_Name.
func RunWorkerScenarios(t *testing.T, newEnv NewEnv) {
	for _, sc := range WorkerScenarios() {
		t.Run(sc.ID+"_"+sc.Name, func(t *testing.T) { sc.Run(t, newEnv) })
	}
}

// WorkerScenarios returns the worker scenarios in catalogue order.
//
// Conventions: every scenario appends to its own entity and runs workers on
// an entity-prefix region, so lifecycle events never reach a handler; seqs
// come from the receipts, so "eN" of the catalogue is seqs[N-1]. Waits are
// bounded by deadlines (eventually, joinWithin), never decided by sleeps;
// timing cases assert upper bounds only.
func WorkerScenarios() []Scenario {
	return []Scenario{
		{"CK-04", "WitnessCarriesCheckpointID", scenarioCK04},
		{"CKP-03", "NoRecordStartsFreshAndCreatesOnFirstBatch", scenarioCKP03},
		{"CKP-04", "CorruptRecordFailsStart", scenarioCKP04},
		{"CKP-05", "CorruptRecordFailsEvenWhenStoppedAtOnce", scenarioCKP05},
		{"CKP-07", "RecordOfAnotherRegion", scenarioCKP07},
		{"CKP-10", "SaveFailureOnStop", scenarioCKP10},
		{"CKP-11", "ResumeAcrossWriterRestart", scenarioCKP11},
		{"CKP-13", "SaveFailureOnContinueKeepsRecord", scenarioCKP13},
		{"CKP-14", "JournalBinding", scenarioCKP14},
		{"CKP-15", "AheadOfTheJournal", scenarioCKP15},
		{"CKP-16", "TwoWorkersOneCheckpoint", scenarioCKP16},
		{"CKP-18", "SaveWritesOwnerAndWallClock", scenarioCKP18},
		{"WRK-01", "DefaultConfig", scenarioWRK01},
		{"WRK-02", "WitnessOnEveryBatch", scenarioWRK02},
		{"WRK-03", "StopOnFirstBatch", scenarioWRK03},
		{"WRK-04", "StopWithRollbackKeepsCommitted", scenarioWRK04},
		{"WRK-05", "RedeliveryCountsAcrossRuns", scenarioWRK05},
		{"WRK-06", "RollbackOnFirstBatchWritesNothing", scenarioWRK06},
		{"WRK-07", "PublishWakesIdleWorker", scenarioWRK07},
		{"WRK-08", "StopInterruptsIdlePark", scenarioWRK08},
		{"WRK-09", "StopDuringHandlerCompletesBatch", scenarioWRK09},
		{"WRK-10", "CancelledStartContextReleasesSource", scenarioWRK10},
		{"WRK-11", "BatchSizes", scenarioWRK11},
		{"WRK-12", "InMemoryWorkerRedeliversAll", scenarioWRK12},
		{"WRK-13", "JoinReturnsFirstErrorToEveryCall", scenarioWRK13},
		{"WRK-14", "SourcePanicIsWorkerCrash", scenarioWRK14},
		{"WRK-15", "InvalidStartRejected", scenarioWRK15},
		{"GAP-10", "HandlerGapsEqualCursorGaps", scenarioGAP10},
		{"RST-01", "BoundedOneShotPanic", scenarioRST01},
		{"RST-02", "BoundedAlwaysPanics", scenarioRST02},
		{"RST-03", "OnceAlwaysPanicsFiresHookOnce", scenarioRST03},
		{"RST-04", "BoundedZeroNeverRestarts", scenarioRST04},
		{"RST-05", "WindowResetsAfterWithin", scenarioRST05},
		{"RST-08", "RestartResumesFromCommittedWithoutReload", scenarioRST08},
		{"RST-09", "PanicText", scenarioRST09},
	}
}

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
func durableConfig(env Env, id string) engine.WorkerConfig {
	cfg := engine.DefaultWorkerConfig()
	cfg.CheckpointID = id
	cfg.Checkpoints = env.Checkpoints
	return cfg
}

// startWorker starts a worker on src with a background context and stops
// it (bounded wait) when the test ends.
func startWorker(t testing.TB, src engine.Source, region engine.Region, cfg engine.WorkerConfig, h engine.Handler) *engine.Worker {
	t.Helper()
	return startWorkerCtx(t, context.Background(), src, region, cfg, h)
}

func startWorkerCtx(t testing.TB, ctx context.Context, src engine.Source, region engine.Region, cfg engine.WorkerConfig, h engine.Handler) *engine.Worker {
	t.Helper()
	w, err := engine.StartWorker(ctx, src, region, cfg, h)
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
func joinWithin(t testing.TB, w *engine.Worker) error {
	t.Helper()
	select {
	case <-w.Done():
	case <-time.After(waitLimit):
		t.Fatalf("worker did not exit within %v", waitLimit)
	}
	return w.Join()
}

// stopAndJoinWithin stops w and waits (bounded) for it.
func stopAndJoinWithin(t testing.TB, w *engine.Worker) error {
	t.Helper()
	w.Stop()
	return joinWithin(t, w)
}

// loadRecord loads id from env's checkpoint store; found is false when no
// record exists. Any other error fails the test.
func loadRecord(t testing.TB, env Env, id string) (rec engine.CheckpointRecord, rev engine.Revision, found bool) {
	t.Helper()
	rec, rev, err := env.Checkpoints.Load(context.Background(), id)
	if errors.Is(err, engine.ErrCheckpointNotFound) {
		return engine.CheckpointRecord{}, 0, false
	}
	if err != nil {
		t.Fatalf("load checkpoint %q: %v", id, err)
	}
	return rec, rev, true
}

// wantRecord fails unless the record of id is (pos, started=true).
func wantRecord(t testing.TB, env Env, id string, pos uint64) engine.CheckpointRecord {
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
func plantRecord(t testing.TB, env Env, id string, rec engine.CheckpointRecord) {
	t.Helper()
	env.PlantRecord(t, id, engine.EncodeCheckpoint(rec))
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
	reply   chan engine.Action
}

func newHandoff() *handoff {
	return &handoff{entered: make(chan []engine.Entry), reply: make(chan engine.Action)}
}

// handler blocks each call until the test replies (or waitLimit passes,
// then it rolls back so a failed test still ends).
func (h *handoff) handler(_ context.Context, batch []engine.Entry, _ *engine.Delivery) engine.Action {
	select {
	case h.entered <- batch:
	case <-time.After(waitLimit):
		return engine.StopWithRollback
	}
	select {
	case a := <-h.reply:
		return a
	case <-time.After(waitLimit):
		return engine.StopWithRollback
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
func (h *handoff) answer(t testing.TB, a engine.Action) {
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
	engine.Source
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
type ctxSource struct{ engine.Source }

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
	Rev engine.Revision
	Rec engine.CheckpointRecord
}

// recordingCheckpoints wraps a CheckpointStore: it counts loads, records
// every successful save, and can fail the next save with an injected
// error.
type recordingCheckpoints struct {
	engine.CheckpointStore
	mu       sync.Mutex
	loads    int
	saves    []savedRecord
	failNext error
}

func (r *recordingCheckpoints) Load(ctx context.Context, id string) (engine.CheckpointRecord, engine.Revision, error) {
	r.mu.Lock()
	r.loads++
	r.mu.Unlock()
	return r.CheckpointStore.Load(ctx, id)
}

func (r *recordingCheckpoints) Save(ctx context.Context, id string, rec engine.CheckpointRecord, expected engine.Revision) (engine.Revision, error) {
	r.mu.Lock()
	if err := r.failNext; err != nil {
		r.failNext = nil
		r.mu.Unlock()
		return 0, err
	}
	r.mu.Unlock()
	rev, err := r.CheckpointStore.Save(ctx, id, rec, expected)
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

// CK-04: a durable worker's witness CheckpointID() equals its configured
// id, on the handle and in every delivery.
func scenarioCK04(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "ck-04 witness:id"
	seqs := appendN(t, env, "ck04", 2)
	var mu sync.Mutex
	var witnesses []*engine.AtLeastOnce
	cfg := durableConfig(env, id)
	cfg.BatchSize = 1
	w := startWorker(t, env.Source, regionOf("ck04"), cfg, func(_ context.Context, b []engine.Entry, d *engine.Delivery) engine.Action {
		mu.Lock()
		witnesses = append(witnesses, d.Witness)
		mu.Unlock()
		if b[len(b)-1].Seq == seqs[1] {
			return engine.Stop
		}
		return engine.Continue
	})
	if w.Witness() == nil {
		t.Fatal("durable worker has no witness")
	}
	if got := w.Witness().CheckpointID(); got != id {
		t.Fatalf("Witness().CheckpointID() = %q, want %q", got, id)
	}
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(witnesses) != 2 {
		t.Fatalf("%d deliveries, want 2", len(witnesses))
	}
	for i, wit := range witnesses {
		if wit != w.Witness() || wit.CheckpointID() != id {
			t.Fatalf("delivery %d: witness %p (%q), want the worker's %p (%q)", i, wit, wit.CheckpointID(), w.Witness(), id)
		}
	}
}

// CKP-03: no record ⇒ the worker starts at (0, false); nothing is written
// until the first successful batch creates the record.
func scenarioCKP03(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "ckp-03"
	wantNoRecord(t, env, id)
	hand := newHandoff()
	w := startWorker(t, env.Source, regionOf("ckp03"), durableConfig(env, id), hand.handler)
	seqs := appendN(t, env, "ckp03", 2)

	batch := hand.next(t)
	if batch[0].Seq != seqs[0] {
		t.Fatalf("first delivered seq %d, want %d (a fresh worker starts from the beginning)", batch[0].Seq, seqs[0])
	}
	if st := w.Stats(); st.Committed != 0 || st.CommittedStarted {
		t.Fatalf("committed during the first batch = (%d, %v), want (0, false)", st.Committed, st.CommittedStarted)
	}
	wantNoRecord(t, env, id) // nothing at start, nothing before the batch completes
	hand.answer(t, engine.Stop)
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	last := batch[len(batch)-1].Seq
	wantRecord(t, env, id, last)
	if _, rev, _ := loadRecord(t, env, id); rev == 0 {
		t.Fatal("created record has revision 0")
	}
}

// corruptStart runs CKP-04/05: a record of garbage bytes and a matching
// event; the handler is never called and Join reports the corruption at
// the canonical location.
func corruptStart(t *testing.T, newEnv NewEnv, id string, stopAtOnce bool) {
	env := newEnv(t)
	env.PlantRecord(t, id, []byte("not-msgpack"))
	appendN(t, env, "corrupt", 1)
	calls := newTally()
	w := startWorker(t, env.Source, regionOf("corrupt"), durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		calls.add(b)
		return engine.Continue
	})
	var err error
	if stopAtOnce {
		err = stopAndJoinWithin(t, w)
	} else {
		err = joinWithin(t, w)
	}
	wantErr(t, "Join", err, engine.ErrCheckpointCorrupt)
	var ce *engine.CheckpointCorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("Join = %v, want a *CheckpointCorruptError", err)
	}
	if want := env.Checkpoints.Location(id); ce.Location != want || ce.ID != id {
		t.Fatalf("corrupt error at (%q, %q), want (%q, %q)", ce.ID, ce.Location, id, want)
	}
	if n := calls.calls(); n != 0 {
		t.Fatalf("handler called %d times, want never", n)
	}
}

// CKP-04: a corrupt record stops the worker before its handler runs.
func scenarioCKP04(t *testing.T, newEnv NewEnv) { corruptStart(t, newEnv, "ckp-04", false) }

// CKP-05: as CKP-04 with StopAndJoin right after start.
func scenarioCKP05(t *testing.T, newEnv NewEnv) { corruptStart(t, newEnv, "ckp-05", true) }

// CKP-07: a record of entity:cursor-a read by a worker for entity:cursor-b
// ⇒ ErrCheckpointRegionMismatch naming both identities.
func scenarioCKP07(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "ckp-07"
	regionA := engine.RegionEntity("entity:cursor-a")
	regionB := engine.RegionEntity("entity:cursor-b")
	identA := regionA.Identity()
	plantRecord(t, env, id, engine.CheckpointRecord{Position: 0, Started: false, RegionIdentity: &identA, JournalID: journalID(t, env), Owner: "other", UpdatedMs: 1})
	env.Append(t, engine.Event{Coordinate: engine.MustCoordinate("entity:cursor-b", "scenario"), Kind: engine.KindData, Payload: []byte("b")})
	calls := newTally()
	w := startWorker(t, env.Source, regionB, durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		calls.add(b)
		return engine.Continue
	})
	err := joinWithin(t, w)
	wantErr(t, "Join", err, engine.ErrCheckpointRegionMismatch)
	var rm *engine.RegionMismatchError
	if !errors.As(err, &rm) {
		t.Fatalf("Join = %v, want a *RegionMismatchError", err)
	}
	if !strings.Contains(rm.Expected, "entity:cursor-b") || rm.Expected != regionB.Identity() {
		t.Fatalf("Expected = %q, want %q", rm.Expected, regionB.Identity())
	}
	if rm.Stored == nil || *rm.Stored != identA {
		t.Fatalf("Stored = %v, want %q", rm.Stored, identA)
	}
	if want := env.Checkpoints.Location(id); rm.Location != want {
		t.Fatalf("Location = %q, want %q", rm.Location, want)
	}
	if n := calls.calls(); n != 0 {
		t.Fatalf("handler called %d times, want never", n)
	}
}

// CKP-10: a save that fails on Stop ⇒ one batch, Join reports
// ErrCheckpointWriteFailed{ID}; the I/O variant needs env.BreakRecord, the
// compare-and-swap variant bumps the revision from inside the handler.
func scenarioCKP10(t *testing.T, newEnv NewEnv) {
	t.Run("io", func(t *testing.T) {
		env := newEnv(t)
		if env.BreakRecord == nil {
			t.Log("backend has no BreakRecord: the I/O variant is not run here (the CAS variant is)")
			return
		}
		const id = "ckp-10-io"
		seqs := appendN(t, env, "ckp10", 2)
		var hookMu sync.Mutex
		var hookIDs []string
		var hookErrs []error
		cfg := durableConfig(env, id)
		cfg.OnCheckpointFailure = func(id string, err error) {
			hookMu.Lock()
			defer hookMu.Unlock()
			hookIDs, hookErrs = append(hookIDs, id), append(hookErrs, err)
		}
		hand := newHandoff()
		w := startWorker(t, env.Source, regionOf("ckp10"), cfg, hand.handler)
		batch := hand.next(t)
		repair := env.BreakRecord(t, id) // while the batch is in the handler
		hand.answer(t, engine.Stop)
		err := joinWithin(t, w)
		wantErr(t, "Join", err, engine.ErrCheckpointWriteFailed, engine.ErrCheckpointIO)
		if errors.Is(err, engine.ErrCheckpointConflict) {
			t.Fatalf("Join = %v: an I/O failure must not match ErrCheckpointConflict", err)
		}
		var we *engine.CheckpointWriteError
		if !errors.As(err, &we) || we.ID != id {
			t.Fatalf("Join = %v, want a *CheckpointWriteError for %q", err, id)
		}
		if st := w.Stats(); st.Batches != 1 || st.SaveFailures != 1 || st.Saves != 0 {
			t.Fatalf("stats %+v, want 1 batch, 1 failed save, 0 saves", st)
		}
		hookMu.Lock()
		if len(hookIDs) != 1 || hookIDs[0] != id || !errors.Is(hookErrs[0], engine.ErrCheckpointIO) {
			t.Fatalf("OnCheckpointFailure calls %q %v, want one for %q with an I/O error", hookIDs, hookErrs, id)
		}
		hookMu.Unlock()
		repair()
		wantNoRecord(t, env, id)

		// The record never moved, so a new worker redelivers the batch.
		again := newHandoff()
		w2 := startWorker(t, env.Source, regionOf("ckp10"), durableConfig(env, id), again.handler)
		if b := again.next(t); b[0].Seq != seqs[0] || b[0].Seq != batch[0].Seq {
			t.Fatalf("after the failed save the next worker starts at %d, want %d", b[0].Seq, seqs[0])
		}
		again.answer(t, engine.StopWithRollback)
		if err := joinWithin(t, w2); err != nil {
			t.Fatalf("second worker Join = %v", err)
		}
	})
	t.Run("cas", func(t *testing.T) {
		env := newEnv(t)
		const id = "ckp-10-cas"
		seqs := appendN(t, env, "ckp10", 2)
		var bumped engine.Revision
		var herr firstErr
		calls := newTally()
		cfg := durableConfig(env, id)
		cfg.BatchSize = 1
		w := startWorker(t, env.Source, regionOf("ckp10"), cfg, func(ctx context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
			calls.add(b)
			if b[0].Seq == seqs[0] {
				return engine.Continue
			}
			// Another writer moves the revision under the worker.
			rec, rev, err := env.Checkpoints.Load(ctx, id)
			if err != nil {
				herr.set("handler load: %v", err)
				return engine.Stop
			}
			if bumped, err = env.Checkpoints.Save(ctx, id, rec, rev); err != nil {
				herr.set("handler bump: %v", err)
			}
			return engine.Stop
		})
		err := joinWithin(t, w)
		herr.check(t)
		wantErr(t, "Join", err, engine.ErrCheckpointWriteFailed, engine.ErrCheckpointConflict)
		var we *engine.CheckpointWriteError
		if !errors.As(err, &we) || we.ID != id {
			t.Fatalf("Join = %v, want a *CheckpointWriteError for %q", err, id)
		}
		calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 1})
		if st := w.Stats(); st.Conflicts != 1 || st.Saves != 1 {
			t.Fatalf("stats %+v, want 1 save and 1 conflict", st)
		}
		wantRecord(t, env, id, seqs[0]) // the bump kept the first save's position
		if _, rev, _ := loadRecord(t, env, id); rev != bumped {
			t.Fatalf("stored revision %d, want the bumped %d", rev, bumped)
		}
	})
}

// CKP-11: 100 events; a durable worker (batch 1) stops after 50; the
// writer restarts and 50 more are appended; a worker (batch 8, same id)
// gets exactly the other 100, none from the first run.
func scenarioCKP11(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "ckp-11"
	first := appendN(t, env, "ckp11", 100)
	run1 := newTally()
	cfg := durableConfig(env, id)
	cfg.BatchSize = 1
	w := startWorker(t, env.Source, regionOf("ckp11"), cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		run1.add(b)
		if b[0].Seq == first[49] {
			return engine.Stop
		}
		return engine.Continue
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("first run Join = %v", err)
	}
	if got := run1.delivered(); !slices.Equal(got, first[:50]) {
		t.Fatalf("first run delivered %v, want %v", got, first[:50])
	}
	wantRecord(t, env, id, first[49])

	if env.Reopen != nil {
		env = env.Reopen(t)
	} else {
		t.Log("backend has no Reopen: the second run resumes on the same writer incarnation")
	}
	second := appendN(t, env, "ckp11", 50)
	want := append(slices.Clone(first[50:]), second...)
	run2 := newTally()
	cfg = durableConfig(env, id)
	cfg.BatchSize = 8
	w = startWorker(t, env.Source, regionOf("ckp11"), cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		run2.add(b)
		if b[len(b)-1].Seq == second[len(second)-1] {
			return engine.Stop
		}
		return engine.Continue
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("second run Join = %v", err)
	}
	if got := run2.delivered(); !slices.Equal(got, want) {
		t.Fatalf("second run delivered %d seqs %v, want exactly %d: %v", len(got), got, len(want), want)
	}
	_, batches := run2.snapshot()
	for i, b := range batches {
		if len(b) > 8 {
			t.Fatalf("batch %d has %d entries, want at most 8", i, len(b))
		}
	}
	wantRecord(t, env, id, second[len(second)-1])
}

// CKP-13: a save failing on Continue keeps the previous record; a new
// worker redelivers the batch.
func scenarioCKP13(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "ckp-13"
	seqs := appendN(t, env, "ckp13", 3)
	rc := &recordingCheckpoints{CheckpointStore: env.Checkpoints}
	calls := newTally()
	cfg := durableConfig(env, id)
	cfg.Checkpoints = rc
	cfg.BatchSize = 1
	w := startWorker(t, env.Source, regionOf("ckp13"), cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		calls.add(b)
		if b[0].Seq == seqs[1] {
			rc.failNextSave(fmt.Errorf("%w: injected save failure", engine.ErrCheckpointIO))
		}
		return engine.Continue
	})
	err := joinWithin(t, w)
	wantErr(t, "Join", err, engine.ErrCheckpointWriteFailed, engine.ErrCheckpointIO)
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 1})
	if st := w.Stats(); st.Committed != seqs[0] || !st.CommittedStarted {
		t.Fatalf("committed (%d, %v), want (%d, true)", st.Committed, st.CommittedStarted, seqs[0])
	}
	wantRecord(t, env, id, seqs[0])

	hand := newHandoff()
	w2 := startWorker(t, env.Source, regionOf("ckp13"), durableConfig(env, id), hand.handler)
	if b := hand.next(t); b[0].Seq != seqs[1] {
		t.Fatalf("new worker starts at %d, want the failed batch's %d", b[0].Seq, seqs[1])
	}
	hand.answer(t, engine.StopWithRollback)
	if err := joinWithin(t, w2); err != nil {
		t.Fatalf("second worker Join = %v", err)
	}
	wantRecord(t, env, id, seqs[0])
}

// CKP-14: a record of another journal fails the start with
// ErrCheckpointJournalMismatch before the handler runs; a record without a
// journal id loads and the next save adds it.
func scenarioCKP14(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "ckp14", 2)
	ident := regionOf("ckp14").Identity()
	current := journalID(t, env)
	other := strings.Repeat("ab", 16)
	if other == current {
		other = strings.Repeat("cd", 16)
	}

	t.Run("foreign", func(t *testing.T) {
		const id = "ckp-14-foreign"
		plantRecord(t, env, id, engine.CheckpointRecord{Position: seqs[0], Started: true, RegionIdentity: &ident, JournalID: other, Owner: "other", UpdatedMs: 1})
		calls := newTally()
		w := startWorker(t, env.Source, regionOf("ckp14"), durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
			calls.add(b)
			return engine.Continue
		})
		err := joinWithin(t, w)
		wantErr(t, "Join", err, engine.ErrCheckpointJournalMismatch)
		var jm *engine.JournalMismatchError
		if !errors.As(err, &jm) || jm.Stored != other || jm.Current != current {
			t.Fatalf("Join = %v, want a *JournalMismatchError{%s, %s}", err, other, current)
		}
		if n := calls.calls(); n != 0 {
			t.Fatalf("handler called %d times, want never", n)
		}
	})
	t.Run("absent", func(t *testing.T) {
		const id = "ckp-14-absent"
		plantRecord(t, env, id, engine.CheckpointRecord{Position: seqs[0], Started: true, RegionIdentity: &ident})
		hand := newHandoff()
		w := startWorker(t, env.Source, regionOf("ckp14"), durableConfig(env, id), hand.handler)
		if b := hand.next(t); b[0].Seq != seqs[1] {
			t.Fatalf("resumed at %d, want %d", b[0].Seq, seqs[1])
		}
		hand.answer(t, engine.Stop)
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join = %v", err)
		}
		if rec := wantRecord(t, env, id, seqs[1]); rec.JournalID != current {
			t.Fatalf("saved journal_id %q, want %q", rec.JournalID, current)
		}
	})
}

// CKP-15: (1000, true) with visible bound 10 ⇒ ErrCheckpointAhead{1000,
// 10}; (visible-1, true) resumes; (1000, false) starts from the beginning.
func scenarioCKP15(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "ckp15", 9)
	info, err := env.Source.Info(context.Background())
	if err != nil {
		t.Fatalf("source info: %v", err)
	}
	visible := info.Visible
	if visible != seqs[len(seqs)-1]+1 {
		t.Fatalf("visible bound %d, want %d", visible, seqs[len(seqs)-1]+1)
	}
	ident := regionOf("ckp15").Identity()
	jid := info.JournalID.String()
	plant := func(id string, pos uint64, started bool) {
		plantRecord(t, env, id, engine.CheckpointRecord{Position: pos, Started: started, RegionIdentity: &ident, JournalID: jid, Owner: "planted", UpdatedMs: 1})
	}

	ahead := func(t *testing.T, id string, pos uint64) {
		plant(id, pos, true)
		calls := newTally()
		w := startWorker(t, env.Source, regionOf("ckp15"), durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
			calls.add(b)
			return engine.Continue
		})
		err := joinWithin(t, w)
		wantErr(t, "Join", err, engine.ErrCheckpointAhead)
		var ae *engine.AheadError
		if !errors.As(err, &ae) || ae.Position != pos || ae.Visible != visible {
			t.Fatalf("Join = %v, want *AheadError{%d, %d}", err, pos, visible)
		}
		if n := calls.calls(); n != 0 {
			t.Fatalf("handler called %d times, want never", n)
		}
	}
	t.Run("ahead", func(t *testing.T) { ahead(t, "ckp-15-ahead", 1000) })
	t.Run("at-visible", func(t *testing.T) { ahead(t, "ckp-15-at-visible", visible) })
	// As CKP-05 for rules 5-6: a worker whose stop is requested before it
	// starts (its start context is already cancelled) must still report the
	// ahead checkpoint (SPEC §9.3 step 1), on a source whose Info honours
	// its context as a remote source's request does.
	t.Run("ahead-stop-requested", func(t *testing.T) {
		const id = "ckp-15-ahead-stopped"
		plant(id, 1000, true)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		calls := newTally()
		w := startWorkerCtx(t, ctx, ctxSource{env.Source}, regionOf("ckp15"), durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
			calls.add(b)
			return engine.Continue
		})
		err := joinWithin(t, w)
		if !errors.Is(err, engine.ErrCheckpointAhead) {
			t.Errorf("Join = %v, want ErrCheckpointAhead: load rules 5-6 must be applied even when stop was requested before start", err)
		}
		if n := calls.calls(); n != 0 {
			t.Fatalf("handler called %d times, want never", n)
		}
	})
	t.Run("last-visible", func(t *testing.T) {
		plant("ckp-15-last", visible-1, true)
		hand := newHandoff()
		w := startWorker(t, env.Source, regionOf("ckp15"), durableConfig(env, "ckp-15-last"), hand.handler)
		next := appendN(t, env, "ckp15", 1)[0]
		if b := hand.next(t); b[0].Seq != next {
			t.Fatalf("resumed at %d, want the new event %d", b[0].Seq, next)
		}
		hand.answer(t, engine.Stop)
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join = %v", err)
		}
	})
	t.Run("not-started", func(t *testing.T) {
		plant("ckp-15-unstarted", 1000, false)
		hand := newHandoff()
		w := startWorker(t, env.Source, regionOf("ckp15"), durableConfig(env, "ckp-15-unstarted"), hand.handler)
		if b := hand.next(t); b[0].Seq != seqs[0] {
			t.Fatalf("started at %d, want the beginning %d", b[0].Seq, seqs[0])
		}
		hand.answer(t, engine.StopWithRollback)
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join = %v", err)
		}
	})
}

// CKP-16: two workers on one id and region while events are appended: at
// most one keeps committing, the other stops with a conflict, and the
// stored position never decreases.
func scenarioCKP16(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "ckp-16"
	rc := &recordingCheckpoints{CheckpointStore: env.Checkpoints}
	start := func(owner string) *engine.Worker {
		cfg := durableConfig(env, id)
		cfg.Checkpoints = rc
		cfg.WorkerID = owner
		cfg.BatchSize = 4
		return startWorker(t, env.Source, regionOf("ckp16"), cfg, func(context.Context, []engine.Entry, *engine.Delivery) engine.Action {
			return engine.Continue
		})
	}
	a, b := start("ckp-16-a"), start("ckp-16-b")
	workers := map[string]*engine.Worker{"ckp-16-a": a, "ckp-16-b": b}

	appended := 0
	eventually(t, "one of two competing workers to stop", func() bool {
		select {
		case <-a.Done():
			return true
		case <-b.Done():
			return true
		default:
		}
		appendN(t, env, "ckp16", 1)
		appended++
		return false
	})
	loser, winner := "ckp-16-a", "ckp-16-b"
	select {
	case <-a.Done():
	default:
		loser, winner = winner, loser
	}
	err := joinWithin(t, workers[loser])
	wantErr(t, "loser Join", err, engine.ErrCheckpointWriteFailed, engine.ErrCheckpointConflict)
	t.Logf("%s lost after %d appends: %v", loser, appended, err)
	savesAtLoss := len(rc.saved())

	// The winner keeps committing.
	more := appendN(t, env, "ckp16", 5)
	last := more[len(more)-1]
	w := workers[winner]
	eventually(t, "the winner to commit the last event", func() bool {
		st := w.Stats()
		return st.CommittedStarted && st.Committed == last
	})
	select {
	case <-w.Done():
		t.Fatalf("the winner stopped too: %v", w.Join())
	default:
	}
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("winner Join = %v", err)
	}

	saves := rc.saved()
	for _, s := range saves[savesAtLoss:] {
		if s.Rec.Owner != winner {
			t.Fatalf("save by %q at revision %d after %s stopped", s.Rec.Owner, s.Rev, loser)
		}
	}
	slices.SortFunc(saves, func(x, y savedRecord) int { return cmp.Compare(x.Rev, y.Rev) })
	for i := 1; i < len(saves); i++ {
		if saves[i].Rev == saves[i-1].Rev {
			t.Fatalf("two successful saves share revision %d", saves[i].Rev)
		}
		if saves[i].Rec.Position < saves[i-1].Rec.Position {
			t.Fatalf("stored position went back from %d (rev %d, %s) to %d (rev %d, %s)",
				saves[i-1].Rec.Position, saves[i-1].Rev, saves[i-1].Rec.Owner,
				saves[i].Rec.Position, saves[i].Rev, saves[i].Rec.Owner)
		}
	}
	wantRecord(t, env, id, last)
}

// CKP-18: every save writes owner = WorkerID and updated_ms from the
// WallClock, with region identity and journal id.
func scenarioCKP18(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id, owner = "ckp-18", "worker-ckp-18"
	seqs := appendN(t, env, "ckp18", 2)
	rc := &recordingCheckpoints{CheckpointStore: env.Checkpoints}
	var wall atomic.Int64
	cfg := durableConfig(env, id)
	cfg.Checkpoints = rc
	cfg.BatchSize = 1
	cfg.WorkerID = owner
	cfg.WallClock = func() time.Time { return time.UnixMilli(wall.Load()) }
	stamps := map[uint64]int64{seqs[0]: 1_700_000_000_123, seqs[1]: 1_700_000_000_456}
	w := startWorker(t, env.Source, regionOf("ckp18"), cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		wall.Store(stamps[b[0].Seq])
		if b[0].Seq == seqs[1] {
			return engine.Stop
		}
		return engine.Continue
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	saves := rc.saved()
	if len(saves) != 2 {
		t.Fatalf("%d saves, want 2", len(saves))
	}
	ident, jid := regionOf("ckp18").Identity(), journalID(t, env)
	for i, s := range saves {
		r := s.Rec
		if r.Position != seqs[i] || !r.Started || r.Owner != owner || r.UpdatedMs != uint64(stamps[seqs[i]]) ||
			r.RegionIdentity == nil || *r.RegionIdentity != ident || r.JournalID != jid {
			t.Fatalf("save %d = %+v, want position %d, owner %q, updated_ms %d, region %q, journal %q",
				i, r, seqs[i], owner, stamps[seqs[i]], ident, jid)
		}
	}
	rec := wantRecord(t, env, id, seqs[1])
	if rec.Owner != owner || rec.UpdatedMs != uint64(stamps[seqs[1]]) || rec.JournalID != jid ||
		rec.RegionIdentity == nil || *rec.RegionIdentity != ident {
		t.Fatalf("stored record %+v, want owner %q, updated_ms %d, journal %q, region %q", rec, owner, stamps[seqs[1]], jid, ident)
	}
}

// ---------------------------------------------------------------------------
// Worker lifecycle and actions

// WRK-01: DefaultWorkerConfig ⇒ batch 64, idle 10 ms, RestartOnce, no
// checkpoint id, no hooks.
func scenarioWRK01(t *testing.T, _ NewEnv) {
	cfg := engine.DefaultWorkerConfig()
	if cfg.BatchSize != 64 || cfg.IdleTimeout != 10*time.Millisecond {
		t.Fatalf("batch %d, idle %v, want 64, 10ms", cfg.BatchSize, cfg.IdleTimeout)
	}
	if _, ok := cfg.Restart.(engine.RestartOnce); !ok {
		t.Fatalf("restart policy %v, want RestartOnce", cfg.Restart)
	}
	if cfg.CheckpointID != "" || cfg.Checkpoints != nil {
		t.Fatalf("checkpoint id %q / store %v, want in-memory", cfg.CheckpointID, cfg.Checkpoints)
	}
	if cfg.OnRestartBudgetExhausted != nil || cfg.OnCheckpointFailure != nil {
		t.Fatal("default config has hooks")
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
}

// WRK-02: a durable worker passes a witness with its id with every batch;
// an in-memory worker passes nil.
func scenarioWRK02(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "wrk02", 3)
	run := func(cfg engine.WorkerConfig) (*engine.Worker, []*engine.AtLeastOnce) {
		var mu sync.Mutex
		var got []*engine.AtLeastOnce
		cfg.BatchSize = 1
		w := startWorker(t, env.Source, regionOf("wrk02"), cfg, func(_ context.Context, b []engine.Entry, d *engine.Delivery) engine.Action {
			mu.Lock()
			got = append(got, d.Witness)
			mu.Unlock()
			if b[0].Seq == seqs[2] {
				return engine.Stop
			}
			return engine.Continue
		})
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join = %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 3 {
			t.Fatalf("%d batches, want 3", len(got))
		}
		return w, got
	}
	w, got := run(durableConfig(env, "wrk-02"))
	for i, wit := range got {
		if wit == nil || wit != w.Witness() || wit.CheckpointID() != "wrk-02" {
			t.Fatalf("durable batch %d: witness %v, want the worker's witness for %q", i, wit, "wrk-02")
		}
	}
	w, got = run(engine.DefaultWorkerConfig())
	if w.Witness() != nil {
		t.Fatal("in-memory worker has a witness")
	}
	for i, wit := range got {
		if wit != nil {
			t.Fatalf("in-memory batch %d: witness %v, want nil", i, wit)
		}
	}
}

// WRK-03: Stop on the first batch ⇒ Join (no stop requested) is nil; the
// record is that batch's last seq.
func scenarioWRK03(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "wrk-03"
	seqs := appendN(t, env, "wrk03", 3)
	calls := newTally()
	w := startWorker(t, env.Source, regionOf("wrk03"), durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		calls.add(b)
		return engine.Stop
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	_, batches := calls.snapshot()
	if len(batches) != 1 || !slices.Equal(batches[0], seqs) {
		t.Fatalf("batches %v, want one batch %v", batches, seqs)
	}
	wantRecord(t, env, id, seqs[2])
}

// wrk04 runs WRK-04 on seqs (5 events): Continue@e1, StopWithRollback@e2
// ⇒ record (e1, true), Join nil.
func wrk04(t *testing.T, env Env, id string, seqs []uint64, calls *tally) {
	t.Helper()
	cfg := durableConfig(env, id)
	cfg.BatchSize = 1
	w := startWorker(t, env.Source, regionOf("wrk04"), cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		calls.add(b)
		if b[0].Seq == seqs[0] {
			return engine.Continue
		}
		return engine.StopWithRollback
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("WRK-04 run: Join = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 1})
	wantRecord(t, env, id, seqs[0])
}

// WRK-04: Continue@e1, StopWithRollback@e2 ⇒ record (e1, true); Join nil.
func scenarioWRK04(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	wrk04(t, env, "wrk-04", appendN(t, env, "wrk04", 5), newTally())
}

// WRK-05: after WRK-04, same id, batch 1: Continue@e2, e3, panic once @e4,
// Continue@e4, Stop@e5 ⇒ counts over both runs {1:1, 2:2, 3:1, 4:2, 5:1};
// record e5.
func scenarioWRK05(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "wrk-05"
	seqs := appendN(t, env, "wrk04", 5)
	calls := newTally()
	wrk04(t, env, id, seqs, calls)
	cfg := durableConfig(env, id)
	cfg.BatchSize = 1
	w := startWorker(t, env.Source, regionOf("wrk04"), cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		n := calls.add(b)
		switch b[0].Seq {
		case seqs[3]:
			if n == 1 {
				panic("wrk-05: one-shot failure at e4")
			}
		case seqs[4]:
			return engine.Stop
		}
		return engine.Continue
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 2, seqs[2]: 1, seqs[3]: 2, seqs[4]: 1})
	wantRecord(t, env, id, seqs[4])
	if st := w.Stats(); st.Restarts != 1 {
		t.Fatalf("restarts %d, want 1", st.Restarts)
	}
}

// WRK-06: durable, no record, StopWithRollback on the first batch ⇒ still
// no record.
func scenarioWRK06(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "wrk-06"
	appendN(t, env, "wrk06", 2)
	calls := newTally()
	w := startWorker(t, env.Source, regionOf("wrk06"), durableConfig(env, id), func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		calls.add(b)
		return engine.StopWithRollback
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	if n := calls.calls(); n != 1 {
		t.Fatalf("handler called %d times, want 1", n)
	}
	wantNoRecord(t, env, id)
	if st := w.Stats(); st.Saves != 0 || st.CommittedStarted {
		t.Fatalf("stats %+v, want no save and nothing committed", st)
	}
}

// WRK-07: idle timeout 10 s: a matching publish runs the parked worker's
// handler in under a second.
func scenarioWRK07(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	spy := &spySource{Source: env.Source}
	entered := make(chan time.Time, 1)
	cfg := durableConfig(env, "wrk-07")
	cfg.IdleTimeout = 10 * time.Second
	w := startWorker(t, spy, regionOf("wrk07"), cfg, func(context.Context, []engine.Entry, *engine.Delivery) engine.Action {
		entered <- time.Now()
		return engine.Continue
	})
	eventually(t, "the worker to park", func() bool { return spy.parks.Load() > 0 })
	published := time.Now()
	seq := appendN(t, env, "wrk07", 1)[0]
	var ran time.Time
	select {
	case ran = <-entered:
	case <-time.After(waitLimit):
		t.Fatalf("handler not run within %v of the publish", waitLimit)
	}
	latency := ran.Sub(published)
	t.Logf("publish-to-handler latency %v (idle timeout 10s)", latency)
	if latency >= time.Second {
		t.Fatalf("handler ran %v after the publish, want < 1s", latency)
	}
	eventually(t, "the batch to commit", func() bool { return w.Stats().Committed == seq })
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
}

// WRK-08: idle timeout 10 s: StopAndJoin of a parked worker returns at
// once (target 100 ms; bound 1 s); the handler never ran.
func scenarioWRK08(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	spy := &spySource{Source: env.Source}
	calls := newTally()
	cfg := durableConfig(env, "wrk-08")
	cfg.IdleTimeout = 10 * time.Second
	w := startWorker(t, spy, regionOf("wrk08"), cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		calls.add(b)
		return engine.Continue
	})
	eventually(t, "the worker to park", func() bool { return spy.parks.Load() > 0 })
	begin := time.Now()
	err := stopAndJoinWithin(t, w)
	took := time.Since(begin)
	t.Logf("StopAndJoin of a parked worker took %v (target < 100ms, bound 1s)", took)
	if err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	if took >= time.Second {
		t.Fatalf("StopAndJoin took %v, want < 1s", took)
	}
	if n := calls.calls(); n != 0 {
		t.Fatalf("handler called %d times, want never", n)
	}
}

// WRK-09: Stop while the handler is busy ⇒ the batch completes and is
// saved, and the worker exits without another poll. (The catalogue's
// 300 ms block is a handler held until the test has called Stop.)
func scenarioWRK09(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "wrk-09"
	seqs := appendN(t, env, "wrk09", 2)
	spy := &spySource{Source: env.Source}
	hand := newHandoff()
	cfg := durableConfig(env, id)
	cfg.BatchSize = 1
	w := startWorker(t, spy, regionOf("wrk09"), cfg, hand.handler)
	if b := hand.next(t); b[0].Seq != seqs[0] {
		t.Fatalf("first batch at %d, want %d", b[0].Seq, seqs[0])
	}
	w.Stop()
	polls := spy.polls.Load() // the worker is inside the handler: no poll runs now
	hand.answer(t, engine.Continue)
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	wantRecord(t, env, id, seqs[0])
	if got := spy.polls.Load(); got != polls {
		t.Fatalf("%d polls after Stop, want none", got-polls)
	}
	if st := w.Stats(); st.Batches != 1 || st.Saves != 1 {
		t.Fatalf("stats %+v, want 1 batch, 1 save", st)
	}
}

// WRK-10: a worker whose start context is cancelled, never joined, exits
// promptly and releases its source: the store can then close. This
// scenario closes env.Store itself; the backend's cleanup must tolerate it.
func scenarioWRK10(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "wrk10", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := newTally()
	w := startWorkerCtx(t, ctx, env.Source, regionOf("wrk10"), durableConfig(env, "wrk-10"), func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		calls.add(b)
		return engine.Continue
	})
	eventually(t, "the first batch", func() bool { return calls.count(seqs[0]) == 1 })
	begin := time.Now()
	cancel()
	select {
	case <-w.Done():
	case <-time.After(waitLimit):
		t.Fatalf("worker still running %v after its start context was cancelled", waitLimit)
	}
	t.Logf("exit after cancel took %v", time.Since(begin))
	if err := env.Store.Close(); err != nil {
		t.Fatalf("store Close after the worker exited: %v", err)
	}
}

// WRK-11: batch 1 ⇒ one entry per call; batch 8 with 20 pending ⇒ 8, 8, 4.
func scenarioWRK11(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "wrk11", 20)
	sizes := func(batch int) []int {
		calls := newTally()
		cfg := engine.DefaultWorkerConfig()
		cfg.BatchSize = batch
		w := startWorker(t, env.Source, regionOf("wrk11"), cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
			calls.add(b)
			if b[len(b)-1].Seq == seqs[len(seqs)-1] {
				return engine.Stop
			}
			return engine.Continue
		})
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("batch %d: Join = %v", batch, err)
		}
		if got := calls.delivered(); !slices.Equal(got, seqs) {
			t.Fatalf("batch %d: delivered %v, want %v", batch, got, seqs)
		}
		_, batches := calls.snapshot()
		out := make([]int, len(batches))
		for i, b := range batches {
			out[i] = len(b)
		}
		return out
	}
	if got := sizes(8); !slices.Equal(got, []int{8, 8, 4}) {
		t.Fatalf("batch 8 sizes %v, want [8 8 4]", got)
	}
	got := sizes(1)
	if len(got) != 20 || slices.ContainsFunc(got, func(n int) bool { return n != 1 }) {
		t.Fatalf("batch 1 sizes %v, want 20 × 1", got)
	}
}

// WRK-12: an in-memory worker handled 3 and stopped; a new one redelivers
// all 3.
func scenarioWRK12(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "wrk12", 3)
	run := func() []uint64 {
		calls := newTally()
		cfg := engine.DefaultWorkerConfig()
		cfg.BatchSize = 1
		w := startWorker(t, env.Source, regionOf("wrk12"), cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
			calls.add(b)
			if b[0].Seq == seqs[2] {
				return engine.Stop
			}
			return engine.Continue
		})
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join = %v", err)
		}
		return calls.delivered()
	}
	if got := run(); !slices.Equal(got, seqs) {
		t.Fatalf("first worker got %v, want %v", got, seqs)
	}
	if got := run(); !slices.Equal(got, seqs) {
		t.Fatalf("second worker got %v, want all of %v again", got, seqs)
	}
}

// WRK-13: the worker-level face of "first error wins": Join returns the
// one recorded error, the same to every call and to StopAndJoin. (The
// two-failure unit case is engine's restart_test.go.)
func scenarioWRK13(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "wrk-13"
	env.PlantRecord(t, id, []byte("not-msgpack"))
	w := startWorker(t, env.Source, regionOf("wrk13"), durableConfig(env, id), func(context.Context, []engine.Entry, *engine.Delivery) engine.Action {
		return engine.Continue
	})
	first := joinWithin(t, w)
	wantErr(t, "Join", first, engine.ErrCheckpointCorrupt)
	for i := 0; i < 3; i++ {
		if err := w.Join(); err != first {
			t.Fatalf("Join call %d = %v, want the first result %v", i+2, err, first)
		}
	}
	if err := w.StopAndJoin(); err != first {
		t.Fatalf("StopAndJoin = %v, want %v", err, first)
	}
}

// WRK-14: a source whose Poll panics ⇒ Join ErrWorkerCrashed; the process
// and the store live on.
func scenarioWRK14(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	appendN(t, env, "wrk14", 1)
	spy := &spySource{Source: env.Source, pollPanic: "wrk-14: poll exploded"}
	calls := newTally()
	w := startWorker(t, spy, regionOf("wrk14"), engine.DefaultWorkerConfig(), func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		calls.add(b)
		return engine.Continue
	})
	err := joinWithin(t, w)
	wantErr(t, "Join", err, engine.ErrWorkerCrashed)
	var wc *engine.WorkerCrashedError
	if !errors.As(err, &wc) || !strings.Contains(wc.Panic, "poll exploded") {
		t.Fatalf("Join = %v, want a *WorkerCrashedError carrying the panic text", err)
	}
	if n := calls.calls(); n != 0 {
		t.Fatalf("handler called %d times, want never", n)
	}
	appendN(t, env, "wrk14", 1) // the store still works
}

// WRK-15: batch 0, idle 0 or -1 ms ⇒ ErrInvalidConfig; a bad id ⇒
// ErrInvalidCheckpointID; a bad region ⇒ ErrInvalidRegion; all from
// StartWorker, with nothing started.
func scenarioWRK15(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "wrk15", 1)
	good := regionOf("wrk15")
	cases := []struct {
		name   string
		region engine.Region
		edit   func(*engine.WorkerConfig)
		want   []error
	}{
		{"batch-0", good, func(c *engine.WorkerConfig) { c.BatchSize = 0 }, []error{engine.ErrInvalidConfig}},
		{"idle-0", good, func(c *engine.WorkerConfig) { c.IdleTimeout = 0 }, []error{engine.ErrInvalidConfig}},
		{"idle-negative", good, func(c *engine.WorkerConfig) { c.IdleTimeout = -time.Millisecond }, []error{engine.ErrInvalidConfig}},
		{"bad-id", good, func(c *engine.WorkerConfig) {
			c.CheckpointID, c.Checkpoints = "with/slash", env.Checkpoints
		}, []error{engine.ErrInvalidCheckpointID, engine.ErrPathTraversal}},
		{"bad-region", engine.RegionEntity("*"), func(*engine.WorkerConfig) {}, []error{engine.ErrInvalidRegion, engine.ErrEntityPrefixStar}},
	}
	bad := newTally()
	for _, tc := range cases {
		cfg := engine.DefaultWorkerConfig()
		tc.edit(&cfg)
		w, err := engine.StartWorker(context.Background(), env.Source, tc.region, cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
			bad.add(b)
			return engine.Continue
		})
		if w != nil {
			w.Stop()
			t.Fatalf("%s: StartWorker returned a worker (err %v)", tc.name, err)
		}
		wantErr(t, tc.name, err, tc.want...)
	}
	// A valid worker on the same event runs and ends; the rejected ones
	// never called their handler.
	calls := newTally()
	w := startWorker(t, env.Source, good, engine.DefaultWorkerConfig(), func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		calls.add(b)
		return engine.Stop
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("valid worker Join = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1})
	if n := bad.calls(); n != 0 {
		t.Fatalf("rejected workers' handler called %d times", n)
	}
}

// ---------------------------------------------------------------------------
// Gap observations

// GAP-10: for a batch crossing a cancelled range (made with a fence), the
// handler's Delivery.Gaps equal what a cursor over the same region records
// with a gap buffer, and the worker's stats count them.
func scenarioGAP10(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	ctx := context.Background()
	before := appendN(t, env, "gap10", 1)[0]
	if err := env.Store.BeginFence(ctx); err != nil {
		t.Fatalf("BeginFence: %v", err)
	}
	if _, err := env.Store.AppendFenced(ctx, []engine.Event{scenarioEvent("gap10", "fenced-1"), scenarioEvent("gap10", "fenced-2")}); err != nil {
		t.Fatalf("AppendFenced: %v", err)
	}
	if err := env.Store.CancelFence(ctx); err != nil {
		t.Fatalf("CancelFence: %v", err)
	}
	after := appendN(t, env, "gap10", 1)[0]

	var mu sync.Mutex
	var gotEntries []uint64
	var gotGaps []engine.GapObservation
	w := startWorker(t, env.Source, regionOf("gap10"), engine.DefaultWorkerConfig(), func(_ context.Context, b []engine.Entry, d *engine.Delivery) engine.Action {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range b {
			gotEntries = append(gotEntries, e.Seq)
		}
		gotGaps = append(gotGaps, d.Gaps...)
		return engine.Stop
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}

	cur, err := engine.NewCursor(env.Source, regionOf("gap10"))
	if err != nil {
		t.Fatalf("NewCursor: %v", err)
	}
	if err := cur.WithGapConfig(engine.GapConfig{Capacity: 8}); err != nil {
		t.Fatalf("WithGapConfig: %v", err)
	}
	es, err := cur.PollBatch(ctx, engine.DefaultWorkerConfig().BatchSize)
	if err != nil {
		t.Fatalf("PollBatch: %v", err)
	}
	cursorGaps := cur.TakeGaps()

	mu.Lock()
	defer mu.Unlock()
	if want := []uint64{before, after}; !slices.Equal(gotEntries, want) {
		t.Fatalf("handler batch %v, want %v", gotEntries, want)
	}
	if cs := entrySeqs(es); !slices.Equal(cs, gotEntries) {
		t.Fatalf("cursor batch %v, handler batch %v", cs, gotEntries)
	}
	want := []engine.GapObservation{{Expected: before + 1, Delivered: after, Ranges: []engine.Range{{Start: before + 1, End: after}}}}
	if !reflect.DeepEqual(cursorGaps, want) {
		t.Fatalf("cursor gaps %+v, want %+v", cursorGaps, want)
	}
	if !reflect.DeepEqual(gotGaps, cursorGaps) {
		t.Fatalf("handler gaps %+v, cursor gaps %+v", gotGaps, cursorGaps)
	}
	if st := w.Stats(); st.GapObservations != 1 || st.GapSequences != after-before-1 {
		t.Fatalf("stats: %d observations covering %d seqs, want 1 covering %d", st.GapObservations, st.GapSequences, after-before-1)
	}
}

func entrySeqs(es []engine.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

// ---------------------------------------------------------------------------
// Restart policy

// RST-01: RestartBounded{2, 5 s}, one-shot panic at e2, batch 1 ⇒ counts
// {1:1, 2:2, 3:1}; StopAndJoin nil.
func scenarioRST01(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "rst01", 3)
	calls := newTally()
	cfg := engine.DefaultWorkerConfig()
	cfg.BatchSize = 1
	cfg.Restart = engine.RestartBounded{MaxRestarts: 2, Within: 5 * time.Second}
	w := startWorker(t, env.Source, regionOf("rst01"), cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		if n := calls.add(b); b[0].Seq == seqs[1] && n == 1 {
			panic("rst-01: one-shot")
		}
		return engine.Continue
	})
	eventually(t, "e3 to be handled", func() bool { return calls.count(seqs[2]) > 0 })
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 2, seqs[2]: 1})
	if st := w.Stats(); st.Restarts != 1 {
		t.Fatalf("restarts %d, want 1", st.Restarts)
	}
	if got := w.LastPanic(); got != "rst-01: one-shot" {
		t.Fatalf("LastPanic = %q", got)
	}
}

// alwaysPanics runs a worker whose handler panics on every call under
// policy and returns it with the number of calls and the hook's calls.
func alwaysPanics(t *testing.T, env Env, name string, policy engine.RestartPolicy) (w *engine.Worker, calls int, hook []string, err error) {
	t.Helper()
	appendN(t, env, name, 1)
	var n atomic.Int64
	var hookMu sync.Mutex
	cfg := engine.DefaultWorkerConfig()
	cfg.Restart = policy
	cfg.OnRestartBudgetExhausted = func(last string) {
		hookMu.Lock()
		hook = append(hook, last)
		hookMu.Unlock()
	}
	w = startWorker(t, env.Source, regionOf(name), cfg, func(context.Context, []engine.Entry, *engine.Delivery) engine.Action {
		panic(fmt.Sprintf("boom %d", n.Add(1)))
	})
	err = joinWithin(t, w)
	hookMu.Lock()
	defer hookMu.Unlock()
	return w, int(n.Load()), slices.Clone(hook), err
}

// RST-02: RestartBounded{1, 5 s}, always panics ⇒ 2 invocations,
// ErrRestartBudgetExhausted; the store still accepts appends.
func scenarioRST02(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	_, calls, _, err := alwaysPanics(t, env, "rst02", engine.RestartBounded{MaxRestarts: 1, Within: 5 * time.Second})
	wantErr(t, "Join", err, engine.ErrRestartBudgetExhausted)
	if calls != 2 {
		t.Fatalf("%d invocations, want 2", calls)
	}
	appendN(t, env, "rst02", 1)
}

// RST-03: RestartOnce, always panics ⇒ 2 invocations, the hook fires once,
// ErrRestartBudgetExhausted carries the last panic text.
func scenarioRST03(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	w, calls, hook, err := alwaysPanics(t, env, "rst03", engine.RestartOnce{})
	wantErr(t, "Join", err, engine.ErrRestartBudgetExhausted)
	if calls != 2 {
		t.Fatalf("%d invocations, want 2", calls)
	}
	var be *engine.BudgetExhaustedError
	if !errors.As(err, &be) || be.LastPanic != "boom 2" {
		t.Fatalf("Join = %v, want a *BudgetExhaustedError with last panic %q", err, "boom 2")
	}
	if !slices.Equal(hook, []string{"boom 2"}) {
		t.Fatalf("hook calls %q, want exactly one with %q", hook, "boom 2")
	}
	if got := w.LastPanic(); got != "boom 2" {
		t.Fatalf("LastPanic = %q, want %q", got, "boom 2")
	}
}

// RST-04: RestartBounded{0, any} ⇒ 1 invocation, exhausted.
func scenarioRST04(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	_, calls, hook, err := alwaysPanics(t, env, "rst04", engine.RestartBounded{MaxRestarts: 0, Within: time.Hour})
	wantErr(t, "Join", err, engine.ErrRestartBudgetExhausted)
	if calls != 1 || len(hook) != 1 {
		t.Fatalf("%d invocations, %d hook calls, want 1 and 1", calls, len(hook))
	}
}

// RST-05: RestartBounded{1, 50 ms}; the 2nd attempt sleeps 75 ms then
// panics (the window has passed, so the count resets); the 3rd returns
// Stop ⇒ 3 attempts, Join nil. The sleep only guarantees a lower bound on
// elapsed time, which is what makes the outcome certain.
func scenarioRST05(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	seqs := appendN(t, env, "rst05", 1)
	calls := newTally()
	cfg := engine.DefaultWorkerConfig()
	cfg.Restart = engine.RestartBounded{MaxRestarts: 1, Within: 50 * time.Millisecond}
	w := startWorker(t, env.Source, regionOf("rst05"), cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		switch calls.add(b) {
		case 1:
			panic("rst-05: first")
		case 2:
			time.Sleep(75 * time.Millisecond)
			panic("rst-05: second, after the window")
		}
		return engine.Stop
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 3})
}

// RST-08: a durable worker panicking after batch k is redelivered from its
// in-memory committed position; the checkpoint store is loaded once.
func scenarioRST08(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "rst-08"
	seqs := appendN(t, env, "rst08", 3)
	rc := &recordingCheckpoints{CheckpointStore: env.Checkpoints}
	calls := newTally()
	cfg := durableConfig(env, id)
	cfg.Checkpoints = rc
	cfg.BatchSize = 1
	w := startWorker(t, env.Source, regionOf("rst08"), cfg, func(_ context.Context, b []engine.Entry, _ *engine.Delivery) engine.Action {
		n := calls.add(b)
		if b[0].Seq == seqs[2] {
			if n == 1 {
				panic("rst-08: after batch 2")
			}
			return engine.Stop
		}
		return engine.Continue
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 1, seqs[2]: 2})
	if got := calls.delivered(); !slices.Equal(got, []uint64{seqs[0], seqs[1], seqs[2], seqs[2]}) {
		t.Fatalf("delivery order %v", got)
	}
	if n := rc.loadCount(); n != 1 {
		t.Fatalf("checkpoint store loaded %d times, want once", n)
	}
	wantRecord(t, env, id, seqs[2])
}

// RST-09: a panic value becomes text: a string as is, an error by its
// message, anything else by fmt.Sprint; exposed as LastPanic and in
// ErrRestartBudgetExhausted.
func scenarioRST09(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	appendN(t, env, "rst09", 1)
	for _, tc := range []struct {
		value any
		want  string
	}{
		{"boom", "boom"},
		{errors.New("bad"), "bad"},
		{42, "42"},
	} {
		cfg := engine.DefaultWorkerConfig()
		cfg.Restart = engine.RestartBounded{MaxRestarts: 0}
		w := startWorker(t, env.Source, regionOf("rst09"), cfg, func(context.Context, []engine.Entry, *engine.Delivery) engine.Action {
			panic(tc.value)
		})
		err := joinWithin(t, w)
		var be *engine.BudgetExhaustedError
		if !errors.As(err, &be) || be.LastPanic != tc.want {
			t.Fatalf("panic(%#v): Join = %v, want last panic %q", tc.value, err, tc.want)
		}
		if got := w.LastPanic(); got != tc.want {
			t.Fatalf("panic(%#v): LastPanic = %q, want %q", tc.value, got, tc.want)
		}
	}
}
