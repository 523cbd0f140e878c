package integration

import (
	"context"
	"crypto/rand"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet"
	"github.com/vmihailenco/msgpack/v5"
)

// The † cases of SPEC §13 that only a fleet has: a writer that restarts
// under a parked worker (VIS-15), a writer that is down (WRK-16) and lost
// epoch messages (WRK-18). The shared scenarios (env_test.go) cover the
// others.

// seqLog collects what a handler was handed, safe for the worker goroutine
// and the test.
type seqLog struct {
	mu      sync.Mutex
	batches [][]uint64
	times   []time.Time // when each handler call started
}

func (l *seqLog) add(batch []engine.Entry) {
	now := time.Now()
	seqs := make([]uint64, len(batch))
	for i, e := range batch {
		seqs[i] = e.Seq
	}
	l.mu.Lock()
	l.batches = append(l.batches, seqs)
	l.times = append(l.times, now)
	l.mu.Unlock()
}

func (l *seqLog) calls() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.batches)
}

// call returns the seqs and start time of call i.
func (l *seqLog) call(i int) ([]uint64, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.batches[i], l.times[i]
}

// delivered returns every delivered seq in delivery order.
func (l *seqLog) delivered() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []uint64
	for _, b := range l.batches {
		out = append(out, b...)
	}
	return out
}

// randomID128 is a fresh random incarnation id.
func randomID128(t testing.TB) engine.ID128 {
	t.Helper()
	var id engine.ID128
	if _, err := rand.Read(id[:]); err != nil {
		t.Fatal(err)
	}
	return id
}

// epochMessage is the body of an epoch message, as the README's protocol
// section documents it.
type epochMessage struct {
	V           int    `msgpack:"v"`
	JournalID   string `msgpack:"journal_id"`
	Incarnation string `msgpack:"incarnation"`
	Epoch       uint64 `msgpack:"epoch"`
	Visible     uint64 `msgpack:"visible"`
}

