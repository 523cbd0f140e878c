package journal

// Engine benchmarks (SPEC §12). They report throughput and cost in custom
// units with b.ReportMetric and never assert a time limit: the machine is
// shared and noisy, so numbers are compared with benchstat, not checked.
//
//	BenchmarkFsync          write(100 B)+fsync on the journals' filesystem: the
//	                        baseline every durable append pays.
//	BenchmarkAppendDurable  single-event appends from exactly N goroutines;
//	                        limit-ratio = events/s ÷ (N ÷ fsync p50), the
//	                        fsync p50 probed before and after the run.
//	BenchmarkAppendBatch    one appender, batches of 64 and 256 events.
//	BenchmarkPull           polls of 256 over a 1,000,000-event journal:
//	                        every event, and regions matching 1%.
//	BenchmarkOpenRecover    Open (recovery and index rebuild) of a
//	                        1,000,000-event journal, and the index's heap.
//
// To run them (each run is meaningful at these benchtimes):
//
//	go test -run '^$' -bench 'Fsync|Append' -benchtime 2s -count 5 ./engine/
//	go test -run '^$' -bench 'Pull' -benchtime 3000x -count 5 ./engine/
//	go test -run '^$' -bench 'OpenRecover' -benchtime 3x -count 5 ./engine/

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
)

const (
	benchPayloadBytes = 100
	benchPullMax      = 256

	// The large journal of BenchmarkPull and BenchmarkOpenRecover.
	benchJournalEvents = 1_000_000
	benchEntities      = 10_000 // "e:<i>"
	benchScopes        = 4      // "s:<i>", plus the rare scope
	benchRareScope     = "s:rare"
	benchRareEvery     = 100 // one event in 100 is rare: 1% of the journal
	benchBuildBatch    = 8192

	benchProbeSyncs = 64 // fsyncs of the probe before an append benchmark
)

// benchRareKind is the kind of the rare events (category 2; the rest are
// KindData, category 1).
const benchRareKind engine.Kind = 0x2001

var benchPayload = func() []byte {
	p := make([]byte, benchPayloadBytes)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}()

// benchMedian returns the median of ds (which it sorts).
func benchMedian(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// benchSyncFile is a file that grows by one small write and one fsync at a
// time, like the active segment under single-event group commits.
type benchSyncFile struct {
	f   *os.File
	off int64
}

func newBenchSyncFile(tb testing.TB, dir string) *benchSyncFile {
	tb.Helper()
	f, err := os.CreateTemp(dir, "fsync-probe-*")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = f.Close() })
	return &benchSyncFile{f: f}
}

// writeSync appends p and fsyncs, returning how long both took.
func (sf *benchSyncFile) writeSync(tb testing.TB, p []byte) time.Duration {
	t0 := time.Now()
	if _, err := sf.f.WriteAt(p, sf.off); err != nil {
		tb.Fatal(err)
	}
	if err := sf.f.Sync(); err != nil {
		tb.Fatal(err)
	}
	d := time.Since(t0)
	sf.off += int64(len(p))
	return d
}

// benchFsyncProbe returns the median of n write(100 B)+fsync on a fresh
// file in dir.
func benchFsyncProbe(tb testing.TB, dir string, n int) time.Duration {
	return benchMedian(benchFsyncSamples(tb, dir, n))
}

// benchFsyncSamples times n write(100 B)+fsync on a fresh file in dir.
func benchFsyncSamples(tb testing.TB, dir string, n int) []time.Duration {
	tb.Helper()
	sf := newBenchSyncFile(tb, dir)
	ds := make([]time.Duration, n)
	for i := range ds {
		ds[i] = sf.writeSync(tb, benchPayload)
	}
	return ds
}

