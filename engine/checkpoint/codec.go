package checkpoint

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/batfleet/batfleet/internal/msgpackutil"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Encode encodes rec as the MessagePack map of the record format: the
// seven keys in table order (position, started, process_boot_ns,
// region_identity, journal_id, owner, updated_ms) with minimal integer and
// string widths, then epoch when it is not 0 (a consumer group's partition
// checkpoint; decoders that do not know it ignore it); process_boot_ns is
// always nil.
func Encode(rec Record) []byte {
	var buf bytes.Buffer
	buf.Grow(160 + len(rec.Owner))
	enc := msgpack.NewEncoder(&buf)
	// Writes to a bytes.Buffer cannot fail.
	n := 7
	if rec.Epoch > 0 {
		n++
	}
	_ = enc.EncodeMapLen(n)
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
	if rec.Epoch > 0 {
		_ = enc.EncodeString("epoch")
		_ = enc.EncodeUint(rec.Epoch)
	}
	return buf.Bytes()
}

// Decode decodes a checkpoint record: keys in any order, unknown
// keys ignored, process_boot_ns ignored whatever its value. A non-map, a
// missing position or started, a wrongly typed value or trailing bytes is
// an error (callers report it as ErrCorrupt).
func Decode(data []byte) (Record, error) {
	var rec Record
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
		case "epoch":
			rec.Epoch, err = decodeUint(dec)
		case "updated_ms":
			var c byte
			if c, err = dec.PeekCode(); err == nil && c == msgpcode.Nil {
				err = dec.DecodeNil()
			} else if err == nil {
				rec.UpdatedMs, err = decodeUint(dec)
			}
		default: // process_boot_ns and unknown keys
			err = msgpackutil.Skip(dec)
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
