package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet/internal/wire"
	"github.com/batfleet/batfleet/fleet/internal/wire/wiretest"
)

// Held pulls (SPEC §15), catalogue HLD-01..HLD-09. This file has the
// helpers and the wire-level cases (HLD-01, -02, -03, -06);
// held_race_test.go has HLD-04 and held_worker_test.go the worker cases
// (HLD-05, -07, -08, -09).
//
// Synchronisation is by the writer's counters (Stats().Held, PullsHeld,
// HeldExpired, Pulls) and by the matcher's bound (matcherCaughtUp), never
// by sleeping; timing assertions are generous upper bounds, except the
// lower bound of an expiry, which the writer guarantees (a pull is held
// from when it is handled, after it was sent).

// heldWait is the wait_ms of pulls that must be answered by a match: far
// longer than any answer may take, so an answer by expiry shows.
const heldWait = 20 * time.Second

// answerBound is how long after its match a held pull may take to be
// answered, on a busy machine under the race detector.
const answerBound = 5 * time.Second

// pullOutcome is what one raw pull request got back.
type pullOutcome struct {
	reply      wire.PullReply
	code, desc string // a micro error reply's code and description
	err        error  // a transport or decode failure
	sent, at   time.Time
}

func (o pullOutcome) took() time.Duration { return o.at.Sub(o.sent) }

// mustReply fails unless o is a pull reply (not an error).
func (o pullOutcome) mustReply(t testing.TB, what string) wire.PullReply {
	t.Helper()
	if o.err != nil || o.code != "" {
		t.Fatalf("%s: error %v, code %q %q", what, o.err, o.code, o.desc)
	}
	return o.reply
}

// sendPull sends body to subject on nc as one request and delivers what
// comes back on the returned channel.
func sendPull(nc *nats.Conn, subject string, body []byte, timeout time.Duration) <-chan pullOutcome {
	out := make(chan pullOutcome, 1)
	go func() {
		o := pullOutcome{sent: time.Now()}
		msg, err := nc.Request(subject, body, timeout)
		o.at, o.err = time.Now(), err
		if err == nil {
			o.code, o.desc = msg.Header.Get(micro.ErrorCodeHeader), msg.Header.Get(micro.ErrorHeader)
			if o.code == "" {
				var r *wire.PullReply
				if r, o.err = wire.DecodePullReply(msg.Data); r != nil {
					o.reply = *r
				}
			}
		}
		out <- o
	}()
	return out
}

// pullBody encodes a pull of region after (position, started) with wait_ms.
func pullBody(region engine.Region, position uint64, started bool, wait time.Duration) []byte {
	return wire.EncodePullRequest(wire.PullRequest{
		Region: region, Position: position, Started: started, Max: 100, WaitMs: uint32(wait.Milliseconds()),
	})
}

// sendHeld sends a pull of region from the beginning with wait_ms wait.
func (e *fleetEnv) sendHeld(region engine.Region, wait time.Duration) <-chan pullOutcome {
	return sendPull(e.cnc, e.subj.Pull, pullBody(region, 0, false, wait), wait+30*time.Second)
}

// awaitPull waits up to within for an outcome.
func awaitPull(t testing.TB, ch <-chan pullOutcome, within time.Duration, what string) pullOutcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(within):
		t.Fatalf("%s: no answer within %v", what, within)
	}
	return pullOutcome{}
}

// notAnswered fails if ch already has an outcome.
func notAnswered(t testing.TB, ch <-chan pullOutcome, what string) {
	t.Helper()
	select {
	case o := <-ch:
		t.Fatalf("%s was answered (after %v): %+v", what, o.took(), o)
	default:
	}
}

// waitHeld waits until the writer holds exactly n pulls.
func waitHeld(t testing.TB, w *Writer, n int) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%d held pulls", n), func() bool { return w.Stats().Held == n })
}

