package kvckpt

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/internal/natstest"
)

// The benchmarks below measure a checkpoint save (Store.Save: validate the
// id, encode the record, KV compare-and-swap, map the result) against its
// floor, a raw kv.Update of the same-sized value from the last revision.
// Both run over loopback TCP against one embedded server per run, each
// client on its own connection and its own key, as separate workers
// would. Reported: per-write latency p50 and p99 and writes per second
// (as saves/s for both, so the two line up).
//
//	go test -run '^$' -bench . -count 6 ./kvckpt/ > bench.txt
//	go run golang.org/x/perf/cmd/benchstat@latest bench.txt

func BenchmarkSave(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchCAS(b, clients, func(b *testing.B, js jetstream.JetStream, client int) func() {
				s := openStore(b, js, Config{Journal: "bench"})
				id := fmt.Sprintf("bench worker %d", client) // an encoded key, as most ids are
				rec := benchRecord(client)
				rev, err := s.Save(context.Background(), id, rec, 0)
				if err != nil {
					b.Fatal(err)
				}
				return func() {
					rec.Position++
					rev, err = s.Save(context.Background(), id, rec, rev)
					if err != nil {
						b.Error(err)
					}
				}
			})
		})
	}
}

func BenchmarkRawUpdate(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchCAS(b, clients, func(b *testing.B, js jetstream.JetStream, client int) func() {
				s := openStore(b, js, Config{Journal: "bench"}) // the same bucket
				key := s.Key(fmt.Sprintf("bench worker %d", client))
				value := checkpoint.Encode(benchRecord(client))
				rev, err := s.kv.Create(context.Background(), key, value)
				if err != nil {
					b.Fatal(err)
				}
				return func() {
					rev, err = s.kv.Update(context.Background(), key, value, rev)
					if err != nil {
						b.Error(err)
					}
				}
			})
		})
	}
}

// benchRecord is a record of realistic size (~160 bytes encoded).
func benchRecord(client int) checkpoint.Record {
	ident := engine.RegionEntity("order").WithScope("shop").Identity()
	return checkpoint.Record{
		Position: 1_000_000, Started: true, RegionIdentity: &ident,
		JournalID: "0123456789abcdef0123456789abcdef",
		Owner:     fmt.Sprintf("worker-host-%d-1234-abcdef", client),
		UpdatedMs: uint64(time.Now().UnixMilli()),
	}
}

// benchCAS starts a server, gives each of clients goroutines its own
// connection and the write op setup returns, and runs b.N writes split
// over them, timing each.
func benchCAS(b *testing.B, clients int, setup func(b *testing.B, js jetstream.JetStream, client int) func()) {
	ts := startTestServer(b)
	ops := make([]func(), clients)
	for i := range ops {
		_, js := natstest.ConnectURL(b, ts.URL())
		ops[i] = setup(b, js, i)
	}
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := range clients {
		n := b.N / clients
		if i < b.N%clients {
			n++
		}
		lat[i] = make([]time.Duration, 0, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			op := ops[i]
			for range n {
				t0 := time.Now()
				op()
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "saves/s")
}

// BenchmarkSaveClientWork is what Save adds to a raw kv.Update on the
// client, without the round trip: id validation, key encoding, record
// encoding and the default-timeout context. Far steadier than the
// end-to-end numbers on a shared machine, it bounds Save's overhead.
func BenchmarkSaveClientWork(b *testing.B) {
	s := &Store{journal: "bench", cfg: Config{Timeout: DefaultTimeout}}
	rec := benchRecord(0)
	const id = "bench worker 0"
	b.ReportAllocs()
	for b.Loop() {
		if err := checkpoint.ValidateID(id); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := withTimeout(context.Background(), s.cfg.Timeout)
		rec.Position++
		benchSink = len(s.Key(id)) + len(checkpoint.Encode(rec))
		cancel()
		_ = ctx
	}
}

var benchSink int
