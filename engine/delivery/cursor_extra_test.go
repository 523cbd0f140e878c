package delivery

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/journal"
)

// More cursor tests: gap buffer configuration, Wait and cancellation,
// polling through a Streamer.

// TestGAPExtra_CapacityZeroDisables: WithGapConfig{0} disables the buffer
// (also one that was enabled and held observations): TakeGaps stays
// empty while observations happen; a refused config (< 0) changes
// nothing, buffer contents included.
func TestGAPExtra_CapacityZeroDisables(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	r0 := mustAppend(t, s, ev("g", "s", "r0"))
	h1 := curCancelledFence(t, s, []engine.Event{ev("g", "s", "h1")})
	r2 := mustAppend(t, s, ev("g", "s", "r2"))
	curCancelledFence(t, s, []engine.Event{ev("g", "s", "h3")})
	r4 := mustAppend(t, s, ev("g", "s", "r4"))

	c := curNewCursor(t, s, engine.RegionEntity("g"), 0)
	if err := c.WithGapConfig(GapConfig{Capacity: 0}); err != nil {
		t.Fatalf("WithGapConfig(0) = %v", err)
	}
	if es := curPollBatch(t, c, 2); !equalSeqs(seqsOf(es), []uint64{r0.Seq, r2.Seq}) {
		t.Fatalf("PollBatch(2) = %v", seqsOf(es))
	}
	curCheckGaps(t, "capacity 0", c.TakeGaps(), nil)

	// Enabled, one observation held; a refused config keeps it.
	c.Restore(0, false)
	if err := c.WithGapConfig(GapConfig{Capacity: 2}); err != nil {
		t.Fatal(err)
	}
	curPollBatch(t, c, 2)
	if err := c.WithGapConfig(GapConfig{Capacity: -1}); !errors.Is(err, engine.ErrInvalidConfig) {
		t.Fatalf("WithGapConfig(-1) = %v, want ErrInvalidConfig", err)
	}
	curCheckGaps(t, "after a refused config", c.TakeGaps(), []GapObservation{
		{Expected: h1.Start, Delivered: r2.Seq, Ranges: []engine.Range{h1}},
	})

	// Disabled again: the next observation is not kept.
	c.Restore(0, false)
	curPollBatch(t, c, 2)
	if err := c.WithGapConfig(GapConfig{Capacity: 0}); err != nil {
		t.Fatal(err)
	}
	if es := curPollBatch(t, c, 8); !equalSeqs(seqsOf(es), []uint64{r4.Seq}) {
		t.Fatalf("PollBatch(8) = %v, want [%d]", seqsOf(es), r4.Seq)
	}
	curCheckGaps(t, "disabled after use", c.TakeGaps(), nil)
	if c.Region() != engine.RegionEntity("g") {
		t.Fatalf("Region() = %v", c.Region())
	}
}

// TestCUR11_WaitCancelledContext: Wait with a context already cancelled
// returns nothing and no error, even with entries pending, and leaves the
// state alone; a cancellation during a park ends Wait at once, empty;
// a poll error with a live context is returned.
// Catalogue: CUR-11 (SPEC §6.3: cancellation returns empty).
func TestCUR11_WaitCancelledContext(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	pending := mustAppend(t, s, ev("w", "s", "pending"))
	c := curNewCursor(t, s, engine.RegionEntity("w"), 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	es, err := c.Wait(ctx, 8, 10*time.Second)
	if err != nil || len(es) != 0 {
		t.Fatalf("Wait(cancelled) = (%v, %v), want empty and nil", seqsOf(es), err)
	}
	if d := time.Since(start); d >= 5*time.Second {
		t.Fatalf("Wait(cancelled) took %v, want at once", d)
	}
	curCheckpoint(t, c, 0, false)
	if es := curPollBatch(t, c, 8); !equalSeqs(seqsOf(es), []uint64{pending.Seq}) {
		t.Fatalf("PollBatch after the cancelled Wait = %v, want [%d]", seqsOf(es), pending.Seq)
	}

	// A source that ignores the context in Poll: the cancellation of a
	// parked Wait still ends it.
	src := &curParkingSource{curStaticSource: curStaticSource{visible: 1}, parked: make(chan struct{}, 1)}
	sc := curNewCursor(t, src, engine.RegionAll(), 0)
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		es, err := sc.Wait(ctx, 1, time.Hour)
		if len(es) != 0 {
			err = errors.New("entries from an empty source")
		}
		done <- err
	}()
	select {
	case <-src.parked:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait never parked")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait cancelled while parked = %v, want empty and nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after its context was cancelled")
	}
	if n := src.parks.Load(); n != 1 {
		t.Fatalf("%d parks, want 1 (no poll or park after the cancellation)", n)
	}

	// A poll error with a live context is Wait's error.
	bad := newFltSource(s)
	boom := errors.New("injected: poll failed")
	bad.set(func(f *fltSource) { f.pollErrs = []error{boom} })
	bc := curNewCursor(t, bad, engine.RegionEntity("w"), 0)
	if es, err := bc.Wait(context.Background(), 1, time.Second); !errors.Is(err, boom) || len(es) != 0 {
		t.Fatalf("Wait with a failing poll = (%v, %v), want %v", seqsOf(es), err, boom)
	}
	curCheckpoint(t, bc, 0, false)
}

