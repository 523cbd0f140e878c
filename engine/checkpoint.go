package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// CheckpointRecord is a durable cursor position (SPEC §8.2).
type CheckpointRecord struct {
	Position uint64
	Started  bool
	// RegionIdentity is the region the position belongs to; nil when the
	// record carries none (such a record never loads into a worker).
	RegionIdentity *string
	// JournalID binds the record to one journal; "" when absent (an old
	// record: not checked, and added by the next save).
	JournalID string
	Owner     string // the saving worker's id; informational
	UpdatedMs uint64 // unix ms of the save; informational
}

// Revision is a checkpoint store's compare-and-swap token. Zero means "no
// record": a save with expected revision 0 creates.
type Revision uint64

// CheckpointStore persists checkpoint records with compare-and-swap
// (SPEC §8.4). Implementations are safe for concurrent use.
type CheckpointStore interface {
	// Load returns the record of id and its revision. Errors:
	// ErrCheckpointNotFound, ErrCheckpointCorrupt (a
	// *CheckpointCorruptError), ErrCheckpointIO.
	Load(ctx context.Context, id string) (CheckpointRecord, Revision, error)
	// Save stores rec under id if the stored revision equals expected (0:
	// only if no record exists) and returns the new, larger revision.
	// Errors: ErrCheckpointConflict, ErrCheckpointIO (the stored record is
	// then intact).
	Save(ctx context.Context, id string, rec CheckpointRecord, expected Revision) (Revision, error)
	// Location names where id is stored (a file path, a bucket and key),
	// for errors and logs.
	Location(id string) string
}

// EncodeCheckpoint encodes rec as the MessagePack map of SPEC §8.3: the
// seven keys in table order with minimal integer and string widths;
// process_boot_ns is always nil.
func EncodeCheckpoint(rec CheckpointRecord) []byte {
	var buf bytes.Buffer
	buf.Grow(160 + len(rec.Owner))
	enc := msgpack.NewEncoder(&buf)
	// Writes to a bytes.Buffer cannot fail.
	_ = enc.EncodeMapLen(7)
	_ = enc.EncodeString("position")
	_ = enc.EncodeUint(rec.Position)
	_ = enc.EncodeString("started")
	_ = enc.EncodeBool(rec.Started)
	_ = enc.EncodeString("process_boot_ns")
	_ = enc.EncodeNil()
	_ = enc.EncodeString("region_identity")
	if rec.RegionIdentity != nil {
		_ = enc.EncodeString(*rec.RegionIdentity)
	} else {
		_ = enc.EncodeNil()
	}
	_ = enc.EncodeString("journal_id")
	if rec.JournalID != "" {
		_ = enc.EncodeString(rec.JournalID)
	} else {
		_ = enc.EncodeNil()
	}
	_ = enc.EncodeString("owner")
	_ = enc.EncodeString(rec.Owner)
	_ = enc.EncodeString("updated_ms")
	_ = enc.EncodeUint(rec.UpdatedMs)
	return buf.Bytes()
}

// DecodeCheckpoint decodes a checkpoint record: keys in any order, unknown
// keys ignored, process_boot_ns ignored whatever its value. A non-map, a
// missing position or started, a wrongly typed value or trailing bytes is
// an error (callers report it as ErrCheckpointCorrupt).
func DecodeCheckpoint(data []byte) (CheckpointRecord, error) {
	var rec CheckpointRecord
	if len(data) == 0 {
		return rec, errors.New("empty record")
	}
	r := bytes.NewReader(data)
	dec := msgpack.NewDecoder(r)
	code, err := dec.PeekCode()
	if err != nil {
		return rec, err
	}
	if !msgpcode.IsFixedMap(code) && code != msgpcode.Map16 && code != msgpcode.Map32 {
		return rec, fmt.Errorf("record is not a map (code %#x)", code)
	}
	n, err := dec.DecodeMapLen()
	if err != nil {
		return rec, err
	}
	var hasPos, hasStarted bool
	for i := 0; i < n; i++ {
		key, err := dec.DecodeString()
		if err != nil {
			return rec, fmt.Errorf("key %d: %w", i, err)
		}
		switch key {
		case "position":
			rec.Position, err = decodeUint(dec)
			hasPos = true
		case "started":
			var c byte
			if c, err = dec.PeekCode(); err == nil {
				if c != msgpcode.True && c != msgpcode.False {
					err = fmt.Errorf("want a boolean, found code %#x", c)
				} else {
					rec.Started, err = dec.DecodeBool()
				}
			}
			hasStarted = true
		case "region_identity":
			var s *string
			s, err = decodeOptString(dec)
			rec.RegionIdentity = s
		case "journal_id":
			var s *string
			if s, err = decodeOptString(dec); s != nil {
				rec.JournalID = *s
			}
		case "owner":
			var s *string
			if s, err = decodeOptString(dec); s != nil {
				rec.Owner = *s
			}
		case "updated_ms":
			var c byte
			if c, err = dec.PeekCode(); err == nil && c == msgpcode.Nil {
				err = dec.DecodeNil()
			} else if err == nil {
				rec.UpdatedMs, err = decodeUint(dec)
			}
		default: // process_boot_ns and unknown keys
			err = skipValue(dec)
		}
		if err != nil {
			return rec, fmt.Errorf("%s: %w", key, err)
		}
	}
	if !hasPos || !hasStarted {
		return rec, errors.New("record lacks position or started")
	}
	if r.Len() != 0 {
		return rec, fmt.Errorf("%d trailing bytes", r.Len())
	}
	return rec, nil
}

