package integration

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/natstest"
	"github.com/batfleet/batfleet/kvckpt"
)

// e2eEvents is the end-to-end volume: 100,000 events, or 20,000 under the
// race detector or -short (the race detector makes byte-heavy NATS
// traffic 8–11× slower). Never zero: the test always runs.
func e2eEvents() int {
	if raceEnabled || testing.Short() {
		return 20_000
	}
	return 100_000
}

// Shape of the end-to-end journal: event i is fully determined by i.
const (
	e2eEntities  = 1000
	e2eScopes    = 4
	e2eBatch     = 100 // events per Client.Append
	e2eAppenders = 4
	e2ePayload   = 64 // bytes
)

// e2eEvent returns the coordinate parts and kind of event i: entity
// acct:<n%10>:<n> for n spread over e2eEntities, scope s0..s3, kind of
// category 1, 2 or 3.
func e2eEvent(i int) (entity, scope string, kind engine.Kind) {
	n := (i * 7919) % e2eEntities
	entity = fmt.Sprintf("acct:%d:%d", n%10, n)
	scope = "s" + strconv.Itoa((i/3)%e2eScopes)
	k, err := engine.NewKind(uint16(1+i%3), uint16(i%5))
	if err != nil {
		panic(err)
	}
	return entity, scope, k
}

// e2ePayloadOf is event i's payload: "e<i>|" padded to e2ePayload bytes.
func e2ePayloadOf(i int) []byte {
	p := make([]byte, e2ePayload)
	for j := range p {
		p[j] = byte('a' + (i+j)%26)
	}
	copy(p, "e"+strconv.Itoa(i)+"|")
	return p
}

// e2eIndex parses the event index back out of a payload.
func e2eIndex(payload []byte) (int, bool) {
	s, _, ok := strings.Cut(string(payload), "|")
	if !ok || !strings.HasPrefix(s, "e") {
		return 0, false
	}
	i, err := strconv.Atoi(s[1:])
	return i, err == nil
}

// e2eConsumer is one remote worker of the end-to-end test and what it saw.
type e2eConsumer struct {
	name   string
	region engine.Region
	batch  int

	mu      sync.Mutex
	seqs    []uint64 // delivered, in delivery order
	idx     []int    // event index of each delivered entry
	problem string   // first inconsistency seen by the handler
}

func (c *e2eConsumer) handle(_ context.Context, batch []engine.Entry, _ *delivery.Delivery) delivery.Action {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range batch {
		i, ok := e2eIndex(e.Payload)
		if !ok && c.problem == "" {
			c.problem = fmt.Sprintf("seq %d: payload %q is not an e2e payload", e.Seq, e.Payload)
		}
		ent, sc, k := e2eEvent(i)
		if ok && c.problem == "" && (e.Coordinate.Entity() != ent || e.Coordinate.Scope() != sc || e.Kind != k ||
			string(e.Payload) != string(e2ePayloadOf(i))) {
			c.problem = fmt.Sprintf("seq %d: event %d arrived as %s kind %v", e.Seq, i, e.Coordinate, e.Kind)
		}
		if c.problem == "" && !c.region.Matches(e.Coordinate.Entity(), e.Coordinate.Scope(), e.Kind, e.Clock) {
			c.problem = fmt.Sprintf("seq %d (%s kind %v) is outside region %s", e.Seq, e.Coordinate, e.Kind, c.region)
		}
		c.seqs = append(c.seqs, e.Seq)
		c.idx = append(c.idx, i)
	}
	return delivery.Continue
}

