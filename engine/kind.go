package engine

import "fmt"

// Kind is an event kind: a 4-bit category in the upper nibble
// and a 12-bit type id, category<<12 | typeID.
//
// Categories 0x0 (system) and 0xD (effect) are reserved: events of those
// kinds are written by the engine only, and no public append accepts them.
// Product kinds use categories 0x1-0xC and 0xE-0xF. Filters may name any
// kind, reserved ones included.
type Kind uint16

// Kinds with a fixed meaning. KindData is the general product kind; the
// others are reserved (system category 0x0, effect category 0xD).
const (
	// KindData is the default product kind (category 0x1, type 0).
	KindData Kind = 0x1000

	// KindInit is a reserved system kind.
	KindInit Kind = 0x0001
	// KindShutdown is a reserved system kind.
	KindShutdown Kind = 0x0002
	// KindHeartbeat is a reserved system kind.
	KindHeartbeat Kind = 0x0003
	// KindConfigChange is a reserved system kind.
	KindConfigChange Kind = 0x0004
	// KindCheckpoint is a reserved system kind.
	KindCheckpoint Kind = 0x0005
	// KindBatchBegin marks the start of a multi-event batch in the journal;
	// it is a frame only, never an index entry, never delivered.
	KindBatchBegin Kind = 0x0006
	// KindBatchCommit marks the end of a multi-event batch in the journal;
	// it is a frame only, never an index entry, never delivered.
	KindBatchCommit Kind = 0x0007
	// KindOpenCompleted is the lifecycle event appended at each writer open
	//.
	KindOpenCompleted Kind = 0x0008
	// KindCloseCompleted is the lifecycle event appended at a clean close
	//.
	KindCloseCompleted Kind = 0x0009
	// KindDenial is a reserved system kind.
	KindDenial Kind = 0x000F
	// KindTombstone is a reserved system kind.
	KindTombstone Kind = 0x0FFE

	// KindError is a reserved effect kind.
	KindError Kind = 0xD001
	// KindRetry is a reserved effect kind.
	KindRetry Kind = 0xD002
	// KindAck is a reserved effect kind.
	KindAck Kind = 0xD004
	// KindBackpressure is a reserved effect kind.
	KindBackpressure Kind = 0xD005
	// KindCancel is a reserved effect kind.
	KindCancel Kind = 0xD006
	// KindConflict is a reserved effect kind.
	KindConflict Kind = 0xD007
)

// Kind layout and the reserved categories.
const (
	kindCategoryShift         = 12
	kindTypeIDMask            = 0x0FFF
	kindCategoryLimit         = 16 // categories are 0-15
	kindSystemCategory uint16 = 0x0
	kindEffectCategory uint16 = 0xD
)

// NewKind returns the product kind category<<12 | typeID. The checks run in
// this order and the first failure wins: category 16 or more is a
// *CategoryError (matching ErrCategoryOutOfRange); category 0 is
// ErrReservedSystemCategory; category 0xD is ErrReservedEffectCategory;
// typeID above 0xFFF is ErrTypeIDOutOfRange.
//
// Reserved kinds (for filters) are written as constants or Kind(x).
func NewKind(category, typeID uint16) (Kind, error) {
	switch {
	case category >= kindCategoryLimit:
		return 0, &CategoryError{Category: category}
	case category == kindSystemCategory:
		return 0, ErrReservedSystemCategory
	case category == kindEffectCategory:
		return 0, ErrReservedEffectCategory
	case typeID > kindTypeIDMask:
		return 0, ErrTypeIDOutOfRange
	}
	return Kind(category<<kindCategoryShift | typeID), nil
}

// Category returns the kind's category, its upper nibble (0-15).
func (k Kind) Category() uint16 { return uint16(k) >> kindCategoryShift }

// TypeID returns the kind's type id, its lower 12 bits (0-0xFFF).
func (k Kind) TypeID() uint16 { return uint16(k) & kindTypeIDMask }

// IsReserved reports whether k is in a reserved category (0x0 system or
// 0xD effect) and so cannot be appended through a public path.
func (k Kind) IsReserved() bool {
	c := k.Category()
	return c == kindSystemCategory || c == kindEffectCategory
}

// String returns k as four lowercase hex digits, for example "0x1001".
func (k Kind) String() string { return fmt.Sprintf("0x%04x", uint16(k)) }

// CheckAppendable returns a *ReservedKindError (matching ErrReservedKind)
// if k is reserved; index is the event's position in its batch.
func (k Kind) CheckAppendable(index int) error {
	if k.IsReserved() {
		return &ReservedKindError{Index: index, Kind: k}
	}
	return nil
}
