package wire

import (
	"fmt"
	"unicode/utf8"
)

// Limits of an error reply's description (the Nats-Service-Error header).
// A description quotes what it refuses (a key, an id), and a request may
// be up to the server's max payload: quoted in full (%q escapes a byte in
// up to four), the reply could outgrow the max payload, fail to publish,
// and reach the requester as a timeout.
const (
	// MaxDescription bounds an error reply's description, in bytes.
	MaxDescription = 1024
	// maxDescribedField bounds the field name in it.
	maxDescribedField = 128
)

// Description is the description of the error reply refusing e: its field
// and rule, each clipped (ClipDescription).
func (e *RequestError) Description() string {
	return ClipDescription(clip(e.Field, maxDescribedField) + ": " + e.Rule)
}

// ClipDescription returns s cut to at most MaxDescription bytes (on a rune
// boundary) and a note of its length, or s when it is short enough.
func ClipDescription(s string) string { return clip(s, MaxDescription) }

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	note := fmt.Sprintf("… (%d bytes)", len(s))
	cut := max(n-len(note), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + note
}
