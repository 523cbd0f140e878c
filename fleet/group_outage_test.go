package fleet

import (
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine/delivery"
)

// fenceWatch samples members' Fenced state every few milliseconds and
// records when each was first seen fenced and, after that, unfenced.
type fenceWatch struct {
	mu      sync.Mutex
	fenced  map[string]time.Time
	resumed map[string]time.Time
	stop    chan struct{}
	done    chan struct{}
}

func watchFences(t *testing.T, ms ...*Member) *fenceWatch {
	fw := &fenceWatch{fenced: map[string]time.Time{}, resumed: map[string]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(fw.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-fw.stop:
				return
			case <-tick.C:
			}
			for _, m := range ms {
				f := m.Stats().Fenced
				fw.mu.Lock()
				if _, seen := fw.fenced[m.ID()]; f && !seen {
					fw.fenced[m.ID()] = time.Now()
				}
				if _, seen := fw.fenced[m.ID()]; seen && !f && fw.resumed[m.ID()].IsZero() {
					fw.resumed[m.ID()] = time.Now()
				}
				fw.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-fw.stop:
		default:
			close(fw.stop)
		}
		<-fw.done
	})
	return fw
}

// at returns when id was first seen fenced, and then unfenced (zero when
// not yet).
func (fw *fenceWatch) at(id string) (fenced, resumed time.Time) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.fenced[id], fw.resumed[id]
}

