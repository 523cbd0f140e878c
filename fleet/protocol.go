package fleet

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/batfleet/batfleet/engine"
)

// Wire protocol v1 (DESIGN.md "Wire protocol v1"). Every body is a
// MessagePack map with snake_case keys and "v": 1; decoders ignore unknown
// keys and reject a missing v or an unknown major version.

// ProtocolVersion is the protocol's major version.
const ProtocolVersion = 1

// ServiceName is the NATS micro service name the writer registers.
const ServiceName = "batfleet-writer"

// Limits of the protocol.
const (
	// MaxPullEntries caps a pull request's max.
	MaxPullEntries = 65536
	// replyHeaderBytes bounds a pull reply's fields besides its entries and
	// cancelled ranges.
	replyHeaderBytes = 256
	// entryOverhead bounds the MessagePack framing of one reply entry
	// besides its entity, scope and payload: 103 bytes when every field
	// takes its widest form (seq and wall_ms of 9 bytes, str16 entity and
	// scope, bin32 payload).
	entryOverhead = 104
)

var journalRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidJournal reports whether name is a legal journal name
// ([A-Za-z0-9_-]{1,64}).
func ValidJournal(name string) error {
	if !journalRe.MatchString(name) {
		return fmt.Errorf("fleet: journal %q: must match [A-Za-z0-9_-]{1,64}", name)
	}
	return nil
}

// Subjects of one journal.
type Subjects struct {
	Pull, Append, Info, Epoch string
}

// SubjectsFor returns the subjects of journal.
func SubjectsFor(journal string) Subjects {
	p := "batfleet." + journal + "."
	return Subjects{Pull: p + "pull", Append: p + "append", Info: p + "info", Epoch: p + "epoch"}
}

// MaxEntryBytes returns the journal.Config.MaxEntryBytes that lets every
// entry fit a pull reply under a server max payload of maxPayload bytes.
func MaxEntryBytes(maxPayload int64) int {
	return int(maxPayload) - replyReserve(int(maxPayload)) - entryOverhead + 58 // 58: the journal's own framing, counted by the engine
}