// TestEndToEnd appends e2eEvents() events over 1,000 entities, 4 scopes
// and 3 kind categories through fleet.Client.Append (batches of 100, 4
// concurrent producers) while three remote durable workers, each on its
// own connection with a kvckpt checkpoint, consume three different
// regions (an entity prefix, a scope, a kind category). Each worker gets
// every matching event exactly once here (nothing fails, so nothing is
// redelivered), in strictly ascending seq order, nothing outside its
// region, every entry identical to what was appended; each final
// checkpoint (kvckpt Load) is the last matching seq.
func TestEndToEnd(t *testing.T) {
	total := e2eEvents()
	r := newRig(t)
	ctx := context.Background()

	consumers := []*e2eConsumer{
		{name: "e2e-entity", region: engine.RegionEntity("acct:3"), batch: 64},
		{name: "e2e-scope", region: engine.RegionScope("s2"), batch: 256},
		{name: "e2e-category", region: engine.RegionAll().WithCategory(2), batch: 128},
	}
	workers := make([]*delivery.Worker, len(consumers))
	for i, c := range consumers {
		// A node of its own: connection, client and checkpoint store.
		nc, js := natstest.Connect(t, r.Server, nats.Name(c.name))
		client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: journalName})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = client.Close() })
		ck, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: journalName})
		if err != nil {
			t.Fatal(err)
		}
		cfg := delivery.DefaultWorkerConfig()
		cfg.CheckpointID, cfg.BatchSize, cfg.IdleTimeout = c.name, c.batch, 100*time.Millisecond
		w, err := delivery.StartWorker(ctx, client, c.region, withCheckpoints(cfg, ck), c.handle)
		if err != nil {
			t.Fatal(err)
		}
		stopOnCleanup(t, w)
		workers[i] = w
	}

	// Producers: a node of their own; batch b goes to producer b%4.
	pnc, _ := natstest.Connect(t, r.Server, nats.Name("e2e-producer"))
	producer, err := fleet.NewClient(pnc, fleet.ClientConfig{Journal: journalName, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = producer.Close() })
	seqOf := make([]uint64, total)
	batches := (total + e2eBatch - 1) / e2eBatch
	errs := make(chan error, e2eAppenders)
	var wg sync.WaitGroup
	begin := time.Now()
	for p := 0; p < e2eAppenders; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := p; b < batches; b += e2eAppenders {
				lo, hi := b*e2eBatch, min((b+1)*e2eBatch, total)
				events := make([]engine.Event, 0, hi-lo)
				for i := lo; i < hi; i++ {
					ent, sc, k := e2eEvent(i)
					events = append(events, engine.Event{Coordinate: engine.MustCoordinate(ent, sc), Kind: k, Payload: e2ePayloadOf(i)})
				}
				rs, err := producer.Append(ctx, events)
				if err != nil {
					errs <- fmt.Errorf("append batch %d: %w", b, err)
					return
				}
				for j, rc := range rs {
					seqOf[lo+j] = rc.Seq
				}
			}
		}()
	}
	wg.Wait()
	appended := time.Since(begin)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("appended %d events in %d batches of %d from %d producers in %v: %.0f events/s",
		total, batches, e2eBatch, e2eAppenders, appended.Round(time.Millisecond), float64(total)/appended.Seconds())

	// What each region must get: every matching event, by seq.
	type want struct {
		seqs []uint64
		idx  map[uint64]int
	}
	wants := make([]want, len(consumers))
	for ci, c := range consumers {
		wants[ci].idx = make(map[uint64]int)
		for i := 0; i < total; i++ {
			ent, sc, k := e2eEvent(i)
			if c.region.Matches(ent, sc, k, 0) {
				wants[ci].seqs = append(wants[ci].seqs, seqOf[i])
				wants[ci].idx[seqOf[i]] = i
			}
		}
		slices.Sort(wants[ci].seqs)
	}

	limit := 2 * time.Minute
	for ci, c := range consumers {
		w, last := workers[ci], wants[ci].seqs[len(wants[ci].seqs)-1]
		waitFor(t, limit, c.name+" to commit its last matching seq", func() bool {
			select {
			case <-w.Done():
				t.Fatalf("%s exited early: %v", c.name, w.Join())
			default:
			}
			st := w.Stats()
			return st.CommittedStarted && st.Committed == last
		})
		caughtUp := time.Since(begin)
		if err := stopAndJoinWithin(t, w, waitLimit); err != nil {
			t.Fatalf("%s: StopAndJoin = %v", c.name, err)
		}
		st := w.Stats()
		t.Logf("%s (%s, batch %d): %d events in %d batches, caught up %v after the first append (%.0f events/s), %d saves",
			c.name, c.region, c.batch, st.Events, st.Batches, caughtUp.Round(time.Millisecond),
			float64(st.Events)/caughtUp.Seconds(), st.Saves)

		c.mu.Lock()
		problem, seqs, idx := c.problem, slices.Clone(c.seqs), slices.Clone(c.idx)
		c.mu.Unlock()
		if problem != "" {
			t.Fatalf("%s: %s", c.name, problem)
		}
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1] {
				t.Fatalf("%s: delivery %d is seq %d after %d: not strictly ascending", c.name, i, seqs[i], seqs[i-1])
			}
		}
		if !slices.Equal(seqs, wants[ci].seqs) {
			missing, extra := diffSeqs(wants[ci].seqs, seqs)
			t.Fatalf("%s: delivered %d seqs, want %d; missing %v, unexpected %v",
				c.name, len(seqs), len(wants[ci].seqs), head(missing, 10), head(extra, 10))
		}
		for i, s := range seqs {
			if wants[ci].idx[s] != idx[i] {
				t.Fatalf("%s: seq %d carried event %d, but its append receipt belongs to event %d", c.name, s, idx[i], wants[ci].idx[s])
			}
		}
		rec, found := loadCheckpoint(t, r.Checkpoints, c.name)
		if !found || rec.Position != last || !rec.Started {
			t.Fatalf("%s: checkpoint (%d, %v, found %v), want (%d, true)", c.name, rec.Position, rec.Started, found, last)
		}
		if rec.RegionIdentity == nil || *rec.RegionIdentity != c.region.Identity() || rec.JournalID != r.Store().JournalID().String() {
			t.Fatalf("%s: checkpoint bound to %v / %q, want %q / %q", c.name, rec.RegionIdentity, rec.JournalID, c.region.Identity(), r.Store().JournalID())
		}
	}
	t.Logf("writer stats: %+v", r.Writer().Stats())
}