// Catalogue: GRP-06 for the whole group, GRP-10, GRP-11: KV (the groups
// and checkpoints buckets) becomes unreachable for every member at once —
// their KV connections go through a fault proxy that then holds every
// byte — while the journal stays reachable. Each member goes on handling
// what it owns (events appended after the cut reach every partition's
// handler) until its own self-fencing deadline, session − heartbeat after
// its last heartbeat landed, on its own clock; then it stops handling
// (nothing is handed to its handler while it is fenced), leaves nothing
// and keeps retrying. When KV is back, the members unfence, claim their
// partitions again (each partition's epoch goes up), and handle every
// event appended meanwhile; no checkpoint goes back.
func TestGRP06_KVOutageForAllMembers(t *testing.T) {
	const P = 4
	const session, heartbeat = 2 * time.Second, 500 * time.Millisecond
	g := newGroupEnv(t)
	proxy := g.faultProxy(t)
	log := newHandLog()
	var members sync.Map // id → *Member, for the handlers
	var mu sync.Mutex
	var whileFenced []string
	check := func(id string) func(*delivery.Delivery) {
		return func(d *delivery.Delivery) {
			m, ok := members.Load(id)
			if ok && m.(*Member).Stats().Fenced {
				mu.Lock()
				whileFenced = append(whileFenced, id)
				mu.Unlock()
			}
		}
	}
	mod := func(c *GroupConfig) { c.Session, c.Heartbeat = session, heartbeat }
	var ms []*Member
	for _, id := range []string{"a", "b"} {
		m := mustJoin(t, joinOpts{url: g.e.ns.ClientURL(), kvURL: proxy.URL(), group: "go", id: id, parts: P, mod: mod}, log.handler(id, check(id)))
		members.Store(id, m)
		ms = append(ms, m)
	}
	waitFor(t, 10*time.Second, "2 and 2", func() bool { return balanced(P, ms...) })
	want := map[string][]uint64{}
	var seqs []uint64
	ents := make([]string, P)
	for p := range uint16(P) {
		ents[p] = entityIn(p, P)
		seqs = append(seqs, appendEntity(t, g.e.store, ents[p], 5, want)...)
	}
	log.waitHandled(t, 10*time.Second, "every event handled", seqs)
	for p := range uint16(P) {
		last := want[ents[p]][len(want[ents[p]])-1]
		waitFor(t, 10*time.Second, "partition committed", func() bool {
			rec, _, err := g.ckpts.Load(testCtx(t), partitionCheckpointID("go", p))
			return err == nil && rec.Position >= last
		})
	}
	before := checkpointHistory(t, g.js, "go", P)
	fw := watchFences(t, ms...)

	proxy.Blackhole(true)
	cut := time.Now()
	// Handling goes on until the fencing deadline: one event per
	// partition, appended now, reaches each partition's handler.
	var during []uint64
	for p := range uint16(P) {
		during = append(during, appendEntity(t, g.e.store, ents[p], 1, want)...)
	}
	waitFor(t, 10*time.Second, "the events appended after the cut handled, or a member fenced", func() bool {
		n, _ := log.count(during)
		f0, _ := fw.at("a")
		f1, _ := fw.at("b")
		return n == len(during) || !f0.IsZero() || !f1.IsZero()
	})
	if n, _ := log.count(during); n != len(during) {
		t.Fatalf("%d of the %d events appended after the cut were handled before a member fenced itself", n, len(during))
	}
	handledAfter := time.Since(cut)
	waitFor(t, 10*time.Second, "both members fenced", func() bool {
		f0, _ := fw.at("a")
		f1, _ := fw.at("b")
		return !f0.IsZero() && !f1.IsZero()
	})
	for _, m := range ms {
		f, _ := fw.at(m.ID())
		t.Logf("%s fenced itself %v after the cut (deadline: session − heartbeat = %v after its last heartbeat landed)", m.ID(), f.Sub(cut).Round(time.Millisecond), session-heartbeat)
		// Its last heartbeat landed before the cut, so it must have
		// stopped within session − heartbeat of the cut, plus an
		// evaluation tick: before anyone could take over.
		if f.Sub(cut) >= session {
			t.Fatalf("%s fenced itself %v after KV became unreachable: not before its session (%v) expired elsewhere", m.ID(), f.Sub(cut), session)
		}
		if st := m.Stats(); len(st.Owned) != 0 {
			t.Fatalf("%s fenced but runs %v", m.ID(), st.Owned)
		}
	}
	t.Logf("the events appended after the cut were handled %v after it", handledAfter.Round(time.Millisecond))
	// While fenced, they handle nothing, and keep retrying.
	outage := appendEntity(t, g.e.store, ents[0], 3, want)
	outage = append(outage, appendEntity(t, g.e.store, ents[3], 3, want)...)
	fencedBoth := time.Now()
	waitFor(t, 10*time.Second, "a second of outage", func() bool { return time.Since(fencedBoth) > time.Second })
	if n, _ := log.count(outage); n != 0 {
		t.Fatalf("%d events appended while both members were fenced were handled", n)
	}
	running(t, ms...)

	proxy.Blackhole(false)
	healed := time.Now()
	waitFor(t, 20*time.Second, "both members back with their shares", func() bool {
		return !ms[0].Stats().Fenced && !ms[1].Stats().Fenced && balanced(P, ms...)
	})
	t.Logf("KV back: both members ran their shares again %v later", time.Since(healed).Round(time.Millisecond))
	seqs = append(seqs, during...)
	seqs = append(seqs, outage...)
	for p := range uint16(P) {
		seqs = append(seqs, appendEntity(t, g.e.store, ents[p], 2, want)...)
	}
	log.waitHandled(t, 20*time.Second, "every event handled", seqs)
	running(t, ms...)
	mu.Lock()
	if len(whileFenced) > 0 {
		t.Fatalf("batches handed to fenced members: %v", whileFenced)
	}
	mu.Unlock()
	log.check(t, want)
	after := checkpointHistory(t, g.js, "go", P)
	for p := range uint16(P) {
		if after[p] <= before[p] {
			t.Fatalf("partition %d: epoch %d after the outage, %d before: not claimed again", p, after[p], before[p])
		}
	}
	_, repeats := log.count(seqs)
	t.Logf("%d events handled, %d repeats", len(seqs), repeats)
}
