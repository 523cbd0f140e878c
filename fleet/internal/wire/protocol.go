package wire

import (
	"errors"
	"fmt"
	"math"

	"github.com/batfleet/batfleet/engine"
)

// ProtocolVersion is the protocol's major version.
const ProtocolVersion = 1

// ServiceName is the NATS micro service name the writer registers.
const ServiceName = "batfleet-writer"

// Limits of the protocol.
const (
	// MaxPullEntries caps a pull request's max.
	MaxPullEntries = 65536
	// ReplyHeaderBytes bounds a pull reply's fields besides its entries and
	// cancelled ranges.
	ReplyHeaderBytes = 256
	// EntryOverhead bounds the MessagePack framing of one reply entry
	// besides its entity, scope and payload: 103 bytes when every field
	// takes its widest form (seq and wall_ms of 9 bytes, str16 entity and
	// scope, bin32 payload).
	EntryOverhead = 104
)

// Subjects of one journal.
type Subjects struct {
	Pull, Append, Info, Epoch string
	// Started carries one message (an epoch message's body) when a
	// writer incarnation starts serving: clients whose pulls are held,
	// and so need no epoch messages, learn of a restart from it.
	Started string
}

// SubjectsFor returns the subjects of journal.
func SubjectsFor(journal string) Subjects {
	p := "batfleet." + journal + "."
	return Subjects{Pull: p + "pull", Append: p + "append", Info: p + "info", Epoch: p + "epoch", Started: p + "started"}
}

// MaxEntryBytes returns the largest journal entry (entity, scope and
// payload bytes: journal.Config.MaxEntryBytes) whose pull reply fits a
// server max payload of maxPayload bytes, beside the reply's other fields.
func MaxEntryBytes(maxPayload int64) int {
	return PullBudget(int(maxPayload), 0) - EntryOverhead
}

// PullBudget is the byte budget of a pull's entries: the server's max
// payload less the reserve for the reply's other fields, or the request's
// max_bytes when smaller (0: none). The journal counts each entry as its
// entity, scope and payload bytes plus EntryOverhead against it.
func PullBudget(maxPayload, requested int) int {
	limit := maxPayload - ReplyReserve(maxPayload)
	if requested > 0 && requested < limit {
		limit = requested
	}
	return limit
}

// ReplyReserve is the part of a pull reply kept for everything but its
// entries: the header fields and the cancelled ranges the pull crosses
// (19 bytes each at most). A sixteenth of the max payload, between 4 KiB
// and 64 KiB: with the default 1 MiB, a maximal entry still fits beside
// ~3,400 cancelled ranges.
func ReplyReserve(maxPayload int) int {
	return min(max(maxPayload/16, 4096), 64<<10)
}

// RequestError is a bad request: the field and the rule it breaks. The
// writer answers it with code 400 (or 413 for limits).
type RequestError struct {
	Field string
	Rule  string
	Code  int // 400 or 413
}

func (e *RequestError) Error() string { return e.Field + ": " + e.Rule }

func BadField(field, format string, args ...any) *RequestError {
	return &RequestError{Field: field, Rule: fmt.Sprintf(format, args...), Code: 400}
}

// PullRequest asks for up to Max entries of Region after Position (from
// the beginning when Started is false), in at most MaxBytes (0: the
// server's max payload).
type PullRequest struct {
	Region   engine.Region
	Position uint64
	Started  bool
	Max      int
	MaxBytes int
	// WaitMs asks the writer to hold the pull for up to this many
	// milliseconds when nothing matches yet (a held pull); 0 answers at
	// once. Absent from the encoding when 0, so such a request is the
	// same bytes as before held pulls existed.
	WaitMs uint32
	// Incarnation, when not zero, is the writer incarnation the client
	// last heard from: a writer of another incarnation answers at once
	// instead of holding, so the client learns of the restart before it
	// waits (and re-checks its checkpoint against the new writer).
	Incarnation engine.ID128
}

