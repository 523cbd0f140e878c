package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/integration/internal/benchkit"
	"github.com/batfleet/batfleet/kvckpt"
)

const (
	journalName = "fanout"
	streamName  = "FANOUT"
	busySubject = "fan.busy"
	busyEntity  = "busy"
	scopeName   = "fanout"
	// maxAckPending never throttles a consumer here.
	maxAckPending = 1 << 16
	// maxConsumers lifts the server's default limit of 1,000 consumers
	// per stream.
	maxConsumers = 10_000
)

// server is one system's server process.
type server struct {
	proc    *benchkit.Child
	url     string
	metrics string // batfleet: the writer's /metrics address
	pprof   string // the process's pprof address
	stopSig syscall.Signal
}

func (s *server) stop() error { return s.proc.Stop(s.stopSig, 60*time.Second) }

// startWriter starts the batfleet writer child (writer + embedded
// nats-server in one process) storing under dir.
func startWriter(self, dir string, stderr *benchkit.PrefixWriter) (*server, error) {
	proc, err := benchkit.StartChild("writer", self, []string{"writer", "--data", dir, "--journal", journalName}, stderr)
	if err != nil {
		return nil, err
	}
	var r writerReady
	if err := proc.Await("ready", &r, time.Minute); err != nil {
		_ = proc.Stop(syscall.SIGKILL, 5*time.Second)
		return nil, err
	}
	return &server{proc: proc, url: r.NATS, metrics: r.Metrics, pprof: r.PProf}, nil
}

// startNATSServer starts a JetStream nats-server process storing under
// dir (file storage, the server's default sync), with pprof.
func startNATSServer(bin, dir string, stderr *benchkit.PrefixWriter) (*server, error) {
	pport, err := benchkit.FreePort()
	if err != nil {
		return nil, err
	}
	ns, err := benchkit.StartNATSServer(bin, dir, "fanout-js", stderr, "--profile", fmt.Sprint(pport))
	if err != nil {
		return nil, err
	}
	return &server{proc: ns.Child, url: ns.URL, pprof: fmt.Sprintf("127.0.0.1:%d", pport), stopSig: syscall.SIGTERM}, nil
}

// side is one system in the harness process: the producer, the busy
// consumer, and a monitor counting pull requests on the wire.
type side interface {
	// publish appends or publishes one event and returns once it is
	// acknowledged.
	publish(ctx context.Context, payload []byte) error
	// wirePulls returns the pull requests seen so far: from the idle
	// consumers and from the busy one.
	wirePulls() (idle, busy uint64)
	// writerCounters returns the writer's own counts of pulls answered
	// and epoch messages published (batfleet only).
	writerCounters() (pulls, epochs uint64, ok bool)
	// busy returns the busy consumer's handler calls and checkpoint saves.
	busy() *busyTimings
	// notes are irregularities of the busy consumer (errors, heartbeats).
	notes() []string
	close()
}

// handleFunc is the busy consumer's handler: one event's payload, the
// time the handler saw it.
type handleFunc func(payload []byte, at int64)

func connect(url, name string) (*nats.Conn, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.Timeout(5*time.Second), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", name, err)
	}
	return nc, nil
}

// busyTimings records the busy consumer's handler calls (batches) and,
// for batfleet, how long each checkpoint save took.
type busyTimings struct {
	batches atomic.Uint64
	mu      sync.Mutex
	saves   []timedSave
}

type timedSave struct {
	at int64 // end, Unix ns
	d  time.Duration
}

func (b *busyTimings) reset() {
	b.mu.Lock()
	b.saves = b.saves[:0]
	b.mu.Unlock()
}

// savesBetween returns the durations of the saves that ended in [from, to].
func (b *busyTimings) savesBetween(from, to int64) []time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []time.Duration
	for _, s := range b.saves {
		if s.at >= from && s.at <= to {
			out = append(out, s.d)
		}
	}
	return out
}

// timedStore is a checkpoint store that times each save.
type timedStore struct {
	checkpoint.Store
	t *busyTimings
}

func (s timedStore) Save(ctx context.Context, id string, rec checkpoint.Record, expected checkpoint.Revision) (checkpoint.Revision, error) {
	t0 := time.Now()
	rev, err := s.Store.Save(ctx, id, rec, expected)
	end := time.Now()
	s.t.mu.Lock()
	s.t.saves = append(s.t.saves, timedSave{at: end.UnixNano(), d: end.Sub(t0)})
	s.t.mu.Unlock()
	return rev, err
}

