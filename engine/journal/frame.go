package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/batfleet/batfleet/engine"
)

// Frame layout (see doc.go for the table):
//
//	u32 LE body length | u32 LE CRC-32C(body) | body
//
// body[0] is the frame type, body[1] the frame format version.

const (
	frameHeaderLen  = 8
	frameVersion    = 1
	eventFixedLen   = 50 // event body bytes before entity, scope and payload
	markerBodyLen   = 20 // batch begin/commit body
	fenceCommitLen  = 20 // fence commit body
	groupBodyLen    = 28 // group begin body
	groupFrameLen   = frameHeaderLen + groupBodyLen
	maxFrameBodyLen = 1 << 28
	maxGroupLen     = 1 << 31 // sanity bound of a group frame's length field

	frameEvent       = 1
	frameBatchBegin  = 2
	frameBatchCommit = 3
	frameFenceCommit = 4
	frameGroup       = 5 // begins a group write: its seqs and length

	eventFlagFenced = 1 << 0
	eventFlagKeyed  = 1 << 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame decoding outcomes that recovery tells apart.
var (
	errFrameShort = errors.New("frame runs past the end of the data")
	errFrameCRC   = errors.New("frame checksum mismatch")
)

// frameError is a structurally invalid frame (bad length, type or version).
type frameError struct{ reason string }

func (e *frameError) Error() string { return "invalid frame: " + e.reason }

// eventRecord is one event as written in a frame.
type eventRecord struct {
	flags   uint8
	kind    engine.Kind
	clock   uint32
	seq     uint64
	wallMs  int64
	id      [16]byte
	entity  []byte
	scope   []byte
	payload []byte
}

// eventFrameLen is the encoded size of an event frame, header included.
func eventFrameLen(entity, scope, payload int) int {
	return frameHeaderLen + eventFixedLen + entity + scope + payload
}

// appendEventFrame encodes an event frame onto dst (ev.entity and ev.scope
// are ignored in favour of the string arguments, which saves copies). It
// returns the extended slice and the offset within it of the payload.
func appendEventFrame(dst []byte, ev *eventRecord, entity, scope string) ([]byte, int) {
	start := len(dst)
	bodyLen := eventFixedLen + len(entity) + len(scope) + len(ev.payload)
	dst = grow(dst, frameHeaderLen+bodyLen)
	b := dst[start:]
	binary.LittleEndian.PutUint32(b[0:], uint32(bodyLen))
	body := b[frameHeaderLen:]
	body[0] = frameEvent
	body[1] = frameVersion
	body[2] = ev.flags
	body[3] = 0
	binary.LittleEndian.PutUint16(body[4:], uint16(ev.kind))
	binary.LittleEndian.PutUint16(body[6:], uint16(len(entity)))
	binary.LittleEndian.PutUint16(body[8:], uint16(len(scope)))
	binary.LittleEndian.PutUint32(body[10:], ev.clock)
	binary.LittleEndian.PutUint64(body[14:], ev.seq)
	binary.LittleEndian.PutUint64(body[22:], uint64(ev.wallMs))
	copy(body[30:46], ev.id[:])
	binary.LittleEndian.PutUint32(body[46:], uint32(len(ev.payload)))
	n := eventFixedLen
	n += copy(body[n:], entity)
	n += copy(body[n:], scope)
	payloadOff := start + frameHeaderLen + n
	copy(body[n:], ev.payload)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(body, castagnoli))
	return dst, payloadOff
}

// appendMarkerFrame encodes a batch begin/commit or fence commit frame:
// type, version, two reserved bytes, then two u64 values.
func appendMarkerFrame(dst []byte, typ byte, a, b uint64) []byte {
	start := len(dst)
	dst = grow(dst, frameHeaderLen+markerBodyLen)
	f := dst[start:]
	binary.LittleEndian.PutUint32(f[0:], markerBodyLen)
	body := f[frameHeaderLen:]
	body[0] = typ
	body[1] = frameVersion
	body[2], body[3] = 0, 0
	binary.LittleEndian.PutUint64(body[4:], a)
	binary.LittleEndian.PutUint64(body[12:], b)
	binary.LittleEndian.PutUint32(f[4:], crc32.Checksum(body, castagnoli))
	return dst
}

