package journal

import (
	"errors"
	"fmt"
)

// Sentinel errors.
var (
	// ErrEmptyBatch: an append carried no events.
	ErrEmptyBatch = errors.New("journal: empty batch")

	// ErrEntryTooLarge: one event's encoded size is over Config.MaxEntryBytes.
	ErrEntryTooLarge = errors.New("journal: entry too large")

	// ErrBatchTooLarge: a batch has more events or bytes than Config allows.
	ErrBatchTooLarge = errors.New("journal: batch too large")

	// ErrBatchFailed: writing a batch failed after its sequences were
	// reserved; the range is cancelled (see BatchFailedError).
	ErrBatchFailed = errors.New("journal: batch write failed")

	// ErrBatchSyncFailed: the fsync of a group commit failed; every batch of
	// the group is cancelled (see BatchSyncFailedError).
	ErrBatchSyncFailed = errors.New("journal: batch sync failed")

	// ErrWriterFailed: a cancelled range could not be persisted; the store
	// refuses appends until it is reopened. Visible data stays readable.
	ErrWriterFailed = errors.New("journal: writer failed; reopen the journal")

	// ErrLocked: another Store holds the journal directory's lock.
	ErrLocked = errors.New("journal: journal directory is locked by another writer")

	// ErrCorrupt: a segment is damaged before its tail (see CorruptionError).
	ErrCorrupt = errors.New("journal: journal corrupt")

	// ErrSequenceGateViolation: publish outside [visible, allocated] (see GateViolationError).
	ErrSequenceGateViolation = errors.New("journal: sequence gate violation")

	// ErrFenceActive: a fence is active, so an unfenced append or a second
	// BeginFence is refused.
	ErrFenceActive = errors.New("journal: a visibility fence is active")

	// ErrFenceNotActive: CommitFence or CancelFence with no fence active.
	ErrFenceNotActive = errors.New("journal: no visibility fence is active")

	// ErrFenceCancelled: the fence this append was staged in was cancelled.
	ErrFenceCancelled = errors.New("journal: visibility fence cancelled")

	// ErrCancelledRangesCorrupt: the cancelled-ranges file is damaged (see RangesFileError).
	ErrCancelledRangesCorrupt = errors.New("journal: cancelled ranges file corrupt")

	// ErrCancelledRangesFutureVersion: the cancelled-ranges file is newer than this build.
	ErrCancelledRangesFutureVersion = errors.New("journal: cancelled ranges file has a future version")

	// ErrEntityClockOverflow: an entity's clock would pass 2^32-1.
	ErrEntityClockOverflow = errors.New("journal: entity clock overflow")

	// ErrIdempotencyPartialBatch: a batch mixes keyed and unkeyed events.
	ErrIdempotencyPartialBatch = errors.New("journal: batch mixes keyed and unkeyed events")

	// ErrIdempotencyConflict: a keyed batch is partly known, or repeats a key.
	ErrIdempotencyConflict = errors.New("journal: idempotency key conflict")

	// ErrClosed: the store is closed.
	ErrClosed = errors.New("journal: store closed")

	// ErrEntryUnreadable: a visible entry's payload could not be read (see EntryUnreadableError).
	ErrEntryUnreadable = errors.New("journal: entry unreadable")
)

// BatchFailedError reports a write failure after reservation. It matches
// ErrBatchFailed and its Cause.
type BatchFailedError struct {
	ItemIndex int // the first event of the batch that was not completely written
	Cause     error
}

func (e *BatchFailedError) Error() string {
	return fmt.Sprintf("%v at event %d: %v", ErrBatchFailed, e.ItemIndex, e.Cause)
}

func (e *BatchFailedError) Unwrap() []error { return []error{ErrBatchFailed, e.Cause} }

// BatchSyncFailedError reports an fsync failure of a group commit. It
// matches ErrBatchSyncFailed and its Cause.
type BatchSyncFailedError struct {
	ItemCount int // events of this append that were cancelled
	Cause     error
}

func (e *BatchSyncFailedError) Error() string {
	return fmt.Sprintf("%v (%d events cancelled): %v", ErrBatchSyncFailed, e.ItemCount, e.Cause)
}

func (e *BatchSyncFailedError) Unwrap() []error { return []error{ErrBatchSyncFailed, e.Cause} }

// CorruptionError reports damage in a journal file that is not a torn tail.
// It matches ErrCorrupt.
type CorruptionError struct {
	Path   string
	Offset int64
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("%v: %s at offset %d: %s", ErrCorrupt, e.Path, e.Offset, e.Reason)
}

func (e *CorruptionError) Unwrap() error { return ErrCorrupt }

// GateViolationError reports a publish outside [visible, allocated]. It
// matches ErrSequenceGateViolation.
type GateViolationError struct {
	Operation string
	Requested uint64
	Allocated uint64
	Visible   uint64
}

func (e *GateViolationError) Error() string {
	return fmt.Sprintf("%v: %s(%d) with allocated %d, visible %d",
		ErrSequenceGateViolation, e.Operation, e.Requested, e.Allocated, e.Visible)
}

func (e *GateViolationError) Unwrap() error { return ErrSequenceGateViolation }

// RangesFileError reports an unloadable cancelled-ranges file. It matches
// ErrCancelledRangesCorrupt or, when Found > Supported,
// ErrCancelledRangesFutureVersion.
type RangesFileError struct {
	Path      string
	Kind      string // what is wrong: "short", "magic", "version", "crc", "decode", "range"
	Found     uint16 // the version found (future-version errors)
	Supported uint16 // the newest version this build reads
	Cause     error  // an underlying decode or range error, if any
}

func (e *RangesFileError) Error() string {
	if e.future() {
		return fmt.Sprintf("%v: %s: version %d, this build reads up to %d",
			ErrCancelledRangesFutureVersion, e.Path, e.Found, e.Supported)
	}
	if e.Cause != nil {
		return fmt.Sprintf("%v: %s: %s: %v", ErrCancelledRangesCorrupt, e.Path, e.Kind, e.Cause)
	}
	return fmt.Sprintf("%v: %s: %s", ErrCancelledRangesCorrupt, e.Path, e.Kind)
}

func (e *RangesFileError) future() bool { return e.Kind == "version" && e.Found > e.Supported }

func (e *RangesFileError) Unwrap() []error {
	sentinel := ErrCancelledRangesCorrupt
	if e.future() {
		sentinel = ErrCancelledRangesFutureVersion
	}
	if e.Cause != nil {
		return []error{sentinel, e.Cause}
	}
	return []error{sentinel}
}

// EntryUnreadableError reports a visible entry whose payload could not be
// read. It matches ErrEntryUnreadable and its Cause.
type EntryUnreadableError struct {
	Seq   uint64
	Cause error
}

func (e *EntryUnreadableError) Error() string {
	return fmt.Sprintf("%v: seq %d: %v", ErrEntryUnreadable, e.Seq, e.Cause)
}

func (e *EntryUnreadableError) Unwrap() []error { return []error{ErrEntryUnreadable, e.Cause} }

// IsCorruption reports whether err says a journal file is damaged (as
// opposed to an I/O failure or a lock): reopening will fail the same way
// until an operator repairs or restores the directory.
func IsCorruption(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrCancelledRangesCorrupt)
}

// errAbandoned answers a request whose caller stopped waiting before the
// committer reached it; nobody reads it.
var errAbandoned = errors.New("journal: request abandoned by its caller")
