package engine

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

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

// A coordinate's unknown keys are skipped with the same bound.
func TestCoordinateDecodeBoundsNesting(t *testing.T) {
	base := []byte{0xa6}
	base = append(base, "entity"...)
	base = append(base, 0xa1, 'e', 0xa5)
	base = append(base, "scope"...)
	base = append(base, 0xa1, 's')

	var c Coordinate
	if err := c.DecodeMsgpack(msgpack.NewDecoder(bytes.NewReader(withUnknownKey(2, base, nestedArrays(msgpackutil.MaxDepth))))); err != nil || c.Entity() != "e" {
		t.Fatalf("coordinate with a %d-deep unknown value: %v, %v", msgpackutil.MaxDepth, c, err)
	}
	err := c.DecodeMsgpack(msgpack.NewDecoder(bytes.NewReader(withUnknownKey(2, base, nestedArrays(5<<20)))))
	if err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("coordinate with a deep unknown value: err %v, want a nesting error", err)
	}
}
