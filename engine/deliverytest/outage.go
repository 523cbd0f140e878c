package deliverytest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
)

// Checkpoint-store outages: a
// transient store failure is ridden out, an ambiguous save reconciled.
// The OUT- ids are this suite's own; the behaviour is Decision 15's.

// unavailable is an injected transient store failure.
func unavailable(what string) error {
	return fmt.Errorf("%w: injected: %s", checkpoint.ErrUnavailable, what)
}

// outageWorker starts a durable worker (batch 1, short idle) on name's
// region and returns it with its tally; handler always continues.
func outageWorker(t *testing.T, env Env, name string, mod func(*delivery.WorkerConfig)) (*delivery.Worker, *tally) {
	t.Helper()
	cfg := durableConfig(env, name)
	cfg.BatchSize, cfg.IdleTimeout = 1, 5*time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	calls := newTally()
	w := startWorker(t, env.Source, regionOf(name), cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		calls.add(b)
		return delivery.Continue
	})
	return w, calls
}

// OUT-01: the reply of a save is lost after the write landed ⇒ the worker
// reads the record back, finds its own write, adopts its revision and
// goes on: no conflict, no second write of that batch, nothing handled
// twice.
func scenarioOUT01(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "out-01"
	seqs := appendN(t, env, id, 1)
	env.Faults.FailSaves(id, 1, unavailable("reply lost"), true)
	w, calls := outageWorker(t, env, id, nil)
	eventually(t, "the first batch to be committed", func() bool { return w.Stats().Committed == seqs[0] })
	more := appendN(t, env, id, 2)
	eventually(t, "the next batches to be committed", func() bool { return w.Stats().Committed == more[1] })
	st := w.Stats()
	if st.Reconciled != 1 || st.Conflicts != 0 || st.SaveFailures != 0 {
		t.Fatalf("stats %+v: want 1 reconciled write, no conflict, no failure", st)
	}
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, more[0]: 1, more[1]: 1})
	wantRecord(t, env, id, more[1])
}

// OUT-02: saves fail transiently three times (nothing lands) ⇒ retried
// with backoff, the record lands once the store answers, and nothing new
// is handled while the commit is pending.
func scenarioOUT02(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "out-02"
	seqs := appendN(t, env, id, 3)
	env.Faults.FailSaves(id, 3, unavailable("no responders"), false)
	w, calls := outageWorker(t, env, id, nil)
	eventually(t, "every batch to be committed", func() bool { return w.Stats().Committed == seqs[2] })
	st := w.Stats()
	if st.CheckpointRetries < 3 || st.Reconciled != 0 || st.SaveFailures != 0 || st.PendingCommit {
		t.Fatalf("stats %+v: want >= 3 retries, nothing reconciled, no failure, nothing pending", st)
	}
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	// The first batch was held until its commit landed: the second was
	// handled only after it, and each exactly once.
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 1, seqs[2]: 1})
	wantRecord(t, env, id, seqs[2])
}

// OUT-03: a Stop during an outage abandons the pending commit at once;
// Join is nil; the record stays where it was, and the next worker
// delivers the batch again (at least once).
func scenarioOUT03(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "out-03"
	seqs := appendN(t, env, id, 2)
	w, _ := outageWorker(t, env, id, nil)
	eventually(t, "the first commit", func() bool { return w.Stats().Committed == seqs[1] })
	env.Faults.FailSaves(id, 1<<20, unavailable("cluster electing a leader"), false)
	more := appendN(t, env, id, 1)
	eventually(t, "the commit to be held", func() bool { return w.Stats().PendingCommit })
	begin := time.Now()
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("StopAndJoin during an outage = %v, want nil", err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("Stop during an outage took %v", took)
	}
	env.Faults.ClearSaves(id)
	wantRecord(t, env, id, seqs[1])
	w2, calls2 := outageWorker(t, env, id, nil)
	eventually(t, "the abandoned batch to be delivered again and committed", func() bool { return w2.Stats().Committed == more[0] })
	if err := stopAndJoinWithin(t, w2); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	calls2.wantCounts(t, map[uint64]int{more[0]: 1})
}

// OUT-04: the store is unavailable when the worker starts (a new bucket
// whose stream has no leader yet) ⇒ the load is retried, and the worker
// starts when the store answers.
func scenarioOUT04(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "out-04"
	seqs := appendN(t, env, id, 2)
	env.Faults.FailLoads(id, 3, unavailable("no responders"))
	w, calls := outageWorker(t, env, id, nil)
	eventually(t, "the worker to start and commit", func() bool { return w.Stats().Committed == seqs[1] })
	if st := w.Stats(); st.CheckpointRetries < 3 {
		t.Fatalf("stats %+v: want >= 3 retried loads", st)
	}
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 1})
}

