package journal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
)

// openTestStore opens a journal in a fresh temporary directory and closes
// it when the test ends.
func openTestStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	return openStoreAt(t, t.TempDir(), cfg)
}

func openStoreAt(t testing.TB, dir string, cfg Config) *Store {
	t.Helper()
	s, err := Open(dir, cfg)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ev(entity, scope string, payload string) engine.Event {
	return engine.Event{Coordinate: engine.MustCoordinate(entity, scope), Kind: engine.KindData, Payload: []byte(payload)}
}

func mustAppend(t testing.TB, s *Store, e engine.Event) engine.Receipt {
	t.Helper()
	r, err := s.Append(context.Background(), e)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return r
}

// pollAll drains region from the beginning.
func pollAll(t testing.TB, s *Store, region engine.Region) []engine.Entry {
	t.Helper()
	var out []engine.Entry
	pos, started := uint64(0), false
	for {
		res, err := s.Poll(context.Background(), region, pos, started, 1000)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if len(res.Entries) == 0 {
			return out
		}
		out = append(out, res.Entries...)
		pos, started = res.Entries[len(res.Entries)-1].Seq, true
	}
}

func seqsOf(es []engine.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// syncGate is a fault hook that can block or fail fsyncs and counts them.
type syncGate struct {
	mu      sync.Mutex
	block   chan struct{} // non-nil: fsyncs wait for it to close
	entered chan struct{} // signalled when an fsync starts waiting
	fail    error
	failN   int // fail the next failN fsyncs
	calls   atomic.Int64
}

func (g *syncGate) hook() error {
	g.calls.Add(1)
	g.mu.Lock()
	block, entered := g.block, g.entered
	var err error
	if g.failN > 0 {
		g.failN--
		err = g.fail
	}
	g.mu.Unlock()
	if block != nil {
		if entered != nil {
			select {
			case entered <- struct{}{}:
			default:
			}
		}
		<-block
	}
	return err
}

func (g *syncGate) blockNext() (release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch := make(chan struct{})
	g.block = ch
	g.entered = make(chan struct{}, 1)
	return func() {
		g.mu.Lock()
		g.block = nil
		g.mu.Unlock()
		close(ch)
	}
}

func (g *syncGate) failNext(n int, err error) {
	g.mu.Lock()
	g.failN, g.fail = n, err
	g.mu.Unlock()
}

// Catalogue: VIS-01.
func TestVIS01_FreshGateEpochs(t *testing.T) {
	g := newGate()
	if e := g.epoch.Load(); e != 0 {
		t.Fatalf("fresh epoch = %d, want 0", e)
	}
	for want := uint64(1); want <= 2; want++ {
		g.reserve(1)
		if err := g.publish(want); err != nil {
			t.Fatalf("publish(%d): %v", want, err)
		}
		if e := g.epoch.Load(); e != want {
			t.Fatalf("epoch = %d, want %d", e, want)
		}
	}
}

// Catalogue: VIS-02.
func TestVIS02_PublishBounds(t *testing.T) {
	g := newGate()
	g.reserve(8)
	var gv *GateViolationError
	err := g.publish(9)
	if !errors.Is(err, ErrSequenceGateViolation) || !errors.As(err, &gv) {
		t.Fatalf("publish(9) = %v, want ErrSequenceGateViolation", err)
	}
	if gv.Requested != 9 || gv.Allocated != 8 || gv.Visible != 0 || gv.Operation == "" {
		t.Fatalf("violation fields = %+v", gv)
	}
	if err := g.publish(8); err != nil {
		t.Fatalf("publish(8): %v", err)
	}
	if v, _ := g.snapshot(); v != 8 {
		t.Fatalf("visible = %d, want 8", v)
	}
	if err := g.publish(7); !errors.Is(err, ErrSequenceGateViolation) {
		t.Fatalf("publish(7) = %v, want violation", err)
	}
	before := g.epoch.Load()
	if err := g.publish(8); err != nil {
		t.Fatalf("no-op publish(8): %v", err)
	}
	if g.epoch.Load() != before+1 {
		t.Fatalf("no-op publish did not move the epoch")
	}
}

// Catalogue: VIS-03.
func TestVIS03_ParkedReaderWakesOnPublish(t *testing.T) {
	s := openTestStore(t, Config{})
	snap := s.Latest()
	woke := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		s.Park(context.Background(), snap, 5*time.Second)
		woke <- time.Since(start)
	}()
	mustAppend(t, s, ev("a", "s", "x"))
	select {
	case d := <-woke:
		if d >= 2*time.Second {
			t.Fatalf("woke after %v, want < 2s", d)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("parked reader did not wake after a publish")
	}
}

// Catalogue: VIS-04.
func TestVIS04_StaleSnapshotReturnsAtOnce(t *testing.T) {
	s := openTestStore(t, Config{})
	snap := s.Latest()
	mustAppend(t, s, ev("a", "s", "x"))
	start := time.Now()
	if moved := s.Park(context.Background(), snap, 5*time.Second); !moved {
		t.Fatal("park with a stale snapshot reported no epoch move")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("park with a stale snapshot took %v", d)
	}
}

// Catalogue: VIS-05.
func TestVIS05_ParkTimesOut(t *testing.T) {
	s := openTestStore(t, Config{})
	start := time.Now()
	if moved := s.Park(context.Background(), s.Latest(), 50*time.Millisecond); moved {
		t.Fatal("park reported an epoch move with no publish")
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("park returned after %v, want >= 20ms", d)
	}
}

func TestParkReleasedByClose(t *testing.T) {
	s, err := Open(t.TempDir(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan bool, 1)
	go func() { done <- s.Park(context.Background(), s.Latest(), time.Minute) }()
	time.Sleep(10 * time.Millisecond) // let it park; the assertion below does not depend on it
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not release a parked reader")
	}
}

// Catalogue: VIS-06.
func TestVIS06_BatchVisibleAllOrNothing(t *testing.T) {
	s := openTestStore(t, Config{})
	region := engine.RegionEntity("batch")
	const batches = 60
	stop := make(chan struct{})
	errc := make(chan error, 1)
	var seen atomic.Int64
	go func() {
		pos, started := uint64(0), false
		for {
			res, err := s.Poll(context.Background(), region, pos, started, 1000)
			if err != nil {
				errc <- err
				return
			}
			if len(res.Entries)%3 != 0 {
				errc <- fmt.Errorf("poll returned %d entries: a partial batch", len(res.Entries))
				return
			}
			for i := 0; i < len(res.Entries); i += 3 {
				a, b, c := res.Entries[i].Seq, res.Entries[i+1].Seq, res.Entries[i+2].Seq
				if b != a+1 || c != a+2 {
					errc <- fmt.Errorf("batch seqs %d %d %d not contiguous", a, b, c)
					return
				}
			}
			if n := len(res.Entries); n > 0 {
				pos, started = res.Entries[n-1].Seq, true
				seen.Add(int64(n))
			}
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
		}
	}()
	for i := 0; i < batches; i++ {
		if _, err := s.AppendBatch(context.Background(), []engine.Event{
			ev("batch", "s", "1"), ev("batch", "s", "2"), ev("batch", "s", "3"),
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "poller to see every batch", func() bool { return seen.Load() == 3*batches })
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// Catalogue: VIS-07.
func TestVIS07_FenceCommitPublishesAtOnce(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := context.Background()
	if err := s.BeginFence(ctx); err != nil {
		t.Fatal(err)
	}
	epoch := s.Epoch()
	f1, err := s.AppendFenced(ctx, []engine.Event{ev("f", "s", "one")})
	if err != nil {
		t.Fatal(err)
	}
	f2, err := s.AppendFenced(ctx, []engine.Event{ev("f", "s", "two")})
	if err != nil {
		t.Fatal(err)
	}
	if got := pollAll(t, s, engine.RegionEntity("f")); len(got) != 0 {
		t.Fatalf("fenced writes visible before commit: %v", seqsOf(got))
	}
	if s.Epoch() != epoch {
		t.Fatal("epoch moved before the fence committed")
	}
	if err := s.CommitFence(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Epoch() != epoch+1 {
		t.Fatalf("epoch = %d after commit, want %d", s.Epoch(), epoch+1)
	}
	r1, err := f1.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := f2.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := pollAll(t, s, engine.RegionEntity("f"))
	if !equalSeqs(seqsOf(got), []uint64{r1[0].Seq, r2[0].Seq}) || string(got[0].Payload) != "one" || string(got[1].Payload) != "two" {
		t.Fatalf("after commit got %v", seqsOf(got))
	}
}

// Catalogue: VIS-08.
func TestVIS08_FenceStateErrors(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := context.Background()
	if err := s.CommitFence(ctx); !errors.Is(err, ErrFenceNotActive) {
		t.Fatalf("commit with no fence = %v", err)
	}
	if err := s.CancelFence(ctx); !errors.Is(err, ErrFenceNotActive) {
		t.Fatalf("cancel with no fence = %v", err)
	}
	if _, err := s.AppendFenced(ctx, []engine.Event{ev("a", "s", "x")}); !errors.Is(err, ErrFenceNotActive) {
		t.Fatalf("fenced append with no fence = %v", err)
	}
	if err := s.BeginFence(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginFence(ctx); !errors.Is(err, ErrFenceActive) {
		t.Fatalf("second BeginFence = %v", err)
	}
	if _, err := s.Append(ctx, ev("a", "s", "x")); !errors.Is(err, ErrFenceActive) {
		t.Fatalf("unfenced append under a fence = %v", err)
	}
	if err := s.CancelFence(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, ev("a", "s", "x")); err != nil {
		t.Fatalf("append after the fence ended: %v", err)
	}
}

// Catalogue: VIS-09.
func TestVIS09_FenceCancel(t *testing.T) {
	dir := t.TempDir()
	s := openStoreAt(t, dir, Config{})
	ctx := context.Background()
	if err := s.BeginFence(ctx); err != nil {
		t.Fatal(err)
	}
	fa, err := s.AppendFenced(ctx, []engine.Event{ev("f", "s", "a"), ev("f", "s", "b")})
	if err != nil {
		t.Fatal(err)
	}
	epoch := s.Epoch()
	if err := s.CancelFence(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := fa.Wait(ctx); !errors.Is(err, ErrFenceCancelled) {
		t.Fatalf("fenced append after cancel = %v", err)
	}
	if s.Epoch() != epoch {
		t.Fatal("fence cancel moved the epoch")
	}
	later := mustAppend(t, s, ev("f", "s", "later"))
	got := pollAll(t, s, engine.RegionEntity("f"))
	if !equalSeqs(seqsOf(got), []uint64{later.Seq}) {
		t.Fatalf("visible after cancel: %v, want only %d", seqsOf(got), later.Seq)
	}
	cancelled := s.CancelledRanges()
	if s.Close() != nil {
		t.Fatal("close")
	}
	s2 := openStoreAt(t, dir, Config{})
	got = pollAll(t, s2, engine.RegionEntity("f"))
	if !equalSeqs(seqsOf(got), []uint64{later.Seq}) {
		t.Fatalf("after reopen: %v, want only %d", seqsOf(got), later.Seq)
	}
	if rs := s2.CancelledRanges(); len(rs) != 1 || rs[0] != cancelled[0] {
		t.Fatalf("cancelled ranges after reopen = %v, want %v", rs, cancelled)
	}
}

// Catalogue: VIS-10.
func TestVIS10_QuerySkipsCancelled(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := context.Background()
	// seq 0 is OPEN_COMPLETED; a cancelled fence takes seq 1; seq 2 is visible.
	if err := s.BeginFence(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendFenced(ctx, []engine.Event{ev("x", "s", "1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.CancelFence(ctx); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, ev("x", "s", "2"))
	if rs := s.CancelledRanges(); len(rs) != 1 || rs[0] != (engine.Range{Start: 1, End: 2}) {
		t.Fatalf("cancelled = %v, want [(1,2)]", rs)
	}
	if v := s.Visible(); v != 3 {
		t.Fatalf("visible = %d, want 3", v)
	}
	res, err := s.Poll(ctx, engine.RegionAll(), 0, false, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !equalSeqs(seqsOf(res.Entries), []uint64{0, 2}) {
		t.Fatalf("query all = %v, want [0 2]", seqsOf(res.Entries))
	}
	if len(res.Cancelled) != 1 || res.Cancelled[0] != (engine.Range{Start: 1, End: 2}) {
		t.Fatalf("poll cancelled = %v", res.Cancelled)
	}
}

// Catalogue: VIS-12.
func TestVIS12_InvisibleUntilFsync(t *testing.T) {
	g := &syncGate{}
	s := openTestStore(t, Config{faults: &faults{sync: g.hook}})
	ctx := context.Background()
	release := g.blockNext()
	epoch := s.Epoch()
	got := make(chan engine.Receipt, 1)
	go func() {
		r, err := s.Append(ctx, ev("a", "s", "x"))
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	<-g.entered // the append is written and its fsync is in progress
	if n := len(pollAll(t, s, engine.RegionEntity("a"))); n != 0 {
		t.Fatalf("%d entries visible before the fsync completed", n)
	}
	if s.Epoch() != epoch {
		t.Fatal("epoch moved before the fsync completed")
	}
	select {
	case <-got:
		t.Fatal("receipt before the fsync completed")
	default:
	}
	release()
	r := <-got
	if es := pollAll(t, s, engine.RegionEntity("a")); len(es) != 1 || es[0].Seq != r.Seq {
		t.Fatalf("after fsync: %v", seqsOf(es))
	}

	// Group commit: 64 concurrent appenders share fsyncs.
	before := g.calls.Load()
	var wg sync.WaitGroup
	const appenders, each = 64, 10
	for i := 0; i < appenders; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < each; j++ {
				if _, err := s.Append(ctx, ev(fmt.Sprintf("g:%d", i), "s", "x")); err != nil {
					t.Error(err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	fsyncs := g.calls.Load() - before
	if fsyncs >= appenders*each {
		t.Fatalf("%d fsyncs for %d appends: no group commit", fsyncs, appenders*each)
	}
	t.Logf("%d appends, %d fsyncs", appenders*each, fsyncs)
}

// Catalogue: VIS-13.
func TestVIS13_SyncFailureCancelsBatch(t *testing.T) {
	dir := t.TempDir()
	g := &syncGate{}
	s := openStoreAt(t, dir, Config{faults: &faults{sync: g.hook}})
	ctx := context.Background()
	mustAppend(t, s, ev("a", "s", "before"))
	alloc := s.Stats().Allocated
	g.failNext(1, errors.New("injected fsync failure"))
	_, err := s.AppendBatch(ctx, []engine.Event{ev("a", "s", "1"), ev("a", "s", "2"), ev("a", "s", "3")})
	var sf *BatchSyncFailedError
	if !errors.Is(err, ErrBatchSyncFailed) || !errors.As(err, &sf) || sf.ItemCount != 3 {
		t.Fatalf("batch with failed fsync = %v, want ErrBatchSyncFailed{3}", err)
	}
	failed := engine.Range{Start: alloc, End: alloc + 3}
	onDisk, err := loadRanges(dir)
	if err != nil || len(onDisk) != 1 || onDisk[0] != failed {
		t.Fatalf("persisted ranges = %v (%v), want [%v]", onDisk, err, failed)
	}
	next := mustAppend(t, s, ev("a", "s", "next"))
	if next.Seq != failed.End {
		t.Fatalf("next seq = %d, want %d", next.Seq, failed.End)
	}
	res, err := s.Poll(ctx, engine.RegionEntity("a"), failed.Start-1, true, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !equalSeqs(seqsOf(res.Entries), []uint64{next.Seq}) || len(res.Cancelled) != 1 || res.Cancelled[0] != failed {
		t.Fatalf("poll after failure: %v cancelled %v", seqsOf(res.Entries), res.Cancelled)
	}
	if es := pollAll(t, s, engine.RegionEntity("a")); es[1].Clock != 1 {
		t.Fatalf("clock after a failed batch = %d, want 1 (failed appends give clocks back)", es[1].Clock)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStoreAt(t, dir, Config{})
	if rs := s2.CancelledRanges(); len(rs) != 1 || rs[0] != failed {
		t.Fatalf("after reopen cancelled = %v", rs)
	}
	after := mustAppend(t, s2, ev("a", "s", "after"))
	if after.Seq <= next.Seq {
		t.Fatalf("seq %d reused after reopen", after.Seq)
	}
	for _, e := range pollAll(t, s2, engine.RegionAll()) {
		if failed.Contains(e.Seq) {
			t.Fatalf("cancelled seq %d delivered", e.Seq)
		}
	}
}

// Catalogue: VIS-13.
func TestVIS13_WriteFailureCancelsBatch(t *testing.T) {
	dir := t.TempDir()
	var failWrite atomic.Bool
	cfg := Config{faults: &faults{write: func(f *os.File, p []byte, off int64) (int, error) {
		if failWrite.Load() {
			n, _ := f.WriteAt(p[:len(p)/2], off)
			return n, errors.New("injected write failure")
		}
		return f.WriteAt(p, off)
	}}}
	s := openStoreAt(t, dir, cfg)
	ctx := context.Background()
	alloc := s.Stats().Allocated
	failWrite.Store(true)
	// Equal-sized events: half of the group's bytes end inside event 1.
	_, err := s.AppendBatch(ctx, []engine.Event{ev("w", "s", "aaaa"), ev("w", "s", "bbbb"), ev("w", "s", "cccc")})
	failWrite.Store(false)
	var bf *BatchFailedError
	if !errors.Is(err, ErrBatchFailed) || !errors.As(err, &bf) || bf.ItemIndex != 1 {
		t.Fatalf("batch with failed write = %v, want ErrBatchFailed{ItemIndex: 1}", err)
	}
	next := mustAppend(t, s, ev("w", "s", "next"))
	if next.Seq != alloc+3 {
		t.Fatalf("next seq %d, want %d", next.Seq, alloc+3)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStoreAt(t, dir, Config{})
	got := pollAll(t, s2, engine.RegionEntity("w"))
	if !equalSeqs(seqsOf(got), []uint64{next.Seq}) {
		t.Fatalf("after reopen: %v, want only %d", seqsOf(got), next.Seq)
	}
	if rs := s2.CancelledRanges(); len(rs) != 1 || rs[0] != (engine.Range{Start: alloc, End: alloc + 3}) {
		t.Fatalf("cancelled after reopen = %v", rs)
	}
}

// Catalogue: VIS-16.
func TestVIS16_WriterFailedState(t *testing.T) {
	dir := t.TempDir()
	g := &syncGate{}
	persistErr := errors.New("injected persist failure")
	var failPersist atomic.Bool
	s := openStoreAt(t, dir, Config{faults: &faults{
		sync: g.hook,
		persistRanges: func() error {
			if failPersist.Load() {
				return persistErr
			}
			return nil
		},
	}})
	ctx := context.Background()
	kept := mustAppend(t, s, ev("a", "s", "kept"))
	failPersist.Store(true)
	g.failNext(1, errors.New("injected fsync failure"))
	if _, err := s.Append(ctx, ev("a", "s", "lost")); !errors.Is(err, ErrBatchSyncFailed) {
		t.Fatalf("append with failed fsync = %v", err)
	}
	if _, err := s.Append(ctx, ev("a", "s", "refused")); !errors.Is(err, ErrWriterFailed) {
		t.Fatalf("append in failed state = %v, want ErrWriterFailed", err)
	}
	if err := s.BeginFence(ctx); !errors.Is(err, ErrWriterFailed) {
		t.Fatalf("fence in failed state = %v, want ErrWriterFailed", err)
	}
	if got := pollAll(t, s, engine.RegionEntity("a")); !equalSeqs(seqsOf(got), []uint64{kept.Seq}) {
		t.Fatalf("visible data in failed state: %v", seqsOf(got))
	}
	_ = s.Close()
	s2 := openStoreAt(t, dir, Config{})
	if _, err := s2.Append(ctx, ev("a", "s", "again")); err != nil {
		t.Fatalf("append after reopen: %v", err)
	}
}

// Catalogue: DM-12.
func TestDM12_ClockRange(t *testing.T) {
	s := openTestStore(t, Config{})
	for i := 0; i < 6; i++ {
		mustAppend(t, s, ev("clocked", "s", fmt.Sprint(i)))
	}
	cr, err := engine.NewClockRange(2, 4)
	if err != nil {
		t.Fatal(err)
	}
	var clocks []uint32
	for _, e := range pollAll(t, s, engine.RegionEntity("clocked").WithClock(cr)) {
		clocks = append(clocks, e.Clock)
	}
	if fmt.Sprint(clocks) != "[2 3 4]" {
		t.Fatalf("clocks = %v, want [2 3 4]", clocks)
	}
}

// Catalogue: DM-15.
func TestDM15_ReservedKindInBatch(t *testing.T) {
	s := openTestStore(t, Config{})
	before := s.Stats()
	_, err := s.AppendBatch(context.Background(), []engine.Event{
		ev("a", "s", "ok"),
		{Coordinate: engine.MustCoordinate("a", "s"), Kind: engine.KindOpenCompleted},
	})
	var rk *engine.ReservedKindError
	if !errors.Is(err, engine.ErrReservedKind) || !errors.As(err, &rk) || rk.Index != 1 || rk.Kind != engine.KindOpenCompleted {
		t.Fatalf("reserved kind = %v, want ErrReservedKind{Index: 1}", err)
	}
	if after := s.Stats(); after.Allocated != before.Allocated || after.Epoch != before.Epoch {
		t.Fatalf("rejected batch reserved or published: %+v -> %+v", before, after)
	}
}

// Catalogue: DM-16.
func TestDM16_LifecycleEvents(t *testing.T) {
	dir := t.TempDir()
	s := openStoreAt(t, dir, Config{})
	all := pollAll(t, s, engine.RegionAll())
	if len(all) != 1 || all[0].Seq != 0 || all[0].Kind != engine.KindOpenCompleted || all[0].Coordinate != engine.LifecycleCoordinate() {
		t.Fatalf("fresh journal = %+v", all)
	}
	if engine.LifecycleCoordinate().String() != "batfleet:store@batfleet:lifecycle" {
		t.Fatalf("lifecycle coordinate = %s", engine.LifecycleCoordinate())
	}
	if r := mustAppend(t, s, ev("u", "s", "x")); r.Seq != 1 {
		t.Fatalf("first user event seq = %d, want 1", r.Seq)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStoreAt(t, dir, Config{})
	all = pollAll(t, s2, engine.RegionAll())
	kinds := make([]engine.Kind, len(all))
	for i, e := range all {
		kinds[i] = e.Kind
		if e.Seq != uint64(i) {
			t.Fatalf("seq %d at position %d", e.Seq, i)
		}
	}
	want := []engine.Kind{engine.KindOpenCompleted, engine.KindData, engine.KindCloseCompleted, engine.KindOpenCompleted}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Fatalf("kinds after reopen = %v, want %v", kinds, want)
	}
	if r := mustAppend(t, s2, ev("u", "s", "y")); r.Seq != 4 {
		t.Fatalf("seq after reopen = %d, want 4", r.Seq)
	}
}

// Catalogue: DM-17.
func TestDM17_ClocksWallAndKeyedIDs(t *testing.T) {
	var wall atomic.Int64
	wall.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	s := openTestStore(t, Config{WallClock: func() time.Time { return time.UnixMilli(wall.Load()) }})
	mustAppend(t, s, ev("e", "s", "0"))
	wall.Add(-60_000) // the wall clock steps back a minute
	mustAppend(t, s, ev("e", "s", "1"))
	mustAppend(t, s, ev("other", "s", "0"))
	key := engine.DeriveIdempotencyKey("test", []byte("op-1"))
	keyed := ev("e", "s", "2")
	keyed.Key = key
	r := mustAppend(t, s, keyed)
	if r.ID != key {
		t.Fatalf("keyed id = %x, want the key %x", r.ID, key)
	}
	es := pollAll(t, s, engine.RegionEntity("e"))
	for i, e := range es {
		if e.Clock != uint32(i) {
			t.Fatalf("entity e event %d has clock %d", i, e.Clock)
		}
		if i > 0 && e.WallMs < es[i-1].WallMs {
			t.Fatalf("WallMs went back: %d then %d", es[i-1].WallMs, e.WallMs)
		}
	}
	if o := pollAll(t, s, engine.RegionEntity("other")); o[0].Clock != 0 {
		t.Fatalf("another entity's first clock = %d", o[0].Clock)
	}
	if es[2].ID != key {
		t.Fatal("delivered keyed entry's ID is not the key")
	}
}

func keyedEv(entity, payload string, key string) engine.Event {
	e := ev(entity, "s", payload)
	e.Key = engine.DeriveIdempotencyKey("test", []byte(key))
	return e
}

// Catalogue: IDM-01.
func TestIDM01_KeyedRetryReplays(t *testing.T) {
	s := openTestStore(t, Config{})
	e := keyedEv("k", "x", "op")
	first := mustAppend(t, s, e)
	if first.Replayed || first.ID != e.Key {
		t.Fatalf("first receipt = %+v", first)
	}
	before := s.Stats()
	again := mustAppend(t, s, e)
	if !again.Replayed || again.Seq != first.Seq || again.ID != first.ID {
		t.Fatalf("retry receipt = %+v, want replay of %+v", again, first)
	}
	if after := s.Stats(); after.Allocated != before.Allocated || after.Epoch != before.Epoch || after.Entries != before.Entries {
		t.Fatalf("retry wrote something: %+v -> %+v", before, after)
	}
}

// Catalogue: IDM-02.
func TestIDM02_PartialKeyedBatch(t *testing.T) {
	s := openTestStore(t, Config{})
	before := s.Stats()
	_, err := s.AppendBatch(context.Background(), []engine.Event{keyedEv("k", "a", "1"), ev("k", "s", "b")})
	if !errors.Is(err, ErrIdempotencyPartialBatch) {
		t.Fatalf("mixed batch = %v", err)
	}
	if s.Stats().Allocated != before.Allocated {
		t.Fatal("mixed batch reserved sequences")
	}
}

// Catalogue: IDM-03.
func TestIDM03_KeyedBatches(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := context.Background()
	batch := []engine.Event{keyedEv("k", "a", "1"), keyedEv("k", "b", "2"), keyedEv("k", "c", "3")}
	first, err := s.AppendBatch(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.AppendBatch(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if again[i].Seq != first[i].Seq || !again[i].Replayed {
			t.Fatalf("replay %d = %+v, want %+v", i, again[i], first[i])
		}
	}
	before := s.Stats()
	if _, err := s.AppendBatch(ctx, []engine.Event{keyedEv("k", "a", "1"), keyedEv("k", "new", "4")}); !errors.Is(err, ErrIdempotencyConflict) {
		t.Fatalf("one known + one new key = %v", err)
	}
	if _, err := s.AppendBatch(ctx, []engine.Event{keyedEv("k", "x", "5"), keyedEv("k", "y", "5")}); !errors.Is(err, ErrIdempotencyConflict) {
		t.Fatalf("key repeated in a batch = %v", err)
	}
	if s.Stats().Allocated != before.Allocated {
		t.Fatal("a rejected keyed batch reserved sequences")
	}
}

// Catalogue: IDM-04.
func TestIDM04_KeysSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s := openStoreAt(t, dir, Config{})
	e := keyedEv("k", "x", "restart")
	first := mustAppend(t, s, e)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStoreAt(t, dir, Config{})
	again := mustAppend(t, s2, e)
	if !again.Replayed || again.Seq != first.Seq {
		t.Fatalf("retry after restart = %+v, want replay of %+v", again, first)
	}
}

// Catalogue: IDM-05.
func TestIDM05_RetentionWindow(t *testing.T) {
	s := openTestStore(t, Config{IdempotencyWindow: 10})
	e := keyedEv("k", "x", "window")
	first := mustAppend(t, s, e)
	for s.Stats().Allocated < first.Seq+10 {
		mustAppend(t, s, ev("filler", "s", "f"))
	}
	if r := mustAppend(t, s, e); !r.Replayed || r.Seq != first.Seq {
		t.Fatalf("retry at allocated = s+10: %+v, want replay", r)
	}
	mustAppend(t, s, ev("filler", "s", "f")) // allocated = s+11
	r := mustAppend(t, s, e)
	if r.Replayed || r.Seq == first.Seq {
		t.Fatalf("retry at allocated = s+11: %+v, want a new append", r)
	}
}

// Catalogue: IDM-06.
func TestIDM06_FailedKeyedAppendNotRemembered(t *testing.T) {
	g := &syncGate{}
	s := openTestStore(t, Config{faults: &faults{sync: g.hook}})
	e := keyedEv("k", "x", "fails")
	g.failNext(1, errors.New("injected fsync failure"))
	if _, err := s.Append(context.Background(), e); !errors.Is(err, ErrBatchSyncFailed) {
		t.Fatalf("append = %v", err)
	}
	r := mustAppend(t, s, e)
	if r.Replayed {
		t.Fatalf("retry of a cancelled keyed append replayed: %+v", r)
	}
	if es := pollAll(t, s, engine.RegionEntity("k")); len(es) != 1 || es[0].Seq != r.Seq {
		t.Fatalf("visible keyed entries = %v", seqsOf(es))
	}
}

// Catalogue: IDM-07.
func TestIDM07_RetryRacingOriginal(t *testing.T) {
	s, release, blocker := stallInSync(t)
	ctx := context.Background()
	// the committer is busy: the next two requests queue together

	e := keyedEv("k", "x", "race")
	type result struct {
		r   engine.Receipt
		err error
	}
	results := make(chan result, 2)
	send := func() { r, err := s.Append(ctx, e); results <- result{r, err} }
	go send()
	waitFor(t, "original to queue", func() bool { return s.q.len() == 1 })
	go send()
	waitFor(t, "retry to queue", func() bool { return s.q.len() == 2 })
	release()
	if err := <-blocker; err != nil {
		t.Fatal(err)
	}
	a, b := <-results, <-results
	if a.err != nil || b.err != nil {
		t.Fatalf("errors: %v, %v", a.err, b.err)
	}
	if a.r.Seq != b.r.Seq || a.r.Replayed == b.r.Replayed {
		t.Fatalf("receipts %+v and %+v: want one original and one replay of it", a.r, b.r)
	}
	if es := pollAll(t, s, engine.RegionEntity("k")); len(es) != 1 {
		t.Fatalf("%d events for one key", len(es))
	}
}

func TestAppendValidation(t *testing.T) {
	s := openTestStore(t, Config{MaxEntryBytes: 200})
	ctx := context.Background()
	tests := []struct {
		name    string
		events  []engine.Event
		wantErr error
	}{
		{"empty batch", nil, ErrEmptyBatch},
		{"zero coordinate", []engine.Event{{Kind: engine.KindData}}, engine.ErrEmptyEntity},
		{"entry too large", []engine.Event{{Coordinate: engine.MustCoordinate("a", "s"), Kind: engine.KindData, Payload: make([]byte, 200)}}, ErrEntryTooLarge},
		{"reserved effect kind", []engine.Event{{Coordinate: engine.MustCoordinate("a", "s"), Kind: engine.KindError}}, engine.ErrReservedKind},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats().Allocated
			_, err := s.AppendBatch(ctx, tc.events)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if s.Stats().Allocated != before {
				t.Fatal("rejected append reserved sequences")
			}
		})
	}
	var ic *engine.InvalidCoordinateError
	if _, err := s.AppendBatch(ctx, []engine.Event{ev("a", "s", "ok"), {Kind: engine.KindData}}); !errors.As(err, &ic) || ic.Index != 1 {
		t.Fatalf("invalid coordinate at index 1 = %v", err)
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(t.TempDir(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := s.Append(context.Background(), ev("a", "s", "x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close = %v", err)
	}
	if _, err := s.Poll(context.Background(), engine.RegionAll(), 0, false, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("poll after close = %v", err)
	}
}

func TestPollRejectsInvalidRegion(t *testing.T) {
	s := openTestStore(t, Config{})
	_, err := s.Poll(context.Background(), engine.RegionEntity("*"), 0, false, 1)
	if !errors.Is(err, engine.ErrInvalidRegion) || !errors.Is(err, engine.ErrEntityPrefixStar) {
		t.Fatalf("poll with prefix * = %v", err)
	}
}

func TestPollUnreadablePayload(t *testing.T) {
	var bad atomic.Uint64
	s := openTestStore(t, Config{faults: &faults{readPayload: func(seq uint64) error {
		if seq == bad.Load() {
			return errors.New("injected read failure")
		}
		return nil
	}}})
	r := mustAppend(t, s, ev("a", "s", "x"))
	bad.Store(r.Seq)
	_, err := s.Poll(context.Background(), engine.RegionEntity("a"), 0, false, 10)
	var eu *EntryUnreadableError
	if !errors.Is(err, ErrEntryUnreadable) || !errors.As(err, &eu) || eu.Seq != r.Seq {
		t.Fatalf("poll of unreadable entry = %v", err)
	}
	bad.Store(^uint64(0))
	if es := pollAll(t, s, engine.RegionEntity("a")); len(es) != 1 {
		t.Fatal("entry not delivered once the fault cleared")
	}
}

// TestRegionIndexSelectsCandidates checks every index path against the
// reference predicate Region.Matches over a mixed journal.
func TestRegionIndexSelectsCandidates(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := context.Background()
	entities := []string{"alice", "alice:child", "alice:child:x", "alice2", "bob", "bob:1"}
	scopes := []string{"s1", "s2"}
	kinds := []engine.Kind{0x1001, 0x1002, 0x2001}
	var batch []engine.Event
	for i := 0; i < 300; i++ {
		batch = append(batch, engine.Event{
			Coordinate: engine.MustCoordinate(entities[i%len(entities)], scopes[i%7%len(scopes)]),
			Kind:       kinds[i%5%len(kinds)], Payload: []byte(fmt.Sprint(i)),
		})
	}
	if _, err := s.AppendBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	all := pollAll(t, s, engine.RegionAll())
	regions := []engine.Region{
		engine.RegionAll(), engine.RegionEntity("alice"), engine.RegionEntity("alice:child"), engine.RegionEntity("nobody"),
		engine.RegionScope("s2"), engine.RegionScope("nope"), engine.RegionAll().WithExact(0x1002), engine.RegionAll().WithCategory(2),
		engine.RegionAll().WithCategory(1), engine.RegionAll().WithCategory(3), engine.RegionEntity("alice").WithCategory(1), engine.RegionScope("s1").WithCategory(1),
		engine.RegionEntity("bob").WithScope("s1").WithExact(0x1001), engine.RegionAll().WithKind(engine.KindAny()),
	}
	for _, r := range regions {
		t.Run(r.Identity(), func(t *testing.T) {
			var want []uint64
			for _, e := range all {
				if r.Matches(e.Coordinate.Entity(), e.Coordinate.Scope(), e.Kind, e.Clock) {
					want = append(want, e.Seq)
				}
			}
			got := pollAll(t, s, r)
			if !equalSeqs(seqsOf(got), want) {
				t.Fatalf("got %d entries, want %d", len(got), len(want))
			}
			for _, e := range got {
				if !bytes.Equal(e.Payload, all[e.Seq].Payload) {
					t.Fatalf("seq %d payload mismatch", e.Seq)
				}
			}
		})
	}
}

func TestConcurrentAppendersAndReaders(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := context.Background()
	const writers, perWriter = 8, 40
	var wg sync.WaitGroup
	stop := make(chan struct{})
	readErr := make(chan error, 4)
	for r := 0; r < 4; r++ {
		go func() {
			pos, started := uint64(0), false
			for {
				select {
				case <-stop:
					readErr <- nil
					return
				default:
				}
				res, err := s.Poll(ctx, engine.RegionAll(), pos, started, 64)
				if err != nil {
					readErr <- err
					return
				}
				for _, e := range res.Entries {
					if started && e.Seq <= pos {
						readErr <- fmt.Errorf("seq %d after %d", e.Seq, pos)
						return
					}
					pos, started = e.Seq, true
				}
			}
		}()
	}
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				var err error
				if i%3 == 0 {
					_, err = s.AppendBatch(ctx, []engine.Event{ev(fmt.Sprintf("w:%d", w), "s", "a"), ev(fmt.Sprintf("w:%d", w), "s", "b")})
				} else {
					_, err = s.Append(ctx, ev(fmt.Sprintf("w:%d", w), "s", "c"))
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	for r := 0; r < 4; r++ {
		if err := <-readErr; err != nil {
			t.Fatal(err)
		}
	}
	got := pollAll(t, s, engine.RegionEntity("w"))
	want := writers * (perWriter + (perWriter+2)/3)
	if len(got) != want {
		t.Fatalf("%d events, want %d", len(got), want)
	}
	for w := 0; w < writers; w++ {
		es := pollAll(t, s, engine.RegionEntity(fmt.Sprintf("w:%d", w)))
		for i, e := range es {
			if e.Clock != uint32(i) {
				t.Fatalf("writer %d event %d clock %d", w, i, e.Clock)
			}
		}
	}
}

// Two cancelled fences with visible appends between them: reopening must
// keep the appends visible and the ranges as they were (recovery used to
// cancel one range spanning both fences).
func TestReopenKeepsEventsBetweenCancelledFences(t *testing.T) {
	dir := t.TempDir()
	s := openStoreAt(t, dir, Config{})
	ctx := context.Background()
	cancelledFence := func() {
		t.Helper()
		if err := s.BeginFence(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendFenced(ctx, []engine.Event{ev("f", "s", "hidden"), ev("f", "s", "hidden")}); err != nil {
			t.Fatal(err)
		}
		if err := s.CancelFence(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cancelledFence()
	var want []uint64
	for i := 0; i < 5; i++ {
		want = append(want, mustAppend(t, s, ev("v", "s", "visible")).Seq)
	}
	cancelledFence()
	ranges := s.CancelledRanges()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		s2, err := Open(dir, Config{})
		if err != nil {
			t.Fatal(err)
		}
		if got := seqsOf(pollAll(t, s2, engine.RegionEntity("v"))); !equalSeqs(got, want) {
			t.Fatalf("reopen %d: visible %v, want %v", round, got, want)
		}
		if got := s2.CancelledRanges(); fmt.Sprint(got) != fmt.Sprint(ranges) {
			t.Fatalf("reopen %d: cancelled %v, want %v", round, got, ranges)
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A caller whose ctx ends while its append is still queued gets the ctx's
// error, and the append is dropped before anything is reserved: it is
// never written, no seq is spent, nothing is cancelled. The same for a
// fenced append and a fence operation.
func TestAppend_AbandonedWhileQueuedIsNeverWritten(t *testing.T) {
	s, release, blocker := stallInSync(t)
	ctx := context.Background()
	// the committer is in a sync: what follows stays queued

	abandon, cancel := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { _, err := s.Append(abandon, ev("abandoned", "s", "x")); done <- err }()
	go func() { done <- s.BeginFence(abandon) }()
	waitFor(t, "both requests to queue", func() bool { return s.q.len() == 2 })
	cancel()
	for range 2 {
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("abandoned request returned %v, want context.Canceled", err)
		}
	}
	allocated, _ := s.gate.frontiers()
	release()
	if err := <-blocker; err != nil {
		t.Fatal(err)
	}
	after := mustAppend(t, s, ev("after", "s", "x"))
	if after.Seq != allocated {
		t.Fatalf("next append got seq %d, want %d: the abandoned append reserved seqs", after.Seq, allocated)
	}
	if es := pollAll(t, s, engine.RegionEntity("abandoned")); len(es) != 0 {
		t.Fatalf("abandoned append is visible: %v", seqsOf(es))
	}
	if rs := s.CancelledRanges(); len(rs) != 0 {
		t.Fatalf("cancelled ranges %v, want none", rs)
	}
	if err := s.BeginFence(ctx); err != nil {
		t.Fatalf("a fence began by the abandoned BeginFence: %v", err)
	}
}

// A fenced retry of keyed events that are already visible is answered at
// once: AppendFenced returns a handle whose Wait gives the original
// receipts (found in review: it returned a nil handle and no error).
func TestAppendFenced_KeyedRetryReplays(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := context.Background()
	e := keyedEv("fenced-retry", "s", "x")
	if err := s.BeginFence(ctx); err != nil {
		t.Fatal(err)
	}
	fa, err := s.AppendFenced(ctx, []engine.Event{e})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CommitFence(ctx); err != nil {
		t.Fatal(err)
	}
	orig, err := fa.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.BeginFence(ctx); err != nil {
		t.Fatal(err)
	}
	retry, err := s.AppendFenced(ctx, []engine.Event{e})
	if err != nil || retry == nil {
		t.Fatalf("fenced retry: handle %v, error %v; want a handle", retry, err)
	}
	got, err := retry.Wait(ctx)
	if err != nil || len(got) != 1 || got[0].Seq != orig[0].Seq || !got[0].Replayed {
		t.Fatalf("fenced retry Wait = %+v, %v; want seq %d replayed", got, err, orig[0].Seq)
	}
}

// stallInSync opens a store and holds its committer inside the fsync of an
// append (of entity "other"), so that what is sent next stays queued.
// release lets the sync finish; blocker then receives that append's error.
func stallInSync(t *testing.T) (s *Store, release func(), blocker chan error) {
	t.Helper()
	g := &syncGate{}
	s = openTestStore(t, Config{faults: &faults{sync: g.hook}, GroupCommitLinger: -1})
	release = g.blockNext()
	blocker = make(chan error, 1)
	go func() { _, err := s.Append(context.Background(), ev("other", "s", "x")); blocker <- err }()
	<-g.entered
	return s, release, blocker
}
