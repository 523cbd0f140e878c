package checkpoint

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/batfleet/batfleet/engine"
)

// ---- hand-made MessagePack (independent of the encoder under test) -------

// ckptStr encodes s as a MessagePack string of minimal width.
func ckptStr(s string) []byte {
	n := len(s)
	var b []byte
	switch {
	case n < 32:
		b = []byte{0xa0 | byte(n)}
	case n < 1<<8:
		b = []byte{0xd9, byte(n)}
	case n < 1<<16:
		b = []byte{0xda, byte(n >> 8), byte(n)}
	default:
		b = []byte{0xdb, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	return append(b, s...)
}

// ckptKV is one map entry: a string key and the raw bytes of its value.
type ckptKV struct {
	key string
	val []byte
}

// ckptMap encodes a MessagePack map of the entries, in the given order.
func ckptMap(kvs ...ckptKV) []byte {
	var b []byte
	if n := len(kvs); n < 16 {
		b = []byte{0x80 | byte(n)}
	} else {
		b = []byte{0xde, byte(n >> 8), byte(n)}
	}
	for _, kv := range kvs {
		b = append(b, ckptStr(kv.key)...)
		b = append(b, kv.val...)
	}
	return b
}

func ckptHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func ckptMustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func ckptPtr(s string) *string { return &s }

var (
	ckptNil   = []byte{0xc0}
	ckptTrue  = []byte{0xc3}
	ckptFalse = []byte{0xc2}
)

// Goldens of SPEC §8.3 (the original four-key form).
const (
	ckptGoldenA = "84a8706f736974696f6e00a773746172746564c2af70726f636573735f626f6f745f6e73c0af726567696f6e5f6964656e74697479d922656e746974793d2a7c73636f70653d2a7c666163743d6e6f6e657c636c6f636b3d2a"
	ckptGoldenB = "84a8706f736974696f6e07a773746172746564c3af70726f636573735f626f6f745f6e73c0af726567696f6e5f6964656e74697479d938656e746974793d656e746974793a637572736f722d6c6f61642d666c61677c73636f70653d2a7c666163743d6e6f6e657c636c6f636b3d2a"

	ckptIdentAll      = "entity=*|scope=*|fact=none|clock=*"
	ckptIdentLoadFlag = "entity=entity:cursor-load-flag|scope=*|fact=none|clock=*"
)

// ckptMinimal is a record of the two required keys.
func ckptMinimal(pos byte, started bool) []ckptKV {
	s := ckptFalse
	if started {
		s = ckptTrue
	}
	return []ckptKV{{"position", []byte{pos}}, {"started", s}}
}

// ckptDecodeCase is one Decode case (also a fuzz seed).
type ckptDecodeCase struct {
	name    string
	data    []byte
	want    Record
	wantErr bool
}

var ckptDecodeCases = func() []ckptDecodeCase {
	full := func(extra ...ckptKV) []byte {
		return ckptMap(append([]ckptKV{
			{"position", ckptMustHex("cd012c")},
			{"started", ckptTrue},
			{"process_boot_ns", ckptNil},
			{"region_identity", ckptStr(ckptIdentAll)},
			{"journal_id", ckptStr("j1")},
			{"owner", ckptStr("w1")},
			{"updated_ms", ckptMustHex("cf 0000018bcfe5687b")},
		}, extra...)...)
	}
	fullRec := Record{Position: 300, Started: true, RegionIdentity: ckptPtr(ckptIdentAll),
		JournalID: "j1", Owner: "w1", UpdatedMs: 1_700_000_000_123}
	with := func(key string, val []byte) []byte {
		return ckptMap(append(ckptMinimal(5, true), ckptKV{key, val})...)
	}
	ok5 := Record{Position: 5, Started: true}
	bad := func(name string, data []byte) ckptDecodeCase {
		return ckptDecodeCase{name: name, data: data, wantErr: true}
	}
	good := func(name string, data []byte, want Record) ckptDecodeCase {
		return ckptDecodeCase{name: name, data: data, want: want}
	}
	validFull := full()
	return append([]ckptDecodeCase{
		good("golden four-key A", ckptMustHex(ckptGoldenA), Record{RegionIdentity: ckptPtr(ckptIdentAll)}),
		good("golden four-key B", ckptMustHex(ckptGoldenB), Record{Position: 7, Started: true, RegionIdentity: ckptPtr(ckptIdentLoadFlag)}),
		good("seven keys", validFull, fullRec),
		good("seven keys reordered", ckptMap(
			ckptKV{"updated_ms", ckptMustHex("cf 0000018bcfe5687b")},
			ckptKV{"owner", ckptStr("w1")},
			ckptKV{"journal_id", ckptStr("j1")},
			ckptKV{"region_identity", ckptStr(ckptIdentAll)},
			ckptKV{"process_boot_ns", ckptNil},
			ckptKV{"started", ckptTrue},
			ckptKV{"position", ckptMustHex("cd012c")},
		), fullRec),
		good("extra unknown key", full(ckptKV{"future", ckptStr("x")}), fullRec),
		good("extra unknown nested value", full(ckptKV{"future", ckptMap(ckptKV{"a", []byte{0x92, 0x01, 0xc0}})}), fullRec),
		good("only required keys", ckptMap(ckptMinimal(5, true)...), ok5),
		good("process_boot_ns 42", with("process_boot_ns", []byte{0x2a}), ok5),
		good("process_boot_ns u64", with("process_boot_ns", ckptMustHex("cf ffffffffffffffff")), ok5),
		good("process_boot_ns string", with("process_boot_ns", ckptStr("boot")), ok5),
		good("region_identity nil", with("region_identity", ckptNil), ok5),
		good("journal_id nil", with("journal_id", ckptNil), ok5),
		good("owner nil", with("owner", ckptNil), ok5),
		good("updated_ms nil", with("updated_ms", ckptNil), ok5),
		good("position u64 max", ckptMap(ckptKV{"position", ckptMustHex("cf ffffffffffffffff")}, ckptKV{"started", ckptTrue}),
			Record{Position: ^uint64(0), Started: true}),
		good("position non-minimal u32", ckptMap(ckptKV{"position", ckptMustHex("ce 00000005")}, ckptKV{"started", ckptTrue}), ok5),
		good("position non-negative int8", ckptMap(ckptKV{"position", ckptMustHex("d0 05")}, ckptKV{"started", ckptTrue}), ok5),
		good("map16 header", append([]byte{0xde, 0x00, 0x02}, ckptMap(ckptMinimal(5, true)...)[1:]...), ok5),
		bad("empty input", nil),
		bad("not-msgpack", []byte("not-msgpack")),
		bad("nil", ckptNil),
		bad("array", []byte{0x92, 0x05, 0xc3}),
		bad("array of a record", append([]byte{0x91}, validFull...)),
		bad("positive fixint", []byte{0x05}),
		bad("string", ckptStr("position")),
		bad("empty map", []byte{0x80}),
		bad("missing position", ckptMap(ckptKV{"started", ckptTrue})),
		bad("missing started", ckptMap(ckptKV{"position", []byte{0x05}})),
		bad("position string", ckptMap(ckptKV{"position", ckptStr("5")}, ckptKV{"started", ckptTrue})),
		bad("position negative fixint", ckptMap(ckptKV{"position", []byte{0xff}}, ckptKV{"started", ckptTrue})),
		bad("position negative int8", ckptMap(ckptKV{"position", ckptMustHex("d0 fb")}, ckptKV{"started", ckptTrue})),
		bad("position negative int64", ckptMap(ckptKV{"position", ckptMustHex("d3 8000000000000000")}, ckptKV{"started", ckptTrue})),
		bad("position float", ckptMap(ckptKV{"position", ckptMustHex("cb 4014000000000000")}, ckptKV{"started", ckptTrue})),
		bad("position nil", ckptMap(ckptKV{"position", ckptNil}, ckptKV{"started", ckptTrue})),
		bad("position bool", ckptMap(ckptKV{"position", ckptTrue}, ckptKV{"started", ckptTrue})),
		bad("started int", ckptMap(ckptKV{"position", []byte{0x05}}, ckptKV{"started", []byte{0x01}})),
		bad("started string", ckptMap(ckptKV{"position", []byte{0x05}}, ckptKV{"started", ckptStr("true")})),
		bad("started nil", ckptMap(ckptKV{"position", []byte{0x05}}, ckptKV{"started", ckptNil})),
		bad("region_identity int", with("region_identity", []byte{0x01})),
		bad("region_identity bool", with("region_identity", ckptTrue)),
		bad("journal_id int", with("journal_id", []byte{0x01})),
		bad("owner array", with("owner", []byte{0x90})),
		bad("updated_ms string", with("updated_ms", ckptStr("1700000000000"))),
		bad("updated_ms negative", with("updated_ms", []byte{0xff})),
		bad("key not a string", append([]byte{0x83}, append(ckptMap(ckptMinimal(5, true)...)[1:], 0x01, 0x02)...)),
		bad("trailing nil", append(append([]byte(nil), validFull...), 0xc0)),
		bad("two records", append(append([]byte(nil), validFull...), validFull...)),
		bad("truncated last byte", validFull[:len(validFull)-1]),
		bad("truncated in a key", validFull[:5]),
		bad("truncated after header", validFull[:1]),
		bad("map claims more entries", append([]byte{0x83}, ckptMap(ckptMinimal(5, true)...)[1:]...)),
		bad("map32 claims 2^32-1 entries", ckptMustHex("df ffffffff a8 706f736974696f6e 05")),
		bad("string length past the end", ckptMustHex("81 d9 ff 70")),
	}, ckptWireCases...)
}()

// ckptWireCases pin what the decoder makes of encodings the encoder never
// writes but another MessagePack encoder may (SPEC §8.3, CKP-02): a map32
// header, str16/str32 strings, a bin value in a string field, integers
// written signed. They are part of ckptDecodeCases too (fuzz seeds).
var ckptWireCases = func() []ckptDecodeCase {
	validFull := ckptMap(
		ckptKV{"position", ckptMustHex("cd012c")},
		ckptKV{"started", ckptTrue},
		ckptKV{"process_boot_ns", ckptNil},
		ckptKV{"region_identity", ckptStr(ckptIdentAll)},
		ckptKV{"journal_id", ckptStr("j1")},
		ckptKV{"owner", ckptStr("w1")},
		ckptKV{"updated_ms", ckptMustHex("cf 0000018bcfe5687b")},
	)
	fullRec := Record{Position: 300, Started: true, RegionIdentity: ckptPtr(ckptIdentAll),
		JournalID: "j1", Owner: "w1", UpdatedMs: 1_700_000_000_123}
	with := func(key string, val []byte) []byte {
		return ckptMap(append(ckptMinimal(5, true), ckptKV{key, val})...)
	}
	ok5 := Record{Position: 5, Started: true}
	bad := func(name string, data []byte) ckptDecodeCase {
		return ckptDecodeCase{name: name, data: data, wantErr: true}
	}
	good := func(name string, data []byte, want Record) ckptDecodeCase {
		return ckptDecodeCase{name: name, data: data, want: want}
	}
	return []ckptDecodeCase{
		good("map32 header", append([]byte{0xdf, 0x00, 0x00, 0x00, 0x02}, ckptMap(ckptMinimal(5, true)...)[1:]...), ok5),
		good("map32 header, seven keys", append([]byte{0xdf, 0x00, 0x00, 0x00, 0x07}, validFull[1:]...), fullRec),

		// Strings of every width are accepted in the string fields,
		// including the non-minimal str16 and str32 (the encoder never
		// writes them, other encoders may).
		good("region_identity str16", with("region_identity", append(ckptMustHex("da 0001"), 'r')), Record{Position: 5, Started: true, RegionIdentity: ckptPtr("r")}),
		good("region_identity str32", with("region_identity", append(ckptMustHex("db 00000022"), ckptIdentAll...)), Record{Position: 5, Started: true, RegionIdentity: ckptPtr(ckptIdentAll)}),
		good("journal_id str32", with("journal_id", append(ckptMustHex("db 00000002"), "j1"...)), Record{Position: 5, Started: true, JournalID: "j1"}),
		good("owner str32", with("owner", append(ckptMustHex("db 00000002"), "w1"...)), Record{Position: 5, Started: true, Owner: "w1"}),
		good("owner str32 empty", with("owner", ckptMustHex("db 00000000")), ok5),
		good("owner str8 empty", with("owner", ckptMustHex("d9 00")), ok5),

		// A zero written as a signed integer of any width is 0, not an
		// error (and not refused as negative).
		good("position int8 zero", ckptMap(ckptKV{"position", ckptMustHex("d0 00")}, ckptKV{"started", ckptFalse}), Record{}),
		good("position int16 zero", ckptMap(ckptKV{"position", ckptMustHex("d1 0000")}, ckptKV{"started", ckptFalse}), Record{}),
		good("position int32 zero", ckptMap(ckptKV{"position", ckptMustHex("d2 00000000")}, ckptKV{"started", ckptFalse}), Record{}),
		good("position int64 zero", ckptMap(ckptKV{"position", ckptMustHex("d3 0000000000000000")}, ckptKV{"started", ckptFalse}), Record{}),
		good("position int16 positive", ckptMap(ckptKV{"position", ckptMustHex("d1 012c")}, ckptKV{"started", ckptTrue}), Record{Position: 300, Started: true}),
		good("position int32 positive", ckptMap(ckptKV{"position", ckptMustHex("d2 00010000")}, ckptKV{"started", ckptTrue}), Record{Position: 65536, Started: true}),
		good("position int64 max", ckptMap(ckptKV{"position", ckptMustHex("d3 7fffffffffffffff")}, ckptKV{"started", ckptTrue}), Record{Position: 1<<63 - 1, Started: true}),
		good("updated_ms int8 zero", with("updated_ms", ckptMustHex("d0 00")), ok5),
		good("updated_ms int16 zero", with("updated_ms", ckptMustHex("d1 0000")), ok5),
		good("updated_ms int32 zero", with("updated_ms", ckptMustHex("d2 00000000")), ok5),
		good("updated_ms int64 zero", with("updated_ms", ckptMustHex("d3 0000000000000000")), ok5),
		good("updated_ms int64 positive", with("updated_ms", ckptMustHex("d3 0000018bcfe5687b")), Record{Position: 5, Started: true, UpdatedMs: 1_700_000_000_123}),
		good("updated_ms uint8", with("updated_ms", ckptMustHex("cc ff")), Record{Position: 5, Started: true, UpdatedMs: 255}),

		bad("updated_ms negative int8", with("updated_ms", ckptMustHex("d0 ff"))),
		bad("updated_ms negative int16", with("updated_ms", ckptMustHex("d1 ffff"))),
		bad("updated_ms negative int32", with("updated_ms", ckptMustHex("d2 80000000"))),
		bad("updated_ms negative int64", with("updated_ms", ckptMustHex("d3 ffffffffffffffff"))),
		bad("updated_ms float", with("updated_ms", ckptMustHex("cb 0000000000000000"))),
		bad("updated_ms bool", with("updated_ms", ckptTrue)),
		bad("position negative int16", ckptMap(ckptKV{"position", ckptMustHex("d1 ffff")}, ckptKV{"started", ckptTrue})),
		bad("position negative int32", ckptMap(ckptKV{"position", ckptMustHex("d2 ffffffff")}, ckptKV{"started", ckptTrue})),
		bad("position float32 zero", ckptMap(ckptKV{"position", ckptMustHex("ca 00000000")}, ckptKV{"started", ckptTrue})),

		// A bin value is not a string: the decoder refuses it in every
		// string field (msgpack's DecodeString alone would accept it).
		bad("region_identity bin8", with("region_identity", append(ckptMustHex("c4 22"), ckptIdentAll...))),
		bad("region_identity bin16", with("region_identity", append(ckptMustHex("c5 0001"), 'r'))),
		bad("region_identity bin32", with("region_identity", append(ckptMustHex("c6 00000001"), 'r'))),
		bad("journal_id bin8", with("journal_id", append(ckptMustHex("c4 02"), "j1"...))),
		bad("owner bin8", with("owner", append(ckptMustHex("c4 02"), "w1"...))),
		bad("owner bin8 empty", with("owner", ckptMustHex("c4 00"))),
		bad("owner bin32", with("owner", append(ckptMustHex("c6 00000002"), "w1"...))),
		bad("str32 value past the end", with("owner", append(ckptMustHex("db 00000003"), "w1"...))),
	}
}()

func ckptFormatRecord(r Record) string {
	ident := "<nil>"
	if r.RegionIdentity != nil {
		ident = strconv.Quote(*r.RegionIdentity)
	}
	return fmt.Sprintf("{Position:%d Started:%t RegionIdentity:%s JournalID:%q Owner:%q UpdatedMs:%d}",
		r.Position, r.Started, ident, r.JournalID, r.Owner, r.UpdatedMs)
}

// ---- stores ---------------------------------------------------------------

// ckptStoreCase is one store implementation with a way to plant record bytes.
type ckptStoreCase struct {
	name  string
	store Store
	plant func(t testing.TB, id string, record []byte)
	// raw returns the record bytes of id as stored.
	raw func(t testing.TB, id string) []byte
}

func ckptStores(t testing.TB) []ckptStoreCase {
	t.Helper()
	mem := NewMemoryStore()
	file := NewFileStore(t.TempDir())
	return []ckptStoreCase{
		{
			name:  "memory",
			store: mem,
			plant: func(t testing.TB, id string, record []byte) { mem.PutRaw(id, record) },
			raw: func(t testing.TB, id string) []byte {
				mem.mu.Lock()
				defer mem.mu.Unlock()
				r, ok := mem.records[id]
				if !ok {
					t.Fatalf("no record %q", id)
				}
				return r.data
			},
		},
		{
			name:  "file",
			store: file,
			plant: func(t testing.TB, id string, record []byte) {
				t.Helper()
				if err := file.PutRecord(id, record, 1); err != nil {
					t.Fatal(err)
				}
			},
			raw: func(t testing.TB, id string) []byte {
				t.Helper()
				data, err := os.ReadFile(file.Location(id))
				if err != nil {
					t.Fatal(err)
				}
				_, body, err := parseCheckpointFile(data)
				if err != nil {
					t.Fatal(err)
				}
				return body
			},
		},
	}
}

func ckptCtx(t testing.TB) context.Context {
	t.Helper()
	return t.Context()
}

func ckptExpectCorrupt(t testing.TB, err error, store Store, id string) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("error %v, want ErrCorrupt", err)
	}
	if errors.Is(err, ErrIO) || errors.Is(err, ErrNotFound) {
		t.Fatalf("corrupt error also matches I/O or not found: %v", err)
	}
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is no *CorruptError", err, err)
	}
	if ce.ID != id || ce.Location != store.Location(id) || ce.Reason == "" {
		t.Fatalf("CorruptError = %+v, want ID %q, Location %q and a reason", *ce, id, store.Location(id))
	}
}