// EncodePullRequest encodes r.
func EncodePullRequest(r PullRequest) []byte {
	b := make([]byte, 0, 128)
	n := 6
	if r.WaitMs > 0 {
		n++
	}
	if r.Incarnation != (engine.ID128{}) {
		n++
	}
	b = AppendMapLen(b, n)
	b = AppendStr(b, "v")
	b = AppendUint(b, ProtocolVersion)
	b = AppendStr(b, "region")
	b = appendRegion(b, r.Region)
	b = AppendStr(b, "position")
	b = AppendUint(b, r.Position)
	b = AppendStr(b, "started")
	b = AppendBool(b, r.Started)
	b = AppendStr(b, "max")
	b = AppendInt(b, int64(r.Max))
	b = AppendStr(b, "max_bytes")
	b = AppendInt(b, int64(r.MaxBytes))
	if r.WaitMs > 0 {
		b = AppendUint(AppendStr(b, "wait_ms"), uint64(r.WaitMs))
	}
	if r.Incarnation != (engine.ID128{}) {
		b = AppendStr(AppendStr(b, "incarnation"), r.Incarnation.String())
	}
	return b
}

func appendRegion(b []byte, r engine.Region) []byte {
	n := 0
	e, hasE := r.EntityPrefix()
	s, hasS := r.Scope()
	kf := r.Kind()
	cr, hasC := r.Clock()
	p, hasP := r.Partition()
	for _, has := range []bool{hasE, hasS, kf.Mode() == engine.KindFilterExact || kf.Mode() == engine.KindFilterCategory, hasC, hasC, hasP, hasP} {
		if has {
			n++
		}
	}
	b = AppendMapLen(b, n)
	if hasE {
		b = AppendStr(AppendStr(b, "entity"), e)
	}
	if hasS {
		b = AppendStr(AppendStr(b, "scope"), s)
	}
	switch kf.Mode() {
	case engine.KindFilterExact:
		b = AppendUint(AppendStr(b, "kind"), uint64(kf.Kind()))
	case engine.KindFilterCategory:
		b = AppendUint(AppendStr(b, "category"), uint64(kf.Category()))
	}
	if hasC {
		b = AppendUint(AppendStr(b, "clock_min"), uint64(cr.Start))
		b = AppendUint(AppendStr(b, "clock_max"), uint64(cr.End))
	}
	if hasP {
		b = AppendUint(AppendStr(b, "part"), uint64(p.Index))
		b = AppendUint(AppendStr(b, "parts"), uint64(p.Count))
	}
	return b
}

// checkVersion reads the value of "v".
func checkVersion(r *reader) *RequestError {
	v := r.int()
	if r.err != nil {
		return BadField("v", "must be an integer: %v", r.err)
	}
	if v != ProtocolVersion {
		return BadField("v", "protocol version %d is not supported (this writer speaks %d)", v, ProtocolVersion)
	}
	return nil
}

// DecodePullRequest decodes and validates a pull request. Errors are
// *RequestError naming the field and the rule.
func DecodePullRequest(data []byte) (PullRequest, error) {
	var req PullRequest
	hasMax := false
	err := decodeRequest(data, func(r *reader, key string) error {
		if done, err := decodeCursorField(r, key, &req.Region, &req.Position, &req.Started); done {
			return err
		}
		switch key {
		case "max":
			v := r.int()
			if r.err == nil && (v < 1) {
				return BadField("max", "must be at least 1 (got %d)", v)
			}
			if r.err == nil && v > MaxPullEntries {
				return &RequestError{Field: "max", Rule: fmt.Sprintf("must be at most %d (got %d)", MaxPullEntries, v), Code: 413}
			}
			req.Max, hasMax = int(v), true
		case "max_bytes":
			v := r.int()
			if r.err == nil && v < 0 {
				return BadField("max_bytes", "must be >= 0 (got %d)", v)
			}
			req.MaxBytes = int(min(v, 1<<30))
		case "wait_ms":
			v := r.uint()
			if r.err == nil && v > math.MaxUint32 {
				return BadField("wait_ms", "must be a 32-bit count of milliseconds (got %d)", v)
			}
			req.WaitMs = uint32(v)
		case "incarnation":
			req.Incarnation = decodeID(r, "incarnation")
		default:
			r.skip()
		}
		return nil
	})
	if err != nil {
		return req, err
	}
	if !hasMax {
		return req, BadField("max", "is required")
	}
	if err := req.Region.Validate(); err != nil {
		return req, BadField("region", "%v", err)
	}
	return req, nil
}

