package engine

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseRegion parses the region syntax of the command line (worker run
// --region) and of fleet.WorkerOptions: comma-separated key=value pairs
// among
//
//	entity=PREFIX     an entity prefix (PREFIX, or PREFIX:…)
//	scope=SCOPE       a scope
//	kind=KIND         one kind, decimal or 0x hex (exclusive with category)
//	category=CAT      a kind category 0-15, decimal or 0x hex
//	clock=LO-HI       an inclusive clock range
//	part=I/P          partition I of P of a consumer group (rarely typed:
//	                  group members add it themselves)
//
// for example "entity=order:17,scope=shop,kind=0x1001,clock=3-9". An empty
// spec, or "all", is every event. Values cannot contain ",". Keys may be
// given in any order, each once. The region is validated (Region.Validate):
// every error matches ErrInvalidRegion; a malformed spec also names the
// key at fault.
func ParseRegion(spec string) (Region, error) {
	r := RegionAll()
	spec = strings.TrimSpace(spec)
	if spec == "" || spec == "all" {
		return r, nil
	}
	bad := func(format string, args ...any) (Region, error) {
		return RegionAll(), &regionSyntaxError{msg: fmt.Sprintf(format, args...)}
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(spec, ",") {
		key, val, ok := strings.Cut(part, "=")
		key = strings.TrimSpace(key)
		if !ok {
			return bad("%q is not key=value", part)
		}
		if seen[key] {
			return bad("%s given twice", key)
		}
		seen[key] = true
		switch key {
		case "entity":
			r = r.WithEntity(val)
		case "scope":
			r = r.WithScope(val)
		case "kind":
			k, err := strconv.ParseUint(val, 0, 16)
			if err != nil {
				return bad("kind %q: want a 16-bit kind such as 0x1001", val)
			}
			r = r.WithExact(Kind(k))
		case "category":
			c, err := strconv.ParseUint(val, 0, 16)
			if err != nil {
				return bad("category %q: want 0-15 (or 0x0-0xf)", val)
			}
			r = r.WithCategory(uint16(c))
		case "part":
			i, n, ok := strings.Cut(val, "/")
			a, err1 := strconv.ParseUint(i, 10, 16)
			b, err2 := strconv.ParseUint(n, 10, 16)
			if !ok || err1 != nil || err2 != nil {
				return bad("part %q: want INDEX/COUNT, e.g. 3/16", val)
			}
			r = r.WithPartition(Partition{Index: uint16(a), Count: uint16(b)})
		case "clock":
			lo, hi, ok := strings.Cut(val, "-")
			a, err1 := strconv.ParseUint(lo, 10, 32)
			b, err2 := strconv.ParseUint(hi, 10, 32)
			if !ok || err1 != nil || err2 != nil {
				return bad("clock %q: want LO-HI, e.g. 3-9", val)
			}
			r = r.WithClock(ClockRange{Start: uint32(a), End: uint32(b)})
		default:
			return bad("unknown key %q (want entity, scope, kind, category, clock or part)", key)
		}
	}
	if seen["kind"] && seen["category"] {
		return bad("kind and category are exclusive")
	}
	if err := r.Validate(); err != nil {
		return RegionAll(), err
	}
	return r, nil
}

// Spec returns r in the syntax ParseRegion reads, as a user would type it:
// kinds in hex, "all" for every event. ParseRegion(r.Spec()) has r's
// identity. A region whose entity prefix or scope contains "," has no
// spec that ParseRegion reads back.
func (r Region) Spec() string {
	var parts []string
	if p, ok := r.EntityPrefix(); ok {
		parts = append(parts, "entity="+p)
	}
	if s, ok := r.Scope(); ok {
		parts = append(parts, "scope="+s)
	}
	switch f := r.Kind(); f.Mode() {
	case KindFilterExact:
		parts = append(parts, fmt.Sprintf("kind=%#04x", uint16(f.Kind())))
	case KindFilterCategory:
		parts = append(parts, fmt.Sprintf("category=%#x", f.Category()))
	case KindFilterAny:
		// "any" selects what no filter selects; the syntax has no key for
		// it, so Spec cannot tell the two apart (their identities differ).
	}
	if c, ok := r.Clock(); ok {
		parts = append(parts, fmt.Sprintf("clock=%d-%d", c.Start, c.End))
	}
	if p, ok := r.Partition(); ok {
		parts = append(parts, "part="+p.String())
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, ",")
}

// regionSyntaxError is a spec ParseRegion cannot read. It matches
// ErrInvalidRegion; its text is just what is wrong, for a caller that
// names the flag or field itself.
type regionSyntaxError struct{ msg string }

func (e *regionSyntaxError) Error() string { return e.msg }

func (e *regionSyntaxError) Unwrap() error { return ErrInvalidRegion }
