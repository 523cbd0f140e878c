package wire_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet/internal/wire"
	"github.com/batfleet/batfleet/fleet/internal/wire/wiretest"
)

// ---------------------------------------------------------------------
// msgpack/v5 helpers: the reference codec the hand-written one is checked
// against.
// ---------------------------------------------------------------------

// mpDecode decodes b with msgpack/v5 into a map.
func mpDecode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := msgpack.Unmarshal(b, &m); err != nil {
		t.Fatalf("msgpack/v5 cannot decode our encoding: %v (% x)", err, b)
	}
	return m
}

// canonical re-encodes MessagePack data with msgpack/v5 (compact
// integers), keeping every map's key order: our encoder claims
// minimal-width encodings "as msgpack/v5 writes them".
func canonical(t testing.TB, b []byte) []byte {
	t.Helper()
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	var out bytes.Buffer
	enc := msgpack.NewEncoder(&out)
	enc.UseCompactInts(true)
	var walk func() error
	walk = func() error {
		code, err := dec.PeekCode()
		if err != nil {
			return err
		}
		switch {
		case code >= 0x80 && code <= 0x8f, code == 0xde, code == 0xdf:
			n, err := dec.DecodeMapLen()
			if err != nil {
				return err
			}
			if err := enc.EncodeMapLen(n); err != nil {
				return err
			}
			for i := 0; i < 2*n; i++ {
				if err := walk(); err != nil {
					return err
				}
			}
			return nil
		case code >= 0x90 && code <= 0x9f, code == 0xdc, code == 0xdd:
			n, err := dec.DecodeArrayLen()
			if err != nil {
				return err
			}
			if err := enc.EncodeArrayLen(n); err != nil {
				return err
			}
			for i := 0; i < n; i++ {
				if err := walk(); err != nil {
					return err
				}
			}
			return nil
		}
		v, err := dec.DecodeInterface()
		if err != nil {
			return err
		}
		return enc.Encode(v)
	}
	if err := walk(); err != nil {
		t.Fatalf("re-encode with msgpack/v5: %v", err)
	}
	if dec.Buffered().(*bytes.Reader).Len() != 0 {
		t.Fatalf("trailing bytes after one value")
	}
	return out.Bytes()
}

// checkCanonical asserts our bytes are exactly what msgpack/v5 writes for
// the same values in the same order.
func checkCanonical(t testing.TB, b []byte) {
	t.Helper()
	if c := canonical(t, b); !bytes.Equal(c, b) {
		t.Errorf("encoding is not minimal-width msgpack:\n ours:     % x\n msgpack:  % x", b, c)
	}
}

func asUint(t testing.TB, v any) uint64 {
	t.Helper()
	switch x := v.(type) {
	case int8:
		if x >= 0 {
			return uint64(x)
		}
	case int16:
		if x >= 0 {
			return uint64(x)
		}
	case int32:
		if x >= 0 {
			return uint64(x)
		}
	case int64:
		if x >= 0 {
			return uint64(x)
		}
	case uint8:
		return uint64(x)
	case uint16:
		return uint64(x)
	case uint32:
		return uint64(x)
	case uint64:
		return x
	}
	t.Fatalf("want a non-negative integer, got %T %v", v, v)
	return 0
}

func asInt(t testing.TB, v any) int64 {
	t.Helper()
	switch x := v.(type) {
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int64:
		return x
	case uint8, uint16, uint32:
		return int64(asUint(t, v))
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
	}
	t.Fatalf("want an integer, got %T %v", v, v)
	return 0
}

