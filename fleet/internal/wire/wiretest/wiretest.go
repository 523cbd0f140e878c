// Package wiretest holds the MessagePack helpers and the corpora of bad
// requests that the wire codec's tests and the writer's tests share.
package wiretest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet/internal/wire"
	"github.com/vmihailenco/msgpack/v5"
)

// MPKV is a MessagePack map for msgpack/v5 that keeps its keys in the
// order given (alternating key, value), so tests control key order.
// msgpack/v5 writes a Go int minimally, but an int64 or uint64 in eight
// bytes (0xd3, 0xcf): tests use those to feed the decoders non-minimal
// integers.
type MPKV []any

func (m MPKV) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeMapLen(len(m) / 2); err != nil {
		return err
	}
	for i := 0; i+1 < len(m); i += 2 {
		if err := enc.Encode(m[i]); err != nil {
			return err
		}
		if err := enc.Encode(m[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// With returns a copy of m with key set to v (replaced in place, or
// appended).
func (m MPKV) With(key string, v any) MPKV {
	out := append(MPKV(nil), m...)
	for i := 0; i+1 < len(out); i += 2 {
		if out[i] == key {
			out[i+1] = v
			return out
		}
	}
	return append(out, key, v)
}

// Without returns a copy of m without key.
func (m MPKV) Without(key string) MPKV {
	var out MPKV
	for i := 0; i+1 < len(m); i += 2 {
		if m[i] != key {
			out = append(out, m[i], m[i+1])
		}
	}
	return out
}

// MP encodes v with msgpack/v5.
func MP(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatalf("msgpack.Marshal: %v", err)
	}
	return b
}

type BadCase struct {
	Name  string
	Body  []byte
	Field string // the field the 400/413 reply must name
	Code  int
	Rule  string // a substring of the rule, when the case pins one
}

// Nested returns depth arrays nested in each other around nil.
func Nested(depth int) []byte {
	return append(bytes.Repeat([]byte{0x91}, depth), 0xc0)
}

func ValidPull() MPKV {
	return MPKV{"v", 1, "region", MPKV{}, "position", 0, "started", false, "max", 10, "max_bytes", 0}
}

func BadPullCases(t testing.TB) []BadCase {
	region := func(r MPKV) []byte { return MP(t, ValidPull().With("region", r)) }
	// A valid request with an unknown key "x" whose value is raw bytes.
	withRaw := func(raw []byte) []byte {
		b := wire.AppendMapLen(nil, 3)
		b = wire.AppendUint(wire.AppendStr(b, "v"), 1)
		b = wire.AppendUint(wire.AppendStr(b, "max"), 1)
		return append(wire.AppendStr(b, "x"), raw...)
	}
	return []BadCase{
		{"malformed msgpack", []byte{0xc1, 0x00}, "body", 400, "map"},
		{"truncated inside position", MP(t, ValidPull().With("position", uint64(1)<<40))[:25], "position", 400, "ends inside"},
		{"truncated inside a key", MP(t, ValidPull())[:14], "body", 400, ""},
		{"empty body", nil, "body", 400, ""},
		{"not a map", MP(t, []any{1, 2}), "body", 400, "map"},
		{"non-string key", MP(t, map[int]int{1: 1}), "body", 400, "string"},
		{"missing v", MP(t, ValidPull().Without("v")), "v", 400, "required"},
		{"v = 2", MP(t, ValidPull().With("v", 2)), "v", 400, "version"},
		{"v as string", MP(t, ValidPull().With("v", "1")), "v", 400, "integer"},
		{"missing max", MP(t, ValidPull().Without("max")), "max", 400, "required"},
		{"max 0", MP(t, ValidPull().With("max", 0)), "max", 400, "at least 1"},
		{"max negative", MP(t, ValidPull().With("max", -3)), "max", 400, "at least 1"},
		{"max over wire.MaxPullEntries", MP(t, ValidPull().With("max", wire.MaxPullEntries+1)), "max", 413, "at most"},
		{"max as string", MP(t, ValidPull().With("max", "10")), "max", 400, ""},
		{"max_bytes negative", MP(t, ValidPull().With("max_bytes", -1)), "max_bytes", 400, ">= 0"},
		{"position negative", MP(t, ValidPull().With("position", -1)), "position", 400, ""},
		{"wait_ms as string", MP(t, ValidPull().With("wait_ms", "100")), "wait_ms", 400, "integer"},
		{"wait_ms negative", MP(t, ValidPull().With("wait_ms", -1)), "wait_ms", 400, "negative"},
		{"wait_ms negative int64", MP(t, ValidPull().With("wait_ms", int64(-5))), "wait_ms", 400, "negative"},
		{"wait_ms as float", MP(t, ValidPull().With("wait_ms", 1.5)), "wait_ms", 400, ""},
		{"wait_ms over 32 bits", MP(t, ValidPull().With("wait_ms", uint64(1)<<32)), "wait_ms", 400, "32-bit"},
		{"started as int", MP(t, ValidPull().With("started", 1)), "started", 400, "boolean"},
		{"region not a map", MP(t, ValidPull().With("region", "all")), "region", 400, "map"},
		{"region as array", MP(t, ValidPull().With("region", []any{"entity", "a"})), "region", 400, "map"},
		{"region entity *", region(MPKV{"entity", "*"}), "region", 400, "glob"},
		{"region entity empty", region(MPKV{"entity", ""}), "region", 400, "empty"},
		{"region entity with separator", region(MPKV{"entity", "a|scope=x"}), "region", 400, ""},
		{"region scope path", region(MPKV{"scope", "a/b"}), "region", 400, ""},
		{"region entity not a string", region(MPKV{"entity", 5}), "region.entity", 400, ""},
		{"region kind and category", region(MPKV{"kind", 0x1001, "category", 1}), "region.kind", 400, "exclusive"},
		{"region kind over 16 bits", region(MPKV{"kind", 0x10000}), "region.kind", 400, "16-bit"},
		{"region category 16", region(MPKV{"category", 16}), "region", 400, "category"},
		{"region category huge", region(MPKV{"category", 1 << 20}), "region.category", 400, ""},
		{"region clock_min only", region(MPKV{"clock_min", 3}), "region.clock_max", 400, "both"},
		{"region clock_max only", region(MPKV{"clock_max", 3}), "region.clock_min", 400, "both"},
		{"region clock_max over 32 bits", region(MPKV{"clock_min", 0, "clock_max", uint64(1) << 32}), "region.clock_max", 400, "32-bit"},
		{"region clock_min over 32 bits", region(MPKV{"clock_min", uint64(1) << 32, "clock_max", 5}), "region.clock_min", 400, "32-bit"},
		{"region clock inverted", region(MPKV{"clock_min", 9, "clock_max", 3}), "region", 400, ""},
		{"region clock negative", region(MPKV{"clock_min", -1, "clock_max", 3}), "region.clock_min", 400, ""},
		{"deeply nested unknown value", withRaw(Nested(10000)), "x", 400, "nested"},
		{"deeply nested unknown map", withRaw(append(bytes.Repeat([]byte{0x81, 0xa1, 'k'}, 5000), 0xc0)), "x", 400, "nested"},
		{"deeply nested unknown in region", region(MPKV{"x", msgpack.RawMessage(Nested(1000))}), "region.x", 400, "nested"},
		{"huge declared unknown array", withRaw([]byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0x01}), "x", 400, ""},
		{"huge declared map", []byte{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v', 0x01}, "body", 400, ""},
	}
}

func ValidEvent() MPKV {
	return MPKV{"entity", "e", "scope", "s", "kind", 0x1001, "payload", []byte("p")}
}

func AppendBody(t testing.TB, events ...any) []byte {
	if events == nil {
		events = []any{}
	}
	return MP(t, MPKV{"v", 1, "events", events})
}

func BadAppendCases(t testing.TB) []BadCase {
	tooMany := wire.AppendArrayLen(wire.AppendStr(wire.AppendUint(wire.AppendStr(wire.AppendMapLen(nil, 2), "v"), 1), "events"), journal.DefaultMaxBatchEvents+1)
	return []BadCase{
		{"malformed msgpack", []byte{0xc1}, "body", 400, "map"},
		{"not a map", MP(t, []any{ValidEvent()}), "body", 400, "map"},
		{"missing v", MP(t, MPKV{"events", []any{ValidEvent()}}), "v", 400, "required"},
		{"v = 2", MP(t, MPKV{"v", 2, "events", []any{ValidEvent()}}), "v", 400, "version"},
		{"missing events", MP(t, MPKV{"v", 1}), "events", 400, "required"},
		{"events not an array", MP(t, MPKV{"v", 1, "events", ValidEvent()}), "events", 400, "array"},
		{"no events", AppendBody(t), "events", 400, "at least one"},
		{"too many events", tooMany, "events", 413, "at most"},
		{"events declared beyond the body", wire.AppendArrayLen(wire.AppendStr(wire.AppendUint(wire.AppendStr(wire.AppendMapLen(nil, 2), "v"), 1), "events"), 1000), "events", 400, ""},
		{"event not a map", AppendBody(t, ValidEvent(), "event"), "events[1]", 400, "map"},
		{"event missing entity", AppendBody(t, ValidEvent().Without("entity")), "events[0].entity", 400, "required"},
		{"event missing scope", AppendBody(t, ValidEvent(), ValidEvent().Without("scope")), "events[1].scope", 400, "required"},
		{"event missing kind", AppendBody(t, ValidEvent().Without("kind")), "events[0].kind", 400, "required"},
		{"invalid entity", AppendBody(t, ValidEvent(), ValidEvent(), ValidEvent().With("entity", "a/b")), "events[2].entity", 400, ""},
		{"empty entity", AppendBody(t, ValidEvent().With("entity", "")), "events[0].entity", 400, "empty"},
		{"entity too long", AppendBody(t, ValidEvent().With("entity", strings.Repeat("e", 1025))), "events[0].entity", 400, "too long"},
		{"invalid scope", AppendBody(t, ValidEvent(), ValidEvent().With("scope", "s|x")), "events[1].scope", 400, ""},
		{"empty scope", AppendBody(t, ValidEvent().With("scope", "")), "events[0].scope", 400, "empty"},
		{"scope too long", AppendBody(t, ValidEvent().With("scope", strings.Repeat("s", 1025))), "events[0].scope", 400, "too long"},
		{"scope control char", AppendBody(t, ValidEvent().With("scope", "s\x01")), "events[0].scope", 400, "control"},
		{"entity not a string", AppendBody(t, ValidEvent().With("entity", 42)), "events[0].entity", 400, ""},
		{"idempotency_key of 15 bytes", AppendBody(t, ValidEvent().With("idempotency_key", make([]byte, 15))), "events[0].idempotency_key", 400, "16 bytes"},
		{"idempotency_key of 17 bytes", AppendBody(t, ValidEvent(), ValidEvent().With("idempotency_key", make([]byte, 17))), "events[1].idempotency_key", 400, "16 bytes"},
		{"kind over 16 bits", AppendBody(t, ValidEvent().With("kind", 0x10000)), "events[0].kind", 400, "16-bit"},
		{"kind negative", AppendBody(t, ValidEvent().With("kind", -1)), "events[0].kind", 400, ""},
		{"payload not bytes", AppendBody(t, ValidEvent().With("payload", 7)), "events[0].payload", 400, ""},
		{"deeply nested unknown in event", AppendBody(t, ValidEvent().With("x", msgpack.RawMessage(Nested(10000)))), "events[0].x", 400, "nested"},
		{"deeply nested unknown at top", MP(t, MPKV{"v", 1, "x", msgpack.RawMessage(Nested(10000)), "events", []any{ValidEvent()}}), "x", 400, "nested"},
	}
}
