package fleet

import (
	"bytes"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// Group records live in a KV bucket any client of the bucket can write,
// and every member decodes every member record it watches.

func sampleMember() memberRecord {
	return memberRecord{V: 1, Member: "host-1", Incarnation: "0123456789abcdef0123456789abcdef",
		Owned: []uint16{0, 3, 15}, SessionMs: 3000, UpdatedMs: 1_700_000_000_000}
}

// TestGroupRecordsDeclaredLengths: a member record whose "owned" array
// declares 2^24 partitions in 13 bytes is refused without the decoder
// allocating by that count (msgpack/v5 made the whole []uint16: 64 MiB
// here, 16 GiB for 2^32-1, enough to kill every member that watched the
// key), and a config record with an unknown value nested 100,000 deep is
// refused instead of skipped by a recursion as deep.
func TestGroupRecordsDeclaredLengths(t *testing.T) {
	huge := []byte{0x81, 0xa5, 'o', 'w', 'n', 'e', 'd', 0xdd, 0x01, 0x00, 0x00, 0x00, 0x01}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := decodeMember(huge)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("decoded a member record declaring 2^24 partitions in 13 bytes")
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("refusing a %d-byte member record allocated %d bytes: allocation by declared length", len(huge), got)
	}

	cfg, err := encodeRecord(groupConfigRecord{V: 1, RegionIdentity: "entity=*|scope=*|fact=none|clock=*", Partitions: 16})
	if err != nil {
		t.Fatal(err)
	}
	deep := append([]byte{cfg[0] + 1}, cfg[1:]...)
	deep = append(append(deep, 0xa1, 'x'), append(bytes.Repeat([]byte{0x91}, 100_000), 0xc0)...)
	if _, err := decodeGroupConfig(deep); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("decodeGroupConfig of a 100,000-deep unknown value = %v, want a nesting error", err)
	}
	if got, err := decodeGroupConfig(cfg); err != nil || got.Partitions != 16 {
		t.Fatalf("decodeGroupConfig of a valid record = %+v, %v", got, err)
	}
}

// FuzzMemberRecordDecode: decodeMember never panics nor allocates by a
// declared length; what it accepts has version 1, a member, and survives
// a re-encode.
func FuzzMemberRecordDecode(f *testing.F) {
	valid, err := encodeRecord(sampleMember())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add([]byte{0x81, 0xa5, 'o', 'w', 'n', 'e', 'd', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{0x82, 0xa1, 'v', 0x01, 0xa6, 'm', 'e', 'm', 'b', 'e', 'r', 0xa1, 'm'})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeMember(data)
		if err != nil {
			return
		}
		if m.V != 1 || m.Member == "" {
			t.Fatalf("accepted %+v", m)
		}
		enc, err := encodeRecord(m)
		if err != nil {
			t.Fatalf("encode %+v: %v", m, err)
		}
		back, err := decodeMember(enc)
		if len(m.Owned) == 0 {
			m.Owned, back.Owned = nil, nil
		}
		if err != nil || !reflect.DeepEqual(back, m) {
			t.Fatalf("round trip of %+v: %+v, %v", m, back, err)
		}
	})
}

// FuzzGroupConfigDecode: as FuzzMemberRecordDecode, for the group config.
func FuzzGroupConfigDecode(f *testing.F) {
	valid, err := encodeRecord(groupConfigRecord{V: 1, RegionIdentity: "entity=order|scope=*|fact=none|clock=*", Partitions: 16, CreatedMs: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add(append([]byte{0x81, 0xa1, 'x'}, append(bytes.Repeat([]byte{0x91}, 40), 0xc0)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeGroupConfig(data)
		if err != nil {
			return
		}
		enc, err := encodeRecord(c)
		if err != nil {
			t.Fatalf("encode %+v: %v", c, err)
		}
		if back, err := decodeGroupConfig(enc); err != nil || back != c {
			t.Fatalf("round trip of %+v: %+v, %v", c, back, err)
		}
	})
}
