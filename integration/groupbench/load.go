package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet"
)

const payloadSize = 100

// entityOf is event i's entity: e<i mod entities>.
func entityOf(i uint64, entities int) string { return "e" + strconv.FormatUint(i%uint64(entities), 10) }

// partitionOf is the partition event i lands in, for sys: batfleet's
// (FNV-1a 64 bucket ranges, also used to slice JetStream's flow for the
// pause figures) or pcgroups' (the server's partition transform: FNV-1a 32
// of the subject token mod P).
func partitionOf(sys string, i uint64, entities, parts int) int {
	e := entityOf(i, entities)
	if sys == sysPCG {
		h := fnv.New32a()
		_, _ = h.Write([]byte(e))
		return int(h.Sum32() % uint32(parts))
	}
	return int(engine.Bucket(e)) / (engine.Buckets / parts)
}

func payload(i uint64) []byte {
	p := make([]byte, payloadSize)
	binary.BigEndian.PutUint64(p, i)
	return p
}

// producer appends events of indices from, from+1, … to one system, in
// index order (one append or one publish batch in flight), so that every
// entity's events are stored in index order.
type producer interface {
	// send appends events [from, to) and returns once they are stored.
	send(ctx context.Context, from, to uint64) error
	close()
}

type bfProducer struct {
	nc       *nats.Conn
	cl       *fleet.Client
	entities int
}

func newProducer(sys, url string, entities int) (producer, error) {
	nc, err := connect(url, "groupbench-producer")
	if err != nil {
		return nil, err
	}
	if sys == sysBatfleet {
		cl, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: journalName, Timeout: 30 * time.Second})
		if err != nil {
			nc.Close()
			return nil, err
		}
		return &bfProducer{nc: nc, cl: cl, entities: entities}, nil
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &jsProducer{nc: nc, js: js, entities: entities}, nil
}

func (p *bfProducer) send(ctx context.Context, from, to uint64) error {
	evs := make([]engine.Event, 0, to-from)
	for i := from; i < to; i++ {
		evs = append(evs, engine.Event{Coordinate: engine.MustCoordinate(entityOf(i, p.entities), scopeName), Kind: engine.KindData, Payload: payload(i)})
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := p.cl.Append(ctx, evs)
	return err
}

func (p *bfProducer) close() {
	p.cl.Close()
	p.nc.Close()
}

type jsProducer struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	entities int
}

func (p *jsProducer) send(ctx context.Context, from, to uint64) error {
	for i := from; i < to; i++ {
		if _, err := p.js.PublishAsync(subjectRoot+"."+entityOf(i, p.entities), payload(i)); err != nil {
			return err
		}
	}
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case <-p.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("publish acks not complete within a minute")
	}
	return nil
}

func (p *jsProducer) close() { p.nc.Close() }

// bulkLoad sends n events in chunks, one chunk in flight.
func bulkLoad(ctx context.Context, p producer, n uint64) error {
	const chunk = 2000
	for from := uint64(0); from < n; from += chunk {
		if err := p.send(ctx, from, min(from+chunk, n)); err != nil {
			return fmt.Errorf("load events %d…: %w", from, err)
		}
	}
	return nil
}

// paced sends events at rate/s from index 0 until stopped; its goroutine
// is its own.
type paced struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	sent   uint64
	err    error
	maxLag time.Duration
}

func startPaced(ctx context.Context, p producer, rate int) *paced {
	ctx, cancel := context.WithCancel(ctx)
	pc := &paced{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(pc.done)
		start := time.Now()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			due := uint64(time.Since(start).Seconds() * float64(rate))
			pc.mu.Lock()
			from := pc.sent
			pc.mu.Unlock()
			if due <= from {
				continue
			}
			to := min(due, from+uint64(rate)) // at most a second's worth at once
			if err := p.send(context.WithoutCancel(ctx), from, to); err != nil {
				pc.mu.Lock()
				pc.err = err
				pc.mu.Unlock()
				return
			}
			lag := time.Since(start) - time.Duration(float64(to)/float64(rate)*float64(time.Second))
			pc.mu.Lock()
			pc.sent = to
			pc.maxLag = max(pc.maxLag, lag)
			pc.mu.Unlock()
		}
	}()
	return pc
}

// stored returns how many events are stored so far.
func (pc *paced) stored() uint64 {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.sent
}

// stop ends the producer and returns how many events it stored.
func (pc *paced) stop() (uint64, time.Duration, error) {
	pc.cancel()
	<-pc.done
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.sent, pc.maxLag, pc.err
}

// jsSetup creates the source stream (file storage, 1 replica).
func jsSetup(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: streamName, Subjects: []string{subjectRoot + ".>"}, Storage: jetstream.FileStorage})
	return err
}

// pcgCreate creates elastic consumer group name on the stream,
// partitioned by the entity token into P partitions.
func pcgCreate(ctx context.Context, js jetstream.JetStream, name string, parts int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := pcgroups.CreateElastic(ctx, js, streamName, name, uint(parts),
		[]pcgroups.PartitioningFilter{{Filter: subjectRoot + ".*", PartitioningWildcards: []int{1}}}, 0, 0)
	return err
}

// pcgMembers adds (add) or drops member names.
func pcgMembers(ctx context.Context, js jetstream.JetStream, group string, add bool, names ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	if add {
		_, err = pcgroups.AddMembers(ctx, js, streamName, group, names)
	} else {
		_, err = pcgroups.DeleteMembers(ctx, js, streamName, group, names)
	}
	return err
}

// pcgWaitSourced waits until group's work-queue stream has sourced n
// messages.
func pcgWaitSourced(ctx context.Context, js jetstream.JetStream, group string, n uint64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s, err := js.Stream(ictx, streamName+"-"+group)
		var last uint64
		if err == nil {
			var info *jetstream.StreamInfo
			if info, err = s.Info(ictx); err == nil {
				last = info.State.LastSeq
			}
		}
		cancel()
		if err == nil && last >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consumer group %s sourced %d of %d messages within %s (%v)", group, last, n, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// jsDurable creates the shared durable of plain JetStream: explicit acks,
// AckWait = the session, MaxAckPending 1,000 per puller (what each
// pcgroups member's consumer has by default).
func jsDurable(ctx context.Context, js jetstream.JetStream, name string, pullers int, ackWait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := js.CreateConsumer(ctx, streamName, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait,
		MaxAckPending: 1000 * pullers, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	return err
}
