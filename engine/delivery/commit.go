package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/batfleet/batfleet/engine/checkpoint"
)

// Riding out checkpoint-store outages.
//
// Over a network an unavailable store is the normal case (a node loss, a
// leader election, a slow start), and a save whose reply is lost is the
// normal hard case: it may or may not have landed. A save that fails with
// checkpoint.ErrUnavailable therefore does not stop the worker. The
// handled batch's position stays pending, nothing new is handled, and the
// save is retried with backoff; before each retry the worker reads the
// record back and reconciles:
//
//   - the stored record is the very record it tried to write, at a newer
//     revision: the write had landed; adopt that revision and go on;
//   - the stored revision is still the one it expected (or there is still
//     no record, for a first save): the write did not land; retry it;
//   - anything else: another writer moved the checkpoint, a conflict,
//     which stops the worker as any conflict does.
//
// A save refused as a conflict is looked behind the same way: the stored
// record may be this very one (the client library resent a request whose
// reply it lost; an attempt of unknown outcome was applied late), adopted
// then, or still at the expected revision (a replicated stream's new
// leader refusing a compare-and-swap before it caught up), which is
// retried as a transient failure. So a checkpoint never regresses and is
// never written twice by different owners. A Stop during an outage abandons the pending commit
// (the batch is delivered again later: at least once holds). Conflicts,
// corruption and other I/O errors stay fatal.

// commit saves p with compare-and-swap against rev, riding out transient
// store failures as described above. abandoned is true when a stop ended
// an outage first (nothing is recorded then); err is a fatal failure.
func (w *Worker) commit(p position, rev checkpoint.Revision, journalID string) (newRev checkpoint.Revision, abandoned bool, err error) {
	ident := w.region.Identity()
	rec := checkpoint.Record{
		Position: p.pos, Started: p.started, RegionIdentity: &ident, JournalID: journalID,
		Owner: w.cfg.WorkerID, UpdatedMs: uint64(w.cfg.WallClock().UnixMilli()), Epoch: w.cfg.Epoch,
	}
	newRev, err = w.saveOnce(rec, rev)
	if errors.Is(err, checkpoint.ErrConflict) {
		newRev, err = w.ownWrite(rec, rev, err)
	}
	if err == nil || !errors.Is(err, checkpoint.ErrUnavailable) {
		return w.saved(newRev, err, p)
	}

	begin := time.Now()
	w.stats.pendingCommit.Store(true)
	defer w.stats.pendingCommit.Store(false)
	defer func() { w.stats.outageNanos.Add(int64(time.Since(begin))) }()
	w.log.Warn("checkpoint store unavailable; holding the batch's commit and retrying",
		"position", p.pos, "error", err)
	retry := backoff{base: w.cfg.IdleTimeout}
	for {
		w.stats.checkpointRetries.Add(1)
		retry.next()
		if !retry.wait(w.stopCtx) {
			w.log.Warn("stopping during a checkpoint store outage; the uncommitted batch will be delivered again",
				"position", p.pos, "outage", time.Since(begin).Round(time.Millisecond))
			return 0, true, nil
		}
		if bound := w.cfg.CheckpointOutage; bound > 0 && time.Since(begin) > bound {
			err = fmt.Errorf("%w: unavailable for longer than CheckpointOutage (%s): %w", checkpoint.ErrUnavailable, bound, err)
			return w.saved(0, err, p)
		}
		landed, expected, rerr := w.reconcile(rec, rev)
		switch {
		case rerr != nil && errors.Is(rerr, checkpoint.ErrUnavailable):
			err = rerr
			continue
		case rerr != nil:
			return w.saved(0, rerr, p)
		case landed != 0:
			w.stats.reconciled.Add(1)
			w.log.Info("checkpoint store back; the held commit had landed", "position", p.pos,
				"revision", uint64(landed), "outage", time.Since(begin).Round(time.Millisecond))
			return w.saved(landed, nil, p)
		}
		newRev, err = w.saveOnce(rec, expected)
		if errors.Is(err, checkpoint.ErrConflict) {
			newRev, err = w.ownWrite(rec, rev, err)
		}
		if err == nil {
			w.log.Info("checkpoint store back; the held commit is saved", "position", p.pos,
				"outage", time.Since(begin).Round(time.Millisecond))
		}
		if err == nil || !errors.Is(err, checkpoint.ErrUnavailable) {
			return w.saved(newRev, err, p)
		}
	}
}

