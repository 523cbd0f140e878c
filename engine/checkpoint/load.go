package checkpoint

import (
	"context"
	"errors"
	"fmt"

	"github.com/batfleet/batfleet/engine"
)

// Resume is where a consumer resumes according to its checkpoint.
type Resume struct {
	// Position and Started are the cursor state to resume from: (0,
	// false) when no record is stored.
	Position uint64
	Started  bool
	// Revision is the stored record's revision, the expected revision of
	// the next save; 0 when none is stored (the next save creates).
	Revision Revision
	// Record is the stored record; nil when none is stored.
	Record *Record
	// JournalID is the journal the checkpoint is bound to from now on:
	// the source's journal id (a record lacking one gains it at the next
	// save).
	JournalID string
}

// Load applies every load rule to the checkpoint id of a
// consumer of region, and is the one place those rules live (workers,
// cursors and the status command call it):
//
//  1. no record: resume from the beginning, (0, false), revision 0;
//  2. any other read error: ErrIO (never ErrCorrupt);
//  3. a record that does not decode: ErrCorrupt (a *CorruptError naming
//     the id and its location); never a silent rewind;
//  4. no or another region identity: ErrRegionMismatch (a
//     *RegionMismatchError);
//  5. a journal id other than the source's: ErrJournalMismatch;
//  6. started with position >= the source's visible bound: ErrAhead;
//  7. else resume at the record's (position, started).
//
// Rules 1-4 need only the store. source is called after they pass, to
// fetch the source's journal id and visible bound for rules 5-6; its
// error is returned as it is (a worker retries transient ones inside it).
// An invalid id fails first with ErrInvalidID.
func Load(ctx context.Context, store Store, id string, region engine.Region, source func(context.Context) (engine.SourceInfo, error)) (Resume, error) {
	if err := ValidateID(id); err != nil {
		return Resume{}, err
	}
	rec, rev, err := store.Load(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		info, err := source(ctx)
		if err != nil {
			return Resume{}, err
		}
		return Resume{JournalID: info.JournalID.String()}, nil
	case errors.Is(err, ErrCorrupt):
		return Resume{}, err
	case err != nil:
		if !errors.Is(err, ErrIO) {
			err = fmt.Errorf("%w: %w", ErrIO, err)
		}
		return Resume{}, err
	}
	return Check(ctx, rec, rev, store.Location(id), region, source)
}

// Check applies the load rules that judge a record already read (rules 4-7; Load reads it and applies rules 1-3 first): the region
// (then, only if it matches, source is called), the journal and the
// visible bound. location names the record in errors. A caller that lists
// records itself (the status command) calls it with each record's own
// region.
func Check(ctx context.Context, rec Record, rev Revision, location string, region engine.Region, source func(context.Context) (engine.SourceInfo, error)) (Resume, error) {
	want := region.Identity()
	if rec.RegionIdentity == nil || *rec.RegionIdentity != want {
		return Resume{}, &RegionMismatchError{Location: location, Stored: rec.RegionIdentity, Expected: want}
	}
	info, err := source(ctx)
	if err != nil {
		return Resume{}, err
	}
	if err := CheckSource(rec.JournalID, rec.Position, rec.Started, info); err != nil {
		return Resume{}, err
	}
	return Resume{Position: rec.Position, Started: rec.Started, Revision: rev, Record: &rec, JournalID: info.JournalID.String()}, nil
}

// CheckSource applies the source rules (5 and 6) to a
// position bound to journalID ("" for none: not checked): another journal
// is ErrJournalMismatch, a started position at or past info's visible
// bound is ErrAhead. A worker calls it again when its source reports a new
// writer incarnation, with what it has committed.
func CheckSource(journalID string, position uint64, started bool, info engine.SourceInfo) error {
	if journalID != "" && journalID != info.JournalID.String() {
		return &JournalMismatchError{Stored: journalID, Current: info.JournalID.String()}
	}
	if started && position >= info.Visible {
		return &AheadError{Position: position, Visible: info.Visible}
	}
	return nil
}