// ---- CKP-01 ---------------------------------------------------------------

// Catalogue: CKP-01.
func TestCKP01_RecordRoundTrip(t *testing.T) {
	ident := engine.RegionEntity("entity:roundtrip").Identity()
	if ident != "entity=entity:roundtrip|scope=*|fact=none|clock=*" {
		t.Fatalf("identity %q", ident)
	}
	rec := Record{Position: 42, Started: true, RegionIdentity: &ident,
		JournalID: engine.NewID128().String(), Owner: "host-1-abcdef", UpdatedMs: 1_700_000_000_123}

	t.Run("memory", func(t *testing.T) {
		s := NewMemoryStore()
		rev, err := s.Save(ckptCtx(t), "roundtrip", rec, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, gotRev, err := s.Load(ckptCtx(t), "roundtrip")
		if err != nil || gotRev != rev || !reflect.DeepEqual(got, rec) {
			t.Fatalf("load = %s, %d, %v; want %s, %d", ckptFormatRecord(got), gotRev, err, ckptFormatRecord(rec), rev)
		}
	})

	t.Run("file writes only under its directory", func(t *testing.T) {
		parent := t.TempDir()
		sibling := filepath.Join(parent, "sibling.txt")
		if err := os.WriteFile(sibling, []byte("untouched"), 0o644); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(parent, "data") // does not exist yet
		s := NewFileStore(dir)
		ids := []string{"roundtrip", "a b", strings.Repeat("é", 512)}
		for _, id := range ids {
			rev, err := s.Save(ckptCtx(t), id, rec, 0)
			if err != nil {
				t.Fatalf("save %q: %v", id, err)
			}
			if rev, err = s.Save(ckptCtx(t), id, rec, rev); err != nil {
				t.Fatalf("update %q: %v", id, err)
			}
			got, gotRev, err := s.Load(ckptCtx(t), id)
			if err != nil || gotRev != rev || !reflect.DeepEqual(got, rec) {
				t.Fatalf("load %q = %s, %d, %v; want %s, %d", id, ckptFormatRecord(got), gotRev, err, ckptFormatRecord(rec), rev)
			}
			loc := s.Location(id)
			if !strings.HasPrefix(loc, filepath.Join(dir, "cursors")+string(filepath.Separator)) {
				t.Errorf("Location(%q) = %q, not under %s/cursors", id, loc, dir)
			}
		}
		err := filepath.WalkDir(parent, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(parent, path)
			switch {
			case rel == ".", rel == "sibling.txt", rel == "data":
			case strings.HasPrefix(rel, "data"+string(filepath.Separator)):
				if strings.Contains(d.Name(), ".tmp-") {
					t.Errorf("temporary file left behind: %s", rel)
				}
			default:
				t.Errorf("the file store wrote %s outside its directory %s", rel, dir)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(sibling); err != nil || string(b) != "untouched" {
			t.Errorf("sibling file changed: %q, %v", b, err)
		}
	})
}

// ---- CKP-02 ---------------------------------------------------------------

// Catalogue: CKP-02.
func TestCKP02_RecordEncoding(t *testing.T) {
	t.Run("goldens decode", func(t *testing.T) {
		for _, g := range []struct {
			hex  string
			want Record
		}{
			{ckptGoldenA, Record{Position: 0, Started: false, RegionIdentity: ckptPtr(ckptIdentAll)}},
			{ckptGoldenB, Record{Position: 7, Started: true, RegionIdentity: ckptPtr(ckptIdentLoadFlag)}},
		} {
			data := ckptHex(t, g.hex)
			got, err := Decode(data)
			if err != nil {
				t.Fatalf("decode golden: %v", err)
			}
			if !reflect.DeepEqual(got, g.want) {
				t.Fatalf("golden decodes to %s, want %s", ckptFormatRecord(got), ckptFormatRecord(g.want))
			}
			for _, sc := range ckptStores(t) {
				sc.plant(t, "golden", data)
				got, _, err := sc.store.Load(ckptCtx(t), "golden")
				if err != nil || !reflect.DeepEqual(got, g.want) {
					t.Fatalf("%s: load golden = %s, %v", sc.name, ckptFormatRecord(got), err)
				}
			}
		}
	})

	t.Run("golden re-encodes with seven keys", func(t *testing.T) {
		rec, err := Decode(ckptHex(t, ckptGoldenB))
		if err != nil {
			t.Fatal(err)
		}
		want := ckptMap(
			ckptKV{"position", []byte{0x07}},
			ckptKV{"started", ckptTrue},
			ckptKV{"process_boot_ns", ckptNil},
			ckptKV{"region_identity", ckptStr(ckptIdentLoadFlag)},
			ckptKV{"journal_id", ckptNil},
			ckptKV{"owner", ckptStr("")},
			ckptKV{"updated_ms", []byte{0x00}},
		)
		if got := Encode(rec); !bytes.Equal(got, want) {
			t.Fatalf("re-encoded golden\n got %x\nwant %x", got, want)
		}
	})

	t.Run("full record, bytes by hand", func(t *testing.T) {
		rec := Record{Position: 300, Started: true, RegionIdentity: ckptPtr(ckptIdentAll),
			JournalID: "0123456789abcdef0123456789abcdef", Owner: "w1", UpdatedMs: 1_700_000_000_123}
		want := ckptHex(t, ""+
			"87"+ // fixmap, 7 entries
			"a8 706f736974696f6e"+ // "position"
			"cd 012c"+ // uint16 300
			"a7 73746172746564"+ // "started"
			"c3"+ // true
			"af 70726f636573735f626f6f745f6e73"+ // "process_boot_ns"
			"c0"+ // nil
			"af 726567696f6e5f6964656e74697479"+ // "region_identity"
			"d9 22 656e746974793d2a7c73636f70653d2a7c666163743d6e6f6e657c636c6f636b3d2a"+ // str8, 34 bytes
			"aa 6a6f75726e616c5f6964"+ // "journal_id"
			"d9 20 3031323334353637383961626364656630313233343536373839616263646566"+ // str8, 32 bytes
			"a5 6f776e6572"+ // "owner"
			"a2 7731"+ // "w1"
			"aa 757064617465645f6d73"+ // "updated_ms"
			"cf 0000018bcfe5687b") // uint64 1700000000123
		if got := Encode(rec); !bytes.Equal(got, want) {
			t.Fatalf("Encode\n got %x\nwant %x", got, want)
		}
	})

	t.Run("minimal widths", func(t *testing.T) {
		base := func(started bool, owner string) []ckptKV {
			s := ckptFalse
			if started {
				s = ckptTrue
			}
			return []ckptKV{
				{"position", nil}, // filled below
				{"started", s},
				{"process_boot_ns", ckptNil},
				{"region_identity", ckptNil},
				{"journal_id", ckptNil},
				{"owner", ckptStr(owner)},
				{"updated_ms", nil}, // filled below
			}
		}
		cases := []struct {
			name     string
			pos      uint64
			started  bool
			owner    string
			updated  uint64
			posHex   string
			updHex   string
			ownerHdr string
		}{
			{"position 0, not started", 0, false, "", 0, "00", "00", "a0"},
			{"position 127 fixint", 127, true, "w", 1, "7f", "01", "a1"},
			{"position 128 uint8", 128, true, "w", 255, "cc80", "ccff", "a1"},
			{"position 300 uint16", 300, true, "w", 65535, "cd012c", "cdffff", "a1"},
			{"position 65536 uint32", 65536, true, strings.Repeat("o", 31), 1<<32 - 1, "ce00010000", "ceffffffff", "bf"},
			{"position 2^32 uint64", 1 << 32, true, strings.Repeat("o", 32), 1_700_000_000_123, "cf0000000100000000", "cf0000018bcfe5687b", "d920"},
			{"13-digit updated_ms", 1, false, strings.Repeat("o", 256), 9_999_999_999_999, "01", "cf000009184e729fff", "da0100"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				kvs := base(c.started, c.owner)
				kvs[0].val = ckptHex(t, c.posHex)
				kvs[6].val = ckptHex(t, c.updHex)
				want := ckptMap(kvs...)
				if !bytes.HasPrefix(ckptStr(c.owner), ckptHex(t, c.ownerHdr)) {
					t.Fatalf("test bug: owner header %s", c.ownerHdr)
				}
				rec := Record{Position: c.pos, Started: c.started, Owner: c.owner, UpdatedMs: c.updated}
				got := Encode(rec)
				if !bytes.Equal(got, want) {
					t.Fatalf("Encode\n got %x\nwant %x", got, want)
				}
				back, err := Decode(got)
				if err != nil || !reflect.DeepEqual(back, rec) {
					t.Fatalf("decode back = %s, %v; want %s", ckptFormatRecord(back), err, ckptFormatRecord(rec))
				}
			})
		}
	})

	t.Run("reordered keys and an extra key load", func(t *testing.T) {
		want := Record{Position: 300, Started: true, RegionIdentity: ckptPtr(ckptIdentAll), JournalID: "j1", Owner: "w1", UpdatedMs: 1_700_000_000_123}
		for _, name := range []string{"seven keys reordered", "extra unknown key", "extra unknown nested value"} {
			c := ckptDecodeCaseNamed(t, name)
			for _, sc := range ckptStores(t) {
				sc.plant(t, "x", c.data)
				got, _, err := sc.store.Load(ckptCtx(t), "x")
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Fatalf("%s, %s: load = %s, %v", name, sc.name, ckptFormatRecord(got), err)
				}
			}
		}
	})

	t.Run("an array is corrupt", func(t *testing.T) {
		arr := ckptHex(t, "92 05 c3")
		if _, err := Decode(arr); err == nil {
			t.Fatal("Decode accepted an array")
		}
		for _, sc := range ckptStores(t) {
			sc.plant(t, "arr", arr)
			_, _, err := sc.store.Load(ckptCtx(t), "arr")
			ckptExpectCorrupt(t, err, sc.store, "arr")
		}
	})
}

func ckptDecodeCaseNamed(t testing.TB, name string) ckptDecodeCase {
	t.Helper()
	for _, c := range ckptDecodeCases {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no decode case %q", name)
	return ckptDecodeCase{}
}

// TestCheckpointDecodeTable runs Decode over the table, and each
// case through the memory store: a decode failure must load as
// ErrCorrupt.
func TestCheckpointDecodeTable(t *testing.T) {
	for _, c := range ckptDecodeCases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Decode(c.data)
			if c.wantErr {
				if err == nil {
					t.Fatalf("Decode(%x) = %s, want an error", c.data, ckptFormatRecord(got))
				}
			} else if err != nil {
				t.Fatalf("Decode(%x): %v", c.data, err)
			} else if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("Decode = %s, want %s", ckptFormatRecord(got), ckptFormatRecord(c.want))
			}

			s := NewMemoryStore()
			s.PutRaw("case", c.data)
			_, _, lerr := s.Load(ckptCtx(t), "case")
			if c.wantErr {
				ckptExpectCorrupt(t, lerr, s, "case")
			} else if lerr != nil {
				t.Fatalf("load: %v", lerr)
			}
		})
	}
}