// waitStats waits until the writer's counters satisfy cond. Counters move
// just after what they count — a pull is counted held after it is filed,
// answered after its reply is sent — so a check right after an answer
// polls.
func waitStats(t testing.TB, w *Writer, what string, cond func(WriterStats) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for st := w.Stats(); !cond(st); st = w.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("writer stats %+v: timed out waiting for %s", st, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// matcherCaughtUp waits until the writer's matcher has matched every
// entry visible now against its held pulls (any it satisfied are out of
// the index, though their answers may still be on their way).
func matcherCaughtUp(t testing.TB, w *Writer) {
	t.Helper()
	visible := w.store.Visible()
	waitFor(t, 10*time.Second, "the matcher to catch up", func() bool {
		w.holds.mu.Lock()
		defer w.holds.mu.Unlock()
		return w.holds.processed >= visible
	})
}

func entrySeqs(es []engine.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i := range es {
		out[i] = es[i].Seq
	}
	return out
}

// ---------------------------------------------------------------------
// HLD-01, HLD-02, HLD-03.
// ---------------------------------------------------------------------

// HLD-01: a held pull is answered with the entry a matching append makes
// visible while it waits — promptly, not at its wait_ms — and that answer
// is the only pull the writer answers.
func TestHLD01_HeldPullAnsweredByMatchingAppend(t *testing.T) {
	region := engine.RegionEntity("hld01")
	check := func(t *testing.T, e *fleetEnv, got []engine.Entry, want uint64, latency time.Duration) {
		t.Helper()
		t.Logf("answered %v after the append (wait_ms %v)", latency, heldWait)
		if fmt.Sprint(entrySeqs(got)) != fmt.Sprint([]uint64{want}) {
			t.Fatalf("held pull answered with %v, want [%d]", entrySeqs(got), want)
		}
		if latency > answerBound {
			t.Errorf("answered %v after the append; the matcher should answer at once", latency)
		}
		waitFor(t, 5*time.Second, "the answer to be counted", func() bool { return e.w.Stats().Pulls >= 1 })
		st := e.w.Stats()
		if st.Pulls != 1 || st.PullEntries != 1 || st.HeldExpired != 0 || st.Held != 0 || len(st.Errors) != 0 {
			t.Errorf("writer stats %+v: want one pull answered with one entry, nothing held or expired", st)
		}
	}

	// Held first (confirmed by the writer's counter), then the append.
	t.Run("raw", func(t *testing.T) {
		e := newEnv(t, envOpts{inproc: true})
		appendTo(t, e.store, "other", 3)
		out := e.sendHeld(region, heldWait)
		waitHeld(t, e.w, 1)
		waitStats(t, e.w, "the pull counted held, nothing answered", func(st WriterStats) bool { return st.PullsHeld == 1 && st.Pulls == 0 })
		appended := time.Now() // the answer may come before the append returns
		seq := appendTo(t, e.store, "hld01", 1)[0]
		o := awaitPull(t, out, heldWait+10*time.Second, "the held pull")
		reply := o.mustReply(t, "the held pull")
		check(t, e, reply.Entries, seq, o.at.Sub(appended))
		if reply.Visible != e.store.Visible() || reply.Incarnation != e.store.Incarnation() || reply.JournalID != e.store.JournalID() {
			t.Errorf("reply visible %d incarnation %v journal %v; store %d %v %v", reply.Visible, reply.Incarnation, reply.JournalID,
				e.store.Visible(), e.store.Incarnation(), e.store.JournalID())
		}
		waitStats(t, e.w, "one pull held", func(st WriterStats) bool { return st.PullsHeld == 1 })
	})

	// The catalogue's timing: the append is made 5 ms after the pull is
	// sent, whether or not the writer holds it yet.
	t.Run("append 5ms later", func(t *testing.T) {
		e := newEnv(t, envOpts{inproc: true})
		type appended struct {
			seq uint64
			at  time.Time
			err error
		}
		done := make(chan appended, 1)
		ev := event(t, "hld01", []byte("x"))
		out := e.sendHeld(region, heldWait)
		time.AfterFunc(5*time.Millisecond, func() {
			at := time.Now()
			rc, err := e.store.Append(context.Background(), ev)
			done <- appended{rc.Seq, at, err}
		})
		a := <-done
		if a.err != nil {
			t.Fatal(a.err)
		}
		o := awaitPull(t, out, heldWait+10*time.Second, "the held pull")
		latency := o.at.Sub(a.at)
		if o.at.Before(a.at) {
			latency = 0
		}
		check(t, e, o.mustReply(t, "the held pull").Entries, a.seq, latency)
		t.Logf("PullsHeld %d (the append may land before the pull is held)", e.w.Stats().PullsHeld)
	})

	// Through a client stream, as a cursor pulls.
	t.Run("stream", func(t *testing.T) {
		e := newEnv(t, envOpts{inproc: true})
		ctx := testCtx(t)
		st := e.c.Stream(region)
		defer st.Close()
		ws, ok := st.(delivery.WaitingStream)
		if !ok {
			t.Fatalf("%T is not a delivery.WaitingStream", st)
		}
		type polled struct {
			res engine.PollResult
			err error
			at  time.Time
		}
		out := make(chan polled, 1)
		go func() {
			res, err := ws.PollWait(ctx, 0, false, 10, heldWait)
			out <- polled{res, err, time.Now()}
		}()
		waitHeld(t, e.w, 1)
		appended := time.Now()
		seq := appendTo(t, e.store, "hld01", 1)[0]
		var p polled
		select {
		case p = <-out:
		case <-time.After(heldWait + 10*time.Second):
			t.Fatal("PollWait did not return")
		}
		if p.err != nil {
			t.Fatal(p.err)
		}
		check(t, e, p.res.Entries, seq, p.at.Sub(appended))
	})
}

// HLD-02: appends of other regions never answer a held pull: 1,000 of
// them, near misses of the held pulls' regions — a longer sibling entity,
// the parent, the entity in another scope, a kind of the same category,
// the same kind outside the clock range — both those the interest index
// never offers (other index keys) and those it offers but the region
// refuses. Each pull is answered once, empty, at its wait_ms, with the
// final visible bound.
func TestHLD02_OtherRegionsDoNotAnswer(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true})
	ctx := testCtx(t)
	regions := []engine.Region{
		engine.RegionEntity("hld02"),
		engine.RegionEntity("hld02b").WithScope("s2"),
		engine.RegionScope("sc02"),
		engine.RegionAll().WithExact(0x3001).WithClock(engine.ClockRange{Start: 5, End: 9}),
		engine.RegionAll().WithCategory(4),
		engine.RegionEntity("hld02f").WithClock(engine.ClockRange{Start: 100, End: 200}),
	}
	kinded := func(entity, scope string, kind engine.Kind) engine.Event {
		return engine.Event{Coordinate: engine.MustCoordinate(entity, scope), Kind: kind}
	}
	nearMiss := func(i int) engine.Event {
		switch i % 10 {
		case 0:
			return kinded("hld02x", "s", engine.KindData)
		case 1:
			return kinded("hld", "s", engine.KindData)
		case 2:
			return kinded("x:hld02", "s", engine.KindData)
		case 3:
			return kinded("hld02b", "s", engine.KindData) // offered by the index, another scope
		case 4:
			return kinded("hld02b:c", "s3", engine.KindData)
		case 5:
			return kinded("n", "sc02x", engine.KindData)
		case 6:
			return kinded(fmt.Sprintf("u:%d", i), "s", 0x3001) // clock 0, outside 5-9
		case 7:
			return kinded("n", "s", 0x3002)
		case 8:
			return kinded("n", "s", 0x5001) // category 5
		default:
			if i < 500 {
				return kinded("hld02f", "s", engine.KindData) // clocks 0-49, outside 100-200
			}
			return kinded("n", "s", 0xE001)
		}
	}
	const batches, perBatch = 10, 100
	// The appends must all be visible before the wait expires: on a very
	// slow machine they may not be, and the attempt is repeated with a
	// longer wait (an expiry before they are done proves nothing).
	wait := 1500 * time.Millisecond
	for attempt := 0; attempt < 4; attempt, wait = attempt+1, 2*wait {
		before := e.w.Stats()
		var outs []<-chan pullOutcome
		for _, r := range regions {
			outs = append(outs, e.sendHeld(r, wait))
		}
		k := uint64(len(regions))
		waitFor(t, 10*time.Second, "the pulls to be held", func() bool { return e.w.Stats().PullsHeld == before.PullsHeld+k })
		start := time.Now()
		for b := 0; b < batches; b++ {
			batch := make([]engine.Event, perBatch)
			for i := range batch {
				batch[i] = nearMiss(b*perBatch + i)
			}
			if _, err := e.store.AppendBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		visible, epoch := e.store.Visible(), e.store.Epoch()
		matcherCaughtUp(t, e.w)
		if st := e.w.Stats(); st.Held != len(regions) {
			var early []string
			for i, ch := range outs {
				if o := awaitPull(t, ch, wait+20*time.Second, "a held pull"); o.took() < wait {
					early = append(early, fmt.Sprintf("%s after %v", regions[i], o.took()))
				}
			}
			if len(early) > 0 {
				t.Fatalf("appends of other regions answered held pulls: %v", early)
			}
			t.Logf("the %d appends took %v, longer than wait_ms %v: again with a longer wait", batches*perBatch, time.Since(start), wait)
			continue
		}
		if st := e.w.Stats(); st.Pulls != before.Pulls {
			t.Fatalf("pulls answered during the appends: %d, before %d", st.Pulls, before.Pulls)
		}
		t.Logf("%d appends of other regions in %v, %d pulls still held (wait_ms %v)", batches*perBatch, time.Since(start), k, wait)

		for i, ch := range outs {
			what := fmt.Sprintf("the held pull of %s", regions[i])
			o := awaitPull(t, ch, wait+20*time.Second, what)
			reply := o.mustReply(t, what)
			if o.took() < wait {
				t.Errorf("%s: answered after %v, before its wait_ms %v", what, o.took(), wait)
			}
			if len(reply.Entries) != 0 || reply.Visible != visible || reply.Epoch != epoch || reply.Incarnation != e.store.Incarnation() {
				t.Errorf("%s: %v at visible %d epoch %d; want nothing at visible %d epoch %d",
					what, entrySeqs(reply.Entries), reply.Visible, reply.Epoch, visible, epoch)
			}
		}
		waitFor(t, 5*time.Second, "the answers to be counted", func() bool { return e.w.Stats().Pulls == before.Pulls+k })
		after := e.w.Stats()
		if after.HeldExpired != before.HeldExpired+k || after.Held != 0 {
			t.Errorf("stats before %+v, after %+v: want %d pulls held, expired and answered", before, after, k)
		}
		return
	}
	t.Fatalf("the appends never finished within the pulls' wait_ms (last %v)", wait/2)
}

// HLD-03: a pull with wait_ms that finds entries beyond its position is
// answered at once, never held; "beyond" is strict: an entry at the
// position itself does not count, and that pull is held.
func TestHLD03_EntriesBeyondPositionAnswerAtOnce(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true})
	region := engine.RegionEntity("hld03")
	seqs := appendTo(t, e.store, "hld03", 3)
	appendTo(t, e.store, "other", 2)

	for _, c := range []struct {
		name     string
		position uint64
		started  bool
		max      int
		want     []uint64
	}{
		{"from the beginning", 0, false, 100, seqs},
		{"after the first", seqs[0], true, 100, seqs[1:]},
		{"max 1", seqs[0], true, 1, seqs[1:2]},
	} {
		body := wire.EncodePullRequest(wire.PullRequest{Region: region, Position: c.position, Started: c.started, Max: c.max, WaitMs: uint32(heldWait.Milliseconds())})
		o := awaitPull(t, sendPull(e.cnc, e.subj.Pull, body, heldWait+10*time.Second), heldWait+10*time.Second, c.name)
		reply := o.mustReply(t, c.name)
		t.Logf("%s: answered in %v", c.name, o.took())
		if fmt.Sprint(entrySeqs(reply.Entries)) != fmt.Sprint(c.want) {
			t.Errorf("%s: entries %v, want %v", c.name, entrySeqs(reply.Entries), c.want)
		}
		if o.took() > answerBound {
			t.Errorf("%s: answered after %v, want at once", c.name, o.took())
		}
	}
	if st := e.w.Stats(); st.PullsHeld != 0 || st.Held != 0 {
		t.Fatalf("pulls with entries beyond their position were held: %+v", st)
	}

	// At the last entry: nothing beyond, so it is held until its wait.
	const short = 300 * time.Millisecond
	out := sendPull(e.cnc, e.subj.Pull, pullBody(region, seqs[2], true, short), short+30*time.Second)
	o := awaitPull(t, out, short+20*time.Second, "the pull at the last entry")
	reply := o.mustReply(t, "the pull at the last entry")
	if len(reply.Entries) != 0 || o.took() < short {
		t.Errorf("pull at the last entry: %v after %v, want nothing after its wait_ms %v", entrySeqs(reply.Entries), o.took(), short)
	}
	waitStats(t, e.w, "the pull at the last entry held and expired", func(st WriterStats) bool { return st.PullsHeld == 1 && st.HeldExpired == 1 })
}

