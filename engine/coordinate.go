package engine

import (
	"errors"
	"fmt"

	"github.com/batfleet/batfleet/internal/msgpackutil"
	"github.com/vmihailenco/msgpack/v5"
)

// Coordinate is the address of an event: the entity is the
// stream key, the scope the isolation boundary. Both are non-empty UTF-8
// strings of at most 1024 bytes; ":" is the namespace separator.
//
// A Coordinate is an immutable, comparable value. The only way to build a
// non-zero one is NewCoordinate (or decoding), so every non-zero Coordinate
// is valid. The zero value is not a valid coordinate; see IsZero.
type Coordinate struct {
	entity, scope string
}

// NewCoordinate validates entity and scope and returns their coordinate.
// The checks run in this order and the first failure wins:
//
//  1. entity empty: ErrEmptyEntity;
//  2. scope empty: ErrEmptyScope;
//  3. entity over 1024 bytes: *LengthError matching ErrEntityTooLong;
//  4. scope over 1024 bytes: *LengthError matching ErrScopeTooLong;
//  5. the character rules, completely on the entity, then on the scope:
//     *ComponentError matching ErrNulByte, ErrControlChar, ErrInvalidUTF8,
//     ErrPathTraversal or ErrForbiddenSeparator.
//
// Spaces, ":", "@", "*", "\" and non-ASCII text are allowed.
func NewCoordinate(entity, scope string) (Coordinate, error) {
	switch {
	case entity == "":
		return Coordinate{}, ErrEmptyEntity
	case scope == "":
		return Coordinate{}, ErrEmptyScope
	case len(entity) > MaxComponentBytes:
		return Coordinate{}, &LengthError{Limit: ErrEntityTooLong, Len: len(entity), Max: MaxComponentBytes}
	case len(scope) > MaxComponentBytes:
		return Coordinate{}, &LengthError{Limit: ErrScopeTooLong, Len: len(scope), Max: MaxComponentBytes}
	}
	if err := ValidateComponent("entity", entity); err != nil {
		return Coordinate{}, err
	}
	if err := ValidateComponent("scope", scope); err != nil {
		return Coordinate{}, err
	}
	return Coordinate{entity: entity, scope: scope}, nil
}

// MustCoordinate is NewCoordinate for tests and examples: it panics if the
// coordinate is invalid.
func MustCoordinate(entity, scope string) Coordinate {
	c, err := NewCoordinate(entity, scope)
	if err != nil {
		panic(err)
	}
	return c
}

// ValidateEntity applies the entity rules of NewCoordinate to s alone:
// ErrEmptyEntity, a *LengthError matching ErrEntityTooLong, or a
// *ComponentError with Field "entity".
func ValidateEntity(s string) error {
	return validateSized("entity", s, ErrEmptyEntity, ErrEntityTooLong)
}

// ValidateScope applies the scope rules of NewCoordinate to s alone:
// ErrEmptyScope, a *LengthError matching ErrScopeTooLong, or a
// *ComponentError with Field "scope".
func ValidateScope(s string) error {
	return validateSized("scope", s, ErrEmptyScope, ErrScopeTooLong)
}

// Entity returns the coordinate's entity (its stream key).
// Validate re-checks c: the zero Coordinate (the only invalid value one
// can hold) fails with ErrEmptyEntity; any other passes.
func (c Coordinate) Validate() error {
	_, err := NewCoordinate(c.entity, c.scope)
	return err
}

// LifecycleCoordinate returns batfleet:store@batfleet:lifecycle, where the
// journal appends its OPEN_COMPLETED and CLOSE_COMPLETED events.
func LifecycleCoordinate() Coordinate {
	return Coordinate{entity: "batfleet:store", scope: "batfleet:lifecycle"}
}

func (c Coordinate) Entity() string { return c.entity }

// Scope returns the coordinate's scope (its isolation boundary).
func (c Coordinate) Scope() string { return c.scope }

// String returns the display form "entity@scope".
func (c Coordinate) String() string { return c.entity + "@" + c.scope }

// IsZero reports whether c is the zero Coordinate, which no constructor or
// decoder returns for a valid coordinate.
func (c Coordinate) IsZero() bool { return c.entity == "" && c.scope == "" }

// MessagePack map keys of a Coordinate.
const (
	coordinateKeyEntity = "entity"
	coordinateKeyScope  = "scope"
)

var (
	_ msgpack.CustomEncoder = Coordinate{}
	_ msgpack.CustomDecoder = (*Coordinate)(nil)
)

// EncodeMsgpack writes c as the MessagePack map {"entity": E, "scope": S},
// entity first. Encoding the zero Coordinate fails, because it
// could never be decoded.
func (c Coordinate) EncodeMsgpack(enc *msgpack.Encoder) error {
	if c.IsZero() {
		return fmt.Errorf("engine: encode coordinate: %w", ErrEmptyEntity)
	}
	if err := enc.EncodeMapLen(2); err != nil {
		return err
	}
	if err := enc.EncodeString(coordinateKeyEntity); err != nil {
		return err
	}
	if err := enc.EncodeString(c.entity); err != nil {
		return err
	}
	if err := enc.EncodeString(coordinateKeyScope); err != nil {
		return err
	}
	return enc.EncodeString(c.scope)
}

// DecodeMsgpack reads a coordinate map and validates it as NewCoordinate
// does; a decoded Coordinate is always valid. Keys other than "entity" and
// "scope" are skipped; a missing or repeated key, a key or value that does
// not decode as a string, or a MessagePack nil in place of the map is an
// error. On error c is left unchanged.
//
// Note that msgpack.Unmarshal, and the decoding of a struct field of type
// Coordinate, turn a MessagePack nil into the zero Coordinate without
// calling DecodeMsgpack; decoders that require a coordinate must check
// IsZero.
func (c *Coordinate) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeMapLen()
	if err != nil {
		return fmt.Errorf("engine: decode coordinate: %w", err)
	}
	if n < 0 {
		return errors.New("engine: decode coordinate: nil instead of a map")
	}
	var entity, scope string
	var haveEntity, haveScope bool
	for range n {
		key, err := dec.DecodeString()
		if err != nil {
			return fmt.Errorf("engine: decode coordinate key: %w", err)
		}
		var dst *string
		switch key {
		case coordinateKeyEntity:
			if haveEntity {
				return errors.New("engine: decode coordinate: repeated key \"entity\"")
			}
			haveEntity, dst = true, &entity
		case coordinateKeyScope:
			if haveScope {
				return errors.New("engine: decode coordinate: repeated key \"scope\"")
			}
			haveScope, dst = true, &scope
		default:
			if err := msgpackutil.Skip(dec); err != nil {
				return fmt.Errorf("engine: decode coordinate: skip %q: %w", key, err)
			}
			continue
		}
		if *dst, err = dec.DecodeString(); err != nil {
			return fmt.Errorf("engine: decode coordinate %s: %w", key, err)
		}
	}
	switch {
	case !haveEntity:
		return errors.New("engine: decode coordinate: missing key \"entity\"")
	case !haveScope:
		return errors.New("engine: decode coordinate: missing key \"scope\"")
	}
	decoded, err := NewCoordinate(entity, scope)
	if err != nil {
		return fmt.Errorf("engine: decode coordinate: %w", err)
	}
	*c = decoded
	return nil
}