// replyReserve is the part of a pull reply kept for everything but its
// entries: the header fields and the cancelled ranges the pull crosses
// (19 bytes each at most). A sixteenth of the max payload, between 4 KiB
// and 64 KiB: with the default 1 MiB, a maximal entry still fits beside
// ~3,400 cancelled ranges.
func replyReserve(maxPayload int) int {
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

func badField(field, format string, args ...any) *RequestError {
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
}

// EncodePullRequest encodes r.
func EncodePullRequest(r PullRequest) []byte {
	b := make([]byte, 0, 128)
	b = appendMapLen(b, 6)
	b = appendStr(b, "v")
	b = appendUint(b, ProtocolVersion)
	b = appendStr(b, "region")
	b = appendRegion(b, r.Region)
	b = appendStr(b, "position")
	b = appendUint(b, r.Position)
	b = appendStr(b, "started")
	b = appendBool(b, r.Started)
	b = appendStr(b, "max")
	b = appendInt(b, int64(r.Max))
	b = appendStr(b, "max_bytes")
	b = appendInt(b, int64(r.MaxBytes))
	return b
}

func appendRegion(b []byte, r engine.Region) []byte {
	n := 0
	e, hasE := r.EntityPrefix()
	s, hasS := r.Scope()
	kf := r.Kind()
	cr, hasC := r.Clock()
	for _, has := range []bool{hasE, hasS, kf.Mode() == engine.KindFilterExact || kf.Mode() == engine.KindFilterCategory, hasC, hasC} {
		if has {
			n++
		}
	}
	b = appendMapLen(b, n)
	if hasE {
		b = appendStr(appendStr(b, "entity"), e)
	}
	if hasS {
		b = appendStr(appendStr(b, "scope"), s)
	}
	switch kf.Mode() {
	case engine.KindFilterExact:
		b = appendUint(appendStr(b, "kind"), uint64(kf.Kind()))
	case engine.KindFilterCategory:
		b = appendUint(appendStr(b, "category"), uint64(kf.Category()))
	}
	if hasC {
		b = appendUint(appendStr(b, "clock_min"), uint64(cr.Start))
		b = appendUint(appendStr(b, "clock_max"), uint64(cr.End))
	}
	return b
}

// checkVersion reads the value of "v".
func checkVersion(r *reader) *RequestError {
	v := r.int()
	if r.err != nil {
		return badField("v", "must be an integer: %v", r.err)
	}
	if v != ProtocolVersion {
		return badField("v", "protocol version %d is not supported (this writer speaks %d)", v, ProtocolVersion)
	}
	return nil
}

// DecodePullRequest decodes and validates a pull request. Errors are
// *RequestError naming the field and the rule.
func DecodePullRequest(data []byte) (PullRequest, error) {
	var req PullRequest
	r := &reader{b: data}
	n := r.mapLen()
	if r.err != nil {
		return req, badField("body", "must be a MessagePack map: %v", r.err)
	}
	hasV, hasMax := false, false
	for i := 0; i < n; i++ {
		key := r.str()
		if r.err != nil {
			return req, badField("body", "keys must be strings: %v", r.err)
		}
		switch key {
		case "v":
			if err := checkVersion(r); err != nil {
				return req, err
			}
			hasV = true
		case "region":
			reg, err := decodeRegion(r)
			if err != nil {
				return req, err
			}
			req.Region = reg
		case "position":
			req.Position = r.uint()
		case "started":
			req.Started = r.bool()
		case "max":
			v := r.int()
			if r.err == nil && (v < 1) {
				return req, badField("max", "must be at least 1 (got %d)", v)
			}
			if r.err == nil && v > MaxPullEntries {
				return req, &RequestError{Field: "max", Rule: fmt.Sprintf("must be at most %d (got %d)", MaxPullEntries, v), Code: 413}
			}
			req.Max, hasMax = int(v), true
		case "max_bytes":
			v := r.int()
			if r.err == nil && v < 0 {
				return req, badField("max_bytes", "must be >= 0 (got %d)", v)
			}
			req.MaxBytes = int(min(v, 1<<30))
		default:
			r.skip()
		}
		if r.err != nil {
			return req, badField(key, "malformed value: %v", r.err)
		}
	}
	if !hasV {
		return req, badField("v", "is required")
	}
	if !hasMax {
		return req, badField("max", "is required")
	}
	if err := req.Region.Validate(); err != nil {
		return req, badField("region", "%v", err)
	}
	return req, nil
}

func decodeRegion(r *reader) (engine.Region, error) {
	region := engine.RegionAll()
	if r.isNil() {
		return region, nil
	}
	n := r.mapLen()
	if r.err != nil {
		return region, badField("region", "must be a map: %v", r.err)
	}
	var kind, category *uint64
	var cmin, cmax *uint64
	for i := 0; i < n; i++ {
		key := r.str()
		field := "region." + key
		if r.err != nil {
			return region, badField("region", "keys must be strings: %v", r.err)
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
		default:
			r.skip()
		}
		if r.err != nil {
			return region, badField(field, "malformed value: %v", r.err)
		}
	}
	switch {
	case kind != nil && category != nil:
		return region, badField("region.kind", "kind and category are exclusive")
	case kind != nil && *kind > 0xFFFF:
		return region, badField("region.kind", "must be a 16-bit kind (got %d)", *kind)
	case kind != nil:
		region = region.WithExact(engine.Kind(*kind))
	case category != nil && *category > 0xFFFF:
		return region, badField("region.category", "must be 0-15 (got %d)", *category)
	case category != nil:
		region = region.WithCategory(uint16(*category))
	}
	switch {
	case cmin == nil && cmax != nil:
		return region, badField("region.clock_min", "a clock range needs both clock_min and clock_max")
	case cmin != nil && cmax == nil:
		return region, badField("region.clock_max", "a clock range needs both clock_min and clock_max")
	case cmin != nil && *cmin > 0xFFFFFFFF:
		return region, badField("region.clock_min", "clocks are 32-bit (got %d)", *cmin)
	case cmax != nil && *cmax > 0xFFFFFFFF:
		return region, badField("region.clock_max", "clocks are 32-bit (got %d)", *cmax)
	case cmin != nil:
		region = region.WithClock(engine.ClockRange{Start: uint32(*cmin), End: uint32(*cmax)})
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

// replyEntrySize is the encoded size bound of one reply entry.
func replyEntrySize(e *engine.Entry) int {
	return entryOverhead + len(e.Coordinate.Entity()) + len(e.Coordinate.Scope()) + len(e.Payload)
}

// appendPullReplyHead writes everything of a reply before its entries
// array; appendPullReplyTail the cancelled list after it.
func appendPullReplyHead(b []byte, journalID, incarnation string, epoch, visible uint64, entries int) []byte {
	b = appendMapLen(b, 7)
	b = appendUint(appendStr(b, "v"), ProtocolVersion)
	b = appendStr(appendStr(b, "journal_id"), journalID)
	b = appendStr(appendStr(b, "incarnation"), incarnation)
	b = appendUint(appendStr(b, "epoch"), epoch)
	b = appendUint(appendStr(b, "visible"), visible)
	b = appendStr(b, "entries")
	return appendArrayLen(b, entries)
}

func appendEntry(b []byte, e *engine.Entry) []byte {
	b = appendMapLen(b, 8)
	b = appendUint(appendStr(b, "seq"), e.Seq)
	b = appendBin(appendStr(b, "id"), e.ID[:])
	b = appendUint(appendStr(b, "kind"), uint64(e.Kind))
	b = appendStr(appendStr(b, "entity"), e.Coordinate.Entity())
	b = appendStr(appendStr(b, "scope"), e.Coordinate.Scope())
	b = appendUint(appendStr(b, "clock"), uint64(e.Clock))
	b = appendInt(appendStr(b, "wall_ms"), e.WallMs)
	return appendBin(appendStr(b, "payload"), e.Payload)
}

func appendRanges(b []byte, rs []engine.Range) []byte {
	b = appendArrayLen(b, len(rs))
	for _, r := range rs {
		b = appendUint(appendUint(appendArrayLen(b, 2), r.Start), r.End)
	}
	return b
}

// EncodePullReply encodes r.
func EncodePullReply(r *PullReply) []byte {
	size := replyHeaderBytes + 19*len(r.Cancelled)
	for i := range r.Entries {
		size += replyEntrySize(&r.Entries[i])
	}
	b := make([]byte, 0, size)
	b = appendPullReplyHead(b, r.JournalID.String(), r.Incarnation.String(), r.Epoch, r.Visible, len(r.Entries))
	for i := range r.Entries {
		b = appendEntry(b, &r.Entries[i])
	}
	return appendRanges(appendStr(b, "cancelled"), r.Cancelled)
}

// DecodePullReply decodes a pull reply. Entry payloads are copied out of
// data into one buffer.
func DecodePullReply(data []byte) (*PullReply, error) {
	out := &PullReply{}
	err := decodeReply(data, "pull reply", func(r *reader, key string) {
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

// decodeReply reads a reply or message body: a map that must carry "v"
// with this protocol's version; every other key is handed to field, which
// consumes its value (skipping keys it does not know).
func decodeReply(data []byte, what string, field func(r *reader, key string)) error {
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

func decodeEntries(r *reader) []engine.Entry {
	n := r.arrayLen()
	if r.err != nil || n > len(r.b)-r.off {
		r.fail(errWireShort)
		return nil
	}
	entries := make([]engine.Entry, n)
	for i := range entries {
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
		size += entryOverhead + len(events[i].Coordinate.Entity()) + len(events[i].Coordinate.Scope()) + len(events[i].Payload)
	}
	b := make([]byte, 0, size)
	b = appendMapLen(b, 2)
	b = appendUint(appendStr(b, "v"), ProtocolVersion)
	b = appendArrayLen(appendStr(b, "events"), len(events))
	for i := range events {
		ev := &events[i]
		fields := 4
		if !ev.Key.IsZero() {
			fields++
		}
		b = appendMapLen(b, fields)
		b = appendStr(appendStr(b, "entity"), ev.Coordinate.Entity())
		b = appendStr(appendStr(b, "scope"), ev.Coordinate.Scope())
		b = appendUint(appendStr(b, "kind"), uint64(ev.Kind))
		b = appendBin(appendStr(b, "payload"), ev.Payload)
		if !ev.Key.IsZero() {
			b = appendBin(appendStr(b, "idempotency_key"), ev.Key[:])
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
		return nil, badField("body", "must be a MessagePack map: %v", r.err)
	}
	var events []engine.Event
	hasV, hasEvents := false, false
	for i := 0; i < n; i++ {
		key := r.str()
		if r.err != nil {
			return nil, badField("body", "keys must be strings: %v", r.err)
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
				return nil, badField("events", "must be an array: %v", r.err)
			}
			if count == 0 {
				return nil, badField("events", "must hold at least one event")
			}
			if count > maxEvents {
				return nil, &RequestError{Field: "events", Rule: fmt.Sprintf("at most %d events per append (got %d)", maxEvents, count), Code: 413}
			}
			if count > len(r.b)-r.off {
				return nil, badField("events", "declares %d events in %d bytes", count, len(r.b)-r.off)
			}
			events = make([]engine.Event, count)
			for j := range events {
				if err := decodeEvent(r, j, &events[j]); err != nil {
					return nil, err
				}
			}
			hasEvents = true
		default:
			r.skip()
		}
		if r.err != nil {
			return nil, badField(key, "malformed value: %v", r.err)
		}
	}
	if !hasV {
		return nil, badField("v", "is required")
	}
	if !hasEvents {
		return nil, badField("events", "is required")
	}
	return events, nil
}

func decodeEvent(r *reader, i int, ev *engine.Event) error {
	field := func(name string) string { return fmt.Sprintf("events[%d].%s", i, name) }
	n := r.mapLen()
	if r.err != nil {
		return badField(fmt.Sprintf("events[%d]", i), "must be a map: %v", r.err)
	}
	var entity, scope string
	hasEntity, hasScope, hasKind := false, false, false
	for j := 0; j < n; j++ {
		key := r.str()
		if r.err != nil {
			return badField(fmt.Sprintf("events[%d]", i), "keys must be strings: %v", r.err)
		}
		switch key {
		case "entity":
			entity, hasEntity = r.str(), true
		case "scope":
			scope, hasScope = r.str(), true
		case "kind":
			k := r.uint()
			if r.err == nil && k > 0xFFFF {
				return badField(field("kind"), "must be a 16-bit kind (got %d)", k)
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
					return badField(field("idempotency_key"), "must be 16 bytes (got %d)", len(k))
				}
				copy(ev.Key[:], k)
			}
		default:
			r.skip()
		}
		if r.err != nil {
			return badField(field(key), "malformed value: %v", r.err)
		}
	}
	switch {
	case !hasEntity:
		return badField(field("entity"), "is required")
	case !hasScope:
		return badField(field("scope"), "is required")
	case !hasKind:
		return badField(field("kind"), "is required")
	}
	c, err := engine.NewCoordinate(entity, scope)
	if err != nil {
		name := "entity"
		if errors.Is(err, engine.ErrEmptyScope) || errors.Is(err, engine.ErrScopeTooLong) || isScopeErr(err) {
			name = "scope"
		}
		return badField(field(name), "%v", err)
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
	b = appendMapLen(b, 2)
	b = appendUint(appendStr(b, "v"), ProtocolVersion)
	b = appendArrayLen(appendStr(b, "receipts"), len(receipts))
	for _, rc := range receipts {
		b = appendMapLen(b, 3)
		b = appendUint(appendStr(b, "seq"), rc.Seq)
		b = appendBin(appendStr(b, "id"), rc.ID[:])
		b = appendBool(appendStr(b, "replayed"), rc.Replayed)
	}
	return b
}

// DecodeAppendReply decodes an append reply.
func DecodeAppendReply(data []byte) ([]engine.Receipt, error) {
	var out []engine.Receipt
	err := decodeReply(data, "append reply", func(r *reader, key string) {
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
type Info struct {
	Journal         string
	JournalID       engine.ID128
	Incarnation     engine.ID128
	Epoch           uint64
	Visible         uint64
	Events          uint64 // indexed entries
	CancelledRanges []engine.Range
	StartedMs       int64
}

// EncodeInfo encodes an info reply.
func EncodeInfo(in Info) []byte {
	b := make([]byte, 0, 256)
	b = appendMapLen(b, 9)
	b = appendUint(appendStr(b, "v"), ProtocolVersion)
	b = appendStr(appendStr(b, "journal"), in.Journal)
	b = appendStr(appendStr(b, "journal_id"), in.JournalID.String())
	b = appendStr(appendStr(b, "incarnation"), in.Incarnation.String())
	b = appendUint(appendStr(b, "epoch"), in.Epoch)
	b = appendUint(appendStr(b, "visible"), in.Visible)
	b = appendUint(appendStr(b, "events"), in.Events)
	b = appendRanges(appendStr(b, "cancelled_ranges"), in.CancelledRanges)
	return appendInt(appendStr(b, "started_ms"), in.StartedMs)
}

// DecodeInfo decodes an info reply.
func DecodeInfo(data []byte) (Info, error) {
	var in Info
	err := decodeReply(data, "info reply", func(r *reader, key string) {
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
	b = appendMapLen(b, 5)
	b = appendUint(appendStr(b, "v"), ProtocolVersion)
	b = appendStr(appendStr(b, "journal_id"), m.JournalID.String())
	b = appendStr(appendStr(b, "incarnation"), m.Incarnation.String())
	b = appendUint(appendStr(b, "epoch"), m.Epoch)
	return appendUint(appendStr(b, "visible"), m.Visible)
}

// DecodeEpoch decodes an epoch message.
func DecodeEpoch(data []byte) (EpochMessage, error) {
	var m EpochMessage
	err := decodeReply(data, "epoch message", func(r *reader, key string) {
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
