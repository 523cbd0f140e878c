package journal

// Cursor cases that need the journal's fault injection (a failed fsync, an
// unreadable payload): they live beside the journal, whose test hooks are
// not public API, and drive the delivery cursor over it. The rest of the
// cursor catalogue is in engine/delivery.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
)

// curNewCursor returns a cursor on region with a gap buffer of capacity
// (0 leaves it disabled).
func curNewCursor(t testing.TB, src delivery.Source, region engine.Region, capacity int) *delivery.Cursor {
	t.Helper()
	c, err := delivery.NewCursor(src, region)
	if err != nil {
		t.Fatalf("NewCursor(%s): %v", region, err)
	}
	if capacity != 0 {
		if err := c.WithGapConfig(delivery.GapConfig{Capacity: capacity}); err != nil {
			t.Fatalf("WithGapConfig(%d): %v", capacity, err)
		}
	}
	return c
}

// curCancelledFence stages events in a fence (one AppendFenced call per
// group), cancels it and returns the cancelled range those writes held.
func curCancelledFence(t testing.TB, s *Store, groups ...[]engine.Event) engine.Range {
	t.Helper()
	ctx := context.Background()
	before := s.Stats().Allocated
	if err := s.BeginFence(ctx); err != nil {
		t.Fatalf("BeginFence: %v", err)
	}
	var staged []*FencedAppend
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
		if _, err := fa.Wait(ctx); !errors.Is(err, ErrFenceCancelled) {
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

// curInRanges reports whether seq lies in one of rs.
func curInRanges(rs []engine.Range, seq uint64) bool {
	for _, r := range rs {
		if r.Contains(seq) {
			return true
		}
	}
	return false
}

// curPollBatch is PollBatch that fails the test on an error.
func curPollBatch(t testing.TB, c *delivery.Cursor, max int) []engine.Entry {
	t.Helper()
	es, err := c.PollBatch(context.Background(), max)
	if err != nil {
		t.Fatalf("PollBatch(%d): %v", max, err)
	}
	return es
}

// curCheckGaps fails unless got equals want (nil and empty are equal).
func curCheckGaps(t testing.TB, what string, got, want []delivery.GapObservation) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: gaps = %+v, want %+v", what, got, want)
	}
}

// curCheckpoint fails unless the cursor's state is (pos, started).
func curCheckpoint(t testing.TB, c *delivery.Cursor, pos uint64, started bool) {
	t.Helper()
	if p, s := c.Checkpoint(); p != pos || s != started {
		t.Fatalf("Checkpoint() = (%d, %v), want (%d, %v)", p, s, pos, started)
	}
}

// curFailedBatch appends events with the next fsync failing (g must be the
// store's sync hook) and returns the range the failed batch reserved.
func curFailedBatch(t testing.TB, s *Store, g *syncGate, events ...engine.Event) engine.Range {
	t.Helper()
	before := s.Stats().Allocated
	g.failNext(1, errors.New("injected fsync failure"))
	_, err := s.AppendBatch(context.Background(), events)
	var sf *BatchSyncFailedError
	if !errors.Is(err, ErrBatchSyncFailed) || !errors.As(err, &sf) || sf.ItemCount != len(events) {
		t.Fatalf("batch with failed fsync = %v, want ErrBatchSyncFailed{%d}", err, len(events))
	}
	rg := engine.Range{Start: before, End: before + uint64(len(events))}
	if !curCovered(s.CancelledRanges(), rg) {
		t.Fatalf("failed batch range %v not in cancelled ranges %v", rg, s.CancelledRanges())
	}
	return rg
}

// Catalogue: CUR-14.
func TestCUR14_UnreadablePayload(t *testing.T) {
	var bad atomic.Uint64
	bad.Store(^uint64(0))
	injected := errors.New("injected read failure")
	s := openTestStore(t, Config{faults: &faults{readPayload: func(seq uint64) error {
		if seq == bad.Load() {
			return injected
		}
		return nil
	}}})
	ctx := context.Background()
	first := mustAppend(t, s, ev("u", "s", "1"))
	hidden := curCancelledFence(t, s, []engine.Event{ev("u", "s", "hidden")})
	target := mustAppend(t, s, ev("u", "s", "3"))

	c := curNewCursor(t, s, engine.RegionEntity("u"), 4)
	if es := curPollBatch(t, c, 1); !equalSeqs(seqsOf(es), []uint64{first.Seq}) {
		t.Fatalf("first poll = %v", seqsOf(es))
	}
	bad.Store(target.Seq)
	checkUnreadable := func(what string, err error) {
		t.Helper()
		var eu *EntryUnreadableError
		if !errors.Is(err, ErrEntryUnreadable) || !errors.As(err, &eu) || eu.Seq != target.Seq || !errors.Is(err, injected) {
			t.Fatalf("%s = %v, want ErrEntryUnreadable{Seq: %d}", what, err, target.Seq)
		}
		curCheckpoint(t, c, first.Seq, true)
		curCheckGaps(t, what, c.TakeGaps(), nil)
	}
	es, err := c.PollBatch(ctx, 8)
	if len(es) != 0 {
		t.Fatalf("failed PollBatch returned entries %v", seqsOf(es))
	}
	checkUnreadable("PollBatch(8)", err)
	_, ok, err := c.Poll(ctx)
	if ok {
		t.Fatal("failed Poll returned an entry")
	}
	checkUnreadable("Poll()", err)
	_, err = c.Wait(ctx, 1, time.Second)
	checkUnreadable("Wait(1, 1s)", err)

	bad.Store(^uint64(0))
	if es := curPollBatch(t, c, 8); !equalSeqs(seqsOf(es), []uint64{target.Seq}) || string(es[0].Payload) != "3" {
		t.Fatalf("after the fault cleared: %v, want [%d]", seqsOf(es), target.Seq)
	}
	curCheckGaps(t, "after the fault cleared", c.TakeGaps(), []delivery.GapObservation{
		{Expected: hidden.Start, Delivered: target.Seq, Ranges: []engine.Range{hidden}},
	})
}

