package checkpoint

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzCheckpointDecode checks that Decode never panics and that
// whatever it accepts survives a re-encode: Encode of the decoded
// record decodes back to an equal record, and encoding is then a fixed
// point (the canonical seven-key form).
func FuzzCheckpointDecode(f *testing.F) {
	for _, c := range ckptDecodeCases {
		f.Add(c.data)
	}
	f.Add(Encode(Record{Position: ^uint64(0), Started: true,
		RegionIdentity: ckptPtr(ckptIdentAll), JournalID: "j", Owner: "ö", UpdatedMs: 1_700_000_000_123}))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := Decode(data)
		if err != nil {
			return
		}
		enc := Encode(rec)
		back, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v\nbytes %x", ckptFormatRecord(rec), err, enc)
		}
		if !reflect.DeepEqual(back, rec) {
			t.Fatalf("round trip changed the record:\n got %s\nwant %s", ckptFormatRecord(back), ckptFormatRecord(rec))
		}
		if again := Encode(back); !bytes.Equal(again, enc) {
			t.Fatalf("encoding is not canonical:\nfirst  %x\nsecond %x", enc, again)
		}
	})
}
