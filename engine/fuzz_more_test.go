package engine

import (
	"errors"
	"strings"
	"testing"
)

// Region identities come back from outside the process (checkpoint and
// group records in KV, the wire's region field is validated by the same
// rules); the region syntax from flags and fleet.WorkerOptions.

// FuzzParseRegionIdentity: any string either parses to a valid region
// whose identity is that very string, or is refused with ErrInvalidRegion.
func FuzzParseRegionIdentity(f *testing.F) {
	for _, s := range []string{
		"entity=*|scope=*|fact=none|clock=*",
		"entity=a|scope=s|fact=exact:f:7|clock=1-9",
		"entity=order|scope=shop|fact=category:1|clock=*|part=3/16",
		"entity=*|scope=*|fact=any|clock=4294967295-4294967295",
		"entity=*|scope=*|fact=category:10|clock=*",
		"entity=*|scope=*|fact=exact:0:0|clock=*",
		"entity=*|scope=*|fact=none|clock=*|part=0/0",
		"entity=|scope=*|fact=none|clock=*",
		"entity=a/b|scope=*|fact=none|clock=9-3",
		"", "|||", "entity=*|scope=*|fact=none|clock=-",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRegionIdentity(s)
		if err != nil {
			if !isInvalidRegion(err) {
				t.Fatalf("error %v does not match ErrInvalidRegion", err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("%q parsed to an invalid region: %v", s, err)
		}
		if r.Identity() != s {
			t.Fatalf("%q parsed to a region of identity %q", s, r.Identity())
		}
	})
}

// FuzzParseRegion: any spec either parses to a valid region whose Spec
// parses back to the same region, or is refused with ErrInvalidRegion.
func FuzzParseRegion(f *testing.F) {
	for _, s := range []string{
		"", "all", "entity=order:17,scope=shop,kind=0x1001,clock=3-9", "category=0xf", "part=1/4",
		"entity=*", "kind=1,category=1", "clock=9-3", "entity=a,entity=b", "x=1", "entity", " scope = s ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		r, err := ParseRegion(spec)
		if err != nil {
			if !isInvalidRegion(err) {
				t.Fatalf("error %v does not match ErrInvalidRegion", err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("%q parsed to an invalid region: %v", spec, err)
		}
		again, err := ParseRegion(r.Spec())
		if err != nil || again != r {
			t.Fatalf("%q: Spec %q parses to %v, %v; want %v", spec, r.Spec(), again.Identity(), err, r.Identity())
		}
	})
}

func isInvalidRegion(err error) bool { return errors.Is(err, ErrInvalidRegion) }

// TestParseID128DoesNotQuoteLongInput: ids come from peers (a pull's
// incarnation, records in KV). ParseID128 quoted a wrong-length input in
// its error: 300,000 NUL bytes made a 1.2 MB message, and the writer's
// refusal of such a pull did not fit a NATS message (TestWireAbuse).
func TestParseID128DoesNotQuoteLongInput(t *testing.T) {
	_, err := ParseID128(strings.Repeat("\x00", 300_000))
	if err == nil || len(err.Error()) > 100 {
		t.Fatalf("ParseID128 of 300,000 bytes: an error of %d bytes, want a short one", len(err.Error()))
	}
}

// FuzzParseID128: an id parses iff it is 32 hex digits, and then prints
// as those digits in lower case; an error never quotes more than the 32
// bytes of a right-length input.
func FuzzParseID128(f *testing.F) {
	for _, s := range []string{"0123456789abcdef0123456789abcdef", "0123456789ABCDEF0123456789ABCDEF", "", "xyz", strings.Repeat("0", 31) + "g"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID128(s)
		if err != nil {
			if len(err.Error()) > 200 {
				t.Fatalf("an error of %d bytes", len(err.Error()))
			}
			return
		}
		if id.String() != strings.ToLower(s) {
			t.Fatalf("%q parsed to %s", s, id)
		}
	})
}
