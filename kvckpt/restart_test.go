package kvckpt

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/internal/natstest"
)

// TestWorkerAcrossServerRestart restarts the NATS server under a running
// durable worker (a local journal as its source, checkpoints in KV, batch
// 8) while events keep arriving, then starts a second worker on the same
// checkpoint id and lets it catch up.
//
// The first worker rides out the outage (SPEC Decision 15): a save that
// fails because the server is down is held and retried, after reading
// the key back to see whether it had landed. Three ways to get there:
//
//   - idle-short-outage: the worker is idle when the server goes down;
//     events resume once the client has noticed, and a 200 ms outage is
//     well within its 5 s save timeout.
//   - idle-long-outage: the same with a 300 ms save timeout and a 10 s
//     outage: every save attempt times out meanwhile, and the worker
//     resumes by itself once the server is back.
//   - busy-outage: the worker is saving when the server goes down, so the
//     reply to a save in flight may be lost; the worker reconciles it.
//
// Across both workers: every matching event is delivered; each worker's
// deliveries are the matching sequences in order with nothing skipped
// (the first worker's from the start, the second's from just after the
// stored checkpoint); the stored position never moves back, in the saves
// the workers saw succeed and in the key's KV history (which also holds a
// timed-out save applied after the reconnect); and the checkpoint never
// passes what a handler was given.
func TestWorkerAcrossServerRestart(t *testing.T) {
	const (
		keepGoing = "keep going"
		stop      = "stop"
		either    = "either"
	)
	for _, tc := range []struct {
		name        string
		saveTimeout time.Duration
		idle        bool          // the worker is idle when the server goes down
		outage      time.Duration // 0: until the worker has stopped
		want        string
	}{
		{"idle-short-outage", 5 * time.Second, true, 200 * time.Millisecond, keepGoing},
		{"idle-long-outage", 300 * time.Millisecond, true, 10 * time.Second, keepGoing},
		{"busy-outage", time.Second, false, 200 * time.Millisecond, keepGoing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const id = "restart-cursor"
			ts := startTestServer(t)
			nc, js := natstest.ConnectURL(t, ts.URL())
			s := openStore(t, js, Config{History: 64})
			journal := openJournal(t)
			region := engine.RegionEntity("order")
			app := startAppender(t, journal, time.Millisecond)
			rec := newSaveRecorder(t)
			history := make(map[uint64]uint64) // revision -> stored position
			snapshotHistory := func() {
				t.Helper()
				hist, err := s.kv.History(testCtx(t), s.Key(id))
				if err != nil {
					t.Fatalf("history: %v", err)
				}
				for _, e := range hist {
					r, err := checkpoint.Decode(e.Value())
					if err != nil {
						t.Fatalf("history revision %d: %v", e.Revision(), err)
					}
					history[e.Revision()] = r.Position
				}
			}

			start := func(name string, log *deliveryLog) *delivery.Worker {
				cfg := delivery.DefaultWorkerConfig()
				cfg.BatchSize = 8
				cfg.IdleTimeout = 5 * time.Millisecond
				cfg.CheckpointID = id
				cfg.Checkpoints = rec.wrap(s)
				cfg.WorkerID = name
				cfg.SaveTimeout = tc.saveTimeout
				cfg.OnCheckpointFailure = func(_ string, err error) { t.Logf("%s: save failed: %v", name, err) }
				w, err := delivery.StartWorker(context.Background(), journal, region, cfg, log.handler(delivery.Continue))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { w.Stop(); <-w.Done() })
				return w
			}

			log1 := &deliveryLog{}
			w1 := start("worker-1", log1)
			waitFor(t, "worker-1 to commit five times", 20*time.Second, func() bool { return rec.count() >= 5 })

			if tc.idle {
				app.Pause()
				m := app.Matching()
				waitFor(t, "worker-1 to commit every event so far", 20*time.Second, func() bool {
					return w1.Stats().Committed == m[len(m)-1]
				})
			}
			ts.Stop()
			down := time.Now()
			if tc.idle {
				waitFor(t, "the client to notice the shutdown", 10*time.Second, func() bool { return !nc.IsConnected() })
				app.Resume()
			}
			if tc.outage > 0 {
				time.Sleep(tc.outage)
			} else {
				select {
				case <-w1.Done():
				case <-time.After(20 * time.Second):
					t.Fatal("worker-1 still running 20s into the outage")
				}
			}
			savesAtRestart := rec.count()
			ts.Restart()
			waitBucket(t, nc, s)
			t.Logf("server down for %v", time.Since(down).Round(time.Millisecond))

			// Give worker-1 the chance to commit after the restart, unless
			// it stopped.
			waitFor(t, "worker-1 to commit after the restart or stop", 20*time.Second, func() bool {
				select {
				case <-w1.Done():
					return true
				default:
					return rec.count() > savesAtRestart
				}
			})
			err1 := w1.StopAndJoin()
			switch {
			case err1 == nil:
				if tc.want == stop {
					t.Fatal("worker-1 survived an outage longer than its save timeout")
				}
				t.Logf("worker-1 kept going after the reconnect (%d saves)", w1.Stats().Saves)
			case errors.Is(err1, delivery.ErrCheckpointWriteFailed) && errors.Is(err1, checkpoint.ErrIO):
				if tc.want == keepGoing {
					t.Fatalf("worker-1 stopped: %v; want it to ride out the outage", err1)
				}
				t.Logf("worker-1 stopped: %v", err1)
			default:
				t.Fatalf("worker-1: %v, want nil or ErrCheckpointWriteFailed wrapping ErrCheckpointIO", err1)
			}

			// More events while no worker runs, then the appender stops.
			n := len(app.Matching())
			waitFor(t, "more events", 10*time.Second, func() bool { return len(app.Matching()) >= n+50 })
			if err := app.Stop(); err != nil {
				t.Fatalf("appender: %v", err)
			}
			matching := app.Matching()
			last := matching[len(matching)-1]

			snapshotHistory()
			stored, storedRev := mustLoad(t, s, id)
			got1 := log1.all()
			saves1 := rec.sorted()
			lastSave1 := saves1[len(saves1)-1]
			switch {
			case storedRev == lastSave1.rev:
				t.Logf("stored: worker-1's last successful save, position %d", stored.Position)
			case stored.Position >= lastSave1.pos:
				t.Logf("stored: position %d at revision %d, a save of worker-1's that failed on its side but landed (its last successful save was %d at %d)",
					stored.Position, storedRev, lastSave1.pos, lastSave1.rev)
			default:
				t.Fatalf("stored position %d at revision %d is behind worker-1's last successful save %d at %d",
					stored.Position, storedRev, lastSave1.pos, lastSave1.rev)
			}
			if stored.Position > got1[len(got1)-1] {
				t.Errorf("checkpoint %d is past worker-1's last delivered %d", stored.Position, got1[len(got1)-1])
			}

			log2 := &deliveryLog{}
			w2 := start("worker-2", log2)
			waitFor(t, "worker-2 to commit the last matching event", 20*time.Second, func() bool {
				return w2.Stats().Committed == last
			})
			if err := w2.StopAndJoin(); err != nil {
				t.Fatalf("worker-2: %v", err)
			}
			snapshotHistory()

			got2 := log2.all()
			t.Logf("%d matching events; worker-1 delivered %d (last %d), worker-2 %d from position %d",
				len(matching), len(got1), got1[len(got1)-1], len(got2), stored.Position)

			// Nothing skipped: each run is a contiguous stretch of the
			// matching sequences, worker-2's starting right after the
			// stored checkpoint, and together they cover everything.
			checkRun(t, "worker-1", got1, matching, 0, false)
			checkRun(t, "worker-2", got2, matching, stored.Position, stored.Started)
			if got2[len(got2)-1] != last {
				t.Errorf("worker-2 ended at %d, want %d", got2[len(got2)-1], last)
			}

			// The stored position never regresses: in the saves the
			// workers saw succeed, and in every revision the KV history
			// still held when looked at (before worker-2 and at the end).
			rec.sorted()
			revs := slices.Sorted(maps.Keys(history))
			var prev uint64
			for _, rev := range revs {
				if history[rev] < prev {
					t.Errorf("history: position %d at revision %d after %d", history[rev], rev, prev)
				}
				prev = history[rev]
			}
			if prev != last {
				t.Errorf("final stored position %d, want %d", prev, last)
			}
			t.Logf("history checked at %d of %d revisions", len(revs), revs[len(revs)-1])
		})
	}
}

// checkRun fails unless delivered is exactly the matching sequences after
// (position, started), in order, as far as it goes.
func checkRun(t testing.TB, name string, delivered, matching []uint64, position uint64, started bool) {
	t.Helper()
	if len(delivered) == 0 {
		t.Errorf("%s delivered nothing", name)
		return
	}
	k := 0
	if started {
		k, _ = slices.BinarySearch(matching, position+1)
	}
	want := matching[k:min(len(matching), k+len(delivered))]
	for i, seq := range delivered {
		if i >= len(want) {
			t.Errorf("%s: delivery %d is %d, past the last matching sequence", name, i, seq)
			return
		}
		if seq != want[i] {
			t.Errorf("%s: delivery %d is %d, want %d (the run starts after position %d, started %t)",
				name, i, seq, want[i], position, started)
			return
		}
	}
}
