package fleet

import (
	"errors"
	"testing"

	"github.com/batfleet/batfleet/engine"
)

// fuzzMaxEvents is the event limit the append fuzzer decodes with: small,
// so the 413 path is reachable too.
const fuzzMaxEvents = 64

// FuzzPullRequestDecode: any input either decodes to a valid request that
// survives an encode/decode round trip unchanged, or is refused with a
// *RequestError naming a field, code 400 or 413. Never a panic.
func FuzzPullRequestDecode(f *testing.F) {
	for _, c := range badPullCases(f) {
		f.Add(c.body)
	}
	for _, r := range samplePullRequests() {
		f.Add(EncodePullRequest(r))
	}
	f.Add(mp(f, validPull()))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodePullRequest(data)
		if err != nil {
			checkRequestError(t, err)
			return
		}
		if err := req.Region.Validate(); err != nil {
			t.Fatalf("decoded an invalid region %q: %v", req.Region.Identity(), err)
		}
		if req.Max < 1 || req.Max > MaxPullEntries || req.MaxBytes < 0 {
			t.Fatalf("decoded out-of-range limits: %+v", req)
		}
		again, err := DecodePullRequest(EncodePullRequest(req))
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
	for _, c := range badAppendCases(f) {
		f.Add(c.body)
	}
	f.Add(appendBody(f, validEvent()))
	f.Add(appendBody(f, validEvent(), validEvent().with("idempotency_key", make([]byte, 16))))
	key := engine.DeriveIdempotencyKey("fuzz")
	f.Add(EncodeAppendRequest([]engine.Event{
		{Coordinate: engine.MustCoordinate("order:1", "shop"), Kind: 0x1001, Payload: []byte("x"), Key: key},
	}))
	f.Add(EncodeAppendRequest([]engine.Event{
		{Coordinate: engine.MustCoordinate("a", "s"), Kind: 0xF007},
		{Coordinate: engine.MustCoordinate("b:c", "s"), Kind: 0x0008, Payload: []byte{1, 2, 3}},
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		events, err := DecodeAppendRequest(data, fuzzMaxEvents)
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
		again, err := DecodeAppendRequest(EncodeAppendRequest(events), fuzzMaxEvents)
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
	for _, r := range []PullReply{
		{JournalID: id128(1), Incarnation: id128(2), Epoch: 3, Visible: 4},
		{JournalID: id128(1), Incarnation: id128(2), Epoch: 3, Visible: 1<<40 + 1, Entries: sampleEntries(f),
			Cancelled: []engine.Range{{Start: 2, End: 3}, {Start: 7, End: 9}}},
	} {
		b := EncodePullReply(&r)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{0x80})
	f.Add([]byte{0xc1})
	f.Add(mp(f, mpKV{"v", 1, "entries", []any{mpKV{"x", 1}}, "cancelled", []any{[]any{1}}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		reply, err := DecodePullReply(data)
		if err != nil {
			return
		}
		again, err := DecodePullReply(EncodePullReply(reply))
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
	var re *RequestError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *RequestError", err, err)
	}
	// Field may be "" only when the offending key itself is "".
	if re.Rule == "" || (re.Code != 400 && re.Code != 413) {
		t.Fatalf("request error without a rule or a 400/413 code: %+v", re)
	}
}
