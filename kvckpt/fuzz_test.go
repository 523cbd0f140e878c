package kvckpt

import (
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/batfleet/batfleet/engine/checkpoint"
)

// FuzzValueDecode: whatever bytes a key holds, Load returns a record or
// ErrCorrupt (a *checkpoint.CorruptError naming the id and
// location), and never panics. Every input goes through decodeValue, the
// decoding step of Load and List; inputs up to 64 KiB also go through a
// real bucket (Put, then Load) on one server shared by the fuzz process,
// and must give the same answer. A record that decodes re-encodes to
// itself.
func FuzzValueDecode(f *testing.F) {
	valid := checkpoint.Encode(testRecord(300, "w"))
	for _, seed := range [][]byte{
		valid,
		checkpoint.Encode(checkpoint.Record{}),
		mustHex(f, "84a8706f736974696f6e00a773746172746564c2af70726f636573735f626f6f745f6e73c0af726567696f6e5f6964656e74697479d922656e746974793d2a7c73636f70653d2a7c666163743d6e6f6e657c636c6f636b3d2a"),
		mustHex(f, "84a8706f736974696f6e07a773746172746564c3af70726f636573735f626f6f745f6e73c0af726567696f6e5f6964656e74697479d938656e746974793d656e746974793a637572736f722d6c6f61642d666c61677c73636f70653d2a7c666163743d6e6f6e657c636c6f636b3d2a"),
		[]byte("not-msgpack"),
		{},
		{0xc0},
		{0x92, 0x01, 0xc3},
		valid[:len(valid)-1],
		valid[:len(valid)/2],
		append(append([]byte(nil), valid...), 0xc0),
		{0x81, 0xa8, 'p', 'o', 's', 'i', 't', 'i', 'o', 'n', 0x05},
		{0x82, 0xa8, 'p', 'o', 's', 'i', 't', 'i', 'o', 'n', 0xd0, 0xff, 0xa7, 's', 't', 'a', 'r', 't', 'e', 'd', 0xc3}, // negative position
		{0xdf, 0xff, 0xff, 0xff, 0xff},                                                                                  // a map claiming 2^32-1 entries
	} {
		f.Add(seed)
	}
	_, _, s := newServerStore(f, Config{Journal: "fuzz"})
	const id = "fuzz value"

	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := s.decodeValue(id, data)
		checkDecoded(t, s, id, rec, err)
		if len(data) > 64<<10 {
			return
		}
		if _, perr := s.kv.Put(testCtx(t), s.Key(id), data); perr != nil {
			t.Fatalf("put: %v", perr)
		}
		loaded, _, lerr := s.Load(testCtx(t), id)
		checkDecoded(t, s, id, loaded, lerr)
		if (err == nil) != (lerr == nil) || !reflect.DeepEqual(rec, loaded) {
			t.Fatalf("decodeValue gave %+v, %v; Load gave %+v, %v", rec, err, loaded, lerr)
		}
	})
}

func checkDecoded(t *testing.T, s *Store, id string, rec checkpoint.Record, err error) {
	t.Helper()
	if err == nil {
		again, rerr := checkpoint.Decode(checkpoint.Encode(rec))
		if rerr != nil || !reflect.DeepEqual(again, rec) {
			t.Fatalf("record %+v does not survive re-encoding: %+v, %v", rec, again, rerr)
		}
		return
	}
	if !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("error %v, want ErrCheckpointCorrupt", err)
	}
	if errors.Is(err, checkpoint.ErrIO) || errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("corrupt also matches I/O or not found: %v", err)
	}
	var ce *checkpoint.CorruptError
	if !errors.As(err, &ce) || ce.ID != id || ce.Location != s.Location(id) || ce.Reason == "" {
		t.Fatalf("error %#v, want a CheckpointCorruptError naming %q at %q with a reason", err, id, s.Location(id))
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzKeyEncoding: decodeID accepts only what encodeID writes for a valid
// id; for every valid id, decodeID(encodeID(id)) == id, the key is
// KV-legal with exactly two non-empty tokens, an id of [A-Za-z0-9_-] is
// kept verbatim (and any other is encoded), and the id shares its key with
// none of the CK-03 ids but itself.
func FuzzKeyEncoding(f *testing.F) {
	for _, id := range ck03IDs() {
		f.Add(id)
	}
	for _, p := range idPieces {
		f.Add(p)
		f.Add("a" + p + "b")
	}
	for _, seed := range []string{"", "=", "=YWJj", "=YQ", "=w6nDqR", "=YS9i", "a/b", "a|b", "a=b", "..", "a\x00b", "\xff", "A_b-9"} {
		f.Add(seed)
	}
	keyOnly := &Store{journal: "j"}
	others := make(map[string]string)
	for _, id := range ck03IDs() {
		others[keyOnly.Key(id)] = id
	}

	f.Fuzz(func(t *testing.T, id string) {
		// As a key part: accepted only in the one spelling encodeID uses.
		if got, err := decodeID(id); err == nil {
			if encodeID(got) != id || checkpoint.ValidateID(got) != nil {
				t.Fatalf("decodeID(%q) = %q, which encodes to %q (valid: %v)", id, got, encodeID(got), checkpoint.ValidateID(got))
			}
		}
		if checkpoint.ValidateID(id) != nil {
			return
		}
		checkRoundTrip(t, id)
		key := checkKey(t, keyOnly, id)
		verbatim := strings.Trim(id, verbatimChars) == "" // id != "" here
		if enc := encodeID(id); verbatim != (enc == id) || !verbatim && !strings.HasPrefix(enc, "=") {
			t.Fatalf("encodeID(%q) = %q (verbatim characters only: %t)", id, enc, verbatim)
		}
		if other, ok := others[key]; ok && other != id {
			t.Fatalf("ids %q and %q share key %q", id, other, key)
		}
	})
}
