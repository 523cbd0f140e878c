package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/kvckpt"
)

const (
	journalName = "bench"
	// appendBatch and appendInFlight are the producer's shape: `writer
	// append --gen` defaults (256 events per request, 4 requests in flight).
	appendBatch    = 256
	appendInFlight = 4
)

// bfSide is one batfleet round: a writer node (journal, journal.Store,
// fleet.Writer on its own connection) on a fresh embedded server.
type bfSide struct {
	node   *natsNode
	store  *journal.Store
	writer *fleet.Writer
	wl     *workload
}

func startBatfleet(root string, wl *workload, syncAlways bool) (*bfSide, error) {
	node, err := startNode(root, "batfleet", syncAlways)
	if err != nil {
		return nil, err
	}
	b := &bfSide{node: node, wl: wl}
	wnc, err := node.connect("batfleet-writer")
	if err != nil {
		b.close()
		return nil, err
	}
	store, err := journal.Open(node.path("journal"), journal.Config{MaxEntryBytes: fleet.MaxEntryBytes(wnc.MaxPayload())})
	if err != nil {
		b.close()
		return nil, fmt.Errorf("open journal: %w", err)
	}
	b.store = store
	w, err := fleet.NewWriter(wnc, store, fleet.WriterConfig{Journal: journalName})
	if err != nil {
		b.close()
		return nil, err
	}
	b.writer = w
	return b, nil
}

func (b *bfSide) close() {
	if b.writer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = b.writer.Close(ctx)
		cancel()
	}
	if b.store != nil {
		_ = b.store.Close()
	}
	b.node.shutdown()
}

// appendAll appends the first n events over NATS through a producer's
// fleet.Client: requests of appendBatch events, appendInFlight at once,
// each answered once its events are fsynced and visible. It returns
// events/s from the first request to the last receipt.
func (b *bfSide) appendAll(ctx context.Context, n int) (float64, error) {
	nc, err := b.node.connect("batfleet-producer")
	if err != nil {
		return 0, err
	}
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: journalName, Timeout: 30 * time.Second})
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	defer client.Close()
	type job struct{ from, to int }
	jobs := make(chan job)
	var firstErr error
	var errOnce sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for k := 0; k < appendInFlight; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			events := make([]engine.Event, 0, appendBatch)
			for j := range jobs {
				events = events[:0]
				for i := j.from; i < j.to; i++ {
					events = append(events, b.wl.event(i))
				}
				if _, err := client.Append(ctx, events); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("append events %d..%d: %w", j.from, j.to, err); cancel() })
					return
				}
			}
		}()
	}
feed:
	for i := 0; i < n; i += appendBatch {
		select {
		case jobs <- job{i, min(i+appendBatch, n)}:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if st := b.store.Stats(); st.Entries < n {
		return 0, fmt.Errorf("journal holds %d entries after appending %d events", st.Entries, n)
	}
	return float64(n) / elapsed.Seconds(), nil
}

// workerNode is one remote worker's node: its own connection, fleet.Client
// (the engine source over NATS) and kvckpt checkpoint store.
type workerNode struct {
	nc     *nats.Conn
	client *fleet.Client
	ckpt   *kvckpt.Store
}

func (w *workerNode) close() {
	_ = w.client.Close()
	w.nc.Close()
}

func (b *bfSide) newWorkerNode(ctx context.Context, name string) (*workerNode, error) {
	nc, err := b.node.connect(name)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: journalName, Timeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	// The same generous bound as the client's: on a loaded machine
	// creating the bucket can take longer than the 5 s default.
	ck, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: journalName, Timeout: 30 * time.Second})
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	return &workerNode{nc: nc, client: client, ckpt: ck}, nil
}

// regions returns the regions of a run with workers workers: everything
// the workload appended (entity prefix "ent"), or its 4 disjoint
// partitions ent:p0..ent:p3, with their event counts.
func (b *bfSide) regions(workers int) ([]engine.Region, []int) {
	if workers == 1 {
		return []engine.Region{engine.RegionEntity("ent")}, []int{b.wl.n}
	}
	var rs []engine.Region
	var ns []int
	for p := 0; p < numParts; p++ {
		rs = append(rs, engine.RegionEntity(fmt.Sprintf("ent:p%d", p)))
		ns = append(ns, b.wl.perPart[p])
	}
	return rs, ns
}

