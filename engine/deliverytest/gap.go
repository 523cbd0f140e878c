package deliverytest

import (
	"context"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
)

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
	var gotGaps []delivery.GapObservation
	w := startWorker(t, env.Source, regionOf("gap10"), delivery.DefaultWorkerConfig(), func(_ context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range b {
			gotEntries = append(gotEntries, e.Seq)
		}
		gotGaps = append(gotGaps, d.Gaps...)
		return delivery.Stop
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}

	cur, err := delivery.NewCursor(env.Source, regionOf("gap10"))
	if err != nil {
		t.Fatalf("NewCursor: %v", err)
	}
	if err := cur.WithGapConfig(delivery.GapConfig{Capacity: 8}); err != nil {
		t.Fatalf("WithGapConfig: %v", err)
	}
	es, err := cur.PollBatch(ctx, delivery.DefaultWorkerConfig().BatchSize)
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
	want := []delivery.GapObservation{{Expected: before + 1, Delivered: after, Ranges: []engine.Range{{Start: before + 1, End: after}}}}
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
