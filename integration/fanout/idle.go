package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/integration/internal/benchkit"
	"github.com/batfleet/batfleet/kvckpt"
)

// idleStats is what the idle fleet reports (the "ready" and "stats"
// lines of "fanout idle").
type idleStats struct {
	Started int64 `json:"started"` // consumers running
	Conns   int   `json:"conns"`
	// batfleet: the workers' polls through their streams.
	Holding int64 `json:"holding"` // PollWait calls in flight (held pulls)
	Waits   int64 `json:"waits"`   // PollWait calls returned
	Polls   int64 `json:"polls"`   // plain Poll calls
	Early   int64 `json:"early"`   // PollWait calls that returned before 90 % of their wait: woken without a match
	// Both systems.
	Entries    int64  `json:"entries"` // events delivered to idle consumers: must stay 0
	Errors     int64  `json:"errors"`  // worker exits, consume errors
	Heartbeats int64  `json:"missed_heartbeats"`
	Err        string `json:"err,omitempty"` // the first error
	// InMsgs is every message the idle fleet's connections received:
	// pull replies, heartbeats, epoch messages, anything.
	InMsgs uint64 `json:"in_msgs"`
}

type idleCounters struct {
	started, holding, waits, polls, early, entries, errors, heartbeats atomic.Int64
	conns                                                              int
	connsMu                                                            sync.Mutex
	ncs                                                                []*nats.Conn
	errMu                                                              sync.Mutex
	err                                                                string
}

func (c *idleCounters) fail(err error) {
	c.errors.Add(1)
	c.errMu.Lock()
	if c.err == "" {
		c.err = err.Error()
	}
	c.errMu.Unlock()
}

func (c *idleCounters) stats() idleStats {
	c.errMu.Lock()
	e := c.err
	c.errMu.Unlock()
	var in uint64
	c.connsMu.Lock()
	for _, nc := range c.ncs {
		in += nc.Stats().InMsgs
	}
	c.connsMu.Unlock()
	return idleStats{
		Started: c.started.Load(), Conns: c.conns, Holding: c.holding.Load(), Waits: c.waits.Load(), Polls: c.polls.Load(),
		Early: c.early.Load(), Entries: c.entries.Load(), Errors: c.errors.Load(), Heartbeats: c.heartbeats.Load(), Err: e, InMsgs: in,
	}
}

// track adds a connection to those whose received messages are counted.
func (c *idleCounters) track(nc *nats.Conn) {
	c.connsMu.Lock()
	c.ncs = append(c.ncs, nc)
	c.connsMu.Unlock()
}

// idleOpts configure "fanout idle".
type idleOpts struct {
	system  string
	url     string
	count   int
	perConn int
	stagger time.Duration
	hold    time.Duration
	batch   int
}

func idleArgs(o idleOpts) []string {
	return []string{"idle", "--system", o.system, "--url", o.url, "--count", fmt.Sprint(o.count), "--per-conn", fmt.Sprint(o.perConn),
		"--stagger", o.stagger.String(), "--hold", o.hold.String(), "--batch", fmt.Sprint(o.batch)}
}

// idleChild is "fanout idle": count idle consumers on regions (batfleet:
// entity=idle:<i>) or subjects (JetStream: fan.idle.<i>) that never
// receive an event, perConn to a NATS connection, started evenly over
// stagger. It prints "ready <stats>" once all run (batfleet: once every
// worker's pull is held), answers "stats" on stdin with "stats <stats>",
// and stops them all when stdin closes.
func idleChild(args []string) int {
	fs := flag.NewFlagSet("fanout idle", flag.ContinueOnError)
	var o idleOpts
	fs.StringVar(&o.system, "system", "", "batfleet or jetstream")
	fs.StringVar(&o.url, "url", "", "NATS URL")
	fs.IntVar(&o.count, "count", 0, "idle consumers")
	fs.IntVar(&o.perConn, "per-conn", 250, "consumers per connection")
	fs.DurationVar(&o.stagger, "stagger", 0, "start them evenly over this")
	fs.DurationVar(&o.hold, "hold", 30*time.Second, "idle timeout / pull expiry")
	fs.IntVar(&o.batch, "batch", 64, "batch size")
	if err := fs.Parse(args); err != nil || o.url == "" || o.count < 1 || o.perConn < 1 {
		fmt.Fprintln(os.Stderr, "fanout idle: need --url, --count >= 1, --per-conn >= 1")
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &idleCounters{}
	var stop func()
	var err error
	switch o.system {
	case "batfleet":
		stop, err = idleBatfleet(ctx, o, c)
	case "jetstream":
		stop, err = idleJetStream(ctx, o, c)
	default:
		err = fmt.Errorf("unknown system %q", o.system)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "fanout idle: %v\n", err)
		return 1
	}
	defer stop()
	benchkit.ReadyLine("ready", c.stats())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "stats" {
			benchkit.ReadyLine("stats", c.stats())
		}
	}
	return 0
}

func idleConnect(url string, k int) (*nats.Conn, error) {
	return nats.Connect(url, nats.Name(fmt.Sprintf("fanout-idle-%d", k)), nats.Timeout(5*time.Second), nats.MaxReconnects(-1))
}

// paced calls start(i) for i < count evenly over stagger.
func paced(ctx context.Context, count int, stagger time.Duration, start func(i int) error) error {
	t0 := time.Now()
	for i := 0; i < count; i++ {
		if d := time.Until(t0.Add(stagger * time.Duration(i) / time.Duration(count))); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := start(i); err != nil {
			return fmt.Errorf("idle consumer %d: %w", i, err)
		}
	}
	return nil
}