// curParkingSource is a curStaticSource whose Park waits for its context
// (or timeout), signalling parked as it starts.
type curParkingSource struct {
	curStaticSource
	parks  atomic.Int64
	parked chan struct{}
}

func (s *curParkingSource) Park(ctx context.Context, _ engine.Snapshot, timeout time.Duration) bool {
	s.parks.Add(1)
	select {
	case s.parked <- struct{}{}:
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return false
}

// curStreamSource is a Streamer over a journal: it counts the streams it
// opens and closes and the polls made through them.
type curStreamSource struct {
	*journal.Store
	mu                    sync.Mutex
	opened, closed, polls int
	direct                atomic.Int64
	regions               []engine.Region
}

type curStream struct {
	src    *curStreamSource
	region engine.Region
}

func (s *curStreamSource) Stream(region engine.Region) Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opened++
	s.regions = append(s.regions, region)
	return &curStream{src: s, region: region}
}

func (s *curStreamSource) Poll(ctx context.Context, region engine.Region, position uint64, started bool, max int) (engine.PollResult, error) {
	s.direct.Add(1)
	return s.Store.Poll(ctx, region, position, started, max)
}

func (st *curStream) Poll(ctx context.Context, position uint64, started bool, max int) (engine.PollResult, error) {
	st.src.mu.Lock()
	st.src.polls++
	st.src.mu.Unlock()
	return st.src.Store.Poll(ctx, st.region, position, started, max)
}

func (st *curStream) Close() {
	st.src.mu.Lock()
	st.src.closed++
	st.src.mu.Unlock()
}

func (s *curStreamSource) counts() (opened, closed, polls int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened, s.closed, s.polls
}

// TestCURExtra_StreamerPerCursor: a cursor on a Streamer opens one stream
// for its region at the first poll and polls only through it; Close
// releases it (twice is harmless) and a later poll opens a new one; a
// worker closes its cursor's stream when it exits.
func TestCURExtra_StreamerPerCursor(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	var want []uint64
	for i := 0; i < 3; i++ {
		want = append(want, mustAppend(t, s, ev("st", "s", "x")).Seq)
	}
	src := &curStreamSource{Store: s}
	region := engine.RegionEntity("st")
	c := curNewCursor(t, src, region, 0)
	if o, _, _ := src.counts(); o != 0 {
		t.Fatalf("%d streams before the first poll", o)
	}
	var got []uint64
	for i := 0; i < 2; i++ {
		got = append(got, seqsOf(curPollBatch(t, c, 1))...)
	}
	if o, cl, p := src.counts(); o != 1 || cl != 0 || p != 2 || src.direct.Load() != 0 || src.regions[0] != region {
		t.Fatalf("streams opened %d, closed %d, stream polls %d, direct polls %d: want 1, 0, 2, 0 on %v",
			o, cl, p, src.direct.Load(), region)
	}
	c.Close()
	c.Close()
	if o, cl, _ := src.counts(); o != 1 || cl != 1 {
		t.Fatalf("after Close: opened %d, closed %d; want 1, 1", o, cl)
	}
	got = append(got, seqsOf(curPollBatch(t, c, 8))...)
	if !equalSeqs(got, want) {
		t.Fatalf("polled %v, want %v", got, want)
	}
	if o, _, _ := src.counts(); o != 2 {
		t.Fatalf("a poll after Close opened %d streams in all, want 2", o)
	}

	w, err := StartWorker(context.Background(), src, region, DefaultWorkerConfig(),
		func(context.Context, []engine.Entry, *Delivery) Action { return Stop })
	if err != nil {
		t.Fatal(err)
	}
	if err := fltJoin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	if o, cl, _ := src.counts(); o != 3 || cl != 2 || src.direct.Load() != 0 {
		t.Fatalf("after the worker: opened %d, closed %d, direct polls %d; want 3, 2, 0", o, cl, src.direct.Load())
	}
}

