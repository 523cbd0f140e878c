package engine

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers branch on these with errors.Is; where a caller
// needs fields (lengths, indexes, paths), the typed errors below carry them
// and match the sentinel through Unwrap.
var (
	// ErrEmptyEntity: a coordinate's entity (or a region's entity prefix) is empty.
	ErrEmptyEntity = errors.New("engine: entity is empty")
	// ErrEmptyScope: a coordinate's scope (or a region's scope) is empty.
	ErrEmptyScope = errors.New("engine: scope is empty")
	// ErrEntityTooLong: an entity is longer than 1024 bytes (see LengthError).
	ErrEntityTooLong = errors.New("engine: entity too long")
	// ErrScopeTooLong: a scope is longer than 1024 bytes (see LengthError).
	ErrScopeTooLong = errors.New("engine: scope too long")
	// ErrNulByte: a string component contains a 0x00 byte.
	ErrNulByte = errors.New("engine: contains a NUL byte")
	// ErrControlChar: a string component contains a byte below 0x20 or 0x7F.
	ErrControlChar = errors.New("engine: contains a control character")
	// ErrInvalidUTF8: a string component is not valid UTF-8.
	ErrInvalidUTF8 = errors.New("engine: not valid UTF-8")
	// ErrPathTraversal: a string component contains "/" or "..".
	ErrPathTraversal = errors.New("engine: contains \"/\" or \"..\"")
	// ErrForbiddenSeparator: a string component contains "|" or "=".
	ErrForbiddenSeparator = errors.New("engine: contains \"|\" or \"=\"")

	// ErrCategoryOutOfRange: a kind category is 16 or more (see CategoryError).
	ErrCategoryOutOfRange = errors.New("engine: kind category out of range (0-15)")
	// ErrReservedSystemCategory: NewKind was asked for category 0 (system).
	ErrReservedSystemCategory = errors.New("engine: kind category 0x0 is reserved for system events")
	// ErrReservedEffectCategory: NewKind was asked for category 0xD (effect).
	ErrReservedEffectCategory = errors.New("engine: kind category 0xD is reserved for effect events")
	// ErrTypeIDOutOfRange: a kind type id is above 0xFFF.
	ErrTypeIDOutOfRange = errors.New("engine: kind type id out of range (0-0xFFF)")
	// ErrReservedKind: an append named a reserved kind (see ReservedKindError).
	ErrReservedKind = errors.New("engine: reserved kind cannot be appended")

	// ErrInvalidRegion: a region failed validation; the rule is wrapped too.
	ErrInvalidRegion = errors.New("engine: invalid region")
	// ErrEntityPrefixStar: a region's entity prefix is exactly "*".
	ErrEntityPrefixStar = errors.New("engine: entity prefix \"*\" is not a glob; omit the prefix to match every entity")
	// ErrScopeStar: a region's scope is exactly "*". The region identity
	// writes an absent scope as "*", so allowing it would make two
	// different regions share one identity (and so one checkpoint).
	ErrScopeStar = errors.New("engine: scope \"*\" is not a glob; omit the scope to match every scope")
	// ErrInvertedClockRange: a clock range has start > end (see ClockRangeError).
	ErrInvertedClockRange = errors.New("engine: clock range start is after its end")

	// ErrInvalidCheckpointID: a checkpoint id failed validation; the rule is wrapped too.
	ErrInvalidCheckpointID = errors.New("engine: invalid checkpoint id")
	// ErrCheckpointIDEmpty: a checkpoint id is empty.
	ErrCheckpointIDEmpty = errors.New("engine: checkpoint id is empty")
	// ErrCheckpointIDTooLong: a checkpoint id is longer than 1024 bytes (see LengthError).
	ErrCheckpointIDTooLong = errors.New("engine: checkpoint id too long")

	// ErrInvalidConfig: a configuration value breaks a rule (see ConfigError).
	ErrInvalidConfig = errors.New("engine: invalid config")

	// ErrEmptyBatch: an append carried no events.
	ErrEmptyBatch = errors.New("engine: empty batch")
	// ErrEntryTooLarge: one event's encoded size is over Config.MaxEntryBytes.
	ErrEntryTooLarge = errors.New("engine: entry too large")
	// ErrBatchTooLarge: a batch has more events or bytes than Config allows.
	ErrBatchTooLarge = errors.New("engine: batch too large")
	// ErrBatchFailed: writing a batch failed after its sequences were
	// reserved; the range is cancelled (see BatchFailedError).
	ErrBatchFailed = errors.New("engine: batch write failed")
	// ErrBatchSyncFailed: the fsync of a group commit failed; every batch of
	// the group is cancelled (see BatchSyncFailedError).
	ErrBatchSyncFailed = errors.New("engine: batch sync failed")
	// ErrWriterFailed: a cancelled range could not be persisted; the store
	// refuses appends until it is reopened. Visible data stays readable.
	ErrWriterFailed = errors.New("engine: writer failed; reopen the journal")
	// ErrJournalLocked: another Store holds the journal directory's lock.
	ErrJournalLocked = errors.New("engine: journal directory is locked by another writer")
	// ErrJournalCorrupt: a segment is damaged before its tail (see CorruptionError).
	ErrJournalCorrupt = errors.New("engine: journal corrupt")
	// ErrSequenceGateViolation: publish outside [visible, allocated] (see GateViolationError).
	ErrSequenceGateViolation = errors.New("engine: sequence gate violation")
	// ErrFenceActive: a fence is active, so an unfenced append or a second
	// BeginFence is refused.
	ErrFenceActive = errors.New("engine: a visibility fence is active")
	// ErrFenceNotActive: CommitFence or CancelFence with no fence active.
	ErrFenceNotActive = errors.New("engine: no visibility fence is active")
	// ErrFenceCancelled: the fence this append was staged in was cancelled.
	ErrFenceCancelled = errors.New("engine: visibility fence cancelled")
	// ErrCancelledRangesCorrupt: the cancelled-ranges file is damaged (see RangesFileError).
	ErrCancelledRangesCorrupt = errors.New("engine: cancelled ranges file corrupt")
	// ErrCancelledRangesFutureVersion: the cancelled-ranges file is newer than this build.
	ErrCancelledRangesFutureVersion = errors.New("engine: cancelled ranges file has a future version")
	// ErrRangeMalformed: a cancelled range has start >= end (see RangeError).
	ErrRangeMalformed = errors.New("engine: malformed range")
	// ErrEntityClockOverflow: an entity's clock would pass 2^32-1.
	ErrEntityClockOverflow = errors.New("engine: entity clock overflow")
	// ErrIdempotencyPartialBatch: a batch mixes keyed and unkeyed events.
	ErrIdempotencyPartialBatch = errors.New("engine: batch mixes keyed and unkeyed events")
	// ErrIdempotencyConflict: a keyed batch is partly known, or repeats a key.
	ErrIdempotencyConflict = errors.New("engine: idempotency key conflict")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("engine: store closed")

	// ErrEntryUnreadable: a visible entry's payload could not be read (see EntryUnreadableError).
	ErrEntryUnreadable = errors.New("engine: entry unreadable")
	// ErrTransient: a source failure worth retrying (writer unavailable or
	// closing, no responders, timeout, connection lost). Remote sources wrap
	// such errors with it; the worker backs off and re-polls.
	ErrTransient = errors.New("engine: transient source error")

	// ErrCheckpointNotFound: the checkpoint store holds no record for the id.
	ErrCheckpointNotFound = errors.New("engine: checkpoint not found")
	// ErrCheckpointIO: the checkpoint store could not be read or written;
	// the stored record is intact.
	ErrCheckpointIO = errors.New("engine: checkpoint store I/O error")
	// ErrCheckpointConflict: a compare-and-swap save lost: the record exists
	// (create) or its revision moved (update).
	ErrCheckpointConflict = errors.New("engine: checkpoint revision conflict")
	// ErrCheckpointCorrupt: a stored record does not decode (see CheckpointCorruptError).
	ErrCheckpointCorrupt = errors.New("engine: checkpoint corrupt")
	// ErrCheckpointRegionMismatch: the record belongs to another region (see RegionMismatchError).
	ErrCheckpointRegionMismatch = errors.New("engine: checkpoint region mismatch")
	// ErrCheckpointJournalMismatch: the record belongs to another journal (see JournalMismatchError).
	ErrCheckpointJournalMismatch = errors.New("engine: checkpoint journal mismatch")
	// ErrCheckpointAhead: the record is past the source's visible bound (see AheadError).
	ErrCheckpointAhead = errors.New("engine: checkpoint ahead of the journal")
	// ErrCheckpointWriteFailed: a worker's checkpoint save failed or
	// conflicted; the worker stopped (see CheckpointWriteError).
	ErrCheckpointWriteFailed = errors.New("engine: checkpoint write failed")
	// ErrWorkerCrashed: a panic outside the handler (in a source, say)
	// stopped the worker.
	ErrWorkerCrashed = errors.New("engine: worker crashed")
	// ErrRestartBudgetExhausted: the handler panicked more often than the
	// restart policy allows (see BudgetExhaustedError).
	ErrRestartBudgetExhausted = errors.New("engine: restart budget exhausted")
)

