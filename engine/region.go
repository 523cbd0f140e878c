package engine

import (
	"strconv"
)

// Region is the predicate of pulls, cursors and workers: an
// optional entity prefix, an optional scope, a kind filter and an optional
// clock range. Every part is optional; RegionAll matches every event,
// lifecycle events included.
//
// A Region is an immutable, comparable value: the With methods return a
// modified copy. Building a region does not validate it; every operation
// that takes a region calls Validate first. Identity is the persisted name
// of a region: two regions denote the same consumer iff their identities
// are byte-identical.
type Region struct {
	entity    string // entity prefix, if hasEntity
	hasEntity bool
	scope     string // exact scope, if hasScope
	hasScope  bool
	kind      KindFilter
	clock     ClockRange // inclusive clock range, if hasClock
	hasClock  bool
	part      Partition // a consumer group's partition, if hasPart
	hasPart   bool
	// A later part is added as a field here, a builder, a check in
	// validate, a test in Matches and a suffix in appendIdentity written
	// only when the part is set, so the identity of every existing region
	// stays unchanged (as the partition's is).
}

// RegionAll returns the region with no part set: it matches every event.
func RegionAll() Region { return Region{} }

// RegionEntity returns the region of the entity prefix (see WithEntity).
func RegionEntity(prefix string) Region { return Region{}.WithEntity(prefix) }

// RegionScope returns the region of one scope (see WithScope).
func RegionScope(scope string) Region { return Region{}.WithScope(scope) }

// WithEntity returns a copy of r restricted to the entity prefix P: an
// entity E matches iff E == P, or E starts with P and the next byte is ":"
// ("alice" matches "alice" and "alice:child", not "alice2"). There is no
// glob syntax: "*" is rejected by Validate; omit the prefix to match every
// entity. An empty prefix is rejected too.
func (r Region) WithEntity(prefix string) Region {
	r.entity, r.hasEntity = prefix, true
	return r
}

// WithScope returns a copy of r restricted to events whose scope equals
// scope exactly.
func (r Region) WithScope(scope string) Region {
	r.scope, r.hasScope = scope, true
	return r
}

// WithKind returns a copy of r with the kind filter f. The zero KindFilter
// removes the filter.
func (r Region) WithKind(f KindFilter) Region {
	r.kind = f
	return r
}

// WithCategory returns a copy of r restricted to kinds of category c; it
// is r.WithKind(KindCategory(c)).
func (r Region) WithCategory(c uint16) Region { return r.WithKind(KindCategory(c)) }

// WithExact returns a copy of r restricted to the kind k; it is
// r.WithKind(KindExact(k)).
func (r Region) WithExact(k Kind) Region { return r.WithKind(KindExact(k)) }

// WithClock returns a copy of r restricted to entries whose clock lies in
// cr, both ends included.
func (r Region) WithClock(cr ClockRange) Region {
	r.clock, r.hasClock = cr, true
	return r
}

// WithPartition returns a copy of r restricted to the entities whose
// bucket lies in partition p (a consumer group's share of r).
func (r Region) WithPartition(p Partition) Region {
	r.part, r.hasPart = p, true
	return r
}

// Partition returns the partition and whether one is set.
func (r Region) Partition() (Partition, bool) { return r.part, r.hasPart }

// WithoutPartition returns r without its partition (the group's region).
func (r Region) WithoutPartition() Region {
	r.part, r.hasPart = Partition{}, false
	return r
}

// EntityPrefix returns the entity prefix and whether one is set.
func (r Region) EntityPrefix() (string, bool) { return r.entity, r.hasEntity }

// Scope returns the scope and whether one is set.
func (r Region) Scope() (string, bool) { return r.scope, r.hasScope }

// Kind returns the kind filter; its Mode is KindFilterNone when unset.
func (r Region) Kind() KindFilter { return r.kind }

// Clock returns the clock range and whether one is set.
func (r Region) Clock() (ClockRange, bool) { return r.clock, r.hasClock }

// Validate reports whether r is a valid region. The checks run
// in this order and the first failure wins:
//
//  1. a set entity prefix passes the entity rules of NewCoordinate
//     (ErrEmptyEntity, ErrEntityTooLong, the character rules under the field
//     name "entity prefix"), then must not be exactly "*"
//     (ErrEntityPrefixStar);
//  2. a set scope passes the scope rules of NewCoordinate (ErrEmptyScope,
//     ErrScopeTooLong, the character rules) and must not be exactly "*";
//  3. a category filter's category must be below 16 (*CategoryError);
//  4. a set clock range must have Start <= End (*ClockRangeError).
//
// Every failure matches ErrInvalidRegion and the rule, and errors.As finds
// the typed error (*LengthError, *ComponentError, *CategoryError,
// *ClockRangeError) where there is one.
func (r Region) Validate() error {
	if field, err := r.validate(); err != nil {
		return &RegionError{Field: field, Rule: err}
	}
	return nil
}

