package journal

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/batfleet/batfleet/engine"
)

// Store.Count (the answer to `worker status` and the lag metric): for
// every region and position, the number of entries a poll would deliver
// after that position and the wall time of the first of them, across
// cancelled ranges and more matches than one chunk of the index holds.
func TestCountAgreesWithPoll(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := context.Background()
	batch := make([]engine.Event, 0, 500)
	for i := range 3 * countChunk {
		batch = append(batch, ev(fmt.Sprintf("order:%d", i%7), fmt.Sprintf("s%d", i%3), "p"))
		if len(batch) == cap(batch) {
			if _, err := s.AppendBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
		if i == countChunk+10 { // a cancelled range in the middle of a chunk
			if err := s.BeginFence(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AppendFenced(ctx, []engine.Event{ev("order:1", "s0", "x"), ev("order:2", "s1", "x")}); err != nil {
				t.Fatal(err)
			}
			if err := s.CancelFence(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.AppendBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if len(s.CancelledRanges()) != 1 {
		t.Fatalf("cancelled ranges %v, want one", s.CancelledRanges())
	}
	for _, spec := range []string{"", "entity=order:1", "scope=s2", "entity=order:3,scope=s0", "entity=nobody"} {
		region, err := engine.ParseRegion(spec)
		if err != nil {
			t.Fatal(err)
		}
		all := pollAll(t, s, region)
		type at struct {
			pos     uint64
			started bool
			want    int // index in all of the first entry after pos
		}
		cases := []at{{0, false, 0}}
		for _, i := range []int{0, 1, len(all) / 2, len(all) - 1} {
			if i >= 0 && i < len(all) {
				cases = append(cases, at{all[i].Seq, true, i + 1})
			}
		}
		cases = append(cases, at{s.Visible() + 100, true, len(all)}, at{^uint64(0), true, len(all)})
		for _, c := range cases {
			got, err := s.Count(ctx, region, c.pos, c.started)
			if err != nil {
				t.Fatalf("%q after %d: %v", spec, c.pos, err)
			}
			want := len(all) - c.want
			if got.Count != uint64(want) {
				t.Errorf("region %q after %d (started %v): count %d, poll delivers %d", spec, c.pos, c.started, got.Count, want)
			}
			var oldest int64
			if want > 0 {
				oldest = all[c.want].WallMs
			}
			if got.OldestWallMs != oldest {
				t.Errorf("region %q after %d: oldest %d, want %d", spec, c.pos, got.OldestWallMs, oldest)
			}
			if got.Visible != s.Visible() {
				t.Errorf("visible %d, want %d", got.Visible, s.Visible())
			}
		}
	}
}

// Count refuses an invalid region and a closed store, and stops when its
// context ends.
func TestCountRefusals(t *testing.T) {
	s := openTestStore(t, Config{})
	mustAppend(t, s, ev("a", "s", "x"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Count(ctx, engine.RegionAll(), 0, false); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v, want context.Canceled", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Count(context.Background(), engine.RegionAll(), 0, false); !errors.Is(err, ErrClosed) {
		t.Errorf("closed store: %v, want ErrClosed", err)
	}
}