// publishEpoch publishes a crafted epoch message for journal name from
// the writer's connection (encoded by msgpack/v5 from the documented
// fields, as an outside client would) and flushes it.
func (r *rig) publishEpoch(t testing.TB, name string, jid, incarnation engine.ID128, epoch uint64) {
	t.Helper()
	body, err := msgpack.Marshal(epochMessage{V: 1, JournalID: jid.String(), Incarnation: incarnation.String(), Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriterNC.Publish("batfleet."+name+".epoch", body); err != nil {
		t.Fatalf("publish epoch: %v", err)
	}
	if err := r.WriterNC.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// TestVIS15_NewIncarnationWakesParkedWorker: a client parked on (I1, 9)
// is woken by (I2, 0) — a new incarnation is always newer, though its
// epoch is smaller — and not by (I1, 8); once I2 is seen, late messages of
// I1 are ignored. These use crafted epoch messages on a journal of their
// own (every client of a journal hears its epoch subject, and a crafted
// incarnation would retire the real one in all of them). Then the real
// thing: a durable remote worker parked with a 10 s idle timeout wakes
// within a second for an event appended after a writer restart.
func TestVIS15_NewIncarnationWakesParkedWorker(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	const crafted = "vis15-crafted"
	c, err := fleet.NewClient(r.ClientNC, fleet.ClientConfig{Journal: crafted})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// A client takes epoch messages once it parks (or pulls without a
	// hold): the first park subscribes and returns at once.
	if !c.Park(ctx, engine.Snapshot{}, time.Second) {
		t.Fatal("the first park did not return at once")
	}
	jid, i1, i2 := randomID128(t), randomID128(t), randomID128(t)
	snap := engine.Snapshot{Incarnation: i1, Epoch: 9}
	r.publishEpoch(t, crafted, jid, i1, 9)
	waitFor(t, waitLimit, "the client to see (I1, 9)", func() bool { return c.Latest() == snap })

	t.Run("older-epoch-same-incarnation-does-not-wake", func(t *testing.T) {
		r.publishEpoch(t, crafted, jid, i1, 8)
		// The message is flushed to the server; a wrong wake-up would end
		// this park at once. Its timeout is the window, not the verdict.
		if c.Park(ctx, snap, 300*time.Millisecond) {
			t.Fatal("(I1, 8) woke a client parked on (I1, 9)")
		}
		if got := c.Latest(); got != snap {
			t.Fatalf("latest moved to %v/%d on a stale message", got.Incarnation, got.Epoch)
		}
	})

	t.Run("new-incarnation-epoch-0-wakes", func(t *testing.T) {
		woke := make(chan bool, 1)
		begin := time.Now()
		go func() { woke <- c.Park(ctx, snap, 10*time.Second) }()
		r.publishEpoch(t, crafted, jid, i2, 0)
		select {
		case ok := <-woke:
			if !ok {
				t.Fatal("park ended without a newer snapshot")
			}
			t.Logf("(I2, 0) woke a park on (I1, 9) after %v", time.Since(begin))
		case <-time.After(waitLimit):
			t.Fatal("(I2, 0) did not wake the parked client")
		}
		if got := c.Latest(); got.Incarnation != i2 || got.Epoch != 0 {
			t.Fatalf("latest %v/%d, want %v/0", got.Incarnation, got.Epoch, i2)
		}
	})

	t.Run("late-message-of-retired-incarnation-ignored", func(t *testing.T) {
		cur := c.Latest()
		r.publishEpoch(t, crafted, jid, i1, 100)
		if c.Park(ctx, cur, 300*time.Millisecond) {
			t.Fatal("a late (I1, 100) woke a client on (I2, 0)")
		}
		if got := c.Latest(); got != cur {
			t.Fatalf("latest moved back to %v/%d", got.Incarnation, got.Epoch)
		}
	})

	t.Run("worker-across-writer-restart", func(t *testing.T) {
		spy := &parkSpy{Source: r.Client}
		log := &seqLog{}
		cfg := delivery.DefaultWorkerConfig()
		cfg.CheckpointID, cfg.Checkpoints = "vis-15", r.Checkpoints
		cfg.IdleTimeout = 10 * time.Second
		w, err := delivery.StartWorker(ctx, spy, engine.RegionEntity("entity:vis15"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
			log.add(b)
			return delivery.Continue
		})
		if err != nil {
			t.Fatal(err)
		}
		stopOnCleanup(t, w)
		first := r.appendLocal(t, dataEvent("entity:vis15", "s", "before"))[0]
		waitFor(t, waitLimit, "the worker to park after the first event", func() bool { return spy.parkedAt(w, first, true) })

		parks := spy.parks.Load()
		r.restartWriter(t)
		// The new writer's first epoch message wakes the worker; it polls,
		// finds nothing and parks again on the new incarnation.
		waitFor(t, waitLimit, "the worker to park on the new incarnation", func() bool {
			return spy.parks.Load() > parks && spy.parkedAt(w, first, true) && r.Client.Latest().Incarnation == r.Store().Incarnation()
		})
		second := r.appendLocal(t, dataEvent("entity:vis15", "s", "after"))[0]
		// Measured from the append's return, when the event is durable and
		// visible: the wake-up path starts there, and the append's fsync
		// (slow on a loaded disk) is no part of it. The handler may even
		// have started already (a negative latency).
		published := time.Now()
		waitFor(t, waitLimit, "the post-restart event", func() bool { return log.calls() >= 2 })
		seqs, ran := log.call(1)
		latency := ran.Sub(published)
		t.Logf("after the writer restart, append-to-handler latency %v (idle timeout 10s)", latency)
		if latency >= time.Second {
			t.Fatalf("handler ran %v after the append, want < 1s (woken by the epoch, not the idle timeout)", latency)
		}
		if !slices.Equal(seqs, []uint64{second}) {
			t.Fatalf("post-restart batch %v, want [%d]", seqs, second)
		}
		waitFor(t, waitLimit, "the second event to commit", func() bool { return w.Stats().Committed == second })
		if err := stopAndJoinWithin(t, w, waitLimit); err != nil {
			t.Fatalf("StopAndJoin = %v", err)
		}
		if got := log.delivered(); !slices.Equal(got, []uint64{first, second}) {
			t.Fatalf("delivered %v, want [%d %d]", got, first, second)
		}
	})
}

// TestWRK16_WriterDown: with the writer down a remote durable worker
// retries — no restart budget used, committed unchanged, Stop honoured at
// once — and resumes when the writer is back, with nothing lost and
// nothing delivered twice (the KV store stayed up, so even the batch in
// the handler when the writer went away was saved).
func TestWRK16_WriterDown(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	region := engine.RegionEntity("entity:wrk16")
	// Nine events of the region: three batches of three. The third, held
	// by the handler while the writer goes down, is the last one, so the
	// client's pull-ahead (started when the third batch was handed over)
	// finds nothing more whether it returns before the writer closes or
	// fails after: what the worker has committed while the writer is down
	// does not depend on that race.
	var want []uint64
	for i := 0; i < 9; i++ {
		want = append(want, r.appendLocal(t, dataEvent("entity:wrk16", "s", "a"), dataEvent("entity:other", "s", "b"))[0])
	}

	// The worker holds its third batch while the writer goes down.
	log := &seqLog{}
	hold := make(chan struct{})
	held := make(chan struct{})
	cfg := delivery.DefaultWorkerConfig()
	cfg.CheckpointID, cfg.BatchSize, cfg.IdleTimeout = "wrk-16", 3, 20*time.Millisecond
	w, err := delivery.StartWorker(ctx, r.Client, region, withCheckpoints(cfg, r.Checkpoints), func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		log.add(b)
		if log.calls() == 3 {
			close(held)
			<-hold
		}
		return delivery.Continue
	})
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, w)
	// A second, in-memory worker that is stopped while the writer is down.
	idle, err := delivery.StartWorker(ctx, r.Client, region, delivery.DefaultWorkerConfig(), func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action {
		return delivery.Continue
	})
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, idle)

	select {
	case <-held:
	case <-time.After(waitLimit):
		t.Fatal("third batch not handed over")
	}
	r.closeWriter(t)
	close(hold)
	committed := want[8] // batches of 3: the held third batch ends at the 9th event
	waitForWorker(t, w, waitLimit, "the held batch to commit", func() bool { return w.Stats().Committed == committed })
	waitForWorker(t, w, waitLimit, "transient retries while the writer is down", func() bool { return w.Stats().TransientErrors >= 3 })
	st := w.Stats()
	if st.Restarts != 0 || st.Committed != committed || !st.CommittedStarted {
		t.Fatalf("while down: restarts %d, committed (%d, %v); want 0 and (%d, true)", st.Restarts, st.Committed, st.CommittedStarted, committed)
	}
	select {
	case <-w.Done():
		t.Fatalf("worker exited while the writer was down: %v", w.Join())
	default:
	}
	if rec, _ := loadCheckpoint(t, r.Checkpoints, "wrk-16"); rec.Position != committed {
		t.Fatalf("record at %d while down, want %d", rec.Position, committed)
	}
	waitFor(t, waitLimit, "the second worker to retry too", func() bool { return idle.Stats().TransientErrors > 0 })
	begin := time.Now()
	if err := stopAndJoinWithin(t, idle, waitLimit); err != nil {
		t.Fatalf("StopAndJoin while the writer is down = %v", err)
	}
	if took := time.Since(begin); took >= time.Second {
		t.Fatalf("Stop during backoff took %v, want < 1s", took)
	} else {
		t.Logf("Stop during backoff took %v; %d transient errors so far", took, w.Stats().TransientErrors)
	}

	r.openWriter(t)
	for i := 0; i < 5; i++ {
		want = append(want, r.appendLocal(t, dataEvent("entity:wrk16", "s", "c"))[0])
	}
	last := want[len(want)-1]
	waitFor(t, waitLimit, "the worker to resume and commit the last event", func() bool { return w.Stats().Committed == last })
	if err := stopAndJoinWithin(t, w, waitLimit); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	if got := log.delivered(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want each of %v exactly once, in order", got, want)
	}
	if rec, _ := loadCheckpoint(t, r.Checkpoints, "wrk-16"); rec.Position != last {
		t.Fatalf("final record at %d, want %d", rec.Position, last)
	}
	t.Logf("worker stats: %+v", w.Stats())
}

