package integration

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/natstest"
	"github.com/batfleet/batfleet/kvckpt"
)

// TestClusterFleetLosesTwoNodes (the reliability issue: a three-node NATS
// cluster): the whole fleet on a 3-node JetStream cluster — the writer on
// n0, a producer appending through the client, two plain durable workers
// and a consumer group of two members on n1 and n2, with R3 checkpoint
// and group buckets. Mid-run n1 (made the leader of the checkpoint
// bucket's stream first) is killed; once it is back and caught up, n0 —
// the writer's node — is killed. The fleet keeps delivering through both
// losses: every acknowledged append is handled by each plain worker in
// order and by the group at least once, in order per entity; no
// checkpoint ever goes back in the KV (every update of every key is
// recorded by a watch started before the workers). How long delivery
// paused after each loss is logged (figures, not assertions).
func TestClusterFleetLosesTwoNodes(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	urls := func(i int) string {
		u := []string{c.Servers[i].ClientURL()}
		for k, s := range c.Servers {
			if k != i {
				u = append(u, s.ClientURL())
			}
		}
		return strings.Join(u, ",")
	}
	connect := func(i int, name string) (*nats.Conn, jetstream.JetStream) {
		return natstest.ConnectURL(t, urls(i), nats.DontRandomize(), nats.Name(name),
			nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	}
	for i := range c.Servers { // every node knows the meta leader before buckets are made
		_, njs := natstest.ConnectURL(t, c.Servers[i].ClientURL())
		waitFor(t, 30*time.Second, fmt.Sprintf("JetStream ready on n%d", i), func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := njs.AccountInfo(ctx)
			return err == nil
		})
	}

	// The writer on n0.
	store, err := journal.Open(t.TempDir(), journal.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	wnc, _ := connect(0, "writer")
	w, err := fleet.NewWriter(wnc, store, fleet.WriterConfig{Journal: journalName})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Close(ctx)
	})

	// The buckets, R3, made once before anyone binds them.
	ctlNC, ctlJS := connect(1, "control")
	ckCfg := kvckpt.Config{Journal: journalName, Replicas: 3, History: 64}
	openCtx, cancelOpen := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelOpen()
	if _, err := kvckpt.Open(openCtx, ctlJS, ckCfg); err != nil {
		t.Fatal(err)
	}
	kv, err := ctlJS.KeyValue(openCtx, kvckpt.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	// Every update of every checkpoint key, in revision order.
	hist := &clusterKVHistory{byKey: map[string][]clusterKVUpdate{}}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	watcher, err := kv.WatchAll(watchCtx, jetstream.IncludeHistory())
	if err != nil {
		t.Fatal(err)
	}
	var watchWG sync.WaitGroup
	watchWG.Add(1)
	go func() {
		defer watchWG.Done()
		for e := range watcher.Updates() {
			if e != nil {
				hist.add(t, e)
			}
		}
	}()
	defer func() { stopWatch(); _ = watcher.Stop(); watchWG.Wait() }()

	// The producer, through a client of its own on n0.
	pnc, _ := connect(0, "producer")
	producer, err := fleet.NewClient(pnc, fleet.ClientConfig{Journal: journalName})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = producer.Close() })
	prod := &clusterProducer{}
	prodCtx, stopProd := context.WithCancel(context.Background())
	defer stopProd()
	prodDone := make(chan struct{})
	go func() { defer close(prodDone); prod.run(prodCtx, producer) }()

	region := engine.RegionEntity("order")
	type plain struct {
		id  string
		w   *delivery.Worker
		log *clusterLog
	}
	var plains []*plain
	// workerNode connects a worker or member to node: its client, its
	// JetStream context and the checkpoint store bound on them.
	workerNode := func(node int, name string) (*fleet.Client, jetstream.JetStream, *kvckpt.Store) {
		nc, js := connect(node, name)
		client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: journalName})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = client.Close() })
		ck, err := kvckpt.Open(openCtx, js, ckCfg)
		if err != nil {
			t.Fatal(err)
		}
		return client, js, ck
	}
	for i, node := range []int{1, 2} {
		client, _, ck := workerNode(node, fmt.Sprintf("worker-%d", i))
		var err error
		p := &plain{id: fmt.Sprintf("plain-%d", i), log: &clusterLog{}}
		cfg := delivery.DefaultWorkerConfig()
		cfg.BatchSize, cfg.SaveTimeout, cfg.IdleTimeout = 32, 2*time.Second, time.Second
		cfg.CheckpointID, cfg.Checkpoints, cfg.WorkerID = p.id, ck, p.id
		p.w, err = delivery.StartWorker(context.Background(), client, region, cfg, p.log.handler)
		if err != nil {
			t.Fatal(err)
		}
		stopOnCleanup(t, p.w)
		plains = append(plains, p)
	}
	group := &clusterLog{}
	var members []*fleet.Member
	for i, node := range []int{1, 2} {
		client, js, ck := workerNode(node, fmt.Sprintf("member-%d", i))
		var err error
		gcfg := fleet.GroupConfig{Journal: journalName, Name: "projections", Region: region, Partitions: 4,
			MemberID: fmt.Sprintf("m%d", i), Session: 3 * time.Second, Heartbeat: 750 * time.Millisecond, Replicas: 3}
		gcfg.Worker = delivery.DefaultWorkerConfig()
		gcfg.Worker.BatchSize, gcfg.Worker.SaveTimeout, gcfg.Worker.IdleTimeout = 32, 2*time.Second, time.Second
		var m *fleet.Member
		waitFor(t, 30*time.Second, "member "+gcfg.MemberID+" to join", func() bool {
			// The member lives as long as the context JoinGroup is given.
			m, err = fleet.JoinGroup(context.Background(), client, ck, js, gcfg, group.handler)
			if err != nil && !errors.Is(err, checkpoint.ErrUnavailable) {
				t.Fatalf("join %s: %v", gcfg.MemberID, err)
			}
			return err == nil
		})
		t.Cleanup(func() { m.Stop(); <-m.Done() })
		members = append(members, m)
	}

	alive := func() {
		t.Helper()
		for _, p := range plains {
			select {
			case <-p.w.Done():
				t.Fatalf("worker %s stopped: %v", p.id, p.w.Join())
			default:
			}
		}
		for _, m := range members {
			select {
			case <-m.Done():
				t.Fatalf("member %s left: %v", m.ID(), m.Join())
			default:
			}
		}
	}
	progress := func(what string) {
		t.Helper()
		acked := prod.count()
		waitFor(t, 90*time.Second, "the producer to append "+what, func() bool { return prod.count() >= acked+50 })
		target := prod.lastSeq()
		for _, p := range plains {
			waitFor(t, 90*time.Second, p.id+" to handle "+what, func() bool { return p.log.has(target) })
		}
		if !waitUntil(90*time.Second, func() bool { return group.has(target) }) {
			for _, m := range members {
				t.Logf("member %s: %+v; partitions %+v", m.ID(), m.Stats(), m.Partitions())
			}
			t.Fatalf("the group did not handle %s (seq %d)", what, target)
		}
		alive()
	}
	pauses := func(what string, from time.Time) {
		to := time.Now()
		for _, p := range plains {
			t.Logf("%s: longest delivery pause of %s: %v", what, p.id, p.log.longestPause(from, to).Round(time.Millisecond))
		}
		t.Logf("%s: longest delivery pause of the group: %v; longest append pause: %v", what,
			group.longestPause(from, to).Round(time.Millisecond), prod.longestPause(from, to).Round(time.Millisecond))
	}
	progress("before any loss")

	// Loss 1: n1, made the checkpoint stream's leader.
	natstest.MoveStreamLeader(t, ctlNC, c, "KV_"+kvckpt.DefaultBucket, 1)
	down := time.Now()
	natstest.Shutdown(c.Servers[1])
	progress("with n1 down")
	pauses("n1 (checkpoint stream leader, a worker node) down", down)
	c.Servers[1] = natstest.Start(t, c.Opts[1].Clone())
	waitFor(t, 60*time.Second, "every replica of the checkpoint stream to be current", func() bool {
		return natstest.StreamCurrent(ctlJS, "KV_"+kvckpt.DefaultBucket, 3)
	})
	waitFor(t, 60*time.Second, "every replica of the groups stream to be current", func() bool {
		return natstest.StreamCurrent(ctlJS, "KV_"+fleet.DefaultGroupBucket, 3)
	})
	progress("after n1 came back")

	// Loss 2: n0, the writer's and the producer's node. Whether it leads
	// a bucket's stream decides much of the pause (a new leader must be
	// elected before checkpoints commit again), so the log says.
	t.Logf("before n0 is lost: the checkpoint stream's leader is n%d, the groups stream's n%d",
		natstest.StreamLeader(ctlJS, c, "KV_"+kvckpt.DefaultBucket), natstest.StreamLeader(ctlJS, c, "KV_"+fleet.DefaultGroupBucket))
	down = time.Now()
	natstest.Shutdown(c.Servers[0])
	progress("with n0 down")
	pauses("n0 (the writer's node) down", down)

	stopProd()
	<-prodDone
	acked := prod.seqs()
	last := acked[len(acked)-1]
	for _, p := range plains {
		waitFor(t, 90*time.Second, p.id+" to commit the last event", func() bool { return p.w.Stats().Committed >= last })
	}
	// Every partition, not only the last event's, must catch up: a
	// partition still behind is late, not lossy.
	waitUntil(90*time.Second, func() bool { return len(clusterMissing(acked, group.distinct())) == 0 })
	alive()

	// Every acknowledged append is in the journal and handled.
	for _, p := range plains {
		distinct := p.log.distinct()
		if missing := clusterMissing(acked, distinct); len(missing) > 0 {
			t.Errorf("%s never handled %d acknowledged events, e.g. %v", p.id, len(missing), missing[:min(5, len(missing))])
		}
		if !sort.SliceIsSorted(distinct, func(i, j int) bool { return distinct[i] < distinct[j] }) {
			t.Errorf("%s handled events out of order", p.id)
		}
	}
	if missing := clusterMissing(acked, group.distinct()); len(missing) > 0 {
		t.Errorf("the group never handled %d acknowledged events, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	if bad := group.entityOrderViolations(); len(bad) > 0 {
		t.Errorf("per-entity order violations in the group: %v", bad[:min(5, len(bad))])
	}
	// No checkpoint ever went back.
	stopWatch()
	for key, ups := range hist.snapshot() {
		for i := 1; i < len(ups); i++ {
			back := ups[i-1].started && (!ups[i].started || ups[i].pos < ups[i-1].pos)
			if back {
				t.Errorf("checkpoint %s went back at revision %d: %+v after %+v", key, ups[i].rev, ups[i], ups[i-1])
			}
		}
	}
	t.Logf("%d appends acknowledged; %d checkpoint keys, %d updates watched", len(acked), len(hist.snapshot()), hist.total())
}

