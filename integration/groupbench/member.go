package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/integration/internal/benchkit"
	"github.com/batfleet/batfleet/kvckpt"
)

// memberOpts are a member process's flags.
type memberOpts struct {
	system, url, name, group, log string
	partitions, batch, slots      int
	sleep, flush, session         time.Duration
	open                          bool // start with the gate open
}

func (o memberOpts) args() []string {
	a := []string{"member", "--system", o.system, "--url", o.url, "--name", o.name, "--group", o.group, "--log", o.log,
		"--partitions", strconv.Itoa(o.partitions), "--batch", strconv.Itoa(o.batch), "--slots", strconv.Itoa(o.slots),
		"--sleep", o.sleep.String(), "--flush", o.flush.String(), "--session", o.session.String()}
	if o.open {
		a = append(a, "--open")
	}
	return a
}

// memberStats is a member's answer to "stat".
type memberStats struct {
	Handled uint64 `json:"handled"` // events handed to the handler, repeats included
	Batches uint64 `json:"batches"`
	LastNs  int64  `json:"last_ns"` // end of the last batch (unix ns)
	Owned   int    `json:"owned"`   // batfleet: partitions running
	Err     string `json:"err,omitempty"`
}

// recorder is the member's handler: it waits for the gate (at most 1 s a
// batch while it is closed, so that a hand-over never waits for the
// harness), takes one of the handler slots, waits the handler's time,
// and writes one line per batch — "<start ns> <end ns> <epoch> <n>
// <event index>…" — with a single write, so a kill -9 loses at most the
// batch in hand.
type recorder struct {
	sleep    time.Duration
	slots    chan struct{}
	gate     chan struct{}
	gateOnce sync.Once
	mu       sync.Mutex // the log file
	f        *os.File
	buf      []byte
	handled  atomic.Uint64
	batches  atomic.Uint64
	lastNs   atomic.Int64
	werr     atomic.Value // first write error (string)
}

func newRecorder(o memberOpts) (*recorder, error) {
	f, err := os.OpenFile(o.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	r := &recorder{sleep: o.sleep, slots: make(chan struct{}, max(1, o.slots)), gate: make(chan struct{}), f: f}
	if o.open {
		r.open()
	}
	return r, nil
}

func (r *recorder) open() { r.gateOnce.Do(func() { close(r.gate) }) }

func (r *recorder) handle(idx []uint64, epoch uint64) {
	select {
	case <-r.gate:
	default:
		t := time.NewTimer(time.Second)
		select {
		case <-r.gate:
		case <-t.C:
		}
		t.Stop()
	}
	r.slots <- struct{}{}
	start := time.Now()
	time.Sleep(r.sleep)
	end := time.Now()
	<-r.slots
	r.mu.Lock()
	b := r.buf[:0]
	b = strconv.AppendInt(b, start.UnixNano(), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, end.UnixNano(), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, epoch, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(idx)), 10)
	for _, i := range idx {
		b = append(b, ' ')
		b = strconv.AppendUint(b, i, 10)
	}
	b = append(b, '\n')
	if _, err := r.f.Write(b); err != nil && r.werr.Load() == nil {
		r.werr.Store(err.Error())
	}
	r.buf = b
	r.mu.Unlock()
	r.handled.Add(uint64(len(idx)))
	r.batches.Add(1)
	r.lastNs.Store(end.UnixNano())
}

func (r *recorder) stats() memberStats {
	s := memberStats{Handled: r.handled.Load(), Batches: r.batches.Load(), LastNs: r.lastNs.Load()}
	if e, ok := r.werr.Load().(string); ok {
		s.Err = e
	}
	return s
}

// eventIndex reads the event index a payload starts with.
func eventIndex(p []byte) uint64 {
	if len(p) < 8 {
		return ^uint64(0)
	}
	return binary.BigEndian.Uint64(p)
}

// batcher turns JetStream's one-message callbacks into the same batches
// the batfleet handler gets: up to batch messages, or fewer once the first
// has waited flush; then the recorder, then an explicit ack of each.
type batcher struct {
	rec     *recorder
	max     int
	flush   time.Duration
	mu      sync.Mutex // guards pending, first; held while a batch is handled
	pending []jetstream.Msg
	first   time.Time
	quit    chan struct{}
	wg      sync.WaitGroup
}