// ---------------------------------------------------------------------
// HLD-06: limits.
// ---------------------------------------------------------------------

// HLD-06: with MaxHeldPulls held, a further pull is answered at once, as
// if it had no wait_ms; the held ones are still answered on their
// matches, pulls are held again once there is room, appends work, and a
// worker whose pull is not held still wakes promptly (it parks on epoch
// messages instead).
func TestHLD06_CapReachedAnswersAtOnce(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true, writer: WriterConfig{MaxHeldPulls: 3}})
	ctx := testCtx(t)
	held := make([]<-chan pullOutcome, 3)
	for i := range held {
		held[i] = e.sendHeld(engine.RegionEntity(fmt.Sprintf("cap:%d", i)), heldWait)
		waitHeld(t, e.w, i+1)
	}

	o := awaitPull(t, e.sendHeld(engine.RegionEntity("cap:3"), heldWait), heldWait+10*time.Second, "the pull over the cap")
	reply := o.mustReply(t, "the pull over the cap")
	t.Logf("the pull over the cap answered in %v", o.took())
	if len(reply.Entries) != 0 || o.took() > answerBound || reply.Visible != e.store.Visible() {
		t.Errorf("pull over the cap: %d entries after %v, visible %d (store %d); want an empty answer at once",
			len(reply.Entries), o.took(), reply.Visible, e.store.Visible())
	}
	waitStats(t, e.w, "three pulls held, no errors", func(st WriterStats) bool { return st.Held == 3 && st.PullsHeld == 3 && len(st.Errors) == 0 })

	// The held pulls are unharmed: a match answers one.
	seq := appendTo(t, e.store, "cap:0", 1)[0]
	o = awaitPull(t, held[0], answerBound, "the held pull of cap:0")
	if got := entrySeqs(o.mustReply(t, "the held pull of cap:0").Entries); fmt.Sprint(got) != fmt.Sprint([]uint64{seq}) {
		t.Errorf("held pull of cap:0 answered %v, want [%d]", got, seq)
	}
	waitHeld(t, e.w, 2)
	// There is room again: a pull is held.
	held = append(held[1:], e.sendHeld(engine.RegionEntity("cap:4"), heldWait))
	waitHeld(t, e.w, 3)
	waitStats(t, e.w, "four pulls held in all", func(st WriterStats) bool { return st.PullsHeld == 4 })

	// A worker while the index is full: its pulls are answered at once,
	// so it parks on epoch messages, and an append still wakes it within
	// moments (its idle timeout is 10 s).
	rec := newRecorder()
	pulls := e.w.Stats().Pulls
	wk, err := delivery.StartWorker(ctx, e.c, engine.RegionEntity("cap:w"), workerConfig(10*time.Second, 64), rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the worker's first pull", func() bool { return e.w.Stats().Pulls > pulls })
	rcs, err := e.c.Append(ctx, []engine.Event{event(t, "cap:w", nil)})
	if err != nil {
		t.Fatal(err)
	}
	acked := time.Now()
	waitFor(t, 10*time.Second, "the worker to handle its event", func() bool { return rec.has(rcs[0].Seq) })
	at, _ := rec.handledAt(rcs[0].Seq)
	t.Logf("with the index full, the worker handled its event %v after the ack", at.Sub(acked))
	if at.Sub(acked) > answerBound {
		t.Errorf("handled %v after the ack (idle timeout 10 s)", at.Sub(acked))
	}
	stopWorker(t, wk)

	// Appends through the client answer the rest.
	for i, r := range []string{"cap:1", "cap:2", "cap:4"} {
		rcs, err := e.c.Append(ctx, []engine.Event{event(t, r, nil)})
		if err != nil {
			t.Fatal(err)
		}
		o := awaitPull(t, held[i], answerBound, "the held pull of "+r)
		if got := entrySeqs(o.mustReply(t, r).Entries); fmt.Sprint(got) != fmt.Sprint([]uint64{rcs[0].Seq}) {
			t.Errorf("held pull of %s answered %v, want [%d]", r, got, rcs[0].Seq)
		}
	}
	waitHeld(t, e.w, 0)
	if st := e.w.Stats(); st.HeldExpired != 0 || len(st.Errors) != 0 {
		t.Errorf("final stats %+v", st)
	}
}

