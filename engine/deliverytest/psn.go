package deliverytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
)

// Handler failures and poison isolation (SPEC §17, PSN-01..06).

// psnConfig is a durable config with fast retries (attempts as given) and,
// when env has a parked store and park is set, parking.
func psnConfig(env Env, id string, attempts int, park bool) delivery.WorkerConfig {
	cfg := durableConfig(env, id)
	cfg.Retry = delivery.RetryPolicy{Attempts: attempts, Base: time.Millisecond, Max: 2 * time.Millisecond}
	if park {
		cfg.Parked = env.Parked
		cfg.ParkedRefresh = 10 * time.Millisecond
	}
	return cfg
}

// callLog records every handler call's seqs (and whether it was a replay).
type callLog struct {
	mu     sync.Mutex
	calls  [][]uint64
	replay []bool
}

func (l *callLog) add(b []engine.Entry, d *delivery.Delivery) {
	seqs := make([]uint64, len(b))
	for i, e := range b {
		seqs[i] = e.Seq
	}
	l.mu.Lock()
	l.calls = append(l.calls, seqs)
	l.replay = append(l.replay, d.Replay)
	l.mu.Unlock()
}

func (l *callLog) snapshot() [][]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// contains reports whether seqs holds s.
func contains(seqs []uint64, s uint64) bool { return slices.Contains(seqs, s) }

// PSN-01: a handler error naming entry 3 of 8 ⇒ entries 1–2 are committed
// before the retry, the retry starts at entry 3, and the worker goes on
// once it succeeds.
func scenarioPSN01(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "psn-01"
	seqs := appendN(t, env, "psn01", 8)
	log := &callLog{}
	var atRetry checkpoint.Record
	var errs firstErr
	w := startWorker(t, env.Source, regionOf("psn01"), psnConfig(env, id, 3, false), func(_ context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
		log.add(b, d)
		switch len(log.snapshot()) {
		case 1:
			return d.FailAt(seqs[2], errors.New("psn-01: entry 3 cannot be handled yet"))
		case 2:
			rec, _, err := env.Checkpoints.Load(context.Background(), id)
			if err != nil {
				errs.set("load at the retry: %v", err)
			}
			atRetry = rec
			if d.Attempt != 2 {
				errs.set("retry's Attempt = %d, want 2", d.Attempt)
			}
		}
		return delivery.Continue
	})
	eventually(t, "the checkpoint to reach e8", func() bool {
		rec, _, found := loadRecord(t, env, id)
		return found && rec.Position == seqs[7]
	})
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	errs.check(t)
	calls := log.snapshot()
	if len(calls) != 2 || !slices.Equal(calls[0], seqs) || !slices.Equal(calls[1], seqs[2:]) {
		t.Fatalf("calls = %v, want [e1..e8] then [e3..e8] (%v)", calls, seqs)
	}
	if atRetry.Position != seqs[1] {
		t.Fatalf("checkpoint at the retry = %d, want e2 = %d (entries before the named one committed first)", atRetry.Position, seqs[1])
	}
	if st := w.Stats(); st.Failures != 1 || st.Retries != 1 || st.Restarts != 0 {
		t.Fatalf("stats: failures %d, retries %d, restarts %d; want 1, 1, 0", st.Failures, st.Retries, st.Restarts)
	}
}