// decodeRequest reads a request body: a map with string keys that must
// carry a supported "v". Every other key is handed to field, which
// consumes its value and returns a *RequestError for a value it refuses;
// a value that does not decode is refused naming its key.
func decodeRequest(data []byte, field func(r *reader, key string) error) error {
	r := &reader{b: data}
	n := r.mapLen()
	if r.err != nil {
		return BadField("body", "must be a MessagePack map: %v", r.err)
	}
	hasV := false
	for i := 0; i < n; i++ {
		key := r.str()
		if r.err != nil {
			return BadField("body", "keys must be strings: %v", r.err)
		}
		if key == "v" {
			if err := checkVersion(r); err != nil {
				return err
			}
			hasV = true
			continue
		}
		if err := field(r, key); err != nil {
			return err
		}
		if r.err != nil {
			return BadField(key, "malformed value: %v", r.err)
		}
	}
	if !hasV {
		return BadField("v", "is required")
	}
	return nil
}

// decodeCursorField decodes the fields naming where a cursor stands —
// region, position, started — into their destinations; done is false
// for any other key.
func decodeCursorField(r *reader, key string, region *engine.Region, position *uint64, started *bool) (done bool, err error) {
	switch key {
	case "region":
		reg, err := decodeRegion(r)
		if err != nil {
			return true, err
		}
		*region = reg
	case "position":
		*position = r.uint()
	case "started":
		*started = r.bool()
	default:
		return false, nil
	}
	return true, nil
}

func decodeRegion(r *reader) (engine.Region, error) {
	region := engine.RegionAll()
	if r.isNil() {
		return region, nil
	}
	n := r.mapLen()
	if r.err != nil {
		return region, BadField("region", "must be a map: %v", r.err)
	}
	var kind, category *uint64
	var cmin, cmax *uint64
	var part, parts *uint64
	for i := 0; i < n; i++ {
		key := r.str()
		field := "region." + key
		if r.err != nil {
			return region, BadField("region", "keys must be strings: %v", r.err)
		}
		if r.isNil() {
			continue
		}
		switch key {
		case "entity":
			region = region.WithEntity(r.str())
		case "scope":
			region = region.WithScope(r.str())
		case "kind":
			v := r.uint()
			kind = &v
		case "category":
			v := r.uint()
			category = &v
		case "clock_min":
			v := r.uint()
			cmin = &v
		case "clock_max":
			v := r.uint()
			cmax = &v
		case "part":
			v := r.uint()
			part = &v
		case "parts":
			v := r.uint()
			parts = &v
		default:
			r.skip()
		}
		if r.err != nil {
			return region, BadField(field, "malformed value: %v", r.err)
		}
	}
	switch {
	case kind != nil && category != nil:
		return region, BadField("region.kind", "kind and category are exclusive")
	case kind != nil && *kind > 0xFFFF:
		return region, BadField("region.kind", "must be a 16-bit kind (got %d)", *kind)
	case kind != nil:
		region = region.WithExact(engine.Kind(*kind))
	case category != nil && *category > 0xFFFF:
		return region, BadField("region.category", "must be 0-15 (got %d)", *category)
	case category != nil:
		region = region.WithCategory(uint16(*category))
	}
	switch {
	case cmin == nil && cmax != nil:
		return region, BadField("region.clock_min", "a clock range needs both clock_min and clock_max")
	case cmin != nil && cmax == nil:
		return region, BadField("region.clock_max", "a clock range needs both clock_min and clock_max")
	case cmin != nil && *cmin > 0xFFFFFFFF:
		return region, BadField("region.clock_min", "clocks are 32-bit (got %d)", *cmin)
	case cmax != nil && *cmax > 0xFFFFFFFF:
		return region, BadField("region.clock_max", "clocks are 32-bit (got %d)", *cmax)
	case cmin != nil:
		region = region.WithClock(engine.ClockRange{Start: uint32(*cmin), End: uint32(*cmax)})
	}
	switch {
	case part == nil && parts != nil:
		return region, BadField("region.part", "a partition needs both part and parts")
	case part != nil && parts == nil:
		return region, BadField("region.parts", "a partition needs both part and parts")
	case parts != nil && *parts > engine.Buckets:
		return region, BadField("region.parts", "must be a power of two from 1 to %d (got %d)", engine.Buckets, *parts)
	case part != nil && *part >= *parts:
		return region, BadField("region.part", "must be below parts (got %d of %d)", *part, *parts)
	case part != nil:
		region = region.WithPartition(engine.Partition{Index: uint16(*part), Count: uint16(*parts)})
	}
	return region, nil
}

