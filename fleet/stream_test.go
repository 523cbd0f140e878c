package fleet

import (
	"slices"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
)

// Pull-ahead belongs to the cursor: two cursors on one region and one
// client, polling in turns, each use their own pull ahead. When the
// pull-ahead was kept per region and client, each cursor threw the
// other's away and pulled again, so the writer answered about twice the
// pulls.
func TestPullAheadPerCursor(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	const events, batch = 64, 8
	want := appendTo(t, e.store, "order", events)

	a, err := delivery.NewCursor(e.c, engine.RegionEntity("order"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := delivery.NewCursor(e.c, engine.RegionEntity("order"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	before := e.w.Stats().Pulls
	// The first batch starts a pull ahead: the writer answers a second
	// pull without another poll.
	first, err := a.PollBatch(ctx, batch)
	if err != nil || len(first) != batch {
		t.Fatalf("first PollBatch = %d entries, %v", len(first), err)
	}
	waitFor(t, 10*time.Second, "the pull ahead of the first batch", func() bool { return e.w.Stats().Pulls-before >= 2 })
	gotA := seqsOfEntries(first)
	var gotB []uint64
	for len(gotA) < events || len(gotB) < events {
		for _, c := range []struct {
			cur *delivery.Cursor
			got *[]uint64
		}{{a, &gotA}, {b, &gotB}} {
			es, err := c.cur.PollBatch(ctx, batch)
			if err != nil {
				t.Fatalf("PollBatch: %v", err)
			}
			for _, en := range es {
				*c.got = append(*c.got, en.Seq)
			}
		}
	}
	if !slices.Equal(gotA, want) || !slices.Equal(gotB, want) {
		t.Fatalf("cursor a got %v, b got %v; want %v each", gotA, gotB, want)
	}
	// Each cursor pulls its first batch, then finds each next batch
	// pulled ahead: one pull per batch, plus the pull ahead after the
	// last batch (which finds nothing, or is still in flight). Discarding
	// each other's pull ahead would cost two pulls per batch.
	a.Close()
	b.Close()
	pulls := e.w.Stats().Pulls - before
	perCursor := uint64(events/batch + 1)
	if pulls > 2*perCursor {
		t.Fatalf("the writer answered %d pulls for two cursors of %d batches each, want at most %d", pulls, events/batch, 2*perCursor)
	}
	t.Logf("%d pulls for 2 cursors x %d batches", pulls, events/batch)
}

func seqsOfEntries(es []engine.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}