// Catalogue: CKP-02. The decoder's decisions on encodings the encoder
// never writes (ckptWireCases), through Decode and through every store's
// Load: a map32 header and str16/str32 strings are accepted, a bin value
// in a string field is refused, a signed zero is 0 and a negative signed
// integer is refused. A refusal loads as ErrCorrupt, never as I/O or
// absence.
func TestCKP02_DecodeWireForms(t *testing.T) {
	for _, c := range ckptWireCases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Decode(c.data)
			switch {
			case c.wantErr && err == nil:
				t.Fatalf("Decode(%x) = %s, want an error", c.data, ckptFormatRecord(got))
			case !c.wantErr && err != nil:
				t.Fatalf("Decode(%x): %v", c.data, err)
			case !c.wantErr && !reflect.DeepEqual(got, c.want):
				t.Fatalf("Decode(%x) = %s, want %s", c.data, ckptFormatRecord(got), ckptFormatRecord(c.want))
			}
			for _, sc := range ckptStores(t) {
				sc.plant(t, "wire", c.data)
				rec, _, err := sc.store.Load(ckptCtx(t), "wire")
				if c.wantErr {
					ckptExpectCorrupt(t, err, sc.store, "wire")
					continue
				}
				if err != nil || !reflect.DeepEqual(rec, c.want) {
					t.Fatalf("%s: load = %s, %v; want %s", sc.name, ckptFormatRecord(rec), err, ckptFormatRecord(c.want))
				}
			}
		})
	}
}

