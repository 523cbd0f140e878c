package msgpackutil

import (
	"bytes"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func checkBoundedCases() []struct {
	name string
	data []byte
	ok   bool
} {
	return []struct {
		name string
		data []byte
		ok   bool
	}{
		{"scalar", []byte{0x05}, true},
		{"nil", []byte{0xc0}, true},
		{"empty", nil, false},
		{"invalid code", []byte{0xc1}, false},
		{"map", []byte{0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0x92, 0xcc, 0xff, 0xc3}, true},
		{"trailing bytes are not looked at", []byte{0x01, 0xc1}, true},
		{"truncated map", []byte{0x82, 0xa1, 'a', 0x01}, false},
		{"array32 declaring 2^32-1", []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0x01}, false},
		{"map32 declaring 2^32-1", []byte{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'k', 0x01}, false},
		{"array16 declaring more than is left", []byte{0xdc, 0x00, 0x03, 0x01, 0x02}, false},
		{"str32 declaring 2^32-1", []byte{0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}, false},
		{"bin32 declaring 2^32-1", []byte{0xc6, 0xff, 0xff, 0xff, 0xff, 'a'}, false},
		{"ext32 declaring 2^32-1", []byte{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01, 'a'}, false},
		{"fixext16", append([]byte{0xd8, 0x01}, make([]byte, 16)...), true},
		{"fixext16 short", append([]byte{0xd8, 0x01}, make([]byte, 15)...), false},
		{"float64", []byte{0xcb, 0, 0, 0, 0, 0, 0, 0, 0}, true},
		{"arrays at the limit", append(bytes.Repeat([]byte{0x91}, MaxDepth), 0xc0), true},
		{"arrays past the limit", append(bytes.Repeat([]byte{0x91}, MaxDepth+1), 0xc0), false},
		{"10,000 levels", append(bytes.Repeat([]byte{0x91}, 10000), 0xc0), false},
		{"member record declaring 2^32-1 partitions", []byte{0x81, 0xa5, 'o', 'w', 'n', 'e', 'd', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01}, false},
	}
}

func TestCheckBounded(t *testing.T) {
	for _, tc := range checkBoundedCases() {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckBounded(tc.data); (err == nil) != tc.ok {
				t.Fatalf("CheckBounded(%x) = %v, want ok=%v", tc.data, err, tc.ok)
			}
		})
	}
}

// TestCheckBoundedAllocatesNothing: the check allocates nothing on a
// valid value, and only its error on one declaring 2^32-1 items.
func TestCheckBoundedAllocatesNothing(t *testing.T) {
	valid := []byte{0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0x92, 0xcc, 0xff, 0xc3}
	if n := testing.AllocsPerRun(10, func() { _ = CheckBounded(valid) }); n != 0 {
		t.Fatalf("CheckBounded of a valid value allocated %v times", n)
	}
	huge := []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0x01}
	if n := testing.AllocsPerRun(10, func() { _ = CheckBounded(huge) }); n > 4 {
		t.Fatalf("CheckBounded of a huge declared array allocated %v times", n)
	}
}

// FuzzSkip: Skip (on msgpack/v5's Decoder) and CheckBounded (on bytes)
// agree on every input: both accept it, having consumed the same bytes,
// or both refuse it. Neither panics or recurses without a bound.
func FuzzSkip(f *testing.F) {
	for _, tc := range checkBoundedCases() {
		f.Add(tc.data)
	}
	f.Add(append(bytes.Repeat([]byte{0x81, 0xa1, 'k'}, MaxDepth+1), 0xc0))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		skipErr := Skip(msgpack.NewDecoder(r))
		c := checker{b: data}
		c.value(0)
		if (skipErr == nil) != (c.err == nil) {
			t.Fatalf("Skip: %v; CheckBounded: %v (input %x)", skipErr, c.err, data)
		}
		if skipErr == nil && len(data)-r.Len() != c.off {
			t.Fatalf("Skip consumed %d bytes, CheckBounded %d (input %x)", len(data)-r.Len(), c.off, data)
		}
	})
}