// Catalogue: GAP-07.
func TestGAP07_FailedBatchObservedWhole(t *testing.T) {
	g := &syncGate{}
	s := openTestStore(t, Config{faults: &faults{sync: g.hook}})
	before := mustAppend(t, s, ev("f", "s", "before"))
	failed := curFailedBatch(t, s, g, ev("f", "s", "1"), ev("f", "s", "2"), ev("f", "s", "3"))
	after := mustAppend(t, s, ev("f", "s", "after"))
	if failed.Start != before.Seq+1 || after.Seq != failed.End {
		t.Fatalf("layout before=%d failed=%v after=%d", before.Seq, failed, after.Seq)
	}
	c := curNewCursor(t, s, engine.RegionEntity("f"), 4)
	if es := curPollBatch(t, c, 8); !equalSeqs(seqsOf(es), []uint64{before.Seq, after.Seq}) {
		t.Fatalf("PollBatch(8) = %v", seqsOf(es))
	}
	curCheckGaps(t, "failed batch", c.TakeGaps(), []delivery.GapObservation{
		{Expected: failed.Start, Delivered: after.Seq, Ranges: []engine.Range{failed}},
	})
}

// Catalogue: GAP-09.
func TestGAP09_FenceCancelAndFailedBatchMerge(t *testing.T) {
	g := &syncGate{}
	s := openTestStore(t, Config{faults: &faults{sync: g.hook}})
	mustAppend(t, s, ev("m", "s", "1"))
	e2 := mustAppend(t, s, ev("m", "s", "2"))
	fence := curCancelledFence(t, s, []engine.Event{ev("m", "s", "3"), ev("m", "s", "4")})
	failed := curFailedBatch(t, s, g, ev("m", "s", "5"), ev("m", "s", "6"))
	e7 := mustAppend(t, s, ev("m", "s", "7"))
	if e2.Seq != 2 || fence != (engine.Range{Start: 3, End: 5}) || failed != (engine.Range{Start: 5, End: 7}) || e7.Seq != 7 {
		t.Fatalf("layout e2=%d fence=%v failed=%v e7=%d", e2.Seq, fence, failed, e7.Seq)
	}
	if rs := s.CancelledRanges(); !reflect.DeepEqual(rs, []engine.Range{{Start: 3, End: 7}}) {
		t.Fatalf("cancelled ranges = %v, want [[3, 7)]", rs)
	}
	c := curNewCursor(t, s, engine.RegionEntity("m"), 4)
	if es := curPollBatch(t, c, 2); !equalSeqs(seqsOf(es), []uint64{1, 2}) {
		t.Fatalf("first PollBatch(2) = %v", seqsOf(es))
	}
	curCheckGaps(t, "before the gap", c.TakeGaps(), nil)
	if es := curPollBatch(t, c, 8); !equalSeqs(seqsOf(es), []uint64{7}) {
		t.Fatalf("PollBatch(8) = %v, want [7]", seqsOf(es))
	}
	curCheckGaps(t, "merged gap", c.TakeGaps(), []delivery.GapObservation{
		{Expected: 3, Delivered: 7, Ranges: []engine.Range{{Start: 3, End: 7}}},
	})
}