// waitUntil polls cond until it holds (true) or limit passes (false).
func waitUntil(limit time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// clusterProducer appends one event at a time (entity order:<n%40>)
// through a client, which retries with an idempotency key; it records the
// seq of every acknowledged append and when it was acknowledged.
type clusterProducer struct {
	mu    sync.Mutex
	acked []uint64
	at    []time.Time
}

func (p *clusterProducer) run(ctx context.Context, c *fleet.Client) {
	for i := 0; ctx.Err() == nil; i++ {
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		rcs, err := c.Append(actx, []engine.Event{dataEvent(fmt.Sprintf("order:%d", i%40), "s", fmt.Sprint(i))})
		cancel()
		if err != nil {
			continue // not acknowledged: the checker counts only acknowledged appends
		}
		p.mu.Lock()
		p.acked = append(p.acked, rcs[0].Seq)
		p.at = append(p.at, time.Now())
		p.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Millisecond): // a steady trickle, not a flood
		}
	}
}

func (p *clusterProducer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

func (p *clusterProducer) lastSeq() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked[len(p.acked)-1]
}

func (p *clusterProducer) seqs() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]uint64(nil), p.acked...)
}

func (p *clusterProducer) longestPause(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return clusterGap(p.at, from, to)
}

// clusterLog records what a handler was given (seq, entity) and when.
type clusterLog struct {
	mu       sync.Mutex
	seen     map[uint64]bool
	byEntity map[string][]uint64
	at       []time.Time
}