// validate returns the first broken rule and the field it concerns.
func (r Region) validate() (field string, err error) {
	if r.hasEntity {
		if err := validateSized("entity prefix", r.entity, ErrEmptyEntity, ErrEntityTooLong); err != nil {
			return "entity", err
		}
		if r.entity == identityAbsent {
			return "entity", ErrEntityPrefixStar
		}
	}
	if r.hasScope {
		if err := ValidateScope(r.scope); err != nil {
			return "scope", err
		}
		if r.scope == identityAbsent {
			return "scope", ErrScopeStar
		}
	}
	if err := r.kind.validate(); err != nil {
		return "category", err
	}
	if r.hasClock {
		if err := r.clock.validate(); err != nil {
			return "clock", err
		}
	}
	if r.hasPart {
		if err := r.part.Validate(); err != nil {
			return "part", err
		}
	}
	return "", nil
}

// Matches reports whether an entry at entity@scope with the given kind and
// clock lies in r. The parts are tested in the pull match order: entity prefix, scope, kind, clock. Matches does not validate r;
// visibility is the caller's business.
func (r Region) Matches(entity, scope string, kind Kind, clock uint32) bool {
	return r.matchEntity(entity) &&
		(!r.hasScope || scope == r.scope) &&
		r.kind.Matches(kind) &&
		(!r.hasClock || r.clock.Contains(clock)) &&
		(!r.hasPart || r.part.Count == 1 || r.part.Holds(Bucket(entity)))
}

// MatchesBucket is Matches for a caller that knows the entity's bucket
// (the journal's index keeps it): it does not hash the entity again.
func (r Region) MatchesBucket(entity string, bucket uint16, scope string, kind Kind, clock uint32) bool {
	return r.matchEntity(entity) &&
		(!r.hasScope || scope == r.scope) &&
		r.kind.Matches(kind) &&
		(!r.hasClock || r.clock.Contains(clock)) &&
		(!r.hasPart || r.part.Holds(bucket))
}

// matchEntity applies the entity prefix rule: with prefix P set, E matches
// iff E == P, or E starts with P and the next byte is ':'.
func (r Region) matchEntity(entity string) bool {
	if !r.hasEntity {
		return true
	}
	p := r.entity
	switch {
	case len(entity) == len(p):
		return entity == p
	case len(entity) > len(p):
		return entity[len(p)] == ':' && entity[:len(p)] == p
	default:
		return false
	}
}

// identityAbsent stands for an absent part in a region identity.
const identityAbsent = "*"

// Identity returns the persisted name of r:
//
//	entity=<E>|scope=<S>|fact=<F>|clock=<C>
//
// E is the entity prefix verbatim, or "*" when absent; S the scope
// verbatim, or "*" when absent; F is "none" (no filter), "any",
// "category:<c>" or "exact:<cat>:<type>" in lowercase hex without padding;
// C is "*" when absent, else "<start>-<end>" in decimal. A consumer
// group's partition i of P adds "|part=<i>/<P>". For example RegionAll()
// is "entity=*|scope=*|fact=none|clock=*".
//
// For valid regions the identity is injective. RegionAll() and
// RegionAll().WithKind(KindAny()) match the same events yet have different
// identities, so they are different consumers.
func (r Region) Identity() string {
	b := make([]byte, 0, len("entity=|scope=|fact=|clock=")+len(r.entity)+len(r.scope)+32)
	return string(r.appendIdentity(b))
}

// appendIdentity appends r's identity to b.
func (r Region) appendIdentity(b []byte) []byte {
	b = append(b, "entity="...)
	b = appendOrAbsent(b, r.entity, r.hasEntity)
	b = append(b, "|scope="...)
	b = appendOrAbsent(b, r.scope, r.hasScope)
	b = append(b, "|fact="...)
	b = r.kind.appendFact(b)
	b = append(b, "|clock="...)
	if r.hasClock {
		b = strconv.AppendUint(b, uint64(r.clock.Start), 10)
		b = append(b, '-')
		b = strconv.AppendUint(b, uint64(r.clock.End), 10)
	} else {
		b = append(b, identityAbsent...)
	}
	// Later, optional parts are appended here, each only when set.
	if r.hasPart {
		b = append(b, "|part="...)
		b = strconv.AppendUint(b, uint64(r.part.Index), 10)
		b = append(b, '/')
		b = strconv.AppendUint(b, uint64(r.part.Count), 10)
	}
	return b
}

