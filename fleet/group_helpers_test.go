package fleet

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/internal/natstest"
	"github.com/batfleet/batfleet/kvckpt"
)

// The session and heartbeat of test members. A member whose heartbeat
// stalls past its session loses its partitions, as it must; the session
// is long enough that a busy machine (the race detector, other packages'
// tests, a fuzzer) does not stall it that long, so tests that expect a
// member to keep its partitions judge the protocol, not the machine.
const (
	testSession   = 1500 * time.Millisecond
	testHeartbeat = 300 * time.Millisecond
)

// Helpers shared by the group tests of group_cluster_test.go,
// group_outage_test.go, group_corrupt_test.go, group_standby_test.go and
// group_zombie_test.go.

// ---------------------------------------------------------------------
// Members joined with a handler of the test's choosing.
// ---------------------------------------------------------------------

// joinOpts says how a member connects: its journal client to url, its
// groups and checkpoints buckets through kvURL ("" for the same
// connection), and how it is configured.
type joinOpts struct {
	url, kvURL string
	natsOpts   []nats.Option
	ckpt       kvckpt.Config // Journal defaults to testJournal
	group, id  string
	parts      int
	mod        func(*GroupConfig)
}

// joinGroup starts a member as o says, handling with h; the member stops
// when the test ends (before its connections close).
func joinGroup(t *testing.T, o joinOpts, h delivery.Handler) (*Member, error) {
	t.Helper()
	nc, js := natstest.ConnectURL(t, o.url, o.natsOpts...)
	if o.kvURL != "" {
		_, js = natstest.ConnectURL(t, o.kvURL, o.natsOpts...)
	}
	c, err := NewClient(nc, ClientConfig{Journal: testJournal})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = c.Close() })
	if o.ckpt.Journal == "" {
		o.ckpt.Journal = testJournal
	}
	ckpts, err := kvckpt.Open(testCtx(t), js, o.ckpt)
	if err != nil {
		return nil, fmt.Errorf("open the checkpoints bucket: %w", err)
	}
	cfg := GroupConfig{Journal: testJournal, Name: o.group, Region: engine.RegionEntity("acct"), Partitions: o.parts,
		MemberID: o.id, Session: testSession, Heartbeat: testHeartbeat}
	cfg.Worker.IdleTimeout = 5 * time.Second
	cfg.Worker.SaveTimeout = 2 * time.Second // a save held by a fault gives up soon
	if os.Getenv("GROUP_DEBUG") != "" {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: o.id, Level: hclog.Debug})
	}
	if o.mod != nil {
		o.mod(&cfg)
	}
	m, err := JoinGroup(context.Background(), c, ckpts, js, cfg, h)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { m.Stop(); <-m.Done() })
	return m, nil
}

// mustJoin is joinGroup failing the test on an error.
func mustJoin(t *testing.T, o joinOpts, h delivery.Handler) *Member {
	t.Helper()
	m, err := joinGroup(t, o, h)
	if err != nil {
		t.Fatalf("JoinGroup %s: %v", o.id, err)
	}
	return m
}

// ---------------------------------------------------------------------
// What the handlers were given.
// ---------------------------------------------------------------------

// handed is one batch a handler was given.
type handed struct {
	member string
	part   uint16
	epoch  uint64
	at     time.Time
	seqs   []uint64
	ents   []string
}

// handLog records every batch handed to the members' handlers.
type handLog struct {
	mu      sync.Mutex
	batches []handed
	handled map[uint64]int
}

func newHandLog() *handLog { return &handLog{handled: map[uint64]int{}} }

// handler records the batches member is given; before, when not nil, is
// called first (with the log unlocked).
func (l *handLog) handler(member string, before func(*delivery.Delivery)) delivery.Handler {
	return func(_ context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
		if before != nil {
			before(d)
		}
		h := handed{member: member, part: d.Partition.Index, epoch: d.Epoch, at: time.Now()}
		for _, e := range b {
			h.seqs = append(h.seqs, e.Seq)
			h.ents = append(h.ents, e.Coordinate.Entity())
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.batches = append(l.batches, h)
		for _, s := range h.seqs {
			l.handled[s]++
		}
		return delivery.Continue
	}
}

// count returns how many of seqs were handled, and how many repeats of
// them there were.
func (l *handLog) count(seqs []uint64) (handled, repeats int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range seqs {
		if n := l.handled[s]; n > 0 {
			handled++
			repeats += n - 1
		}
	}
	return handled, repeats
}

// waitHandled waits until every seq of seqs was handled.
func (l *handLog) waitHandled(t testing.TB, timeout time.Duration, what string, seqs []uint64) {
	t.Helper()
	waitFor(t, timeout, what, func() bool { n, _ := l.count(seqs); return n == len(seqs) })
}

// snapshot returns the batches recorded so far.
func (l *handLog) snapshot() []handed {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.batches)
}

