package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/natstest"
)

// Volumes of the handler-failure benchmarks.
const (
	benchPoisonEvents   = 100_000
	benchPoisonEntities = 1_000
	benchBarrierSamples = 500
)

// BenchmarkPoison measures what parking costs (SPEC §17) over the fleet
// (remote pulls, kvckpt checkpoints and parked set on one embedded
// server): a durable worker, batch 64, reads a journal of 100,000 events
// of 100 B over 1,000 entities from the start; one op is the whole
// journal; events/s.
//
//   - clean: no handler failure;
//   - park: every batch holding an event of one entity (1 in 1,000) fails
//     without naming it, under Park: the first is bisected, retried and
//     parked; the entity's 99 later events are filtered and parked without
//     reaching the handler (the parked record moves forward in KV before
//     each commit past them). Retries wait 1 ms (Base) so that the one-off
//     backoff of the first failure, which holds the worker for the
//     policy's waits (300 ms with the default 100 ms doubling), does not
//     hide the steady cost.
//
// Clean and park runs alternate; park/clean-% is the median ratio of
// their throughputs (target ≥ 90 %).
func BenchmarkPoison(b *testing.B) {
	r := newRig(b)
	var last uint64
	const chunk = 1000
	for lo := 0; lo < benchPoisonEvents; lo += chunk {
		events := make([]engine.Event, chunk)
		for i := range events {
			events[i] = engine.Event{Coordinate: engine.MustCoordinate(fmt.Sprintf("poison:%d", (lo+i)%benchPoisonEntities), "b"),
				Kind: engine.KindData, Payload: benchPayloadBytes(lo + i)}
		}
		seqs := r.appendLocal(b, events...)
		last = seqs[len(seqs)-1]
	}
	// Clean and park runs alternate (in either order in turn), five
	// rounds per op, so that both see the same machine; the ratio is the median of the rounds'.
	var ratios []float64
	var cleanD, parkD time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for round := 0; round < 5; round++ {
			var c, p time.Duration
			if round%2 == 0 { // either order in turn
				c, p = benchPoison(b, r, false, last), benchPoison(b, r, true, last)
			} else {
				p, c = benchPoison(b, r, true, last), benchPoison(b, r, false, last)
			}
			cleanD, parkD = cleanD+c, parkD+p
			ratios = append(ratios, c.Seconds()/p.Seconds())
		}
	}
	b.StopTimer()
	slices.Sort(ratios)
	n := float64(5 * b.N * benchPoisonEvents)
	b.ReportMetric(n/cleanD.Seconds(), "clean-events/s")
	b.ReportMetric(n/parkD.Seconds(), "park-events/s")
	b.ReportMetric(100*ratios[len(ratios)/2], "park/clean-%")
}

// benchPoison runs one durable worker over the whole journal and returns
// how long it took.
func benchPoison(b *testing.B, r *rig, park bool, last uint64) time.Duration {
	const poisoned = "poison:7"
	var handled atomic.Int64
	cfg := delivery.DefaultWorkerConfig()
	cfg.CheckpointID = fmt.Sprintf("bench-poison-%d", benchRun.Add(1))
	cfg.BatchSize, cfg.IdleTimeout = 64, time.Second
	cfg.Retry = delivery.RetryPolicy{Attempts: 3, Base: time.Millisecond, Max: 2 * time.Millisecond}
	if park {
		cfg.Parked = r.Parked
	}
	begin := time.Now()
	w, err := delivery.StartWorker(context.Background(), r.Client, engine.RegionEntity("poison"), withCheckpoints(cfg, r.Checkpoints),
		func(_ context.Context, es []engine.Entry, d *delivery.Delivery) delivery.Action {
			if park {
				for _, e := range es {
					if e.Coordinate.Entity() == poisoned {
						return d.Fail(errors.New("poisoned"))
					}
				}
			}
			handled.Add(int64(len(es)))
			if es[len(es)-1].Seq == last {
				return delivery.Stop
			}
			return delivery.Continue
		})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Join(); err != nil {
		b.Fatal(err)
	}
	took := time.Since(begin)
	want := int64(benchPoisonEvents)
	if park {
		want -= benchPoisonEvents / benchPoisonEntities
		if st := w.Stats(); st.ParkedEntries != benchPoisonEvents/benchPoisonEntities {
			b.Fatalf("%d entries parked, want %d", st.ParkedEntries, benchPoisonEvents/benchPoisonEntities)
		}
	}
	if got := handled.Load(); got != want {
		b.Fatalf("%d events handled, want %d", got, want)
	}
	return took
}

// BenchmarkBarrier measures the read-your-writes barrier: an idle durable
// worker (held pull) on a region of its own; a producer appends one event
// through fleet.Client and calls fleet.WaitFor with the receipt's seq.
// p50/p99 of the time from the acknowledgement to WaitFor returning (the
// handler ran and its commit reached KV), over 500 samples per op.
func BenchmarkBarrier(b *testing.B) {
	r := newRig(b)
	pnc, _ := natstest.Connect(b, r.Server, nats.Name("bench-producer"))
	producer, err := fleet.NewClient(pnc, fleet.ClientConfig{Journal: journalName})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = producer.Close() })
	run := benchRun.Add(1)
	entity := fmt.Sprintf("barrier:%d", run)
	id := fmt.Sprintf("bench-barrier-%d", run)
	cfg := delivery.DefaultWorkerConfig()
	cfg.CheckpointID, cfg.IdleTimeout = id, fleet.DefaultIdleTimeout
	w, err := delivery.StartWorker(context.Background(), r.Client, engine.RegionEntity(entity), withCheckpoints(cfg, r.Checkpoints),
		func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action { return delivery.Continue })
	if err != nil {
		b.Fatal(err)
	}
	stopOnCleanup(b, w)
	ev := []engine.Event{{Coordinate: engine.MustCoordinate(entity, "b"), Kind: engine.KindData, Payload: benchPayloadBytes(0)}}
	ctx := context.Background()
	// The first event creates the checkpoint (WaitFor needs a record).
	rs, err := producer.Append(ctx, ev)
	if err != nil {
		b.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, waitLimit)
	err = waitForRecord(wctx, producer, r, id, rs[0].Seq)
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for s := 0; s < benchBarrierSamples; s++ {
			rs, err := producer.Append(ctx, ev)
			ack := time.Now()
			if err != nil {
				b.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, waitLimit)
			err = fleet.WaitFor(wctx, producer, r.Checkpoints, id, rs[0].Seq)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(ack))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// waitForRecord waits until checkpoint id exists and is through seq.
func waitForRecord(ctx context.Context, c *fleet.Client, r *rig, id string, seq uint64) error {
	for {
		err := fleet.WaitFor(ctx, c, r.Checkpoints, id, seq)
		if !errors.Is(err, fleet.ErrUnknownCheckpoint) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}