// TestWRK18_LostEpochMessages: with every epoch message dropped at the
// client, an idle worker still gets a new event within about one idle
// timeout (the safety net); with them heeded it is edge-triggered.
func TestWRK18_LostEpochMessages(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	const idle = 300 * time.Millisecond
	spy := &parkSpy{Source: r.Client}
	log := &seqLog{}
	cfg := delivery.DefaultWorkerConfig()
	cfg.CheckpointID, cfg.Checkpoints, cfg.IdleTimeout = "wrk-18", r.Checkpoints, idle
	w, err := delivery.StartWorker(ctx, spy, engine.RegionEntity("entity:wrk18"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		log.add(b)
		return delivery.Continue
	})
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, w)

	var last uint64 // the committed position the worker parks with
	measure := func(payload string) time.Duration {
		t.Helper()
		calls := log.calls()
		waitFor(t, waitLimit, "the worker to park", func() bool { return spy.parkedAt(w, last, last != 0) })
		seq := r.appendLocal(t, dataEvent("entity:wrk18", "s", payload))[0]
		// From the append's return: the event exists from then on (the
		// fsync before it, slow on a loaded disk, is not the delay the
		// idle timeout bounds).
		published := time.Now()
		waitFor(t, waitLimit, "the event to be handled", func() bool { return log.calls() > calls })
		seqs, ran := log.call(calls)
		if !slices.Equal(seqs, []uint64{seq}) {
			t.Fatalf("batch %v, want [%d]", seqs, seq)
		}
		last = seq
		return ran.Sub(published)
	}

	spy.deaf.Store(true)
	var lost []time.Duration
	for i := 0; i < 3; i++ {
		lost = append(lost, measure("dropped"))
	}
	spy.deaf.Store(false)
	heeded := measure("heeded")
	t.Logf("epochs dropped: publish-to-handler %v (idle timeout %v); epochs heeded: %v", lost, idle, heeded)
	for _, d := range lost {
		if d > idle+time.Second {
			t.Fatalf("with epoch messages lost the event took %v, want about one idle timeout (%v)", d, idle)
		}
	}
	if err := stopAndJoinWithin(t, w, waitLimit); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
}

