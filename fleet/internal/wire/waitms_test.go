package wire_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet/internal/wire"
	"github.com/batfleet/batfleet/fleet/internal/wire/wiretest"
)

// Held pulls (SPEC §15) on the wire: the pull request's optional wait_ms.

// v1PullBody is a pull request as protocol v1 writes it, before wait_ms:
// six keys in this order, integers in their shortest form.
func v1PullBody(t testing.TB, r wire.PullRequest) []byte {
	t.Helper()
	region := wiretest.MPKV{}
	if e, ok := r.Region.EntityPrefix(); ok {
		region = append(region, "entity", e)
	}
	if s, ok := r.Region.Scope(); ok {
		region = append(region, "scope", s)
	}
	switch f := r.Region.Kind(); f.Mode() {
	case engine.KindFilterExact:
		region = append(region, "kind", uint64(f.Kind()))
	case engine.KindFilterCategory:
		region = append(region, "category", uint64(f.Category()))
	}
	if cr, ok := r.Region.Clock(); ok {
		region = append(region, "clock_min", uint64(cr.Start), "clock_max", uint64(cr.End))
	}
	return canonical(t, wiretest.MP(t, wiretest.MPKV{
		"v", uint64(wire.ProtocolVersion), "region", region, "position", r.Position, "started", r.Started,
		"max", int64(r.Max), "max_bytes", int64(r.MaxBytes),
	}))
}

// A request without wait_ms (0) encodes to exactly the bytes of protocol
// v1, so a writer that predates held pulls reads it as before; with
// wait_ms it is those bytes with one more key at the end.
func TestPullRequestWithoutWaitMsIsV1(t *testing.T) {
	// One pinned by hand.
	golden := wire.PullRequest{Region: engine.RegionEntity("order"), Position: 5, Started: true, Max: 10}
	const v1 = "\x86\xa1v\x01\xa6region\x81\xa6entity\xa5order\xa8position\x05\xa7started\xc3\xa3max\x0a\xa9max_bytes\x00"
	if got := wire.EncodePullRequest(golden); string(got) != v1 {
		t.Errorf("v1 request encodes to\n % x\nwant\n % x", got, []byte(v1))
	}
	golden.WaitMs = 1500
	if got, want := wire.EncodePullRequest(golden), "\x87"+v1[1:]+"\xa7wait_ms\xcd\x05\xdc"; string(got) != want {
		t.Errorf("request with wait_ms 1500 encodes to\n % x\nwant\n % x", got, []byte(want))
	}

	for i, req := range samplePullRequests() {
		t.Run(fmt.Sprintf("%d/%s", i, req.Region.Identity()), func(t *testing.T) {
			if req.WaitMs != 0 {
				t.Fatalf("sample has wait_ms %d", req.WaitMs)
			}
			b := wire.EncodePullRequest(req)
			if want := v1PullBody(t, req); !bytes.Equal(b, want) {
				t.Fatalf("without wait_ms:\n got  % x\n want % x (v1)", b, want)
			}
			held := req
			held.WaitMs = 30000
			hb := wire.EncodePullRequest(held)
			if hb[0] != b[0]+1 || !bytes.Equal(hb[1:len(b)], b[1:]) {
				t.Fatalf("with wait_ms the v1 bytes change:\n v1   % x\n held % x", b, hb)
			}
			if tail := hb[len(b):]; !bytes.Equal(tail, append(wire.AppendStr(nil, "wait_ms"), 0xcd, 0x75, 0x30)) {
				t.Fatalf("wait_ms is encoded as % x", tail)
			}
		})
	}
}

// wait_ms survives an encode/decode round trip at every width, in the
// shortest encoding (as msgpack/v5 writes it); a body from another
// encoder is read whatever the key's place and the integer's width; an
// explicit 0 is the same request as none.
func TestPullRequestWaitMsRoundTrip(t *testing.T) {
	waits := []uint32{1, 127, 128, 255, 256, 30000, 65535, 65536, math.MaxUint32}
	for i, base := range samplePullRequests() {
		req := base
		req.WaitMs = waits[i%len(waits)]
		t.Run(fmt.Sprintf("%d/wait_ms=%d", i, req.WaitMs), func(t *testing.T) {
			b := wire.EncodePullRequest(req)
			got, err := wire.DecodePullRequest(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got != req {
				t.Fatalf("round trip:\n got  %+v\n want %+v", got, req)
			}
			checkCanonical(t, b)
			m := mpDecode(t, b)
			wantKeys(t, "pull request", m, "v", "region", "position", "started", "max", "max_bytes", "wait_ms")
			if w := asUint(t, m["wait_ms"]); w != uint64(req.WaitMs) {
				t.Errorf("wait_ms = %d, want %d", w, req.WaitMs)
			}
		})
	}

	for _, c := range []struct {
		name string
		body []byte
		want uint32
	}{
		{"fixint", wiretest.MP(t, wiretest.ValidPull().With("wait_ms", 100)), 100},
		{"uint64 width", wiretest.MP(t, wiretest.ValidPull().With("wait_ms", uint64(1500))), 1500},
		{"int64 width", wiretest.MP(t, wiretest.ValidPull().With("wait_ms", int64(1500))), 1500},
		{"max uint32", wiretest.MP(t, wiretest.ValidPull().With("wait_ms", uint64(math.MaxUint32))), math.MaxUint32},
		{"first key", wiretest.MP(t, append(wiretest.MPKV{"wait_ms", 250}, wiretest.ValidPull()...)), 250},
		{"explicit 0", wiretest.MP(t, wiretest.ValidPull().With("wait_ms", 0)), 0},
	} {
		req, err := wire.DecodePullRequest(c.body)
		if err != nil || req.WaitMs != c.want {
			t.Errorf("%s: wait_ms %d (%v), want %d", c.name, req.WaitMs, err, c.want)
			continue
		}
		if c.want == 0 {
			if b := wire.EncodePullRequest(req); !bytes.Equal(b, v1PullBody(t, req)) {
				t.Errorf("%s: re-encoded as % x, want the v1 bytes", c.name, b)
			}
		}
	}
}

// A pull's region carries a consumer group's partition as part and parts;
// both are required together, and an invalid one is a 400 naming the
// field.
func TestPullRequestPartition(t *testing.T) {
	r := engine.RegionEntity("order").WithPartition(engine.Partition{Index: 3, Count: 16})
	got, err := wire.DecodePullRequest(wire.EncodePullRequest(wire.PullRequest{Region: r, Max: 1}))
	if err != nil || got.Region != r {
		t.Fatalf("round trip: %+v, %v", got.Region, err)
	}
	for _, tc := range []struct {
		region wiretest.MPKV
		field  string
	}{
		{wiretest.MPKV{"part", 1}, "region.parts"},
		{wiretest.MPKV{"parts", 16}, "region.part"},
		{wiretest.MPKV{"part", 16, "parts", 16}, "region.part"},
		{wiretest.MPKV{"part", 0, "parts", 2048}, "region.parts"},
		{wiretest.MPKV{"part", 0, "parts", 3}, "region"},
		{wiretest.MPKV{"part", "x", "parts", 2}, "region.part"},
	} {
		_, err := wire.DecodePullRequest(wiretest.MP(t, wiretest.ValidPull().With("region", tc.region)))
		var re *wire.RequestError
		if !errors.As(err, &re) || re.Field != tc.field || re.Code != 400 {
			t.Errorf("region %v: %v, want a 400 naming %s", tc.region, err, tc.field)
		}
	}
}