// ---- CKP-06 ---------------------------------------------------------------

// Catalogue: CKP-06.
func TestCKP06_ZeroLengthRecordIsCorrupt(t *testing.T) {
	for _, sc := range ckptStores(t) {
		t.Run(sc.name, func(t *testing.T) {
			sc.plant(t, "zero", nil)
			_, _, err := sc.store.Load(ckptCtx(t), "zero")
			ckptExpectCorrupt(t, err, sc.store, "zero")
			// Never a silent rewind: a worker start fails the same way.
			_, err = loadCheckpoint(ckptCtx(t), sc.store, "zero", engine.RegionAll())
			ckptExpectCorrupt(t, err, sc.store, "zero")
		})
	}
	t.Run("file of zero bytes", func(t *testing.T) {
		s := NewFileStore(t.TempDir())
		if err := s.PutRaw("zero", nil); err != nil {
			t.Fatal(err)
		}
		_, _, err := s.Load(ckptCtx(t), "zero")
		ckptExpectCorrupt(t, err, s, "zero")
	})
}

// ---- CKP-08 ---------------------------------------------------------------

// Catalogue: CKP-08.
func TestCKP08_RecordWithoutRegionIdentity(t *testing.T) {
	region := engine.RegionEntity("entity:cursor-b")
	for _, sc := range ckptStores(t) {
		t.Run(sc.name, func(t *testing.T) {
			absent := ckptMap(ckptMinimal(3, true)...)
			explicitNil := ckptMap(append(ckptMinimal(3, true), ckptKV{"region_identity", ckptNil})...)
			for _, data := range [][]byte{absent, explicitNil} {
				sc.plant(t, "noregion", data)
				rec, _, err := sc.store.Load(ckptCtx(t), "noregion")
				if err != nil {
					t.Fatalf("load: %v", err)
				}
				if rec.RegionIdentity != nil {
					t.Fatalf("RegionIdentity = %q, want nil", *rec.RegionIdentity)
				}
				_, err = loadCheckpoint(ckptCtx(t), sc.store, "noregion", region)
				if !errors.Is(err, ErrRegionMismatch) {
					t.Fatalf("loadCheckpoint: %v, want ErrRegionMismatch", err)
				}
				var rm *RegionMismatchError
				if !errors.As(err, &rm) {
					t.Fatalf("loadCheckpoint: %T is no *RegionMismatchError", err)
				}
				if rm.Stored != nil || rm.Expected != region.Identity() || rm.Location != sc.store.Location("noregion") {
					t.Fatalf("RegionMismatchError = %+v, want Stored nil, Expected %q, Location %q",
						*rm, region.Identity(), sc.store.Location("noregion"))
				}
				if !strings.Contains(rm.Error(), "none") || !strings.Contains(rm.Error(), "entity:cursor-b") {
					t.Errorf("message %q lacks the absent stored identity or the expected one", rm.Error())
				}
			}

			// CKP-07 at the same level: another region's identity is reported.
			other := engine.RegionEntity("entity:cursor-a").Identity()
			sc.plant(t, "other", ckptMap(append(ckptMinimal(3, true), ckptKV{"region_identity", ckptStr(other)})...))
			_, err := loadCheckpoint(ckptCtx(t), sc.store, "other", region)
			var rm *RegionMismatchError
			if !errors.As(err, &rm) || rm.Stored == nil || *rm.Stored != other || rm.Expected != region.Identity() {
				t.Fatalf("loadCheckpoint of another region: %v", err)
			}

			// And the matching identity resumes.
			sc.plant(t, "mine", ckptMap(append(ckptMinimal(3, true), ckptKV{"region_identity", ckptStr(region.Identity())})...))
			rp, err := loadCheckpoint(ckptCtx(t), sc.store, "mine", region)
			if err != nil || rp.Position != 3 || !rp.Started || rp.Revision == 0 || rp.Record == nil {
				t.Fatalf("loadCheckpoint of the matching region = %+v, %v", rp, err)
			}
		})
	}
}

