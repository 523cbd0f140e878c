package workerapp

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/internal/cli"
)

// TestWorkerLagMetricCountsMatchingEvents (issue 16, defect 12): the
// worker's lag metric counts the events of its region after its committed
// position, as `worker status` does — a caught-up worker of a sparse
// region shows 0, however many other events follow — and its registry
// carries the handler and checkpoint histograms, promlint-clean.
func TestWorkerLagMetricCountsMatchingEvents(t *testing.T) {
	r := newCheckpointRig(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	appendN := func(entity string, n int) []engine.Receipt {
		t.Helper()
		var batch []engine.Event
		for i := range n {
			batch = append(batch, engine.Event{Coordinate: engine.MustCoordinate(fmt.Sprintf("%s:%d", entity, i), "s"), Kind: engine.KindData})
		}
		rcs, err := r.store.AppendBatch(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		return rcs
	}
	orders := appendN("order", 100)
	appendN("user", 900) // after the last order: the region's tail is far behind the visible bound

	region := engine.RegionEntity("order")
	lag := &lagCounter{client: r.client}
	if got := lag.count(region, orders[9].Seq, true); got != 90 {
		t.Errorf("lag after the 10th order = %v, want 90", got)
	}
	if got := lag.count(region, 0, false); got != 100 {
		t.Errorf("lag of a worker that has not started = %v, want 100", got)
	}

	reg := cli.NewRegistry("worker", "test")
	lat := newWorkerLatencies(reg)
	wcfg := delivery.DefaultWorkerConfig()
	wcfg.ObserveHandler, wcfg.ObserveSave = lat.handler, lat.save
	w, err := delivery.StartWorker(ctx, r.client, region, wcfg, func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action {
		return delivery.Continue
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { w.Stop(); _ = w.Join() }()
	registerWorkerMetrics(reg, w, r.client, region)
	for w.Stats().Committed != orders[99].Seq {
		if ctx.Err() != nil {
			t.Fatalf("the worker did not commit through the last order: %+v", w.Stats())
		}
		time.Sleep(5 * time.Millisecond) // polling the worker's progress
	}
	var b strings.Builder
	if err := reg.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	if !strings.Contains(text, "\nbatfleet_worker_lag_events 0\n") {
		t.Errorf("a caught-up worker's lag metric is not 0 (the 900 users after its last order are not its lag):\n%s", grep(text, "lag"))
	}
	if strings.Contains(text, "lag_sequences") {
		t.Errorf("the sequence-count lag metric is still exported")
	}
	if !strings.Contains(text, `batfleet_worker_handler_duration_seconds_count{outcome="done"}`) {
		t.Errorf("no handler histogram:\n%s", grep(text, "handler"))
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	// An empty region lags by nothing.
	if got := (&lagCounter{client: r.client}).count(region.WithScope("never"), math.MaxUint64-1, true); got != 0 {
		t.Errorf("lag of an empty region = %v, want 0", got)
	}
}

func grep(text, word string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, word) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
