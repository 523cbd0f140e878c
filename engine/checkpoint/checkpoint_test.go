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
	return []ckptDecodeCase{
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
