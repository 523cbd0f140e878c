package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/natstest"
	"github.com/batfleet/batfleet/kvckpt"
)

// crashSeed returns the seed of a crash test: BATFLEET_CRASH_SEED when set
// (to replay a run), else the clock. It is logged either way.
func crashSeed(t testing.TB) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BATFLEET_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BATFLEET_CRASH_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with BATFLEET_CRASH_SEED=%d)", seed, seed)
	return seed
}

// readSeqs reads a helper worker's "seq N" lines from c until "done" or
// EOF, calling atEnd with the number of seqs so far at the "end" of each
// batch until it returns false; it returns the seqs and whether "done"
// was seen. It fails the test when the child is silent for limit: a
// bound on each wait, not on the whole run, whose length depends on how
// loaded the machine is.
func readSeqs(t testing.TB, c *child, limit time.Duration, atEnd func(n int) bool) (seqs []uint64, done bool) {
	t.Helper()
	for {
		line, ok := c.next(t, limit)
		if !ok {
			return seqs, false
		}
		if rest, found := strings.CutPrefix(line, "seq "); found {
			s, err := strconv.ParseUint(rest, 10, 64)
			if err != nil {
				t.Fatalf("bad line %q", line)
			}
			seqs = append(seqs, s)
			continue
		}
		if line == "end" {
			if atEnd != nil && !atEnd(len(seqs)) {
				atEnd = nil
			}
			continue
		}
		if rest, found := strings.CutPrefix(line, "done "); found {
			if rest != "<nil>" {
				t.Fatalf("%s child: worker ended with %s", c.role, rest)
			}
			return seqs, true
		}
	}
}

func strictlyAscending(t testing.TB, what string, seqs []uint64) {
	t.Helper()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("%s: seq %d after %d (delivery %d): not strictly ascending", what, seqs[i], seqs[i-1], i)
		}
	}
}

