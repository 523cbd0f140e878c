package engine

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// fuzzRegion builds a region from fuzzed parts. parts is a bit set: 1 entity
// prefix, 2 scope, 4 clock range; mode picks the kind filter (mod 4) and
// kindArg is its kind or category.
func fuzzRegion(parts uint8, entity, scope string, mode uint8, kindArg uint16, start, end uint32) Region {
	r := RegionAll()
	if parts&1 != 0 {
		r = r.WithEntity(entity)
	}
	if parts&2 != 0 {
		r = r.WithScope(scope)
	}
	switch KindFilterMode(mode % 4) {
	case KindFilterAny:
		r = r.WithKind(KindAny())
	case KindFilterExact:
		r = r.WithExact(Kind(kindArg))
	case KindFilterCategory:
		r = r.WithCategory(kindArg)
	}
	if parts&4 != 0 {
		r = r.WithClock(ClockRange{Start: start, End: end})
	}
	return r
}

// parseIdentity inverts Region.Identity for valid regions; it exists to
// prove injectivity (a function with a left inverse is injective).
func parseIdentity(t *testing.T, id string) Region {
	t.Helper()
	fields := strings.Split(id, "|")
	if len(fields) != 4 {
		t.Fatalf("identity %q has %d fields, want 4", id, len(fields))
	}
	value := func(i int, key string) string {
		v, ok := strings.CutPrefix(fields[i], key+"=")
		if !ok {
			t.Fatalf("identity %q: field %d is not %s", id, i, key)
		}
		return v
	}
	hex := func(s string, bits int) uint16 {
		if s == "" || (len(s) > 1 && s[0] == '0') {
			t.Fatalf("identity %q: %q is not unpadded hex", id, s)
		}
		n, err := strconv.ParseUint(s, 16, bits)
		if err != nil || strings.ToLower(s) != s {
			t.Fatalf("identity %q: %q is not lowercase hex: %v", id, s, err)
		}
		return uint16(n)
	}
	r := RegionAll()
	if e := value(0, "entity"); e != "*" {
		r = r.WithEntity(e)
	}
	if s := value(1, "scope"); s != "*" {
		r = r.WithScope(s)
	}
	switch f := value(2, "fact"); {
	case f == "none":
	case f == "any":
		r = r.WithKind(KindAny())
	case strings.HasPrefix(f, "category:"):
		r = r.WithCategory(hex(strings.TrimPrefix(f, "category:"), 4))
	case strings.HasPrefix(f, "exact:"):
		cat, typ, ok := strings.Cut(strings.TrimPrefix(f, "exact:"), ":")
		if !ok {
			t.Fatalf("identity %q: bad exact fact", id)
		}
		r = r.WithExact(Kind(hex(cat, 4)<<12 | hex(typ, 12)))
	default:
		t.Fatalf("identity %q: unknown fact %q", id, f)
	}
	if c := value(3, "clock"); c != "*" {
		s, e, ok := strings.Cut(c, "-")
		start, err1 := strconv.ParseUint(s, 10, 32)
		end, err2 := strconv.ParseUint(e, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			t.Fatalf("identity %q: bad clock %q", id, c)
		}
		r = r.WithClock(ClockRange{Start: uint32(start), End: uint32(end)})
	}
	return r
}

