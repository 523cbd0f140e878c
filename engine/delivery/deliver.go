package delivery

import (
	"fmt"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
)

// loopState is the worker loop's state, shared by the steps of a batch.
type loopState struct {
	cur       *Cursor
	committed position // the committed resume point
	rev       checkpoint.Revision
	journalID string
	rst       restartState
	parked    map[string]*checkpoint.ParkedRevision // the parked set by entity (park.go)
	refreshed time.Time                             // when parked was last read from the store
}

// deliver hands one polled batch to the handler, applies its actions and
// commits, retrying failures narrowed to the failing entry (failure.go)
// and parking exhausted entries (park.go). It reports false when the
// worker must exit (the reason, if any, is recorded).
func (w *Worker) deliver(st *loopState, batch []engine.Entry, gaps []GapObservation) bool {
	cfg := w.cfg
	var end position // the position after the whole batch
	end.pos, end.started = st.cur.Checkpoint()
	for _, g := range gaps {
		w.stats.gaps.Add(1)
		for _, r := range g.Ranges {
			w.stats.gapSeqs.Add(r.End - r.Start)
		}
	}
	todo := batch
	if w.parking() {
		var ok bool
		if todo, ok = w.parkFilter(st, batch); !ok {
			return false
		}
	}
	part, _ := w.region.Partition()
	var (
		lo, hi   = 0, len(todo) // the next call hands todo[lo:hi]
		bisectHi int            // > 0 while bisecting: todo[lo:bisectHi] holds the failure
		attempts int            // failed calls of todo[lo] since it was found to fail
		calls    int
	)
	for lo < len(todo) {
		sub := todo[lo:hi]
		if calls > 0 {
			w.stats.retries.Add(1)
		}
		calls++
		w.stats.batches.Add(1)
		w.stats.events.Add(uint64(len(sub)))
		d := &Delivery{Witness: w.witness, Gaps: gapsIn(gaps, sub), Group: cfg.Group, Partition: part, Epoch: cfg.Epoch, Attempt: attempts + 1}
		action, panicked, text := w.callHandler(sub, d)
		if !panicked && action != Failed {
			p := end
			if hi < len(todo) {
				p = position{sub[len(sub)-1].Seq, true}
			}
			switch action {
			case Continue, Stop:
				if !w.commitTo(st, p, action == Continue) {
					return false
				}
				if action == Stop {
					w.log.Debug("handler asked to stop", "position", st.committed.pos)
					return false
				}
			case StopWithRollback:
				st.cur.Restore(st.committed.pos, st.committed.started)
				w.log.Debug("handler asked to stop with rollback", "position", st.committed.pos)
				return false
			default:
				w.record(&engine.ConfigError{Field: "handler action", Rule: fmt.Sprintf("%v is not Continue, Stop, StopWithRollback or Failed", action)})
				return false
			}
			lo = hi
			switch {
			case bisectHi-lo > 1: // the failure is in the rest of the suspect range: halve it
				hi = lo + (bisectHi-lo)/2
				continue
			case bisectHi-lo == 1: // found by elimination: retry it alone
				bisectHi, attempts, hi = 0, 1, lo+1
			default:
				bisectHi, attempts, hi = 0, 0, len(todo)
				continue
			}
		} else {
			f := failureOf(d, panicked, text)
			w.noteFailure(f, text)
			if cfg.Retry.Attempts <= 1 && !w.parking() {
				// No retries and nothing to park: every failure goes to
				// the restart policy, as before retries existed.
				return w.exhausted(st, f, nil)
			}
			k := -1
			if f.named {
				if k = indexOf(sub, f.seq); k < 0 {
					w.log.Warn("handler failure names an entry outside its batch; treated as unnamed",
						"seq", f.seq, "batch-first", sub[0].Seq, "batch-last", sub[len(sub)-1].Seq)
				}
			}
			switch {
			case k >= 0:
				if k > 0 {
					// The entries before the named one were handled.
					if !w.commitTo(st, position{sub[k-1].Seq, true}, true) {
						return false
					}
					attempts = 0
				}
				lo += k
				attempts++
				bisectHi, hi = 0, len(todo)
			case len(sub) == 1:
				attempts++
				bisectHi, hi = 0, lo+1
			default: // unnamed: bisect at once
				bisectHi = hi
				hi = lo + (bisectHi-lo)/2
				continue
			}
		}
		if attempts == 0 {
			continue
		}
		if attempts >= cfg.Retry.Attempts {
			bad := todo[lo]
			if !w.parking() {
				return w.exhausted(st, w.lastFailureOr(), &bad)
			}
			rest, ok := w.park(st, bad, attempts, w.lastFailureOr().text, todo[lo+1:])
			if !ok {
				return false
			}
			todo, lo, hi, bisectHi, attempts = rest, 0, len(rest), 0, 0
			continue
		}
		// Retry the failing entry after the backoff.
		wait := cfg.Retry.delay(attempts)
		w.log.Warn("handler failed; retrying", "seq", todo[lo].Seq, "attempt", attempts,
			"of", cfg.Retry.Attempts, "backoff", wait, "error", w.lastFailureOr().text)
		if !sleepCtx(w.stopCtx, wait) {
			return false // stopped: the uncommitted entries are delivered again later
		}
	}
	if st.committed != end {
		// The batch's tail was parked, not handled: commit past it.
		return w.commitTo(st, end, true)
	}
	return true
}

