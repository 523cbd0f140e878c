package checkpoint

import (
	"fmt"

	"github.com/batfleet/batfleet/engine"
)

// ValidateID reports whether id is a valid checkpoint id. In
// order, first failure wins: empty is ErrIDEmpty; more than 1024 bytes is
// an *engine.LengthError matching ErrIDTooLong; then the character rules
// of a coordinate component (engine.ErrNulByte, ErrControlChar,
// ErrInvalidUTF8, ErrPathTraversal, ErrForbiddenSeparator) as an
// *engine.ComponentError. Every failure also matches ErrInvalidID.
// Everything else is allowed, including ".", "\", spaces, ":", "*", ">"
// and non-ASCII text.
func ValidateID(id string) error {
	var err error
	switch {
	case id == "":
		err = ErrIDEmpty
	case len(id) > engine.MaxComponentBytes:
		err = &engine.LengthError{Limit: ErrIDTooLong, Len: len(id), Max: engine.MaxComponentBytes}
	default:
		err = engine.ValidateComponent("checkpoint id", id)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidID, err)
	}
	return nil
}
