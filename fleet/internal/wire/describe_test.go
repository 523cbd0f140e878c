package wire_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/batfleet/batfleet/fleet/internal/wire"
	"github.com/batfleet/batfleet/fleet/internal/wire/wiretest"
)

// TestDescriptionIsBounded: a refusal quotes what it refuses, and the
// writer's error reply carries it in a header. A pull whose incarnation is
// 300,000 NUL bytes was refused with a rule quoting it (%q: 1.2 MB), a
// reply over the server's max payload that could not be sent: the client
// saw a timeout (found by the wire abuse corpus, TestWireAbuse). The
// description is now at most wire.MaxDescription bytes of valid UTF-8
// that still starts with the field.
func TestDescriptionIsBounded(t *testing.T) {
	for _, c := range []struct {
		name, field string
		body        []byte
	}{
		{"incarnation of NULs", "incarnation", wiretest.MP(t, wiretest.ValidPull().With("incarnation", strings.Repeat("\x00", 300_000)))},
		{"a key of 900,000 bytes", "events[0].", wiretest.AppendBody(t, wiretest.ValidEvent().With(strings.Repeat("é", 450_000), msgpack.RawMessage{0xc1}))},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := wire.DecodePullRequest(c.body)
			if strings.HasPrefix(c.field, "events") {
				_, err = wire.DecodeAppendRequest(c.body, 16)
			}
			re, ok := err.(*wire.RequestError)
			if !ok {
				t.Fatalf("decode = %v, want a *RequestError", err)
			}
			d := re.Description()
			if len(d) > wire.MaxDescription || !utf8.ValidString(d) || !strings.HasPrefix(d, c.field) {
				t.Fatalf("description of %d bytes (valid UTF-8: %v) starting %.40q, want at most %d starting with %q",
					len(d), utf8.ValidString(d), d, wire.MaxDescription, c.field)
			}
		})
	}
	if got := wire.ClipDescription("short"); got != "short" {
		t.Fatalf("ClipDescription(short) = %q", got)
	}
}
