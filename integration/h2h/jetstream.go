package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	streamName = "BENCH"
	wakeStream = "WAKE"
	// maxAckPending is far above what 4 pullers × batch 256 (and Consume's
	// buffering) can hold unacknowledged, so it never throttles.
	maxAckPending = 1 << 16
	// fetchWait bounds one Fetch: the default would wait 30 s for a full
	// batch. A run's time is taken when its last event is handled and
	// acknowledged, so the tail never waits for a pending Fetch.
	fetchWait = time.Second
	// consumeExpiry bounds one Consume pull request (default 30 s); its
	// heartbeat is half of it, so a lost pull request (a known JetStream
	// stall: the client waits out two missed heartbeats) costs at most
	// ~2 s instead of ~30 s.
	consumeExpiry = 2 * time.Second
)

// jsVariant is one JetStream consumer configuration.
type jsVariant struct {
	consume bool // Consume, else Fetch
	pullers int
	batch   int
	ackAll  bool // AckAll policy (single puller only), else explicit
}

func (v jsVariant) key() string {
	mode, ack := "fetch", "explicit"
	if v.consume {
		mode = "consume"
	}
	if v.ackAll {
		ack = "ackall"
	}
	return fmt.Sprintf("js/%s/%dp/b%d/%s", mode, v.pullers, v.batch, ack)
}

func (v jsVariant) String() string {
	mode, ack := "Fetch", "explicit ack"
	if v.consume {
		mode = "Consume"
	}
	if v.ackAll {
		ack = "AckAll"
	}
	p := "1 puller"
	if v.pullers > 1 {
		p = fmt.Sprintf("%d pullers", v.pullers)
	}
	return fmt.Sprintf("%s(%d), %s, %s", mode, v.batch, p, ack)
}

// jsVariants lists every configuration measured: one puller with Fetch and
// Consume, explicit ack and AckAll; four pullers with explicit ack only
// (AckAll on a shared durable would acknowledge other pullers' unhandled
// messages).
func jsVariants(batches []int) []jsVariant {
	var vs []jsVariant
	for _, b := range batches {
		for _, consume := range []bool{false, true} {
			for _, ackAll := range []bool{false, true} {
				vs = append(vs, jsVariant{consume: consume, pullers: 1, batch: b, ackAll: ackAll})
			}
		}
	}
	for _, b := range batches {
		for _, consume := range []bool{false, true} {
			vs = append(vs, jsVariant{consume: consume, pullers: 4, batch: b})
		}
	}
	return vs
}

// jsSide is one JetStream round: a fresh server and a publisher
// connection.
type jsSide struct {
	node    *natsNode
	js      jetstream.JetStream
	wl      *workload
	lastSeq uint64
	pubErrs atomic.Int64
}

func startJetStream(root string, wl *workload, syncAlways bool) (*jsSide, error) {
	node, err := startNode(root, "jetstream", syncAlways)
	if err != nil {
		return nil, err
	}
	j := &jsSide{node: node, wl: wl}
	nc, err := node.connect("jetstream-publisher")
	if err != nil {
		node.shutdown()
		return nil, err
	}
	j.js, err = jetstream.New(nc, jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) {
		j.pubErrs.Add(1)
	}))
	if err != nil {
		node.shutdown()
		return nil, err
	}
	return j, nil
}

func (j *jsSide) close() { j.node.shutdown() }

// publishAll creates the stream (file storage, one replica, the server's
// default sync) and publishes the first n events with PublishAsync (the
// client's default window of 4,000 unacknowledged publishes). It returns
// events/s from the first publish until every PubAck arrived.
func (j *jsSide) publishAll(ctx context.Context, n int) (float64, error) {
	st, err := j.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: streamName, Subjects: []string{"ent.>"}, Storage: jetstream.FileStorage, Replicas: 1,
	})
	if err != nil {
		return 0, fmt.Errorf("create stream: %w", err)
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		for {
			_, err := j.js.PublishAsync(j.wl.subject(i), j.wl.payload(i))
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				return 0, fmt.Errorf("publish %d: %w", i, err)
			}
		}
	}
	select {
	case <-j.js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, fmt.Errorf("publish: %w (%d acks outstanding)", ctx.Err(), j.js.PublishAsyncPending())
	}
	elapsed := time.Since(start)
	if e := j.pubErrs.Load(); e > 0 {
		return 0, fmt.Errorf("publish: %d async publishes failed", e)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	if info.State.Msgs != uint64(n) {
		return 0, fmt.Errorf("stream holds %d messages after publishing %d", info.State.Msgs, n)
	}
	j.lastSeq = info.State.LastSeq
	return float64(n) / elapsed.Seconds(), nil
}

