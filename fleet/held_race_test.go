package fleet

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet/internal/wire"
)

// HLD-04: the append that makes a held pull's match visible races the
// pull's arrival. Whatever the interleaving — the append before the
// pull's poll, between its poll and its filing in the index, during the
// matcher's pass, after — the pull is answered with entries well before
// its wait_ms: the writer never loses the wake-up.

// raceTrial is one pull racing the append of its match.
type raceTrial struct {
	region   engine.Region
	position uint64
	started  bool
	match    []engine.Event // appended in one batch; at least one matches region
	viaNATS  bool           // append through the client rather than the store
	spins    []int          // Gosched calls before the append, then before each pull

	outs     []pullOutcome // one per pull of the region (1-3)
	appended time.Time
	seqs     []uint64
	err      error
}

// newRaceTrial draws trial n's region shape, position and events.
func newRaceTrial(rng *rand.Rand, n int, visible uint64) *raceTrial {
	tr := &raceTrial{viaNATS: rng.IntN(4) == 0}
	spread := 200 // far apart, or (half the time) nearly together: the narrow windows
	if rng.IntN(2) == 0 {
		spread = 8
	}
	for range 2 + rng.IntN(3) {
		tr.spins = append(tr.spins, rng.IntN(spread))
	}
	tr.outs = make([]pullOutcome, len(tr.spins)-1)
	ev := func(entity, scope string, kind engine.Kind) engine.Event {
		return engine.Event{Coordinate: engine.MustCoordinate(entity, scope), Kind: kind, Payload: []byte(fmt.Sprint(n))}
	}
	noise := ev(fmt.Sprintf("noise:%d", n), "noise", 0xE001)
	entity := fmt.Sprintf("h4:%d", n)
	fresh := true // no entry of the region exists yet
	switch rng.IntN(7) {
	case 0: // entity prefix, matched by the entity or a child
		tr.region = engine.RegionEntity(entity)
		child := entity
		if rng.IntN(2) == 0 {
			child += ":c"
		}
		tr.match = []engine.Event{ev(entity+"x", "s", engine.KindData), ev(child, "s", engine.KindData)}
	case 1: // scope
		scope := fmt.Sprintf("sc%d", n)
		tr.region = engine.RegionScope(scope)
		tr.match = []engine.Event{ev(entity, "s", engine.KindData), ev(entity, scope, engine.KindData)}
	case 2: // exact kind, unique to the trial
		k := engine.Kind(0x2000 + n%0x1000)
		tr.region = engine.RegionAll().WithExact(k)
		tr.match = []engine.Event{ev(entity, "s", k)}
	case 3: // category, shared with other trials
		c := uint16(4 + rng.IntN(3))
		tr.region = engine.RegionAll().WithCategory(c)
		tr.match = []engine.Event{ev(entity, "s", engine.Kind(c<<12|1))}
		fresh = false
	case 4: // entity and scope: the entity in another scope does not match
		tr.region = engine.RegionEntity(entity).WithScope("s2")
		tr.match = []engine.Event{ev(entity, "other", engine.KindData), ev(entity, "s2", engine.KindData)}
	case 5: // everything (any append wakes it)
		tr.region = engine.RegionAll().WithClock(engine.ClockRange{Start: 0, End: math.MaxUint32})
		tr.match = []engine.Event{ev(entity, "s", engine.KindData)}
		fresh = false
	case 6: // an entity's clock range: its first event (clock 0) does not match, the second does
		tr.region = engine.RegionEntity(entity).WithClock(engine.ClockRange{Start: 1, End: 5})
		tr.match = []engine.Event{ev(entity, "s", engine.KindData), ev(entity, "s", engine.KindData)}
	}
	if rng.IntN(2) == 0 {
		tr.match = append([]engine.Event{noise}, tr.match...)
	}
	// The position: from the beginning (only where nothing matches yet),
	// or after a recent seq; every event appended from now on is beyond it.
	switch {
	case fresh && rng.IntN(3) == 0:
	case visible > 0:
		tr.started = true
		tr.position = visible - 1 - uint64(rng.IntN(int(min(visible, 30))))
		if !fresh {
			tr.position = visible - 1 // usually nothing of a shared region beyond it
		}
	}
	return tr
}

