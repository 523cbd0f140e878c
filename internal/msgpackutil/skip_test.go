package msgpackutil

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestSkipBoundsNesting(t *testing.T) {
	nested := func(open []byte, depth int) []byte {
		return append(bytes.Repeat(open, depth), 0xc0, 0x07)
	}
	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"scalar", []byte{0x05, 0x07}, true},
		{"arrays at the limit", nested([]byte{0x91}, MaxDepth), true},
		{"arrays past the limit", nested([]byte{0x91}, MaxDepth+1), false},
		{"maps at the limit", nested([]byte{0x81, 0xa1, 'k'}, MaxDepth), true},
		{"maps past the limit", nested([]byte{0x81, 0xa1, 'k'}, MaxDepth+1), false},
		{"megabytes of arrays", nested([]byte{0x91}, 5<<20), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec := msgpack.NewDecoder(bytes.NewReader(tc.data))
			err := Skip(dec)
			if !tc.ok {
				if err == nil || !strings.Contains(err.Error(), "nested deeper") {
					t.Fatalf("Skip = %v, want a nesting error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Skip: %v", err)
			}
			// The value after the skipped one is read next.
			if v, err := dec.DecodeInt(); err != nil || v != 7 {
				t.Fatalf("after Skip: %v, %v; want 7", v, err)
			}
		})
	}
}