// OUT-05: with CheckpointOutage set, an outage longer than it stops the
// worker with an error matching ErrCheckpointWriteFailed and
// ErrUnavailable; the record is untouched.
func scenarioOUT05(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "out-05"
	seqs := appendN(t, env, id, 1)
	env.Faults.FailSaves(id, 1<<20, unavailable("node lost"), false)
	w, _ := outageWorker(t, env, id, func(c *delivery.WorkerConfig) { c.CheckpointOutage = 100 * time.Millisecond })
	err := joinWithin(t, w)
	wantErr(t, "Join after a bounded outage", err, delivery.ErrCheckpointWriteFailed, checkpoint.ErrUnavailable)
	env.Faults.ClearSaves(id)
	wantNoRecord(t, env, id)
	if st := w.Stats(); st.Events != uint64(len(seqs)) || st.Saves != 0 {
		t.Fatalf("stats %+v: want the batch handled, nothing saved", st)
	}
}

// OUT-06: while a commit is held, another writer moves the checkpoint ⇒
// the reconcile finds a record that is not the worker's own: a conflict,
// which stops the worker as any conflict does.
func scenarioOUT06(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "out-06"
	seqs := appendN(t, env, id, 2)
	w, _ := outageWorker(t, env, id, nil)
	eventually(t, "the first commit", func() bool { return w.Stats().Committed == seqs[1] })
	env.Faults.FailSaves(id, 1<<20, unavailable("timeout"), false)
	appendN(t, env, id, 1)
	eventually(t, "the commit to be held", func() bool { return w.Stats().PendingCommit })
	// Another writer moves the record meanwhile (a new revision written
	// past the injected failures, as by another process).
	rec := wantRecord(t, env, id, seqs[1])
	rec.Owner, rec.UpdatedMs = "someone-else", rec.UpdatedMs+1
	plantRecord(t, env, id, rec)
	err := joinWithin(t, w)
	wantErr(t, "Join after a conflict found by reconciling", err, delivery.ErrCheckpointWriteFailed, checkpoint.ErrConflict)
	env.Faults.ClearSaves(id)
	if got := wantRecord(t, env, id, seqs[1]); got.Owner != "someone-else" {
		t.Fatalf("the record's owner is %q, want the other writer's", got.Owner)
	}
	if !errors.Is(err, checkpoint.ErrConflict) || w.Stats().Conflicts != 1 {
		t.Fatalf("stats %+v", w.Stats())
	}
}

// OUT-07: a save answered as a conflict although it landed (the client
// resent a request whose reply it lost, and the resend found the first
// applied) ⇒ the worker reads the record back, finds its own write and
// goes on.
func scenarioOUT07(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "out-07"
	seqs := appendN(t, env, id, 2)
	env.Faults.FailSaves(id, 1, fmt.Errorf("%w: injected: resent after a lost reply", checkpoint.ErrConflict), true)
	w, calls := outageWorker(t, env, id, nil)
	eventually(t, "every batch to be committed", func() bool { return w.Stats().Committed == seqs[1] })
	if st := w.Stats(); st.Reconciled != 1 || st.Conflicts != 0 || st.SaveFailures != 0 {
		t.Fatalf("stats %+v: want 1 reconciled write, no conflict, no failure", st)
	}
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 1})
	wantRecord(t, env, id, seqs[1])
}

// OUT-08: a compare-and-swap refused as a conflict while the record has
// not moved (a replicated stream whose new leader has not caught up yet)
// ⇒ not a conflict: the save is retried and lands.
func scenarioOUT08(t *testing.T, newEnv NewEnv) {
	env := newEnv(t)
	const id = "out-08"
	seqs := appendN(t, env, id, 2)
	env.Faults.FailSaves(id, 2, fmt.Errorf("%w: injected: wrong last sequence", checkpoint.ErrConflict), false)
	w, calls := outageWorker(t, env, id, nil)
	eventually(t, "every batch to be committed", func() bool { return w.Stats().Committed == seqs[1] })
	if st := w.Stats(); st.Conflicts != 0 || st.SaveFailures != 0 || st.CheckpointRetries == 0 {
		t.Fatalf("stats %+v: want retries, no conflict, no failure", st)
	}
	if err := stopAndJoinWithin(t, w); err != nil {
		t.Fatalf("StopAndJoin = %v", err)
	}
	calls.wantCounts(t, map[uint64]int{seqs[0]: 1, seqs[1]: 1})
	wantRecord(t, env, id, seqs[1])
}