// diffSeqs returns the seqs of want missing from got, and those of got
// not in want.
func diffSeqs(want, got []uint64) (missing, extra []uint64) {
	in := func(s []uint64) map[uint64]bool {
		m := make(map[uint64]bool, len(s))
		for _, v := range s {
			m[v] = true
		}
		return m
	}
	w, g := in(want), in(got)
	for _, v := range want {
		if !g[v] {
			missing = append(missing, v)
		}
	}
	for _, v := range got {
		if !w[v] {
			extra = append(extra, v)
		}
	}
	return missing, extra
}

func head[T any](s []T, n int) []T { return s[:min(n, len(s))] }

// ---------------------------------------------------------------------------
// WRK-17

// wrk17Call is one handler call as observed.
type wrk17Call struct {
	Seqs    []uint64
	Gaps    []delivery.GapObservation
	Witness string // the witness's checkpoint id, "" for none
}

// wrk17Run is everything observable about one worker run.
type wrk17Run struct {
	Calls     []wrk17Call
	Join      string // Join's error text, "<nil>" for none
	Record    *checkpoint.Record
	Batches   uint64
	Events    uint64
	Saves     uint64
	Restarts  uint64
	Gaps      uint64
	GapSeqs   uint64
	Committed uint64
}

// wrk17Step is one scripted run: batch size, restart policy and what the
// handler does on each call (1-based); calls past the script Continue,
// except that the call delivering the last seq Stops.
type wrk17Step struct {
	batch  int
	policy delivery.RestartPolicy
	script map[int]string // "continue", "stop", "rollback", "panic"
}

var wrk17Script = []wrk17Step{
	{batch: 4, policy: delivery.RestartOnce{}, script: map[int]string{1: "continue", 2: "continue", 3: "rollback"}},
	{batch: 3, policy: delivery.RestartOnce{}, script: map[int]string{2: "panic", 5: "stop"}},
	{batch: 5, policy: delivery.RestartBounded{MaxRestarts: 0}, script: map[int]string{2: "panic"}},
	{batch: 2, policy: delivery.RestartBounded{MaxRestarts: 2, Within: time.Minute}, script: map[int]string{1: "panic", 2: "panic", 4: "stop"}},
	{batch: 7, policy: delivery.RestartOnce{}, script: map[int]string{}},
}