func newBatcher(rec *recorder, maxBatch int, flush time.Duration) *batcher {
	b := &batcher{rec: rec, max: maxBatch, flush: flush, quit: make(chan struct{})}
	b.wg.Add(1)
	go b.flusher()
	return b
}

func (b *batcher) add(m jetstream.Msg) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) == 0 {
		b.first = time.Now()
	}
	b.pending = append(b.pending, m)
	if len(b.pending) >= b.max {
		b.handleLocked()
	}
}

func (b *batcher) handleLocked() {
	if len(b.pending) == 0 {
		return
	}
	idx := make([]uint64, len(b.pending))
	for i, m := range b.pending {
		idx[i] = eventIndex(m.Data())
	}
	b.rec.handle(idx, 0)
	for _, m := range b.pending {
		_ = m.Ack() // explicit, per message; fire and forget
	}
	b.pending = b.pending[:0]
}

func (b *batcher) flusher() {
	defer b.wg.Done()
	t := time.NewTicker(max(b.flush/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.mu.Lock()
			if len(b.pending) > 0 && time.Since(b.first) >= b.flush {
				b.handleLocked()
			}
			b.mu.Unlock()
		case <-b.quit:
			return
		}
	}
}

// close stops the flusher and handles what is pending.
func (b *batcher) close() {
	close(b.quit)
	b.wg.Wait()
	b.mu.Lock()
	b.handleLocked()
	b.mu.Unlock()
}

// memberChild is "groupbench member": one member of one system's group.
// It prints "ready {}" once it has joined, answers "go" (opens the gate)
// and "stat" on stdin, leaves gracefully when stdin closes or on SIGTERM,
// and exits 1 when its membership fails.
func memberChild(args []string) int {
	fs := flag.NewFlagSet("groupbench member", flag.ContinueOnError)
	var o memberOpts
	fs.StringVar(&o.system, "system", sysBatfleet, "batfleet, pcgroups or jetstream")
	fs.StringVar(&o.url, "url", "", "NATS URL")
	fs.StringVar(&o.name, "name", "", "member id / pcgroups member name")
	fs.StringVar(&o.group, "group", "", "group / consumer group / durable name")
	fs.StringVar(&o.log, "log", "", "batch log file")
	fs.IntVar(&o.partitions, "partitions", 16, "partitions")
	fs.IntVar(&o.batch, "batch", 64, "batch size")
	fs.IntVar(&o.slots, "slots", 1, "handler calls at once")
	fs.DurationVar(&o.sleep, "sleep", 2*time.Millisecond, "handler wait per batch")
	fs.DurationVar(&o.flush, "flush", 5*time.Millisecond, "partial batch wait (pcgroups, jetstream)")
	fs.DurationVar(&o.session, "session", 3*time.Second, "batfleet session; AckWait otherwise")
	fs.BoolVar(&o.open, "open", false, "start with the gate open")
	if err := fs.Parse(args); err != nil || o.url == "" || o.name == "" || o.group == "" || o.log == "" {
		fmt.Fprintln(os.Stderr, "groupbench member: need --url, --name, --group and --log")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := runMember(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "groupbench member %s: %v\n", o.name, err)
		return 1
	}
	return 0
}

// membership is a running member of one system.
type membership struct {
	done  <-chan struct{} // closed when the membership ended by itself
	err   func() error
	owned func() int
	leave func() error // graceful
}

func runMember(ctx context.Context, o memberOpts) error {
	rec, err := newRecorder(o)
	if err != nil {
		return err
	}
	defer rec.f.Close()
	nc, err := connect(o.url, "groupbench-"+o.name)
	if err != nil {
		return err
	}
	defer nc.Close()
	var m *membership
	switch o.system {
	case sysBatfleet:
		m, err = joinBatfleet(ctx, nc, o, rec)
	case sysPCG:
		m, err = joinPCG(ctx, nc, o, rec)
	case sysJS:
		m, err = joinJetStream(ctx, nc, o, rec)
	default:
		err = fmt.Errorf("unknown system %q", o.system)
	}
	if err != nil {
		return err
	}
	benchkit.ReadyLine("ready", struct{}{})
	cmds := make(chan string)
	go func() { // ends at EOF, which the harness's exit guarantees
		defer close(cmds)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmds <- strings.TrimSpace(sc.Text())
		}
	}()
	for {
		select {
		case c, ok := <-cmds:
			if !ok {
				return m.leave()
			}
			switch c {
			case "go":
				rec.open()
				benchkit.ReadyLine("go", struct{}{})
			case "stat":
				s := rec.stats()
				s.Owned = m.owned()
				benchkit.ReadyLine("stat", s)
			}
		case <-m.done:
			if err := m.err(); err != nil {
				return err
			}
			return errors.New("left the group by itself")
		case <-ctx.Done():
			return m.leave()
		}
	}
}