func (l *clusterLog) handler(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen, l.byEntity = map[uint64]bool{}, map[string][]uint64{}
	}
	for _, e := range b {
		l.seen[e.Seq] = true
		l.byEntity[e.Coordinate.Entity()] = append(l.byEntity[e.Coordinate.Entity()], e.Seq)
	}
	l.at = append(l.at, time.Now())
	return delivery.Continue
}

func (l *clusterLog) has(seq uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[seq]
}

func (l *clusterLog) distinct() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []uint64
	for _, seqs := range l.byEntity {
		out = append(out, seqs...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return clusterCompact(out)
}

// entityOrderViolations returns, per entity, a handed seq that came after
// a higher one without being a redelivery: a step back must return to a
// seq already handed, and never skip one on the way up.
func (l *clusterLog) entityOrderViolations() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var bad []string
	for entity, got := range l.byEntity {
		handed := map[uint64]bool{}
		var high uint64
		for i, s := range got {
			if i > 0 && s < high && !handed[s] {
				bad = append(bad, fmt.Sprintf("%s: %d first handed after %d", entity, s, high))
			}
			handed[s] = true
			high = max(high, s)
		}
	}
	return bad
}

func (l *clusterLog) longestPause(from, to time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return clusterGap(l.at, from, to)
}