// consume runs workers durable remote workers (1, or 4 on the disjoint
// partitions) with the given batch size over the journal, each saving a
// KV compare-and-swap checkpoint after every batch. The handler touches
// every payload byte and returns Stop after its region's last event, so a
// worker exits once that batch's checkpoint is saved. It returns events/s
// from the workers' start until the last one exited, and the check.
func (b *bfSide) consume(ctx context.Context, label string, workers, batch int, run string) (float64, check, error) {
	regions, counts := b.regions(workers)
	nodes := make([]*workerNode, len(regions))
	for k := range regions {
		nd, err := b.newWorkerNode(ctx, fmt.Sprintf("batfleet-worker-%d", k))
		if err != nil {
			return 0, check{}, err
		}
		defer nd.close()
		nodes[k] = nd
	}
	sk := newSink(b.wl.n)
	ws := make([]*delivery.Worker, len(regions))
	ids := make([]string, len(regions))
	start := time.Now()
	for k, region := range regions {
		want := counts[k]
		seen := 0
		cfg := delivery.DefaultWorkerConfig()
		cfg.BatchSize = batch
		cfg.IdleTimeout = time.Second // epoch messages wake; the timeout is only the safety net
		cfg.CheckpointID = fmt.Sprintf("%s-w%d", run, k)
		ids[k] = cfg.CheckpointID
		w, err := delivery.StartWorker(ctx, nodes[k].client, region, withCheckpoints(cfg, nodes[k].ckpt),
			func(_ context.Context, es []engine.Entry, _ *delivery.Delivery) delivery.Action {
				var sum uint64
				for i := range es {
					sum += sk.handle(es[i].Payload)
				}
				sk.account(len(es), sum)
				seen += len(es)
				if seen >= want {
					return delivery.Stop
				}
				return delivery.Continue
			})
		if err != nil {
			return 0, check{}, err
		}
		ws[k] = w
	}
	var runErr error
	for k, w := range ws {
		select {
		case <-w.Done():
			if err := w.Join(); err != nil && runErr == nil {
				runErr = fmt.Errorf("%s: worker %d: %w", label, k, err)
			}
		case <-ctx.Done():
			for _, w := range ws {
				w.Stop()
			}
			return 0, sk.close(label, b.wl.sum), fmt.Errorf("%s: %w (handled %d of %d)", label, ctx.Err(), sk.handled.Load(), b.wl.n)
		}
	}
	elapsed := time.Since(start)
	c := sk.close(label, b.wl.sum)
	if runErr != nil {
		return 0, c, runErr
	}
	// The last checkpoint of each worker must sit on its region's last event.
	for k, w := range ws {
		rec, _, err := nodes[k].ckpt.Load(ctx, ids[k])
		if err != nil {
			return 0, c, fmt.Errorf("%s: load checkpoint %s: %w", label, ids[k], err)
		}
		if st := w.Stats(); !rec.Started || rec.Position != st.Committed || st.Saves != st.Batches || st.Events != uint64(counts[k]) {
			return 0, c, fmt.Errorf("%s: worker %d: checkpoint at %d (started %v), committed %d, %d saves for %d batches, %d events of %d",
				label, k, rec.Position, rec.Started, st.Committed, st.Saves, st.Batches, st.Events, counts[k])
		}
	}
	return float64(b.wl.n) / elapsed.Seconds(), c, c.err()
}

// parkSpy is the worker's source with a count of parks in progress, so
// the wake test appends only to a worker that is truly idle (parked).
type parkSpy struct {
	delivery.Source
	inPark atomic.Int32
	woke   atomic.Int64 // when the last park that an epoch ended returned (unix ns)
}

func (s *parkSpy) Park(ctx context.Context, snap engine.Snapshot, timeout time.Duration) bool {
	s.inPark.Add(1)
	defer s.inPark.Add(-1)
	woken := s.Source.Park(ctx, snap, timeout)
	if woken {
		s.woke.Store(time.Now().UnixNano())
	}
	return woken
}

