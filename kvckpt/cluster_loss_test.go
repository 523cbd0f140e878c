package kvckpt

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/internal/natstest"
)

// pauseLog records when each batch was handled, to find the longest
// pause in delivery.
type pauseLog struct {
	mu   sync.Mutex
	at   []time.Time
	seqs []uint64
}

func (p *pauseLog) handler(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range b {
		p.seqs = append(p.seqs, e.Seq)
	}
	p.at = append(p.at, time.Now())
	return delivery.Continue
}

// longestPause returns the longest gap between two handled batches in
// [from, to).
func (p *pauseLog) longestPause(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var longest time.Duration
	prev := from
	for _, at := range p.at {
		if at.Before(from) {
			continue
		}
		if at.After(to) {
			break
		}
		longest = max(longest, at.Sub(prev))
		prev = at
	}
	return longest
}

func (p *pauseLog) handled() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]uint64(nil), p.seqs...)
}

// TestClusterNodeLoss (SPEC Decision 15): three durable workers, each on
// its own node of a 3-node cluster (with every URL to fail over to),
// started together while the R3 checkpoint bucket is being created, commit
// while events keep coming. The bucket stream leader's node is killed,
// brought back, then the meta leader's node is killed. No worker stops,
// every event is delivered in order, no checkpoint ever goes back in the
// keys' KV history. The longest delivery pause per node loss is logged
// (the target is 5 s; a test asserts no wall-clock figure).
func TestClusterNodeLoss(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	j := openJournal(t)
	app := startAppender(t, j, 2*time.Millisecond)

	type member struct {
		nc    *nats.Conn
		store *Store
		w     *delivery.Worker
		log   *pauseLog
		id    string
	}
	members := make([]*member, 3)
	openErrs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range members {
		urls := []string{c.Servers[i].ClientURL()}
		for k, srv := range c.Servers {
			if k != i {
				urls = append(urls, srv.ClientURL())
			}
		}
		nc, js := natstest.ConnectURL(t, strings.Join(urls, ","), nats.DontRandomize())
		m := &member{nc: nc, log: &pauseLog{}, id: fmt.Sprintf("node-loss-%d", i)}
		members[i] = m
		wg.Add(1)
		go func() { // together: one creates the bucket, the others bind it
			defer wg.Done()
			m.store, openErrs[i] = tryOpenClusterStore(js, Config{Journal: "loss", Replicas: 3, History: 64})
		}()
	}
	wg.Wait()
	for i, err := range openErrs {
		if err != nil {
			t.Fatalf("member %d: open the checkpoint bucket: %v", i, err)
		}
	}
	for _, m := range members {
		cfg := delivery.DefaultWorkerConfig()
		cfg.BatchSize, cfg.IdleTimeout, cfg.SaveTimeout = 16, 5*time.Millisecond, 2*time.Second
		cfg.CheckpointID, cfg.Checkpoints, cfg.WorkerID = m.id, m.store, m.id
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: m.id, Level: hclog.Info, Output: testWriter{t}})
		w, err := delivery.StartWorker(context.Background(), j, engine.RegionEntity("order"), cfg, m.log.handler)
		if err != nil {
			t.Fatal(err)
		}
		m.w = w
		t.Cleanup(func() { w.Stop(); <-w.Done() })
	}
	running := func() {
		t.Helper()
		for _, m := range members {
			select {
			case <-m.w.Done():
				t.Fatalf("worker %s stopped: %v", m.id, m.w.Join())
			default:
			}
		}
	}
	progress := func(what string) {
		t.Helper()
		for _, m := range members {
			n := m.w.Stats().Saves
			waitFor(t, m.id+" to commit "+what, 60*time.Second, func() bool { return m.w.Stats().Saves >= n+5 })
		}
		running()
	}
	progress("before any loss")

	lose := func(what string, idx int) {
		t.Helper()
		name := c.Servers[idx].Name()
		natstest.Shutdown(c.Servers[idx])
		c.Servers[idx] = nil
		down := time.Now()
		progress("after losing " + what + " " + name)
		for _, m := range members {
			t.Logf("%s down: longest delivery pause of %s %v (stats %+v)", what, m.id,
				m.log.longestPause(down, time.Now()).Round(time.Millisecond), m.w.Stats())
		}
	}
	leaderOf := func(pred func(i int) bool) int {
		for i, s := range c.Servers {
			if s != nil && pred(i) {
				return i
			}
		}
		return -1
	}
	st, err := members[0].store.kv.Status(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	streamLeader := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Cluster.Leader
	first := max(0, leaderOf(func(i int) bool { return c.Servers[i].Name() == streamLeader }))
	lose("the bucket stream leader's node", first)

	c.Servers[first] = natstest.Start(t, c.Opts[first].Clone())
	progress("after " + c.Opts[first].ServerName + " came back")
	// The node that came back must have caught up before another goes:
	// with two of three down-or-behind the stream has no quorum.
	_, js0 := natstest.ConnectURL(t, c.URLs())
	waitFor(t, "every replica of the bucket stream to be current", 60*time.Second, func() bool {
		return natstest.StreamCurrent(js0, "KV_"+DefaultBucket, 3)
	})
	isMeta := func(i int) bool { return c.Servers[i].JetStreamIsLeader() }
	waitFor(t, "the cluster to have a meta leader", 30*time.Second, func() bool { return leaderOf(isMeta) >= 0 })
	meta := leaderOf(isMeta)
	lose("the meta leader's node", meta)

	if err := app.Stop(); err != nil {
		t.Fatal(err)
	}
	want := app.Matching()
	last := want[len(want)-1]
	for _, m := range members {
		waitFor(t, m.id+" to commit the last event", 60*time.Second, func() bool { return m.w.Stats().Committed == last })
	}
	running()
	for _, m := range members {
		got := m.log.handled()
		// At least once, in order: the distinct handled seqs are exactly the
		// matching ones, and each batch follows the last one handled or
		// repeats an uncommitted one (never skips).
		seen := map[uint64]bool{}
		var distinct []uint64
		for _, s := range got {
			if !seen[s] {
				seen[s] = true
				distinct = append(distinct, s)
			}
		}
		if fmt.Sprint(distinct) != fmt.Sprint(want) {
			t.Fatalf("%s handled %d distinct events, want the %d matching ones in order", m.id, len(distinct), len(want))
		}
		var hist []jetstream.KeyValueEntry
		var herr error
		waitFor(t, "the history of "+m.id, 60*time.Second, func() bool {
			// With a node just lost, reading the history may time out.
			hist, herr = m.store.kv.History(testCtx(t), m.store.Key(m.id))
			return herr == nil
		})
		var prev uint64
		for _, e := range hist {
			rec, err := checkpoint.Decode(e.Value())
			if err != nil {
				t.Fatalf("%s revision %d: %v", m.id, e.Revision(), err)
			}
			if rec.Position < prev {
				t.Fatalf("%s went back from %d to %d at revision %d", m.id, prev, rec.Position, e.Revision())
			}
			prev = rec.Position
		}
		t.Logf("%s: %d events handled (%d repeats), %d revisions in the kept history, stats %+v",
			m.id, len(got), len(got)-len(distinct), len(hist), m.w.Stats())
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