// PullReply answers a pull: Entries fit the server's max payload (fewer
// than asked, but at least one if any match).
type PullReply struct {
	JournalID   engine.ID128
	Incarnation engine.ID128
	Epoch       uint64 // read before the query
	Visible     uint64
	Entries     []engine.Entry
	Cancelled   []engine.Range
}

// ReplyEntrySize is the encoded size bound of one reply entry.
func ReplyEntrySize(e *engine.Entry) int {
	return EntryOverhead + len(e.Coordinate.Entity()) + len(e.Coordinate.Scope()) + len(e.Payload)
}

// appendPullReplyHead writes everything of a reply before its entries
// array; appendPullReplyTail the cancelled list after it.
func appendPullReplyHead(b []byte, journalID, incarnation string, epoch, visible uint64, entries int) []byte {
	b = AppendMapLen(b, 7)
	b = AppendUint(AppendStr(b, "v"), ProtocolVersion)
	b = AppendStr(AppendStr(b, "journal_id"), journalID)
	b = AppendStr(AppendStr(b, "incarnation"), incarnation)
	b = AppendUint(AppendStr(b, "epoch"), epoch)
	b = AppendUint(AppendStr(b, "visible"), visible)
	b = AppendStr(b, "entries")
	return AppendArrayLen(b, entries)
}

func AppendEntry(b []byte, e *engine.Entry) []byte {
	b = AppendMapLen(b, 8)
	b = AppendUint(AppendStr(b, "seq"), e.Seq)
	b = AppendBin(AppendStr(b, "id"), e.ID[:])
	b = AppendUint(AppendStr(b, "kind"), uint64(e.Kind))
	b = AppendStr(AppendStr(b, "entity"), e.Coordinate.Entity())
	b = AppendStr(AppendStr(b, "scope"), e.Coordinate.Scope())
	b = AppendUint(AppendStr(b, "clock"), uint64(e.Clock))
	b = AppendInt(AppendStr(b, "wall_ms"), e.WallMs)
	return AppendBin(AppendStr(b, "payload"), e.Payload)
}

func appendRanges(b []byte, rs []engine.Range) []byte {
	b = AppendArrayLen(b, len(rs))
	for _, r := range rs {
		b = AppendUint(AppendUint(AppendArrayLen(b, 2), r.Start), r.End)
	}
	return b
}

// EncodePullReply encodes r.
func EncodePullReply(r *PullReply) []byte {
	size := ReplyHeaderBytes + 19*len(r.Cancelled)
	for i := range r.Entries {
		size += ReplyEntrySize(&r.Entries[i])
	}
	b := make([]byte, 0, size)
	b = appendPullReplyHead(b, r.JournalID.String(), r.Incarnation.String(), r.Epoch, r.Visible, len(r.Entries))
	for i := range r.Entries {
		b = AppendEntry(b, &r.Entries[i])
	}
	return appendRanges(AppendStr(b, "cancelled"), r.Cancelled)
}

// EncodePullReplyWithin encodes r in at most maxPayload bytes. The
// journal already sized the entries to PullBudget; when the cancelled
// ranges the scan crossed push the reply over, it returns fewer entries
// (never fewer than one), with only the ranges the shorter scan crosses,
// and trims r to match. A reply that still does not fit (one entry with
// more cancelled ranges than fit) is an error: an oversized reply would
// reach the requester only as a timeout.
func EncodePullReplyWithin(r *PullReply, maxPayload int) ([]byte, error) {
	reply := EncodePullReply(r)
	for len(reply) > maxPayload && len(r.Entries) > 1 {
		n, excess := len(r.Entries), len(reply)-maxPayload
		for n > 1 && excess > 0 {
			n--
			excess -= ReplyEntrySize(&r.Entries[n])
		}
		r.Entries = r.Entries[:n]
		last := r.Entries[n-1].Seq
		kept := r.Cancelled[:0:0]
		for _, c := range r.Cancelled {
			if c.Start <= last {
				kept = append(kept, c)
			}
		}
		r.Cancelled = kept
		reply = EncodePullReply(r)
	}
	if len(reply) > maxPayload {
		return nil, fmt.Errorf("reply of %d bytes over the max payload %d", len(reply), maxPayload)
	}
	return reply, nil
}

