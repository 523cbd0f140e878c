package wire_test

import (
	"errors"
	"math"
	"testing"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet/internal/wire"
	"github.com/batfleet/batfleet/fleet/internal/wire/wiretest"
)

// fuzzMaxEvents is the event limit the append fuzzer decodes with: small,
// so the 413 path is reachable too.
const fuzzMaxEvents = 64

// FuzzPullRequestDecode: any input either decodes to a valid request that
// survives an encode/decode round trip unchanged, or is refused with a
// *RequestError naming a field, code 400 or 413. Never a panic.
func FuzzPullRequestDecode(f *testing.F) {
	for _, c := range wiretest.BadPullCases(f) {
		f.Add(c.Body)
	}
	for i, r := range samplePullRequests() {
		f.Add(wire.EncodePullRequest(r))
		// Held pulls (SPEC §15): wait_ms in every width.
		r.WaitMs = []uint32{1, 127, 128, 30000, 65536, math.MaxUint32}[i%6]
		f.Add(wire.EncodePullRequest(r))
	}
	f.Add(wiretest.MP(f, wiretest.ValidPull()))
	for _, w := range []any{0, 1500, uint64(1500), int64(1500), uint64(math.MaxUint32), uint64(math.MaxUint32) + 1, -1, "1500", 1.5, nil} {
		f.Add(wiretest.MP(f, wiretest.ValidPull().With("wait_ms", w)))
	}
	f.Add(wiretest.MP(f, append(wiretest.MPKV{"wait_ms", 1500}, wiretest.ValidPull()...)))
	f.Add(wiretest.MP(f, wiretest.ValidPull().With("wait_ms", 1).With("wait_ms2", 2)))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := wire.DecodePullRequest(data)
		if err != nil {
			checkRequestError(t, err)
			return
		}
		if err := req.Region.Validate(); err != nil {
			t.Fatalf("decoded an invalid region %q: %v", req.Region.Identity(), err)
		}
		if req.Max < 1 || req.Max > wire.MaxPullEntries || req.MaxBytes < 0 {
			t.Fatalf("decoded out-of-range limits: %+v", req)
		}
		again, err := wire.DecodePullRequest(wire.EncodePullRequest(req))
		if err != nil {
			t.Fatalf("re-encoded request refused: %v (%+v)", err, req)
		}
		if again != req {
			t.Fatalf("round trip changed the request:\n first  %+v\n second %+v", req, again)
		}
	})
}

// FuzzAppendRequestDecode: as FuzzPullRequestDecode, for append requests.
func FuzzAppendRequestDecode(f *testing.F) {
	for _, c := range wiretest.BadAppendCases(f) {
		f.Add(c.Body)
	}
	f.Add(wiretest.AppendBody(f, wiretest.ValidEvent()))
	f.Add(wiretest.AppendBody(f, wiretest.ValidEvent(), wiretest.ValidEvent().With("idempotency_key", make([]byte, 16))))
	key := engine.DeriveIdempotencyKey("fuzz")
	f.Add(wire.EncodeAppendRequest([]engine.Event{
		{Coordinate: engine.MustCoordinate("order:1", "shop"), Kind: 0x1001, Payload: []byte("x"), Key: key},
	}))
	f.Add(wire.EncodeAppendRequest([]engine.Event{
		{Coordinate: engine.MustCoordinate("a", "s"), Kind: 0xF007},
		{Coordinate: engine.MustCoordinate("b:c", "s"), Kind: 0x0008, Payload: []byte{1, 2, 3}},
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		events, err := wire.DecodeAppendRequest(data, fuzzMaxEvents)
		if err != nil {
			checkRequestError(t, err)
			return
		}
		if len(events) == 0 || len(events) > fuzzMaxEvents {
			t.Fatalf("decoded %d events", len(events))
		}
		for i, ev := range events {
			if _, err := engine.NewCoordinate(ev.Coordinate.Entity(), ev.Coordinate.Scope()); err != nil {
				t.Fatalf("event %d has an invalid coordinate: %v", i, err)
			}
		}
		again, err := wire.DecodeAppendRequest(wire.EncodeAppendRequest(events), fuzzMaxEvents)
		if err != nil {
			t.Fatalf("re-encoded request refused: %v", err)
		}
		if !eventsEqual(again, events) {
			t.Fatalf("round trip changed the events:\n first  %+v\n second %+v", events, again)
		}
	})
}

// FuzzPullReplyDecode: a reply decoder (the client side, fed by whatever
// answers on the subject) never panics; what it accepts re-encodes to the
// same reply.
func FuzzPullReplyDecode(f *testing.F) {
	for _, r := range []wire.PullReply{
		{JournalID: id128(1), Incarnation: id128(2), Epoch: 3, Visible: 4},
		{JournalID: id128(1), Incarnation: id128(2), Epoch: 3, Visible: 1<<40 + 1, Entries: sampleEntries(f),
			Cancelled: []engine.Range{{Start: 2, End: 3}, {Start: 7, End: 9}}},
	} {
		b := wire.EncodePullReply(&r)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{0x80})
	f.Add([]byte{0xc1})
	f.Add(wiretest.MP(f, wiretest.MPKV{"v", 1, "entries", []any{wiretest.MPKV{"x", 1}}, "cancelled", []any{[]any{1}}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		reply, err := wire.DecodePullReply(data)
		if err != nil {
			return
		}
		again, err := wire.DecodePullReply(wire.EncodePullReply(reply))
		if err != nil {
			t.Fatalf("re-encoded reply refused: %v", err)
		}
		if again.JournalID != reply.JournalID || again.Incarnation != reply.Incarnation || again.Epoch != reply.Epoch ||
			again.Visible != reply.Visible || !entriesEqual(again.Entries, reply.Entries) || !rangesEqual(again.Cancelled, reply.Cancelled) {
			t.Fatalf("round trip changed the reply:\n first  %+v\n second %+v", reply, again)
		}
	})
}

func checkRequestError(t *testing.T, err error) {
	t.Helper()
	var re *wire.RequestError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *RequestError", err, err)
	}
	// Field may be "" only when the offending key itself is "".
	if re.Rule == "" || (re.Code != 400 && re.Code != 413) {
		t.Fatalf("request error without a rule or a 400/413 code: %+v", re)
	}
}
