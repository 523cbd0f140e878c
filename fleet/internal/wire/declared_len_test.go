package wire_test

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/batfleet/batfleet/fleet/internal/wire"
)

// allocatedBy returns the bytes allocated by one call of fn, the least of
// a few runs (a concurrent allocation elsewhere in the test binary only
// ever adds).
func allocatedBy(fn func()) uint64 {
	least := ^uint64(0)
	for range 5 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		fn()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least
}

// TestDeclaredLengthsAllocateByContent: a decoder sizes what it allocates
// by the values a message holds, never by the count it declares. An append
// request declaring 65,535 events, followed by 65,535 one-byte values,
// passes the "declared beyond the body" check (one byte per event) but
// holds not one valid event (each needs at least 24 bytes); the decoder
// used to make the whole []engine.Event up front (80 bytes each: 5 MiB for
// a 64 KiB request, a request anyone can send to the writer). Likewise a
// pull reply declaring an entry per remaining byte made 104 bytes per
// declared entry on the client. Found by the wire abuse corpus
// (integration.TestWireAbuse).
func TestDeclaredLengthsAllocateByContent(t *testing.T) {
	const n = 65535
	junk := bytes.Repeat([]byte{0x80}, n) // empty maps: each fails at once
	appendReq := wire.AppendArrayLen(wire.AppendStr(wire.AppendUint(wire.AppendStr(wire.AppendMapLen(nil, 2), "v"), 1), "events"), n)
	appendReq = append(appendReq, junk...)
	pullReply := wire.AppendArrayLen(wire.AppendStr(wire.AppendUint(wire.AppendStr(wire.AppendMapLen(nil, 2), "v"), 1), "entries"), n)
	pullReply = append(pullReply, junk...)

	for _, c := range []struct {
		name   string
		body   []byte
		decode func([]byte) error
	}{
		{"append request", appendReq, func(b []byte) error { _, err := wire.DecodeAppendRequest(b, 65536); return err }},
		{"pull reply", pullReply, func(b []byte) error { _, err := wire.DecodePullReply(b); return err }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var err error
			got := allocatedBy(func() { err = c.decode(c.body) })
			if err == nil {
				t.Fatal("decoded a body of empty maps")
			}
			// The slices are sized by the least bytes a valid value
			// takes (an event 80 bytes per 24 of body, an entry 104 per
			// 18): 8 bytes per byte of body allows that, and is far
			// below the 80 and 104 per byte of sizing by the count.
			if limit := uint64(8 * len(c.body)); got > limit {
				t.Fatalf("decoding %d bytes that declare %d values allocated %d bytes (limit %d): allocation by declared length",
					len(c.body), n, got, limit)
			}
		})
	}
}