// checkBadPull fails unless o is a 400 whose description names wait_ms.
func checkBadPull(t testing.TB, o pullOutcome, what, rule string) {
	t.Helper()
	if o.err != nil || o.code != "400" || !strings.HasPrefix(o.desc, "wait_ms: ") {
		t.Errorf("%s: code %q %q (%v), want a 400 naming wait_ms", what, o.code, o.desc, o.err)
	}
	if rule != "" && !strings.Contains(o.desc, rule) {
		t.Errorf("%s: description %q does not give the rule %q", what, o.desc, rule)
	}
}

// HLD-06: wait_ms over the writer's maximum is refused 400 naming
// wait_ms; the maximum itself is held.
func TestHLD06_WaitOverMaximumRefused(t *testing.T) {
	t.Run("MaxWait 1s", func(t *testing.T) {
		e := newEnv(t, envOpts{inproc: true, writer: WriterConfig{MaxWait: time.Second}})
		region := engine.RegionEntity("max")
		o := awaitPull(t, e.sendHeld(region, 1001*time.Millisecond), answerBound, "wait_ms 1001")
		checkBadPull(t, o, "wait_ms 1001", "at most 1000")
		// Through the client: a bad request, not a transient error.
		_, err := e.c.pullWait(testCtx(t), region, 0, false, 10, 1001*time.Millisecond, engine.ID128{})
		var re *RemoteError
		if !errors.Is(err, ErrBadRequest) || errors.Is(err, delivery.ErrTransient) || !errors.As(err, &re) || !strings.HasPrefix(re.Description, "wait_ms") {
			t.Errorf("client pull with wait 1001 ms: %v, want a 400 naming wait_ms", err)
		}
		if st := e.w.Stats(); st.Errors["400"] != 2 || st.PullsHeld != 0 || st.Pulls != 0 {
			t.Errorf("stats %+v: want two 400s and nothing held", st)
		}
		// Exactly the maximum is held, and expires.
		o = awaitPull(t, e.sendHeld(region, time.Second), 30*time.Second, "wait_ms 1000")
		if reply := o.mustReply(t, "wait_ms 1000"); len(reply.Entries) != 0 || o.took() < time.Second {
			t.Errorf("wait_ms 1000: %d entries after %v, want an expiry after 1 s", len(reply.Entries), o.took())
		}
		waitStats(t, e.w, "the pull of wait_ms 1000 held and expired", func(st WriterStats) bool { return st.PullsHeld == 1 && st.HeldExpired == 1 })
	})
	t.Run("default maximum", func(t *testing.T) {
		e := newEnv(t, envOpts{inproc: true})
		region := engine.RegionEntity("max")
		o := awaitPull(t, e.sendHeld(region, 30001*time.Millisecond), answerBound, "wait_ms 30001")
		checkBadPull(t, o, "wait_ms 30001", "at most 30000")
		out := e.sendHeld(region, 30*time.Second)
		waitHeld(t, e.w, 1)
		seq := appendTo(t, e.store, "max", 1)[0]
		o = awaitPull(t, out, answerBound, "wait_ms 30000")
		if got := entrySeqs(o.mustReply(t, "wait_ms 30000").Entries); fmt.Sprint(got) != fmt.Sprint([]uint64{seq}) {
			t.Errorf("wait_ms 30000 answered %v, want [%d]", got, seq)
		}
	})
}