// TestRemoteWorkerRechecksNewIncarnation (SPEC §9.7): on a reply from a
// new writer incarnation a remote worker re-runs the journal and ahead
// checks (§8.5 rules 5–6) against what it committed. A writer restarted
// on a re-created journal stops it with ErrJournalMismatch; one
// restarted on an older copy of the same journal (a restore from backup)
// stops it with ErrAhead, as long as the restored journal has
// not grown past the committed position again when the worker first
// hears from it (rule 6 compares only with the visible bound). Neither
// hands the handler anything from the new incarnation.
func TestRemoteWorkerRechecksNewIncarnation(t *testing.T) {
	for _, tc := range []struct {
		name string
		want error
	}{
		{"journal-recreated", checkpoint.ErrJournalMismatch},
		{"journal-rolled-back", checkpoint.ErrAhead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			ctx := context.Background()
			region := engine.RegionEntity("entity:recheck")
			r.appendLocal(t, dataEvent("entity:recheck", "s", "0"))
			backup := t.TempDir()
			if tc.name == "journal-rolled-back" {
				r.closeWriter(t)
				if err := os.CopyFS(backup, os.DirFS(r.Dir)); err != nil {
					t.Fatalf("copy journal: %v", err)
				}
				r.openWriter(t)
			}
			var seqs []uint64
			for i := 0; i < 20; i++ {
				seqs = append(seqs, r.appendLocal(t, dataEvent("entity:recheck", "s", strconv.Itoa(i+1)))[0])
			}
			last := seqs[len(seqs)-1]
			spy := &parkSpy{Source: r.Client}
			log := &seqLog{}
			cfg := delivery.DefaultWorkerConfig()
			// The idle timeout bounds how long the worker takes to notice
			// the new incarnation (see the wait for Join below): short, so
			// that the test does not sit out parks.
			cfg.CheckpointID, cfg.Checkpoints, cfg.IdleTimeout = "recheck", r.Checkpoints, time.Second
			w, err := delivery.StartWorker(ctx, spy, region, cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
				log.add(b)
				return delivery.Continue
			})
			if err != nil {
				t.Fatal(err)
			}
			stopOnCleanup(t, w)
			waitFor(t, waitLimit, "the worker to commit and park", func() bool { return spy.parkedAt(w, last, true) })
			delivered := len(log.delivered())

			r.closeWriter(t)
			if tc.name == "journal-recreated" {
				r.Dir = t.TempDir()
			} else {
				r.Dir = backup
			}
			r.openWriter(t)
			if tc.name == "journal-recreated" {
				// Enough events that the new journal has matching seqs
				// beyond the committed position: without the journal
				// check the worker would deliver them.
				after := make([]engine.Event, 2*len(seqs)+10)
				for i := range after {
					after[i] = dataEvent("entity:recheck", "s", "after")
				}
				if got := r.appendLocal(t, after...); got[len(got)-1] <= last {
					t.Fatalf("new journal's last seq %d, want past %d", got[len(got)-1], last)
				}
			}
			// To the rolled-back journal nothing is appended: rule 6
			// (position >= visible bound) sees a rollback only until the
			// restored journal grows past the committed position again;
			// after that a worker resumes on it and never delivers the
			// restored journal's seqs at or below its position.
			//
			// How long the worker takes to stop is up to its idle
			// timeout: a recreated journal's epoch messages carry another
			// journal id, which the client ignores, so the worker polls
			// the new writer only when its park times out; and the worker
			// re-checks an empty reply of a new incarnation only after the
			// park that follows it. The wait allows both parks on top of
			// the usual limit.
			begin := time.Now()
			err = joinWithin(t, w, waitLimit+2*cfg.IdleTimeout)
			t.Logf("Join after %v = %v", time.Since(begin).Round(time.Millisecond), err)
			wantErrIs(t, "Join", err, tc.want)
			if n := len(log.delivered()); n != delivered {
				t.Fatalf("handler got %d more entries from the new incarnation", n-delivered)
			}
			if rec, _ := loadCheckpoint(t, r.Checkpoints, "recheck"); rec.Position != last {
				t.Fatalf("checkpoint moved to %d, want it kept at %d", rec.Position, last)
			}
		})
	}
}