// LengthError reports a string over its byte limit. It matches Limit
// (ErrEntityTooLong, ErrScopeTooLong or ErrCheckpointIDTooLong).
type LengthError struct {
	Limit error // the sentinel this error matches
	Len   int   // length in bytes
	Max   int   // the limit in bytes
}

func (e *LengthError) Error() string {
	return fmt.Sprintf("%v: %d bytes (max %d)", e.Limit, e.Len, e.Max)
}

func (e *LengthError) Unwrap() error { return e.Limit }

// ComponentError reports a character rule broken by one string component
// (an entity, a scope, a region field or a checkpoint id). It matches Rule.
type ComponentError struct {
	Field  string // "entity", "scope", "entity prefix", "checkpoint id"
	Offset int    // byte offset of the first offending byte, or -1 when not byte-specific
	Rule   error  // ErrNulByte, ErrControlChar, ErrInvalidUTF8, ErrPathTraversal or ErrForbiddenSeparator
}

func (e *ComponentError) Error() string {
	if e.Offset >= 0 {
		return fmt.Sprintf("%s: %v (byte %d)", e.Field, e.Rule, e.Offset)
	}
	return fmt.Sprintf("%s: %v", e.Field, e.Rule)
}

func (e *ComponentError) Unwrap() error { return e.Rule }

