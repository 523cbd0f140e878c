package checkpoint

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/batfleet/batfleet/engine"
)

// Sentinel errors.
var (
	// ErrInvalidID: a checkpoint id failed validation; the rule is wrapped too.
	ErrInvalidID = errors.New("checkpoint: invalid checkpoint id")

	// ErrIDEmpty: a checkpoint id is empty.
	ErrIDEmpty = errors.New("checkpoint: checkpoint id is empty")

	// ErrIDTooLong: a checkpoint id is longer than 1024 bytes (see LengthError).
	ErrIDTooLong = errors.New("checkpoint: checkpoint id too long")

	// ErrNotFound: the checkpoint store holds no record for the id.
	ErrNotFound = errors.New("checkpoint: checkpoint not found")

	// ErrIO: the checkpoint store could not be read or written. After a
	// failed save the outcome may be unknown: the previous record is
	// stored, or the new one is (see Store.Save).
	ErrIO = errors.New("checkpoint: checkpoint store I/O error")

	// ErrUnavailable: the checkpoint store cannot be reached for now (a
	// timeout, no responders, a lost connection, a cluster electing a
	// leader). It also matches ErrIO. The call may be retried; after a
	// save that failed this way the record may or may not have been
	// written, which a caller reconciles by reading it back.
	ErrUnavailable error = &unavailable{}

	// ErrConflict: a compare-and-swap save lost: the record exists
	// (create) or its revision moved (update).
	ErrConflict = errors.New("checkpoint: checkpoint revision conflict")

	// ErrCorrupt: a stored record does not decode (see CorruptError).
	ErrCorrupt = errors.New("checkpoint: checkpoint corrupt")

	// ErrRegionMismatch: the record belongs to another region (see RegionMismatchError).
	ErrRegionMismatch = errors.New("checkpoint: checkpoint region mismatch")

	// ErrJournalMismatch: the record belongs to another journal (see JournalMismatchError).
	ErrJournalMismatch = errors.New("checkpoint: checkpoint journal mismatch")

	// ErrAhead: the record is past the source's visible bound (see AheadError).
	ErrAhead = errors.New("checkpoint: checkpoint ahead of the journal")
)

// CorruptError reports a stored checkpoint that does not decode.
// It matches ErrCorrupt.
type CorruptError struct {
	ID       string // the checkpoint id
	Location string // file path, or bucket and key
	Reason   string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%v: id %q at %s: %s", ErrCorrupt, e.ID, e.Location, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// RegionMismatchError reports a checkpoint saved for another region. It
// matches ErrRegionMismatch.
type RegionMismatchError struct {
	Location string
	Stored   *string // the stored region identity; nil when the record has none
	Expected string  // the worker's region identity
}

func (e *RegionMismatchError) Error() string {
	stored := "none"
	if e.Stored != nil {
		stored = regionSpec(*e.Stored)
	}
	return fmt.Sprintf("%v at %s: stored %s, expected %s", ErrRegionMismatch, e.Location, stored, regionSpec(e.Expected))
}

// regionSpec returns a region identity as --region takes it (kinds in
// hex, "all" for every event), or the identity quoted when it does not
// parse.
func regionSpec(identity string) string {
	r, err := engine.ParseRegionIdentity(identity)
	if err != nil {
		return strconv.Quote(identity)
	}
	return r.Spec()
}

func (e *RegionMismatchError) Unwrap() error { return ErrRegionMismatch }

// JournalMismatchError reports a checkpoint bound to another journal. It
// matches ErrJournalMismatch.
type JournalMismatchError struct {
	Stored, Current string
}

func (e *JournalMismatchError) Error() string {
	return fmt.Sprintf("%v: checkpoint journal %s, source journal %s", ErrJournalMismatch, e.Stored, e.Current)
}

func (e *JournalMismatchError) Unwrap() error { return ErrJournalMismatch }

// AheadError reports a checkpoint position at or past the visible bound.
// It matches ErrAhead.
type AheadError struct {
	Position, Visible uint64
}

func (e *AheadError) Error() string {
	return fmt.Sprintf("%v: position %d, visible bound %d", ErrAhead, e.Position, e.Visible)
}

func (e *AheadError) Unwrap() error { return ErrAhead }

// unavailable is ErrUnavailable: an error matching ErrIO too.
type unavailable struct{}

func (*unavailable) Error() string { return "checkpoint: store unavailable" }

func (*unavailable) Unwrap() error { return ErrIO }