// countingSource is a fleet client whose streams count the worker's
// polls: every idle pull shows up here as one PollWait.
type countingSource struct {
	*fleet.Client
	c *idleCounters
}

func (s countingSource) Stream(r engine.Region) delivery.Stream {
	return &countingStream{WaitingStream: s.Client.Stream(r).(delivery.WaitingStream), c: s.c}
}

type countingStream struct {
	delivery.WaitingStream
	c *idleCounters
}

func (s *countingStream) Poll(ctx context.Context, position uint64, started bool, max int) (engine.PollResult, error) {
	s.c.polls.Add(1)
	return s.WaitingStream.Poll(ctx, position, started, max)
}

func (s *countingStream) PollWait(ctx context.Context, position uint64, started bool, max int, wait time.Duration) (engine.PollResult, error) {
	s.c.holding.Add(1)
	t0 := time.Now()
	res, err := s.WaitingStream.PollWait(ctx, position, started, max, wait)
	s.c.holding.Add(-1)
	s.c.waits.Add(1)
	if err == nil && ctx.Err() == nil && time.Since(t0) < wait*9/10 {
		s.c.early.Add(1)
	}
	return res, err
}

func idleBatfleet(ctx context.Context, o idleOpts, c *idleCounters) (func(), error) {
	var conns []*nats.Conn
	var clients []*fleet.Client
	var stores []*kvckpt.Store
	var workers []*delivery.Worker
	stop := func() {
		for _, w := range workers {
			w.Stop()
		}
		for _, w := range workers {
			if err := w.Join(); err != nil && !errors.Is(err, context.Canceled) {
				fmt.Fprintf(os.Stderr, "fanout idle: worker: %v\n", err)
			}
		}
		for _, cl := range clients {
			_ = cl.Close()
		}
		for _, nc := range conns {
			nc.Close()
		}
	}
	for k := 0; k*o.perConn < o.count; k++ {
		nc, err := idleConnect(o.url, k)
		if err != nil {
			stop()
			return nil, err
		}
		conns = append(conns, nc)
		c.track(nc)
		cl, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: journalName})
		if err != nil {
			stop()
			return nil, err
		}
		clients = append(clients, cl)
		js, err := jetstream.New(nc)
		if err != nil {
			stop()
			return nil, err
		}
		st, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: journalName})
		if err != nil {
			stop()
			return nil, err
		}
		stores = append(stores, st)
	}
	c.conns = len(conns)
	err := paced(ctx, o.count, o.stagger, func(i int) error {
		k := i / o.perConn
		cfg := delivery.DefaultWorkerConfig()
		cfg.BatchSize, cfg.IdleTimeout = o.batch, o.hold
		cfg.CheckpointID, cfg.Checkpoints = fmt.Sprintf("idle-%d", i), stores[k]
		w, err := delivery.StartWorker(ctx, countingSource{clients[k], c}, engine.RegionEntity(fmt.Sprintf("idle:%d", i)), cfg,
			func(_ context.Context, es []engine.Entry, _ *delivery.Delivery) delivery.Action {
				c.entries.Add(int64(len(es)))
				return delivery.Continue
			})
		if err != nil {
			return err
		}
		workers = append(workers, w)
		c.started.Add(1)
		go func() {
			<-w.Done()
			if err := w.Join(); err != nil && ctx.Err() == nil {
				c.fail(fmt.Errorf("idle worker %d exited: %w", i, err))
			}
		}()
		return nil
	})
	if err != nil {
		stop()
		return nil, err
	}
	// Ready once every worker's pull is out (held at the writer).
	deadline := time.Now().Add(time.Minute)
	for c.holding.Load() < int64(o.count) {
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("only %d of %d idle pulls held after a minute", c.holding.Load(), o.count)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return stop, nil
}

func idleJetStream(ctx context.Context, o idleOpts, c *idleCounters) (func(), error) {
	var conns []*nats.Conn
	var jss []jetstream.JetStream
	var ccs []jetstream.ConsumeContext
	stop := func() {
		for _, cc := range ccs {
			cc.Stop()
		}
		for _, cc := range ccs {
			select {
			case <-cc.Closed():
			case <-time.After(5 * time.Second):
			}
		}
		for _, nc := range conns {
			nc.Close()
		}
	}
	for k := 0; k*o.perConn < o.count; k++ {
		nc, err := idleConnect(o.url, k)
		if err != nil {
			stop()
			return nil, err
		}
		conns = append(conns, nc)
		c.track(nc)
		js, err := jetstream.New(nc)
		if err != nil {
			stop()
			return nil, err
		}
		jss = append(jss, js)
	}
	c.conns = len(conns)
	cons := make([]jetstream.Consumer, o.count)
	for i := range cons {
		var err error
		cons[i], err = jss[i/o.perConn].CreateOrUpdateConsumer(ctx, streamName, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("idle-%d", i), FilterSubject: fmt.Sprintf("fan.idle.%d", i),
			AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: maxAckPending,
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("create consumer idle-%d: %w", i, err)
		}
	}
	err := paced(ctx, o.count, o.stagger, func(i int) error {
		cc, err := cons[i].Consume(func(m jetstream.Msg) {
			c.entries.Add(1)
			_ = m.Ack()
		}, jetstream.PullMaxMessages(o.batch), jetstream.PullExpiry(o.hold),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if errors.Is(err, jetstream.ErrNoHeartbeat) {
					c.heartbeats.Add(1)
					return
				}
				c.fail(err)
			}))
		if err != nil {
			return err
		}
		ccs = append(ccs, cc)
		c.started.Add(1)
		return nil
	})
	if err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}