// InvalidCoordinateError reports the event of a batch whose coordinate
// failed validation at the append boundary. It matches Reason.
type InvalidCoordinateError struct {
	Index  int   // the event's index in its batch
	Reason error // the rule that failed
}

func (e *InvalidCoordinateError) Error() string {
	return fmt.Sprintf("engine: event %d: invalid coordinate: %v", e.Index, e.Reason)
}

func (e *InvalidCoordinateError) Unwrap() error { return e.Reason }

// ReservedKindError reports an append of a reserved kind. It matches ErrReservedKind.
type ReservedKindError struct {
	Index int  // the event's index in its batch
	Kind  Kind // the reserved kind
}

func (e *ReservedKindError) Error() string {
	return fmt.Sprintf("engine: event %d: kind %#04x is reserved and cannot be appended", e.Index, uint16(e.Kind))
}

func (e *ReservedKindError) Unwrap() error { return ErrReservedKind }

// CategoryError reports a kind category of 16 or more. It matches ErrCategoryOutOfRange.
type CategoryError struct {
	Category uint16
}

func (e *CategoryError) Error() string {
	return fmt.Sprintf("%v: %d", ErrCategoryOutOfRange, e.Category)
}

func (e *CategoryError) Unwrap() error { return ErrCategoryOutOfRange }

// ClockRangeError reports an inverted clock range. It matches ErrInvertedClockRange.
type ClockRangeError struct {
	Start, End uint32
}

func (e *ClockRangeError) Error() string {
	return fmt.Sprintf("%v: %d-%d", ErrInvertedClockRange, e.Start, e.End)
}

func (e *ClockRangeError) Unwrap() error { return ErrInvertedClockRange }

// ConfigError reports a configuration field that breaks a rule. It matches ErrInvalidConfig.
type ConfigError struct {
	Field string // e.g. "BatchSize"
	Rule  string // e.g. "must be > 0"
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%v: %s %s", ErrInvalidConfig, e.Field, e.Rule)
}

func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

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
// It matches ErrJournalCorrupt.
type CorruptionError struct {
	Path   string
	Offset int64
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("%v: %s at offset %d: %s", ErrJournalCorrupt, e.Path, e.Offset, e.Reason)
}