// pullMonitor counts pull requests by subscribing to their subject (a
// plain subscription gets a copy of each) and classifying each by busy.
type pullMonitor struct {
	nc         *nats.Conn
	idle, busy atomic.Uint64
}

func newPullMonitor(url, subject string, busy func(*nats.Msg) bool) (*pullMonitor, error) {
	nc, err := connect(url, "fanout-monitor")
	if err != nil {
		return nil, err
	}
	m := &pullMonitor{nc: nc}
	if _, err := nc.Subscribe(subject, func(msg *nats.Msg) {
		if busy(msg) {
			m.busy.Add(1)
		} else {
			m.idle.Add(1)
		}
	}); err != nil {
		nc.Close()
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	return m, nil
}

// bfSide: a producer fleet.Client, a durable busy worker (KV checkpoint
// per batch) on entity "busy", each on a connection of its own.
type bfSide struct {
	srv      *server
	mon      *pullMonitor
	conns    []*nats.Conn
	producer *fleet.Client
	busyCl   *fleet.Client
	worker   *delivery.Worker
	coord    engine.Coordinate
	timings  busyTimings
}

func newBatfleetSide(ctx context.Context, srv *server, cfg config, h handleFunc) (_ *bfSide, err error) {
	b := &bfSide{srv: srv, coord: engine.MustCoordinate(busyEntity, scopeName)}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	pnc, err := connect(srv.url, "fanout-producer")
	if err != nil {
		return nil, err
	}
	b.conns = append(b.conns, pnc)
	if b.producer, err = fleet.NewClient(pnc, fleet.ClientConfig{Journal: journalName, Timeout: 30 * time.Second}); err != nil {
		return nil, err
	}
	bnc, err := connect(srv.url, "fanout-busy")
	if err != nil {
		return nil, err
	}
	b.conns = append(b.conns, bnc)
	// The busy worker's pulls are the requests whose reply subject is on
	// its connection's inbox.
	inbox := bnc.NewRespInbox()
	busyPrefix := inbox[:strings.LastIndexByte(inbox, '.')+1]
	if b.mon, err = newPullMonitor(srv.url, "batfleet."+journalName+".pull", func(m *nats.Msg) bool {
		return strings.HasPrefix(m.Reply, busyPrefix)
	}); err != nil {
		return nil, err
	}
	if b.busyCl, err = fleet.NewClient(bnc, fleet.ClientConfig{Journal: journalName, Timeout: 30 * time.Second}); err != nil {
		return nil, err
	}
	wc := delivery.DefaultWorkerConfig()
	wc.BatchSize, wc.IdleTimeout = cfg.Batch, cfg.Hold
	if !cfg.BusyMemory {
		js, err := jetstream.New(bnc)
		if err != nil {
			return nil, err
		}
		ck, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: journalName})
		if err != nil {
			return nil, err
		}
		wc.CheckpointID, wc.Checkpoints = "busy", timedStore{ck, &b.timings}
	}
	b.worker, err = delivery.StartWorker(ctx, b.busyCl, engine.RegionEntity(busyEntity), wc,
		func(_ context.Context, es []engine.Entry, _ *delivery.Delivery) delivery.Action {
			t := time.Now().UnixNano()
			b.timings.batches.Add(1)
			for i := range es {
				h(es[i].Payload, t)
			}
			return delivery.Continue
		})
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (b *bfSide) publish(ctx context.Context, payload []byte) error {
	_, err := b.producer.Append(ctx, []engine.Event{{Coordinate: b.coord, Kind: engine.KindData, Payload: payload}})
	return err
}

func (b *bfSide) wirePulls() (uint64, uint64) { return b.mon.idle.Load(), b.mon.busy.Load() }

func (b *bfSide) writerCounters() (uint64, uint64, bool) {
	m, err := scrapeMetrics(b.srv.metrics)
	if err != nil {
		return 0, 0, false
	}
	p, ok1 := m["batfleet_writer_pulls_total"]
	e, ok2 := m["batfleet_writer_epochs_total"]
	return uint64(p), uint64(e), ok1 && ok2
}

func (b *bfSide) busy() *busyTimings { return &b.timings }

func (b *bfSide) notes() []string {
	if b.worker == nil {
		return nil
	}
	select {
	case <-b.worker.Done():
		return []string{fmt.Sprintf("busy worker exited: %v", b.worker.Join())}
	default:
	}
	if st := b.worker.Stats(); st.TransientErrors > 0 {
		return []string{fmt.Sprintf("busy worker: %d transient source errors", st.TransientErrors)}
	}
	return nil
}