// check fails unless each of the trial's pulls was answered promptly with
// entries of its region beyond its position; it returns the slowest
// answer's delay after the append.
func (tr *raceTrial) check(t *testing.T, n int) (worst time.Duration) {
	t.Helper()
	what := fmt.Sprintf("trial %d (region %s, after (%d, %v), spins %v, via NATS %v)", n, tr.region, tr.position, tr.started, tr.spins, tr.viaNATS)
	if tr.err != nil {
		t.Fatalf("%s: append: %v", what, tr.err)
	}
	for i, out := range tr.outs {
		reply := out.mustReply(t, what)
		from := out.sent
		if tr.appended.After(from) {
			from = tr.appended
		}
		latency := out.at.Sub(from)
		worst = max(worst, latency)
		if len(reply.Entries) == 0 {
			t.Fatalf("%s: lost wake-up: pull %d answered empty after %v (appended %v, wait_ms %v)", what, i, out.took(), tr.seqs, heldWait)
		}
		if latency > answerBound {
			t.Errorf("%s: pull %d answered %v after the append (wait_ms %v)", what, i, latency, heldWait)
		}
		for _, en := range reply.Entries {
			if (tr.started && en.Seq <= tr.position) || !tr.region.Matches(en.Coordinate.Entity(), en.Coordinate.Scope(), en.Kind, en.Clock) {
				t.Errorf("%s: pull %d answered with entry %d (%s@%s kind %v clock %d), not of its region beyond its position",
					what, i, en.Seq, en.Coordinate.Entity(), en.Coordinate.Scope(), en.Kind, en.Clock)
			}
		}
	}
	return worst
}

// HLD-04 (property): rounds of trials, each one to three pulls of a
// region (of a random shape, at a random position, on in-process and TCP
// connections) with a long wait_ms and the append of its match, all
// started together after random spins, with unrelated appends alongside
// and, in every other round, other pulls held (so the matcher reads
// entries rather than skipping an empty index). Each pull must be
// answered with entries within answerBound. The seed is logged; under
// the race detector a run usually hits the window between a pull's poll and its
// filing (the guard in holds.add) several times.
func TestHLD04_NoLostWakeup(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conns := []*nats.Conn{e.cnc, connect(t, e.ns, false)} // in-process and TCP
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x4c44))

	rounds, perRound := 60, 16
	if testing.Short() {
		rounds = 10
	}
	n := 0
	var worst time.Duration
	held, pulls := 0, 0
	start := time.Now()
	for round := 0; round < rounds; round++ {
		var bg []<-chan pullOutcome
		if round%2 == 1 {
			for i := 0; i < 4; i++ {
				bg = append(bg, e.sendHeld(engine.RegionEntity(fmt.Sprintf("bg:%d:%d", round, i)), heldWait))
			}
			waitHeld(t, e.w, len(bg))
		}
		before := e.w.Stats().PullsHeld
		trials := make([]*raceTrial, perRound)
		visible := e.store.Visible()
		for i := range trials {
			trials[i] = newRaceTrial(rng, n+i, visible)
		}
		var wg sync.WaitGroup
		for i, tr := range trials {
			body := wire.EncodePullRequest(wire.PullRequest{
				Region: tr.region, Position: tr.position, Started: tr.started, Max: 100, WaitMs: uint32(heldWait.Milliseconds()),
			})
			for p := range tr.outs {
				nc := conns[(n+i+p)%len(conns)]
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range tr.spins[1+p] {
						runtime.Gosched()
					}
					tr.outs[p] = <-sendPull(nc, e.subj.Pull, body, heldWait+10*time.Second)
				}()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range tr.spins[0] {
					runtime.Gosched()
				}
				var rcs []engine.Receipt
				if tr.viaNATS {
					rcs, tr.err = e.c.Append(ctx, tr.match)
				} else {
					rcs, tr.err = e.store.AppendBatch(ctx, tr.match)
				}
				tr.appended = time.Now()
				for _, rc := range rcs {
					tr.seqs = append(tr.seqs, rc.Seq)
				}
			}()
		}
		// Unrelated appends alongside.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 3; i++ {
				if _, err := e.store.Append(ctx, engine.Event{Coordinate: engine.MustCoordinate("noise", "noise"), Kind: 0xE002}); err != nil {
					t.Errorf("noise append: %v", err)
					return
				}
			}
		}()
		wg.Wait()
		for i, tr := range trials {
			pulls += len(tr.outs)
			worst = max(worst, tr.check(t, n+i))
		}
		if t.Failed() {
			t.FailNow()
		}
		held += int(e.w.Stats().PullsHeld - before)
		n += perRound

		// Let the background pulls go: a match answers each.
		for i, ch := range bg {
			appendTo(t, e.store, fmt.Sprintf("bg:%d:%d", round, i), 1)
			if o := awaitPull(t, ch, answerBound, "a background pull"); len(o.mustReply(t, "a background pull").Entries) != 1 {
				t.Fatalf("background pull answered %v", entrySeqs(o.reply.Entries))
			}
		}
	}
	st := e.w.Stats()
	t.Logf("%d trials, %d pulls in %v: %d held (the rest answered at once); slowest answer %v after its append", n, pulls, time.Since(start), held, worst)
	if st.HeldExpired != 0 || len(st.Errors) != 0 {
		t.Errorf("writer stats %+v: no pull may expire", st)
	}
	if held == 0 || held == pulls {
		t.Logf("note: the interleavings were one-sided (%d of %d held)", held, pulls)
	}
	waitHeld(t, e.w, 0)
}