// TestCUR07_PollBatchZeroAsksNothing: PollBatch(0) (or less) returns
// nothing without a round trip to the source (a remote one would pay a
// request for nothing); Wait(0, …) neither polls nor parks.
// Catalogue: CUR-07.
func TestCUR07_PollBatchZeroAsksNothing(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	mustAppend(t, s, ev("z", "s", "1"))
	src := &curCountingSource{Source: s}
	c := curNewCursor(t, src, engine.RegionEntity("z"), 0)
	for _, max := range []int{0, -1} {
		if es := curPollBatch(t, c, max); len(es) != 0 {
			t.Fatalf("PollBatch(%d) = %v", max, seqsOf(es))
		}
		if es, err := c.Wait(context.Background(), max, time.Second); len(es) != 0 || err != nil {
			t.Fatalf("Wait(%d) = (%v, %v)", max, seqsOf(es), err)
		}
	}
	if p, k := src.polls.Load(), src.parks.Load(); p != 0 || k != 0 {
		t.Fatalf("%d polls and %d parks for max ≤ 0, want none", p, k)
	}
	curCheckpoint(t, c, 0, false)
}

// TestGAP06_JumpsWithoutCancelledRangeAmongOthers: within one poll that
// carries cancelled ranges, a jump none of them explains is no
// observation (only the explained jump is).
// Catalogue: GAP-06.
func TestGAP06_JumpsWithoutCancelledRangeAmongOthers(t *testing.T) {
	got := observeGaps(0, true, curEntries(3, 5, 9), []engine.Range{{Start: 4, End: 5}})
	curCheckGaps(t, "observeGaps", got, []GapObservation{
		{Expected: 4, Delivered: 5, Ranges: []engine.Range{{Start: 4, End: 5}}},
	})
	// A range wholly before the poll's expected seq explains nothing.
	curCheckGaps(t, "stale range", observeGaps(5, true, curEntries(8), []engine.Range{{Start: 2, End: 6}}), nil)
}

// TestGAP04_EmptyCancelledRangeIsNoClip: a clip is kept only if its start
// is below its end (SPEC §7 rule 4), so an empty range in a source's
// cancelled list (a remote reply is not trusted to be normalised)
// explains no jump.
// Catalogue: GAP-04.
func TestGAP04_EmptyCancelledRangeIsNoClip(t *testing.T) {
	got := observeGaps(1, true, curEntries(8), []engine.Range{{Start: 5, End: 5}})
	curCheckGaps(t, "empty range only", got, nil)
	got = observeGaps(1, true, curEntries(8), []engine.Range{{Start: 3, End: 3}, {Start: 5, End: 6}})
	curCheckGaps(t, "empty range beside a real one", got, []GapObservation{
		{Expected: 2, Delivered: 8, Ranges: []engine.Range{{Start: 5, End: 6}}},
	})
}

// curWaitingSource is a Streamer over a journal whose streams hold polls
// (WaitingStream, as a fleet client's held pulls do): PollWait polls,
// and when nothing matches parks on the journal for up to wait and polls
// again. It records the calls of each kind, and counts parks on the
// source itself.
type curWaitingSource struct {
	*journal.Store
	mu          sync.Mutex
	polls       int
	waits       []time.Duration
	sourceParks atomic.Int64
	holding     chan struct{} // signalled as each PollWait starts waiting
}

type curWaitingStream struct {
	src    *curWaitingSource
	region engine.Region
}

func (s *curWaitingSource) Stream(region engine.Region) Stream {
	return &curWaitingStream{src: s, region: region}
}

func (s *curWaitingSource) Park(ctx context.Context, snap engine.Snapshot, timeout time.Duration) bool {
	s.sourceParks.Add(1)
	return s.Store.Park(ctx, snap, timeout)
}