// ---- CKP-09 ---------------------------------------------------------------

// Catalogue: CKP-09.
func TestCKP09_DirectoryAtRecordPathIsIO(t *testing.T) {
	s := NewFileStore(t.TempDir())
	for _, id := range []string{"blocked", "a b", strings.Repeat("é", 512)} {
		path := s.Location(id)
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
		_, _, err := s.Load(ckptCtx(t), id)
		if !errors.Is(err, ErrIO) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotFound) {
			t.Fatalf("load %q: %v, want ErrIO only", id, err)
		}
		_, err = loadCheckpoint(ckptCtx(t), s, id, engine.RegionAll())
		if !errors.Is(err, ErrIO) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("loadCheckpoint %q: %v, want ErrIO", id, err)
		}
		_, err = s.Save(ckptCtx(t), id, Record{Position: 1, Started: true}, 0)
		if !errors.Is(err, ErrIO) || errors.Is(err, ErrConflict) {
			t.Fatalf("save %q: %v, want ErrIO", id, err)
		}
		if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
			t.Fatalf("the directory at %s was disturbed: %v", path, err)
		}
	}
}

// ---- CKP-12 ---------------------------------------------------------------

// Catalogue: CKP-12.
func TestCKP12_ProcessBootNsIgnoredAndRewrittenNil(t *testing.T) {
	ident := engine.RegionAll().Identity()
	data := ckptMap(
		ckptKV{"position", []byte{0x09}},
		ckptKV{"started", ckptTrue},
		ckptKV{"process_boot_ns", []byte{0x2a}},
		ckptKV{"region_identity", ckptStr(ident)},
	)
	for _, sc := range ckptStores(t) {
		t.Run(sc.name, func(t *testing.T) {
			sc.plant(t, "boot", data)
			rec, rev, err := sc.store.Load(ckptCtx(t), "boot")
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if want := (Record{Position: 9, Started: true, RegionIdentity: &ident}); !reflect.DeepEqual(rec, want) {
				t.Fatalf("load = %s, want %s", ckptFormatRecord(rec), ckptFormatRecord(want))
			}
			rec.Position = 10
			if _, err := sc.store.Save(ckptCtx(t), "boot", rec, rev); err != nil {
				t.Fatalf("save: %v", err)
			}
			raw := sc.raw(t, "boot")
			if !bytes.Equal(raw, Encode(rec)) {
				t.Fatalf("stored record %x, want %x", raw, Encode(rec))
			}
			key := append(ckptStr("process_boot_ns"), 0xc0)
			if !bytes.Contains(raw, key) || bytes.Contains(raw, append(ckptStr("process_boot_ns"), 0x2a)) {
				t.Fatalf("stored record %x does not write process_boot_ns as nil", raw)
			}
		})
	}
}

