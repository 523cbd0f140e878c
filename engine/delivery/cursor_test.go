package delivery

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/journal"
)

// Tests for the cursor (SPEC §6, catalogue CUR-01..CUR-15) and gap
// observations (SPEC §7, catalogue GAP-01..GAP-09, GAP-11). Journals start
// with OPEN_COMPLETED at seq 0, so user events start at seq 1.

// curNewCursor returns a cursor on region with a gap buffer of capacity
// (0 leaves it disabled).
func curNewCursor(t testing.TB, src Source, region engine.Region, capacity int) *Cursor {
	t.Helper()
	c, err := NewCursor(src, region)
	if err != nil {
		t.Fatalf("NewCursor(%s): %v", region, err)
	}
	if capacity != 0 {
		if err := c.WithGapConfig(GapConfig{Capacity: capacity}); err != nil {
			t.Fatalf("WithGapConfig(%d): %v", capacity, err)
		}
	}
	return c
}

// curCancelledFence stages events in a fence (one AppendFenced call per
// group), cancels it and returns the cancelled range those writes held.
func curCancelledFence(t testing.TB, s *journal.Store, groups ...[]engine.Event) engine.Range {
	t.Helper()
	ctx := context.Background()
	before := s.Stats().Allocated
	if err := s.BeginFence(ctx); err != nil {
		t.Fatalf("BeginFence: %v", err)
	}
	var staged []*journal.FencedAppend
	for _, g := range groups {
		fa, err := s.AppendFenced(ctx, g)
		if err != nil {
			t.Fatalf("AppendFenced: %v", err)
		}
		staged = append(staged, fa)
	}
	if err := s.CancelFence(ctx); err != nil {
		t.Fatalf("CancelFence: %v", err)
	}
	for _, fa := range staged {
		if _, err := fa.Wait(ctx); !errors.Is(err, journal.ErrFenceCancelled) {
			t.Fatalf("fenced append after cancel = %v, want ErrFenceCancelled", err)
		}
	}
	rg := engine.Range{Start: before, End: s.Stats().Allocated}
	if !curCovered(s.CancelledRanges(), rg) {
		t.Fatalf("fence range %v not in cancelled ranges %v", rg, s.CancelledRanges())
	}
	return rg
}

// curCovered reports whether r lies inside one range of rs.
func curCovered(rs []engine.Range, r engine.Range) bool {
	for _, c := range rs {
		if c.Start <= r.Start && r.End <= c.End {
			return true
		}
	}
	return false
}

// curPollBatch is PollBatch that fails the test on an error.
func curPollBatch(t testing.TB, c *Cursor, max int) []engine.Entry {
	t.Helper()
	es, err := c.PollBatch(context.Background(), max)
	if err != nil {
		t.Fatalf("PollBatch(%d): %v", max, err)
	}
	return es
}

// curCheckGaps fails unless got equals want (nil and empty are equal).
func curCheckGaps(t testing.TB, what string, got, want []GapObservation) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: gaps = %+v, want %+v", what, got, want)
	}
}

// curCheckpoint fails unless the cursor's state is (pos, started).
func curCheckpoint(t testing.TB, c *Cursor, pos uint64, started bool) {
	t.Helper()
	if p, s := c.Checkpoint(); p != pos || s != started {
		t.Fatalf("Checkpoint() = (%d, %v), want (%d, %v)", p, s, pos, started)
	}
}

// curEntries builds entries at seqs on a:s, for unit tests of observeGaps.
func curEntries(seqs ...uint64) []engine.Entry {
	out := make([]engine.Entry, len(seqs))
	for i, s := range seqs {
		out[i] = engine.Entry{Seq: s, Kind: engine.KindData, Coordinate: engine.MustCoordinate("a", "s")}
	}
	return out
}

// curCountingSource wraps a Source and counts polls and parks, recording
// each park's timeout, so tests can see where a Wait is without sleeping.
type curCountingSource struct {
	Source
	polls atomic.Int64
	parks atomic.Int64

	// afterPoll, if set, runs after every poll (before the cursor sees
	// the result).
	afterPoll func(engine.PollResult)

	mu       sync.Mutex
	timeouts []time.Duration
}

func (c *curCountingSource) Poll(ctx context.Context, region engine.Region, position uint64, started bool, max int) (engine.PollResult, error) {
	c.polls.Add(1)
	res, err := c.Source.Poll(ctx, region, position, started, max)
	if c.afterPoll != nil {
		c.afterPoll(res)
	}
	return res, err
}

func (c *curCountingSource) Park(ctx context.Context, snap engine.Snapshot, timeout time.Duration) bool {
	c.mu.Lock()
	c.timeouts = append(c.timeouts, timeout)
	c.mu.Unlock()
	c.parks.Add(1)
	return c.Source.Park(ctx, snap, timeout)
}