func (s *curWaitingSource) calls() (polls int, waits []time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.polls, append([]time.Duration(nil), s.waits...)
}

func (st *curWaitingStream) Poll(ctx context.Context, position uint64, started bool, max int) (engine.PollResult, error) {
	st.src.mu.Lock()
	st.src.polls++
	st.src.mu.Unlock()
	return st.src.Store.Poll(ctx, st.region, position, started, max)
}

func (st *curWaitingStream) PollWait(ctx context.Context, position uint64, started bool, max int, wait time.Duration) (engine.PollResult, error) {
	st.src.mu.Lock()
	st.src.waits = append(st.src.waits, wait)
	st.src.mu.Unlock()
	res, err := st.src.Store.Poll(ctx, st.region, position, started, max)
	if err != nil || len(res.Entries) > 0 {
		return res, err
	}
	select {
	case st.src.holding <- struct{}{}:
	default:
	}
	st.src.Store.Park(ctx, res.Snapshot, wait)
	return st.src.Store.Poll(ctx, st.region, position, started, max)
}

func (st *curWaitingStream) Close() {}

// TestCURExtra_WaitingStreamHolds: on a stream that can hold polls, a
// waiting cursor (Wait, a worker) holds its poll at the source for the
// time it would have parked, and never parks on the source; a plain
// PollBatch, and a Wait with timeout 0 (one poll), ask without holding.
func TestCURExtra_WaitingStreamHolds(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	src := &curWaitingSource{Store: s, holding: make(chan struct{}, 1)}
	region := engine.RegionEntity("hold")
	c := curNewCursor(t, src, region, 0)

	if es := curPollBatch(t, c, 8); len(es) != 0 {
		t.Fatalf("PollBatch on an empty region = %v", seqsOf(es))
	}
	if es, err := c.Wait(context.Background(), 8, 0); len(es) != 0 || err != nil {
		t.Fatalf("Wait(8, 0) = (%v, %v)", seqsOf(es), err)
	}
	if polls, waits := src.calls(); polls != 2 || len(waits) != 0 {
		t.Fatalf("PollBatch and Wait(…, 0): %d polls, held %v; want 2 plain polls, no hold", polls, waits)
	}

	// Wait holds for the rest of its timeout, and is answered by the hold.
	type result struct {
		es  []engine.Entry
		err error
	}
	done := make(chan result, 1)
	go func() {
		es, err := c.Wait(context.Background(), 8, 5*time.Second)
		done <- result{es, err}
	}()
	select {
	case <-src.holding:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait never held a poll")
	}
	seq := mustAppend(t, s, ev("hold", "s", "x")).Seq
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after a matching append")
	}
	if r.err != nil || !equalSeqs(seqsOf(r.es), []uint64{seq}) {
		t.Fatalf("Wait = (%v, %v), want [%d]", seqsOf(r.es), r.err, seq)
	}
	polls, waits := src.calls()
	if polls != 2 || len(waits) == 0 || waits[0] <= 0 || waits[0] > 5*time.Second {
		t.Fatalf("Wait(8, 5s): %d plain polls, holds %v; want holds of at most 5s and no plain poll", polls, waits)
	}

	// A worker holds for its idle timeout.
	cfg := DefaultWorkerConfig()
	cfg.IdleTimeout = 20 * time.Millisecond
	var got atomic.Int64
	w, err := StartWorker(context.Background(), src, region, cfg, func(_ context.Context, b []engine.Entry, _ *Delivery) Action {
		got.Add(int64(len(b)))
		return Continue
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.StopAndJoin() })
	waitFor(t, "the worker to deliver", func() bool { return got.Load() == 1 })
	held := len(waits)
	// Three holds: the first delivered, the second ran out empty, and the
	// worker held again instead of parking.
	waitFor(t, "the worker to hold three times", func() bool {
		_, ws := src.calls()
		return len(ws) >= held+3
	})
	if err := w.StopAndJoin(); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	polls, waits = src.calls()
	for _, d := range waits[held:] {
		if d != cfg.IdleTimeout {
			t.Fatalf("the worker held for %v, want its idle timeout %v", d, cfg.IdleTimeout)
		}
	}
	if polls != 2 || src.sourceParks.Load() != 0 {
		t.Fatalf("%d plain polls, %d parks on the source: a holding cursor neither polls plainly nor parks", polls, src.sourceParks.Load())
	}
}
