package engine

import (
	"errors"
	"testing"
)

func TestParseRegionIdentityRoundTrip(t *testing.T) {
	cr, _ := NewClockRange(1, 9)
	regions := []Region{
		RegionAll(), RegionAll().WithKind(KindAny()), RegionEntity("entity:roundtrip"),
		RegionScope("s"), RegionAll().WithCategory(0xA), RegionAll().WithExact(0xF007),
		RegionAll().WithExact(KindOpenCompleted),
		RegionEntity("a").WithScope("s").WithExact(0xF007).WithClock(cr),
		RegionEntity("名前:x y").WithScope(`a\b*>`),
	}
	for _, r := range regions {
		got, err := ParseRegionIdentity(r.Identity())
		if err != nil {
			t.Fatalf("parse %q: %v", r.Identity(), err)
		}
		if got.Identity() != r.Identity() {
			t.Fatalf("parse %q gave %q", r.Identity(), got.Identity())
		}
	}
	for _, bad := range []string{
		"", "entity=*|scope=*|fact=none", "entity=*|scope=*|fact=bogus|clock=*",
		"entity=*|scope=*|fact=none|clock=9-3", "entity=a/b|scope=*|fact=none|clock=*",
		"entity=*|scope=*|fact=exact:10:1|clock=*", "scope=*|entity=*|fact=none|clock=*",
		"entity=*|scope=*|fact=category:0a|clock=*",
	} {
		if _, err := ParseRegionIdentity(bad); !errors.Is(err, ErrInvalidRegion) {
			t.Errorf("parse %q = %v, want ErrInvalidRegion", bad, err)
		}
	}
}