func (c *curCountingSource) parkTimeouts() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.timeouts...)
}

// curStaticSource is a Source over a fixed set of visible entries and
// cancelled ranges, following the pull primitive of SPEC §6.2. It exists
// for situations a real journal cannot hold (seq 0 is always the open
// event, so it can never be cancelled).
type curStaticSource struct {
	entries   []engine.Entry // ascending, visible
	cancelled []engine.Range // normalised
	visible   uint64
}

func (s *curStaticSource) Poll(_ context.Context, region engine.Region, position uint64, started bool, max int) (engine.PollResult, error) {
	res := engine.PollResult{Visible: s.visible}
	expected := uint64(0)
	if started {
		expected = position + 1
	}
	for _, e := range s.entries {
		if len(res.Entries) == max {
			break
		}
		if e.Seq >= expected && e.Seq < s.visible &&
			region.Matches(e.Coordinate.Entity(), e.Coordinate.Scope(), e.Kind, e.Clock) {
			res.Entries = append(res.Entries, e)
		}
	}
	end := s.visible
	if n := len(res.Entries); n > 0 {
		end = res.Entries[n-1].Seq + 1
	}
	res.Cancelled = append([]engine.Range(nil), engine.Intersecting(s.cancelled, expected, end)...)
	return res, nil
}

func (s *curStaticSource) Latest() engine.Snapshot { return engine.Snapshot{} }

func (s *curStaticSource) Park(context.Context, engine.Snapshot, time.Duration) bool { return false }

func (s *curStaticSource) Info(context.Context) (engine.SourceInfo, error) {
	return engine.SourceInfo{Visible: s.visible}, nil
}

// Catalogue: CUR-01.
func TestCUR01_FreshCursorFirstPollIsSeqZero(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	c := curNewCursor(t, s, engine.RegionAll(), 0)
	e, ok, err := c.Poll(context.Background())
	if err != nil || !ok {
		t.Fatalf("first poll = (%v, %v)", ok, err)
	}
	if e.Seq != 0 || e.Kind != engine.KindOpenCompleted || e.Coordinate != engine.LifecycleCoordinate() {
		t.Fatalf("first poll returned seq %d kind %v at %s, want seq 0 OPEN_COMPLETED", e.Seq, e.Kind, e.Coordinate)
	}
	curCheckpoint(t, c, 0, true)
}