// putGroupFrame writes a group begin frame into dst[:groupFrameLen]: the
// group holds seqs [first, end) and length bytes of frames after it.
func putGroupFrame(dst []byte, first, end, length uint64) {
	f := dst[:groupFrameLen]
	binary.LittleEndian.PutUint32(f[0:], groupBodyLen)
	body := f[frameHeaderLen:]
	body[0] = frameGroup
	body[1] = frameVersion
	body[2], body[3] = 0, 0
	binary.LittleEndian.PutUint64(body[4:], first)
	binary.LittleEndian.PutUint64(body[12:], end)
	binary.LittleEndian.PutUint64(body[20:], length)
	binary.LittleEndian.PutUint32(f[4:], crc32.Checksum(body, castagnoli))
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*cap(b)+n)
	copy(nb, b)
	return nb
}

// decodedFrame is one decoded frame. For events, rec's byte slices alias
// the input buffer; payloadOff is the payload's offset from the frame start.
type decodedFrame struct {
	typ        byte
	rec        eventRecord
	a, b       uint64 // markers: first/count (batch), lo/hi (fence), first/end (group)
	c          uint64 // group: bytes of the group's frames after this one
	size       int    // total frame size, header included
	payloadOff int
}

// decodeFrame decodes the frame at the start of buf. It returns
// errFrameShort when buf ends inside the frame, errFrameCRC on a checksum
// mismatch, and *frameError for a structurally invalid frame.
func decodeFrame(buf []byte, f *decodedFrame) error {
	if len(buf) < frameHeaderLen {
		return errFrameShort
	}
	bodyLen := binary.LittleEndian.Uint32(buf[0:])
	if bodyLen < 2 || bodyLen > maxFrameBodyLen {
		return &frameError{fmt.Sprintf("body length %d", bodyLen)}
	}
	total := frameHeaderLen + int(bodyLen)
	if len(buf) < total {
		return errFrameShort
	}
	body := buf[frameHeaderLen:total]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(buf[4:]) {
		return errFrameCRC
	}
	if body[1] != frameVersion {
		return &frameError{fmt.Sprintf("frame version %d", body[1])}
	}
	*f = decodedFrame{typ: body[0], size: total}
	switch body[0] {
	case frameEvent:
		if len(body) < eventFixedLen {
			return &frameError{"event body too short"}
		}
		if body[3] != 0 || body[2]&^(eventFlagFenced|eventFlagKeyed) != 0 {
			return &frameError{"reserved event bits set"}
		}
		r := &f.rec
		r.flags = body[2]
		r.kind = engine.Kind(binary.LittleEndian.Uint16(body[4:]))
		el := int(binary.LittleEndian.Uint16(body[6:]))
		sl := int(binary.LittleEndian.Uint16(body[8:]))
		r.clock = binary.LittleEndian.Uint32(body[10:])
		r.seq = binary.LittleEndian.Uint64(body[14:])
		r.wallMs = int64(binary.LittleEndian.Uint64(body[22:]))
		copy(r.id[:], body[30:46])
		pl := int(binary.LittleEndian.Uint32(body[46:]))
		if eventFixedLen+el+sl+pl != len(body) {
			return &frameError{"event lengths do not add up to the body length"}
		}
		n := eventFixedLen
		r.entity = body[n : n+el]
		n += el
		r.scope = body[n : n+sl]
		n += sl
		r.payload = body[n:]
		f.payloadOff = frameHeaderLen + n
	case frameBatchBegin, frameBatchCommit, frameFenceCommit, frameGroup:
		// Fixed bodies: 2 reserved zero bytes, then u64 fields.
		want := markerBodyLen
		if body[0] == frameGroup {
			want = groupBodyLen
		}
		if len(body) != want {
			return &frameError{fmt.Sprintf("type %d body length %d", body[0], len(body))}
		}
		if body[2] != 0 || body[3] != 0 {
			return &frameError{"reserved marker bytes set"}
		}
		f.a = binary.LittleEndian.Uint64(body[4:])
		f.b = binary.LittleEndian.Uint64(body[12:])
		if body[0] == frameGroup {
			f.c = binary.LittleEndian.Uint64(body[20:])
			if f.b < f.a || f.c > maxGroupLen {
				return &frameError{fmt.Sprintf("group seqs [%d, %d) of %d bytes", f.a, f.b, f.c)}
			}
		}
	default:
		return &frameError{fmt.Sprintf("unknown frame type %d", body[0])}
	}
	return nil
}
