package engine

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors.
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

	// ErrInvalidPartition: a partition's count is not a power of two from 1
	// to Buckets, or its index is not below its count.
	ErrInvalidPartition = errors.New("engine: invalid partition")

	// ErrInvalidJournalName: a journal name is not 1-64 bytes of [A-Za-z0-9_-].
	ErrInvalidJournalName = errors.New("engine: invalid journal name")

	// ErrInvalidConfig: a configuration value breaks a rule (see ConfigError).
	ErrInvalidConfig = errors.New("engine: invalid config")

	// ErrRangeMalformed: a cancelled range has start >= end (see RangeError).
	ErrRangeMalformed = errors.New("engine: malformed range")
)

// LengthError reports a string over its byte limit. It matches Limit
// (ErrEntityTooLong, ErrScopeTooLong or ErrIDTooLong).
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

// RangeError reports a malformed range. It matches ErrRangeMalformed.
type RangeError struct {
	Start, End uint64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("%v: [%d, %d)", ErrRangeMalformed, e.Start, e.End)
}

func (e *RangeError) Unwrap() error { return ErrRangeMalformed }

// RegionError reports the rule a region breaks and the field it concerns
// ("entity", "scope", "category", "clock"). It matches ErrInvalidRegion
// and Rule.
type RegionError struct {
	Field string
	Rule  error
}

func (e *RegionError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrInvalidRegion, e.Field, strings.TrimPrefix(e.Rule.Error(), "engine: "))
}

func (e *RegionError) Unwrap() []error { return []error{ErrInvalidRegion, e.Rule} }
