package kvckpt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/internal/natstest"
)

// TestClusterR3 runs the store on a 3-node JetStream cluster with an R3
// bucket. Replicated streams report a lost compare-and-swap with another
// API error code (10164) than single-replica ones (10071); the store must
// still turn both create and update conflicts into ErrConflict.
// Then one node goes down and saves keep working, for a client connected
// to a surviving node and for one connected (with every URL) to the node
// that went down.
func TestClusterR3(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	// Client A talks to n0 only; n0 never goes down.
	ncA, jsA := natstest.ConnectURL(t, c.Servers[0].ClientURL())
	s := openClusterStore(t, jsA, Config{Journal: "cluster", Replicas: 3})

	st, err := s.kv.Status(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
	if info.Config.Replicas != 3 {
		t.Fatalf("bucket has %d replicas, want 3", info.Config.Replicas)
	}

	t.Run("create-conflict", func(t *testing.T) {
		rev := mustSave(t, s, "created", testRecord(1, "first"), 0)
		_, err := s.Save(testCtx(t), "created", testRecord(2, "second"), 0)
		wantConflict(t, err, "second create")
		if rec, got := mustLoad(t, s, "created"); got != rev || rec.Owner != "first" {
			t.Errorf("after the refused create: %q at %d, want first at %d", rec.Owner, got, rev)
		}
	})

	t.Run("update-conflict", func(t *testing.T) {
		rev1 := mustSave(t, s, "updated", testRecord(1, "w"), 0)
		rev2 := mustSave(t, s, "updated", testRecord(2, "w"), rev1)
		_, err := s.Save(testCtx(t), "updated", testRecord(3, "stale"), rev1)
		wantConflict(t, err, "update from a stale revision")
		_, err = s.Save(testCtx(t), "updated", testRecord(3, "future"), rev2+100)
		wantConflict(t, err, "update from a revision never handed out")
		if rec, got := mustLoad(t, s, "updated"); got != rev2 || rec.Position != 2 {
			t.Errorf("after the refused updates: position %d at %d, want 2 at %d", rec.Position, got, rev2)
		}
	})

	// Racing saves on one key are where replicated streams answer with
	// the other code: while one save's proposal is in flight, the leader
	// refuses another with an expected revision for the same key as 10164.
	// Creators and updaters race in rounds until both codes were seen; the
	// store never looks at codes, the test only checks that the replicated
	// one occurred.
	t.Run("racing-saves", func(t *testing.T) {
		codes := make(map[int]int)
		for round := range 40 {
			for _, creators := range []bool{true, false} {
				id := fmt.Sprintf("raced-%d-%t", round, creators)
				var base checkpoint.Revision
				if !creators {
					base = mustSave(t, s, id, testRecord(0, "base"), 0)
				}
				const n = 8
				errs := make([]error, n)
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i := range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						_, errs[i] = s.Save(testCtx(t), id, testRecord(uint64(i+1), fmt.Sprint(i)), base)
					}()
				}
				close(start)
				wg.Wait()
				winner := -1
				for i, err := range errs {
					if err == nil {
						if winner >= 0 {
							t.Fatalf("%s: racers %d and %d both won from revision %d", id, winner, i, base)
						}
						winner = i
						continue
					}
					wantConflict(t, err, fmt.Sprintf("%s: racer %d", id, i))
					var apiErr *jetstream.APIError
					if errors.As(err, &apiErr) {
						codes[int(apiErr.ErrorCode)]++
					}
				}
				if winner < 0 {
					t.Fatalf("%s: no racer won", id)
				}
				if rec, _ := mustLoad(t, s, id); rec.Position != uint64(winner+1) {
					t.Fatalf("%s: stored position %d, want the winner's %d", id, rec.Position, winner+1)
				}
			}
			if codes[int(jetstream.JSErrCodeStreamWrongLastSequenceConstant)] > 0 && codes[int(jetstream.JSErrCodeStreamWrongLastSequence)] > 0 {
				break
			}
		}
		t.Logf("conflict API error codes seen (code: count): %v", codes)
		if codes[int(jetstream.JSErrCodeStreamWrongLastSequenceConstant)] == 0 {
			t.Errorf("no racing save was refused with the replicated code %d in 40 rounds: the path this test is for was not exercised",
				jetstream.JSErrCodeStreamWrongLastSequenceConstant)
		}
	})

	t.Run("node-down", func(t *testing.T) {
		// The victim is the bucket's stream leader unless that is n0, so
		// the survivors must elect a new leader.
		victim := 2
		if leader := info.Cluster.Leader; leader != "" && leader != c.Servers[0].Name() {
			for i, srv := range c.Servers {
				if srv.Name() == leader {
					victim = i
				}
			}
		}
		t.Logf("stream leader %q; shutting down %s", info.Cluster.Leader, c.Servers[victim].Name())
		// Client B lists every node, the victim first, so it is connected
		// to the victim and must fail over.
		urls := []string{c.Servers[victim].ClientURL()}
		for i, srv := range c.Servers {
			if i != victim {
				urls = append(urls, srv.ClientURL())
			}
		}
		ncB, jsB := natstest.ConnectURL(t, strings.Join(urls, ","), nats.DontRandomize())
		sB := openClusterStore(t, jsB, Config{Journal: "cluster", Replicas: 3})
		if got := ncB.ConnectedServerName(); got != c.Servers[victim].Name() {
			t.Fatalf("client B is connected to %q, want the victim %q", got, c.Servers[victim].Name())
		}

		revA := mustSave(t, s, "node-down-a", testRecord(1, "a"), 0)
		revB := mustSave(t, sB, "node-down-b", testRecord(1, "b"), 0)
		kept := mustSave(t, s, "kept", testRecord(42, "kept"), 0)

		natstest.Shutdown(c.Servers[victim])
		c.Servers[victim] = nil // the cluster's cleanup skips it
		start := time.Now()

		posA, posB := uint64(1), uint64(1)
		revA, posA = saveUntilAccepted(t, s, "node-down-a", revA, posA)
		t.Logf("client A (on n0): first save accepted %v after the shutdown", time.Since(start).Round(time.Millisecond))
		revB, posB = saveUntilAccepted(t, sB, "node-down-b", revB, posB)
		t.Logf("client B (failed over to %s): first save accepted %v after the shutdown",
			ncB.ConnectedServerName(), time.Since(start).Round(time.Millisecond))
		if !ncA.IsConnected() {
			t.Errorf("client A lost its connection to n0")
		}

		// From now on every save must succeed at once.
		for i := range 20 {
			posA++
			revA = mustSave(t, s, "node-down-a", testRecord(posA, "a"), revA)
			posB++
			revB = mustSave(t, sB, "node-down-b", testRecord(posB, "b"), revB)
			if i == 0 {
				// And conflicts are still conflicts with one node down.
				_, err := s.Save(testCtx(t), "node-down-a", testRecord(0, "stale"), revA-1)
				wantConflict(t, err, "stale update with a node down")
				_, err = sB.Save(testCtx(t), "node-down-b", testRecord(0, "again"), 0)
				wantConflict(t, err, "create of an existing key with a node down")
			}
		}
		if rec, rev := mustLoad(t, sB, "kept"); rev != kept || rec.Position != 42 {
			t.Errorf("record saved before the shutdown: position %d at %d, want 42 at %d", rec.Position, rev, kept)
		}
		if rec, rev := mustLoad(t, s, "node-down-b"); rev != revB || rec.Position != posB {
			t.Errorf("client A reads B's record at position %d revision %d, want %d at %d", rec.Position, rev, posB, revB)
		}
	})
}

