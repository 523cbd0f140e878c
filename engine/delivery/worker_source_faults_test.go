package delivery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/journal"
)

// Worker tests driven by a scripted source over a local journal: fatal
// poll errors racing Stop, transient errors and their backoff, and a
// writer that changes incarnation under a running worker (SPEC §9.3,
// §9.6, §9.7).

// fltSource wraps a journal.Store. Polls and Info calls can be made to
// fail, block until their context ends, or report another writer
// incarnation, journal id or visible bound; Park and Latest translate the
// reported incarnation back, so a worker parks on the real store as it
// would on the writer that incarnation names.
type fltSource struct {
	*journal.Store

	polls, infos atomic.Int64
	entered      chan struct{} // receives once per poll that blocks (blockPoll)

	mu sync.Mutex
	// pollErrs are the outcomes of the next polls (nil: poll the store).
	pollErrs []error
	// blockPoll makes every poll wait for its context to end, then return
	// afterBlock(ctx.Err()).
	blockPoll  bool
	afterBlock func(error) error
	// pollAt are the (position, started) of every poll, with the time.
	pollAt []fltPoll
	// infoErrs are the outcomes of the next Info calls (nil: answer).
	infoErrs []error
	// infoErr, when set, is the outcome of every Info call once infoErrs
	// are used up.
	infoErr error
	// incarnation is the incarnation reported in place of the store's
	// (zeroIncarnation reports the zero id); journalID and visible, when
	// set, replace Info's.
	incarnation     *engine.ID128
	zeroIncarnation bool
	journalID       *engine.ID128
	visible         *uint64
	// lastInfoFailure is when Info last failed.
	lastInfoFailure time.Time
}

type fltPoll struct {
	position uint64
	started  bool
	at       time.Time
	failed   bool
}

func newFltSource(s *journal.Store) *fltSource {
	return &fltSource{Store: s, entered: make(chan struct{}, 16)}
}

// reported is the incarnation the source reports now.
func (f *fltSource) reported() engine.ID128 {
	switch {
	case f.zeroIncarnation:
		return engine.ID128{}
	case f.incarnation != nil:
		return *f.incarnation
	}
	return f.Store.Incarnation()
}

func (f *fltSource) Poll(ctx context.Context, region engine.Region, position uint64, started bool, max int) (engine.PollResult, error) {
	f.polls.Add(1)
	f.mu.Lock()
	var err error
	if len(f.pollErrs) > 0 {
		err, f.pollErrs = f.pollErrs[0], f.pollErrs[1:]
	}
	block, after := f.blockPoll, f.afterBlock
	f.pollAt = append(f.pollAt, fltPoll{position, started, time.Now(), err != nil})
	f.mu.Unlock()
	if block {
		f.entered <- struct{}{}
		<-ctx.Done()
		return engine.PollResult{}, after(ctx.Err())
	}
	if err != nil {
		return engine.PollResult{}, err
	}
	res, err := f.Store.Poll(ctx, region, position, started, max)
	f.mu.Lock()
	res.Snapshot.Incarnation = f.reported()
	f.mu.Unlock()
	return res, err
}

func (f *fltSource) Latest() engine.Snapshot {
	snap := f.Store.Latest()
	f.mu.Lock()
	snap.Incarnation = f.reported()
	f.mu.Unlock()
	return snap
}

func (f *fltSource) Park(ctx context.Context, snap engine.Snapshot, timeout time.Duration) bool {
	f.mu.Lock()
	if snap.Incarnation == f.reported() {
		snap.Incarnation = f.Store.Incarnation()
	}
	f.mu.Unlock()
	return f.Store.Park(ctx, snap, timeout)
}

