package wire_test

import (
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet/internal/wire"
	"github.com/batfleet/batfleet/fleet/internal/wire/wiretest"
)

// The decoders of bytes that reach a process from NATS and had no fuzz
// target besides pulls and appends: the info request (the writer's side),
// and the info reply, append reply and epoch message (a client's side, fed
// by whatever answers or publishes on the subject).

// FuzzInfoRequestDecode: an info request either passes, or is refused with
// a *RequestError naming a field (the key at fault, which may be ""), code
// 400. Never a panic.
func FuzzInfoRequestDecode(f *testing.F) {
	for _, seed := range [][]byte{
		nil,
		wire.EncodeInfoRequest(),
		wiretest.MP(f, wiretest.MPKV{"v", 2}),
		wiretest.MP(f, wiretest.MPKV{"v", "1"}),
		wiretest.MP(f, wiretest.MPKV{"x", 1}),
		wiretest.MP(f, wiretest.MPKV{"v", 1, "x", []any{1, "a"}}),
		{0xc1},
		{0xdf, 0xff, 0xff, 0xff, 0xff},
		append([]byte{0x82, 0xa1, 'v', 0x01, 0xa1, 'x'}, wiretest.Nested(100)...),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := wire.DecodeInfoRequest(data)
		if err == nil {
			return
		}
		checkRequestError(t, err)
		if re := (*wire.RequestError)(nil); errors.As(err, &re) && re.Code != 400 {
			t.Fatalf("info request refused with code %d: %v", re.Code, err)
		}
	})
}

// TestInfoRequestNamesMalformedKey: an info request whose v is fine but
// another key's value does not decode (nested too deeply, declared longer
// than the body) is refused naming that key, not "v is required" (what
// the writer answered before: the field it named was not at fault).
func TestInfoRequestNamesMalformedKey(t *testing.T) {
	for _, raw := range [][]byte{wiretest.Nested(10000), {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		body := append([]byte{0x82, 0xa1, 'v', 0x01, 0xa1, 'x'}, raw...)
		err := wire.DecodeInfoRequest(body)
		var re *wire.RequestError
		if !errors.As(err, &re) || re.Field != "x" || re.Code != 400 {
			t.Fatalf("DecodeInfoRequest(%.12x…) = %v, want a 400 naming x", body, err)
		}
	}
	// A body that is not a map still names v (the writer's tests pin it).
	var re *wire.RequestError
	if err := wire.DecodeInfoRequest([]byte{0x01}); !errors.As(err, &re) || re.Field != "v" {
		t.Fatalf("DecodeInfoRequest(01) = %v, want naming v", err)
	}
}

// FuzzInfoDecode: what DecodeInfo accepts re-encodes to the same Info.
func FuzzInfoDecode(f *testing.F) {
	for _, in := range []wire.Info{
		{},
		{Journal: "main", JournalID: id128(1), Incarnation: id128(2), Epoch: 3, Visible: 4, Events: 5,
			CancelledRanges: []engine.Range{{Start: 1, End: 2}, {Start: 9, End: 1 << 40}}, StartedMs: -7, MaxWaitMs: 30000},
	} {
		b := wire.EncodeInfo(in)
		f.Add(b)
		f.Add(b[:len(b)-3])
	}
	f.Add([]byte{0x81, 0xa1, 'v', 0x01})
	f.Add(wiretest.MP(f, wiretest.MPKV{"v", 1, "cancelled_ranges", []any{[]any{1}}}))
	f.Add(wiretest.MP(f, wiretest.MPKV{"v", 1, "max_wait_ms", uint64(math.MaxUint64)}))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := wire.DecodeInfo(data)
		if err != nil {
			return
		}
		again, err := wire.DecodeInfo(wire.EncodeInfo(in))
		if err != nil {
			t.Fatalf("re-encoded info refused: %v (%+v)", err, in)
		}
		if len(in.CancelledRanges) == 0 {
			in.CancelledRanges = nil
		}
		if len(again.CancelledRanges) == 0 {
			again.CancelledRanges = nil
		}
		if !reflect.DeepEqual(again, in) {
			t.Fatalf("round trip changed the info:\n first  %+v\n second %+v", in, again)
		}
	})
}

// FuzzAppendReplyDecode: DecodeAppendReply never panics and allocates by
// what the reply holds; what it accepts re-encodes to the same receipts.
func FuzzAppendReplyDecode(f *testing.F) {
	b := wire.EncodeAppendReply([]engine.Receipt{{Seq: 1, ID: id128(3)}, {Seq: 1 << 50, ID: id128(4), Replayed: true}})
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add(wire.EncodeAppendReply(nil))
	f.Add(wiretest.MP(f, wiretest.MPKV{"v", 1, "receipts", []any{wiretest.MPKV{"id", []byte{1}}}}))
	f.Add([]byte{0x82, 0xa1, 'v', 0x01, 0xa8, 'r', 'e', 'c', 'e', 'i', 'p', 't', 's', 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		rcs, err := wire.DecodeAppendReply(data)
		if err != nil {
			return
		}
		again, err := wire.DecodeAppendReply(wire.EncodeAppendReply(rcs))
		if err != nil {
			t.Fatalf("re-encoded reply refused: %v", err)
		}
		if len(again) != len(rcs) || (len(rcs) > 0 && !reflect.DeepEqual(again, rcs)) {
			t.Fatalf("round trip changed the receipts:\n first  %+v\n second %+v", rcs, again)
		}
	})
}

// FuzzEpochDecode: anyone may publish on an epoch subject; DecodeEpoch
// never panics and what it accepts re-encodes to the same message.
func FuzzEpochDecode(f *testing.F) {
	b := wire.EncodeEpoch(wire.EpochMessage{JournalID: id128(1), Incarnation: id128(2), Epoch: 1 << 33, Visible: 12})
	f.Add(b)
	f.Add(b[:len(b)-1])
	f.Add([]byte{0x81, 0xa1, 'v', 0x02})
	f.Add(wiretest.MP(f, wiretest.MPKV{"v", 1, "incarnation", "0123456789ABCDEF0123456789abcdef"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := wire.DecodeEpoch(data)
		if err != nil {
			return
		}
		again, err := wire.DecodeEpoch(wire.EncodeEpoch(m))
		if err != nil || again != m {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, m)
		}
	})
}