// PSN-02: an unnamed failure in a batch of 64 with one bad entry ⇒ the
// bad entry is found by bisection in at most 7 retries; every other entry
// is handled, the bad one's entity is parked (so the run goes on), the
// checkpoint passes the batch.
func scenarioPSN02(t *testing.T, newEnv NewEnv) {
	for _, tc := range []struct{ bad, attempts int }{{0, 3}, {17, 3}, {40, 3}, {63, 3}, {17, 1}, {63, 1}} {
		bad := tc.bad
		t.Run(fmt.Sprintf("bad-%d-attempts-%d", bad, tc.attempts), func(t *testing.T) {
			env := newEnv(t)
			id := fmt.Sprintf("psn-02-%d-%d", bad, tc.attempts)
			name := fmt.Sprintf("psn02-%d-%d", bad, tc.attempts)
			// 64 entities, one event each: parking the bad entry's entity
			// parks nothing else.
			events := make([]engine.Event, 64)
			for i := range events {
				events[i] = scenarioEvent(fmt.Sprintf("%s:%d", name, i), "x")
			}
			var seqs []uint64
			for _, rc := range env.Append(t, events...) {
				seqs = append(seqs, rc.Seq)
			}
			log := &callLog{}
			w := startWorker(t, env.Source, regionOf(name), psnConfig(env, id, tc.attempts, true), func(_ context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
				log.add(b, d)
				for _, e := range b {
					if e.Seq == seqs[bad] {
						return d.Fail(errors.New("psn-02: something in this batch is bad"))
					}
				}
				return delivery.Continue
			})
			eventually(t, "the checkpoint to pass the batch", func() bool {
				rec, _, found := loadRecord(t, env, id)
				return found && rec.Position == seqs[63]
			})
			if err := stopAndJoinWithin(t, w); err != nil {
				t.Fatalf("Join = %v", err)
			}
			calls := log.snapshot()
			alone := -1
			for i, c := range calls {
				if len(c) == 1 && c[0] == seqs[bad] {
					alone = i
					break
				}
			}
			// Bisection isolates the bad entry within 6 halvings: it is
			// handed alone by retry 7 at the latest, or (with one attempt,
			// when its half was found by elimination) never alone.
			if alone > 7 || alone < 0 && tc.attempts > 1 {
				t.Fatalf("the bad entry was handed alone at retry %d (want 1..7), %d calls: %v", alone, len(calls), calls)
			}
			handled := map[uint64]bool{}
			for _, c := range calls {
				if !contains(c, seqs[bad]) {
					for _, s := range c {
						handled[s] = true
					}
				}
			}
			for i, s := range seqs {
				if i != bad && !handled[s] {
					t.Fatalf("entry %d (seq %d) never handled in a successful call: %v", i, s, calls)
				}
			}
			parked := parkList(t, env, id)
			if len(parked) != 1 || parked[0].FirstSeq != seqs[bad] || parked[0].Count != 1 || parked[0].Attempts != tc.attempts {
				t.Fatalf("parked = %+v, want the bad entry (seq %d) after %d attempts", parked, seqs[bad], tc.attempts)
			}
		})
	}
}

// PSN-03: attempts exhausted without parking ⇒ the restart policy
// decides, as before retries existed: RestartOnce delivers again from the
// committed position once, then the worker stops with
// ErrRestartBudgetExhausted carrying the failure's text; entries before
// the failing one stay committed.
func scenarioPSN03(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "psn-03"
	seqs := appendN(t, env, "psn03", 5)
	log := &callLog{}
	var hook []string
	var hookMu sync.Mutex
	cfg := psnConfig(env, id, 2, false)
	cfg.OnRestartBudgetExhausted = func(last string) {
		hookMu.Lock()
		hook = append(hook, last)
		hookMu.Unlock()
	}
	w := startWorker(t, env.Source, regionOf("psn03"), cfg, func(_ context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
		log.add(b, d)
		if contains(seqsOf(b), seqs[2]) {
			return d.FailAt(seqs[2], errors.New("psn-03: always"))
		}
		return delivery.Continue
	})
	err := joinWithin(t, w)
	var be *delivery.BudgetExhaustedError
	if !errors.As(err, &be) || !errors.Is(err, delivery.ErrRestartBudgetExhausted) || be.LastFailure != fmt.Sprintf("entry %d: psn-03: always", seqs[2]) {
		t.Fatalf("Join = %v, want a *BudgetExhaustedError with the failure's text", err)
	}
	wantRecord(t, env, id, seqs[1])
	calls := log.snapshot()
	// [e1..e5] fails at e3 (e1, e2 committed), [e3..e5] fails: exhausted;
	// the restart delivers [e3..e5] again twice; then the budget is spent.
	want := [][]uint64{seqs, seqs[2:], seqs[2:], seqs[2:]}
	if !slices.EqualFunc(calls, want, slices.Equal) {
		t.Fatalf("calls = %v, want %v", calls, want)
	}
	st := w.Stats()
	if st.Restarts != 1 || st.Failures != 4 {
		t.Fatalf("restarts %d, failures %d; want 1 and 4", st.Restarts, st.Failures)
	}
	hookMu.Lock()
	defer hookMu.Unlock()
	if len(hook) != 1 {
		t.Fatalf("OnRestartBudgetExhausted fired %d times, want once", len(hook))
	}
}

func seqsOf(b []engine.Entry) []uint64 {
	out := make([]uint64, len(b))
	for i, e := range b {
		out[i] = e.Seq
	}
	return out
}

// psnTraffic appends rounds events to each of entities good entities and
// one poisoned one, interleaved, and returns the poisoned entity's seqs
// and every seq per entity.
func psnTraffic(t testing.TB, env Env, name string, good, rounds int) (poison []uint64, byEntity map[string][]uint64) {
	t.Helper()
	byEntity = map[string][]uint64{}
	for r := 0; r < rounds; r++ {
		var events []engine.Event
		var names []string
		for g := 0; g <= good; g++ {
			n := fmt.Sprintf("%s:e%d", name, g)
			if g == good {
				n = name + ":poison"
			}
			events = append(events, scenarioEvent(n, fmt.Sprintf("r%d", r)))
			names = append(names, entityOf(n))
		}
		for i, rc := range env.Append(t, events...) {
			byEntity[names[i]] = append(byEntity[names[i]], rc.Seq)
		}
	}
	return byEntity[entityOf(name+":poison")], byEntity
}