// HLD-04, the window itself: a pull's immediate poll found nothing, then
// its match became visible and the matcher passed it — before the pull
// was filed. Filing it must see that match (and answer at once); filed
// before the match, it is answered by the matcher. This replays
// handlePull's steps (poll, then holds.add) with the append between them,
// with the index empty (the matcher skips reading entries) and not.
func TestHLD04_MatchBetweenPollAndFiling(t *testing.T) {
	for _, others := range []bool{false, true} {
		t.Run(fmt.Sprintf("others held=%v", others), func(t *testing.T) {
			e := newEnv(t, envOpts{inproc: true})
			ctx := testCtx(t)
			if others {
				e.sendHeld(engine.RegionEntity("elsewhere"), heldWait)
				waitHeld(t, e.w, 1)
			}
			region := engine.RegionEntity("window")
			file := func(req wire.PullRequest, seen uint64) (*fakeRequest, bool) {
				fr := newFakeRequest(e.subj.Pull, nil)
				h := &heldPull{req: fr, pull: req, expires: time.Now().Add(heldWait)}
				return fr, e.w.holds.add(h, seen, func(from, to uint64) bool { return e.w.matchesBetween(h, from, to) })
			}
			for i, c := range []struct {
				name     string
				entity   string
				wantHeld bool
			}{
				{"a match in the window", "window", false},
				{"a non-match in the window", "window2", true},
				{"a child's match in the window", "window:c", false},
			} {
				req := wire.PullRequest{Region: region, Max: 10, WaitMs: uint32(heldWait.Milliseconds())}
				if i > 0 {
					req.Position, req.Started = e.store.Visible()-1, true
				}
				res, err := e.w.poll(req)
				if err != nil || len(res.Entries) != 0 {
					t.Fatalf("%s: poll: %v %v", c.name, entrySeqs(res.Entries), err)
				}
				if _, err := e.store.Append(ctx, event(t, c.entity, nil)); err != nil {
					t.Fatal(err)
				}
				matcherCaughtUp(t, e.w)
				fr, held := file(req, res.Visible)
				if held != c.wantHeld {
					t.Fatalf("%s: held = %v, want %v (a pull filed after the matcher passed its match would wait for the next one)", c.name, held, c.wantHeld)
				}
				if held {
					// Filed: the next match answers it.
					seq := appendTo(t, e.store, "window", 1)[0]
					select {
					case <-fr.answered:
					case <-time.After(answerBound):
						t.Fatalf("%s: the filed pull was not answered on its match", c.name)
					}
					code, desc, body := fr.result()
					reply, err := wire.DecodePullReply(body)
					if code != "" || err != nil || len(reply.Entries) != 1 || reply.Entries[0].Seq != seq {
						t.Fatalf("%s: answer %q %q %v %+v, want entry %d", c.name, code, desc, err, reply, seq)
					}
				}
			}
		})
	}
}