func (f *fltSource) Info(ctx context.Context) (engine.SourceInfo, error) {
	f.infos.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.infoErrs) > 0 {
		err := f.infoErrs[0]
		f.infoErrs, f.lastInfoFailure = f.infoErrs[1:], time.Now()
		return engine.SourceInfo{}, err
	}
	if f.infoErr != nil {
		f.lastInfoFailure = time.Now()
		return engine.SourceInfo{}, f.infoErr
	}
	info, err := f.Store.Info(ctx)
	if err != nil {
		return info, err
	}
	info.Incarnation = f.reported()
	if f.journalID != nil {
		info.JournalID = *f.journalID
	}
	if f.visible != nil {
		info.Visible = *f.visible
	}
	return info, nil
}

// set changes the script under the lock.
func (f *fltSource) set(edit func(f *fltSource)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	edit(f)
}

func (f *fltSource) infoFailedAt() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastInfoFailure
}

func (f *fltSource) polled() []fltPoll {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fltPoll(nil), f.pollAt...)
}

// transientErr is a source failure worth retrying.
func transientErr(what string) error {
	return fmt.Errorf("%w: injected: %s", ErrTransient, what)
}

// fltJoin waits for the worker to exit by itself and returns Join's error.
func fltJoin(t testing.TB, w *Worker) error {
	t.Helper()
	select {
	case <-w.Done():
		return w.Join()
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not exit")
		return nil
	}
}

// fltRecorder is a handler that records the seqs it was handed and
// returns Continue, or Stop at stopAt.
type fltRecorder struct {
	mu     sync.Mutex
	seqs   []uint64
	stopAt uint64 // 0: never
}

func (r *fltRecorder) handle(_ context.Context, b []engine.Entry, _ *Delivery) Action {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seqs = append(r.seqs, seqsOf(b)...)
	if r.stopAt != 0 && b[len(b)-1].Seq >= r.stopAt {
		return Stop
	}
	return Continue
}

func (r *fltRecorder) got() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.seqs...)
}

// fltStart starts a worker on src over region with cfg, stopped and joined
// when the test ends.
func fltStart(t testing.TB, src Source, region engine.Region, cfg WorkerConfig, h Handler) *Worker {
	t.Helper()
	w, err := StartWorker(context.Background(), src, region, cfg, h)
	if err != nil {
		t.Fatalf("StartWorker: %v", err)
	}
	t.Cleanup(func() { _ = w.StopAndJoin() })
	return w
}

// TestWRKExtra_FatalPollErrorRacingStop: a poll in flight when Stop comes
// fails with a fatal error (not a cancellation): Join reports it. A poll
// cut short by Stop with the cancellation (context.Canceled, bare or
// wrapped) or a transient error is no failure: Join returns nil. (Before
// the fix the worker checked stopping() first and dropped any error that
// raced Stop, so Join returned nil for the fatal ones.)
// SPEC §9.6: fatal poll errors include ErrEntryUnreadable.
func TestWRKExtra_FatalPollErrorRacingStop(t *testing.T) {
	unreadable := &journal.EntryUnreadableError{Seq: 1, Cause: errors.New("injected: bad payload")}
	remote := errors.New("injected: remote 500")
	for _, tc := range []struct {
		name  string
		after func(ctxErr error) error
		want  error // nil: Join must be nil
	}{
		{"entry-unreadable", func(error) error { return unreadable }, journal.ErrEntryUnreadable},
		{"other-fatal", func(error) error { return remote }, remote},
		{"canceled", func(c error) error { return c }, nil},
		{"canceled-wrapped", func(c error) error { return fmt.Errorf("poll cut short: %w", c) }, nil},
		{"transient", func(error) error { return transientErr("writer gone") }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t, journal.Config{})
			mustAppend(t, s, ev("race", "s", "1"))
			src := newFltSource(s)
			src.set(func(f *fltSource) { f.blockPoll, f.afterBlock = true, tc.after })
			rec := &fltRecorder{}
			w := fltStart(t, src, engine.RegionEntity("race"), DefaultWorkerConfig(), rec.handle)
			select {
			case <-src.entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the worker never polled")
			}
			w.Stop()
			err := fltJoin(t, w)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("Join = %v, want nil (a poll cut short by Stop)", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("Join = %v, want the fatal poll error %v", err, tc.want)
			}
			if n := w.Stats().TransientErrors; n != 0 {
				t.Fatalf("TransientErrors = %d: an error after Stop is not retried", n)
			}
			if n := src.polls.Load(); n != 1 {
				t.Fatalf("%d polls, want 1 (no re-poll after Stop)", n)
			}
			if got := rec.got(); len(got) != 0 {
				t.Fatalf("handler got %v, want nothing", got)
			}
		})
	}
}