// commitTo commits p (durable workers) and makes it the committed
// position. On a fatal save error it records it and reports false; a
// Continue whose save failed rolls the cursor back first.
func (w *Worker) commitTo(st *loopState, p position, cont bool) bool {
	if w.durable() {
		newRev, abandoned, err := w.commit(p, st.rev, st.journalID)
		if abandoned {
			return false // stopped during a store outage: the batch is delivered again later
		}
		if err != nil {
			if cont {
				st.cur.Restore(st.committed.pos, st.committed.started)
			}
			w.record(&CheckpointWriteError{ID: w.cfg.CheckpointID, Cause: err})
			return false
		}
		st.rev = newRev
	}
	st.committed = p
	w.setCommitted(p)
	return true
}

// exhausted applies the restart policy to a failure that retries did not
// cure: a restart delivers again from the committed position (true), an
// exhausted budget records BudgetExhaustedError (false).
func (w *Worker) exhausted(st *loopState, f failure, bad *engine.Entry) bool {
	cfg := w.cfg
	if cfg.Restart.allow(&st.rst, cfg.Clock.Now()) {
		w.stats.restarts.Add(1)
		args := []any{"failure", f.text, "position", st.committed.pos, "policy", cfg.Restart.String()}
		if bad != nil {
			args = append(args, "seq", bad.Seq, "attempts", cfg.Retry.Attempts)
		}
		w.log.Warn("handler failed; restarting at the committed position", args...)
		st.cur.Restore(st.committed.pos, st.committed.started) // the store is not re-read
		return true
	}
	w.log.Error("handler failed; restart budget exhausted", "failure", f.text, "policy", cfg.Restart.String())
	w.hookOnce.Do(func() {
		if cfg.OnRestartBudgetExhausted != nil {
			cfg.OnRestartBudgetExhausted(f.text)
		}
	})
	w.record(&BudgetExhaustedError{LastPanic: w.LastPanic(), LastFailure: f.text})
	return false
}

// noteFailure counts a failed call and keeps its text.
func (w *Worker) noteFailure(f failure, rawPanic string) {
	w.stats.failures.Add(1)
	if f.panic {
		w.lastPanic.Store(&rawPanic)
	}
	w.lastFailure.Store(&f)
}

// lastFailureOr returns the last failure recorded.
func (w *Worker) lastFailureOr() failure {
	if f := w.lastFailure.Load(); f != nil {
		return *f
	}
	return failure{text: "unknown failure"}
}

// gapsIn returns the gap observations that end at an entry of sub.
func gapsIn(gaps []GapObservation, sub []engine.Entry) []GapObservation {
	if len(gaps) == 0 {
		return nil
	}
	first, last := sub[0].Seq, sub[len(sub)-1].Seq
	var out []GapObservation
	for _, g := range gaps {
		if g.Delivered >= first && g.Delivered <= last {
			out = append(out, g)
		}
	}
	return out
}
