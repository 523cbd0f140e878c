package engine

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Entry is one delivered event. A redelivered entry is identical in every
// field.
type Entry struct {
	Seq        uint64     // global sequence, the delivery axis
	ID         [16]byte   // UUIDv7, or the idempotency key of a keyed append
	Kind       Kind       // category<<12 | type id
	Coordinate Coordinate // entity@scope
	Clock      uint32     // per-entity counter: 0 for an entity's first event
	WallMs     int64      // unix milliseconds, non-decreasing per entity
	Payload    []byte
}

// IdempotencyKey makes an append retry-safe: a retry carrying the same key
// within the retention window returns the original receipt and writes
// nothing. The zero key means "no key".
type IdempotencyKey [16]byte

// IsZero reports whether k is the zero key (no key).
func (k IdempotencyKey) IsZero() bool { return k == IdempotencyKey{} }

func (k IdempotencyKey) String() string { return hex.EncodeToString(k[:]) }

// DeriveIdempotencyKey derives a stable key from an operation identity:
// the first 16 bytes of SHA-256 over
//
//	u32 BE len(domain) | domain | u32 BE len(components) |
//	for each component: u32 BE len(component) | component
//
// The same domain and components always give the same key; the length
// prefixes keep ("ab","c") and ("a","bc") apart.
func DeriveIdempotencyKey(domain string, components ...[]byte) IdempotencyKey {
	h := sha256.New()
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(domain)))
	h.Write(n[:])
	h.Write([]byte(domain))
	binary.BigEndian.PutUint32(n[:], uint32(len(components)))
	h.Write(n[:])
	for _, c := range components {
		binary.BigEndian.PutUint32(n[:], uint32(len(c)))
		h.Write(n[:])
		h.Write(c)
	}
	var k IdempotencyKey
	copy(k[:], h.Sum(nil))
	return k
}

// Event is one event to append.
type Event struct {
	Coordinate Coordinate
	Kind       Kind
	Payload    []byte
	Key        IdempotencyKey // optional; the zero key means none
}

// Receipt acknowledges one appended event: it is durable and visible.
type Receipt struct {
	Seq      uint64
	ID       [16]byte
	Replayed bool // true when an idempotency key matched an earlier append
}

// ID128 is a random 128-bit identifier (journal and incarnation ids),
// written as 32 lowercase hex digits.
type ID128 [16]byte

func (id ID128) String() string { return hex.EncodeToString(id[:]) }

// ParseID128 parses 32 lowercase or uppercase hex digits.
func ParseID128(s string) (ID128, error) {
	var id ID128
	if len(s) != 32 {
		// Not quoted: s may be anything a peer sent, of any length.
		return id, fmt.Errorf("engine: id of %d bytes: want 32 hex digits", len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("engine: id %q: %w", s, err)
	}
	return id, nil
}

// NewID128 returns a random 128-bit id (journal and incarnation ids).
func NewID128() ID128 {
	var id ID128
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails on Linux
	return id
}

// UUIDv7 returns the UUIDv7 (RFC 9562) of unix-millisecond time ms whose
// random bits come from rnd: bytes 0-5 are ms (big endian), the version
// nibble is 7 and the variant bits 10; the other 74 bits are rnd's. Event
// ids of unkeyed appends, and the keys remote appends get when the caller
// gives none, are made this way.
func UUIDv7(ms int64, rnd [16]byte) [16]byte {
	u := rnd
	binary.BigEndian.PutUint32(u[0:], uint32(uint64(ms)>>16))
	binary.BigEndian.PutUint16(u[4:], uint16(ms))
	u[6] = 0x70 | u[6]&0x0f // version 7
	u[8] = 0x80 | u[8]&0x3f // RFC 9562 variant
	return u
}
