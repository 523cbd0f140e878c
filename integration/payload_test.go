package integration

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet"
)

// TestPullReplyFitsWithCancelledRanges: the wire protocol promises that a pull
// reply never exceeds the server's max payload — the writer returns fewer
// entries instead — and that only an entry too large by itself is an
// error, refused at append time. The cancelled ranges a pull crosses
// travel in the same reply. Here 700 separate cancelled ranges (fence
// cancels between visible events, about 4.9 KB of ranges) precede the
// region's entries, so a fresh worker's first pull crosses all of them,
// and a local worker and a remote one must deliver the same batches with
// the same gap observations:
//
//   - "medium-entries": 100 entries of 16 KB, batch 256, so the byte
//     budget (not the batch size) ends the reply;
//   - "max-size-entry": one entry of the largest size the writer accepts
//     (fleet.MaxEntryBytes of the server's max payload), which leaves
//     4096 bytes for the rest of the reply.
func TestPullReplyFitsWithCancelledRanges(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	s := r.Store()
	const ranges = 700
	begin := time.Now()
	for i := 0; i < ranges; i++ {
		if err := s.BeginFence(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendFenced(ctx, []engine.Event{dataEvent("gaps:hidden", "s", "hidden")}); err != nil {
			t.Fatal(err)
		}
		if err := s.CancelFence(ctx); err != nil {
			t.Fatal(err)
		}
		r.appendLocal(t, dataEvent("gaps:between", "s", "visible")) // keeps the ranges apart
	}
	if n := len(s.CancelledRanges()); n != ranges {
		t.Fatalf("%d cancelled ranges, want %d", n, ranges)
	}
	t.Logf("%d cancelled ranges made in %v", ranges, time.Since(begin).Round(time.Millisecond))

	for i := 0; i < 100; i++ {
		r.appendLocal(t, dataEvent("gaps:medium", "s", strings.Repeat("m", 16<<10)))
	}
	maxEntry := fleet.MaxEntryBytes(r.WriterNC.MaxPayload())
	r.appendLocal(t, dataEvent("gaps:max", "s", strings.Repeat("x", maxEntry-len("gaps:max")-len("s"))))

	for _, tc := range []struct {
		name   string
		region engine.Region
		batch  int
		want   int // entries
	}{
		{"medium-entries", engine.RegionEntity("gaps:medium"), 256, 100},
		{"max-size-entry", engine.RegionEntity("gaps:max"), 64, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local := drainRegion(t, func(cfg delivery.WorkerConfig, h delivery.Handler) (*delivery.Worker, error) {
				return delivery.StartWorker(ctx, s, tc.region, cfg, h)
			}, tc.batch, tc.want)
			remote := drainRegion(t, func(cfg delivery.WorkerConfig, h delivery.Handler) (*delivery.Worker, error) {
				return delivery.StartWorker(ctx, r.Client, tc.region, cfg, h)
			}, tc.batch, tc.want)
			t.Logf("local: %s", local)
			t.Logf("remote: %s", remote)
			if local.err != nil {
				t.Fatalf("local worker: %v", local.err)
			}
			if remote.err != nil {
				t.Fatalf("remote worker failed where the local one delivered %d entries: %v", local.events, remote.err)
			}
			if remote.events != tc.want || !reflect.DeepEqual(remote.gaps, local.gaps) {
				t.Fatalf("remote worker: %d entries, gaps covering %d seqs; local: %d entries, gaps covering %d seqs",
					remote.events, gapSeqs(remote.gaps), local.events, gapSeqs(local.gaps))
			}
		})
	}
}

// drained is what one worker got from a region.
type drained struct {
	events  int
	batches []int // sizes
	gaps    []delivery.GapObservation
	err     error // Join's result
}

func (d drained) String() string {
	return fmt.Sprintf("%d entries in batches %v, %d gap observations covering %d seqs, Join %v",
		d.events, d.batches, len(d.gaps), gapSeqs(d.gaps), d.err)
}

func gapSeqs(gs []delivery.GapObservation) uint64 {
	var n uint64
	for _, g := range gs {
		for _, r := range g.Ranges {
			n += r.End - r.Start
		}
	}
	return n
}

// drainRegion runs an in-memory worker until it has been handed want
// entries (then it stops) or it exits on its own.
func drainRegion(t *testing.T, start func(delivery.WorkerConfig, delivery.Handler) (*delivery.Worker, error), batch, want int) drained {
	t.Helper()
	var mu sync.Mutex
	var d drained
	cfg := delivery.DefaultWorkerConfig()
	cfg.BatchSize = batch
	w, err := start(cfg, func(_ context.Context, b []engine.Entry, del *delivery.Delivery) delivery.Action {
		mu.Lock()
		defer mu.Unlock()
		d.events += len(b)
		d.batches = append(d.batches, len(b))
		d.gaps = append(d.gaps, del.Gaps...)
		if d.events >= want {
			return delivery.Stop
		}
		return delivery.Continue
	})
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, w)
	err = joinWithin(t, w, waitLimit)
	mu.Lock()
	defer mu.Unlock()
	d.err = err
	return d
}