// TestWRKExtra_FatalPollErrorStopsWorker: without Stop, a fatal poll error
// ends the worker with that error, the handler never called.
func TestWRKExtra_FatalPollErrorStopsWorker(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	mustAppend(t, s, ev("fatal", "s", "1"))
	src := newFltSource(s)
	unreadable := &journal.EntryUnreadableError{Seq: 1, Cause: errors.New("injected")}
	src.set(func(f *fltSource) { f.pollErrs = []error{unreadable} })
	rec := &fltRecorder{}
	w := fltStart(t, src, engine.RegionEntity("fatal"), DefaultWorkerConfig(), rec.handle)
	if err := fltJoin(t, w); !errors.Is(err, journal.ErrEntryUnreadable) {
		t.Fatalf("Join = %v, want ErrEntryUnreadable", err)
	}
	if got := rec.got(); len(got) != 0 || src.polls.Load() != 1 {
		t.Fatalf("handler got %v after %d polls, want nothing after 1", got, src.polls.Load())
	}
}

// TestWRK16_TransientPollErrorsBackOff: polls failing with ErrTransient
// are retried from the same position after a backoff that starts at the
// idle timeout and doubles; they are counted, use no restart budget and
// leave committed and the record alone; delivery resumes afterwards with
// nothing lost or repeated.
// Catalogue: WRK-16 (local source, SPEC §9.3b).
func TestWRK16_TransientPollErrorsBackOff(t *testing.T) {
	const failures = 4
	const idle = 4 * time.Millisecond
	s := openTestStore(t, journal.Config{})
	first := mustAppend(t, s, ev("tr", "s", "1")).Seq
	src := newFltSource(s)
	store := checkpoint.NewMemoryStore()
	cfg := DefaultWorkerConfig()
	cfg.IdleTimeout = idle
	cfg.Restart = RestartBounded{MaxRestarts: 0} // a retry must not touch the budget
	cfg.CheckpointID, cfg.Checkpoints = "tr", store
	rec := &fltRecorder{}
	w := fltStart(t, src, engine.RegionEntity("tr"), cfg, rec.handle)
	waitFor(t, "the first batch to commit", func() bool { return w.Stats().Committed == first })

	errs := make([]error, failures)
	for i := range errs {
		errs[i] = transientErr(fmt.Sprint("attempt ", i))
	}
	src.set(func(f *fltSource) { f.pollErrs, f.pollAt = errs, nil })
	waitFor(t, "the failures to be retried", func() bool { return w.Stats().TransientErrors == failures })
	st := w.Stats()
	if st.Committed != first || !st.CommittedStarted || st.Restarts != 0 || st.Batches != 1 {
		t.Fatalf("stats during the failures = %+v, want committed (%d, true), 1 batch, no restart", st, first)
	}
	if recd, _, err := store.Load(context.Background(), "tr"); err != nil || recd.Position != first {
		t.Fatalf("record during the failures = %+v, %v; want position %d", recd, err, first)
	}
	var more []uint64
	for i := 0; i < 3; i++ {
		more = append(more, mustAppend(t, s, ev("tr", "s", fmt.Sprint("more ", i))).Seq)
	}
	waitFor(t, "delivery to resume", func() bool { return len(rec.got()) == 4 })
	if got, want := rec.got(), append([]uint64{first}, more...); !equalSeqs(got, want) {
		t.Fatalf("handler got %v, want %v (nothing lost or repeated)", got, want)
	}
	waitFor(t, "the last batch to commit", func() bool { return w.Stats().Committed == more[2] })
	if err := w.StopAndJoin(); err != nil {
		t.Fatalf("StopAndJoin = %v, want nil", err)
	}
	if st := w.Stats(); st.TransientErrors != failures || st.Restarts != 0 {
		t.Fatalf("stats = %+v, want %d transient errors, no restart", st, failures)
	}

	// The retries polled from the committed position, each after the
	// backoff: idle, 2·idle, 4·idle, 8·idle (lower bounds: a timer never
	// fires early).
	polls := src.polled()
	if len(polls) < failures+1 {
		t.Fatalf("%d polls after arming, want at least %d", len(polls), failures+1)
	}
	for i, p := range polls[:failures+1] {
		if p.position != first || !p.started || p.failed != (i < failures) {
			t.Fatalf("poll %d = %+v, want from (%d, true), failed %v", i, p, first, i < failures)
		}
		if i == 0 {
			continue
		}
		if gap, min := p.at.Sub(polls[i-1].at), idle<<(i-1); gap < min {
			t.Fatalf("poll %d came %v after the previous failure, want ≥ %v (backoff %v·2^%d)", i, gap, min, idle, i-1)
		}
	}
}

