package engine

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// checkErr fails t unless err matches want (nil means success).
func checkErr(t testing.TB, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("error = %v, want one matching %v", err, want)
	}
}

// coordinateCase is one NewCoordinate case, shared by the DM tests and the
// fuzz seeds.
type coordinateCase struct {
	name          string
	entity, scope string
	wantErr       error
}

var (
	kib          = strings.Repeat("x", MaxComponentBytes)
	kibPlus1     = strings.Repeat("x", MaxComponentBytes+1)
	runes341     = strings.Repeat("€", 341) // 1023 bytes
	runes342     = strings.Repeat("€", 342) // 1026 bytes, 342 runes
	modelEntity  = "entity:test"
	modelScope   = "scope:test"
	modelWireHex = "82a6656e74697479ab656e746974793a74657374a573636f7065aa73636f70653a74657374"
)

// coordinateCases are the DM-01 to DM-06 cases.
var coordinateCases = []coordinateCase{
	// DM-01
	{name: "DM01 namespaced entity", entity: "a:b", scope: "s"},
	// DM-02
	{name: "DM02 both empty", entity: "", scope: "", wantErr: ErrEmptyEntity},
	{name: "DM02 empty scope", entity: "x", scope: "", wantErr: ErrEmptyScope},
	{name: "DM02 empty entity", entity: "", scope: "s", wantErr: ErrEmptyEntity},
	// DM-03
	{name: "DM03 1024-byte entity", entity: kib, scope: "s"},
	{name: "DM03 1025-byte entity", entity: kibPlus1, scope: "s", wantErr: ErrEntityTooLong},
	{name: "DM03 1024-byte scope", entity: "e", scope: kib},
	{name: "DM03 1025-byte scope", entity: "e", scope: kibPlus1, wantErr: ErrScopeTooLong},
	{name: "DM03 341 three-byte runes", entity: runes341, scope: "s"},
	{name: "DM03 342 three-byte runes", entity: runes342, scope: "s", wantErr: ErrEntityTooLong},
	{name: "DM03 342 three-byte runes scope", entity: "e", scope: runes342, wantErr: ErrScopeTooLong},
	// DM-04
	{name: "DM04 slash", entity: "a/b", scope: "s", wantErr: ErrPathTraversal},
	{name: "DM04 dotdot", entity: "..", scope: "s", wantErr: ErrPathTraversal},
	{name: "DM04 inner dotdot", entity: "a..b", scope: "s", wantErr: ErrPathTraversal},
	{name: "DM04 three dots", entity: "...", scope: "s", wantErr: ErrPathTraversal},
	{name: "DM04 trailing dotdot", entity: "a..", scope: "s", wantErr: ErrPathTraversal},
	{name: "DM04 scope slash", entity: "e", scope: "a/b", wantErr: ErrPathTraversal},
	{name: "DM04 dot inside", entity: "a.b", scope: "s"},
	{name: "DM04 lone dot", entity: ".", scope: "."},
	{name: "DM04 dots apart", entity: ".a.b.", scope: "s"},
	// DM-05
	{name: "DM05 pipe in entity", entity: "e|x", scope: "s", wantErr: ErrForbiddenSeparator},
	{name: "DM05 equals in scope", entity: "e", scope: "s=x", wantErr: ErrForbiddenSeparator},
	{name: "DM05 identity injection", entity: "*|fact=any|clock=*", scope: "s", wantErr: ErrForbiddenSeparator},
	// DM-06
	{name: "DM06 nul", entity: "\x00", scope: "s", wantErr: ErrNulByte},
	{name: "DM06 0x01", entity: "\x01", scope: "s", wantErr: ErrControlChar},
	{name: "DM06 0x1f", entity: "\x1f", scope: "s", wantErr: ErrControlChar},
	{name: "DM06 0x7f", entity: "\x7f", scope: "s", wantErr: ErrControlChar},
	{name: "DM06 control before slash", entity: "a\x01/", scope: "s", wantErr: ErrControlChar},
	{name: "DM06 slash before control", entity: "a/\x01", scope: "s", wantErr: ErrControlChar},
	{name: "DM06 control before nul", entity: "\x01\x00", scope: "s", wantErr: ErrControlChar},
	{name: "DM06 nul before control", entity: "\x00\x01", scope: "s", wantErr: ErrNulByte},
	{name: "DM06 invalid utf8", entity: "\xff", scope: "s", wantErr: ErrInvalidUTF8},
	{name: "DM06 invalid utf8 before slash", entity: "/\xff", scope: "s", wantErr: ErrInvalidUTF8},
	{name: "DM06 control after invalid utf8", entity: "\xff\x01", scope: "s", wantErr: ErrControlChar},
	{name: "DM06 entity checked before scope", entity: "a|b", scope: "\x01", wantErr: ErrForbiddenSeparator},
	{name: "DM06 scope control", entity: "a", scope: "\x01", wantErr: ErrControlChar},
	// Allowed characters (§3.1).
	{name: "allowed characters", entity: `sp ace:@*\`, scope: "名前 ü"},
	// First failure wins across rules 1-5.
	{name: "order long entity before empty scope", entity: kibPlus1, scope: "", wantErr: ErrEmptyScope},
	{name: "order long scope before entity chars", entity: "a|b", scope: kibPlus1, wantErr: ErrScopeTooLong},
	{name: "order long entity before long scope", entity: kibPlus1, scope: kibPlus1, wantErr: ErrEntityTooLong},
	{name: "order bad entity nul before empty scope", entity: "\x00", scope: "", wantErr: ErrEmptyScope},
}

func runCoordinateCases(t *testing.T, prefix string) {
	t.Helper()
	n := 0
	for _, tc := range coordinateCases {
		if !strings.HasPrefix(tc.name, prefix) {
			continue
		}
		n++
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewCoordinate(tc.entity, tc.scope)
			checkErr(t, err, tc.wantErr)
			if tc.wantErr != nil {
				if !c.IsZero() {
					t.Fatalf("failed NewCoordinate returned %q, want the zero Coordinate", c)
				}
				return
			}
			if c.Entity() != tc.entity || c.Scope() != tc.scope {
				t.Fatalf("got (%q, %q), want (%q, %q)", c.Entity(), c.Scope(), tc.entity, tc.scope)
			}
		})
	}
	if n == 0 {
		t.Fatalf("no coordinate cases with prefix %q", prefix)
	}
}

// Catalogue: DM-01.
func TestDM01_CoordinateDisplay(t *testing.T) {
	runCoordinateCases(t, "DM01")
	c := MustCoordinate("a:b", "s")
	if got, want := c.String(), "a:b@s"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if c.IsZero() {
		t.Fatal("valid coordinate reports IsZero")
	}
	if !(Coordinate{}).IsZero() {
		t.Fatal("zero Coordinate does not report IsZero")
	}
	if MustCoordinate("a:b", "s") != c {
		t.Fatal("equal coordinates compare unequal")
	}
}

// Catalogue: DM-02.
func TestDM02_EmptyComponents(t *testing.T) {
	runCoordinateCases(t, "DM02")
}

// Catalogue: DM-03.
func TestDM03_EntityLengthIsBytes(t *testing.T) {
	runCoordinateCases(t, "DM03")

	tests := []struct {
		name          string
		entity, scope string
		want          LengthError
	}{
		{name: "entity 1025", entity: kibPlus1, scope: "s", want: LengthError{Limit: ErrEntityTooLong, Len: 1025, Max: 1024}},
		{name: "scope 1025", entity: "e", scope: kibPlus1, want: LengthError{Limit: ErrScopeTooLong, Len: 1025, Max: 1024}},
		{name: "entity 342 runes", entity: runes342, scope: "s", want: LengthError{Limit: ErrEntityTooLong, Len: 1026, Max: 1024}},
	}
	for _, tc := range tests {
		t.Run("fields "+tc.name, func(t *testing.T) {
			_, err := NewCoordinate(tc.entity, tc.scope)
			var le *LengthError
			if !errors.As(err, &le) {
				t.Fatalf("error %v is not a *LengthError", err)
			}
			if *le != tc.want {
				t.Fatalf("LengthError = %+v, want %+v", *le, tc.want)
			}
		})
	}

	t.Run("MustCoordinate panics", func(t *testing.T) {
		defer func() {
			err, _ := recover().(error)
			checkErr(t, err, ErrEntityTooLong)
		}()
		MustCoordinate(kibPlus1, "s")
		t.Fatal("MustCoordinate did not panic")
	})
}

// Catalogue: DM-04.
func TestDM04_PathTraversal(t *testing.T) {
	runCoordinateCases(t, "DM04")
}

// Catalogue: DM-05.
func TestDM05_ForbiddenSeparator(t *testing.T) {
	runCoordinateCases(t, "DM05")
}

// Catalogue: DM-06.
func TestDM06_ByteScanOrder(t *testing.T) {
	runCoordinateCases(t, "DM06")
	runCoordinateCases(t, "allowed")
	runCoordinateCases(t, "order")

	// The typed error names the component and the first offending byte.
	tests := []struct {
		name          string
		entity, scope string
		want          ComponentError
	}{
		{name: "nul", entity: "ab\x00", scope: "s", want: ComponentError{Field: "entity", Offset: 2, Rule: ErrNulByte}},
		{name: "first control wins", entity: "a/\x7f\x01", scope: "s", want: ComponentError{Field: "entity", Offset: 2, Rule: ErrControlChar}},
		{name: "invalid utf8", entity: "é\xffx", scope: "s", want: ComponentError{Field: "entity", Offset: 2, Rule: ErrInvalidUTF8}},
		{name: "truncated rune", entity: "ab\xe2\x82", scope: "s", want: ComponentError{Field: "entity", Offset: 2, Rule: ErrInvalidUTF8}},
		{name: "slash", entity: "e", scope: "ab/c", want: ComponentError{Field: "scope", Offset: 2, Rule: ErrPathTraversal}},
		{name: "earliest traversal", entity: "a..b/", scope: "s", want: ComponentError{Field: "entity", Offset: 1, Rule: ErrPathTraversal}},
		{name: "traversal before separator", entity: "a|b..", scope: "s", want: ComponentError{Field: "entity", Offset: 3, Rule: ErrPathTraversal}},
		{name: "earliest separator", entity: "ab=c|", scope: "s", want: ComponentError{Field: "entity", Offset: 2, Rule: ErrForbiddenSeparator}},
		{name: "scope after entity", entity: "a|b", scope: "\x01", want: ComponentError{Field: "entity", Offset: 1, Rule: ErrForbiddenSeparator}},
	}
	for _, tc := range tests {
		t.Run("fields "+tc.name, func(t *testing.T) {
			_, err := NewCoordinate(tc.entity, tc.scope)
			var ce *ComponentError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *ComponentError", err)
			}
			if *ce != tc.want {
				t.Fatalf("ComponentError = %+v, want %+v", *ce, tc.want)
			}
		})
	}
}

func TestValidateEntityAndScope(t *testing.T) {
	tests := []struct {
		name     string
		validate func(string) error
		in       string
		wantErr  error
	}{
		{name: "entity ok", validate: ValidateEntity, in: "a:b"},
		{name: "entity empty", validate: ValidateEntity, in: "", wantErr: ErrEmptyEntity},
		{name: "entity long", validate: ValidateEntity, in: kibPlus1, wantErr: ErrEntityTooLong},
		{name: "entity pipe", validate: ValidateEntity, in: "a|b", wantErr: ErrForbiddenSeparator},
		{name: "scope ok", validate: ValidateScope, in: kib},
		{name: "scope empty", validate: ValidateScope, in: "", wantErr: ErrEmptyScope},
		{name: "scope long", validate: ValidateScope, in: kibPlus1, wantErr: ErrScopeTooLong},
		{name: "scope traversal", validate: ValidateScope, in: "..", wantErr: ErrPathTraversal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkErr(t, tc.validate(tc.in), tc.wantErr)
		})
	}
}

func TestValidateComponentDoesNotAllocate(t *testing.T) {
	for _, s := range []string{"entity:test", "名前:ü", kib} {
		if n := testing.AllocsPerRun(100, func() {
			if ValidateComponent("entity", s) != nil {
				t.Fatal("unexpected failure")
			}
		}); n != 0 {
			t.Fatalf("ValidateComponent(%.16q…) allocates %v times, want 0", s, n)
		}
	}
}

func BenchmarkValidateComponent(b *testing.B) {
	for _, bc := range []struct{ name, s string }{
		{"ascii", "order:17:line:3"},
		{"non-ascii", strings.Repeat("名前:", 64)},
	} {
		s := bc.s
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				if ValidateComponent("entity", s) != nil {
					b.Fatal("unexpected failure")
				}
			}
		})
	}
}

// coordinateWire is the §3.1 wire form of entity:test@scope:test.
func coordinateWire(t testing.TB) []byte {
	t.Helper()
	b, err := hexDecode(modelWireHex)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hexDecode(s string) ([]byte, error) {
	out := make([]byte, len(s)/2)
	for i := range out {
		var v byte
		for _, c := range []byte(s[2*i : 2*i+2]) {
			v <<= 4
			switch {
			case '0' <= c && c <= '9':
				v |= c - '0'
			case 'a' <= c && c <= 'f':
				v |= c - 'a' + 10
			default:
				return nil, errors.New("bad hex")
			}
		}
		out[i] = v
	}
	return out, nil
}

// mustMarshal encodes v with msgpack, failing t on error.
func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawCoordinate is an unvalidated map, to write coordinates that
// NewCoordinate refuses.
type rawCoordinate struct {
	Entity string `msgpack:"entity"`
	Scope  string `msgpack:"scope"`
}

// decodeCase is one DM-07 decoder case.
type decodeCase struct {
	name    string
	data    []byte
	want    Coordinate
	wantErr error // nil: success; errAny: any error
}

// coordinateDecodeCases are the DM-07 decoder cases (also fuzz seeds).
func coordinateDecodeCases(t testing.TB) []decodeCase {
	t.Helper()
	return []decodeCase{
		{name: "spec wire form", data: coordinateWire(t), want: MustCoordinate(modelEntity, modelScope)},
		{name: "scope first", data: []byte("\x82\xa5scope\xa1s\xa6entity\xa1e"), want: MustCoordinate("e", "s")},
		{name: "pipe in entity", data: mustMarshal(t, rawCoordinate{Entity: "e|x", Scope: "s"}), wantErr: ErrForbiddenSeparator},
		{name: "slash in scope", data: mustMarshal(t, rawCoordinate{Entity: "e", Scope: "a/b"}), wantErr: ErrPathTraversal},
		{name: "empty entity", data: mustMarshal(t, rawCoordinate{Entity: "", Scope: "s"}), wantErr: ErrEmptyEntity},
		{name: "long entity", data: mustMarshal(t, rawCoordinate{Entity: kibPlus1, Scope: "s"}), wantErr: ErrEntityTooLong},
		{name: "unknown key ignored", data: []byte("\x83\xa1v\x92\x01\xc0\xa6entity\xa1e\xa5scope\xa1s"), want: MustCoordinate("e", "s")},
		{name: "missing scope", data: []byte("\x81\xa6entity\xa1e"), wantErr: errAny},
		{name: "missing entity", data: []byte("\x81\xa5scope\xa1s"), wantErr: errAny},
		{name: "repeated entity", data: []byte("\x83\xa6entity\xa1e\xa6entity\xa1f\xa5scope\xa1s"), wantErr: errAny},
		{name: "integer entity", data: []byte("\x82\xa6entity\x01\xa5scope\xa1s"), wantErr: errAny},
		{name: "integer key", data: []byte("\x83\x01\x01\xa6entity\xa1e\xa5scope\xa1s"), wantErr: errAny},
		{name: "array", data: []byte("\x92\xa1e\xa1s"), wantErr: errAny},
		{name: "truncated", data: coordinateWire(t)[:10], wantErr: errAny},
		{name: "empty input", data: nil, wantErr: errAny},
	}
}

// errAny in a table means "some error".
var errAny = errors.New("any error")

// Catalogue: DM-07.
func TestDM07_CoordinateMsgpack(t *testing.T) {
	t.Run("wire form is byte-exact", func(t *testing.T) {
		got := mustMarshal(t, MustCoordinate(modelEntity, modelScope))
		if want := coordinateWire(t); !bytes.Equal(got, want) {
			t.Fatalf("encoded % x\nwant    % x", got, want)
		}
	})
	t.Run("pointer encodes the same", func(t *testing.T) {
		c := MustCoordinate(modelEntity, modelScope)
		if got := mustMarshal(t, &c); !bytes.Equal(got, coordinateWire(t)) {
			t.Fatalf("encoded % x", got)
		}
	})
	t.Run("zero coordinate does not encode", func(t *testing.T) {
		_, err := msgpack.Marshal(Coordinate{})
		checkErr(t, err, ErrEmptyEntity)
	})
	t.Run("round trip in a struct", func(t *testing.T) {
		type holder struct {
			C Coordinate `msgpack:"c"`
		}
		in := holder{C: MustCoordinate("名前:x", "s p")}
		var out holder
		if err := msgpack.Unmarshal(mustMarshal(t, in), &out); err != nil {
			t.Fatal(err)
		}
		if out != in {
			t.Fatalf("round trip = %v, want %v", out.C, in.C)
		}
	})

	for _, tc := range coordinateDecodeCases(t) {
		t.Run("decode "+tc.name, func(t *testing.T) {
			sentinel := MustCoordinate("unchanged", "unchanged")
			c := sentinel
			err := msgpack.Unmarshal(tc.data, &c)
			switch tc.wantErr {
			case nil:
				checkErr(t, err, nil)
				if c != tc.want {
					t.Fatalf("decoded %v, want %v", c, tc.want)
				}
			case errAny:
				if err == nil {
					t.Fatalf("decoded %v, want an error", c)
				}
			default:
				checkErr(t, err, tc.wantErr)
			}
			if err != nil && c != sentinel {
				t.Fatalf("failed decode changed the coordinate to %v", c)
			}
		})
	}

	t.Run("direct DecodeMsgpack refuses nil", func(t *testing.T) {
		var c Coordinate
		err := c.DecodeMsgpack(msgpack.NewDecoder(bytes.NewReader([]byte{0xc0})))
		if err == nil {
			t.Fatal("nil decoded without error")
		}
	})
}

// Catalogue: DM-08.
func TestDM08_EntityPrefixMatch(t *testing.T) {
	r := RegionEntity("alice")
	tests := []struct {
		entity string
		want   bool
	}{
		{"alice", true},
		{"alice:child", true},
		{"alice:child:grandchild", true},
		{"alice2", false},
		{"alice-prod", false},
		{"al\u0456ce", false},
		{"alic", false},
		{"ali", false},
		{"", false},
		{"bob:alice", false},
		{"Alice", false},
	}
	for _, tc := range tests {
		t.Run(tc.entity, func(t *testing.T) {
			if got := r.matchEntity(tc.entity); got != tc.want {
				t.Fatalf("matchEntity(%q) = %v, want %v", tc.entity, got, tc.want)
			}
			if got := r.Matches(tc.entity, "any-scope", KindData, 0); got != tc.want {
				t.Fatalf("Matches(%q) = %v, want %v", tc.entity, got, tc.want)
			}
		})
	}
	if !RegionAll().matchEntity("") || !RegionAll().matchEntity("anything") {
		t.Fatal("RegionAll does not match every entity")
	}
}

// Catalogue: DM-09.
func TestDM09_EntityAndScopeMatch(t *testing.T) {
	r := RegionEntity("alpha:a").WithScope("room")
	tests := []struct {
		entity, scope string
		want          bool
	}{
		{"alpha:a", "room", true},
		{"alpha:a:child", "room", true},
		{"beta", "room", false},
		{"alpha:aa", "room", false},
		{"alpha:a", "lobby", false},
		{"alpha:a", "room:x", false},
		{"alpha", "room", false},
	}
	for _, tc := range tests {
		t.Run(tc.entity+"@"+tc.scope, func(t *testing.T) {
			if got := r.Matches(tc.entity, tc.scope, KindData, 7); got != tc.want {
				t.Fatalf("Matches = %v, want %v", got, tc.want)
			}
		})
	}
	if !RegionScope("room").Matches("anyone", "room", KindOpenCompleted, 0) {
		t.Fatal("RegionScope does not match its scope")
	}
}

// Catalogue: DM-10.
func TestDM10_KindFilterMatch(t *testing.T) {
	tests := []struct {
		name   string
		filter KindFilter
		kind   Kind
		want   bool
	}{
		{"category f 0xF001", KindCategory(0xF), 0xF001, true},
		{"category f 0xF7FF", KindCategory(0xF), 0xF7FF, true},
		{"category f 0xE001", KindCategory(0xF), 0xE001, false},
		{"category 0 system", KindCategory(0x0), KindOpenCompleted, true},
		{"exact 0xF001", KindExact(0xF001), 0xF001, true},
		{"exact 0xF002", KindExact(0xF001), 0xF002, false},
		{"exact 0xE001", KindExact(0xF001), 0xE001, false},
		{"exact 0x0001", KindExact(0xF001), 0x0001, false},
		{"exact reserved", KindExact(KindOpenCompleted), KindOpenCompleted, true},
		{"any", KindAny(), 0xD001, true},
		{"none", KindFilter{}, 0x0000, true},
		{"category 16 matches nothing", KindCategory(16), 0xF001, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.filter.Matches(tc.kind); got != tc.want {
				t.Fatalf("%v.Matches(%v) = %v, want %v", tc.filter, tc.kind, got, tc.want)
			}
			if got := RegionAll().WithKind(tc.filter).Matches("e", "s", tc.kind, 0); got != tc.want {
				t.Fatalf("Region.Matches = %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("accessors", func(t *testing.T) {
		accessors := []struct {
			f        KindFilter
			mode     KindFilterMode
			kind     Kind
			category uint16
		}{
			{KindFilter{}, KindFilterNone, 0, 0},
			{KindAny(), KindFilterAny, 0, 0},
			{KindExact(0xF001), KindFilterExact, 0xF001, 0},
			{KindCategory(0xA), KindFilterCategory, 0, 0xA},
		}
		for _, a := range accessors {
			if a.f.Mode() != a.mode || a.f.Kind() != a.kind || a.f.Category() != a.category {
				t.Errorf("%v: got (%v, %v, %d), want (%v, %v, %d)",
					a.f, a.f.Mode(), a.f.Kind(), a.f.Category(), a.mode, a.kind, a.category)
			}
		}
		if r := RegionAll().WithCategory(0xA); r.Kind() != KindCategory(0xA) {
			t.Errorf("WithCategory set %v", r.Kind())
		}
		if r := RegionAll().WithExact(0xA007); r.Kind() != KindExact(0xA007) {
			t.Errorf("WithExact set %v", r.Kind())
		}
	})
}

// Catalogue: DM-11.
func TestDM11_ClockRangeAndCategory(t *testing.T) {
	t.Run("inverted", func(t *testing.T) {
		_, err := NewClockRange(9, 3)
		checkErr(t, err, ErrInvertedClockRange)
		var ce *ClockRangeError
		if !errors.As(err, &ce) || *ce != (ClockRangeError{Start: 9, End: 3}) {
			t.Fatalf("error %v, want ClockRangeError{9, 3}", err)
		}
	})
	t.Run("single clock", func(t *testing.T) {
		cr, err := NewClockRange(3, 3)
		checkErr(t, err, nil)
		for clock, want := range map[uint32]bool{2: false, 3: true, 4: false} {
			if got := cr.Contains(clock); got != want {
				t.Errorf("Contains(%d) = %v, want %v", clock, got, want)
			}
		}
	})
	t.Run("inclusive ends", func(t *testing.T) {
		cr, err := NewClockRange(2, 4)
		checkErr(t, err, nil)
		r := RegionAll().WithClock(cr)
		for clock := range uint32(6) {
			want := clock >= 2 && clock <= 4
			if got := r.Matches("e", "s", KindData, clock); got != want {
				t.Errorf("clock %d: Matches = %v, want %v", clock, got, want)
			}
		}
		full := RegionAll().WithClock(ClockRange{Start: 0, End: ^uint32(0)})
		if !full.Matches("e", "s", KindData, ^uint32(0)) || !full.Matches("e", "s", KindData, 0) {
			t.Error("full clock range misses an end")
		}
	})

	tests := []struct {
		name    string
		region  Region
		wantErr error
		check   func(t *testing.T, err error)
	}{
		{
			name:    "category 16 in a region",
			region:  RegionAll().WithCategory(16),
			wantErr: ErrCategoryOutOfRange,
			check: func(t *testing.T, err error) {
				var ce *CategoryError
				if !errors.As(err, &ce) || ce.Category != 16 {
					t.Fatalf("error %v, want CategoryError{16}", err)
				}
			},
		},
		{name: "category 15", region: RegionAll().WithCategory(15)},
		{name: "category 0 may be filtered", region: RegionAll().WithCategory(0)},
		{
			name:    "inverted literal range",
			region:  RegionAll().WithClock(ClockRange{Start: 9, End: 3}),
			wantErr: ErrInvertedClockRange,
			check: func(t *testing.T, err error) {
				var ce *ClockRangeError
				if !errors.As(err, &ce) || *ce != (ClockRangeError{Start: 9, End: 3}) {
					t.Fatalf("error %v, want ClockRangeError{9, 3}", err)
				}
			},
		},
		{name: "equal range", region: RegionAll().WithClock(ClockRange{Start: 3, End: 3})},
		{name: "category before clock", region: RegionAll().WithClock(ClockRange{Start: 9, End: 3}).WithCategory(20), wantErr: ErrCategoryOutOfRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.region.Validate()
			checkErr(t, err, tc.wantErr)
			if tc.wantErr != nil {
				checkErr(t, err, ErrInvalidRegion)
			}
			if tc.check != nil {
				tc.check(t, err)
			}
		})
	}
}

// identityCases are the DM-13 cases (also fuzz seeds).
var identityCases = []struct {
	name   string
	region Region
	want   string
}{
	{"all", RegionAll(), "entity=*|scope=*|fact=none|clock=*"},
	{"entity", RegionEntity("entity:roundtrip"), "entity=entity:roundtrip|scope=*|fact=none|clock=*"},
	{"scope", RegionScope("room"), "entity=*|scope=room|fact=none|clock=*"},
	{"any", RegionAll().WithKind(KindAny()), "entity=*|scope=*|fact=any|clock=*"},
	{"category a", RegionAll().WithCategory(0xA), "entity=*|scope=*|fact=category:a|clock=*"},
	{"category 0", RegionAll().WithKind(KindCategory(0)), "entity=*|scope=*|fact=category:0|clock=*"},
	{"exact a 7", RegionAll().WithExact(mustKind(0xA, 7)), "entity=*|scope=*|fact=exact:a:7|clock=*"},
	{"exact f a01", RegionAll().WithKind(KindExact(mustKind(0xF, 0xA01))), "entity=*|scope=*|fact=exact:f:a01|clock=*"},
	{"exact open completed", RegionAll().WithExact(0x0008), "entity=*|scope=*|fact=exact:0:8|clock=*"},
	{"exact 0", RegionAll().WithExact(0), "entity=*|scope=*|fact=exact:0:0|clock=*"},
	{"clock", RegionAll().WithClock(ClockRange{Start: 1, End: 9}), "entity=*|scope=*|fact=none|clock=1-9"},
	{"clock max", RegionAll().WithClock(ClockRange{Start: 0, End: ^uint32(0)}), "entity=*|scope=*|fact=none|clock=0-4294967295"},
	{"every part", RegionEntity("a").WithScope("s").WithExact(0xF007).WithClock(ClockRange{Start: 1, End: 9}), "entity=a|scope=s|fact=exact:f:7|clock=1-9"},
	{"non-ascii verbatim", RegionEntity("名前:x").WithScope(`a b\c`), `entity=名前:x|scope=a b\c|fact=none|clock=*`},
	{"later builder wins", RegionEntity("a").WithEntity("b").WithCategory(1).WithKind(KindFilter{}), "entity=b|scope=*|fact=none|clock=*"},
}

func mustKind(category, typeID uint16) Kind {
	k, err := NewKind(category, typeID)
	if err != nil {
		panic(err)
	}
	return k
}

// Catalogue: DM-13.
func TestDM13_RegionIdentity(t *testing.T) {
	for _, tc := range identityCases {
		t.Run(tc.name, func(t *testing.T) {
			checkErr(t, tc.region.Validate(), nil)
			if got := tc.region.Identity(); got != tc.want {
				t.Fatalf("Identity() = %q, want %q", got, tc.want)
			}
			if got := tc.region.String(); got != tc.want {
				t.Fatalf("String() = %q, want %q", got, tc.want)
			}
		})
	}
	if RegionAll().Identity() == RegionAll().WithKind(KindAny()).Identity() {
		t.Fatal("none and any share an identity")
	}
	t.Run("builders copy", func(t *testing.T) {
		base := RegionEntity("a")
		_ = base.WithScope("s").WithExact(KindData).WithClock(ClockRange{Start: 1, End: 2})
		if got := base.Identity(); got != "entity=a|scope=*|fact=none|clock=*" {
			t.Fatalf("builder changed its receiver: %q", got)
		}
	})
	t.Run("accessors", func(t *testing.T) {
		r := RegionEntity("a").WithScope("s").WithClock(ClockRange{Start: 1, End: 9})
		if p, ok := r.EntityPrefix(); !ok || p != "a" {
			t.Errorf("EntityPrefix() = %q, %v", p, ok)
		}
		if s, ok := r.Scope(); !ok || s != "s" {
			t.Errorf("Scope() = %q, %v", s, ok)
		}
		if c, ok := r.Clock(); !ok || c != (ClockRange{Start: 1, End: 9}) {
			t.Errorf("Clock() = %v, %v", c, ok)
		}
		all := RegionAll()
		_, okE := all.EntityPrefix()
		_, okS := all.Scope()
		_, okC := all.Clock()
		if okE || okS || okC || all.Kind().Mode() != KindFilterNone {
			t.Error("RegionAll has a part set")
		}
	})
}

// Catalogue: DM-14.
func TestDM14_RegionValidation(t *testing.T) {
	tests := []struct {
		name    string
		region  Region
		wantErr error
	}{
		{name: "prefix star", region: RegionEntity("*"), wantErr: ErrEntityPrefixStar},
		{name: "prefix empty", region: RegionEntity(""), wantErr: ErrEmptyEntity},
		{name: "prefix injection", region: RegionEntity("a|scope=x"), wantErr: ErrForbiddenSeparator},
		{name: "scope traversal", region: RegionScope("a/b"), wantErr: ErrPathTraversal},
		{name: "prefix too long", region: RegionEntity(kibPlus1), wantErr: ErrEntityTooLong},
		{name: "prefix control", region: RegionEntity("a\x01"), wantErr: ErrControlChar},
		{name: "prefix star with control", region: RegionEntity("*\x00"), wantErr: ErrNulByte},
		{name: "scope empty", region: RegionScope(""), wantErr: ErrEmptyScope},
		{name: "scope too long", region: RegionScope(kibPlus1), wantErr: ErrScopeTooLong},
		{name: "scope star", region: RegionScope("*"), wantErr: ErrScopeStar},
		{name: "prefix before scope", region: RegionEntity("*").WithScope("a/b"), wantErr: ErrEntityPrefixStar},
		{name: "scope before category", region: RegionScope("").WithCategory(99), wantErr: ErrEmptyScope},
		{name: "prefix with star inside", region: RegionEntity("a*")},
		{name: "star prefix of longer", region: RegionEntity("*:x")},
		{name: "scope with star inside", region: RegionScope("**")},
		{name: "all", region: RegionAll()},
		{name: "1024-byte prefix", region: RegionEntity(kib).WithScope(kib)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.region.Validate()
			checkErr(t, err, tc.wantErr)
			if tc.wantErr != nil {
				checkErr(t, err, ErrInvalidRegion)
			}
		})
	}

	t.Run("typed errors", func(t *testing.T) {
		err := RegionEntity(kibPlus1).Validate()
		var le *LengthError
		if !errors.As(err, &le) || le.Len != 1025 || le.Max != 1024 {
			t.Fatalf("error %v, want LengthError{1025, 1024}", err)
		}
		err = RegionEntity("a|scope=x").Validate()
		var ce *ComponentError
		if !errors.As(err, &ce) || ce.Field != "entity prefix" || ce.Offset != 1 {
			t.Fatalf("error %v, want a ComponentError on the entity prefix at byte 1", err)
		}
	})
}

// Catalogue: DM-15.
func TestDM15_KindConstruction(t *testing.T) {
	tests := []struct {
		name             string
		category, typeID uint16
		want             Kind
		wantErr          error
	}{
		{name: "data", category: 1, typeID: 0, want: KindData},
		{name: "product", category: 0xA, typeID: 7, want: 0xA007},
		{name: "highest", category: 0xF, typeID: 0xFFF, want: 0xFFFF},
		{name: "category e", category: 0xE, typeID: 1, want: 0xE001},
		{name: "category 16", category: 16, typeID: 1, wantErr: ErrCategoryOutOfRange},
		{name: "system", category: 0, typeID: 1, wantErr: ErrReservedSystemCategory},
		{name: "effect", category: 0xD, typeID: 1, wantErr: ErrReservedEffectCategory},
		{name: "type id", category: 1, typeID: 0x1000, wantErr: ErrTypeIDOutOfRange},
		{name: "category before type id", category: 16, typeID: 0x1000, wantErr: ErrCategoryOutOfRange},
		{name: "system before type id", category: 0, typeID: 0x1000, wantErr: ErrReservedSystemCategory},
		{name: "effect before type id", category: 0xD, typeID: 0xFFFF, wantErr: ErrReservedEffectCategory},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := NewKind(tc.category, tc.typeID)
			checkErr(t, err, tc.wantErr)
			if tc.wantErr == nil && k != tc.want {
				t.Fatalf("NewKind = %v, want %v", k, tc.want)
			}
		})
	}

	t.Run("category error fields", func(t *testing.T) {
		_, err := NewKind(16, 1)
		var ce *CategoryError
		if !errors.As(err, &ce) || ce.Category != 16 {
			t.Fatalf("error %v, want CategoryError{16}", err)
		}
	})

	t.Run("parts and names", func(t *testing.T) {
		k := Kind(0xF7FF)
		if k.Category() != 0xF || k.TypeID() != 0x7FF {
			t.Fatalf("0xF7FF splits into %#x, %#x", k.Category(), k.TypeID())
		}
		for k, want := range map[Kind]string{KindData: "0x1000", KindOpenCompleted: "0x0008", KindError: "0xd001", 0xA007: "0xa007"} {
			if got := k.String(); got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
		}
	})

	t.Run("reserved constants", func(t *testing.T) {
		reserved := []Kind{
			KindInit, KindShutdown, KindHeartbeat, KindConfigChange, KindCheckpoint,
			KindBatchBegin, KindBatchCommit, KindOpenCompleted, KindCloseCompleted,
			KindDenial, KindTombstone,
			KindError, KindRetry, KindAck, KindBackpressure, KindCancel, KindConflict,
		}
		for _, k := range reserved {
			if !k.IsReserved() {
				t.Errorf("%v is not reserved", k)
			}
		}
		for _, k := range []Kind{KindData, 0xC123, 0xE001, 0xFFFF} {
			if k.IsReserved() {
				t.Errorf("%v is reserved", k)
			}
		}
	})

	t.Run("append of a reserved kind", func(t *testing.T) {
		batch := []Kind{KindData, KindOpenCompleted, KindError}
		var err error
		for i, k := range batch {
			if err = k.CheckAppendable(i); err != nil {
				break
			}
		}
		checkErr(t, err, ErrReservedKind)
		var re *ReservedKindError
		if !errors.As(err, &re) || re.Index != 1 || re.Kind != KindOpenCompleted {
			t.Fatalf("error %v, want ReservedKindError{Index: 1, Kind: 0x0008}", err)
		}
		checkErr(t, KindData.CheckAppendable(0), nil)
		checkErr(t, Kind(0xD001).CheckAppendable(3), ErrReservedKind)
	})
}