// consume runs variant v over the stream with a new durable pull consumer
// (deliver all). Each puller has its own connection. The handler is the
// same as batfleet's; acknowledgement is per batch (Fetch: after the
// batch; Consume: each message with explicit ack, every batch-th message
// and the last with AckAll). It returns events/s from the pullers' start
// until the last event is handled and the server's ack floor has reached
// the stream's last message with nothing pending.
func (j *jsSide) consume(ctx context.Context, v jsVariant, run string) (float64, check, error) {
	label := "jetstream " + v.String()
	name := strings.NewReplacer("/", "-").Replace(run + "-" + v.key())
	policy := jetstream.AckExplicitPolicy
	if v.ackAll {
		policy = jetstream.AckAllPolicy
	}
	cons, err := j.js.CreateConsumer(ctx, streamName, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: policy, DeliverPolicy: jetstream.DeliverAllPolicy, MaxAckPending: maxAckPending,
	})
	if err != nil {
		return 0, check{}, fmt.Errorf("%s: create consumer: %w", label, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = j.js.DeleteConsumer(dctx, streamName, name)
		cancel()
	}()
	handles := make([]jetstream.Consumer, v.pullers)
	for k := range handles {
		nc, err := j.node.connect(fmt.Sprintf("jetstream-puller-%d", k))
		if err != nil {
			return 0, check{}, err
		}
		defer nc.Close()
		pjs, err := jetstream.New(nc)
		if err != nil {
			return 0, check{}, err
		}
		if handles[k], err = pjs.Consumer(ctx, streamName, name); err != nil {
			return 0, check{}, fmt.Errorf("%s: bind consumer: %w", label, err)
		}
	}

	sk := newSink(j.wl.n)
	done, cancelDone := context.WithCancel(ctx)
	defer cancelDone()
	go func() {
		select {
		case <-sk.done:
			cancelDone()
		case <-done.Done():
		}
	}()
	errs := make(chan error, 4*v.pullers)
	var hbMissed atomic.Int64
	var wg sync.WaitGroup
	var stops []jetstream.ConsumeContext
	start := time.Now()
	for k := range handles {
		if v.consume {
			cc, err := j.consumeLoop(handles[k], v, sk, errs, &hbMissed)
			if err != nil {
				return 0, sk.close(label, j.wl.sum), fmt.Errorf("%s: consume: %w", label, err)
			}
			stops = append(stops, cc)
			continue
		}
		wg.Add(1)
		go func(c jetstream.Consumer) {
			defer wg.Done()
			if err := fetchLoop(done, c, v, sk); err != nil {
				errs <- err
			}
		}(handles[k])
	}
	stopAll := func() {
		cancelDone()
		for _, cc := range stops {
			cc.Stop()
		}
		for _, cc := range stops {
			<-cc.Closed()
		}
		wg.Wait()
	}

	select {
	case <-sk.done:
	case err := <-errs:
		stopAll()
		return 0, sk.close(label, j.wl.sum), fmt.Errorf("%s: %w", label, err)
	case <-ctx.Done():
		stopAll()
		return 0, sk.close(label, j.wl.sum), fmt.Errorf("%s: %w (handled %d of %d)", label, ctx.Err(), sk.handled.Load(), j.wl.n)
	}
	// Done only when the server has every acknowledgement.
	var info *jetstream.ConsumerInfo
	for {
		info, err = cons.Info(ctx)
		if err != nil {
			stopAll()
			return 0, sk.close(label, j.wl.sum), fmt.Errorf("%s: consumer info: %w", label, err)
		}
		if info.NumAckPending == 0 && info.AckFloor.Stream >= j.lastSeq {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	elapsed := time.Since(start)
	stopAll()
	c := sk.close(label, j.wl.sum)
	if e := hbMissed.Load(); e > 0 {
		c.Notes = append(c.Notes, fmt.Sprintf("%d missed-heartbeat errors", e))
	}
	if info.NumRedelivered > 0 {
		c.Notes = append(c.Notes, fmt.Sprintf("%d redelivered", info.NumRedelivered))
	}
	return float64(j.wl.n) / elapsed.Seconds(), c, c.err()
}

// fetchLoop is one Fetch puller: fetch up to batch messages, handle each
// as it arrives, then acknowledge the batch (every message, or the last
// with AckAll), until every event of the run is handled (done).
func fetchLoop(done context.Context, c jetstream.Consumer, v jsVariant, sk *sink) error {
	msgs := make([]jetstream.Msg, 0, v.batch)
	handle := func(m jetstream.Msg) { sk.account(1, sk.handle(m.Data())) }
	for done.Err() == nil {
		var err error
		if msgs, err = fetchOnce(done, c, v.batch, fetchWait, msgs[:0], handle); err != nil {
			return err
		}
		if len(msgs) == 0 {
			continue
		}
		if v.ackAll {
			if err := msgs[len(msgs)-1].Ack(); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
			continue
		}
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
		}
	}
	return nil
}

// fetchOnce sends one Fetch of up to batch messages that the server ends
// after wait, hands each message to handle as it arrives, and returns them
// appended to msgs. A fetch that brings nothing is no error, nor is done
// ending. The fetch has no deadline on the client's side: on a starved
// machine one could end it before the server's messages were read, and
// they would be dropped (with AckAll the next ack covers them, so they are
// never handled), or be spent before the request left, which nats.go
// refuses to send.
func fetchOnce(done context.Context, c jetstream.Consumer, batch int, wait time.Duration, msgs []jetstream.Msg, handle func(jetstream.Msg)) ([]jetstream.Msg, error) {
	mb, err := c.Fetch(batch, jetstream.FetchMaxWait(wait))
	if err != nil {
		if done.Err() != nil {
			return msgs, nil
		}
		return msgs, fmt.Errorf("fetch: %w", err)
	}
	for m := range mb.Messages() {
		handle(m)
		msgs = append(msgs, m)
	}
	if err := mb.Error(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
		return msgs, fmt.Errorf("fetch: %w", err)
	}
	return msgs, nil
}

// consumeLoop starts one Consume puller buffering up to batch messages.
func (j *jsSide) consumeLoop(c jetstream.Consumer, v jsVariant, sk *sink, errs chan<- error, hbMissed *atomic.Int64) (jetstream.ConsumeContext, error) {
	n := 0
	expected := int(sk.expected)
	return c.Consume(func(m jetstream.Msg) {
		sum := sk.handle(m.Data())
		n++
		if !v.ackAll || n%v.batch == 0 || n == expected {
			if err := m.Ack(); err != nil {
				select {
				case errs <- fmt.Errorf("ack: %w", err):
				default:
				}
			}
		}
		sk.account(1, sum)
	}, jetstream.PullMaxMessages(v.batch), jetstream.PullExpiry(consumeExpiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				hbMissed.Add(1)
				return
			}
			select {
			case errs <- err:
			default:
			}
		}))
}