// TestWRK16_StopDuringBackoff: a worker backing off from a source that
// keeps failing transiently stops at once on Stop: Join nil, no further
// poll.
// Catalogue: WRK-16 (local source, SPEC §9.3: Stop interrupts a backoff).
func TestWRK16_StopDuringBackoff(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	src := newFltSource(s)
	down := make([]error, 1000)
	for i := range down {
		down[i] = transientErr("writer down")
	}
	src.set(func(f *fltSource) { f.pollErrs = down })
	cfg := DefaultWorkerConfig()
	cfg.IdleTimeout = time.Hour // every backoff is the 1 s cap
	w := fltStart(t, src, engine.RegionAll(), cfg, (&fltRecorder{}).handle)
	waitFor(t, "the first transient failure", func() bool { return w.Stats().TransientErrors == 1 })
	polls := src.polls.Load()
	if err := w.StopAndJoin(); err != nil {
		t.Fatalf("StopAndJoin = %v, want nil", err)
	}
	// The backoff began after the failed poll returned: an uninterrupted
	// one cannot end before a second after it.
	if failed := src.polled()[0].at; time.Since(failed) >= time.Second {
		t.Fatalf("StopAndJoin returned %v after the failed poll, want the 1 s backoff cut short", time.Since(failed))
	}
	if n := src.polls.Load(); n != polls || w.Stats().TransientErrors != 1 {
		t.Fatalf("%d polls (was %d), %d transient errors after Stop: want no retry", n, polls, w.Stats().TransientErrors)
	}
}

