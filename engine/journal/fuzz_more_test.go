package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"reflect"
	"runtime"
	"testing"

	"github.com/batfleet/batfleet/engine"
)

// rangesFileWith returns a ranges file (current version, matching CRC)
// around body.
func rangesFileWith(body []byte) []byte {
	out := make([]byte, 12, 12+len(body))
	copy(out, rangesMagic)
	binary.LittleEndian.PutUint16(out[6:], rangesVersion)
	binary.LittleEndian.PutUint32(out[8:], crc32.ChecksumIEEE(body))
	return append(out, body...)
}

// TestRangesFileDeclaredLength: a ranges file whose array declares 2^24
// ranges in a few bytes is refused as undecodable without the decoder
// allocating by that count (msgpack/v5 made the whole []engine.Range, 16
// bytes each: 256 MiB here, 64 GiB for 2^32-1, at open).
func TestRangesFileDeclaredLength(t *testing.T) {
	body := []byte{0x81, 0xa6, 'r', 'a', 'n', 'g', 'e', 's', 0xdd, 0x01, 0x00, 0x00, 0x00, 0x82}
	data := rangesFileWith(body)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := decodeRangesFile("ranges", data)
	runtime.ReadMemStats(&after)
	var rfe *RangesFileError
	if !errors.As(err, &rfe) || rfe.Kind != "decode" {
		t.Fatalf("decodeRangesFile = %v, want a decode RangesFileError", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("refusing a %d-byte file allocated %d bytes: allocation by declared length", len(data), got)
	}
}

// FuzzRangesFileDecode: decodeRangesFile never panics; it returns
// normalised ranges or a *RangesFileError, and what it accepts re-encodes
// to a file that decodes to the same ranges. Each input is also tried as a
// body with a matching header, so the fuzzer gets past the CRC.
func FuzzRangesFileDecode(f *testing.F) {
	valid, err := encodeRangesFile([]engine.Range{{Start: 1, End: 3}, {Start: 7, End: 1 << 40}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[12:])
	f.Add(valid[:len(valid)-1])
	f.Add([]byte{0x81, 0xa6, 'r', 'a', 'n', 'g', 'e', 's', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x82})
	f.Add(append([]byte{0x82, 0xa1, 'x'}, append(bytes.Repeat([]byte{0x91}, 64), 0xc0, 0xa6, 'r', 'a', 'n', 'g', 'e', 's', 0x90)...))
	f.Add([]byte{0x81, 0xa6, 'r', 'a', 'n', 'g', 'e', 's', 0x91, 0x82, 0xa5, 's', 't', 'a', 'r', 't', 0x05, 0xa3, 'e', 'n', 'd', 0x05})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, in := range [][]byte{data, rangesFileWith(data)} {
			rs, err := decodeRangesFile("fuzz", in)
			if err != nil {
				var rfe *RangesFileError
				if !errors.As(err, &rfe) {
					t.Fatalf("error %v (%T) is not a *RangesFileError", err, err)
				}
				continue
			}
			for i, r := range rs {
				if r.Start >= r.End || (i > 0 && r.Start <= rs[i-1].End) {
					t.Fatalf("ranges not normalised: %v", rs)
				}
			}
			enc, err := encodeRangesFile(rs)
			if err != nil {
				t.Fatalf("encode %v: %v", rs, err)
			}
			back, err := decodeRangesFile("fuzz", enc)
			if err != nil || (len(rs) > 0 && !reflect.DeepEqual(back, rs)) || len(back) != len(rs) {
				t.Fatalf("round trip of %v: %v, %v", rs, back, err)
			}
		}
	})
}
