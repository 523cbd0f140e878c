package checkpoint

import (
	"errors"
	"strings"
	"testing"

	"github.com/batfleet/batfleet/engine"
)

// A region mismatch names both regions as --region takes them (issue 16,
// defect 13), not in their stored identity form.
func TestRegionMismatchErrorPrintsRegionsAsTyped(t *testing.T) {
	stored := engine.RegionEntity("order").WithExact(0x1001).Identity()
	bad := "not|an|identity"
	for _, c := range []struct {
		err  *RegionMismatchError
		want string
	}{
		{&RegionMismatchError{Location: "kv:b/k", Stored: &stored, Expected: engine.RegionAll().Identity()},
			"at kv:b/k: stored entity=order,kind=0x1001, expected all"},
		{&RegionMismatchError{Location: "kv:b/k", Expected: engine.RegionEntity("user").Identity()},
			"stored none, expected entity=user"},
		{&RegionMismatchError{Location: "kv:b/k", Stored: &bad, Expected: engine.RegionEntity("user").Identity()},
			`stored "not|an|identity", expected entity=user`},
	} {
		text := c.err.Error()
		if !strings.Contains(text, c.want) || !errors.Is(c.err, ErrRegionMismatch) {
			t.Errorf("%q: want it to contain %q", text, c.want)
		}
		if strings.Contains(text, "fact=") {
			t.Errorf("%q prints an identity", text)
		}
	}
}