// TestWRK16_TransientInfoAtStartup: the startup fetch of the source's
// bounds retries transient errors the same way (counted, then the worker
// starts and delivers); a fatal one ends the worker with it; Stop during
// that backoff ends it with no error, durable or not.
// Catalogue: WRK-16 (local source, SPEC §9.3: startup fetches).
func TestWRK16_TransientInfoAtStartup(t *testing.T) {
	for _, durable := range []bool{false, true} {
		config := func() WorkerConfig {
			cfg := DefaultWorkerConfig()
			cfg.IdleTimeout = time.Millisecond
			if durable {
				cfg.CheckpointID, cfg.Checkpoints = "startup", checkpoint.NewMemoryStore()
			}
			return cfg
		}
		t.Run(fmt.Sprint("durable=", durable), func(t *testing.T) {
			t.Run("retried", func(t *testing.T) {
				s := openTestStore(t, journal.Config{})
				seq := mustAppend(t, s, ev("st", "s", "1")).Seq
				src := newFltSource(s)
				src.set(func(f *fltSource) { f.infoErrs = []error{transientErr("a"), transientErr("b"), transientErr("c")} })
				rec := &fltRecorder{stopAt: seq}
				w := fltStart(t, src, engine.RegionEntity("st"), config(), rec.handle)
				if err := fltJoin(t, w); err != nil {
					t.Fatalf("Join = %v, want nil", err)
				}
				if got := rec.got(); !equalSeqs(got, []uint64{seq}) {
					t.Fatalf("handler got %v, want [%d]", got, seq)
				}
				if st := w.Stats(); st.TransientErrors != 3 || src.infos.Load() != 4 || st.Restarts != 0 {
					t.Fatalf("stats %+v after %d Info calls, want 3 transient errors over 4 calls", st, src.infos.Load())
				}
			})
			t.Run("fatal", func(t *testing.T) {
				s := openTestStore(t, journal.Config{})
				mustAppend(t, s, ev("st", "s", "1"))
				src := newFltSource(s)
				broken := errors.New("injected: info refused")
				src.set(func(f *fltSource) { f.infoErrs = []error{transientErr("a"), broken} })
				rec := &fltRecorder{}
				w := fltStart(t, src, engine.RegionEntity("st"), config(), rec.handle)
				err := fltJoin(t, w)
				if !errors.Is(err, broken) || errors.Is(err, errInfoAbandoned) {
					t.Fatalf("Join = %v, want %v", err, broken)
				}
				if got := rec.got(); len(got) != 0 || src.polls.Load() != 0 || w.Stats().TransientErrors != 1 {
					t.Fatalf("handler got %v after %d polls, %d transient errors: want no poll after a failed start, 1 retry",
						got, src.polls.Load(), w.Stats().TransientErrors)
				}
			})
			t.Run("stopped", func(t *testing.T) {
				s := openTestStore(t, journal.Config{})
				mustAppend(t, s, ev("st", "s", "1"))
				src := newFltSource(s)
				src.set(func(f *fltSource) { f.infoErr = transientErr("writer down") })
				cfg := config()
				cfg.IdleTimeout = time.Hour
				rec := &fltRecorder{}
				w := fltStart(t, src, engine.RegionEntity("st"), cfg, rec.handle)
				waitFor(t, "the first transient failure", func() bool { return w.Stats().TransientErrors == 1 })
				if err := w.StopAndJoin(); err != nil {
					t.Fatalf("StopAndJoin = %v, want nil (stopped while the source was down)", err)
				}
				if failed := src.infoFailedAt(); time.Since(failed) >= time.Second {
					t.Fatalf("StopAndJoin returned %v after the failed Info, want the 1 s backoff cut short", time.Since(failed))
				}
				if got := rec.got(); len(got) != 0 || src.polls.Load() != 0 || src.infos.Load() != 1 {
					t.Fatalf("handler got %v, %d polls, %d Info calls: want nothing after Stop", got, src.polls.Load(), src.infos.Load())
				}
			})
			t.Run("fatal-racing-stop", func(t *testing.T) {
				// Stop requested while the first Info is in flight, which
				// then fails fatally: the failure is recorded, as any
				// startup failure is even when stop was requested (SPEC
				// §9.3 step 1). Before the fix it was dropped: Join nil.
				s := openTestStore(t, journal.Config{})
				src := newFltSource(s)
				refused := errors.New("injected: refused after Stop")
				src.set(func(f *fltSource) { f.infoErr = refused })
				gated := &fltInfoGate{fltSource: src, enter: make(chan struct{}, 1), gate: make(chan struct{})}
				w := fltStart(t, gated, engine.RegionAll(), config(), (&fltRecorder{}).handle)
				select {
				case <-gated.enter:
				case <-time.After(10 * time.Second):
					t.Fatal("the worker never asked for the source's info")
				}
				w.Stop()
				close(gated.gate)
				if err := fltJoin(t, w); !errors.Is(err, refused) {
					t.Fatalf("Join = %v, want %v", err, refused)
				}
				if n := src.polls.Load(); n != 0 {
					t.Fatalf("%d polls after a failed start", n)
				}
			})
		})
	}
}

// fltInfoGate holds every Info call until gate is closed, signalling
// enter (buffered) as each comes in.
type fltInfoGate struct {
	*fltSource
	enter, gate chan struct{}
}