// TestCrashWorker kills a remote durable worker process (kvckpt, batch
// 16) with SIGKILL in the middle of its work, restarts it, and checks
// at-least-once with bounded redelivery: the union of both runs is every
// matching seq; the restarted worker resumes right after the last
// committed position; the only seqs delivered twice are those the killed
// worker got after that position — at most one batch.
func TestCrashWorker(t *testing.T) {
	const batch = 16
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	r := newRig(t) // server (TCP, JetStream in a temp dir) and writer, in this process

	// 600 matching events among 800.
	var matching []uint64
	for b := 0; b < 16; b++ {
		events := make([]engine.Event, 0, 50)
		for i := 0; i < 50; i++ {
			entity := "crash:w"
			if (b*50+i)%4 == 3 {
				entity = "crash:other"
			}
			events = append(events, dataEvent(entity, "s", fmt.Sprintf("ev-%d", b*50+i)))
		}
		for i, s := range r.appendLocal(t, events...) {
			if events[i].Coordinate.Entity() == "crash:w" {
				matching = append(matching, s)
			}
		}
	}
	last := matching[len(matching)-1]
	env := []string{
		helperNATSEnv + "=" + r.Server.ClientURL(),
		helperEntityEnv + "=crash:w",
		helperLastEnv + "=" + strconv.FormatUint(last, 10),
		helperCkptEnv + "=crash-worker",
		helperBatchEnv + "=" + strconv.Itoa(batch),
	}
	// The first worker is paced: each batch ends when the test has read
	// it, so however slowly the test runs the worker is at most one batch
	// ahead and cannot finish before it is killed. The kill comes a
	// random while after the test let the batch holding the killAfter-th
	// seq end: while the worker saves that batch's checkpoint, polls, or
	// holds the next batch in its handler.
	killAfter := batch + 1 + rng.IntN(len(matching)/2)
	killDelay := time.Duration(rng.IntN(20_000)) * time.Microsecond
	clients := r.Server.NumClients()

	begin := time.Now()
	first := startChild(t, "worker", append(env, helperPacedEnv+"=1")...)
	run1, done := readSeqs(t, first, waitLimit, func(n int) bool {
		first.send(t, "next")
		if n < killAfter {
			return true
		}
		time.Sleep(killDelay) // where in the cycle the kill lands; any place is valid
		first.kill()
		return false
	})
	if done {
		t.Fatalf("the worker finished before it was killed (kill after %d seqs)", killAfter)
	}
	if err := first.wait(t); err == nil {
		t.Fatal("the killed worker exited cleanly")
	} else {
		t.Logf("first worker: %d seqs delivered, killed %v after the batch holding the %d-th was let end (%v)", len(run1), killDelay, killAfter, err)
	}

	// The dead worker's last save may still be in flight inside the
	// server: wait until its connection is gone (everything it sent was
	// read), then write to the bucket's stream, which is processed in
	// order, before reading the committed position.
	waitFor(t, waitLimit, "the killed worker's connection to close", func() bool { return r.Server.NumClients() <= clients })
	if _, err := r.KV.Put(context.Background(), "integration-barrier", []byte("x")); err != nil {
		t.Fatalf("barrier put: %v", err)
	}
	rec, found := loadCheckpoint(t, r.Checkpoints, "crash-worker")
	committed, started := rec.Position, rec.Started
	t.Logf("committed position after the kill: (%d, %v, found %v)", committed, started, found)

	second := startChild(t, "worker", env...)
	run2, done := readSeqs(t, second, waitLimit, nil)
	if !done {
		t.Fatalf("the restarted worker did not finish: %v", second.wait(t))
	}
	if err := second.wait(t); err != nil {
		t.Fatalf("the restarted worker exited with %v", err)
	}
	t.Logf("second worker: %d seqs; both runs took %v", len(run2), time.Since(begin))

	strictlyAscending(t, "first run", run1)
	strictlyAscending(t, "second run", run2)
	union := slices.Clone(run1)
	union = append(union, run2...)
	slices.Sort(union)
	union = slices.Compact(union)
	if !slices.Equal(union, matching) {
		missing, extra := diffSeqs(matching, union)
		t.Fatalf("union of both runs: %d seqs, want the %d matching; missing %v, unexpected %v", len(union), len(matching), head(missing, 10), head(extra, 10))
	}
	// The restart resumes right after the committed position.
	wantFirst := matching[0]
	if started {
		i, _ := slices.BinarySearch(matching, committed+1)
		wantFirst = matching[i]
	}
	if len(run2) == 0 || run2[0] != wantFirst {
		t.Fatalf("second run starts at %v, want %d (the first matching seq after the committed (%d, %v))", head(run2, 1), wantFirst, committed, started)
	}
	// Redelivered = delivered by the killed worker after its committed
	// position, and nothing else; at most one batch.
	var uncommitted, twice []uint64
	for _, s := range run1 {
		if !started || s > committed {
			uncommitted = append(uncommitted, s)
		}
		if _, in := slices.BinarySearch(run2, s); in {
			twice = append(twice, s)
		}
	}
	if !slices.Equal(twice, uncommitted) {
		t.Fatalf("delivered twice %v, want exactly the first run's seqs after the committed position %v", twice, uncommitted)
	}
	if len(twice) > batch {
		t.Fatalf("%d seqs delivered twice, want at most one batch (%d)", len(twice), batch)
	}
	t.Logf("redelivered %d seqs (%v): the batch not yet committed when the worker was killed", len(twice), twice)
	if rec, _ := loadCheckpoint(t, r.Checkpoints, "crash-worker"); rec.Position != last {
		t.Fatalf("final checkpoint %d, want %d", rec.Position, last)
	}
}

// crashBatch is one append of the writer-crash test.
type crashBatch struct {
	events   []engine.Event
	receipts []engine.Receipt // nil when the append was not acknowledged
	err      error
}

