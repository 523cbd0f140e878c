package wire_test

import (
	"errors"
	"math"
	"testing"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet/internal/wire"
	"github.com/batfleet/batfleet/fleet/internal/wire/wiretest"
)

func sampleCountRequests() []wire.CountRequest {
	var out []wire.CountRequest
	for _, p := range samplePullRequests() {
		out = append(out, wire.CountRequest{Region: p.Region, Position: p.Position, Started: p.Started})
	}
	return out
}

// A count request and its reply survive a round trip; the subject sits
// beside the journal's other subjects.
func TestCountRoundTrip(t *testing.T) {
	for _, req := range sampleCountRequests() {
		got, err := wire.DecodeCountRequest(wire.EncodeCountRequest(req))
		if err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		if got != req {
			t.Errorf("round trip: got %+v, want %+v", got, req)
		}
	}
	reply := wire.CountReply{JournalID: engine.ID128{1, 2}, Incarnation: engine.ID128{3}, Epoch: 7, Visible: 1 << 40,
		Count: math.MaxUint64, OldestMs: -1}
	got, err := wire.DecodeCountReply(wire.EncodeCountReply(reply))
	if err != nil || got != reply {
		t.Errorf("reply round trip: %+v, %v; want %+v", got, err, reply)
	}
	if s := wire.CountSubject("main"); s != "batfleet.main.count" {
		t.Errorf("count subject %q", s)
	}
}

// Bad count requests are refused naming the field: a missing or unknown
// version, a bad region, wrong types, a body that is not a map.
func TestBadCountRequests(t *testing.T) {
	valid := wiretest.MPKV{"v", 1, "region", wiretest.MPKV{"entity", "order:"}, "position", 5, "started", true}
	for _, c := range []struct {
		name  string
		body  []byte
		field string
	}{
		{"empty", nil, "body"},
		{"not a map", wiretest.MP(t, []int{1}), "body"},
		{"no v", wiretest.MP(t, valid.Without("v")), "v"},
		{"v 2", wiretest.MP(t, valid.With("v", 2)), "v"},
		{"position negative", wiretest.MP(t, valid.With("position", -1)), "position"},
		{"position string", wiretest.MP(t, valid.With("position", "5")), "position"},
		{"started int", wiretest.MP(t, valid.With("started", 1)), "started"},
		{"region scope *", wiretest.MP(t, valid.With("region", wiretest.MPKV{"scope", "*"})), "region"},
		{"region kind too big", wiretest.MP(t, valid.With("region", wiretest.MPKV{"kind", 1 << 20})), "region"},
		{"deep nesting", append(wire.AppendStr(wire.AppendUint(wire.AppendStr(wire.AppendMapLen(nil, 2), "v"), 1), "x"), wiretest.Nested(10000)...), "x"},
	} {
		_, err := wire.DecodeCountRequest(c.body)
		var re *wire.RequestError
		if !errors.As(err, &re) {
			t.Errorf("%s: %v, want a *RequestError", c.name, err)
			continue
		}
		if c.field != "" && re.Field != c.field && !(c.field == "region" && len(re.Field) >= 6 && re.Field[:6] == "region") {
			t.Errorf("%s: field %q (%v), want %q", c.name, re.Field, re, c.field)
		}
		if re.Code != 400 {
			t.Errorf("%s: code %d", c.name, re.Code)
		}
	}
	if _, err := wire.DecodeCountRequest(wiretest.MP(t, valid)); err != nil {
		t.Errorf("valid request refused: %v", err)
	}
}

// FuzzCountRequestDecode: any input either decodes to a valid request
// that survives a round trip unchanged, or is refused with a
// *RequestError. Never a panic.
func FuzzCountRequestDecode(f *testing.F) {
	for _, r := range sampleCountRequests() {
		f.Add(wire.EncodeCountRequest(r))
	}
	for _, c := range wiretest.BadPullCases(f) {
		f.Add(c.Body)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := wire.DecodeCountRequest(data)
		if err != nil {
			checkRequestError(t, err)
			return
		}
		again, err := wire.DecodeCountRequest(wire.EncodeCountRequest(req))
		if err != nil || again != req {
			t.Fatalf("round trip: %+v, %v; first %+v", again, err, req)
		}
	})
}

// FuzzCountReplyDecode: a reply from the wire never panics the client.
func FuzzCountReplyDecode(f *testing.F) {
	f.Add(wire.EncodeCountReply(wire.CountReply{Count: 3, OldestMs: 5}))
	f.Add([]byte{0x81, 0xa1, 'v', 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		if c, err := wire.DecodeCountReply(data); err == nil {
			if again, err := wire.DecodeCountReply(wire.EncodeCountReply(c)); err != nil || again != c {
				t.Fatalf("round trip: %+v, %v; first %+v", again, err, c)
			}
		}
	})
}