// runWRK17 runs the script with workers started by start, committing to
// ck, and returns what each run showed.
func runWRK17(t *testing.T, start func(cfg delivery.WorkerConfig, h delivery.Handler) (*delivery.Worker, error), ck checkpoint.Store, last uint64) []wrk17Run {
	t.Helper()
	const id = "wrk-17"
	var runs []wrk17Run
	for _, step := range wrk17Script {
		var mu sync.Mutex
		var run wrk17Run
		call := 0
		cfg := delivery.DefaultWorkerConfig()
		cfg.CheckpointID, cfg.Checkpoints = id, ck
		cfg.BatchSize, cfg.Restart, cfg.WorkerID = step.batch, step.policy, "wrk-17-worker"
		cfg.Retry = delivery.NoRetry() // the script counts restarts per panic
		w, err := start(cfg, func(_ context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
			mu.Lock()
			call++
			n := call
			c := wrk17Call{Seqs: entrySeqs(b), Gaps: d.Gaps}
			if d.Witness != nil {
				c.Witness = d.Witness.CheckpointID()
			}
			run.Calls = append(run.Calls, c)
			mu.Unlock()
			switch step.script[n] {
			case "stop":
				return delivery.Stop
			case "rollback":
				return delivery.StopWithRollback
			case "panic":
				panic(fmt.Sprintf("wrk-17 scripted panic at call %d", n))
			}
			if b[len(b)-1].Seq == last {
				return delivery.Stop
			}
			return delivery.Continue
		})
		if err != nil {
			t.Fatal(err)
		}
		stopOnCleanup(t, w)
		run.Join = fmt.Sprint(joinWithin(t, w, waitLimit))
		st := w.Stats()
		run.Batches, run.Events, run.Saves, run.Restarts = st.Batches, st.Events, st.Saves, st.Restarts
		run.Gaps, run.GapSeqs, run.Committed = st.GapObservations, st.GapSequences, st.Committed
		if rec, found := loadCheckpoint(t, ck, id); found {
			rec.UpdatedMs = 0 // a wall-clock stamp: informational, differs by run
			run.Record = &rec
		}
		runs = append(runs, run)
	}
	return runs
}

