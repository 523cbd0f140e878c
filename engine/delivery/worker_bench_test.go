package delivery

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/journal"
)

// wbJournal builds a journal of n events of 100-byte payloads over 10,000
// entities in dir.
func wbJournal(b *testing.B, dir string, n int) {
	b.Helper()
	s, err := journal.Open(dir, journal.Config{})
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 100)
	batch := make([]engine.Event, 0, 1024)
	for i := 0; i < n; i++ {
		payload[0] = byte(i)
		batch = append(batch, engine.Event{Coordinate: engine.MustCoordinate(fmt.Sprintf("e:%d", i%10000), "bench"), Kind: engine.KindData, Payload: slices.Clone(payload)})
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := s.AppendBatch(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWorkerThroughput runs a local durable worker over a journal of
// 1,000,000 events (10,000 with -short) per op, saving a checkpoint per
// batch, with a handler that touches every payload byte. Report:
// events/s.
func BenchmarkWorkerThroughput(b *testing.B) {
	n := 1_000_000
	if testing.Short() {
		n = 10_000
	}
	dir := b.TempDir()
	wbJournal(b, dir, n)
	s, err := journal.Open(dir, journal.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	region := engine.RegionEntity("e")
	for _, store := range []string{"memory", "file"} {
		for _, batch := range []int{64, 256} {
			b.Run(fmt.Sprintf("store=%s/batch=%d", store, batch), func(b *testing.B) {
				var total time.Duration
				for i := 0; i < b.N; i++ {
					var ckpt checkpoint.Store = checkpoint.NewMemoryStore()
					if store == "file" {
						ckpt = checkpoint.NewFileStore(b.TempDir())
					}
					cfg := DefaultWorkerConfig()
					cfg.BatchSize = batch
					cfg.CheckpointID = "bench"
					cfg.Checkpoints = ckpt
					seen := 0
					var sum byte
					start := time.Now()
					w, err := StartWorker(context.Background(), s, region, cfg, func(_ context.Context, es []engine.Entry, _ *Delivery) Action {
						for _, e := range es {
							for _, c := range e.Payload {
								sum ^= c
							}
						}
						seen += len(es)
						if seen >= n {
							return Stop
						}
						return Continue
					})
					if err != nil {
						b.Fatal(err)
					}
					if err := w.Join(); err != nil {
						b.Fatal(err)
					}
					total += time.Since(start)
					if seen != n {
						b.Fatalf("handled %d of %d events", seen, n)
					}
					_ = sum
				}
				b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "events/s")
			})
		}
	}
}

// BenchmarkWorkerWake measures, for an idle worker (idle timeout 1 s, so
// only the epoch wakes it), the time from an append's acknowledgement to
// the handler's start. Report: wake-µs-p50 and wake-µs-p99 over the op's
// samples (2,000 per op by default, 200 with -short).
func BenchmarkWorkerWake(b *testing.B) {
	samples := 2000
	if testing.Short() {
		samples = 200
	}
	s, err := journal.Open(b.TempDir(), journal.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var mu sync.Mutex
	var startedAt time.Time
	handled := make(chan struct{}, 1)
	cfg := DefaultWorkerConfig()
	cfg.IdleTimeout = time.Second
	w, err := StartWorker(context.Background(), s, engine.RegionEntity("wake"), cfg, func(_ context.Context, es []engine.Entry, _ *Delivery) Action {
		mu.Lock()
		startedAt = time.Now()
		mu.Unlock()
		handled <- struct{}{}
		return Continue
	})
	if err != nil {
		b.Fatal(err)
	}
	defer w.StopAndJoin()
	coord := engine.MustCoordinate("wake", "bench")
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < samples; j++ {
			if _, err := s.Append(context.Background(), engine.Event{Coordinate: coord, Kind: engine.KindData, Payload: []byte("x")}); err != nil {
				b.Fatal(err)
			}
			acked := time.Now()
			select {
			case <-handled:
			case <-time.After(10 * time.Second):
				b.Fatal("worker did not wake")
			}
			mu.Lock()
			d := startedAt.Sub(acked)
			mu.Unlock()
			lat = append(lat, max(d, 0)) // the handler may start before the appender sees its receipt
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "wake-µs-p50")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "wake-µs-p99")
}
