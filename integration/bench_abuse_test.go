package integration

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
)

// Benchmark volume: the good worker's region.
const benchAbuseEvents = 100_000

// BenchmarkWireAbuse measures the throughput side of the wire abuse issue
// ("the good worker's throughput stays within 20 % of a clean run"): one
// durable remote worker (batch 64, a kvckpt commit per batch) reads a
// region of 100,000 events of 100 B (among 25,000 of other entities) from the
// start, once with nothing else running (clean) and once while
// abuseHostiles clients send the TestWireAbuse corpus in a loop (abuse):
// flood, each sending its next request as soon as the last is answered;
// paced-400rps, each at most 100 requests a second. Every iteration runs
// both, alternately, on one writer. Metrics: clean-events/s,
// abuse-events/s, their ratio abuse/clean (the target: at least
// 0.8), and the hostile requests answered per second during the abuse run.
// Every hostile reply is checked as in TestWireAbuse.
//
// Everything runs in this process: the hostile clients' bytes (the
// corpus averages about 10 KB a request, some requests near 1 MB) are
// copied by the embedded server and read by the writer's connection on the
// same cores as the good worker, so on a small machine a flood costs the
// good worker mostly CPU and loopback bandwidth, not writer work.
func BenchmarkWireAbuse(b *testing.B) {
	r := newRig(b)
	corpus := abuseCorpus(b)
	var last uint64
	for lo := 0; lo < benchAbuseEvents; lo += 1000 {
		var evs []engine.Event
		for i := lo; i < lo+1000; i++ {
			evs = append(evs, engine.Event{Coordinate: engine.MustCoordinate(fmt.Sprintf("good:%d", i%100), "b"),
				Kind: engine.KindData, Payload: benchPayloadBytes(i)})
			if i%4 == 0 {
				evs = append(evs, engine.Event{Coordinate: engine.MustCoordinate(fmt.Sprintf("other:%d", i%100), "b"),
					Kind: engine.KindData, Payload: benchPayloadBytes(i)})
			}
		}
		seqs := r.appendLocal(b, evs...)
		for i, ev := range evs {
			if strings.HasPrefix(ev.Coordinate.Entity(), "good:") {
				last = seqs[i]
			}
		}
	}

	for _, load := range []struct {
		name  string
		every time.Duration // per hostile client; 0: a closed loop
	}{{"flood", 0}, {"paced-400rps", 10 * time.Millisecond}} {
		b.Run(load.name, func(b *testing.B) { benchWireAbuse(b, r, corpus, last, load.every) })
	}
}

func benchWireAbuse(b *testing.B, r *rig, corpus []abuseCase, last uint64, every time.Duration) {
	var clean, abused time.Duration
	var hostileReqs int64
	var problems abuseProblems
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clean += benchAbuseConsume(b, r, last)

		var stop atomic.Bool
		before := problems.sent.Load()
		hostiles := runHostiles(b, r, corpus, every, func(_, _ int) bool { return stop.Load() }, &problems)
		// The abuse is under way before the worker starts.
		waitFor(b, waitLimit, "the hostile clients to be answered", func() bool { return problems.sent.Load()-before >= abuseHostiles })
		abused += benchAbuseConsume(b, r, last)
		stop.Store(true)
		hostiles.Wait()
		hostileReqs += problems.sent.Load() - before
	}
	b.StopTimer()
	problems.report(b)
	cleanRate := float64(b.N*benchAbuseEvents) / clean.Seconds()
	abuseRate := float64(b.N*benchAbuseEvents) / abused.Seconds()
	b.ReportMetric(cleanRate, "clean-events/s")
	b.ReportMetric(abuseRate, "abuse-events/s")
	b.ReportMetric(abuseRate/cleanRate, "abuse/clean")
	b.ReportMetric(float64(hostileReqs)/abused.Seconds(), "hostile-req/s")
}

var benchAbuseRun atomic.Int64 // makes checkpoint ids unique across runs

// benchAbuseConsume runs a durable worker over the good region from the
// start to last and returns how long it took.
func benchAbuseConsume(b *testing.B, r *rig, last uint64) time.Duration {
	b.Helper()
	var events atomic.Int64
	cfg := delivery.DefaultWorkerConfig()
	cfg.CheckpointID = fmt.Sprintf("bench-abuse-%d", benchAbuseRun.Add(1))
	cfg.BatchSize, cfg.IdleTimeout = 64, time.Second
	start := time.Now()
	w, err := delivery.StartWorker(context.Background(), r.Client, engine.RegionEntity("good"), withCheckpoints(cfg, r.Checkpoints),
		func(_ context.Context, es []engine.Entry, _ *delivery.Delivery) delivery.Action {
			events.Add(int64(len(es)))
			if es[len(es)-1].Seq == last {
				return delivery.Stop
			}
			return delivery.Continue
		})
	if err != nil {
		b.Fatal(err)
	}
	if err := joinWithin(b, w, 5*time.Minute); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	if got := events.Load(); got != benchAbuseEvents {
		b.Fatalf("the good worker got %d events, want %d", got, benchAbuseEvents)
	}
	return took
}
