package engine

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseRegionIdentity is the inverse of Region.Identity: it rebuilds the
// region whose identity is s (entity, scope and clock fields cannot hold
// "|" or "=", so the grammar splits unambiguously). The result is
// validated; ParseRegionIdentity(r.Identity()) gives back r for every
// valid r.
func ParseRegionIdentity(s string) (Region, error) {
	bad := func(format string, args ...any) (Region, error) {
		return Region{}, fmt.Errorf("%w: identity %q: %s", ErrInvalidRegion, s, fmt.Sprintf(format, args...))
	}
	parts := strings.Split(s, "|")
	var part string
	if len(parts) == 5 {
		var ok bool
		if part, ok = strings.CutPrefix(parts[4], "part="); !ok {
			return bad("field 5 must start with %q", "part=")
		}
		parts = parts[:4]
	}
	if len(parts) != 4 {
		return bad("want 4 |-separated fields (5 with a partition), found %d", len(parts))
	}
	var vals [4]string
	for i, name := range []string{"entity", "scope", "fact", "clock"} {
		v, ok := strings.CutPrefix(parts[i], name+"=")
		if !ok {
			return bad("field %d must start with %q", i+1, name+"=")
		}
		vals[i] = v
	}
	r := RegionAll()
	if vals[0] != identityAbsent {
		r = r.WithEntity(vals[0])
	}
	if vals[1] != identityAbsent {
		r = r.WithScope(vals[1])
	}
	switch fact := vals[2]; {
	case fact == "none":
	case fact == "any":
		r = r.WithKind(KindAny())
	case strings.HasPrefix(fact, "category:"):
		c, err := strconv.ParseUint(strings.TrimPrefix(fact, "category:"), 16, 16)
		if err != nil {
			return bad("fact %q: %v", fact, err)
		}
		r = r.WithCategory(uint16(c))
	case strings.HasPrefix(fact, "exact:"):
		cat, typ, ok := strings.Cut(strings.TrimPrefix(fact, "exact:"), ":")
		c, err1 := strconv.ParseUint(cat, 16, 4)
		t, err2 := strconv.ParseUint(typ, 16, 12)
		if !ok || err1 != nil || err2 != nil {
			return bad("fact %q: want exact:<cat hex>:<type hex>", fact)
		}
		r = r.WithExact(Kind(c<<12 | t))
	default:
		return bad("fact %q: want none, any, category:<c> or exact:<c>:<t>", fact)
	}
	if vals[3] != identityAbsent {
		lo, hi, ok := strings.Cut(vals[3], "-")
		a, err1 := strconv.ParseUint(lo, 10, 32)
		b, err2 := strconv.ParseUint(hi, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return bad("clock %q: want <start>-<end>", vals[3])
		}
		r = r.WithClock(ClockRange{Start: uint32(a), End: uint32(b)})
	}
	if part != "" {
		i, n, ok := strings.Cut(part, "/")
		a, err1 := strconv.ParseUint(i, 10, 16)
		b, err2 := strconv.ParseUint(n, 10, 16)
		if !ok || err1 != nil || err2 != nil {
			return bad("part %q: want <index>/<count>", part)
		}
		r = r.WithPartition(Partition{Index: uint16(a), Count: uint16(b)})
	}
	if err := r.Validate(); err != nil {
		return Region{}, err
	}
	if r.Identity() != s {
		return bad("not in canonical form (it reads back as %q)", r.Identity())
	}
	return r, nil
}