func appendOrAbsent(b []byte, s string, present bool) []byte {
	if !present {
		return append(b, identityAbsent...)
	}
	return append(b, s...)
}

// String returns r's identity.
func (r Region) String() string { return r.Identity() }

// KindFilterMode says how a KindFilter selects kinds.
type KindFilterMode uint8

// The kind filter modes.
const (
	// KindFilterNone is the zero KindFilter: no filter, every kind matches.
	KindFilterNone KindFilterMode = iota
	// KindFilterAny matches every kind, like KindFilterNone, but is a
	// different region identity ("fact=any" rather than "fact=none").
	KindFilterAny
	// KindFilterExact matches one kind (16-bit equality).
	KindFilterExact
	// KindFilterCategory matches the kinds of one category (upper nibble).
	KindFilterCategory
)

// String returns the mode's name as used in region identities: "none",
// "any", "exact" or "category".
func (m KindFilterMode) String() string {
	switch m {
	case KindFilterNone:
		return "none"
	case KindFilterAny:
		return "any"
	case KindFilterExact:
		return "exact"
	case KindFilterCategory:
		return "category"
	default:
		return "KindFilterMode(" + strconv.Itoa(int(m)) + ")"
	}
}

// KindFilter is a region's kind filter. The zero value is no filter
// (KindFilterNone); KindAny, KindExact and KindCategory build the others.
// It is an immutable, comparable value.
type KindFilter struct {
	mode     KindFilterMode
	kind     Kind   // KindFilterExact only
	category uint16 // KindFilterCategory only
}

// KindAny returns the filter that matches every kind and is named "any" in
// a region identity.
func KindAny() KindFilter { return KindFilter{mode: KindFilterAny} }

// KindExact returns the filter that matches the kind k only. Reserved
// kinds may be named.
func KindExact(k Kind) KindFilter { return KindFilter{mode: KindFilterExact, kind: k} }

// KindCategory returns the filter that matches every kind whose category
// (upper nibble) is c. A category of 16 or more is rejected by
// Region.Validate.
func KindCategory(c uint16) KindFilter { return KindFilter{mode: KindFilterCategory, category: c} }

// Mode returns how f selects kinds.
func (f KindFilter) Mode() KindFilterMode { return f.mode }

// Kind returns the kind of a KindFilterExact filter, 0 for other modes.
func (f KindFilter) Kind() Kind { return f.kind }

// Category returns the category of a KindFilterCategory filter, 0 for
// other modes.
func (f KindFilter) Category() uint16 { return f.category }

// Matches reports whether the kind k passes f.
func (f KindFilter) Matches(k Kind) bool {
	switch f.mode {
	case KindFilterExact:
		return k == f.kind
	case KindFilterCategory:
		return k.Category() == f.category
	default:
		return true
	}
}

// String returns f as the fact of a region identity, for example "none",
// "any", "category:a" or "exact:f:7".
func (f KindFilter) String() string { return string(f.appendFact(nil)) }

func (f KindFilter) appendFact(b []byte) []byte {
	switch f.mode {
	case KindFilterAny:
		return append(b, "any"...)
	case KindFilterExact:
		b = append(b, "exact:"...)
		b = strconv.AppendUint(b, uint64(f.kind.Category()), 16)
		b = append(b, ':')
		return strconv.AppendUint(b, uint64(f.kind.TypeID()), 16)
	case KindFilterCategory:
		b = append(b, "category:"...)
		return strconv.AppendUint(b, uint64(f.category), 16)
	default:
		return append(b, "none"...)
	}
}

func (f KindFilter) validate() error {
	if f.mode == KindFilterCategory && f.category >= kindCategoryLimit {
		return &CategoryError{Category: f.category}
	}
	return nil
}

// ClockRange is an inclusive range of entity clocks: a clock c lies in it
// iff Start <= c <= End. Build it with NewClockRange, or as a literal that
// Region.Validate checks.
type ClockRange struct {
	Start, End uint32
}

// NewClockRange returns the range [start, end], both ends included. A
// start after end is a *ClockRangeError (matching ErrInvertedClockRange);
// start == end is a range of one clock.
func NewClockRange(start, end uint32) (ClockRange, error) {
	cr := ClockRange{Start: start, End: end}
	if err := cr.validate(); err != nil {
		return ClockRange{}, err
	}
	return cr, nil
}

// Contains reports whether clock lies in cr, both ends included.
func (cr ClockRange) Contains(clock uint32) bool { return cr.Start <= clock && clock <= cr.End }

func (cr ClockRange) validate() error {
	if cr.Start > cr.End {
		return &ClockRangeError{Start: cr.Start, End: cr.End}
	}
	return nil
}