func (g *fltInfoGate) Info(ctx context.Context) (engine.SourceInfo, error) {
	select {
	case g.enter <- struct{}{}:
	default:
	}
	<-g.gate
	return g.fltSource.Info(ctx)
}

// TestWRKExtra_CanceledPollWithoutStopIsFatal: only a stop explains a
// cancelled poll; a poll failing with context.Canceled while the worker
// was not told to stop is a failure like any other.
func TestWRKExtra_CanceledPollWithoutStopIsFatal(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	src := newFltSource(s)
	src.set(func(f *fltSource) { f.pollErrs = []error{fmt.Errorf("remote gave up: %w", context.Canceled)} })
	w := fltStart(t, src, engine.RegionAll(), DefaultWorkerConfig(), (&fltRecorder{}).handle)
	if err := fltJoin(t, w); !errors.Is(err, context.Canceled) {
		t.Fatalf("Join = %v, want the cancelled poll's error", err)
	}
}

// incWorker starts a durable worker on src over entity "inc", waits until
// it has committed the first event, and returns it with that seq and the
// handler's record.
func incWorker(t *testing.T, s *journal.Store, src *fltSource, store checkpoint.Store) (*Worker, uint64, *fltRecorder) {
	t.Helper()
	first := mustAppend(t, s, ev("inc", "s", "1")).Seq
	cfg := DefaultWorkerConfig()
	cfg.IdleTimeout = 5 * time.Millisecond
	cfg.CheckpointID, cfg.Checkpoints = "inc", store
	rec := &fltRecorder{}
	w := fltStart(t, src, engine.RegionEntity("inc"), cfg, rec.handle)
	waitFor(t, "the first batch to commit", func() bool { return w.Stats().Committed == first })
	if n := src.infos.Load(); n != 1 {
		t.Fatalf("%d Info calls at startup, want 1", n)
	}
	return w, first, rec
}

// TestWRKExtra_NewIncarnationSameJournal: the writer restarts (a new
// incarnation, same journal): the worker re-fetches the source's info
// once, re-checks what it committed, and goes on delivering; polls of the
// same incarnation re-check nothing.
// SPEC §9.7: on a reply with a new incarnation re-run §8.5 rules 5-6.
func TestWRKExtra_NewIncarnationSameJournal(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	src := newFltSource(s)
	w, first, rec := incWorker(t, s, src, checkpoint.NewMemoryStore())
	polls := src.polls.Load()
	waitFor(t, "more polls of the same incarnation", func() bool { return src.polls.Load() >= polls+3 })
	if n := src.infos.Load(); n != 1 {
		t.Fatalf("%d Info calls without a new incarnation, want 1", n)
	}

	restarted := engine.NewID128()
	src.set(func(f *fltSource) { f.incarnation = &restarted })
	second := mustAppend(t, s, ev("inc", "s", "2")).Seq
	waitFor(t, "the event after the restart", func() bool { return w.Stats().Committed == second })
	polls = src.polls.Load()
	waitFor(t, "more polls of the new incarnation", func() bool { return src.polls.Load() >= polls+3 })
	if n := src.infos.Load(); n != 2 {
		t.Fatalf("%d Info calls, want 2 (startup, then one re-check for the new incarnation)", n)
	}
	if err := w.StopAndJoin(); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	if got := rec.got(); !equalSeqs(got, []uint64{first, second}) {
		t.Fatalf("handler got %v, want [%d %d]", got, first, second)
	}
}

