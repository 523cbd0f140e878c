package delivery

import (
	"context"
	"errors"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
)

// Parking (WorkerConfig.Parked).
//
// When an entry exhausts its retries, the worker writes a parked record
// for its entity (checkpoint.Parked) and then commits past it; every later
// entry of the entity is filtered out of its batch before the handler sees
// it, and the record's LastSeq and Count are moved forward (with
// compare-and-swap) before the batch is committed. So per-entity order
// holds (no later event of a parked entity is handled before the failed
// one) and the parked set is always durable before the checkpoint moves
// past what it parks; a crash in between delivers the batch again, and the
// record update is idempotent (only entries after LastSeq count).
//
// The parked set is read at start and, while it is not empty, again every
// ParkedRefresh (an idle worker then parks for at most that long): a
// record an operator deleted (`worker parked drop`) unparks its entity; a
// record marked Replay is replayed between batches: the entity's entries
// FirstSeq..LastSeq are read back from the source and handed to the
// handler in seq order (retried under the RetryPolicy), then the record is
// deleted and the entity flows again. A replay that fails again leaves the
// entity parked with the new error. As everything runs on the worker's
// goroutine between batches, no later entry of the entity can overtake
// the replayed ones. The set belongs to the checkpoint id, so it survives
// restarts and moves with a consumer group's partition to its new owner.

func (w *Worker) parking() bool { return w.cfg.Parked != nil && w.durable() }

// parkWait caps an idle park while entities are parked, so replays and
// drops are seen within ParkedRefresh.
func (w *Worker) parkWait(idle time.Duration) time.Duration {
	if w.stats.parkedEntities.Load() > 0 {
		return min(idle, w.cfg.ParkedRefresh)
	}
	return idle
}

// loadParked reads the parked set, riding out an unavailable store.
func (w *Worker) loadParked(st *loopState) bool {
	var list []checkpoint.ParkedRevision
	ok := w.parkOp("read the parked set", func(ctx context.Context) (err error) {
		list, err = w.cfg.Parked.ListParked(ctx, w.cfg.CheckpointID)
		return err
	})
	if !ok {
		return false
	}
	st.parked = make(map[string]*checkpoint.ParkedRevision, len(list))
	for i := range list {
		st.parked[list[i].Entity] = &list[i]
	}
	st.refreshed = time.Now()
	w.countParked(st)
	return true
}

// tendParked re-reads a non-empty parked set every ParkedRefresh and runs
// the replays asked for.
func (w *Worker) tendParked(st *loopState) bool {
	if len(st.parked) == 0 || time.Since(st.refreshed) < w.cfg.ParkedRefresh {
		return true
	}
	if !w.loadParked(st) {
		return false
	}
	for _, p := range st.parked {
		if p.Replay && !w.replay(st, p) {
			return false
		}
	}
	return true
}

// countParked publishes the parked set's size.
func (w *Worker) countParked(st *loopState) {
	var n uint64
	for _, p := range st.parked {
		n += p.Count
	}
	w.stats.parkedEntities.Store(uint64(len(st.parked)))
	w.stats.parkedEntries.Store(n)
}

// parkFilter removes the entries of parked entities from batch, moving
// their records forward first. A record changed behind the worker's back
// (dropped, or marked for replay) makes it re-read the set and filter
// again.
func (w *Worker) parkFilter(st *loopState, batch []engine.Entry) ([]engine.Entry, bool) {
	for attempt := 0; ; attempt++ {
		if len(st.parked) == 0 {
			return batch, true
		}
		todo := make([]engine.Entry, 0, len(batch))
		moved := map[string]checkpoint.Parked{}
		for _, e := range batch {
			ent := e.Coordinate.Entity()
			p := st.parked[ent]
			if p == nil || e.Seq < p.FirstSeq {
				todo = append(todo, e)
				continue
			}
			if e.Seq > p.LastSeq {
				m, ok := moved[ent]
				if !ok {
					m = p.Parked
				}
				if e.Seq > m.LastSeq {
					m.LastSeq = e.Seq
					m.Count++
				}
				moved[ent] = m
			}
		}
		conflict := false
		for ent, m := range moved {
			p := st.parked[ent]
			var rev checkpoint.Revision
			var err error
			ok := w.parkOp("move a parked record forward", func(ctx context.Context) error {
				rev, err = w.cfg.Parked.PutParked(ctx, w.cfg.CheckpointID, m, p.Revision)
				if errors.Is(err, checkpoint.ErrConflict) {
					return nil // handled below
				}
				return err
			})
			if !ok {
				return nil, false
			}
			if err != nil {
				conflict = true
				continue
			}
			p.Parked, p.Revision = m, rev
		}
		if !conflict {
			w.countParked(st)
			return todo, true
		}
		if attempt >= 10 {
			w.record(errors.New("delivery: parked set keeps changing under the worker (10 conflicts in a row)"))
			return nil, false
		}
		if !w.loadParked(st) {
			return nil, false
		}
	}
}