func (e *CorruptionError) Unwrap() error { return ErrJournalCorrupt }

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

// RangeError reports a malformed range. It matches ErrRangeMalformed.
type RangeError struct {
	Start, End uint64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("%v: [%d, %d)", ErrRangeMalformed, e.Start, e.End)
}

func (e *RangeError) Unwrap() error { return ErrRangeMalformed }

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
	return errors.Is(err, ErrJournalCorrupt) || errors.Is(err, ErrCancelledRangesCorrupt)
}

// CheckpointCorruptError reports a stored checkpoint that does not decode.
// It matches ErrCheckpointCorrupt.
type CheckpointCorruptError struct {
	ID       string // the checkpoint id
	Location string // file path, or bucket and key
	Reason   string
}

func (e *CheckpointCorruptError) Error() string {
	return fmt.Sprintf("%v: id %q at %s: %s", ErrCheckpointCorrupt, e.ID, e.Location, e.Reason)
}

func (e *CheckpointCorruptError) Unwrap() error { return ErrCheckpointCorrupt }

// RegionMismatchError reports a checkpoint saved for another region. It
// matches ErrCheckpointRegionMismatch.
type RegionMismatchError struct {
	Location string
	Stored   *string // the stored region identity; nil when the record has none
	Expected string  // the worker's region identity
}

func (e *RegionMismatchError) Error() string {
	stored := "none"
	if e.Stored != nil {
		stored = *e.Stored
	}
	return fmt.Sprintf("%v at %s: stored %s, expected %s", ErrCheckpointRegionMismatch, e.Location, stored, e.Expected)
}

func (e *RegionMismatchError) Unwrap() error { return ErrCheckpointRegionMismatch }

// JournalMismatchError reports a checkpoint bound to another journal. It
// matches ErrCheckpointJournalMismatch.
type JournalMismatchError struct {
	Stored, Current string
}

func (e *JournalMismatchError) Error() string {
	return fmt.Sprintf("%v: checkpoint journal %s, source journal %s", ErrCheckpointJournalMismatch, e.Stored, e.Current)
}

func (e *JournalMismatchError) Unwrap() error { return ErrCheckpointJournalMismatch }

// AheadError reports a checkpoint position at or past the visible bound.
// It matches ErrCheckpointAhead.
type AheadError struct {
	Position, Visible uint64
}

func (e *AheadError) Error() string {
	return fmt.Sprintf("%v: position %d, visible bound %d", ErrCheckpointAhead, e.Position, e.Visible)
}

func (e *AheadError) Unwrap() error { return ErrCheckpointAhead }

// CheckpointWriteError reports a failed or conflicting checkpoint save by
// a worker. It matches ErrCheckpointWriteFailed and its Cause (so a
// conflict also matches ErrCheckpointConflict).
type CheckpointWriteError struct {
	ID    string
	Cause error
}

func (e *CheckpointWriteError) Error() string {
	return fmt.Sprintf("%v: id %q: %v", ErrCheckpointWriteFailed, e.ID, e.Cause)
}

func (e *CheckpointWriteError) Unwrap() []error { return []error{ErrCheckpointWriteFailed, e.Cause} }

// BudgetExhaustedError reports a worker that stopped because its handler
// panicked more often than its restart policy allows. It matches
// ErrRestartBudgetExhausted.
type BudgetExhaustedError struct {
	LastPanic string
}

func (e *BudgetExhaustedError) Error() string {
	return fmt.Sprintf("%v: last panic: %s", ErrRestartBudgetExhausted, e.LastPanic)
}

func (e *BudgetExhaustedError) Unwrap() error { return ErrRestartBudgetExhausted }

// WorkerCrashedError reports a panic outside the handler. It matches
// ErrWorkerCrashed.
type WorkerCrashedError struct {
	Panic string
}

func (e *WorkerCrashedError) Error() string {
	return fmt.Sprintf("%v: %s", ErrWorkerCrashed, e.Panic)
}

func (e *WorkerCrashedError) Unwrap() error { return ErrWorkerCrashed }

// errAbandoned answers a request whose caller stopped waiting before the
// committer reached it; nobody reads it.
var errAbandoned = errors.New("engine: request abandoned by its caller")
