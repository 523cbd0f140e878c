package integration

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/natstest"
)

// Benchmark volumes.
const (
	benchJournalEvents = 200_000
	benchPayload       = 100 // bytes
	benchWakeSamples   = 500
)

func benchPayloadBytes(i int) []byte {
	p := make([]byte, benchPayload)
	for j := range p {
		p[j] = byte('a' + (i+j)%26)
	}
	return p
}

// BenchmarkRemote measures the fleet over loopback TCP with one embedded
// server (writer, workers and producers in this process, each on its own
// connection):
//
//   - pull/batch=N: one remote durable worker (fleet.StartWorker, kvckpt
//     save after every batch) reads a journal of 200,000 events of 100 B
//     from the start; one op is the whole journal; events/s;
//   - append/batch=N/producers=P: fleet.Client.Append of batches of N
//     events of 100 B by P concurrent producers; one op is one event;
//   - wake: an idle remote worker (parked, idle timeout 10 s) and a single
//     event appended through fleet.Client: the time from Append returning
//     (the acknowledgement) to the handler starting, p50/p99 over 500
//     samples per op; "early" is the share of samples where the handler
//     started before the acknowledgement arrived (counted as 0), and the
//     send-p50/p99 metrics measure from the Append call instead.
func BenchmarkRemote(b *testing.B) {
	r := newRig(b)
	pnc, _ := natstest.Connect(b, r.Server, nats.Name("bench-producer"))
	producer, err := fleet.NewClient(pnc, fleet.ClientConfig{Journal: journalName})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = producer.Close() })

	// The pull journal, built once through the local store.
	var last uint64
	build := sync.OnceFunc(func() {
		begin := time.Now()
		const chunk = 1000
		for lo := 0; lo < benchJournalEvents; lo += chunk {
			events := make([]engine.Event, chunk)
			for i := range events {
				events[i] = engine.Event{Coordinate: engine.MustCoordinate(fmt.Sprintf("bench:%d", (lo+i)%100), "b"),
					Kind: engine.KindData, Payload: benchPayloadBytes(lo + i)}
			}
			seqs := r.appendLocal(b, events...)
			last = seqs[len(seqs)-1]
		}
		b.Logf("built a journal of %d events of %d B in %v", benchJournalEvents, benchPayload, time.Since(begin).Round(time.Millisecond))
	})

	for _, batch := range []int{64, 256} {
		b.Run(fmt.Sprintf("pull/batch=%d", batch), func(b *testing.B) {
			build()
			benchPull(b, r, batch, last)
		})
	}
	for _, batch := range []int{64, 256} {
		for _, producers := range []int{1, 4} {
			b.Run(fmt.Sprintf("append/batch=%d/producers=%d", batch, producers), func(b *testing.B) {
				benchAppend(b, producer, batch, producers)
			})
		}
	}
	b.Run("wake", func(b *testing.B) { benchWake(b, r, producer) })
}

var benchRun atomic.Int64 // makes checkpoint ids unique across runs

func benchPull(b *testing.B, r *rig, batch int, last uint64) {
	ctx := context.Background()
	region := engine.RegionEntity("bench")
	var events, batches atomic.Int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cfg := delivery.DefaultWorkerConfig()
		cfg.CheckpointID = fmt.Sprintf("bench-pull-%d-%d", batch, benchRun.Add(1))
		cfg.BatchSize, cfg.IdleTimeout = batch, time.Second
		w, err := delivery.StartWorker(ctx, r.Client, region, withCheckpoints(cfg, r.Checkpoints), func(_ context.Context, es []engine.Entry, _ *delivery.Delivery) delivery.Action {
			events.Add(int64(len(es)))
			batches.Add(1)
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
	}
	b.StopTimer()
	if got := events.Load(); got != int64(b.N)*benchJournalEvents {
		b.Fatalf("%d events delivered, want %d", got, int64(b.N)*benchJournalEvents)
	}
	b.ReportMetric(float64(events.Load())/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(events.Load())/float64(batches.Load()), "events/batch")
}

func benchAppend(b *testing.B, c *fleet.Client, batch, producers int) {
	ctx := context.Background()
	events := make([]engine.Event, batch)
	for i := range events {
		events[i] = engine.Event{Coordinate: engine.MustCoordinate(fmt.Sprintf("append:%d", i%100), "b"), Kind: engine.KindData, Payload: benchPayloadBytes(i)}
	}
	var next atomic.Int64 // events handed out so far
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	b.ResetTimer()
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				lo := next.Add(int64(batch)) - int64(batch)
				if lo >= int64(b.N) {
					return
				}
				n := min(int64(batch), int64(b.N)-lo)
				if _, err := c.Append(ctx, events[:n]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func benchWake(b *testing.B, r *rig, producer *fleet.Client) {
	ctx := context.Background()
	// An entity of its own per call: a call with a larger b.N must not
	// find the previous call's events.
	run := benchRun.Add(1)
	entity := fmt.Sprintf("wake:%d", run)
	spy := &parkSpy{Source: r.Client}
	var mu sync.Mutex
	var starts []time.Time // handler start times, one per call
	notify := make(chan struct{}, 1)
	cfg := delivery.DefaultWorkerConfig()
	cfg.CheckpointID = fmt.Sprintf("bench-wake-%d", run)
	cfg.Checkpoints, cfg.IdleTimeout = r.Checkpoints, 10*time.Second
	w, err := delivery.StartWorker(ctx, spy, engine.RegionEntity(entity), cfg, func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action {
		now := time.Now()
		mu.Lock()
		starts = append(starts, now)
		mu.Unlock()
		select {
		case notify <- struct{}{}:
		default:
		}
		return delivery.Continue
	})
	if err != nil {
		b.Fatal(err)
	}
	stopOnCleanup(b, w)
	ev := []engine.Event{{Coordinate: engine.MustCoordinate(entity, "b"), Kind: engine.KindData, Payload: benchPayloadBytes(0)}}
	var fromAck, fromSend []time.Duration
	early := 0
	committed, started := uint64(0), false
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for s := 0; s < benchWakeSamples; s++ {
			b.StopTimer()
			waitFor(b, waitLimit, "the worker to park", func() bool { return spy.parkedAt(w, committed, started) })
			b.StartTimer()
			sent := time.Now()
			rs, err := producer.Append(ctx, ev)
			ack := time.Now()
			if err != nil {
				b.Fatal(err)
			}
			select {
			case <-notify:
			case <-time.After(waitLimit):
				b.Fatal("handler did not run")
			}
			mu.Lock()
			calls, ran := len(starts), starts[len(starts)-1]
			mu.Unlock()
			if want := i*benchWakeSamples + s + 1; calls != want {
				b.Fatalf("%d handler calls, want %d", calls, want)
			}
			d := ran.Sub(ack)
			if d < 0 {
				early++
				d = 0
			}
			fromAck = append(fromAck, d)
			fromSend = append(fromSend, ran.Sub(sent))
			committed, started = rs[0].Seq, true
		}
	}
	b.StopTimer()
	pct := func(ds []time.Duration, p float64) float64 {
		s := slices.Clone(ds)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(fromAck, 0.50), "p50-µs")
	b.ReportMetric(pct(fromAck, 0.99), "p99-µs")
	b.ReportMetric(pct(fromSend, 0.50), "send-p50-µs")
	b.ReportMetric(pct(fromSend, 0.99), "send-p99-µs")
	b.ReportMetric(100*float64(early)/float64(len(fromAck)), "early-%")
}