// DecodePullReply decodes a pull reply. Entry payloads are copied out of
// data into one buffer.
func DecodePullReply(data []byte) (*PullReply, error) {
	out := &PullReply{}
	err := DecodeReply(data, "pull reply", func(r *reader, key string) {
		switch key {
		case "journal_id":
			out.JournalID = decodeID(r, key)
		case "incarnation":
			out.Incarnation = decodeID(r, key)
		case "epoch":
			out.Epoch = r.uint()
		case "visible":
			out.Visible = r.uint()
		case "entries":
			out.Entries = decodeEntries(r)
		case "cancelled":
			out.Cancelled = decodeRanges(r)
		default:
			r.skip()
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DecodeReply reads a reply or message body: a map that must carry "v"
// with this protocol's version; every other key is handed to field, which
// consumes its value (skipping keys it does not know).
func DecodeReply(data []byte, what string, field func(r *reader, key string)) error {
	r := &reader{b: data}
	n := r.mapLen()
	hasV := false
	for i := 0; i < n && r.err == nil; i++ {
		key := r.str()
		if r.err != nil {
			break
		}
		if key == "v" {
			if err := checkVersion(r); err != nil {
				return err
			}
			hasV = true
			continue
		}
		field(r, key)
	}
	if r.err == nil && !hasV {
		r.err = errors.New("no v")
	}
	if r.err != nil {
		return fmt.Errorf("fleet: malformed %s: %w", what, r.err)
	}
	return nil
}

func decodeID(r *reader, field string) engine.ID128 {
	s := r.str()
	if r.err != nil {
		return engine.ID128{}
	}
	id, err := engine.ParseID128(s)
	if err != nil {
		r.fail(fmt.Errorf("%s: %w", field, err))
	}
	return id
}

// The smallest encodings of a reply entry (a map with a one-byte entity
// and scope) and of a valid append event (a one-byte entity and scope, a
// kind): decoders size their slices by them, never by a declared count.
const (
	minEntryBytes = 1 + 7 + 2 + 6 + 2
	minEventBytes = minEntryBytes + 5 + 1
)

func decodeEntries(r *reader) []engine.Entry {
	n := r.arrayLen()
	if r.err != nil || n > len(r.b)-r.off {
		r.fail(errWireShort)
		return nil
	}
	// Sized by what the reply can hold (an entry with a coordinate takes
	// at least minEntryBytes), not by the count it declares.
	entries := make([]engine.Entry, 0, min(n, (len(r.b)-r.off)/minEntryBytes))
	for i := 0; i < n; i++ {
		entries = append(entries, engine.Entry{})
		e := &entries[i]
		fields := r.mapLen()
		var entity, scope []byte
		for j := 0; j < fields && r.err == nil; j++ {
			switch string(r.strBytes()) {
			case "seq":
				e.Seq = r.uint()
			case "id":
				id := r.bin()
				if len(id) != 16 && r.err == nil {
					r.fail(fmt.Errorf("entry id of %d bytes", len(id)))
				}
				copy(e.ID[:], id)
			case "kind":
				k := r.uint()
				if k > 0xFFFF {
					r.fail(fmt.Errorf("kind %d", k))
				}
				e.Kind = engine.Kind(k)
			case "entity":
				entity = r.strBytes()
			case "scope":
				scope = r.strBytes()
			case "clock":
				c := r.uint()
				if c > 0xFFFFFFFF {
					r.fail(fmt.Errorf("clock %d", c))
				}
				e.Clock = uint32(c)
			case "wall_ms":
				e.WallMs = r.int()
			case "payload":
				e.Payload = append([]byte(nil), r.bin()...)
			default:
				r.skip()
			}
		}
		if r.err != nil {
			return nil
		}
		c, err := engine.NewCoordinate(string(entity), string(scope))
		if err != nil {
			r.fail(fmt.Errorf("entry %d: %w", i, err))
			return nil
		}
		e.Coordinate = c
	}
	return entries
}

func decodeRanges(r *reader) []engine.Range {
	n := r.arrayLen()
	if r.err != nil || n > len(r.b)-r.off {
		r.fail(errWireShort)
		return nil
	}
	var out []engine.Range
	for i := 0; i < n && r.err == nil; i++ {
		if r.arrayLen() != 2 && r.err == nil {
			r.fail(errors.New("a range is a [start, end] pair"))
			return nil
		}
		out = append(out, engine.Range{Start: r.uint(), End: r.uint()})
	}
	return out
}

// AppendRequest carries events to append atomically.
type AppendRequest struct {
	Events []engine.Event
}

// EncodeAppendRequest encodes events.
func EncodeAppendRequest(events []engine.Event) []byte {
	size := 32
	for i := range events {
		size += EntryOverhead + len(events[i].Coordinate.Entity()) + len(events[i].Coordinate.Scope()) + len(events[i].Payload)
	}
	b := make([]byte, 0, size)
	b = AppendMapLen(b, 2)
	b = AppendUint(AppendStr(b, "v"), ProtocolVersion)
	b = AppendArrayLen(AppendStr(b, "events"), len(events))
	for i := range events {
		ev := &events[i]
		fields := 4
		if !ev.Key.IsZero() {
			fields++
		}
		b = AppendMapLen(b, fields)
		b = AppendStr(AppendStr(b, "entity"), ev.Coordinate.Entity())
		b = AppendStr(AppendStr(b, "scope"), ev.Coordinate.Scope())
		b = AppendUint(AppendStr(b, "kind"), uint64(ev.Kind))
		b = AppendBin(AppendStr(b, "payload"), ev.Payload)
		if !ev.Key.IsZero() {
			b = AppendBin(AppendStr(b, "idempotency_key"), ev.Key[:])
		}
	}
	return b
}

// DecodeAppendRequest decodes and validates an append request. Errors are
// *RequestError naming the field (e.g. "events[3].entity") and the rule.
func DecodeAppendRequest(data []byte, maxEvents int) ([]engine.Event, error) {
	r := &reader{b: data}
	n := r.mapLen()
	if r.err != nil {
		return nil, BadField("body", "must be a MessagePack map: %v", r.err)
	}
	var events []engine.Event
	hasV, hasEvents := false, false
	for i := 0; i < n; i++ {
		key := r.str()
		if r.err != nil {
			return nil, BadField("body", "keys must be strings: %v", r.err)
		}
		switch key {
		case "v":
			if err := checkVersion(r); err != nil {
				return nil, err
			}
			hasV = true
		case "events":
			count := r.arrayLen()
			if r.err != nil {
				return nil, BadField("events", "must be an array: %v", r.err)
			}
			if count == 0 {
				return nil, BadField("events", "must hold at least one event")
			}
			if count > maxEvents {
				return nil, &RequestError{Field: "events", Rule: fmt.Sprintf("at most %d events per append (got %d)", maxEvents, count), Code: 413}
			}
			if count > len(r.b)-r.off {
				return nil, BadField("events", "declares %d events in %d bytes", count, len(r.b)-r.off)
			}
			// Sized by what the body can hold (a valid event takes at least
			// minEventBytes), not by the count it declares.
			events = make([]engine.Event, 0, min(count, (len(r.b)-r.off)/minEventBytes))
			for j := 0; j < count; j++ {
				events = append(events, engine.Event{})
				if err := decodeEvent(r, j, &events[j]); err != nil {
					return nil, err
				}
			}
			hasEvents = true
		default:
			r.skip()
		}
		if r.err != nil {
			return nil, BadField(key, "malformed value: %v", r.err)
		}
	}
	if !hasV {
		return nil, BadField("v", "is required")
	}
	if !hasEvents {
		return nil, BadField("events", "is required")
	}
	return events, nil
}

func decodeEvent(r *reader, i int, ev *engine.Event) error {
	field := func(name string) string { return fmt.Sprintf("events[%d].%s", i, name) }
	n := r.mapLen()
	if r.err != nil {
		return BadField(fmt.Sprintf("events[%d]", i), "must be a map: %v", r.err)
	}
	var entity, scope string
	hasEntity, hasScope, hasKind := false, false, false
	for j := 0; j < n; j++ {
		key := r.str()
		if r.err != nil {
			return BadField(fmt.Sprintf("events[%d]", i), "keys must be strings: %v", r.err)
		}
		switch key {
		case "entity":
			entity, hasEntity = r.str(), true
		case "scope":
			scope, hasScope = r.str(), true
		case "kind":
			k := r.uint()
			if r.err == nil && k > 0xFFFF {
				return BadField(field("kind"), "must be a 16-bit kind (got %d)", k)
			}
			ev.Kind, hasKind = engine.Kind(k), true
		case "payload":
			if !r.isNil() {
				ev.Payload = append([]byte(nil), r.bin()...)
			}
		case "idempotency_key":
			if !r.isNil() {
				k := r.bin()
				if r.err == nil && len(k) != 16 {
					return BadField(field("idempotency_key"), "must be 16 bytes (got %d)", len(k))
				}
				copy(ev.Key[:], k)
			}
		default:
			r.skip()
		}
		if r.err != nil {
			return BadField(field(key), "malformed value: %v", r.err)
		}
	}
	switch {
	case !hasEntity:
		return BadField(field("entity"), "is required")
	case !hasScope:
		return BadField(field("scope"), "is required")
	case !hasKind:
		return BadField(field("kind"), "is required")
	}
	c, err := engine.NewCoordinate(entity, scope)
	if err != nil {
		name := "entity"
		if errors.Is(err, engine.ErrEmptyScope) || errors.Is(err, engine.ErrScopeTooLong) || isScopeErr(err) {
			name = "scope"
		}
		return BadField(field(name), "%v", err)
	}
	ev.Coordinate = c
	return nil
}

func isScopeErr(err error) bool {
	var ce *engine.ComponentError
	return errors.As(err, &ce) && ce.Field == "scope"
}

// AppendReply acknowledges an append: every event is durable and visible.
type AppendReply struct {
	Receipts []engine.Receipt
}

// EncodeAppendReply encodes receipts.
func EncodeAppendReply(receipts []engine.Receipt) []byte {
	b := make([]byte, 0, 16+40*len(receipts))
	b = AppendMapLen(b, 2)
	b = AppendUint(AppendStr(b, "v"), ProtocolVersion)
	b = AppendArrayLen(AppendStr(b, "receipts"), len(receipts))
	for _, rc := range receipts {
		b = AppendMapLen(b, 3)
		b = AppendUint(AppendStr(b, "seq"), rc.Seq)
		b = AppendBin(AppendStr(b, "id"), rc.ID[:])
		b = AppendBool(AppendStr(b, "replayed"), rc.Replayed)
	}
	return b
}

// DecodeAppendReply decodes an append reply.
func DecodeAppendReply(data []byte) ([]engine.Receipt, error) {
	var out []engine.Receipt
	err := DecodeReply(data, "append reply", func(r *reader, key string) {
		if key != "receipts" {
			r.skip()
			return
		}
		count := r.arrayLen()
		if r.err == nil && count > len(r.b)-r.off {
			r.fail(errWireShort)
		}
		for j := 0; j < count && r.err == nil; j++ {
			var rc engine.Receipt
			fields := r.mapLen()
			for k := 0; k < fields && r.err == nil; k++ {
				switch r.str() {
				case "seq":
					rc.Seq = r.uint()
				case "id":
					copy(rc.ID[:], r.bin())
				case "replayed":
					rc.Replayed = r.bool()
				default:
					r.skip()
				}
			}
			out = append(out, rc)
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Info describes a writer's journal.
// EncodeInfoRequest encodes an info request ({v: 1}).
func EncodeInfoRequest() []byte {
	return AppendUint(AppendStr(AppendMapLen(nil, 1), "v"), ProtocolVersion)
}

// DecodeInfoRequest checks an info request: its body is optional; when
// present it must be a map carrying a supported v (other keys ignored).
func DecodeInfoRequest(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	var bad *RequestError // a key whose value does not decode: named
	err := DecodeReply(data, "info request", func(rd *reader, key string) {
		if rd.skip(); rd.err != nil && bad == nil {
			bad = BadField(key, "malformed value: %v", rd.err)
		}
	})
	if bad != nil {
		return bad
	}
	var re *RequestError
	if err != nil && !errors.As(err, &re) {
		return BadField("v", "is required (body must be a map with v, or empty)")
	}
	return err
}

type Info struct {
	Journal         string
	JournalID       engine.ID128
	Incarnation     engine.ID128
	Epoch           uint64
	Visible         uint64
	Events          uint64 // indexed entries
	CancelledRanges []engine.Range
	StartedMs       int64
	// MaxWaitMs is the longest hold the writer grants a pull (wait_ms);
	// 0 when the writer does not say (a client then assumes 30,000).
	MaxWaitMs uint32
}

// EncodeInfo encodes an info reply.
func EncodeInfo(in Info) []byte {
	b := make([]byte, 0, 256)
	n := 9
	if in.MaxWaitMs > 0 {
		n++
	}
	b = AppendMapLen(b, n)
	b = AppendUint(AppendStr(b, "v"), ProtocolVersion)
	b = AppendStr(AppendStr(b, "journal"), in.Journal)
	b = AppendStr(AppendStr(b, "journal_id"), in.JournalID.String())
	b = AppendStr(AppendStr(b, "incarnation"), in.Incarnation.String())
	b = AppendUint(AppendStr(b, "epoch"), in.Epoch)
	b = AppendUint(AppendStr(b, "visible"), in.Visible)
	b = AppendUint(AppendStr(b, "events"), in.Events)
	b = appendRanges(AppendStr(b, "cancelled_ranges"), in.CancelledRanges)
	b = AppendInt(AppendStr(b, "started_ms"), in.StartedMs)
	if in.MaxWaitMs > 0 {
		b = AppendUint(AppendStr(b, "max_wait_ms"), uint64(in.MaxWaitMs))
	}
	return b
}

// DecodeInfo decodes an info reply.
func DecodeInfo(data []byte) (Info, error) {
	var in Info
	err := DecodeReply(data, "info reply", func(r *reader, key string) {
		switch key {
		case "journal":
			in.Journal = r.str()
		case "journal_id":
			in.JournalID = decodeID(r, key)
		case "incarnation":
			in.Incarnation = decodeID(r, key)
		case "epoch":
			in.Epoch = r.uint()
		case "visible":
			in.Visible = r.uint()
		case "events":
			in.Events = r.uint()
		case "cancelled_ranges":
			in.CancelledRanges = decodeRanges(r)
		case "started_ms":
			in.StartedMs = r.int()
		case "max_wait_ms":
			in.MaxWaitMs = uint32(min(r.uint(), math.MaxUint32))
		default:
			r.skip()
		}
	})
	return in, err
}

// EpochMessage announces a visibility advance (core NATS, lossy).
type EpochMessage struct {
	JournalID   engine.ID128
	Incarnation engine.ID128
	Epoch       uint64
	Visible     uint64
}

// EncodeEpoch encodes an epoch message.
func EncodeEpoch(m EpochMessage) []byte {
	b := make([]byte, 0, 112)
	b = AppendMapLen(b, 5)
	b = AppendUint(AppendStr(b, "v"), ProtocolVersion)
	b = AppendStr(AppendStr(b, "journal_id"), m.JournalID.String())
	b = AppendStr(AppendStr(b, "incarnation"), m.Incarnation.String())
	b = AppendUint(AppendStr(b, "epoch"), m.Epoch)
	return AppendUint(AppendStr(b, "visible"), m.Visible)
}

// DecodeEpoch decodes an epoch message.
func DecodeEpoch(data []byte) (EpochMessage, error) {
	var m EpochMessage
	err := DecodeReply(data, "epoch message", func(r *reader, key string) {
		switch key {
		case "journal_id":
			m.JournalID = decodeID(r, key)
		case "incarnation":
			m.Incarnation = decodeID(r, key)
		case "epoch":
			m.Epoch = r.uint()
		case "visible":
			m.Visible = r.uint()
		default:
			r.skip()
		}
	})
	return m, err
}
