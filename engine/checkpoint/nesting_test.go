package checkpoint

import (
	"bytes"
	"strings"
	"testing"

	"github.com/batfleet/batfleet/internal/msgpackutil"
)

// nestedArrays returns depth one-element arrays around a nil.
func nestedArrays(depth int) []byte {
	return append(bytes.Repeat([]byte{0x91}, depth), 0xc0)
}

// withUnknownKey is a map holding the fixed entries of prefix (already
// encoded, count pairs) plus the key "zz" with value v.
func withUnknownKey(count int, prefix, v []byte) []byte {
	out := []byte{0x80 | byte(count+1)}
	out = append(out, prefix...)
	out = append(out, 0xa2, 'z', 'z')
	return append(out, v...)
}

// Unknown keys are skipped, but not values nested deeper than
// msgpackutil.MaxDepth: msgpack's own skip recursed without a limit, and a record
// of a few megabytes of nested arrays crashed the process with a stack
// overflow. The deep record is now a decode error (ErrCorrupt
// for callers), found without reading past the limit.
func TestCheckpointDecodeBoundsNesting(t *testing.T) {
	base := []byte{0xa8}
	base = append(base, "position"...)
	base = append(base, 0x07, 0xa7)
	base = append(base, "started"...)
	base = append(base, 0xc3)

	ok := withUnknownKey(2, base, nestedArrays(msgpackutil.MaxDepth))
	rec, err := Decode(ok)
	if err != nil || rec.Position != 7 || !rec.Started {
		t.Fatalf("record with a %d-deep unknown value: %+v, %v", msgpackutil.MaxDepth, rec, err)
	}
	for _, depth := range []int{msgpackutil.MaxDepth + 1, 5 << 20} {
		_, err := Decode(withUnknownKey(2, base, nestedArrays(depth)))
		if err == nil || !strings.Contains(err.Error(), "nested deeper") {
			t.Fatalf("record with a %d-deep unknown value: err %v, want a nesting error", depth, err)
		}
	}
	deepMaps := append(bytes.Repeat([]byte{0x81, 0xa1, 'k'}, msgpackutil.MaxDepth+1), 0xc0)
	if _, err := Decode(withUnknownKey(2, base, deepMaps)); err == nil {
		t.Fatal("record with deeply nested maps under an unknown key decoded")
	}
}