// TestCKP14_NewIncarnationOtherJournal: a new incarnation that reports
// another journal id stops the worker with ErrJournalMismatch before it
// hands on anything it polled there; the record stays where it was.
// Catalogue: CKP-14 (re-checked at a new incarnation, SPEC §9.7).
func TestCKP14_NewIncarnationOtherJournal(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	src := newFltSource(s)
	store := checkpoint.NewMemoryStore()
	w, first, rec := incWorker(t, s, src, store)
	restarted, other := engine.NewID128(), engine.NewID128()
	src.set(func(f *fltSource) { f.incarnation, f.journalID = &restarted, &other })
	mustAppend(t, s, ev("inc", "s", "2"))
	err := fltJoin(t, w)
	var jm *checkpoint.JournalMismatchError
	if !errors.Is(err, checkpoint.ErrJournalMismatch) || !errors.As(err, &jm) ||
		jm.Stored != s.JournalID().String() || jm.Current != other.String() {
		t.Fatalf("Join = %v, want ErrJournalMismatch{%s, %s}", err, s.JournalID(), other)
	}
	if got := rec.got(); !equalSeqs(got, []uint64{first}) {
		t.Fatalf("handler got %v, want only [%d]", got, first)
	}
	if r, _ := ccpLoad(t, store, "inc"); r.Position != first {
		t.Fatalf("record at %d, want %d", r.Position, first)
	}
}

// TestCKP15_NewIncarnationBoundBelowCommitted: a new incarnation whose
// visible bound is at or below the committed position stops the worker
// with ErrAhead (the journal lost what the checkpoint covers).
// Catalogue: CKP-15 (re-checked at a new incarnation, SPEC §9.7).
func TestCKP15_NewIncarnationBoundBelowCommitted(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	src := newFltSource(s)
	w, first, rec := incWorker(t, s, src, checkpoint.NewMemoryStore())
	restarted, bound := engine.NewID128(), first
	src.set(func(f *fltSource) { f.incarnation, f.visible = &restarted, &bound })
	mustAppend(t, s, ev("inc", "s", "2"))
	err := fltJoin(t, w)
	var ae *checkpoint.AheadError
	if !errors.Is(err, checkpoint.ErrAhead) || !errors.As(err, &ae) || ae.Position != first || ae.Visible != bound {
		t.Fatalf("Join = %v, want ErrAhead{%d, %d}", err, first, bound)
	}
	if got := rec.got(); !equalSeqs(got, []uint64{first}) {
		t.Fatalf("handler got %v, want only [%d]", got, first)
	}
}

// TestWRKExtra_NewIncarnationInfoFails: the re-fetch at a new incarnation
// retries transient errors and reports a fatal one through Join.
func TestWRKExtra_NewIncarnationInfoFails(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	src := newFltSource(s)
	w, _, _ := incWorker(t, s, src, checkpoint.NewMemoryStore())
	restarted := engine.NewID128()
	gone := errors.New("injected: info refused")
	src.set(func(f *fltSource) {
		f.incarnation = &restarted
		f.infoErrs = []error{transientErr("restarting"), gone}
	})
	if err := fltJoin(t, w); !errors.Is(err, gone) {
		t.Fatalf("Join = %v, want %v", err, gone)
	}
	if n := w.Stats().TransientErrors; n != 1 {
		t.Fatalf("TransientErrors = %d, want 1", n)
	}
}

// TestWRKExtra_ZeroIncarnationIgnored: a snapshot with the zero
// incarnation (a source that does not know it) is no new incarnation: no
// re-check, even where one would fail, and delivery goes on.
func TestWRKExtra_ZeroIncarnationIgnored(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	src := newFltSource(s)
	w, first, rec := incWorker(t, s, src, checkpoint.NewMemoryStore())
	other := engine.NewID128()
	// Polls now report the zero incarnation; Info (were it asked) would
	// report another journal and fail the worker.
	src.set(func(f *fltSource) { f.zeroIncarnation, f.journalID = true, &other })
	second := mustAppend(t, s, ev("inc", "s", "2")).Seq
	waitFor(t, "the next event", func() bool { return w.Stats().Committed == second })
	polls := src.polls.Load()
	waitFor(t, "more polls", func() bool { return src.polls.Load() >= polls+3 })
	if err := w.StopAndJoin(); err != nil {
		t.Fatalf("StopAndJoin = %v, want nil", err)
	}
	if n := src.infos.Load(); n != 1 {
		t.Fatalf("%d Info calls, want 1 (startup only)", n)
	}
	if got := rec.got(); !equalSeqs(got, []uint64{first, second}) {
		t.Fatalf("handler got %v, want [%d %d]", got, first, second)
	}
}