// benchOpenStore opens a journal in dir and closes it at cleanup.
func benchOpenStore(tb testing.TB, dir string) *Store {
	tb.Helper()
	s, err := Open(dir, Config{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// benchFewCoords returns n coordinates on n entities of one scope.
func benchFewCoords(n int) []engine.Coordinate {
	cs := make([]engine.Coordinate, n)
	for i := range cs {
		cs[i] = engine.MustCoordinate("bench:"+strconv.Itoa(i), "s:bench")
	}
	return cs
}

// BenchmarkFsync is the baseline of every durable append: one 100-byte
// write appended to a file in the journals' filesystem, then fsync.
func BenchmarkFsync(b *testing.B) {
	sf := newBenchSyncFile(b, b.TempDir())
	var ds []time.Duration
	for b.Loop() {
		ds = append(ds, sf.writeSync(b, benchPayload))
	}
	b.ReportMetric(float64(benchMedian(ds))/1e3, "fsync-µs-p50")
}

// BenchmarkAppendDurable measures single-event durable appends from
// exactly N goroutines sharing group commits. limit-ratio compares the
// achieved rate with the physical limit N ÷ fsync p50 (every appender in
// every fsync), the p50 taken over probes just before and just after the
// run (the disk's speed drifts on a shared machine). Also reported:
// events/fsync, the mean group size; sync-µs, the journal's own mean sync
// (an fdatasync of a group written into preallocated space); gap-µs, the
// rest of a group's cycle (answering the group, the appenders' turnaround,
// collecting and encoding the next group), which is CPU and scheduling
// work every appender waits for; and cpu-cores, the process's CPU time
// over the run's wall time.
func BenchmarkAppendDurable(b *testing.B) {
	for _, n := range []int{1, 16, 64} {
		b.Run("concurrency="+strconv.Itoa(n), func(b *testing.B) { benchAppendDurable(b, n) })
	}
}

func benchAppendDurable(b *testing.B, conc int) {
	dir := b.TempDir()
	probe := benchFsyncSamples(b, dir, benchProbeSyncs)
	s := benchOpenStore(b, filepath.Join(dir, "journal"))
	coords := benchFewCoords(4)
	ctx := b.Context()

	total := int64(b.N)
	var claimed atomic.Int64
	var failed atomic.Pointer[error]
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := range conc {
		ev := engine.Event{Coordinate: coords[g%len(coords)], Kind: engine.KindData, Payload: benchPayload}
		wg.Go(func() {
			<-start
			for claimed.Add(1) <= total {
				if _, err := s.Append(ctx, ev); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	epoch0, syncs0, syncNanos0 := s.Epoch(), s.syncCount.Load(), s.syncNanos.Load()
	cpu0 := benchProcessCPU()
	b.ResetTimer()
	close(start)
	wg.Wait()
	b.StopTimer()
	cpu := benchProcessCPU() - cpu0
	if errp := failed.Load(); errp != nil {
		b.Fatal(*errp)
	}
	probe = append(probe, benchFsyncSamples(b, dir, benchProbeSyncs)...)
	fsyncP50 := benchMedian(probe)

	eps := float64(b.N) / b.Elapsed().Seconds()
	limit := float64(conc) / fsyncP50.Seconds()
	b.ReportMetric(eps, "events/s")
	b.ReportMetric(eps/limit, "limit-ratio")
	b.ReportMetric(float64(fsyncP50)/1e3, "fsync-µs-p50")
	b.ReportMetric(float64(cpu)/float64(b.Elapsed()), "cpu-cores")
	if groups := s.Epoch() - epoch0; groups > 0 {
		b.ReportMetric(float64(b.N)/float64(groups), "events/fsync")
	}
	if syncs := s.syncCount.Load() - syncs0; syncs > 0 {
		syncMean := time.Duration((s.syncNanos.Load() - syncNanos0) / syncs)
		cycle := b.Elapsed() / time.Duration(syncs)
		b.ReportMetric(float64(syncMean)/1e3, "sync-µs")
		b.ReportMetric(float64(cycle-syncMean)/1e3, "gap-µs")
	}
}

// benchProcessCPU returns the CPU time (user and system) this process has
// used.
func benchProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAppendBatch measures one appender writing batches of 64 and 256
// events (one fsync per batch). limit-ratio compares with size ÷ fsync p50.
func BenchmarkAppendBatch(b *testing.B) {
	for _, size := range []int{64, 256} {
		b.Run("size="+strconv.Itoa(size), func(b *testing.B) {
			dir := b.TempDir()
			fsyncP50 := benchFsyncProbe(b, dir, benchProbeSyncs)
			s := benchOpenStore(b, filepath.Join(dir, "journal"))
			coords := benchFewCoords(4)
			evs := make([]engine.Event, size)
			for i := range evs {
				evs[i] = engine.Event{Coordinate: coords[i%len(coords)], Kind: engine.KindData, Payload: benchPayload}
			}
			ctx := b.Context()
			for b.Loop() {
				if _, err := s.AppendBatch(ctx, evs); err != nil {
					b.Fatal(err)
				}
			}
			eps := float64(b.N*size) / b.Elapsed().Seconds()
			b.ReportMetric(eps, "events/s")
			b.ReportMetric(eps/(float64(size)/fsyncP50.Seconds()), "limit-ratio")
			b.ReportMetric(float64(fsyncP50)/1e3, "fsync-µs-p50")
		})
	}
}

// benchEventAt returns the coordinate and kind of user event j of the large
// journal: entity e:<j mod 10,000>, so each entity gets one event per round
// of 10,000; scope s:<round mod 4>; and in every round one entity in 100
// (a different one each round) gets the rare scope and kind instead, so
// the rare events are exactly 1% and spread over every entity.
func benchEventAt(j int, entities, scopes []string) (engine.Coordinate, engine.Kind) {
	ent, round := j%benchEntities, j/benchEntities
	if (ent+round)%benchRareEvery == 0 {
		return engine.MustCoordinate(entities[ent], benchRareScope), benchRareKind
	}
	return engine.MustCoordinate(entities[ent], scopes[round%benchScopes]), engine.KindData
}

// benchBuildJournal opens a journal in dir and appends the large journal's
// n user events to it in big batches. The store stays open.
func benchBuildJournal(b *testing.B, dir string, n int) *Store {
	b.Helper()
	t0 := time.Now()
	s := benchOpenStore(b, dir)
	entities := make([]string, benchEntities)
	for i := range entities {
		entities[i] = "e:" + strconv.Itoa(i)
	}
	scopes := make([]string, benchScopes)
	for i := range scopes {
		scopes[i] = "s:" + strconv.Itoa(i)
	}
	evs := make([]engine.Event, benchBuildBatch)
	ctx := b.Context()
	for j := 0; j < n; {
		k := min(benchBuildBatch, n-j)
		for i := range k {
			c, kind := benchEventAt(j+i, entities, scopes)
			evs[i] = engine.Event{Coordinate: c, Kind: kind, Payload: benchPayload}
		}
		if _, err := s.AppendBatch(ctx, evs[:k]); err != nil {
			b.Fatal(err)
		}
		j += k
	}
	b.Logf("built a journal of %d events in %v", n, time.Since(t0).Round(time.Millisecond))
	return s
}

// BenchmarkPull polls 256 at a time, walking forward through a journal of
// 1,000,000 events (wrapping to the start at the end), and reports the cost
// per returned event. region=all matches every event; scope-1pct and
// category-1pct match the 1% rare events through the scope posting list
// and through the kind category (which has no posting list).
func BenchmarkPull(b *testing.B) {
	s := benchBuildJournal(b, filepath.Join(b.TempDir(), "journal"), benchJournalEvents)
	cases := []struct {
		name   string
		region engine.Region
	}{
		{"region=all", engine.RegionAll()},
		{"region=scope-1pct", engine.RegionScope(benchRareScope)},
		{"region=category-1pct", engine.RegionAll().WithCategory(benchRareKind.Category())},
		// A consumer group's partition pull (merging 1,024/P bucket
		// lists) against the all-region pull: the per-event cost target is
		// at most 2x (GRP-01).
		{"region=partition-1of16", engine.RegionAll().WithPartition(engine.Partition{Index: 1, Count: 16})},
		{"region=partition-1of1024", engine.RegionAll().WithPartition(engine.Partition{Index: 1, Count: 1024})},
		{"region=partition-1of2", engine.RegionAll().WithPartition(engine.Partition{Index: 1, Count: 2})},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) { benchPull(b, s, tc.region) })
	}
}

func benchPull(b *testing.B, s *Store, region engine.Region) {
	ctx := b.Context()
	var position uint64
	started := false
	returned := 0
	for b.Loop() {
		res, err := s.Poll(ctx, region, position, started, benchPullMax)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Entries) == 0 { // the end: start over
			position, started = 0, false
			continue
		}
		returned += len(res.Entries)
		position, started = res.Entries[len(res.Entries)-1].Seq, true
	}
	if returned == 0 {
		b.Fatal("no events returned")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(returned), "ns/event")
	b.ReportMetric(float64(returned)/float64(b.N), "events/op")
}

// BenchmarkOpenRecover times Open of a 1,000,000-event journal: frame
// checks, recovery and index rebuild (the segment files are in the page
// cache after the first open). B/event is the heap the open store keeps
// (HeapInuse after a GC, minus the same before Open) per indexed entry.
func BenchmarkOpenRecover(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "journal")
	if err := benchBuildJournal(b, dir, benchJournalEvents).Close(); err != nil {
		b.Fatal(err)
	}
	b.Run("events="+strconv.Itoa(benchJournalEvents), func(b *testing.B) {
		var perEvent []float64
		opens := 0
		for b.Loop() {
			b.StopTimer()
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.StartTimer()
			s, err := Open(dir, Config{})
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			opens++
			runtime.GC()
			runtime.ReadMemStats(&after)
			entries := s.Stats().Entries
			perEvent = append(perEvent, (float64(after.HeapInuse)-float64(before.HeapInuse))/float64(entries))
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		slices.Sort(perEvent)
		b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(opens), "ms/open")
		b.ReportMetric(perEvent[len(perEvent)/2], "B/event")
	})
}