// perEntity records the seqs each entity's events reached the handler in.
type perEntity struct {
	mu   sync.Mutex
	seen map[string][]uint64
}

func (p *perEntity) add(b []engine.Entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[string][]uint64{}
	}
	for _, e := range b {
		p.seen[e.Coordinate.Entity()] = append(p.seen[e.Coordinate.Entity()], e.Seq)
	}
}

func (p *perEntity) get(entity string) []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen[entity])
}

// poisonHandler fails every batch holding an event of the poisoned entity
// while poisoned() holds, without naming it; it records successful
// batches only.
func poisonHandler(name string, poisoned func() bool, got *perEntity, log *callLog) delivery.Handler {
	pe := entityOf(name + ":poison")
	return func(_ context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
		if log != nil {
			log.add(b, d)
		}
		if poisoned() {
			for _, e := range b {
				if e.Coordinate.Entity() == pe {
					return d.Fail(errors.New("psn: poison"))
				}
			}
		}
		got.add(b)
		return delivery.Continue
	}
}

func parkList(t testing.TB, env Env, id string) []checkpoint.ParkedRevision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	ps, err := env.Parked.ListParked(ctx, id)
	if err != nil {
		t.Fatalf("list parked of %q: %v", id, err)
	}
	return ps
}

// psnWantGood checks every good entity's events were handled in order.
func psnWantGood(t testing.TB, got *perEntity, byEntity map[string][]uint64, poison string) {
	t.Helper()
	for ent, want := range byEntity {
		if ent == poison {
			continue
		}
		if g := got.get(ent); !slices.Equal(g, want) {
			t.Fatalf("entity %s handled %v, want %v (in order, once)", ent, g, want)
		}
	}
}

// PSN-04: with parking, one poisoned entity among many ⇒ its first event
// is parked after its attempts, its later events are parked in order
// without reaching the handler, and every other entity is delivered.
func scenarioPSN04(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id, name = "psn-04", "psn04"
	poison, byEntity := psnTraffic(t, env, name, 19, 8)
	got := &perEntity{}
	w := startWorker(t, env.Source, regionOf(name), psnConfig(env, id, 3, true), poisonHandler(name, func() bool { return true }, got, nil))
	last := slices.Max(byEntity[entityOf(name+":e0")])
	last = max(last, poison[len(poison)-1])
	eventually(t, "the checkpoint to pass every event", func() bool {
		rec, _, found := loadRecord(t, env, id)
		return found && rec.Position >= last
	})
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	psnWantGood(t, got, byEntity, entityOf(name+":poison"))
	if g := got.get(entityOf(name + ":poison")); len(g) != 0 {
		t.Fatalf("the poisoned entity's events reached the handler: %v", g)
	}
	parked := parkList(t, env, id)
	want := checkpoint.Parked{Entity: entityOf(name + ":poison"), FirstSeq: poison[0], LastSeq: poison[len(poison)-1], Count: uint64(len(poison)), Attempts: 3, Error: "psn: poison"}
	if len(parked) != 1 {
		t.Fatalf("parked = %+v, want one record", parked)
	}
	p := parked[0].Parked
	p.ParkedMs = 0
	if p != want {
		t.Fatalf("parked = %+v, want %+v", p, want)
	}
	if st := w.Stats(); st.ParkedEntities != 1 || st.ParkedEntries != uint64(len(poison)) {
		t.Fatalf("stats: parked entities %d, entries %d; want 1 and %d", st.ParkedEntities, st.ParkedEntries, len(poison))
	}
}