// loadCheckpoint is Load against a source that no rule 5 or 6 refuses:
// the store-only rules (1-4) decide.
func loadCheckpoint(ctx context.Context, store Store, id string, region engine.Region) (Resume, error) {
	return Load(ctx, store, id, region, func(context.Context) (engine.SourceInfo, error) {
		return engine.SourceInfo{Visible: ^uint64(0)}, nil
	})
}

// ---- CKP-15 (unit) --------------------------------------------------------

// Catalogue: CKP-15.
func TestCKP15_CheckSourceUnit(t *testing.T) {
	jid := engine.NewID128()
	info := engine.SourceInfo{JournalID: jid, Visible: 10}
	rec := func(journal string) *Record { return &Record{JournalID: journal} }
	cases := []struct {
		name     string
		rec      *Record
		pos      uint64
		started  bool
		wantErr  error
		checkErr func(t *testing.T, err error)
	}{
		{name: "ahead", rec: rec(jid.String()), pos: 1000, started: true, wantErr: ErrAhead,
			checkErr: func(t *testing.T, err error) {
				var ae *AheadError
				if !errors.As(err, &ae) || *ae != (AheadError{Position: 1000, Visible: 10}) {
					t.Fatalf("error %v, want AheadError{1000, 10}", err)
				}
			}},
		{name: "at the bound is ahead", rec: rec(jid.String()), pos: 10, started: true, wantErr: ErrAhead},
		{name: "visible-1 resumes", rec: rec(jid.String()), pos: 9, started: true},
		{name: "not started is never ahead", rec: rec(jid.String()), pos: 1000, started: false},
		{name: "no record", rec: nil, pos: 0, started: false},
		{name: "record without journal id", rec: rec(""), pos: 9, started: true},
		{name: "journal mismatch", rec: rec("ffffffffffffffffffffffffffffffff"), pos: 1, started: true, wantErr: ErrJournalMismatch,
			checkErr: func(t *testing.T, err error) {
				var jm *JournalMismatchError
				if !errors.As(err, &jm) || jm.Stored != "ffffffffffffffffffffffffffffffff" || jm.Current != jid.String() {
					t.Fatalf("error %v, want JournalMismatchError{ff…, %s}", err, jid)
				}
			}},
		{name: "journal mismatch wins over ahead", rec: rec("other"), pos: 1000, started: true, wantErr: ErrJournalMismatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			journal := ""
			if c.rec != nil {
				journal = c.rec.JournalID
			}
			err := CheckSource(journal, c.pos, c.started, info)
			checkErr(t, err, c.wantErr)
			if c.checkErr != nil {
				c.checkErr(t, err)
			}
		})
	}
}

// ---- CK-03: file key mapping ------------------------------------------------