func wantConflict(t testing.TB, err error, what string) {
	t.Helper()
	if !errors.Is(err, checkpoint.ErrConflict) {
		t.Fatalf("%s: %v, want ErrCheckpointConflict", what, err)
	}
	if errors.Is(err, checkpoint.ErrIO) {
		t.Fatalf("%s: conflict also matches ErrCheckpointIO: %v", what, err)
	}
}

// saveUntilAccepted saves position pos+1 of id until a save is accepted,
// during the few seconds a replicated stream may need to elect a new
// leader. A save that timed out may have been applied all the same, so
// after an I/O error it reloads the record and its revision, and requires
// the position not to have moved other than by its own saves.
func saveUntilAccepted(t testing.TB, s *Store, id string, rev checkpoint.Revision, pos uint64) (checkpoint.Revision, uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		newRev, err := s.Save(ctx, id, testRecord(pos+1, "after"), rev)
		cancel()
		if err == nil {
			return newRev, pos + 1
		}
		if time.Now().After(deadline) {
			t.Fatalf("save of %q still failing after %d attempts: %v", id, attempt, err)
		}
		if !errors.Is(err, checkpoint.ErrIO) && !errors.Is(err, checkpoint.ErrConflict) {
			t.Fatalf("save of %q: %v, want success, an I/O error or (after an ambiguous timeout) a conflict", id, err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
		rec, got, lerr := s.Load(ctx, id)
		cancel()
		if lerr == nil {
			if rec.Position != pos && rec.Position != pos+1 {
				t.Fatalf("%q moved to position %d; only %d or %d are possible", id, rec.Position, pos, pos+1)
			}
			rev, pos = got, rec.Position
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openClusterStore opens a Store on a cluster that StartCluster may have
// handed over as soon as it elected a meta leader: until every peer has
// reported in, creating an R3 bucket is refused with "no suitable peers
// for placement" (JetStream API error 10005), which the test waits out.
// Any other error fails at once.
func openClusterStore(t testing.TB, js jetstream.JetStream, cfg Config) *Store {
	t.Helper()
	s, err := tryOpenClusterStore(js, cfg)
	if err != nil {
		t.Fatalf("open %+v: %v", cfg, err)
	}
	return s
}

// tryOpenClusterStore is openClusterStore for any goroutine: it returns
// the error instead of failing the test. It also waits out a cluster that
// is not ready yet (checkpoint.ErrUnavailable: Open gave up after its own
// Config.Timeout).
func tryOpenClusterStore(js jetstream.JetStream, cfg Config) (*Store, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), testOpTimeout)
		s, err := Open(ctx, js, cfg)
		cancel()
		apiErr := (*jetstream.APIError)(nil)
		retry := errors.Is(err, checkpoint.ErrUnavailable) || errors.As(err, &apiErr) && apiErr.ErrorCode == 10005
		if err == nil || !retry || time.Now().After(deadline) {
			return s, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