// Catalogue: CUR-02.
func TestCUR02_PollToExhaustion(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	mustAppend(t, s, ev("other", "s", "noise"))
	var want []uint64
	for i := 0; i < 5; i++ {
		want = append(want, mustAppend(t, s, ev("entity:cur", "s", fmt.Sprint(i))).Seq)
	}
	c := curNewCursor(t, s, engine.RegionEntity("entity:cur"), 0)
	var got []engine.Entry
	for {
		e, ok, err := c.Poll(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got = append(got, e)
		if len(got) > 5 {
			t.Fatalf("more than 5 entries: %v", seqsOf(got))
		}
	}
	if !equalSeqs(seqsOf(got), want) {
		t.Fatalf("got %v, want %v", seqsOf(got), want)
	}
	for i, e := range got {
		if string(e.Payload) != fmt.Sprint(i) {
			t.Fatalf("entry %d payload %q", i, e.Payload)
		}
	}
}

// Catalogue: CUR-03.
func TestCUR03_ExactBatchSizing(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	for i := 0; i < 10; i++ {
		mustAppend(t, s, ev("sized", "s", fmt.Sprint(i)))
	}
	tests := []struct {
		name     string
		requests []int
		want     []int
	}{
		{"3,3,100,100", []int{3, 3, 100, 100}, []int{3, 3, 4, 0}},
		{"3,100,10", []int{3, 100, 10}, []int{3, 7, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := curNewCursor(t, s, engine.RegionEntity("sized"), 0)
			var all []uint64
			for i, max := range tc.requests {
				es := curPollBatch(t, c, max)
				if len(es) != tc.want[i] {
					t.Fatalf("request %d (max %d) returned %d, want %d", i, max, len(es), tc.want[i])
				}
				all = append(all, seqsOf(es)...)
			}
			if len(all) != 10 {
				t.Fatalf("%d seqs in total, want 10", len(all))
			}
			for i := 1; i < len(all); i++ {
				if all[i] <= all[i-1] {
					t.Fatalf("seqs not strictly increasing: %v", all)
				}
			}
		})
	}
}

// Catalogue: CUR-04.
func TestCUR04_EmptyRegionStaysEmpty(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	mustAppend(t, s, ev("busy", "s", "x"))
	curCancelledFence(t, s, []engine.Event{ev("busy", "s", "hidden")})
	mustAppend(t, s, ev("busy", "s", "y"))
	c := curNewCursor(t, s, engine.RegionEntity("nobody"), 4)
	for i := 0; i < 6; i++ {
		if i%2 == 0 {
			if _, ok, err := c.Poll(context.Background()); ok || err != nil {
				t.Fatalf("Poll on an empty region = (%v, %v)", ok, err)
			}
		} else if es := curPollBatch(t, c, 10); len(es) != 0 {
			t.Fatalf("PollBatch(10) on an empty region = %v", seqsOf(es))
		}
		curCheckpoint(t, c, 0, false)
	}
	curCheckGaps(t, "empty region", c.TakeGaps(), nil)
	r := mustAppend(t, s, ev("nobody", "s", "finally"))
	if es := curPollBatch(t, c, 10); !equalSeqs(seqsOf(es), []uint64{r.Seq}) {
		t.Fatalf("after an append: %v, want [%d]", seqsOf(es), r.Seq)
	}
}

// Catalogue: CUR-05.
func TestCUR05_ExhaustionIsNotSticky(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	mustAppend(t, s, ev("ns", "s", "1"))
	mustAppend(t, s, ev("ns", "s", "2"))
	c := curNewCursor(t, s, engine.RegionEntity("ns"), 0)
	if es := curPollBatch(t, c, 10); len(es) != 2 {
		t.Fatalf("drain = %v, want 2 entries", seqsOf(es))
	}
	if es := curPollBatch(t, c, 10); len(es) != 0 {
		t.Fatalf("drained cursor returned %v", seqsOf(es))
	}
	third := mustAppend(t, s, ev("ns", "s", "3"))
	e, ok, err := c.Poll(context.Background())
	if err != nil || !ok || e.Seq != third.Seq {
		t.Fatalf("poll after a 3rd append = (%d, %v, %v), want seq %d", e.Seq, ok, err, third.Seq)
	}
}

// Catalogue: CUR-06.
func TestCUR06_CursorBeforeAnyUserEvent(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	c := curNewCursor(t, s, engine.RegionEntity("early"), 0)
	var want []uint64
	for i := 0; i < 3; i++ {
		want = append(want, mustAppend(t, s, ev("early", "s", fmt.Sprint(i))).Seq)
	}
	if es := curPollBatch(t, c, 10); !equalSeqs(seqsOf(es), want) {
		t.Fatalf("PollBatch(10) = %v, want %v", seqsOf(es), want)
	}
}

// Catalogue: CUR-07.
func TestCUR07_PollBatchZero(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	mustAppend(t, s, ev("z", "s", "1"))
	mustAppend(t, s, ev("z", "s", "2"))
	c := curNewCursor(t, s, engine.RegionEntity("z"), 0)
	for _, max := range []int{0, -1} {
		if es := curPollBatch(t, c, max); len(es) != 0 {
			t.Fatalf("fresh PollBatch(%d) = %v", max, seqsOf(es))
		}
		curCheckpoint(t, c, 0, false)
	}
	first := curPollBatch(t, c, 1)
	if len(first) != 1 {
		t.Fatalf("PollBatch(1) = %v", seqsOf(first))
	}
	if es := curPollBatch(t, c, 0); len(es) != 0 {
		t.Fatalf("started PollBatch(0) = %v", seqsOf(es))
	}
	curCheckpoint(t, c, first[0].Seq, true)
}

// Catalogue: CUR-08.
func TestCUR08_ConcurrentAppendersDrainingCursor(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	ctx := context.Background()
	const writers, each = 4, 25
	c := curNewCursor(t, s, engine.RegionEntity("conc"), 0)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := s.Append(ctx, ev(fmt.Sprintf("conc:%d", w), "s", fmt.Sprintf("%d/%d", w, i))); err != nil {
					t.Errorf("writer %d append %d: %v", w, i, err)
					return
				}
			}
		}(w)
	}
	defer wg.Wait() // no appender outlives the test, even on failure
	var got []engine.Entry
	seen := map[uint64]bool{}
	payloads := map[string]bool{}
	take := func(es []engine.Entry) {
		for _, e := range es {
			if seen[e.Seq] {
				t.Fatalf("seq %d delivered twice", e.Seq)
			}
			if n := len(got); n > 0 && e.Seq <= got[n-1].Seq {
				t.Fatalf("seq %d after %d", e.Seq, got[n-1].Seq)
			}
			seen[e.Seq] = true
			payloads[string(e.Payload)] = true
			got = append(got, e)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < writers*each {
		if time.Now().After(deadline) {
			t.Fatalf("drained %d of %d events before the deadline", len(got), writers*each)
		}
		es := curPollBatch(t, c, 50)
		if len(es) > 50 {
			t.Fatalf("PollBatch(50) returned %d", len(es))
		}
		take(es)
		if len(es) == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	wg.Wait()
	take(curPollBatch(t, c, 50))
	if len(got) != writers*each || len(payloads) != writers*each {
		t.Fatalf("%d events (%d distinct payloads), want exactly %d", len(got), len(payloads), writers*each)
	}
	if want := pollAll(t, s, engine.RegionEntity("conc")); !equalSeqs(seqsOf(got), seqsOf(want)) {
		t.Fatal("cursor deliveries differ from the journal's contents")
	}
}

// Catalogue: CUR-09.
func TestCUR09_OtherEntitySkippedWithoutObservation(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	var wantA []uint64
	for i := 0; i < 3; i++ {
		wantA = append(wantA, mustAppend(t, s, ev("A", "s", fmt.Sprint(i))).Seq)
		mustAppend(t, s, ev("B", "s", fmt.Sprint(i)))
	}
	c := curNewCursor(t, s, engine.RegionEntity("A"), 4)
	var got []engine.Entry
	for {
		es, gaps, _, err := c.pollBatch(context.Background(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		curCheckGaps(t, fmt.Sprintf("batch at seq %d", es[0].Seq), gaps, nil)
		got = append(got, es...)
	}
	if !equalSeqs(seqsOf(got), wantA) {
		t.Fatalf("A cursor got %v, want %v", seqsOf(got), wantA)
	}
	for _, e := range got {
		if e.Coordinate.Entity() != "A" {
			t.Fatalf("A cursor got %s", e.Coordinate)
		}
	}
	curCheckGaps(t, "TakeGaps", c.TakeGaps(), nil)
}

// Catalogue: CUR-10.
func TestCUR10_PollBatchOneStepsOverCancelledRange(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	first := mustAppend(t, s, ev("x", "room", "first"))
	hidden := curCancelledFence(t, s, []engine.Event{ev("x", "room", "h1"), ev("y", "room", "h2"), ev("x", "room", "h3")})
	if hidden != (engine.Range{Start: 2, End: 5}) {
		t.Fatalf("fence range = %v, want [2, 5)", hidden)
	}
	later := mustAppend(t, s, ev("y", "room", "later"))
	c := curNewCursor(t, s, engine.RegionScope("room"), 0)
	if es := curPollBatch(t, c, 1); !equalSeqs(seqsOf(es), []uint64{first.Seq}) {
		t.Fatalf("first PollBatch(1) = %v, want [%d]", seqsOf(es), first.Seq)
	}
	if es := curPollBatch(t, c, 1); !equalSeqs(seqsOf(es), []uint64{later.Seq}) {
		t.Fatalf("second PollBatch(1) = %v, want [%d]", seqsOf(es), later.Seq)
	}
}

// Catalogue: CUR-11.
func TestCUR11_WaitSemantics(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	// A Wait that never ends would end here, empty, and fail the timing
	// checks below instead of hanging the test binary.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := curNewCursor(t, s, engine.RegionEntity("w"), 0)
	one := mustAppend(t, s, ev("w", "s", "pending"))

	start := time.Now()
	es, err := c.Wait(ctx, 0, 5*time.Second)
	if err != nil || len(es) != 0 {
		t.Fatalf("Wait(0, 5s) = (%v, %v), want empty", seqsOf(es), err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Wait(0, 5s) took %v, want at once", d)
	}
	curCheckpoint(t, c, 0, false)

	es, err = c.Wait(ctx, 1, 0)
	if err != nil || !equalSeqs(seqsOf(es), []uint64{one.Seq}) {
		t.Fatalf("Wait(1, 0) with one pending = (%v, %v), want [%d]", seqsOf(es), err, one.Seq)
	}

	var three []uint64
	for i := 0; i < 3; i++ {
		three = append(three, mustAppend(t, s, ev("w", "s", fmt.Sprint(i))).Seq)
	}
	es, err = c.Wait(ctx, 8, time.Second)
	if err != nil || !equalSeqs(seqsOf(es), three) {
		t.Fatalf("Wait(8, 1s) with 3 pending = (%v, %v), want %v", seqsOf(es), err, three)
	}

	start = time.Now()
	es, err = c.Wait(ctx, 1, 30*time.Millisecond)
	d := time.Since(start)
	if err != nil || len(es) != 0 {
		t.Fatalf("Wait(1, 30ms) with none pending = (%v, %v), want empty", seqsOf(es), err)
	}
	if d < 20*time.Millisecond || d >= 5*time.Second {
		t.Fatalf("Wait(1, 30ms) returned after %v, want about 30ms", d)
	}
	curCheckpoint(t, c, three[2], true)
}

// Catalogue: CUR-12.
func TestCUR12_WaitWakesOnMatchingPublish(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	ctx := context.Background()
	src := &curCountingSource{Source: s}
	c := curNewCursor(t, src, engine.RegionEntity("want"), 0)
	type result struct {
		es  []engine.Entry
		err error
		at  time.Time
	}
	startWait := func() <-chan result {
		done := make(chan result, 1)
		go func() {
			es, err := c.Wait(ctx, 1, 5*time.Second)
			done <- result{es, err, time.Now()}
		}()
		return done
	}
	receive := func(done <-chan result) result {
		t.Helper()
		select {
		case r := <-done:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("Wait did not return")
			return result{}
		}
	}

	// A matching publish wakes a parked Wait.
	done := startWait()
	waitFor(t, "Wait to park", func() bool { return src.parks.Load() >= 1 })
	published := time.Now()
	match := mustAppend(t, s, ev("want", "s", "match"))
	r := receive(done)
	if r.err != nil || !equalSeqs(seqsOf(r.es), []uint64{match.Seq}) {
		t.Fatalf("Wait = (%v, %v), want [%d]", seqsOf(r.es), r.err, match.Seq)
	}
	if d := r.at.Sub(published); d >= time.Second {
		t.Fatalf("Wait returned %v after the publish, want < 1s", d)
	}

	// A non-matching publish: Wait re-polls and parks for the rest.
	polls, parks := src.polls.Load(), src.parks.Load()
	done = startWait()
	waitFor(t, "Wait to park", func() bool { return src.parks.Load() >= parks+1 })
	other := mustAppend(t, s, ev("other", "s", "no match"))
	waitFor(t, "Wait to re-poll and park again", func() bool {
		return src.polls.Load() >= polls+2 && src.parks.Load() >= parks+2
	})
	select {
	case r := <-done:
		t.Fatalf("Wait returned (%v, %v) after a non-matching publish", seqsOf(r.es), r.err)
	default:
	}
	ts := src.parkTimeouts()[parks:]
	if ts[0] > 5*time.Second || ts[1] >= ts[0] || ts[1] <= 0 {
		t.Fatalf("park timeouts %v: the second park should be for the rest of 5s", ts)
	}
	published = time.Now()
	match = mustAppend(t, s, ev("want", "s", "second match"))
	r = receive(done)
	if r.err != nil || !equalSeqs(seqsOf(r.es), []uint64{match.Seq}) {
		t.Fatalf("Wait = (%v, %v), want [%d] (not the non-matching %d)", seqsOf(r.es), r.err, match.Seq, other.Seq)
	}
	if d := r.at.Sub(published); d >= time.Second {
		t.Fatalf("Wait returned %v after the matching publish, want < 1s", d)
	}

	// Lost-wakeup guard: a publish between the empty poll and the park
	// must not be slept through (Wait parks on the snapshot read before
	// the query).
	var raced atomic.Bool
	var racedSeq atomic.Uint64
	src.afterPoll = func(res engine.PollResult) {
		if len(res.Entries) == 0 && raced.CompareAndSwap(false, true) {
			racedSeq.Store(mustAppend(t, s, ev("want", "s", "raced")).Seq)
		}
	}
	start := time.Now()
	es, err := c.Wait(ctx, 1, 5*time.Second)
	if err != nil || !equalSeqs(seqsOf(es), []uint64{racedSeq.Load()}) {
		t.Fatalf("Wait with a publish racing the park = (%v, %v), want [%d]", seqsOf(es), err, racedSeq.Load())
	}
	if d := time.Since(start); d >= time.Second {
		t.Fatalf("Wait slept %v through a publish that raced its park, want < 1s", d)
	}
}

// Catalogue: CUR-13.
func TestCUR13_CursorsKeepSeparatePositions(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	var want []uint64
	for i := 0; i < 4; i++ {
		want = append(want, mustAppend(t, s, ev("shared", "s", fmt.Sprint(i))).Seq)
	}
	a := curNewCursor(t, s, engine.RegionEntity("shared"), 0)
	b := curNewCursor(t, s, engine.RegionEntity("shared"), 0)
	if es := curPollBatch(t, a, 1); !equalSeqs(seqsOf(es), want[:1]) {
		t.Fatalf("a: %v", seqsOf(es))
	}
	if es := curPollBatch(t, b, 3); !equalSeqs(seqsOf(es), want[:3]) {
		t.Fatalf("b: %v", seqsOf(es))
	}
	curCheckpoint(t, a, want[0], true)
	curCheckpoint(t, b, want[2], true)
	if es := curPollBatch(t, a, 10); !equalSeqs(seqsOf(es), want[1:]) {
		t.Fatalf("a rest: %v, want %v", seqsOf(es), want[1:])
	}
	if es := curPollBatch(t, b, 10); !equalSeqs(seqsOf(es), want[3:]) {
		t.Fatalf("b rest: %v, want %v", seqsOf(es), want[3:])
	}
}

// Catalogue: CUR-15.
func TestCUR15_RestoreAndCheckpoint(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	// seqs 1-3 on A, 4-5 on B, 6 on A.
	for i := 0; i < 3; i++ {
		mustAppend(t, s, ev("A", "s", "a"))
	}
	mustAppend(t, s, ev("B", "s", "b"))
	mustAppend(t, s, ev("B", "s", "b"))
	mustAppend(t, s, ev("A", "s", "a"))

	c := curNewCursor(t, s, engine.RegionAll(), 0)
	for _, st := range []struct {
		pos     uint64
		started bool
	}{{0, false}, {0, true}, {7, false}, {4, true}, {1000, true}, {^uint64(0), true}} {
		c.Restore(st.pos, st.started)
		curCheckpoint(t, c, st.pos, st.started)
	}

	c.Restore(4, true)
	if e, ok, err := c.Poll(context.Background()); err != nil || !ok || e.Seq != 5 {
		t.Fatalf("RegionAll after Restore(4, true) = (%d, %v, %v), want seq 5", e.Seq, ok, err)
	}
	a := curNewCursor(t, s, engine.RegionEntity("A"), 0)
	a.Restore(4, true)
	if e, ok, err := a.Poll(context.Background()); err != nil || !ok || e.Seq != 6 {
		t.Fatalf("A after Restore(4, true) = (%d, %v, %v), want seq 6", e.Seq, ok, err)
	}
	c.Restore(4, false)
	if e, ok, err := c.Poll(context.Background()); err != nil || !ok || e.Seq != 0 {
		t.Fatalf("RegionAll after Restore(4, false) = (%d, %v, %v), want seq 0", e.Seq, ok, err)
	}
	curCheckpoint(t, c, 0, true)
}

func TestCURExtra_NewCursorRejectsInvalidRegion(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	for _, r := range []engine.Region{engine.RegionEntity("*"), engine.RegionEntity(""), engine.RegionScope("a/b")} {
		c, err := NewCursor(s, r)
		if !errors.Is(err, engine.ErrInvalidRegion) || c != nil {
			t.Fatalf("NewCursor(%q) = (%v, %v), want ErrInvalidRegion", r.Identity(), c, err)
		}
	}
}

func TestGAPExtra_WithGapConfig(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	mustAppend(t, s, ev("g", "s", "r0"))
	curCancelledFence(t, s, []engine.Event{ev("g", "s", "hidden")})
	mustAppend(t, s, ev("g", "s", "r2"))

	c := curNewCursor(t, s, engine.RegionEntity("g"), 0)
	err := c.WithGapConfig(GapConfig{Capacity: -1})
	var ce *engine.ConfigError
	if !errors.Is(err, engine.ErrInvalidConfig) || !errors.As(err, &ce) {
		t.Fatalf("WithGapConfig(-1) = %v, want ErrInvalidConfig", err)
	}
	// WithGapConfig installs a fresh, empty buffer.
	if err := c.WithGapConfig(GapConfig{Capacity: 4}); err != nil {
		t.Fatal(err)
	}
	curPollBatch(t, c, 8)
	if err := c.WithGapConfig(GapConfig{Capacity: 4}); err != nil {
		t.Fatal(err)
	}
	curCheckGaps(t, "after WithGapConfig", c.TakeGaps(), nil)
}

// Catalogue: GAP-01.
func TestGAP01_ObservationInBuffer(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	r0 := mustAppend(t, s, ev("g", "s", "r0"))
	hidden := curCancelledFence(t, s, []engine.Event{ev("g", "s", "hidden")})
	r2 := mustAppend(t, s, ev("g", "s", "r2"))
	if hidden != (engine.Range{Start: r0.Seq + 1, End: r0.Seq + 2}) || r2.Seq != r0.Seq+2 {
		t.Fatalf("layout r0=%d hidden=%v r2=%d", r0.Seq, hidden, r2.Seq)
	}
	c := curNewCursor(t, s, engine.RegionEntity("g"), 4)
	if es := curPollBatch(t, c, 8); !equalSeqs(seqsOf(es), []uint64{r0.Seq, r2.Seq}) {
		t.Fatalf("PollBatch(8) = %v, want [%d %d]", seqsOf(es), r0.Seq, r2.Seq)
	}
	curCheckGaps(t, "first TakeGaps", c.TakeGaps(), []GapObservation{
		{Expected: r0.Seq + 1, Delivered: r2.Seq, Ranges: []engine.Range{{Start: r0.Seq + 1, End: r2.Seq}}},
	})
	curCheckGaps(t, "second TakeGaps", c.TakeGaps(), nil)
}

// Catalogue: GAP-02.
func TestGAP02_DisabledBufferWorkerStillSees(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	r0 := mustAppend(t, s, ev("g", "s", "r0"))
	curCancelledFence(t, s, []engine.Event{ev("g", "s", "hidden")})
	r2 := mustAppend(t, s, ev("g", "s", "r2"))
	want := []GapObservation{{Expected: r0.Seq + 1, Delivered: r2.Seq, Ranges: []engine.Range{{Start: r0.Seq + 1, End: r2.Seq}}}}

	c := curNewCursor(t, s, engine.RegionEntity("g"), 0)
	if es := curPollBatch(t, c, 8); len(es) != 2 {
		t.Fatalf("PollBatch(8) = %v", seqsOf(es))
	}
	curCheckGaps(t, "disabled buffer", c.TakeGaps(), nil)

	// What a worker's delivery context gets: pollBatch's observations.
	w := curNewCursor(t, s, engine.RegionEntity("g"), 0)
	es, gaps, _, err := w.pollBatch(context.Background(), 8)
	if err != nil || len(es) != 2 {
		t.Fatalf("pollBatch = (%v, %v)", seqsOf(es), err)
	}
	curCheckGaps(t, "pollBatch", gaps, want)
	curCheckGaps(t, "disabled buffer after pollBatch", w.TakeGaps(), nil)
}

// Catalogue: GAP-03.
func TestGAP03_CapacityOneKeepsNewest(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	r0 := mustAppend(t, s, ev("g", "s", "r0"))
	curCancelledFence(t, s, []engine.Event{ev("g", "s", "h1")})
	r2 := mustAppend(t, s, ev("g", "s", "r2"))
	curCancelledFence(t, s, []engine.Event{ev("g", "s", "h3")})
	r4 := mustAppend(t, s, ev("g", "s", "r4"))
	if r2.Seq != r0.Seq+2 || r4.Seq != r2.Seq+2 {
		t.Fatalf("layout r0=%d r2=%d r4=%d", r0.Seq, r2.Seq, r4.Seq)
	}
	c := curNewCursor(t, s, engine.RegionEntity("g"), 1)
	if es := curPollBatch(t, c, 8); !equalSeqs(seqsOf(es), []uint64{r0.Seq, r2.Seq, r4.Seq}) {
		t.Fatalf("PollBatch(8) = %v", seqsOf(es))
	}
	curCheckGaps(t, "capacity 1", c.TakeGaps(), []GapObservation{
		{Expected: r2.Seq + 1, Delivered: r4.Seq, Ranges: []engine.Range{{Start: r2.Seq + 1, End: r4.Seq}}},
	})

	// Across polls too: capacity 2 keeps the newest two, oldest first.
	curCancelledFence(t, s, []engine.Event{ev("g", "s", "h5")})
	r6 := mustAppend(t, s, ev("g", "s", "r6"))
	c2 := curNewCursor(t, s, engine.RegionEntity("g"), 2)
	for {
		if es := curPollBatch(t, c2, 1); len(es) == 0 {
			break
		}
	}
	curCheckGaps(t, "capacity 2", c2.TakeGaps(), []GapObservation{
		{Expected: r2.Seq + 1, Delivered: r4.Seq, Ranges: []engine.Range{{Start: r2.Seq + 1, End: r4.Seq}}},
		{Expected: r4.Seq + 1, Delivered: r6.Seq, Ranges: []engine.Range{{Start: r4.Seq + 1, End: r6.Seq}}},
	})
}

// Catalogue: GAP-04.
func TestGAP04_ClipToGap(t *testing.T) {
	got := observeGaps(7, true, curEntries(12), []engine.Range{{Start: 5, End: 20}})
	curCheckGaps(t, "cancelled [5,20), expected 8, delivered 12", got, []GapObservation{
		{Expected: 8, Delivered: 12, Ranges: []engine.Range{{Start: 8, End: 12}}},
	})
}

// Catalogue: GAP-05.
func TestGAP05_NotStartedCancelledSeqZero(t *testing.T) {
	got := observeGaps(0, false, curEntries(1), []engine.Range{{Start: 0, End: 1}})
	want := []GapObservation{{Expected: 0, Delivered: 1, Ranges: []engine.Range{{Start: 0, End: 1}}}}
	curCheckGaps(t, "observeGaps", got, want)

	// Through a cursor (a real journal cannot cancel seq 0: the open event
	// is there).
	src := &curStaticSource{entries: curEntries(1), cancelled: []engine.Range{{Start: 0, End: 1}}, visible: 2}
	c := curNewCursor(t, src, engine.RegionAll(), 4)
	if es := curPollBatch(t, c, 8); !equalSeqs(seqsOf(es), []uint64{1}) {
		t.Fatalf("PollBatch(8) = %v, want [1]", seqsOf(es))
	}
	curCheckGaps(t, "cursor", c.TakeGaps(), want)
}

// Catalogue: GAP-06.
func TestGAP06_NonMatchingJumpsAreNoObservation(t *testing.T) {
	want := []GapObservation{
		{Expected: 2, Delivered: 3, Ranges: []engine.Range{{Start: 2, End: 3}}},
		{Expected: 4, Delivered: 6, Ranges: []engine.Range{{Start: 4, End: 5}}},
	}
	got := observeGaps(0, true, curEntries(1, 3, 6), []engine.Range{{Start: 2, End: 3}, {Start: 4, End: 5}})
	curCheckGaps(t, "observeGaps", got, want)

	// The same layout in a journal: seq 5 belongs to another entity.
	s := openTestStore(t, journal.Config{})
	mustAppend(t, s, ev("A", "s", "1"))
	if rg := curCancelledFence(t, s, []engine.Event{ev("A", "s", "2")}); rg != (engine.Range{Start: 2, End: 3}) {
		t.Fatalf("first fence = %v", rg)
	}
	mustAppend(t, s, ev("A", "s", "3"))
	if rg := curCancelledFence(t, s, []engine.Event{ev("A", "s", "4")}); rg != (engine.Range{Start: 4, End: 5}) {
		t.Fatalf("second fence = %v", rg)
	}
	mustAppend(t, s, ev("B", "s", "5"))
	mustAppend(t, s, ev("A", "s", "6"))
	c := curNewCursor(t, s, engine.RegionEntity("A"), 8)
	c.Restore(0, true)
	if es := curPollBatch(t, c, 8); !equalSeqs(seqsOf(es), []uint64{1, 3, 6}) {
		t.Fatalf("PollBatch(8) = %v, want [1 3 6]", seqsOf(es))
	}
	curCheckGaps(t, "cursor", c.TakeGaps(), want)
}

// Catalogue: GAP-08.
func TestGAP08_OtherEntitysCancelledRangeObserved(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	a1 := mustAppend(t, s, ev("A", "s", "1"))
	mustAppend(t, s, ev("B", "s", "visible"))
	hidden := curCancelledFence(t, s, []engine.Event{ev("B", "s", "h1"), ev("B", "s", "h2")})
	a2 := mustAppend(t, s, ev("A", "s", "2"))
	if hidden.End != a2.Seq {
		t.Fatalf("layout a1=%d hidden=%v a2=%d", a1.Seq, hidden, a2.Seq)
	}
	c := curNewCursor(t, s, engine.RegionEntity("A"), 4)
	if es := curPollBatch(t, c, 8); !equalSeqs(seqsOf(es), []uint64{a1.Seq, a2.Seq}) {
		t.Fatalf("PollBatch(8) = %v", seqsOf(es))
	}
	curCheckGaps(t, "B's cancelled range", c.TakeGaps(), []GapObservation{
		{Expected: a1.Seq + 1, Delivered: a2.Seq, Ranges: []engine.Range{hidden}},
	})
}

// Catalogue: GAP-11.
func TestGAP11_RedeliveredBatchRecomputesObservations(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	r0 := mustAppend(t, s, ev("g", "s", "r0"))
	hidden := curCancelledFence(t, s, []engine.Event{ev("g", "s", "hidden")})
	r2 := mustAppend(t, s, ev("g", "s", "r2"))
	want := []GapObservation{{Expected: hidden.Start, Delivered: r2.Seq, Ranges: []engine.Range{hidden}}}

	type call struct {
		seqs []uint64
		gaps []GapObservation
	}
	var mu sync.Mutex
	var calls []call
	cfg := DefaultWorkerConfig()
	cfg.Retry = NoRetry() // the restart policy's own behaviour, without retries
	cfg.BatchSize = 8
	w, err := StartWorker(context.Background(), s, engine.RegionEntity("g"), cfg,
		func(_ context.Context, batch []engine.Entry, d *Delivery) Action {
			mu.Lock()
			calls = append(calls, call{seqsOf(batch), append([]GapObservation(nil), d.Gaps...)})
			n := len(calls)
			mu.Unlock()
			if n == 1 {
				panic("boom")
			}
			return Stop
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.StopAndJoin() })
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not stop")
	}
	if err := w.Join(); err != nil {
		t.Fatalf("Join = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 {
		t.Fatalf("%d handler calls, want 2 (panic, then redelivery)", len(calls))
	}
	for i, c := range calls {
		if !equalSeqs(c.seqs, []uint64{r0.Seq, r2.Seq}) {
			t.Fatalf("call %d batch = %v, want [%d %d]", i, c.seqs, r0.Seq, r2.Seq)
		}
		curCheckGaps(t, fmt.Sprintf("call %d", i), c.gaps, want)
	}
	// Metrics count the observation (whether a redelivery counts again is
	// not pinned down by SPEC §7; the sequences must match the count).
	st := w.Stats()
	if st.Restarts != 1 || st.GapObservations == 0 || st.GapSequences != st.GapObservations*(hidden.End-hidden.Start) {
		t.Fatalf("stats = %+v, want 1 restart and the observation counted", st)
	}
}