func decodeUint(dec *msgpack.Decoder) (uint64, error) {
	c, err := dec.PeekCode()
	if err != nil {
		return 0, err
	}
	switch {
	case msgpcode.IsFixedNum(c) && int8(c) >= 0, c == msgpcode.Uint8, c == msgpcode.Uint16, c == msgpcode.Uint32, c == msgpcode.Uint64:
		return dec.DecodeUint64()
	case c == msgpcode.Int8, c == msgpcode.Int16, c == msgpcode.Int32, c == msgpcode.Int64:
		v, err := dec.DecodeInt64()
		if err != nil {
			return 0, err
		}
		if v < 0 {
			return 0, fmt.Errorf("negative value %d", v)
		}
		return uint64(v), nil
	default:
		return 0, fmt.Errorf("want an unsigned integer, found code %#x", c)
	}
}

func decodeOptString(dec *msgpack.Decoder) (*string, error) {
	c, err := dec.PeekCode()
	if err != nil {
		return nil, err
	}
	if c == msgpcode.Nil {
		return nil, dec.DecodeNil()
	}
	if !msgpcode.IsFixedString(c) && c != msgpcode.Str8 && c != msgpcode.Str16 && c != msgpcode.Str32 {
		return nil, fmt.Errorf("want a string or nil, found code %#x", c)
	}
	s, err := dec.DecodeString()
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// resumePoint is where a durable worker starts: the position and the
// revision its first save must update.
type resumePoint struct {
	position uint64
	started  bool
	revision Revision
	record   *CheckpointRecord // nil when none was stored
}

// loadCheckpoint applies the store-only load rules of SPEC §8.5 (1-4).
func loadCheckpoint(ctx context.Context, store CheckpointStore, id string, region Region) (resumePoint, error) {
	rec, rev, err := store.Load(ctx, id)
	switch {
	case errors.Is(err, ErrCheckpointNotFound):
		return resumePoint{}, nil
	case errors.Is(err, ErrCheckpointCorrupt):
		return resumePoint{}, err
	case err != nil:
		if !errors.Is(err, ErrCheckpointIO) {
			err = fmt.Errorf("%w: %w", ErrCheckpointIO, err)
		}
		return resumePoint{}, err
	}
	want := region.Identity()
	if rec.RegionIdentity == nil || *rec.RegionIdentity != want {
		return resumePoint{}, &RegionMismatchError{Location: store.Location(id), Stored: rec.RegionIdentity, Expected: want}
	}
	return resumePoint{position: rec.Position, started: rec.Started, revision: rev, record: &rec}, nil
}

// checkAgainstSource applies the source rules of SPEC §8.5 (5-6).
func checkAgainstSource(rec *CheckpointRecord, position uint64, started bool, info SourceInfo) error {
	if rec != nil && rec.JournalID != "" && rec.JournalID != info.JournalID.String() {
		return &JournalMismatchError{Stored: rec.JournalID, Current: info.JournalID.String()}
	}
	if started && position >= info.Visible {
		return &AheadError{Position: position, Visible: info.Visible}
	}
	return nil
}