// park parks entity bad (its entry exhausted its attempts) and filters
// the entity's later entries out of rest.
func (w *Worker) park(st *loopState, bad engine.Entry, attempts int, text string, rest []engine.Entry) ([]engine.Entry, bool) {
	ent := bad.Coordinate.Entity()
	p := checkpoint.Parked{
		Entity: ent, FirstSeq: bad.Seq, LastSeq: bad.Seq, Count: 1, Attempts: attempts,
		Error: text, ParkedMs: uint64(w.cfg.WallClock().UnixMilli()),
	}
	var rev checkpoint.Revision
	var err error
	if !w.parkOp("park an entity", func(ctx context.Context) error {
		rev, err = w.cfg.Parked.PutParked(ctx, w.cfg.CheckpointID, p, 0)
		if errors.Is(err, checkpoint.ErrConflict) {
			return nil
		}
		return err
	}) {
		return nil, false
	}
	if err != nil {
		// The entity is parked already (a record this worker has not
		// seen): read the set again; the filter then parks bad with it.
		if !w.loadParked(st) {
			return nil, false
		}
		if st.parked[ent] == nil {
			w.record(err)
			return nil, false
		}
		rest = append([]engine.Entry{bad}, rest...)
	} else {
		st.parked[ent] = &checkpoint.ParkedRevision{Parked: p, Revision: rev}
	}
	w.log.Error("entry exhausted its attempts; its entity is parked", "entity", ent, "seq", bad.Seq,
		"attempts", attempts, "error", text, "location", w.cfg.Parked.ParkedLocation(w.cfg.CheckpointID, ent))
	return w.parkFilter(st, rest)
}

// replay hands the parked entries of p back to the handler, then unparks
// the entity. It reports false when the worker must exit.
func (w *Worker) replay(st *loopState, p *checkpoint.ParkedRevision) bool {
	ent := p.Entity
	cur := &Cursor{src: w.src, region: w.region.WithEntity(ent)}
	defer cur.Close()
	if p.FirstSeq > 0 {
		cur.Restore(p.FirstSeq-1, true)
	}
	w.log.Info("replaying a parked entity", "entity", ent, "first", p.FirstSeq, "last", p.LastSeq, "count", p.Count)
	part, _ := w.region.Partition()
	retry := backoff{base: w.cfg.IdleTimeout}
	for done := false; !done; {
		es, _, _, err := cur.pollBatch(w.stopCtx, w.cfg.BatchSize)
		if err != nil {
			if w.stopping() || !errors.Is(err, ErrTransient) {
				if !w.stopping() {
					w.record(err)
				}
				return false
			}
			w.stats.transient.Add(1)
			retry.next()
			if !retry.wait(w.stopCtx) {
				return false
			}
			continue
		}
		retry.reset()
		batch := es[:0:0]
		for _, e := range es {
			if e.Seq > p.LastSeq {
				done = true
				break
			}
			if e.Coordinate.Entity() == ent {
				batch = append(batch, e)
			}
		}
		if len(es) == 0 {
			done = true
		}
		if len(batch) == 0 {
			continue
		}
		for attempt := 1; ; attempt++ {
			d := &Delivery{Witness: w.witness, Group: w.cfg.Group, Partition: part, Epoch: w.cfg.Epoch, Attempt: attempt, Replay: true}
			w.stats.batches.Add(1)
			w.stats.events.Add(uint64(len(batch)))
			action, panicked, text := w.callHandler(batch, d)
			if !panicked && action != Failed {
				w.stats.replayed.Add(uint64(len(batch)))
				break
			}
			f := failureOf(d, panicked, text)
			w.noteFailure(f, text)
			if attempt >= w.cfg.Retry.Attempts {
				w.log.Error("replay failed; the entity stays parked", "entity", ent, "attempts", attempt, "error", f.text)
				q := p.Parked
				q.Replay, q.Error, q.Attempts = false, f.text, attempt
				var rev checkpoint.Revision
				var perr error
				if !w.parkOp("record a failed replay", func(ctx context.Context) error {
					rev, perr = w.cfg.Parked.PutParked(ctx, w.cfg.CheckpointID, q, p.Revision)
					if errors.Is(perr, checkpoint.ErrConflict) {
						return nil
					}
					return perr
				}) {
					return false
				}
				if perr == nil {
					p.Parked, p.Revision = q, rev
				}
				return true
			}
			w.stats.retries.Add(1)
			if !sleepCtx(w.stopCtx, w.cfg.Retry.delay(attempt)) {
				return false
			}
		}
	}
	var derr error
	if !w.parkOp("unpark a replayed entity", func(ctx context.Context) error {
		derr = w.cfg.Parked.DeleteParked(ctx, w.cfg.CheckpointID, ent, p.Revision)
		if errors.Is(derr, checkpoint.ErrConflict) || errors.Is(derr, checkpoint.ErrNotFound) {
			return nil
		}
		return derr
	}) {
		return false
	}
	if derr != nil {
		// Changed meanwhile (dropped, or marked again): the next refresh
		// sees what it is now.
		w.log.Warn("a replayed entity's record changed during the replay", "entity", ent, "error", derr)
		st.refreshed = time.Time{}
		return true
	}
	delete(st.parked, ent)
	w.countParked(st)
	w.log.Info("parked entity replayed and unparked", "entity", ent, "count", p.Count)
	return true
}

// parkOp runs one parked-set operation bounded by SaveTimeout, retrying
// it with backoff while the store is unavailable. Any other error is
// recorded. false: the worker must exit (stopped, or a recorded error).
func (w *Worker) parkOp(what string, op func(ctx context.Context) error) bool {
	retry := backoff{base: w.cfg.IdleTimeout}
	logged := false
	for {
		ctx, cancel := context.WithTimeout(w.baseCtx, w.cfg.SaveTimeout)
		err := op(ctx)
		cancel()
		switch {
		case err == nil:
			return true
		case !errors.Is(err, checkpoint.ErrUnavailable):
			w.log.Error("parked set: cannot "+what, "error", err)
			w.record(err)
			return false
		}
		if !logged {
			w.log.Warn("parked set unavailable; retrying", "what", what, "error", err)
			logged = true
		}
		w.stats.checkpointRetries.Add(1)
		retry.next()
		if !retry.wait(w.stopCtx) {
			return false
		}
	}
}