func keysOf(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func wantKeys(t testing.TB, what string, m map[string]any, keys ...string) {
	t.Helper()
	sort.Strings(keys)
	if got := keysOf(m); !reflect.DeepEqual(got, keys) {
		t.Errorf("%s keys = %v, want %v", what, got, keys)
	}
}

// ---------------------------------------------------------------------
// Sample values.
// ---------------------------------------------------------------------

func coord(t testing.TB, entity, scope string) engine.Coordinate {
	t.Helper()
	c, err := engine.NewCoordinate(entity, scope)
	if err != nil {
		t.Fatalf("coordinate %q@%q: %v", entity, scope, err)
	}
	return c
}

func id128(b byte) engine.ID128 {
	var id engine.ID128
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

type namedRegion struct {
	name   string
	region engine.Region
}

// sampleRegions has every region shape the protocol carries.
func sampleRegions() []namedRegion {
	return []namedRegion{
		{"all", engine.RegionAll()},
		{"entity", engine.RegionEntity("order:17")},
		{"scope", engine.RegionScope("shop")},
		{"exact kind", engine.RegionAll().WithExact(0x1001)},
		{"exact reserved kind", engine.RegionAll().WithExact(0x0008)},
		{"category", engine.RegionAll().WithCategory(0xA)},
		{"clock range", engine.RegionAll().WithClock(engine.ClockRange{Start: 3, End: 9})},
		{"clock range full", engine.RegionAll().WithClock(engine.ClockRange{Start: 0, End: math.MaxUint32})},
		{"entity scope exact clock", engine.RegionEntity("a").WithScope("s").WithExact(0xF007).WithClock(engine.ClockRange{Start: 1, End: 9})},
		{"entity category clock", engine.RegionEntity("alice").WithCategory(0xF).WithClock(engine.ClockRange{Start: 3, End: 3})},
		{"long unicode entity", engine.RegionEntity(strings.Repeat("é", 300)).WithScope(strings.Repeat("s", 40))},
	}
}

func samplePullRequests() []wire.PullRequest {
	var out []wire.PullRequest
	for i, r := range sampleRegions() {
		out = append(out,
			wire.PullRequest{Region: r.region, Max: 1},
			wire.PullRequest{Region: r.region, Position: uint64(i) * 1000, Started: true, Max: 64, MaxBytes: 1 << 20},
		)
	}
	out = append(out,
		wire.PullRequest{Region: engine.RegionAll(), Position: math.MaxUint64, Started: true, Max: wire.MaxPullEntries, MaxBytes: 1 << 30},
		wire.PullRequest{Region: engine.RegionAll(), Position: 1 << 40, Started: true, Max: 200, MaxBytes: 127},
	)
	return out
}

func sampleEntries(t testing.TB) []engine.Entry {
	return []engine.Entry{
		{Seq: 0, ID: [16]byte{1}, Kind: engine.KindOpenCompleted, Coordinate: engine.LifecycleCoordinate(), Clock: 0, WallMs: 1_700_000_000_000, Payload: []byte{0x80}},
		{Seq: 1, ID: [16]byte{2, 3}, Kind: 0x1001, Coordinate: coord(t, "order:17", "shop"), Clock: 0, WallMs: 0, Payload: nil},
		{Seq: 300, ID: [16]byte{0xff}, Kind: 0xF007, Coordinate: coord(t, strings.Repeat("e", 40), strings.Repeat("s", 300)), Clock: math.MaxUint32, WallMs: -5, Payload: bytes.Repeat([]byte{7}, 300)},
		{Seq: 1 << 40, ID: [16]byte{9, 9, 9}, Kind: 0xFFFF, Coordinate: coord(t, "名前", "scope with spaces"), Clock: 70000, WallMs: math.MaxInt64, Payload: bytes.Repeat([]byte{1, 2}, 40000)},
	}
}

func entriesEqual(a, b []engine.Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Seq != y.Seq || x.ID != y.ID || x.Kind != y.Kind || x.Coordinate != y.Coordinate ||
			x.Clock != y.Clock || x.WallMs != y.WallMs || !bytes.Equal(x.Payload, y.Payload) {
			return false
		}
	}
	return true
}

func rangesEqual(a, b []engine.Range) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func eventsEqual(a, b []engine.Event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Coordinate != y.Coordinate || x.Kind != y.Kind || x.Key != y.Key || !bytes.Equal(x.Payload, y.Payload) {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------
// Round trips and msgpack/v5 cross-checks.
// ---------------------------------------------------------------------

func checkRegionMap(t testing.TB, got any, r engine.Region) {
	t.Helper()
	m, ok := got.(map[string]any)
	if !ok {
		t.Fatalf("region is %T, want a map", got)
	}
	var keys []string
	if e, ok := r.EntityPrefix(); ok {
		keys = append(keys, "entity")
		if m["entity"] != e {
			t.Errorf("region.entity = %v, want %q", m["entity"], e)
		}
	}
	if s, ok := r.Scope(); ok {
		keys = append(keys, "scope")
		if m["scope"] != s {
			t.Errorf("region.scope = %v, want %q", m["scope"], s)
		}
	}
	switch kf := r.Kind(); kf.Mode() {
	case engine.KindFilterExact:
		keys = append(keys, "kind")
		if k := asUint(t, m["kind"]); k != uint64(kf.Kind()) {
			t.Errorf("region.kind = %d, want %d", k, kf.Kind())
		}
	case engine.KindFilterCategory:
		keys = append(keys, "category")
		if c := asUint(t, m["category"]); c != uint64(kf.Category()) {
			t.Errorf("region.category = %d, want %d", c, kf.Category())
		}
	}
	if cr, ok := r.Clock(); ok {
		keys = append(keys, "clock_min", "clock_max")
		if lo, hi := asUint(t, m["clock_min"]), asUint(t, m["clock_max"]); lo != uint64(cr.Start) || hi != uint64(cr.End) {
			t.Errorf("region clock = %d..%d, want %d..%d", lo, hi, cr.Start, cr.End)
		}
	}
	wantKeys(t, "region", m, keys...)
}

func TestPullRequestRoundTrip(t *testing.T) {
	for i, req := range samplePullRequests() {
		t.Run(fmt.Sprintf("%d/%s", i, req.Region.Identity()), func(t *testing.T) {
			b := wire.EncodePullRequest(req)
			got, err := wire.DecodePullRequest(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got != req {
				t.Fatalf("round trip:\n got  %+v\n want %+v", got, req)
			}
			if got.Region.Identity() != req.Region.Identity() {
				t.Errorf("identity %q, want %q", got.Region.Identity(), req.Region.Identity())
			}
			checkCanonical(t, b)
			m := mpDecode(t, b)
			wantKeys(t, "pull request", m, "v", "region", "position", "started", "max", "max_bytes")
			if v := asUint(t, m["v"]); v != wire.ProtocolVersion {
				t.Errorf("v = %d", v)
			}
			if p := asUint(t, m["position"]); p != req.Position {
				t.Errorf("position = %d, want %d", p, req.Position)
			}
			if m["started"] != req.Started {
				t.Errorf("started = %v, want %v", m["started"], req.Started)
			}
			if n := asInt(t, m["max"]); n != int64(req.Max) {
				t.Errorf("max = %d, want %d", n, req.Max)
			}
			if n := asInt(t, m["max_bytes"]); n != int64(req.MaxBytes) {
				t.Errorf("max_bytes = %d, want %d", n, req.MaxBytes)
			}
			checkRegionMap(t, m["region"], req.Region)
		})
	}
}

func TestPullReplyRoundTrip(t *testing.T) {
	cases := []struct {
		name  string
		reply wire.PullReply
	}{
		{"empty", wire.PullReply{JournalID: id128(1), Incarnation: id128(0x20), Epoch: 0, Visible: 1}},
		{"entries", wire.PullReply{JournalID: id128(1), Incarnation: id128(0x20), Epoch: 7, Visible: 1<<40 + 1, Entries: sampleEntries(t)}},
		{"entries and cancelled", wire.PullReply{
			JournalID: id128(0xa0), Incarnation: id128(0xe0), Epoch: math.MaxUint64, Visible: 1<<40 + 1,
			Entries:   sampleEntries(t)[1:3],
			Cancelled: []engine.Range{{Start: 2, End: 3}, {Start: 10, End: 200}, {Start: 1 << 33, End: 1<<33 + 5}},
		}},
		{"cancelled only", wire.PullReply{JournalID: id128(3), Incarnation: id128(4), Epoch: 3, Visible: 12, Cancelled: []engine.Range{{Start: 0, End: 12}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := wire.EncodePullReply(&tc.reply)
			got, err := wire.DecodePullReply(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got.JournalID != tc.reply.JournalID || got.Incarnation != tc.reply.Incarnation ||
				got.Epoch != tc.reply.Epoch || got.Visible != tc.reply.Visible ||
				!entriesEqual(got.Entries, tc.reply.Entries) || !rangesEqual(got.Cancelled, tc.reply.Cancelled) {
				t.Fatalf("round trip:\n got  %+v\n want %+v", got, tc.reply)
			}
			checkCanonical(t, b)

			// The size bound the writer budgets with holds for this reply,
			// and for each entry on its own.
			bound := wire.ReplyHeaderBytes + 19*len(tc.reply.Cancelled)
			for i := range tc.reply.Entries {
				e := &tc.reply.Entries[i]
				bound += wire.ReplyEntrySize(e)
				if n := len(wire.AppendEntry(nil, e)); n > wire.ReplyEntrySize(e) {
					t.Errorf("entry %d encodes to %d bytes, over its bound ReplyEntrySize = %d", i, n, wire.ReplyEntrySize(e))
				}
			}
			if len(b) > bound {
				t.Errorf("reply of %d bytes is over its budget %d", len(b), bound)
			}

			m := mpDecode(t, b)
			wantKeys(t, "pull reply", m, "v", "journal_id", "incarnation", "epoch", "visible", "entries", "cancelled")
			if m["journal_id"] != tc.reply.JournalID.String() || m["incarnation"] != tc.reply.Incarnation.String() {
				t.Errorf("ids = %v / %v", m["journal_id"], m["incarnation"])
			}
			if asUint(t, m["epoch"]) != tc.reply.Epoch || asUint(t, m["visible"]) != tc.reply.Visible {
				t.Errorf("epoch/visible = %v/%v", m["epoch"], m["visible"])
			}
			entries, _ := m["entries"].([]any)
			if len(entries) != len(tc.reply.Entries) {
				t.Fatalf("entries: %d, want %d", len(entries), len(tc.reply.Entries))
			}
			for i, raw := range entries {
				e := tc.reply.Entries[i]
				em, ok := raw.(map[string]any)
				if !ok {
					t.Fatalf("entry %d is %T", i, raw)
				}
				wantKeys(t, "entry", em, "seq", "id", "kind", "entity", "scope", "clock", "wall_ms", "payload")
				id, _ := em["id"].([]byte)
				payload, _ := em["payload"].([]byte)
				if asUint(t, em["seq"]) != e.Seq || !bytes.Equal(id, e.ID[:]) || asUint(t, em["kind"]) != uint64(e.Kind) ||
					em["entity"] != e.Coordinate.Entity() || em["scope"] != e.Coordinate.Scope() ||
					asUint(t, em["clock"]) != uint64(e.Clock) || asInt(t, em["wall_ms"]) != e.WallMs ||
					!bytes.Equal(payload, e.Payload) {
					t.Errorf("entry %d: msgpack sees %v, want %+v", i, em, e)
				}
			}
			cancelled, _ := m["cancelled"].([]any)
			if len(cancelled) != len(tc.reply.Cancelled) {
				t.Fatalf("cancelled: %v, want %v", m["cancelled"], tc.reply.Cancelled)
			}
			for i, raw := range cancelled {
				pair, _ := raw.([]any)
				if len(pair) != 2 || asUint(t, pair[0]) != tc.reply.Cancelled[i].Start || asUint(t, pair[1]) != tc.reply.Cancelled[i].End {
					t.Errorf("cancelled[%d] = %v, want %v", i, raw, tc.reply.Cancelled[i])
				}
			}
		})
	}
}

func TestAppendRequestRoundTrip(t *testing.T) {
	keyed := []engine.Event{
		{Coordinate: coord(t, "order:1", "shop"), Kind: 0x1001, Payload: []byte("one"), Key: engine.DeriveIdempotencyKey("test", []byte("1"))},
		{Coordinate: coord(t, strings.Repeat("x", 1024), strings.Repeat("y", 1024)), Kind: 0xF007, Payload: bytes.Repeat([]byte{0}, 70000), Key: engine.DeriveIdempotencyKey("test", []byte("2"))},
		{Coordinate: coord(t, "order:2", "shop"), Kind: 0x0008, Payload: nil, Key: engine.DeriveIdempotencyKey("test", []byte("3"))},
	}
	unkeyed := []engine.Event{
		{Coordinate: coord(t, "a", "s"), Kind: 0x1000, Payload: []byte{}},
		{Coordinate: coord(t, "b:c", "s"), Kind: 0xA001, Payload: []byte("p")},
	}
	for _, tc := range []struct {
		name   string
		events []engine.Event
	}{{"keyed", keyed}, {"unkeyed", unkeyed}, {"one", unkeyed[1:]}} {
		t.Run(tc.name, func(t *testing.T) {
			b := wire.EncodeAppendRequest(tc.events)
			got, err := wire.DecodeAppendRequest(b, journal.DefaultMaxBatchEvents)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !eventsEqual(got, tc.events) {
				t.Fatalf("round trip:\n got  %+v\n want %+v", got, tc.events)
			}
			checkCanonical(t, b)
			m := mpDecode(t, b)
			wantKeys(t, "append request", m, "v", "events")
			evs, _ := m["events"].([]any)
			if len(evs) != len(tc.events) {
				t.Fatalf("events: %d, want %d", len(evs), len(tc.events))
			}
			for i, raw := range evs {
				ev := tc.events[i]
				em, _ := raw.(map[string]any)
				keys := []string{"entity", "scope", "kind", "payload"}
				if !ev.Key.IsZero() {
					keys = append(keys, "idempotency_key")
					if k, _ := em["idempotency_key"].([]byte); !bytes.Equal(k, ev.Key[:]) {
						t.Errorf("event %d key = %x, want %x", i, k, ev.Key[:])
					}
				}
				wantKeys(t, "event", em, keys...)
				payload, _ := em["payload"].([]byte)
				if em["entity"] != ev.Coordinate.Entity() || em["scope"] != ev.Coordinate.Scope() ||
					asUint(t, em["kind"]) != uint64(ev.Kind) || !bytes.Equal(payload, ev.Payload) {
					t.Errorf("event %d: msgpack sees %v", i, em)
				}
			}
		})
	}
}

func TestAppendReplyRoundTrip(t *testing.T) {
	receipts := []engine.Receipt{
		{Seq: 1, ID: [16]byte{1, 2, 3}, Replayed: false},
		{Seq: 1 << 35, ID: [16]byte{0xff, 0xfe}, Replayed: true},
		{Seq: 300, ID: [16]byte{}, Replayed: false},
	}
	b := wire.EncodeAppendReply(receipts)
	got, err := wire.DecodeAppendReply(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if !reflect.DeepEqual(got, receipts) {
		t.Fatalf("round trip: got %+v, want %+v", got, receipts)
	}
	checkCanonical(t, b)
	m := mpDecode(t, b)
	wantKeys(t, "append reply", m, "v", "receipts")
	rs, _ := m["receipts"].([]any)
	if len(rs) != len(receipts) {
		t.Fatalf("receipts: %v", m["receipts"])
	}
	for i, raw := range rs {
		rm, _ := raw.(map[string]any)
		wantKeys(t, "receipt", rm, "seq", "id", "replayed")
		id, _ := rm["id"].([]byte)
		if asUint(t, rm["seq"]) != receipts[i].Seq || !bytes.Equal(id, receipts[i].ID[:]) || rm["replayed"] != receipts[i].Replayed {
			t.Errorf("receipt %d: msgpack sees %v", i, rm)
		}
	}
}

func TestInfoRoundTrip(t *testing.T) {
	for _, in := range []wire.Info{
		{Journal: "main", JournalID: id128(1), Incarnation: id128(2)},
		{Journal: "orders_2-b", JournalID: id128(0x90), Incarnation: id128(0xa0), Epoch: 1 << 33, Visible: 12345,
			Events: 1 << 20, CancelledRanges: []engine.Range{{Start: 3, End: 5}, {Start: 9, End: 1 << 32}}, StartedMs: 1_700_000_000_123},
	} {
		b := wire.EncodeInfo(in)
		got, err := wire.DecodeInfo(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Fatalf("round trip:\n got  %+v\n want %+v", got, in)
		}
		checkCanonical(t, b)
		m := mpDecode(t, b)
		wantKeys(t, "info", m, "v", "journal", "journal_id", "incarnation", "epoch", "visible", "events", "cancelled_ranges", "started_ms")
		if m["journal"] != in.Journal || m["journal_id"] != in.JournalID.String() || m["incarnation"] != in.Incarnation.String() ||
			asUint(t, m["epoch"]) != in.Epoch || asUint(t, m["visible"]) != in.Visible || asUint(t, m["events"]) != in.Events ||
			asInt(t, m["started_ms"]) != in.StartedMs {
			t.Errorf("msgpack sees %v, want %+v", m, in)
		}
		rs, _ := m["cancelled_ranges"].([]any)
		if len(rs) != len(in.CancelledRanges) {
			t.Errorf("cancelled_ranges = %v", m["cancelled_ranges"])
		}
	}
}

func TestEpochRoundTrip(t *testing.T) {
	for _, em := range []wire.EpochMessage{
		{JournalID: id128(1), Incarnation: id128(2)},
		{JournalID: id128(0x70), Incarnation: id128(0xf0), Epoch: math.MaxUint64, Visible: 1 << 50},
	} {
		b := wire.EncodeEpoch(em)
		got, err := wire.DecodeEpoch(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got != em {
			t.Fatalf("round trip: got %+v, want %+v", got, em)
		}
		checkCanonical(t, b)
		m := mpDecode(t, b)
		wantKeys(t, "epoch", m, "v", "journal_id", "incarnation", "epoch", "visible")
		if m["journal_id"] != em.JournalID.String() || m["incarnation"] != em.Incarnation.String() ||
			asUint(t, m["epoch"]) != em.Epoch || asUint(t, m["visible"]) != em.Visible {
			t.Errorf("msgpack sees %v, want %+v", m, em)
		}
	}
	// The info request is {v: 1}.
	m := mpDecode(t, wire.EncodeInfoRequest())
	wantKeys(t, "info request", m, "v")
	if asUint(t, m["v"]) != 1 {
		t.Errorf("info request v = %v", m["v"])
	}
}

// Maps written by msgpack/v5 — keys in another order, unknown keys with
// nested values, default (eight-byte) integers, uppercase hex ids — decode
// with our decoders.
func TestDecodersAcceptMsgpackV5Maps(t *testing.T) {
	unknownNested := wiretest.MPKV{"deep", []any{wiretest.MPKV{"x", []any{1, "two", nil, 3.5, true}}, []byte{1, 2}}, "n", int64(-7)}

	t.Run("pull request", func(t *testing.T) {
		body := wiretest.MP(t, wiretest.MPKV{
			"max_bytes", int64(4096), "future_field", unknownNested, "started", true, "max", int64(50),
			"region", wiretest.MPKV{"clock_max", uint64(9), "zone", "x", "scope", "shop", "clock_min", int64(3), "kind", int64(0x1001), "entity", "order"},
			"position", uint64(1 << 40), "v", int64(1), "trailer", []any{1, 2, 3},
		})
		got, err := wire.DecodePullRequest(body)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		want := wire.PullRequest{
			Region:   engine.RegionEntity("order").WithScope("shop").WithExact(0x1001).WithClock(engine.ClockRange{Start: 3, End: 9}),
			Position: 1 << 40, Started: true, Max: 50, MaxBytes: 4096,
		}
		if got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
		// Nil region parts and a nil region mean "absent".
		got, err = wire.DecodePullRequest(wiretest.MP(t, wiretest.MPKV{"v", 1, "max", 1, "region", nil}))
		if err != nil || got.Region != engine.RegionAll() {
			t.Fatalf("nil region: %+v, %v", got, err)
		}
		got, err = wire.DecodePullRequest(wiretest.MP(t, wiretest.MPKV{"v", 1, "max", 1, "region", wiretest.MPKV{"entity", nil, "category", 3}}))
		if err != nil || got.Region != engine.RegionAll().WithCategory(3) {
			t.Fatalf("nil entity: %+v, %v", got, err)
		}
	})

	t.Run("pull reply", func(t *testing.T) {
		jid, inc := id128(0xab), id128(0xcd)
		body := wiretest.MP(t, wiretest.MPKV{
			"cancelled", []any{[]any{uint64(2), 3}}, "x-extra", unknownNested,
			"entries", []any{wiretest.MPKV{
				"payload", []byte("hello"), "wall_ms", int64(1_700_000_000_000), "unknown", wiretest.MPKV{"a", 1}, "clock", uint64(2),
				"scope", "shop", "entity", "order:1", "kind", int64(0x1001), "id", bytes.Repeat([]byte{5}, 16), "seq", int64(4),
			}},
			"visible", uint64(5), "epoch", int64(9), "incarnation", strings.ToUpper(inc.String()), "journal_id", jid.String(), "v", uint64(1),
		})
		got, err := wire.DecodePullReply(body)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		var id [16]byte
		copy(id[:], bytes.Repeat([]byte{5}, 16))
		want := []engine.Entry{{Seq: 4, ID: id, Kind: 0x1001, Coordinate: coord(t, "order:1", "shop"), Clock: 2, WallMs: 1_700_000_000_000, Payload: []byte("hello")}}
		if got.JournalID != jid || got.Incarnation != inc || got.Epoch != 9 || got.Visible != 5 ||
			!entriesEqual(got.Entries, want) || !rangesEqual(got.Cancelled, []engine.Range{{Start: 2, End: 3}}) {
			t.Fatalf("got %+v", got)
		}
	})

	t.Run("append request", func(t *testing.T) {
		key := engine.DeriveIdempotencyKey("k")
		body := wiretest.MP(t, wiretest.MPKV{
			"meta", unknownNested,
			"events", []any{
				wiretest.MPKV{"idempotency_key", key[:], "payload", []byte("p1"), "kind", int64(0x1001), "trace", wiretest.MPKV{"id", "t"}, "scope", "s", "entity", "e:1"},
				wiretest.MPKV{"kind", uint64(0x1002), "entity", "e:2", "scope", "s", "idempotency_key", nil, "payload", nil},
			},
			"v", 1,
		})
		got, err := wire.DecodeAppendRequest(body, 10)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		want := []engine.Event{
			{Coordinate: coord(t, "e:1", "s"), Kind: 0x1001, Payload: []byte("p1"), Key: key},
			{Coordinate: coord(t, "e:2", "s"), Kind: 0x1002},
		}
		if !eventsEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})

	t.Run("append reply", func(t *testing.T) {
		body := wiretest.MP(t, wiretest.MPKV{"receipts", []any{
			wiretest.MPKV{"replayed", true, "note", unknownNested, "id", bytes.Repeat([]byte{1}, 16), "seq", uint64(77)},
		}, "extra", 1, "v", int64(1)})
		got, err := wire.DecodeAppendReply(body)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		var id [16]byte
		copy(id[:], bytes.Repeat([]byte{1}, 16))
		if want := []engine.Receipt{{Seq: 77, ID: id, Replayed: true}}; !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})

	t.Run("info", func(t *testing.T) {
		jid, inc := id128(1), id128(2)
		body := wiretest.MP(t, wiretest.MPKV{
			"started_ms", int64(99), "cancelled_ranges", []any{[]any{int64(1), uint64(2)}}, "events", uint64(3), "visible", int64(4), "epoch", 5,
			"incarnation", inc.String(), "journal_id", jid.String(), "journal", "main", "v", int64(1), "later", unknownNested,
		})
		got, err := wire.DecodeInfo(body)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		want := wire.Info{Journal: "main", JournalID: jid, Incarnation: inc, Epoch: 5, Visible: 4, Events: 3,
			CancelledRanges: []engine.Range{{Start: 1, End: 2}}, StartedMs: 99}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})

	t.Run("epoch", func(t *testing.T) {
		jid, inc := id128(1), id128(2)
		body := wiretest.MP(t, wiretest.MPKV{"visible", int64(4), "epoch", uint64(5), "x", unknownNested, "incarnation", inc.String(), "journal_id", jid.String(), "v", uint64(1)})
		got, err := wire.DecodeEpoch(body)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if want := (wire.EpochMessage{JournalID: jid, Incarnation: inc, Epoch: 5, Visible: 4}); got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
}

// Every decoder rejects a missing v, an unknown major version, a v that is
// not an integer, and a body that is not a map (DESIGN "Wire protocol v1").
func TestDecodersRejectVersion(t *testing.T) {
	jid := id128(1).String()
	decoders := []struct {
		name   string
		decode func([]byte) error
		body   wiretest.MPKV // a valid body
	}{
		{"pull request", func(b []byte) error { _, err := wire.DecodePullRequest(b); return err },
			wiretest.MPKV{"v", 1, "max", 1}},
		{"append request", func(b []byte) error { _, err := wire.DecodeAppendRequest(b, 10); return err },
			wiretest.MPKV{"v", 1, "events", []any{wiretest.MPKV{"entity", "e", "scope", "s", "kind", 0x1001}}}},
		{"pull reply", func(b []byte) error { _, err := wire.DecodePullReply(b); return err },
			wiretest.MPKV{"v", 1, "journal_id", jid, "incarnation", jid, "entries", []any{}}},
		{"append reply", func(b []byte) error { _, err := wire.DecodeAppendReply(b); return err },
			wiretest.MPKV{"v", 1, "receipts", []any{wiretest.MPKV{"seq", 1, "id", make([]byte, 16), "replayed", false}}}},
		{"info", func(b []byte) error { _, err := wire.DecodeInfo(b); return err },
			wiretest.MPKV{"v", 1, "journal", "main", "journal_id", jid, "incarnation", jid}},
		{"epoch", func(b []byte) error { _, err := wire.DecodeEpoch(b); return err },
			wiretest.MPKV{"v", 1, "journal_id", jid, "incarnation", jid, "epoch", 1}},
	}
	for _, d := range decoders {
		t.Run(d.name, func(t *testing.T) {
			if err := d.decode(wiretest.MP(t, d.body)); err != nil {
				t.Fatalf("valid body refused: %v", err)
			}
			for _, bad := range []struct {
				name string
				body []byte
			}{
				{"missing v", wiretest.MP(t, d.body.Without("v"))},
				{"v = 2", wiretest.MP(t, d.body.With("v", 2))},
				{"v = 0", wiretest.MP(t, d.body.With("v", 0))},
				{"v as string", wiretest.MP(t, d.body.With("v", "1"))},
				{"not a map", wiretest.MP(t, []any{"v", 1})},
				{"empty", nil},
				{"truncated", wiretest.MP(t, d.body)[:3]},
			} {
				if err := d.decode(bad.body); err == nil {
					t.Errorf("%s: decoded without error", bad.name)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------
// Bad requests: each is a *RequestError naming the field, with code 400
// or 413.
// ---------------------------------------------------------------------

func checkBad(t *testing.T, err error, c wiretest.BadCase) {
	t.Helper()
	var re *wire.RequestError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *RequestError", err, err)
	}
	if re.Field != c.Field || re.Code != c.Code {
		t.Errorf("got field %q code %d (%v), want field %q code %d", re.Field, re.Code, re, c.Field, c.Code)
	}
	if c.Rule != "" && !strings.Contains(re.Rule, c.Rule) {
		t.Errorf("rule %q does not mention %q", re.Rule, c.Rule)
	}
	if re.Rule == "" {
		t.Errorf("empty rule")
	}
}

func TestBadPullRequests(t *testing.T) {
	// The base of the table is itself valid.
	if _, err := wire.DecodePullRequest(wiretest.MP(t, wiretest.ValidPull())); err != nil {
		t.Fatalf("valid pull request refused: %v", err)
	}
	for _, c := range wiretest.BadPullCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			req, err := wire.DecodePullRequest(c.Body)
			if err == nil {
				t.Fatalf("decoded %+v without error", req)
			}
			checkBad(t, err, c)
		})
	}
}

// DM-14: a pull of a region whose entity prefix is "*" gets 400 naming
// "region", with the engine's rule in the description.
func TestPullRegionStarIsBadRequest(t *testing.T) {
	body := wire.EncodePullRequest(wire.PullRequest{Region: engine.RegionEntity("*"), Max: 1})
	_, err := wire.DecodePullRequest(body)
	var re *wire.RequestError
	if !errors.As(err, &re) || re.Field != "region" || re.Code != 400 {
		t.Fatalf("got %v, want a 400 naming region", err)
	}
	if !strings.Contains(re.Rule, strings.TrimPrefix(engine.ErrEntityPrefixStar.Error(), "engine: ")) {
		t.Errorf("rule %q does not carry %q", re.Rule, engine.ErrEntityPrefixStar)
	}
	for _, r := range []engine.Region{engine.RegionEntity(""), engine.RegionEntity("a|scope=x"), engine.RegionScope("a/b"), engine.RegionScope("*")} {
		if _, err := wire.DecodePullRequest(wire.EncodePullRequest(wire.PullRequest{Region: r, Max: 1})); !errors.As(err, &re) || re.Field != "region" {
			t.Errorf("region %q: got %v, want a 400 naming region", r.Identity(), err)
		}
	}
}

func TestBadAppendRequests(t *testing.T) {
	if _, err := wire.DecodeAppendRequest(wiretest.AppendBody(t, wiretest.ValidEvent()), journal.DefaultMaxBatchEvents); err != nil {
		t.Fatalf("valid append request refused: %v", err)
	}
	for _, c := range wiretest.BadAppendCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			evs, err := wire.DecodeAppendRequest(c.Body, journal.DefaultMaxBatchEvents)
			if err == nil {
				t.Fatalf("decoded %+v without error", evs)
			}
			checkBad(t, err, c)
		})
	}
	// The limit is the caller's.
	events := []any{wiretest.ValidEvent(), wiretest.ValidEvent(), wiretest.ValidEvent()}
	if _, err := wire.DecodeAppendRequest(wiretest.AppendBody(t, events...), 3); err != nil {
		t.Fatalf("3 events with limit 3: %v", err)
	}
	_, err := wire.DecodeAppendRequest(wiretest.AppendBody(t, append(events, wiretest.ValidEvent())...), 3)
	checkBad(t, err, wiretest.BadCase{Field: "events", Code: 413, Rule: "at most 3"})
}

// Unknown values are skipped up to a bounded depth: moderately nested
// ones are fine, deeply nested ones are refused rather than recursed into
// without bound (the table cases above), and no decoder panics or
// overflows the stack on them.
func TestNestedUnknownValues(t *testing.T) {
	moderate := msgpack.RawMessage(wiretest.Nested(16))
	if _, err := wire.DecodePullRequest(wiretest.MP(t, wiretest.ValidPull().With("x", moderate).With("region", wiretest.MPKV{"y", moderate}))); err != nil {
		t.Errorf("pull request with a moderately nested unknown value: %v", err)
	}
	if _, err := wire.DecodeAppendRequest(wiretest.AppendBody(t, wiretest.ValidEvent().With("x", moderate)), 10); err != nil {
		t.Errorf("append request with a moderately nested unknown value: %v", err)
	}
	deep := msgpack.RawMessage(wiretest.Nested(100000))
	jid := id128(1).String()
	for name, decode := range map[string]func() error{
		"pull reply": func() error {
			_, err := wire.DecodePullReply(wiretest.MP(t, wiretest.MPKV{"v", 1, "journal_id", jid, "incarnation", jid, "x", deep}))
			return err
		},
		"pull reply entry": func() error {
			_, err := wire.DecodePullReply(wiretest.MP(t, wiretest.MPKV{"v", 1, "entries", []any{wiretest.MPKV{"x", deep}}}))
			return err
		},
		"append reply": func() error {
			_, err := wire.DecodeAppendReply(wiretest.MP(t, wiretest.MPKV{"v", 1, "x", deep}))
			return err
		},
		"info":  func() error { _, err := wire.DecodeInfo(wiretest.MP(t, wiretest.MPKV{"v", 1, "x", deep})); return err },
		"epoch": func() error { _, err := wire.DecodeEpoch(wiretest.MP(t, wiretest.MPKV{"v", 1, "x", deep})); return err },
	} {
		if err := decode(); err == nil {
			t.Errorf("%s: a value wiretest.Nested 100000 deep was accepted", name)
		}
	}
}

func TestSubjectsAndJournalNames(t *testing.T) {
	s := wire.SubjectsFor("orders-eu_1")
	if s != (wire.Subjects{Pull: "batfleet.orders-eu_1.pull", Append: "batfleet.orders-eu_1.append", Info: "batfleet.orders-eu_1.info", Epoch: "batfleet.orders-eu_1.epoch", Started: "batfleet.orders-eu_1.started"}) {
		t.Errorf("SubjectsFor = %+v", s)
	}
	for _, ok := range []string{"main", "a", "A-Z_0-9", strings.Repeat("j", 64)} {
		if err := engine.ValidateJournalName(ok); err != nil {
			t.Errorf("ValidateJournalName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("j", 65), "a.b", "a b", "a*", "a>", "名前", "main\n"} {
		if err := engine.ValidateJournalName(bad); err == nil {
			t.Errorf("ValidateJournalName(%q) accepted", bad)
		}
	}
}

// MaxEntryBytes leaves room for the reply framing: an entry of exactly the
// engine limit, with long entity and scope, fits a reply under the max
// payload.
func TestMaxEntryBytesFitsReply(t *testing.T) {
	for _, maxPayload := range []int64{8 << 10, 64 << 10, 1 << 20, 8 << 20} {
		limit := wire.MaxEntryBytes(maxPayload)
		entity, scope := strings.Repeat("e", 1024), strings.Repeat("s", 1024)
		payload := make([]byte, limit-58-len(entity)-len(scope))
		e := engine.Entry{Seq: 1<<63 + 5, Kind: 0xFFFF, Coordinate: coord(t, entity, scope), Clock: math.MaxUint32, WallMs: math.MinInt64, Payload: payload}
		reply := wire.EncodePullReply(&wire.PullReply{JournalID: id128(1), Incarnation: id128(2), Epoch: math.MaxUint64, Visible: math.MaxUint64,
			Entries: []engine.Entry{e}, Cancelled: []engine.Range{{Start: 1 << 62, End: 1<<62 + 1}}})
		if int64(len(reply)) > maxPayload {
			t.Errorf("max payload %d: a reply of one entry of MaxEntryBytes is %d bytes", maxPayload, len(reply))
		}
		// EntryOverhead bounds an entry's framing besides entity, scope
		// and payload, whatever the widths of its fields.
		if n := len(wire.AppendEntry(nil, &e)); n > wire.ReplyEntrySize(&e) {
			t.Errorf("worst-case entry encodes to %d bytes, over ReplyEntrySize = %d", n, wire.ReplyEntrySize(&e))
		}
	}
}
