package engine

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRegion(t *testing.T) {
	all := RegionAll().Identity()
	tests := []struct {
		name    string
		spec    string
		want    string // the region's identity
		wantErr error  // matched with errors.Is, when set
		wantMsg string // a substring of the error, when set
	}{
		{name: "empty", spec: "", want: all},
		{name: "blank", spec: "  ", want: all},
		{name: "all", spec: "all", want: all},
		{name: "entity", spec: "entity=order", want: "entity=order|scope=*|fact=none|clock=*"},
		{name: "entity with a child part", spec: "entity=order:17", want: "entity=order:17|scope=*|fact=none|clock=*"},
		{name: "scope", spec: "scope=shop", want: "entity=*|scope=shop|fact=none|clock=*"},
		{name: "kind hex", spec: "kind=0x1001", want: "entity=*|scope=*|fact=exact:1:1|clock=*"},
		{name: "kind decimal", spec: "kind=4097", want: "entity=*|scope=*|fact=exact:1:1|clock=*"},
		{name: "reserved kind may be named", spec: "kind=0xd001", want: "entity=*|scope=*|fact=exact:d:1|clock=*"},
		{name: "category decimal", spec: "category=2", want: "entity=*|scope=*|fact=category:2|clock=*"},
		{name: "category hex", spec: "category=0xa", want: "entity=*|scope=*|fact=category:a|clock=*"},
		{name: "clock", spec: "clock=3-9", want: "entity=*|scope=*|fact=none|clock=3-9"},
		{name: "clock of one", spec: "clock=5-5", want: "entity=*|scope=*|fact=none|clock=5-5"},
		{name: "everything", spec: "entity=order:17,scope=shop,kind=0x1001,clock=3-9", want: "entity=order:17|scope=shop|fact=exact:1:1|clock=3-9"},
		{name: "spaces around keys", spec: " scope=shop, entity=order", want: "entity=order|scope=shop|fact=none|clock=*"},

		{name: "not key=value", spec: "entity", wantMsg: `"entity" is not key=value`},
		{name: "unknown key", spec: "owner=me", wantMsg: `unknown key "owner"`},
		{name: "duplicate key", spec: "entity=a,entity=b", wantMsg: "entity given twice"},
		{name: "kind and category", spec: "kind=0x1001,category=1", wantMsg: "kind and category are exclusive"},
		{name: "kind too big", spec: "kind=0x10000", wantMsg: `kind "0x10000"`},
		{name: "kind not a number", spec: "kind=data", wantMsg: `kind "data"`},
		{name: "category not a number", spec: "category=two", wantMsg: `category "two"`},
		{name: "clock without dash", spec: "clock=3", wantMsg: `clock "3"`},
		{name: "clock not numbers", spec: "clock=a-b", wantMsg: `clock "a-b"`},
		{name: "clock negative", spec: "clock=-1-3", wantMsg: `clock "-1-3"`},
		{name: "entity prefix star", spec: "entity=*", wantErr: ErrEntityPrefixStar},
		{name: "entity prefix star is an invalid region", spec: "entity=*", wantErr: ErrInvalidRegion},
		{name: "scope star", spec: "scope=*", wantErr: ErrScopeStar},
		{name: "empty entity", spec: "entity=", wantErr: ErrEmptyEntity},
		{name: "category out of range", spec: "category=16", wantErr: ErrInvalidRegion},
		{name: "inverted clock", spec: "clock=9-3", wantErr: ErrInvertedClockRange},
		{name: "entity with a separator", spec: "entity=a|b", wantErr: ErrForbiddenSeparator},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRegion(tt.spec)
			if tt.wantErr != nil || tt.wantMsg != "" {
				if err == nil {
					t.Fatalf("ParseRegion(%q) = %s, want an error", tt.spec, got.Identity())
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("ParseRegion(%q) = %v, want %v", tt.spec, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("ParseRegion(%q) = %q, want it to contain %q", tt.spec, err, tt.wantMsg)
				}
				if !errors.Is(err, ErrInvalidRegion) {
					t.Errorf("ParseRegion(%q) = %v, want it to match ErrInvalidRegion", tt.spec, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRegion(%q): %v", tt.spec, err)
			}
			if got.Identity() != tt.want {
				t.Errorf("ParseRegion(%q) = %s, want %s", tt.spec, got.Identity(), tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("ParseRegion(%q) returned an invalid region: %v", tt.spec, err)
			}
			back, err := ParseRegion(got.Spec())
			if err != nil || back.Identity() != got.Identity() {
				t.Errorf("ParseRegion(%q).Spec() = %q reads back as %s, %v", tt.spec, got.Spec(), back.Identity(), err)
			}
		})
	}
}

func TestParseRegionMatches(t *testing.T) {
	r, err := ParseRegion("entity=order,category=1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		entity string
		kind   Kind
		want   bool
	}{
		{"order", 0x1001, true},
		{"order:7", 0x1fff, true},
		{"orders", 0x1001, false},
		{"user:7", 0x1001, false},
		{"order:7", 0x2001, false},
	} {
		if got := r.Matches(tt.entity, "s", tt.kind, 0); got != tt.want {
			t.Errorf("Matches(%s, %#x) = %v, want %v", tt.entity, uint16(tt.kind), got, tt.want)
		}
	}
}