// wake measures wake latency: an idle durable Consume puller (batch 64,
// explicit ack, the client's default 30 s pull expiry so an outstanding
// pull request is always held) on a stream of its own; a publisher
// publishes one event with a synchronous Publish (waiting for the PubAck),
// samples times, each after the previous event was handled and acked and
// gap has passed.
func (j *jsSide) wake(ctx context.Context, samples int, gap time.Duration, run string) (*latency, check, error) {
	if _, err := j.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: wakeStream, Subjects: []string{"wake.>"}, Storage: jetstream.FileStorage, Replicas: 1,
	}); err != nil {
		return nil, check{}, fmt.Errorf("create wake stream: %w", err)
	}
	name := run + "-wake"
	if _, err := j.js.CreateConsumer(ctx, wakeStream, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: maxAckPending,
	}); err != nil {
		return nil, check{}, fmt.Errorf("create wake consumer: %w", err)
	}
	nc, err := j.node.connect("jetstream-wake-puller")
	if err != nil {
		return nil, check{}, err
	}
	defer nc.Close()
	pjs, err := jetstream.New(nc)
	if err != nil {
		return nil, check{}, err
	}
	cons, err := pjs.Consumer(ctx, wakeStream, name)
	if err != nil {
		return nil, check{}, err
	}
	sk := newSink(samples)
	starts := make(chan time.Time, samples)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		t := time.Now()
		sum := sk.handle(m.Data())
		_ = m.Ack()
		sk.account(1, sum)
		starts <- t
	}, jetstream.PullMaxMessages(64))
	if err != nil {
		return nil, check{}, err
	}
	defer func() { cc.Stop(); <-cc.Closed() }()
	// Idle means a pull request is waiting at the server. Every wait
	// here is bounded by the run's timeout (ctx), not by a latency guess:
	// a slow sample (a lost pull request costs a Consume up to two missed
	// heartbeats) is a measurement, not a failure.
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, check{}, fmt.Errorf("wake consumer holds no pull request: %w", err)
		}
		if info.NumWaiting > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	lat := &latency{}
	payload := make([]byte, payloadSize)
	var wantSum uint64
	sched := startSchedWatch()
	for i := 0; i < samples; i++ {
		time.Sleep(gap)
		fillPayload(payload, uint64(i))
		for _, c := range payload {
			wantSum += uint64(c)
		}
		send := time.Now()
		_, err := j.js.Publish(ctx, "wake.e1", payload)
		ack := time.Now()
		if err != nil {
			return nil, check{}, fmt.Errorf("wake publish %d: %w", i, err)
		}
		select {
		case t := <-starts:
			lat.add(send, ack, t)
		case <-ctx.Done():
			return nil, check{}, fmt.Errorf("wake sample %d: handler did not start: %w", i, ctx.Err())
		}
	}
	lat.sched = sched.since()
	c := sk.close("jetstream wake", wantSum)
	return lat, c, c.err()
}