// clusterGap is the longest time in [from, to] without an event of at
// (ascending).
func clusterGap(at []time.Time, from, to time.Time) time.Duration {
	var longest time.Duration
	prev := from
	for _, a := range at {
		if a.Before(from) {
			continue
		}
		if a.After(to) {
			break
		}
		longest = max(longest, a.Sub(prev))
		prev = a
	}
	return max(longest, to.Sub(prev))
}

func clusterCompact(s []uint64) []uint64 {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// clusterMissing returns the seqs of want absent from got (ascending).
func clusterMissing(want, got []uint64) []uint64 {
	have := make(map[uint64]bool, len(got))
	for _, s := range got {
		have[s] = true
	}
	var out []uint64
	for _, s := range want {
		if !have[s] {
			out = append(out, s)
		}
	}
	return out
}

// clusterKVHistory holds every update of every key of a checkpoint bucket.
type clusterKVHistory struct {
	mu    sync.Mutex
	byKey map[string][]clusterKVUpdate
}

type clusterKVUpdate struct {
	rev     uint64
	pos     uint64
	started bool
}

func (h *clusterKVHistory) add(t *testing.T, e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	rec, err := checkpoint.Decode(e.Value())
	if err != nil {
		t.Errorf("checkpoint %s revision %d does not decode: %v", e.Key(), e.Revision(), err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byKey[e.Key()] = append(h.byKey[e.Key()], clusterKVUpdate{rev: e.Revision(), pos: rec.Position, started: rec.Started})
}

func (h *clusterKVHistory) snapshot() map[string][]clusterKVUpdate {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string][]clusterKVUpdate, len(h.byKey))
	for k, v := range h.byKey {
		out[k] = append([]clusterKVUpdate(nil), v...)
	}
	return out
}

func (h *clusterKVHistory) total() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, v := range h.byKey {
		n += len(v)
	}
	return n
}