// FuzzRegionIdentity checks that the identity of valid regions is
// injective: each valid region's identity parses back to that region, and
// two different valid regions never share an identity.
func FuzzRegionIdentity(f *testing.F) {
	type seed struct {
		parts         uint8
		entity, scope string
		mode          uint8
		kindArg       uint16
		start, end    uint32
	}
	seeds := []seed{
		{0, "", "", 0, 0, 0, 0},
		{1, "entity:roundtrip", "", 0, 0, 0, 0},
		{2, "", "room", 1, 0, 0, 0},
		{7, "a", "s", 2, 0xF007, 1, 9},
		{0, "", "", 3, 0xA, 0, 0},
		{3, "*", "*", 0, 0, 0, 0},
		{3, "a|scope=x", "a/b", 0, 0, 0, 0},
		{1, "*|fact=any|clock=*", "", 2, 8, 0, 0},
		{4, "", "", 3, 16, 9, 3},
		{3, "名前:x", `a b\c`, 2, 0x0008, 0, 0},
	}
	for _, tc := range identityCases {
		e, hasE := tc.region.EntityPrefix()
		s, hasS := tc.region.Scope()
		cr, hasC := tc.region.Clock()
		var parts uint8
		if hasE {
			parts |= 1
		}
		if hasS {
			parts |= 2
		}
		if hasC {
			parts |= 4
		}
		kf := tc.region.Kind()
		arg := uint16(kf.Kind())
		if kf.Mode() == KindFilterCategory {
			arg = kf.Category()
		}
		seeds = append(seeds, seed{parts, e, s, uint8(kf.Mode()), arg, cr.Start, cr.End})
	}
	for i, a := range seeds {
		b := seeds[(i+1)%len(seeds)]
		f.Add(a.parts, a.entity, a.scope, a.mode, a.kindArg, a.start, a.end,
			b.parts, b.entity, b.scope, b.mode, b.kindArg, b.start, b.end)
	}

	f.Fuzz(func(t *testing.T,
		partsA uint8, entityA, scopeA string, modeA uint8, kindA uint16, startA, endA uint32,
		partsB uint8, entityB, scopeB string, modeB uint8, kindB uint16, startB, endB uint32,
	) {
		a := fuzzRegion(partsA, entityA, scopeA, modeA, kindA, startA, endA)
		b := fuzzRegion(partsB, entityB, scopeB, modeB, kindB, startB, endB)
		if a.Validate() != nil || b.Validate() != nil {
			t.Skip()
		}
		ida, idb := a.Identity(), b.Identity()
		for _, r := range []struct {
			r  Region
			id string
		}{{a, ida}, {b, idb}} {
			if got := parseIdentity(t, r.id); got != r.r {
				t.Fatalf("identity %q parses to %#v, want %#v", r.id, got, r.r)
			}
		}
		if (ida == idb) != (a == b) {
			t.Fatalf("regions %#v and %#v: identities %q and %q", a, b, ida, idb)
		}
	})
}

// FuzzCoordinateDecode feeds arbitrary bytes to the Coordinate decoder: it
// never panics, and whatever it accepts is a valid coordinate that
// re-encodes to a canonical form decoding to the same coordinate.
func FuzzCoordinateDecode(f *testing.F) {
	for _, tc := range coordinateDecodeCases(f) {
		f.Add(tc.data)
	}
	for _, tc := range coordinateCases {
		if b, err := msgpack.Marshal(rawCoordinate{Entity: tc.entity, Scope: tc.scope}); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{0xc0})
	f.Add([]byte{0x80})
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, data []byte) {
		var c Coordinate
		err := msgpack.Unmarshal(data, &c)
		direct := Coordinate{}
		directErr := direct.DecodeMsgpack(msgpack.NewDecoder(bytes.NewReader(data)))
		if directErr == nil {
			if _, err := NewCoordinate(direct.Entity(), direct.Scope()); err != nil {
				t.Fatalf("DecodeMsgpack accepted an invalid coordinate %q: %v", direct, err)
			}
		}
		if err != nil {
			return
		}
		if c.IsZero() {
			// msgpack maps a nil to the zero value without asking the
			// decoder (see DecodeMsgpack); nothing else may yield it.
			if len(data) == 0 || data[0] != 0xc0 {
				t.Fatalf("% x decoded to the zero Coordinate", data)
			}
			return
		}
		valid, err := NewCoordinate(c.Entity(), c.Scope())
		if err != nil {
			t.Fatalf("decoded an invalid coordinate %q: %v", c, err)
		}
		if valid != c || directErr != nil || direct != c {
			t.Fatalf("decoders disagree: Unmarshal %q, DecodeMsgpack %q (%v)", c, direct, directErr)
		}
		enc, err := msgpack.Marshal(c)
		if err != nil {
			t.Fatalf("re-encode %q: %v", c, err)
		}
		var again Coordinate
		if err := msgpack.Unmarshal(enc, &again); err != nil || again != c {
			t.Fatalf("re-decode of %q = %q, %v", c, again, err)
		}
	})
}