// PSN-05: the parked set survives a worker restart and moves with the
// checkpoint to another owner (as a consumer group's partition does):
// the next worker on the checkpoint parks the entity's new events too.
func scenarioPSN05(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id, name = "psn-05", "psn05"
	poison, byEntity := psnTraffic(t, env, name, 4, 3)
	got := &perEntity{}
	cfg := psnConfig(env, id, 2, true)
	cfg.WorkerID = "owner-1"
	w := startWorker(t, env.Source, regionOf(name), cfg, poisonHandler(name, func() bool { return true }, got, nil))
	eventually(t, "the first run to park the poisoned entity", func() bool {
		rec, _, found := loadRecord(t, env, id)
		return found && rec.Position >= poison[len(poison)-1]
	})
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
	// Another owner takes the checkpoint; its handler would accept the
	// poisoned entity now, but the entity stays parked.
	more, byEntity2 := psnTraffic(t, env, name, 4, 2)
	for e, s := range byEntity2 {
		byEntity[e] = append(byEntity[e], s...)
	}
	cfg.WorkerID = "owner-2"
	w2 := startWorker(t, env.Source, regionOf(name), cfg, poisonHandler(name, func() bool { return false }, got, nil))
	eventually(t, "the second owner to pass every event", func() bool {
		rec, _, found := loadRecord(t, env, id)
		return found && rec.Position >= more[len(more)-1] && rec.Owner == "owner-2"
	})
	if err := stopAndJoinWithin(t, w2); err != nil {
		t.Fatalf("Join = %v", err)
	}
	psnWantGood(t, got, byEntity, entityOf(name+":poison"))
	if g := got.get(entityOf(name + ":poison")); len(g) != 0 {
		t.Fatalf("a parked entity's events reached the next owner's handler: %v", g)
	}
	parked := parkList(t, env, id)
	if len(parked) != 1 || parked[0].FirstSeq != poison[0] || parked[0].LastSeq != more[len(more)-1] || parked[0].Count != uint64(len(poison)+len(more)) {
		t.Fatalf("parked = %+v, want %d..%d, %d entries", parked, poison[0], more[len(more)-1], len(poison)+len(more))
	}
}

// PSN-06: replay hands the parked entries back in seq order (marked as a
// replay), then the entity flows again; drop discards them.
func scenarioPSN06(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id, name = "psn-06", "psn06"
	poison, _ := psnTraffic(t, env, name, 3, 4)
	got := &perEntity{}
	log := &callLog{}
	var poisoned sync.Mutex
	sick := true
	isSick := func() bool { poisoned.Lock(); defer poisoned.Unlock(); return sick }
	w := startWorker(t, env.Source, regionOf(name), psnConfig(env, id, 2, true), poisonHandler(name, isSick, got, log))
	pe := entityOf(name + ":poison")
	eventually(t, "the poisoned entity to be parked with all its events", func() bool {
		rec, _, found := loadRecord(t, env, id)
		return found && rec.Position >= poison[len(poison)-1] && w.Stats().ParkedEntries == uint64(len(poison))
	})
	// The cause is fixed; an operator asks for a replay.
	poisoned.Lock()
	sick = false
	poisoned.Unlock()
	ps := parkList(t, env, id)
	if len(ps) != 1 {
		t.Fatalf("parked = %+v, want one record", ps)
	}
	p := ps[0].Parked
	p.Replay = true
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := env.Parked.PutParked(ctx, id, p, ps[0].Revision); err != nil {
		t.Fatalf("mark for replay: %v", err)
	}
	eventually(t, "the replay to unpark the entity", func() bool { return len(parkList(t, env, id)) == 0 })
	if g := got.get(pe); !slices.Equal(g, poison) {
		t.Fatalf("replay handed %v, want %v in order", g, poison)
	}
	// The entity flows again.
	after := appendN(t, env, name+":poison", 2)
	eventually(t, "the unparked entity's new events", func() bool { return len(got.get(pe)) == len(poison)+2 })
	if g := got.get(pe); !slices.Equal(g[len(poison):], after) {
		t.Fatalf("after the replay the entity got %v, want %v", g[len(poison):], after)
	}
	if st := w.Stats(); st.Replayed != uint64(len(poison)) || st.ParkedEntities != 0 {
		t.Fatalf("stats: replayed %d, parked entities %d; want %d and 0", st.Replayed, st.ParkedEntities, len(poison))
	}

	// Drop: the entity is parked again, then dropped; its parked events
	// never reach the handler, later ones do.
	poisoned.Lock()
	sick = true
	poisoned.Unlock()
	again := appendN(t, env, name+":poison", 3)
	eventually(t, "the entity to be parked again", func() bool {
		ps := parkList(t, env, id)
		return len(ps) == 1 && ps[0].LastSeq == again[2]
	})
	poisoned.Lock()
	sick = false
	poisoned.Unlock()
	ps = parkList(t, env, id)
	if err := env.Parked.DeleteParked(ctx, id, pe, ps[0].Revision); err != nil {
		t.Fatalf("drop: %v", err)
	}
	eventually(t, "the worker to see the drop", func() bool { return w.Stats().ParkedEntities == 0 })
	last := appendN(t, env, name+":poison", 1)
	eventually(t, "the dropped entity's next event", func() bool {
		g := got.get(pe)
		return len(g) > 0 && g[len(g)-1] == last[0]
	})
	g := got.get(pe)
	for _, s := range again {
		if contains(g, s) {
			t.Fatalf("dropped entry %d reached the handler: %v", s, g)
		}
	}
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("Join = %v", err)
	}
}