// TestWRK16_BackoffAtMostOneSecond: SPEC §9.3b — after a transient source
// error the worker backs off "from IdleTimeout, doubling to at most 1 s".
// With an idle timeout of 10 s (as in WRK-07/08) a remote worker whose
// poll finds the writer down must therefore retry within about a second,
// and so resume about a second after the writer is back, not after the
// idle timeout.
func TestWRK16_BackoffAtMostOneSecond(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	first := r.appendLocal(t, dataEvent("entity:backoff", "s", "1"))[0]
	log := &seqLog{}
	entered, release := make(chan struct{}), make(chan struct{})
	cfg := delivery.DefaultWorkerConfig()
	cfg.CheckpointID, cfg.Checkpoints, cfg.IdleTimeout = "backoff", r.Checkpoints, 10*time.Second
	w, err := delivery.StartWorker(ctx, r.Client, engine.RegionEntity("entity:backoff"), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		log.add(b)
		if b[0].Seq == first {
			close(entered)
			<-release
		}
		return delivery.Continue
	})
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, w)
	select {
	case <-entered:
	case <-time.After(waitLimit):
		t.Fatal("first batch not handed over")
	}
	r.closeWriter(t) // the worker's next poll finds no writer
	close(release)
	waitFor(t, waitLimit, "a transient poll error", func() bool { return w.Stats().TransientErrors >= 1 })
	failedAt := time.Now()
	r.openWriter(t)
	second := r.appendLocal(t, dataEvent("entity:backoff", "s", "2"))[0]
	// The clock starts when the writer is back and the event is there:
	// from then on a worker whose backoff is capped at 1 s needs at most
	// its current wait (≤ 1 s) and one poll. Reopening the journal and
	// the append's fsync are no part of that (on a loaded machine they
	// take what they take; while they run the worker keeps retrying every
	// second at most).
	back := time.Now()
	waitFor(t, waitLimit, "the worker to resume", func() bool { return log.calls() >= 2 })
	seqs, ran := log.call(1)
	took := ran.Sub(back)
	t.Logf("resumed %v after the writer was back with an event, %v after its first transient error (idle timeout 10s; backoff cap 1s; %d transient errors)",
		took.Round(time.Millisecond), ran.Sub(failedAt).Round(time.Millisecond), w.Stats().TransientErrors)
	if !slices.Equal(seqs, []uint64{second}) {
		t.Fatalf("resumed with %v, want [%d]", seqs, second)
	}
	if took > 3*time.Second {
		t.Fatalf("the worker resumed %v after the writer was back with an event: its backoff was not capped at 1s", took.Round(time.Millisecond))
	}
}