// ckptRandomID returns a random valid checkpoint id of 1..1024 bytes drawn
// from runes that stress the mapping: verbatim-safe ASCII, the separators
// ids may contain, and multi-byte text.
func ckptRandomID(r *rand.Rand) string {
	alphabets := []string{
		"abcXYZ019_-",
		`abc:*> \.@#%+~!?'"` + "`",
		"aé名前🙂ÿ\u00a0\u2028",
	}
	var b strings.Builder
	target := 1 + r.IntN(1024)
	if r.IntN(4) == 0 {
		target = 1 + r.IntN(16)
	}
	alpha := []rune(alphabets[r.IntN(len(alphabets))])
	if r.IntN(3) == 0 {
		alpha = []rune(strings.Join(alphabets, ""))
	}
	for {
		c := alpha[r.IntN(len(alpha))]
		if b.Len()+utf8.RuneLen(c) > target {
			break
		}
		// Avoid ".." (path traversal) by never following "." with ".".
		if c == '.' && strings.HasSuffix(b.String(), ".") {
			continue
		}
		b.WriteRune(c)
	}
	if b.Len() == 0 {
		return "x"
	}
	return b.String()
}

// Catalogue: CK-03.
func TestCK03_FileKeyMapping(t *testing.T) {
	kib := strings.Repeat("x", 1024)
	ids := []string{
		"witness-cursor", "a.b", "a b", "名前", "x:y@z", `a\b`, "*", ">", kib, "a_b-C9",
		"a_b-c9", ".", "v-x", "h-00", "x.ckpt", "xckpt", kib[:199], kib[:200], kib[:201], kib[:1023],
		strings.Repeat("é", 512), strings.Repeat("é", 100), strings.Repeat("é", 100) + "x",
		strings.Repeat("名", 341), strings.Repeat("🙂", 256),
	}
	r := rand.New(rand.NewPCG(17, 2024))
	for range 2000 {
		ids = append(ids, ckptRandomID(r))
	}

	keys := make(map[string]string) // key -> id
	for _, id := range ids {
		if err := ValidateID(id); err != nil {
			t.Fatalf("test id %q is invalid: %v", id, err)
		}
		key := checkpointFileKey(id)
		back, err := checkpointIDFromFileKey(key)
		if err != nil || back != id {
			t.Fatalf("key %q of id %q reverses to %q, %v", key, id, back, err)
		}
		if prev, dup := keys[key]; dup && prev != id {
			t.Fatalf("ids %q and %q share key %q", prev, id, key)
		}
		keys[key] = id
		if filepath.IsAbs(key) || !filepath.IsLocal(key) || filepath.Clean(key) != key {
			t.Fatalf("key %q of id %q is not a clean local path", key, id)
		}
		for _, comp := range strings.Split(filepath.ToSlash(key), "/") {
			if comp == "" || comp == "." || comp == ".." {
				t.Fatalf("key %q of id %q has component %q", key, id, comp)
			}
			if len(comp) > 255 {
				t.Fatalf("key %q of id %q has a %d-byte component", key, id, len(comp))
			}
		}
		// The saver's temporary file ("." + name + ".tmp-" + a decimal
		// random number) and lock file (name + ".lock") must fit as well.
		if last := filepath.Base(key); len("."+last+".tmp-4294967295") > 255 {
			t.Fatalf("temporary file of id %q would have a %d-byte name", id, len("."+last+".tmp-4294967295"))
		}
	}
	// No record file is a directory of another record, and no lock or
	// temporary file name is a record's.
	for key, id := range keys {
		for dir := filepath.Dir(key); dir != "."; dir = filepath.Dir(dir) {
			if other, clash := keys[dir]; clash {
				t.Fatalf("record %q of %q is a directory of %q (id %q)", dir, other, key, id)
			}
		}
		if other, clash := keys[key+".lock"]; clash {
			t.Fatalf("lock file of %q is the record of %q", id, other)
		}
	}
	// Verbatim ids stay readable.
	if got := checkpointFileKey("witness-cursor"); got != "v-witness-cursor.ckpt" {
		t.Errorf("key of witness-cursor = %q", got)
	}
	if _, err := checkpointIDFromFileKey("cursors.lock"); err == nil {
		t.Errorf("checkpointIDFromFileKey accepted a foreign name")
	}
}

// Catalogue: CK-03. The file names are an on-disk format: a record saved
// by one version must be found by the next, so the mapping documented in
// FileStore's doc is pinned byte for byte. Verbatim is exactly
// [A-Za-z0-9_-] up to 200 bytes (each range's ends, and the bytes just
// outside them, are tried); anything else is hex, split into 200-digit
// directories.
func TestCK03_FileKeyGoldens(t *testing.T) {
	hexOf := func(s string) string { return hex.EncodeToString([]byte(s)) }
	x200, x201 := strings.Repeat("x", 200), strings.Repeat("x", 201)
	h201 := hexOf(x201) // 402 digits
	cases := []struct{ id, key string }{
		{"a", "v-a.ckpt"}, {"z", "v-z.ckpt"}, {"A", "v-A.ckpt"}, {"Z", "v-Z.ckpt"},
		{"0", "v-0.ckpt"}, {"9", "v-9.ckpt"}, {"_", "v-_.ckpt"}, {"-", "v--.ckpt"},
		{"az_AZ-09", "v-az_AZ-09.ckpt"},
		// The bytes around each verbatim range are hex.
		{"`", "h-60.ckpt"}, {"{", "h-7b.ckpt"}, {"@", "h-40.ckpt"}, {"[", "h-5b.ckpt"},
		{".", "h-2e.ckpt"}, {":", "h-3a.ckpt"}, {"^", "h-5e.ckpt"}, {" ", "h-20.ckpt"},
		{"~", "h-7e.ckpt"}, {"é", "h-c3a9.ckpt"},
		// One non-verbatim byte makes the whole id hex.
		{"ab.c", "h-" + hexOf("ab.c") + ".ckpt"},
		{"abc:", "h-" + hexOf("abc:") + ".ckpt"},
		// Length: 200 verbatim bytes stay verbatim, 201 do not.
		{x200, "v-" + x200 + ".ckpt"},
		{x201, filepath.Join("h-"+h201[:200], h201[200:400], h201[400:]) + ".ckpt"},
		// 100 non-verbatim bytes are 200 digits: one name, no directory.
		{strings.Repeat(":", 100), "h-" + strings.Repeat("3a", 100) + ".ckpt"},
		{strings.Repeat(":", 101), filepath.Join("h-"+strings.Repeat("3a", 100), "3a") + ".ckpt"},
	}
	for _, c := range cases {
		if err := ValidateID(c.id); err != nil {
			t.Fatalf("test id %q is invalid: %v", c.id, err)
		}
		if got := checkpointFileKey(c.id); got != c.key {
			t.Errorf("key of %q = %q, want %q", short(c.id), got, c.key)
		}
		if back, err := checkpointIDFromFileKey(c.key); err != nil || back != c.id {
			t.Errorf("id of key %q = %q, %v; want %q", c.key, short(back), err, short(c.id))
		}
	}
	// And the store uses them: a record saved under a verbatim id is the
	// file the golden names.
	dir := t.TempDir()
	s := NewFileStore(dir)
	for _, c := range cases[:2] {
		if _, err := s.Save(ckptCtx(t), c.id, Record{Position: 1, Started: true}, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "cursors", c.key)); err != nil {
			t.Errorf("record of %q is not at cursors/%s: %v", c.id, c.key, err)
		}
	}
}