func entrySeqs(es []engine.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

// TestWRK17_LocalEqualsRemote runs one scripted sequence of durable
// worker runs (Continue, rollback, panics under several restart policies,
// Stop) twice over the same journal: once locally (the *journal.Store as
// source, the in-memory checkpoint store) and once remotely (fleet.Client
// over TCP, kvckpt). Every handler call (seqs, gap observations, witness),
// every Join result, every stored position and the worker counters are
// identical. The journal holds non-matching events between matching ones
// and a cancelled range, so the script crosses a gap.
func TestWRK17_LocalEqualsRemote(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	region := engine.RegionEntity("entity:wrk17")
	var matching []uint64
	add := func(n int, other bool) {
		for i := 0; i < n; i++ {
			evs := []engine.Event{dataEvent("entity:wrk17", "s", fmt.Sprintf("m%d", len(matching)))}
			if other {
				evs = append(evs, dataEvent("entity:wrk17-other", "s", "x"))
			}
			matching = append(matching, r.appendLocal(t, evs...)[0])
		}
	}
	add(8, true)
	// A cancelled range in the middle of the region.
	store := r.Store()
	if err := store.BeginFence(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := store.AppendFenced(ctx, []engine.Event{dataEvent("entity:wrk17", "s", "hidden-1"), dataEvent("entity:wrk17", "s", "hidden-2")}); err != nil {
		t.Fatal(err)
	}
	if err := store.CancelFence(ctx); err != nil {
		t.Fatal(err)
	}
	add(16, false)
	add(16, true)
	last := matching[len(matching)-1]

	local := runWRK17(t, func(cfg delivery.WorkerConfig, h delivery.Handler) (*delivery.Worker, error) {
		return delivery.StartWorker(ctx, store, region, cfg, h)
	}, checkpoint.NewMemoryStore(), last)
	remote := runWRK17(t, func(cfg delivery.WorkerConfig, h delivery.Handler) (*delivery.Worker, error) {
		return delivery.StartWorker(ctx, r.Client, region, withCheckpoints(cfg, r.Checkpoints), h)
	}, r.Checkpoints, last)

	if len(local) != len(remote) {
		t.Fatalf("%d local runs, %d remote", len(local), len(remote))
	}
	gapsSeen := false
	for i := range local {
		if !reflect.DeepEqual(local[i], remote[i]) {
			t.Errorf("run %d differs:\nlocal  %s\nremote %s", i+1, fmtRun(local[i]), fmtRun(remote[i]))
		} else {
			t.Logf("run %d: %s", i+1, fmtRun(local[i]))
		}
		gapsSeen = gapsSeen || local[i].Gaps > 0
	}
	// The script is meant to exercise all of this; check it did.
	final := local[len(local)-1]
	if final.Record == nil || final.Record.Position != last || final.Join != "<nil>" {
		t.Fatalf("the script did not end at the last seq %d: %s", last, fmtRun(final))
	}
	if !gapsSeen || local[1].Restarts != 1 || !strings.Contains(local[2].Join, "budget") || local[0].Record == nil {
		t.Fatalf("the script did not cross the gap, restart and exhaust as intended: %+v", local)
	}
}

func fmtRun(r wrk17Run) string {
	var b strings.Builder
	for _, c := range r.Calls {
		fmt.Fprintf(&b, "%v", c.Seqs)
		if len(c.Gaps) > 0 {
			fmt.Fprintf(&b, "gaps%v", c.Gaps)
		}
		if c.Witness == "" {
			b.WriteString("(no witness)")
		}
		b.WriteString(" ")
	}
	rec := "none"
	if r.Record != nil {
		rec = fmt.Sprintf("(%d, %v, %v, %s, %s)", r.Record.Position, r.Record.Started, *r.Record.RegionIdentity, r.Record.JournalID, r.Record.Owner)
	}
	return fmt.Sprintf("calls %s| join %s | record %s | batches %d events %d saves %d restarts %d gaps %d/%d committed %d",
		b.String(), r.Join, rec, r.Batches, r.Events, r.Saves, r.Restarts, r.Gaps, r.GapSeqs, r.Committed)
}

// TestRegionsLocalEqualsRemote drains one journal through a local cursor
// (the *journal.Store) and a remote one (fleet.Client) for every region
// shape the pull request can carry — entity prefix, scope, exact kind,
// category, clock range and combinations — in batches of 7: both see the
// same entries (every field), the same batch boundaries and the same gap
// observations.
func TestRegionsLocalEqualsRemote(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	store := r.Store()
	k := func(cat, typ uint16) engine.Kind {
		kind, err := engine.NewKind(cat, typ)
		if err != nil {
			t.Fatal(err)
		}
		return kind
	}
	entities := []string{"shop", "shop:17", "shop:17:line", "shop2", "shop:18"}
	scopes := []string{"eu", "us"}
	kinds := []engine.Kind{k(1, 0), k(1, 7), k(2, 1), k(0xA, 0x123)}
	n := 0
	for round := 0; round < 6; round++ {
		var batch []engine.Event
		for _, e := range entities {
			for _, s := range scopes {
				batch = append(batch, engine.Event{Coordinate: engine.MustCoordinate(e, s), Kind: kinds[n%len(kinds)], Payload: []byte(fmt.Sprintf("%d", n))})
				n++
			}
		}
		r.appendLocal(t, batch...)
		if round == 2 { // a cancelled range in the middle
			if err := store.BeginFence(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := store.AppendFenced(ctx, batch[:3]); err != nil {
				t.Fatal(err)
			}
			if err := store.CancelFence(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	regions := []engine.Region{
		engine.RegionAll(),
		engine.RegionEntity("shop"),
		engine.RegionEntity("shop:17"),
		engine.RegionScope("us"),
		engine.RegionAll().WithExact(k(1, 7)),
		engine.RegionAll().WithCategory(2),
		engine.RegionAll().WithKind(engine.KindAny()),
		engine.RegionEntity("shop:17").WithClock(engine.ClockRange{Start: 2, End: 4}),
		engine.RegionEntity("shop").WithScope("eu").WithCategory(1).WithClock(engine.ClockRange{Start: 1, End: 3}),
		engine.RegionAll().WithExact(engine.KindOpenCompleted),
	}
	for _, region := range regions {
		t.Run(region.Identity(), func(t *testing.T) {
			drain := func(src delivery.Source) (batches [][]engine.Entry, gaps []delivery.GapObservation) {
				cur, err := delivery.NewCursor(src, region)
				if err != nil {
					t.Fatal(err)
				}
				if err := cur.WithGapConfig(delivery.GapConfig{Capacity: 1024}); err != nil {
					t.Fatal(err)
				}
				for {
					es, err := cur.PollBatch(ctx, 7)
					if err != nil {
						t.Fatalf("PollBatch: %v", err)
					}
					if len(es) == 0 {
						return batches, cur.TakeGaps()
					}
					batches = append(batches, es)
				}
			}
			lb, lg := drain(store)
			rb, rg := drain(r.Client)
			if !reflect.DeepEqual(lb, rb) {
				t.Fatalf("local batches %v\nremote batches %v", batchSeqs(lb), batchSeqs(rb))
			}
			if !reflect.DeepEqual(lg, rg) {
				t.Fatalf("local gaps %+v, remote gaps %+v", lg, rg)
			}
			if len(lb) == 0 {
				t.Fatal("the region matched nothing: the case tests nothing")
			}
		})
	}
}

func batchSeqs(bs [][]engine.Entry) [][]uint64 {
	out := make([][]uint64, len(bs))
	for i, b := range bs {
		out[i] = entrySeqs(b)
	}
	return out
}
