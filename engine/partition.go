package engine

import (
	"fmt"
	"hash/fnv"
	"math/bits"
)

// Buckets is the number of entity buckets. An entity's bucket is the
// FNV-1a 64 hash of its UTF-8 bytes modulo Buckets; a consumer group's
// partition is a contiguous, aligned range of buckets, so every entry of
// an entity is in one partition, and a partition can later be split in two.
const Buckets = 1024

// Bucket returns the bucket of entity: FNV-1a 64 of its bytes mod Buckets.
func Bucket(entity string) uint16 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(entity)) // a hash.Hash never fails
	return uint16(h.Sum64() % Buckets)
}

// Partition is partition Index of Count: the buckets
// [Index·Buckets/Count, (Index+1)·Buckets/Count). Count is a power of two
// from 1 to Buckets; Index is below Count.
type Partition struct {
	Index, Count uint16
}

// Validate reports whether p is a partition of a valid count.
func (p Partition) Validate() error {
	if p.Count == 0 || p.Count > Buckets || bits.OnesCount16(p.Count) != 1 {
		return fmt.Errorf("%w: count %d: must be a power of two from 1 to %d", ErrInvalidPartition, p.Count, Buckets)
	}
	if p.Index >= p.Count {
		return fmt.Errorf("%w: index %d of %d: must be below the count", ErrInvalidPartition, p.Index, p.Count)
	}
	return nil
}

// Buckets returns p's range of buckets [lo, hi).
func (p Partition) Buckets() (lo, hi uint16) {
	width := Buckets / p.Count
	return p.Index * width, (p.Index + 1) * width
}

// Holds reports whether bucket b is in p.
func (p Partition) Holds(b uint16) bool {
	lo, hi := p.Buckets()
	return lo <= b && b < hi
}

// String returns "<index>/<count>".
func (p Partition) String() string { return fmt.Sprintf("%d/%d", p.Index, p.Count) }