// short abbreviates long ids in messages.
func short(id string) string {
	if len(id) <= 40 {
		return id
	}
	return fmt.Sprintf("%s…(%d bytes)", id[:20], len(id))
}

// Catalogue: CKP-17 (file store). A record file whose header is intact
// but whose record bytes are empty loads as ErrCorrupt, and its header's
// revision still governs compare-and-swap: a create conflicts, a stale
// update conflicts, an update at that revision replaces the record.
func TestCKP17_FileHeaderOnlyRecord(t *testing.T) {
	s := NewFileStore(t.TempDir())
	const id = "header-only"
	if err := s.PutRecord(id, nil, 3); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(s.Location(id)); err != nil || fi.Size() != ckptHeaderLen {
		t.Fatalf("planted file: %v, %v; want exactly a %d-byte header", fi, err, ckptHeaderLen)
	}
	_, _, err := s.Load(ckptCtx(t), id)
	ckptExpectCorrupt(t, err, s, id)
	var ce *CorruptError
	if errors.As(err, &ce) && strings.Contains(ce.Reason, "header") {
		t.Errorf("reason %q blames the header, which is intact", ce.Reason)
	}

	rec := Record{Position: 4, Started: true, RegionIdentity: ckptPtr(ckptIdentAll)}
	for _, c := range []struct {
		name     string
		expected Revision
		wantErr  error
	}{
		{"create", 0, ErrConflict},
		{"stale update", 2, ErrConflict},
		{"update past the revision", 4, ErrConflict},
		{"update at the header's revision", 3, nil},
	} {
		rev, err := s.Save(ckptCtx(t), id, rec, c.expected)
		checkErr(t, err, c.wantErr)
		if c.wantErr == nil && rev != 4 {
			t.Fatalf("%s: revision %d, want 4", c.name, rev)
		}
	}
	got, rev, err := s.Load(ckptCtx(t), id)
	if err != nil || rev != 4 || !reflect.DeepEqual(got, rec) {
		t.Fatalf("load after the update = %s, %d, %v; want %s, 4", ckptFormatRecord(got), rev, err, ckptFormatRecord(rec))
	}
}

// Catalogue: CKP-03 (and §8.5 rules 1, 5-7 through Load). No record:
// Load asks the source and resumes at (0, false) with revision 0, no
// record, bound to the source's journal; a record resumes at its
// position with its revision. Either way a failing source's error is
// returned as it is (a worker retries transient ones inside source), with
// nothing to resume from.
func TestCKP03_LoadAsksTheSource(t *testing.T) {
	jid := engine.NewID128()
	region := engine.RegionEntity("entity:load")
	ident := region.Identity()
	errSource := errors.New("injected: source unavailable")
	ok := func(context.Context) (engine.SourceInfo, error) {
		return engine.SourceInfo{JournalID: jid, Visible: 10}, nil
	}
	failing := func(context.Context) (engine.SourceInfo, error) {
		return engine.SourceInfo{JournalID: jid, Visible: 10}, errSource
	}
	cases := []struct {
		name    string
		record  *Record // planted under the id first; nil: none
		source  func(context.Context) (engine.SourceInfo, error)
		want    Resume
		wantErr error
	}{
		{name: "no record", source: ok, want: Resume{JournalID: jid.String()}},
		{name: "no record, source fails", source: failing, wantErr: errSource},
		{name: "record", record: &Record{Position: 9, Started: true, RegionIdentity: &ident}, source: ok,
			want: Resume{Position: 9, Started: true, Revision: 1, JournalID: jid.String()}},
		{name: "record, source fails", record: &Record{Position: 9, Started: true, RegionIdentity: &ident}, source: failing, wantErr: errSource},
		{name: "record ahead", record: &Record{Position: 10, Started: true, RegionIdentity: &ident, JournalID: jid.String()}, source: ok, wantErr: ErrAhead},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := NewMemoryStore()
			if c.record != nil {
				if _, err := s.Save(ckptCtx(t), "load", *c.record, 0); err != nil {
					t.Fatal(err)
				}
			}
			calls := 0
			got, err := Load(ckptCtx(t), s, "load", region, func(ctx context.Context) (engine.SourceInfo, error) {
				calls++
				return c.source(ctx)
			})
			if calls != 1 {
				t.Fatalf("source called %d times, want once", calls)
			}
			checkErr(t, err, c.wantErr)
			if c.wantErr != nil {
				if !reflect.DeepEqual(got, Resume{}) {
					t.Fatalf("Load failed with %v but returned %+v", err, got)
				}
				if errors.Is(err, ErrIO) || errors.Is(err, ErrCorrupt) {
					t.Fatalf("source error %v was rewrapped as a store error", err)
				}
				return
			}
			if c.record == nil {
				if got.Record != nil {
					t.Fatalf("Load without a record returned record %+v", *got.Record)
				}
			} else if got.Record == nil || !reflect.DeepEqual(*got.Record, *c.record) {
				t.Fatalf("Load returned record %v, want %+v", got.Record, *c.record)
			}
			got.Record = nil
			if got != c.want {
				t.Fatalf("Load = %+v, want %+v", got, c.want)
			}
		})
	}
}

// The owner epoch of a partition checkpoint: encoded after the seven keys
// only when set (other records keep their bytes), and read back; a
// decoder that does not know it skips it as an unknown key.
func TestGRP11_RecordEpoch(t *testing.T) {
	ident := "entity=*|scope=*|fact=none|clock=*|part=1/2"
	plain := Record{Position: 7, Started: true, RegionIdentity: &ident, Owner: "m1", UpdatedMs: 1}
	withEpoch := plain
	withEpoch.Epoch = 3
	a, b := Encode(plain), Encode(withEpoch)
	if !bytes.HasPrefix(b[1:], a[1:]) || a[0] != 0x87 || b[0] != 0x88 {
		t.Fatalf("the epoch is not appended after the seven keys: % x vs % x", a, b)
	}
	got, err := Decode(b)
	if err != nil || got.Epoch != 3 || got.Position != 7 {
		t.Fatalf("Decode = %+v, %v", got, err)
	}
	if got, err := Decode(a); err != nil || got.Epoch != 0 {
		t.Fatalf("a record without epoch: %+v, %v", got, err)
	}
}