// wake measures wake latency: one durable remote worker (batch 64, KV
// checkpoint per batch, idle timeout 1 s so only epoch messages wake it)
// on its own region "wake" sits parked; a producer appends one event,
// samples times, each after the worker has committed the previous one,
// parked, and stayed idle for gap.
func (b *bfSide) wake(ctx context.Context, samples int, gap time.Duration, run string) (*latency, check, error) {
	nd, err := b.newWorkerNode(ctx, "batfleet-wake-worker")
	if err != nil {
		return nil, check{}, err
	}
	defer nd.close()
	pnc, err := b.node.connect("batfleet-wake-producer")
	if err != nil {
		return nil, check{}, err
	}
	producer, err := fleet.NewClient(pnc, fleet.ClientConfig{Journal: journalName, Timeout: 30 * time.Second})
	if err != nil {
		return nil, check{}, err
	}
	defer pnc.Close()
	defer producer.Close()

	sk := newSink(samples)
	starts := make(chan time.Time, samples)
	spy := &parkSpy{Source: nd.client}
	cfg := delivery.DefaultWorkerConfig()
	cfg.BatchSize = 64
	cfg.IdleTimeout = time.Second
	cfg.CheckpointID = run + "-wake"
	cfg.Checkpoints = nd.ckpt
	w, err := delivery.StartWorker(ctx, spy, engine.RegionEntity("wake"), cfg,
		func(_ context.Context, es []engine.Entry, _ *delivery.Delivery) delivery.Action {
			t := time.Now()
			var sum uint64
			for i := range es {
				sum += sk.handle(es[i].Payload)
			}
			sk.account(len(es), sum)
			for range es {
				starts <- t
			}
			return delivery.Continue
		})
	if err != nil {
		return nil, check{}, err
	}
	defer w.StopAndJoin()

	coord := engine.MustCoordinate("wake", scope)
	lat := &latency{}
	payload := make([]byte, payloadSize)
	var wantSum uint64
	var lastSeq uint64
	sched := startSchedWatch()
	// Every wait below is bounded by the run's timeout (ctx), not by a
	// latency guess: a slow sample is a measurement, not a failure.
	for i := 0; i < samples; i++ {
		// Idle: the previous event is committed and the worker is parked.
		for {
			st := w.Stats()
			if (i == 0 || (st.CommittedStarted && st.Committed == lastSeq)) && spy.inPark.Load() > 0 {
				break
			}
			select {
			case <-w.Done():
				return nil, check{}, fmt.Errorf("wake worker exited: %v", w.Join())
			default:
			}
			if err := ctx.Err(); err != nil {
				return nil, check{}, fmt.Errorf("wake worker not idle after sample %d: %w", i, err)
			}
			time.Sleep(50 * time.Microsecond)
		}
		time.Sleep(gap)
		fillPayload(payload, uint64(i))
		for _, c := range payload {
			wantSum += uint64(c)
		}
		send := time.Now()
		rs, err := producer.Append(ctx, []engine.Event{{Coordinate: coord, Kind: engine.KindData, Payload: payload}})
		ack := time.Now()
		if err != nil {
			return nil, check{}, fmt.Errorf("wake append %d: %w", i, err)
		}
		lastSeq = rs[0].Seq
		select {
		case t := <-starts:
			lat.add(send, ack, t)
			if woke := time.Unix(0, spy.woke.Load()); woke.After(send) && !woke.After(t) {
				lat.toWake = append(lat.toWake, woke.Sub(send))
				lat.wakeToStart = append(lat.wakeToStart, t.Sub(woke))
			}
		case <-ctx.Done():
			return nil, check{}, fmt.Errorf("wake sample %d: handler did not start: %w", i, ctx.Err())
		}
	}
	lat.sched = sched.since()
	c := sk.close("batfleet wake", wantSum)
	return lat, c, c.err()
}

// withCheckpoints returns cfg with its checkpoint store set to ck.
func withCheckpoints(cfg delivery.WorkerConfig, ck checkpoint.Store) delivery.WorkerConfig {
	cfg.Checkpoints = ck
	return cfg
}