// check fails unless the handlers' logs hold GRP-10 and the handler's
// side of GRP-11, given want (every seq appended, per entity):
//
//   - every seq of want was handled, and each entity's first deliveries
//     are its seqs in ascending order;
//   - in each member's log, each entity's seqs ascend strictly within one
//     claim of its partition (one epoch); they go back only where a new
//     claim starts again at the committed position;
//   - no two members were handed batches of one partition under one
//     epoch (the epoch is a fencing token).
func (l *handLog) check(t testing.TB, want map[string][]uint64) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	type claimKey struct {
		part  uint16
		epoch uint64
	}
	holder := map[claimKey]string{}
	type stream struct {
		member, entity string
	}
	last := map[stream]uint64{}
	lastEpoch := map[stream]uint64{}
	first := map[string][]uint64{}
	seen := map[uint64]bool{}
	for _, b := range l.batches {
		k := claimKey{b.part, b.epoch}
		if h, ok := holder[k]; ok && h != b.member {
			t.Fatalf("partition %d, epoch %d: batches handed to %s and %s", b.part, b.epoch, h, b.member)
		}
		holder[k] = b.member
		for i, s := range b.seqs {
			st := stream{b.member, b.ents[i]}
			if prev, ok := last[st]; ok && s <= prev && lastEpoch[st] == b.epoch {
				t.Fatalf("member %s, entity %s, epoch %d: seq %d handed after %d", b.member, b.ents[i], b.epoch, s, prev)
			}
			if lastEpoch[st] > b.epoch {
				t.Fatalf("member %s, entity %s: epoch %d after epoch %d", b.member, b.ents[i], b.epoch, lastEpoch[st])
			}
			last[st], lastEpoch[st] = s, b.epoch
			if !seen[s] {
				seen[s] = true
				first[b.ents[i]] = append(first[b.ents[i]], s)
			}
		}
	}
	for entity, seqs := range want {
		if !slices.Equal(first[entity], seqs) {
			t.Fatalf("entity %s: first deliveries %v, want %v", entity, first[entity], seqs)
		}
	}
}

// ---------------------------------------------------------------------
// Traffic: events appended while members come and go.
// ---------------------------------------------------------------------

// traffic appends an event every interval, over k entities "acct:<i>" in
// turn, until halted; it records the seqs per entity and in order.
type traffic struct {
	mu   sync.Mutex
	want map[string][]uint64
	seqs []uint64
	err  error

	stop chan struct{}
	done chan struct{}
}

// startTraffic starts appending to store; it is halted when the test ends
// at the latest.
func startTraffic(t testing.TB, store *journal.Store, every time.Duration, k int) *traffic {
	t.Helper()
	tr := &traffic{want: map[string][]uint64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
			entity := fmt.Sprintf("acct:%d", i%k)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			rc, err := store.Append(ctx, engine.Event{Coordinate: engine.MustCoordinate(entity, "s"), Kind: 0x1001, Payload: []byte{byte(i)}})
			cancel()
			tr.mu.Lock()
			if err != nil {
				tr.err = err
				tr.mu.Unlock()
				return
			}
			tr.want[entity] = append(tr.want[entity], rc.Seq)
			tr.seqs = append(tr.seqs, rc.Seq)
			tr.mu.Unlock()
		}
	}()
	t.Cleanup(tr.halt)
	return tr
}

// halt stops the appends and waits for the goroutine; idempotent.
func (tr *traffic) halt() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	<-tr.done
}

// appended returns the seqs appended so far, in order.
func (tr *traffic) appended(t testing.TB) []uint64 {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.err != nil {
		t.Fatalf("append: %v", tr.err)
	}
	return slices.Clone(tr.seqs)
}

// wanted returns the seqs appended per entity (after halt: all of them).
func (tr *traffic) wanted() map[string][]uint64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := make(map[string][]uint64, len(tr.want))
	for e, s := range tr.want {
		out[e] = slices.Clone(s)
	}
	return out
}

// waitMore waits until n more events than now have been appended.
func (tr *traffic) waitMore(t testing.TB, n int) {
	t.Helper()
	target := len(tr.appended(t)) + n
	waitFor(t, 20*time.Second, fmt.Sprintf("%d more events appended", n), func() bool { return len(tr.appended(t)) >= target })
}

// ---------------------------------------------------------------------
// Partitions, ownership and checkpoints.
// ---------------------------------------------------------------------

// entityIn returns an entity "acct:<i>" of partition p of parts.
func entityIn(p uint16, parts int) string {
	for i := 0; ; i++ {
		e := fmt.Sprintf("acct:%d", i)
		if engine.Bucket(e)/uint16(engine.Buckets/parts) == p {
			return e
		}
	}
}

// appendEntity appends n events to entity and returns their seqs, adding
// them to want.
func appendEntity(t testing.TB, store *journal.Store, entity string, n int, want map[string][]uint64) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := range n {
		rc, err := store.Append(testCtx(t), event(t, entity, []byte{byte(i)}))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, rc.Seq)
		want[entity] = append(want[entity], rc.Seq)
	}
	return seqs
}

// running fails unless none of ms has left the group.
func running(t testing.TB, ms ...*Member) {
	t.Helper()
	for _, m := range ms {
		select {
		case <-m.Done():
			t.Fatalf("member %s left the group: %v", m.ID(), m.Join())
		default:
		}
	}
}

// ownerOf returns the member of ms running partition p, or nil.
func ownerOf(p uint16, ms ...*Member) *Member {
	for _, m := range ms {
		if slices.Contains(m.Stats().Owned, p) {
			return m
		}
	}
	return nil
}

// checkpointHistory runs checkHistory (GRP-11) on the partition
// checkpoints of group, reached through js, and returns each partition's
// current epoch.
func checkpointHistory(t *testing.T, js jetstream.JetStream, group string, parts int) map[uint16]uint64 {
	t.Helper()
	ck, err := kvckpt.Open(testCtx(t), js, kvckpt.Config{Journal: testJournal})
	if err != nil {
		t.Fatal(err)
	}
	(&groupEnv{js: js, ckpts: ck}).checkHistory(t, group, parts)
	out := map[uint16]uint64{}
	for i := range uint16(parts) {
		if rec, _, err := ck.Load(testCtx(t), partitionCheckpointID(group, i)); err == nil {
			out[i] = rec.Epoch
		}
	}
	return out
}
