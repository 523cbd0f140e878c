package journal

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/batfleet/batfleet/engine"
)

// Store.Heads (the fleet writer's matcher input for held pulls, SPEC §15):
// the heads of the visible entries of a range, in seq order, without the
// cancelled ones, clamped at the visible bound.
func TestHeadsSkipsCancelledAndClampsAtVisible(t *testing.T) {
	dir := t.TempDir()
	s := openStoreAt(t, dir, Config{})
	ctx := context.Background()
	kinded := func(entity, scope string, kind engine.Kind) engine.Event {
		return engine.Event{Coordinate: engine.MustCoordinate(entity, scope), Kind: kind}
	}
	cancel := func(events ...engine.Event) engine.Range {
		t.Helper()
		if err := s.BeginFence(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendFenced(ctx, events); err != nil {
			t.Fatal(err)
		}
		if err := s.CancelFence(ctx); err != nil {
			t.Fatal(err)
		}
		rs := s.CancelledRanges()
		return rs[len(rs)-1]
	}
	mustAppend(t, s, ev("a:1", "s", "x"))
	mustAppend(t, s, kinded("b", "other", 0x2001))
	mustAppend(t, s, ev("a:1", "s", "y")) // clock 1
	r1 := cancel(ev("a:1", "s", "hidden"), ev("c", "s", "hidden"))
	mustAppend(t, s, ev("c", "s", "z"))
	r2 := cancel(ev("d", "s", "hidden"))
	if _, err := s.AppendBatch(ctx, []engine.Event{ev("a:1", "s", "1"), kinded("e", "t", 0xE00F), ev("a:2", "s", "3")}); err != nil {
		t.Fatal(err)
	}
	cancelled := []engine.Range{r1, r2}
	visible := s.Visible()

	// The oracle: what a poll of every entry returns.
	all := pollAll(t, s, engine.RegionAll())
	heads, upTo := s.Heads(nil, 0, math.MaxUint64)
	if upTo != visible {
		t.Errorf("Heads up to %d, want the visible bound %d", upTo, visible)
	}
	if len(heads) != len(all) {
		t.Fatalf("%d heads, %d entries polled: %v vs %v", len(heads), len(all), headSeqs(heads), seqsOf(all))
	}
	for i, h := range heads {
		en := all[i]
		if h.Seq != en.Seq || h.Coordinate != en.Coordinate || h.Kind != en.Kind || h.Clock != en.Clock {
			t.Errorf("head %d = %+v, entry %+v", i, h, en)
		}
		if i > 0 && h.Seq <= heads[i-1].Seq {
			t.Errorf("heads out of order: %v", headSeqs(heads))
		}
		for _, r := range cancelled {
			if r.Contains(h.Seq) {
				t.Errorf("head %d is in cancelled range %v", h.Seq, r)
			}
		}
	}
	if last := heads[len(heads)-1]; last.Coordinate.Entity() != "a:2" || heads[len(heads)-2].Kind != 0xE00F {
		t.Errorf("last heads %+v", heads[len(heads)-3:])
	}
	clocks := map[uint32]bool{}
	for _, h := range heads {
		if h.Coordinate.Entity() == "a:1" {
			clocks[h.Clock] = true
		}
	}
	if len(clocks) != 3 {
		t.Errorf("clocks of a:1 %v, want three distinct", clocks)
	}

	// Every sub-range, appended after a prefix the caller passes in.
	prefix := []Head{{Seq: 999}}
	for from := uint64(0); from <= visible+2; from++ {
		for to := uint64(0); to <= visible+2; to++ {
			got, bound := s.Heads(append([]Head(nil), prefix...), from, to)
			var want []uint64
			for _, h := range heads {
				if h.Seq >= from && h.Seq < to {
					want = append(want, h.Seq)
				}
			}
			if len(got) == 0 || got[0] != prefix[0] {
				t.Fatalf("Heads(%d, %d) dropped the caller's prefix: %v", from, to, headSeqs(got))
			}
			if fmt.Sprint(headSeqs(got[1:])) != fmt.Sprint(want) {
				t.Fatalf("Heads(%d, %d) = %v, want %v", from, to, headSeqs(got[1:]), want)
			}
			if end := min(to, visible); from < end && bound != end {
				t.Fatalf("Heads(%d, %d) bound %d, want %d", from, to, bound, end)
			} else if from >= end && (bound < end || bound > max(from, end)) {
				t.Fatalf("Heads(%d, %d) of an empty range: bound %d", from, to, bound)
			}
		}
	}

	// Entries staged in an open fence are beyond the visible bound: not
	// there until the fence commits.
	if err := s.BeginFence(ctx); err != nil {
		t.Fatal(err)
	}
	fa, err := s.AppendFenced(ctx, []engine.Event{ev("f", "s", "staged")})
	if err != nil {
		t.Fatal(err)
	}
	if got, bound := s.Heads(nil, 0, math.MaxUint64); len(got) != len(heads) || bound != visible {
		t.Errorf("with a staged entry: %v up to %d, want %v up to %d", headSeqs(got), bound, headSeqs(heads), visible)
	}
	if err := s.CommitFence(ctx); err != nil {
		t.Fatal(err)
	}
	rcs, err := fa.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, bound := s.Heads(nil, visible, math.MaxUint64)
	if len(got) != 1 || got[0].Seq != rcs[0].Seq || got[0].Coordinate.Entity() != "f" || bound != s.Visible() {
		t.Errorf("after the commit: %+v up to %d, want the staged entry %d up to %d", got, bound, rcs[0].Seq, s.Visible())
	}

	// Reopened (the index rebuilt from the segments): the same heads, the
	// cancelled ranges still skipped.
	before, _ := s.Heads(nil, 0, math.MaxUint64)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStoreAt(t, dir, Config{})
	after, bound := s.Heads(nil, 0, math.MaxUint64)
	if bound != s.Visible() || len(after) < len(before) || fmt.Sprint(headSeqs(after[:len(before)])) != fmt.Sprint(headSeqs(before)) {
		t.Fatalf("after reopening: %v up to %d (visible %d), before %v", headSeqs(after), bound, s.Visible(), headSeqs(before))
	}
	if polled := seqsOf(pollAll(t, s, engine.RegionAll())); fmt.Sprint(headSeqs(after)) != fmt.Sprint(polled) {
		t.Errorf("after reopening: heads %v, polled %v", headSeqs(after), polled)
	}
	for _, h := range after {
		for _, r := range cancelled {
			if r.Contains(h.Seq) {
				t.Errorf("after reopening: head %d is in cancelled range %v", h.Seq, r)
			}
		}
	}
}

func headSeqs(hs []Head) []uint64 {
	out := make([]uint64, len(hs))
	for i, h := range hs {
		out[i] = h.Seq
	}
	return out
}