// TestCursorRandomInterleavings runs a seeded random mix of appends,
// batches, cancelled fences, committed fences and failed batches with
// three cursors polling in between, then checks each cursor against the
// journal's final state: exactly the visible matching seqs, ascending,
// without duplicates, and every skipped seq either non-matching or covered
// by a recorded observation (which must be exactly what SPEC §7 gives).
// CUR_SEED=n replays a seed.
func TestCursorRandomInterleavings(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CUR_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CUR_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (replay with CUR_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	g := &syncGate{}
	s := openTestStore(t, Config{faults: &faults{sync: g.hook}})
	ctx := context.Background()
	entities := []string{"a", "a:x", "a:x:y", "ab", "b"}
	scopes := []string{"s1", "s2"}
	randEv := func() engine.Event {
		return ev(entities[rng.IntN(len(entities))], scopes[rng.IntN(len(scopes))], fmt.Sprint(rng.Uint32()))
	}
	randEvs := func(n int) []engine.Event {
		out := make([]engine.Event, n)
		for i := range out {
			out[i] = randEv()
		}
		return out
	}

	type tracked struct {
		c         *delivery.Cursor
		delivered []engine.Entry
		gaps      []delivery.GapObservation
	}
	regions := []engine.Region{engine.RegionAll(), engine.RegionEntity("a"), engine.RegionScope("s2")}
	cursors := make([]*tracked, len(regions))
	for i, r := range regions {
		cursors[i] = &tracked{c: curNewCursor(t, s, r, 1<<16)}
	}
	poll := func(tc *tracked, max int) int {
		es := curPollBatch(t, tc.c, max)
		if len(es) > max {
			t.Fatalf("%s: PollBatch(%d) returned %d", tc.c.Region(), max, len(es))
		}
		tc.delivered = append(tc.delivered, es...)
		tc.gaps = append(tc.gaps, tc.c.TakeGaps()...)
		return len(es)
	}

	const steps = 300
	counts := map[string]int{}
	for step := 0; step < steps; step++ {
		switch op := rng.IntN(100); {
		case op < 35:
			counts["append"]++
			mustAppend(t, s, randEv())
		case op < 55:
			counts["batch"]++
			if _, err := s.AppendBatch(ctx, randEvs(2+rng.IntN(3))); err != nil {
				t.Fatalf("step %d: batch: %v", step, err)
			}
		case op < 70:
			counts["cancelled fence"]++
			groups := make([][]engine.Event, 1+rng.IntN(2))
			for i := range groups {
				groups[i] = randEvs(1 + rng.IntN(2))
			}
			curCancelledFence(t, s, groups...)
		case op < 80:
			counts["failed batch"]++
			curFailedBatch(t, s, g, randEvs(1+rng.IntN(3))...)
		case op < 85:
			counts["committed fence"]++
			if err := s.BeginFence(ctx); err != nil {
				t.Fatal(err)
			}
			fa, err := s.AppendFenced(ctx, randEvs(1+rng.IntN(2)))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.CommitFence(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := fa.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		default:
			counts["no write"]++
		}
		for _, tc := range cursors {
			if rng.IntN(2) == 0 {
				poll(tc, rng.IntN(6))
			}
		}
	}
	for _, tc := range cursors {
		for poll(tc, 1+rng.IntN(5)) > 0 {
		}
	}
	t.Logf("operations: %v; cancelled ranges: %v", counts, s.CancelledRanges())

	cancelled := s.CancelledRanges()
	visible := map[uint64]engine.Entry{}
	for _, e := range pollAll(t, s, engine.RegionAll()) {
		visible[e.Seq] = e
	}
	for _, tc := range cursors {
		region := tc.c.Region()
		got := seqsOf(tc.delivered)
		for i := 1; i < len(got); i++ {
			if got[i] <= got[i-1] {
				t.Fatalf("%s: seq %d after %d", region, got[i], got[i-1])
			}
		}
		if want := seqsOf(pollAll(t, s, region)); !equalSeqs(got, want) {
			t.Fatalf("%s: delivered %v, want %v", region, got, want)
		}

		// Every skipped seq is non-matching or covered by an observation,
		// and the observations are exactly those of the recording rule.
		var want []delivery.GapObservation
		expected := uint64(0)
		for _, e := range tc.delivered {
			var clips []engine.Range
			for _, r := range cancelled {
				if lo, hi := max(r.Start, expected), min(r.End, e.Seq); lo < hi {
					clips = append(clips, engine.Range{Start: lo, End: hi})
				}
			}
			if len(clips) > 0 {
				want = append(want, delivery.GapObservation{Expected: expected, Delivered: e.Seq, Ranges: clips})
			}
			for skipped := expected; skipped < e.Seq; skipped++ {
				if v, ok := visible[skipped]; ok {
					if region.Matches(v.Coordinate.Entity(), v.Coordinate.Scope(), v.Kind, v.Clock) {
						t.Fatalf("%s: matching seq %d skipped", region, skipped)
					}
					continue
				}
				covered := false
				for _, o := range tc.gaps {
					if o.Delivered == e.Seq && curInRanges(o.Ranges, skipped) {
						covered = true
					}
				}
				if !covered {
					t.Fatalf("%s: seq %d skipped before %d without an observation (gaps %+v)", region, skipped, e.Seq, tc.gaps)
				}
			}
			expected = e.Seq + 1
		}
		curCheckGaps(t, region.Identity(), tc.gaps, want)
	}
}