// HLD-06: a wait_ms that is not an unsigned 32-bit integer is refused 400
// naming wait_ms, whatever the encoding; valid encodings of other widths
// are accepted; the writer goes on serving.
func TestHLD06_WaitWrongTypeRefused(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true})
	region := wiretest.MPKV{"entity", "typed"}
	base := wiretest.ValidPull().With("region", region)
	bad := []struct {
		name  string
		value any
	}{
		{"string", "100"},
		{"negative", -1},
		{"negative int64", int64(-5)},
		{"float", 1.5},
		{"bool", true},
		{"array", []any{100}},
		{"map", wiretest.MPKV{"ms", 100}},
		{"over 32 bits", uint64(1) << 32},
	}
	for _, c := range bad {
		body := wiretest.MP(t, base.With("wait_ms", c.value))
		o := awaitPull(t, sendPull(e.cnc, e.subj.Pull, body, 10*time.Second), answerBound, "wait_ms "+c.name)
		checkBadPull(t, o, "wait_ms "+c.name, "")
	}
	// Valid encodings: 0 (not held), an 8-byte unsigned, a positive int64,
	// the key before the others.
	valid := []struct {
		name string
		body []byte
		held bool
	}{
		{"zero", wiretest.MP(t, base.With("wait_ms", 0)), false},
		{"uint64", wiretest.MP(t, base.With("wait_ms", uint64(50))), true},
		{"int64", wiretest.MP(t, base.With("wait_ms", int64(50))), true},
		{"first key", wiretest.MP(t, append(wiretest.MPKV{"wait_ms", 50}, base...)), true},
	}
	for _, c := range valid {
		before := e.w.Stats()
		o := awaitPull(t, sendPull(e.cnc, e.subj.Pull, c.body, 30*time.Second), 20*time.Second, "wait_ms "+c.name)
		if reply := o.mustReply(t, "wait_ms "+c.name); len(reply.Entries) != 0 {
			t.Errorf("wait_ms %s: %d entries", c.name, len(reply.Entries))
		}
		if c.held {
			waitStats(t, e.w, "the pull of wait_ms "+c.name+" held", func(st WriterStats) bool { return st.PullsHeld > before.PullsHeld })
		} else if st := e.w.Stats(); st.PullsHeld != before.PullsHeld {
			t.Errorf("wait_ms %s: held", c.name)
		}
	}
	if st := e.w.Stats(); st.Errors["400"] != uint64(len(bad)) || len(st.Errors) != 1 {
		t.Errorf("errors %v, want %d 400s", st.Errors, len(bad))
	}
	// The writer is unharmed.
	seq := appendTo(t, e.store, "typed", 1)[0]
	if got := pullAll(t, e.c, engine.RegionEntity("typed"), 10); len(got) != 1 || got[0].Seq != seq {
		t.Errorf("pull after the bad requests: %v", entrySeqs(got))
	}
}