// reconcile reads the record back after a save whose outcome is unknown.
// It returns the revision at which rec landed (landed != 0), or the
// revision a retry must expect (the write did not land), or a conflict.
func (w *Worker) reconcile(rec checkpoint.Record, rev checkpoint.Revision) (landed, expected checkpoint.Revision, err error) {
	ctx, cancel := context.WithTimeout(w.baseCtx, w.cfg.SaveTimeout)
	defer cancel()
	stored, srev, err := w.cfg.Checkpoints.Load(ctx, w.cfg.CheckpointID)
	switch {
	case errors.Is(err, checkpoint.ErrNotFound) && rev == 0:
		return 0, 0, nil // a first save that did not land
	case errors.Is(err, checkpoint.ErrNotFound):
		return 0, 0, fmt.Errorf("%w: %s was deleted while its commit was pending (expected revision %d)",
			checkpoint.ErrConflict, w.cfg.Checkpoints.Location(w.cfg.CheckpointID), rev)
	case err != nil:
		return 0, 0, err
	case srev == rev:
		return 0, rev, nil // did not land
	case srev > rev && sameRecord(stored, rec):
		return srev, 0, nil
	}
	return 0, 0, fmt.Errorf("%w: %s moved to revision %d (position %d, owner %q) while this worker's commit at revision %d was pending",
		checkpoint.ErrConflict, w.cfg.Checkpoints.Location(w.cfg.CheckpointID), srev, stored.Position, stored.Owner, rev)
}

// ownWrite looks behind a conflict by reading the record back. The
// stored record is this very record (at a newer revision than rev): the
// save had landed after all — an earlier attempt whose outcome was unknown
// was applied late, or the client library resent a request whose reply it
// lost and the resend found the first one applied — and its revision is
// adopted. The record has not moved from rev: the refusal was the store's
// (transient), and the save is retried. Another writer moved it: the
// conflict stands.
func (w *Worker) ownWrite(rec checkpoint.Record, rev checkpoint.Revision, conflict error) (checkpoint.Revision, error) {
	landed, _, err := w.reconcile(rec, rev)
	switch {
	case err != nil && errors.Is(err, checkpoint.ErrUnavailable):
		return 0, fmt.Errorf("%w: a conflict could not be checked: %w", err, conflict)
	case err != nil:
		return 0, conflict // another writer moved the record: the conflict stands
	case landed == 0:
		// The record is still at the revision this save expected: the
		// store refused a compare-and-swap that should have passed (a
		// replicated stream whose new leader has not caught up with the
		// last sequence of the key yet). Not a conflict: retry.
		w.log.Warn("a save was refused as a conflict, but the record has not moved; retrying", "revision", uint64(rev), "cause", conflict)
		return 0, fmt.Errorf("%w: a compare-and-swap was refused with the record unmoved: %w", checkpoint.ErrUnavailable, conflict)
	}
	w.stats.reconciled.Add(1)
	w.log.Info("a save reported as a conflict had landed; adopting it", "revision", uint64(landed), "cause", conflict)
	return landed, nil
}

// sameRecord reports whether a and b are the same record, field by field.
func sameRecord(a, b checkpoint.Record) bool {
	sameRegion := (a.RegionIdentity == nil) == (b.RegionIdentity == nil) &&
		(a.RegionIdentity == nil || *a.RegionIdentity == *b.RegionIdentity)
	return sameRegion && a.Position == b.Position && a.Started == b.Started && a.JournalID == b.JournalID &&
		a.Owner == b.Owner && a.UpdatedMs == b.UpdatedMs && a.Epoch == b.Epoch
}

// saveOnce is one compare-and-swap save, bounded by SaveTimeout.
func (w *Worker) saveOnce(rec checkpoint.Record, rev checkpoint.Revision) (checkpoint.Revision, error) {
	ctx, cancel := context.WithTimeout(w.baseCtx, w.cfg.SaveTimeout)
	defer cancel()
	start := time.Now()
	rev, err := w.cfg.Checkpoints.Save(ctx, w.cfg.CheckpointID, rec, rev)
	if w.cfg.ObserveSave != nil {
		w.cfg.ObserveSave(time.Since(start), err)
	}
	return rev, err
}

// saved accounts for the outcome of a commit: counters, and the failure
// hook or log line of a fatal error.
func (w *Worker) saved(rev checkpoint.Revision, err error, p position) (checkpoint.Revision, bool, error) {
	if err == nil {
		w.stats.saves.Add(1)
		return rev, false, nil
	}
	w.stats.saveFailures.Add(1)
	if errors.Is(err, checkpoint.ErrConflict) {
		w.stats.conflicts.Add(1)
	}
	if w.cfg.OnCheckpointFailure != nil {
		w.cfg.OnCheckpointFailure(w.cfg.CheckpointID, err)
	} else {
		w.log.Error("checkpoint save failed; stopping", "error", err, "position", p.pos)
	}
	return 0, false, err
}
