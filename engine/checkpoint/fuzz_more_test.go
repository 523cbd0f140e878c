package checkpoint

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// A parked record is read from a KV bucket (or a memory store) that any
// client of the bucket can write: DecodeParked must refuse what a
// checkpoint record's decoder refuses, deep nesting included.

func parkedSample() Parked {
	return Parked{Entity: "order:17", FirstSeq: 3, LastSeq: 9, Count: 4, Attempts: 3, Error: "boom", ParkedMs: 1_700_000_000_000}
}

// TestParkedDecodeBoundsNesting: an unknown key whose value nests 100,000
// arrays is refused, not skipped by a recursion as deep (msgpack/v5's Skip
// has no limit: a megabyte of nesting took a 128 MiB stack).
func TestParkedDecodeBoundsNesting(t *testing.T) {
	base := EncodeParked(parkedSample())
	// base is a fixmap: add the key "zz" with a deeply nested value.
	deep := append([]byte{base[0] + 1}, base[1:]...)
	deep = append(append(deep, 0xa2, 'z', 'z'), nestedArrays(100_000)...)
	if _, err := DecodeParked(deep); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("DecodeParked of a 100,000-deep unknown value = %v, want a nesting error", err)
	}
	ok := append([]byte{base[0] + 1}, base[1:]...)
	ok = append(append(ok, 0xa2, 'z', 'z'), nestedArrays(8)...)
	if p, err := DecodeParked(ok); err != nil || p != parkedSample() {
		t.Fatalf("DecodeParked with a shallow unknown value = %+v, %v", p, err)
	}
}

// FuzzParkedDecode: DecodeParked never panics; what it accepts passes its
// checks and survives a re-encode.
func FuzzParkedDecode(f *testing.F) {
	valid := EncodeParked(parkedSample())
	f.Add(valid)
	f.Add(valid[:len(valid)-2])
	f.Add(EncodeParked(Parked{Entity: "e", Count: 1, Replay: true}))
	f.Add([]byte{0x81, 0xa6, 'e', 'n', 't', 'i', 't', 'y', 0xdb, 0xff, 0xff, 0xff, 0xff, 'e'})
	f.Add(append([]byte{0x81, 0xa1, 'x'}, nestedArrays(40)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeParked(data)
		if err != nil {
			return
		}
		if p.Entity == "" || p.FirstSeq > p.LastSeq || p.Count == 0 {
			t.Fatalf("accepted a record that breaks the rules: %+v", p)
		}
		back, err := DecodeParked(EncodeParked(p))
		if err != nil || back != p {
			t.Fatalf("round trip of %+v: %+v, %v", p, back, err)
		}
	})
}

// FuzzCheckpointFileDecode: a FileStore's file (header, then the record)
// either gives a revision above 0 and a record that re-encodes to an
// equal one, or an error. Never a panic.
func FuzzCheckpointFileDecode(f *testing.F) {
	rec := Record{Position: 7, Started: true, RegionIdentity: ckptPtr(ckptIdentAll), JournalID: "j", Owner: "w", UpdatedMs: 5}
	valid := encodeCheckpointFile(3, Encode(rec))
	f.Add(valid)
	f.Add(valid[:ckptHeaderLen])
	f.Add(valid[:ckptHeaderLen-1])
	f.Add(encodeCheckpointFile(0, Encode(rec)))
	f.Add(append(bytes.Clone(valid), 0xc0))
	f.Fuzz(func(t *testing.T, data []byte) {
		rev, body, err := parseCheckpointFile(data)
		if err != nil {
			return
		}
		if rev == 0 {
			t.Fatal("parsed revision 0")
		}
		got, err := Decode(body)
		if err != nil {
			return
		}
		back, err := Decode(Encode(got))
		if err != nil || !reflect.DeepEqual(back, got) {
			t.Fatalf("round trip of %s: %s, %v", ckptFormatRecord(got), ckptFormatRecord(back), err)
		}
	})
}