// joinBatfleet joins a batfleet consumer group: fleet.JoinGroup, the code
// fleet.RunWorker (and `worker run --group`) runs, called directly so the
// member can report the partitions it owns.
func joinBatfleet(ctx context.Context, nc *nats.Conn, o memberOpts, rec *recorder) (*membership, error) {
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: journalName})
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store, err := kvckpt.Open(octx, js, kvckpt.Config{Journal: journalName})
	if err != nil {
		return nil, err
	}
	wc := delivery.DefaultWorkerConfig()
	wc.BatchSize = o.batch
	gc := fleet.GroupConfig{
		Journal: journalName, Name: o.group, Region: engine.RegionScope(scopeName), Partitions: o.partitions,
		Session: o.session, MemberID: o.name, Worker: wc,
	}
	gc.Worker.IdleTimeout = fleet.DefaultIdleTimeout
	mem, err := fleet.JoinGroup(context.WithoutCancel(ctx), client, store, js, gc,
		func(_ context.Context, batch []engine.Entry, d *delivery.Delivery) delivery.Action {
			idx := make([]uint64, len(batch))
			for i := range batch {
				idx[i] = eventIndex(batch[i].Payload)
			}
			rec.handle(idx, d.Epoch)
			return delivery.Continue
		})
	if err != nil {
		client.Close()
		return nil, err
	}
	return &membership{
		done:  mem.Done(),
		err:   mem.Join,
		owned: func() int { return len(mem.Stats().Owned) },
		leave: func() error {
			err := mem.StopAndJoin()
			client.Close()
			return err
		},
	}, nil
}

// pcgConsumerConfig is the consumer config pcgroups members use: explicit acks
// (required), AckWait = the session (pcgroups derives the pinned TTL, the
// pull expiry and the inactive threshold from it).
func pcgConsumerConfig(o memberOpts) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, AckWait: o.session}
}

// joinPCG joins a pcgroups elastic consumer group as member o.name (the
// harness adds the name to the group's membership).
func joinPCG(ctx context.Context, nc *nats.Conn, o memberOpts, rec *recorder) (*membership, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	b := newBatcher(rec, o.batch, o.flush)
	// pcgroups keeps the context for its config watch: it must outlive
	// the join (cancelling it ends the membership).
	cc, err := pcgroups.ElasticConsume(context.WithoutCancel(ctx), js, streamName, o.group, o.name, b.add, pcgConsumerConfig(o))
	if err != nil {
		b.close()
		return nil, err
	}
	done := make(chan struct{})
	var derr error
	go func() { // ends when the consume context reports
		derr = <-cc.Done()
		close(done)
	}()
	return &membership{
		done:  done,
		err:   func() error { return derr },
		owned: func() int { return 0 },
		leave: func() error {
			cc.Stop()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
			}
			b.close()
			return derr
		},
	}, nil
}

// joinJetStream runs one puller of the shared durable o.group (created by
// the harness): Consume with the pull expiry pcgroups would use, the same
// batcher.
func joinJetStream(ctx context.Context, nc *nats.Conn, o memberOpts, rec *recorder) (*membership, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cons, err := js.Consumer(octx, streamName, o.group)
	if err != nil {
		return nil, err
	}
	b := newBatcher(rec, o.batch, o.flush)
	var cerr atomic.Value
	cc, err := cons.Consume(b.add, jetstream.PullExpiry(max(o.session/2, time.Second)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if cerr.Load() == nil {
				cerr.Store(err.Error())
			}
		}))
	if err != nil {
		b.close()
		return nil, err
	}
	return &membership{
		done:  make(chan struct{}),
		err:   func() error { return nil },
		owned: func() int { return 0 },
		leave: func() error {
			cc.Drain() // hand the buffered messages to the callback, then stop
			select {
			case <-cc.Closed():
			case <-time.After(10 * time.Second):
			}
			b.close()
			if e, ok := cerr.Load().(string); ok {
				fmt.Fprintf(os.Stderr, "groupbench member %s: consume: %s\n", o.name, e)
			}
			return nil
		},
	}, nil
}