// TestCrashWriter kills the writer process (journal.Open + fleet.Writer in
// a child, on this process's embedded server) with SIGKILL at a random
// moment while producers append through fleet.Client, then restarts it on
// the same directory. Every acknowledged append is in the journal after
// the restart, at its receipt's seq with its id and content; no seq is
// reused and no event appears twice (retries carry idempotency keys); an
// unacknowledged batch is all there or not at all; every seq below the
// visible bound is an entry or lies in a cancelled range. A remote worker
// that ran through the crash resumes on the new incarnation and delivers
// every event of its region, in order, once.
func TestCrashWriter(t *testing.T) {
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	dir := t.TempDir()
	srv := natstest.StartServer(t)
	nc, js := natstest.Connect(t, srv, nats.Name("crash-producer-and-worker"))
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: journalName, Timeout: time.Second, AppendAttempts: 12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	ck, err := kvckpt.Open(context.Background(), js, kvckpt.Config{Journal: journalName})
	if err != nil {
		t.Fatal(err)
	}
	env := []string{helperNATSEnv + "=" + srv.ClientURL(), helperDirEnv + "=" + dir}

	writer := startChild(t, "writer", env...)
	inc1 := writer.expectPrefix(t, "ready ", waitLimit)

	// A remote durable worker on the producers' entities, through the crash.
	region := engine.RegionEntity("wc")
	var wmu sync.Mutex
	var delivered []engine.Entry
	cfg := delivery.DefaultWorkerConfig()
	cfg.CheckpointID, cfg.BatchSize, cfg.IdleTimeout = "crash-writer", 32, 50*time.Millisecond
	w, err := delivery.StartWorker(context.Background(), client, region, withCheckpoints(cfg, ck), func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		wmu.Lock()
		delivered = append(delivered, b...)
		wmu.Unlock()
		return delivery.Continue
	})
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, w)

	// Producers: batches of 1..8 events with unique payloads.
	const producers = 3
	var (
		mu      sync.Mutex
		batches []*crashBatch
		acked   atomic.Int64
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	prodCtx, prodCancel := context.WithCancel(context.Background())
	for p := 0; p < producers; p++ {
		prng := rand.New(rand.NewPCG(seed+uint64(p), uint64(p)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				size := 1 + prng.IntN(8)
				b := &crashBatch{}
				for j := 0; j < size; j++ {
					b.events = append(b.events, dataEvent(fmt.Sprintf("wc:%d", p), "s", fmt.Sprintf("p%d-b%d-e%d", p, n, j)))
				}
				// No deadline on the context: the client's per-request
				// Timeout (1 s) applies to each attempt, so an append in
				// flight when the writer dies is resent, with the same
				// keys, to the next incarnation. (With a deadline, the
				// first attempt would wait for it all.)
				b.receipts, b.err = client.Append(prodCtx, b.events)
				if b.err == nil {
					acked.Add(1)
				}
				mu.Lock()
				batches = append(batches, b)
				mu.Unlock()
			}
		}()
	}
	t.Cleanup(func() { stop.Store(true); prodCancel(); wg.Wait() })

	killAt := int64(20 + rng.IntN(200))
	waitFor(t, waitLimit, fmt.Sprintf("%d acknowledged appends", killAt), func() bool { return acked.Load() >= killAt })
	writer.kill()
	killedAt := time.Now()
	_ = writer.wait(t)
	ackedAtKill := acked.Load()
	t.Logf("writer (incarnation %s) killed after %d acknowledged appends", inc1, ackedAtKill)

	writer = startChild(t, "writer", env...)
	inc2 := writer.expectPrefix(t, "ready ", waitLimit)
	t.Logf("writer restarted as incarnation %s, %v after the kill", inc2, time.Since(killedAt).Round(time.Millisecond))
	waitFor(t, waitLimit, "50 acknowledged appends after the restart", func() bool { return acked.Load() >= ackedAtKill+50 })
	stop.Store(true)
	wg.Wait()

	// Everything in the journal, from the new incarnation.
	ctx := context.Background()
	info, err := client.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Incarnation.String() != inc2 {
		t.Fatalf("journal served by incarnation %s, want %s", info.Incarnation, inc2)
	}
	bySeq := make(map[uint64]engine.Entry)
	var all []engine.Entry
	pos, started := uint64(0), false
	for {
		res, err := client.Poll(ctx, engine.RegionAll(), pos, started, 4096)
		if err != nil {
			t.Fatalf("pull: %v", err)
		}
		if len(res.Entries) == 0 {
			break
		}
		for _, e := range res.Entries {
			bySeq[e.Seq] = e
		}
		all = append(all, res.Entries...)
		pos, started = res.Entries[len(res.Entries)-1].Seq, true
	}
	opens := 0
	byPayload := make(map[string]uint64)
	for _, e := range all {
		if e.Kind == engine.KindOpenCompleted {
			opens++
			continue
		}
		if prev, dup := byPayload[string(e.Payload)]; dup {
			t.Fatalf("event %q is in the journal twice: seqs %d and %d", e.Payload, prev, e.Seq)
		}
		byPayload[string(e.Payload)] = e.Seq
	}
	if opens != 2 {
		t.Fatalf("%d OPEN_COMPLETED events, want 2 (two incarnations)", opens)
	}

	// Every seq below the visible bound is an entry or cancelled.
	for s := uint64(0); s < info.Visible; s++ {
		if _, ok := bySeq[s]; ok {
			continue
		}
		if !slices.ContainsFunc(info.CancelledRanges, func(r engine.Range) bool { return r.Contains(s) }) {
			t.Fatalf("seq %d < visible %d is neither an entry nor in a cancelled range %v", s, info.Visible, info.CancelledRanges)
		}
	}

	// Acknowledged appends are there; unacknowledged ones all or nothing.
	mu.Lock()
	defer mu.Unlock()
	nAcked, nLost, nPresent, replayed := 0, 0, 0, 0
	ackedSeq := make(map[uint64]string)
	for _, b := range batches {
		if b.err == nil {
			nAcked++
			for j, rc := range b.receipts {
				ev := b.events[j]
				if prev, reused := ackedSeq[rc.Seq]; reused {
					t.Fatalf("seq %d acknowledged for %q and for %q", rc.Seq, prev, ev.Payload)
				}
				ackedSeq[rc.Seq] = string(ev.Payload)
				e, ok := bySeq[rc.Seq]
				if !ok {
					t.Fatalf("acknowledged %q at seq %d is not in the journal after the restart", ev.Payload, rc.Seq)
				}
				if e.ID != rc.ID || string(e.Payload) != string(ev.Payload) || e.Coordinate != ev.Coordinate {
					t.Fatalf("seq %d holds %q (%s, id %x); acknowledged %q (%s, id %x)", rc.Seq, e.Payload, e.Coordinate, e.ID, ev.Payload, ev.Coordinate, rc.ID)
				}
				if rc.Replayed {
					replayed++
				}
			}
			continue
		}
		nLost++
		present := 0
		for _, ev := range b.events {
			if _, ok := byPayload[string(ev.Payload)]; ok {
				present++
			}
		}
		if present != 0 && present != len(b.events) {
			t.Fatalf("unacknowledged batch (%v): %d of its %d events are in the journal", b.err, present, len(b.events))
		}
		if present > 0 {
			nPresent++
		}
	}
	t.Logf("%d appends acknowledged (%d receipts replayed by a retry), %d failed (%d of them in the journal anyway); %d entries, visible %d, cancelled %v",
		nAcked, replayed, nLost, nPresent, len(all), info.Visible, info.CancelledRanges)

	// The worker delivers every event of its region once, in order.
	var want []uint64
	for _, e := range all {
		if region.Matches(e.Coordinate.Entity(), e.Coordinate.Scope(), e.Kind, e.Clock) {
			want = append(want, e.Seq)
		}
	}
	lastWant := want[len(want)-1]
	waitFor(t, waitLimit, "the worker to commit the last event", func() bool {
		st := w.Stats()
		return st.CommittedStarted && st.Committed == lastWant
	})
	if err := stopAndJoinWithin(t, w, waitLimit); err != nil {
		t.Fatalf("worker StopAndJoin = %v", err)
	}
	wmu.Lock()
	got := slices.Clone(delivered)
	wmu.Unlock()
	gotSeqs := entrySeqs(got)
	if !slices.Equal(gotSeqs, want) {
		missing, extra := diffSeqs(want, gotSeqs)
		t.Fatalf("worker delivered %d seqs, want the region's %d; missing %v, unexpected %v", len(gotSeqs), len(want), head(missing, 10), head(extra, 10))
	}
	for _, e := range got {
		if j := bySeq[e.Seq]; j.ID != e.ID || string(j.Payload) != string(e.Payload) {
			t.Fatalf("worker got seq %d as %q, the journal holds %q", e.Seq, e.Payload, j.Payload)
		}
	}
	st := w.Stats()
	t.Logf("worker: %d events in %d batches, %d transient errors retried, %d restarts", st.Events, st.Batches, st.TransientErrors, st.Restarts)
	if st.Restarts != 0 {
		t.Fatalf("worker used its restart budget (%d) for a writer outage", st.Restarts)
	}
}