func (b *bfSide) close() {
	if b.worker != nil {
		_ = b.worker.StopAndJoin()
	}
	for _, c := range []*fleet.Client{b.producer, b.busyCl} {
		if c != nil {
			_ = c.Close()
		}
	}
	for _, nc := range b.conns {
		nc.Close()
	}
	if b.mon != nil {
		b.mon.nc.Close()
	}
}

// jsSide: the stream FANOUT (fan.>, file storage, 1 replica), a producer
// publishing with js.Publish (waits for the PubAck), a durable busy pull
// consumer on fan.busy with Consume (explicit ack of every message), each
// on a connection of its own.
type jsSide struct {
	mon       *pullMonitor
	conns     []*nats.Conn
	js        jetstream.JetStream
	cc        jetstream.ConsumeContext
	errs      atomic.Int64
	missedHBs atomic.Int64
	firstErr  atomic.Value
	timings   busyTimings
}

func newJetStreamSide(ctx context.Context, srv *server, cfg config, h handleFunc) (_ *jsSide, err error) {
	j := &jsSide{}
	defer func() {
		if err != nil {
			j.close()
		}
	}()
	if j.mon, err = newPullMonitor(srv.url, "$JS.API.CONSUMER.MSG.NEXT."+streamName+".>", func(m *nats.Msg) bool {
		return strings.HasSuffix(m.Subject, ".busy")
	}); err != nil {
		return nil, err
	}
	pnc, err := connect(srv.url, "fanout-producer")
	if err != nil {
		return nil, err
	}
	j.conns = append(j.conns, pnc)
	if j.js, err = jetstream.New(pnc); err != nil {
		return nil, err
	}
	if _, err := j.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: streamName, Subjects: []string{"fan.>"}, Storage: jetstream.FileStorage, Replicas: 1,
		// Above the server's default of 1,000 consumers per stream.
		MaxConsumers: maxConsumers,
	}); err != nil {
		return nil, fmt.Errorf("create stream: %w", err)
	}
	bnc, err := connect(srv.url, "fanout-busy")
	if err != nil {
		return nil, err
	}
	j.conns = append(j.conns, bnc)
	bjs, err := jetstream.New(bnc)
	if err != nil {
		return nil, err
	}
	ack := jetstream.AckExplicitPolicy
	if cfg.BusyMemory {
		ack = jetstream.AckNonePolicy
	}
	cons, err := bjs.CreateOrUpdateConsumer(ctx, streamName, jetstream.ConsumerConfig{
		Durable: "busy", FilterSubject: busySubject, AckPolicy: ack, MaxAckPending: maxAckPending,
	})
	if err != nil {
		return nil, fmt.Errorf("create busy consumer: %w", err)
	}
	j.cc, err = cons.Consume(func(m jetstream.Msg) {
		t := time.Now().UnixNano()
		j.timings.batches.Add(1)
		h(m.Data(), t)
		if ack != jetstream.AckNonePolicy {
			_ = m.Ack()
		}
	}, jetstream.PullMaxMessages(cfg.Batch), jetstream.PullExpiry(cfg.Hold),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if err == jetstream.ErrNoHeartbeat {
				j.missedHBs.Add(1)
				return
			}
			j.errs.Add(1)
			j.firstErr.CompareAndSwap(nil, err.Error())
		}))
	if err != nil {
		return nil, err
	}
	return j, nil
}

func (j *jsSide) publish(ctx context.Context, payload []byte) error {
	_, err := j.js.Publish(ctx, busySubject, payload)
	return err
}

func (j *jsSide) wirePulls() (uint64, uint64) { return j.mon.idle.Load(), j.mon.busy.Load() }

func (j *jsSide) writerCounters() (uint64, uint64, bool) { return 0, 0, false }

func (j *jsSide) busy() *busyTimings { return &j.timings }

func (j *jsSide) notes() []string {
	var out []string
	if n := j.errs.Load(); n > 0 {
		out = append(out, fmt.Sprintf("busy consumer: %d consume errors (first: %v)", n, j.firstErr.Load()))
	}
	if n := j.missedHBs.Load(); n > 0 {
		out = append(out, fmt.Sprintf("busy consumer: %d missed heartbeats", n))
	}
	return out
}

func (j *jsSide) close() {
	if j.cc != nil {
		j.cc.Stop()
		select {
		case <-j.cc.Closed():
		case <-time.After(5 * time.Second):
		}
	}
	for _, nc := range j.conns {
		nc.Close()
	}
	if j.mon != nil {
		j.mon.nc.Close()
	}
}
