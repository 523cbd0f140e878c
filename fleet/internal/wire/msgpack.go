package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// A small MessagePack writer and reader for the protocol's hot messages
// (pull replies, append requests): no reflection, no per-field
// allocation. Encodings are minimal-width, as msgpack/v5 writes them, so
// either side may use either codec.

func AppendMapLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xde), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
	}
}

func AppendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
	}
}

func AppendStr(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

func AppendBin(b []byte, p []byte) []byte {
	n := len(p)
	switch {
	case n <= math.MaxUint8:
		b = append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
	}
	return append(b, p...)
}

func AppendUint(b []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
	}
}

func AppendInt(b []byte, v int64) []byte {
	if v >= 0 {
		return AppendUint(b, uint64(v))
	}
	switch {
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
	}
}

func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

// errWireShort reports input that ends inside a value.
var errWireShort = errors.New("message ends inside a value")

// reader reads MessagePack values from a byte slice. Errors are sticky:
// after the first one every read returns zero values, and err reports it.
type reader struct {
	b     []byte
	off   int
	err   error
	depth int // nesting of skipped containers
}

// maxSkipDepth bounds the nesting of values skipped as unknown, so hostile
// input cannot recurse deeply.
const maxSkipDepth = 32

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) need(n int) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || len(r.b)-r.off < n {
		r.fail(errWireShort)
		return false
	}
	return true
}

func (r *reader) byte1() byte {
	if !r.need(1) {
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) peek() byte {
	if !r.need(1) {
		return 0
	}
	return r.b[r.off]
}

func (r *reader) uintN(n int) uint64 {
	if !r.need(n) {
		return 0
	}
	var v uint64
	for _, c := range r.b[r.off : r.off+n] {
		v = v<<8 | uint64(c)
	}
	r.off += n
	return v
}

func (r *reader) raw(n int) []byte {
	if !r.need(n) {
		return nil
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p
}

// isNil consumes a nil and reports true, or reports false and consumes nothing.
func (r *reader) isNil() bool {
	if r.err == nil && r.off < len(r.b) && r.b[r.off] == 0xc0 {
		r.off++
		return true
	}
	return false
}

func (r *reader) mapLen() int {
	c := r.byte1()
	switch {
	case c&0xf0 == 0x80:
		return int(c & 0x0f)
	case c == 0xde:
		return int(r.uintN(2))
	case c == 0xdf:
		return int(r.uintN(4))
	}
	r.fail(fmt.Errorf("want a map, found code %#x", c))
	return 0
}

func (r *reader) arrayLen() int {
	c := r.byte1()
	switch {
	case c&0xf0 == 0x90:
		return int(c & 0x0f)
	case c == 0xdc:
		return int(r.uintN(2))
	case c == 0xdd:
		return int(r.uintN(4))
	}
	r.fail(fmt.Errorf("want an array, found code %#x", c))
	return 0
}

// strBytes reads a str (or bin) value without copying.
func (r *reader) strBytes() []byte {
	c := r.byte1()
	var n int
	switch {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9, c == 0xc4:
		n = int(r.uintN(1))
	case c == 0xda, c == 0xc5:
		n = int(r.uintN(2))
	case c == 0xdb, c == 0xc6:
		n = int(r.uintN(4))
	default:
		r.fail(fmt.Errorf("want a string, found code %#x", c))
		return nil
	}
	return r.raw(n)
}

func (r *reader) str() string { return string(r.strBytes()) }

// bin reads a bin (or str) value without copying.
func (r *reader) bin() []byte { return r.strBytes() }

func (r *reader) uint() uint64 {
	c := r.byte1()
	switch {
	case c <= 0x7f:
		return uint64(c)
	case c == 0xcc:
		return r.uintN(1)
	case c == 0xcd:
		return r.uintN(2)
	case c == 0xce:
		return r.uintN(4)
	case c == 0xcf:
		return r.uintN(8)
	case c >= 0xd0 && c <= 0xd3:
		v := r.intBody(c)
		if v < 0 {
			r.fail(fmt.Errorf("negative value %d", v))
			return 0
		}
		return uint64(v)
	case c >= 0xe0:
		r.fail(fmt.Errorf("negative value %d", int8(c)))
		return 0
	}
	r.fail(fmt.Errorf("want an integer, found code %#x", c))
	return 0
}

func (r *reader) intBody(c byte) int64 {
	switch c {
	case 0xd0:
		return int64(int8(r.uintN(1)))
	case 0xd1:
		return int64(int16(r.uintN(2)))
	case 0xd2:
		return int64(int32(r.uintN(4)))
	default:
		return int64(r.uintN(8))
	}
}

func (r *reader) int() int64 {
	c := r.peek()
	switch {
	case c >= 0xe0:
		r.off++
		return int64(int8(c))
	case c >= 0xd0 && c <= 0xd3:
		r.off++
		return r.intBody(c)
	}
	v := r.uint()
	if v > math.MaxInt64 {
		r.fail(fmt.Errorf("value %d out of range", v))
	}
	return int64(v)
}

func (r *reader) bool() bool {
	switch c := r.byte1(); c {
	case 0xc2:
		return false
	case 0xc3:
		return true
	default:
		r.fail(fmt.Errorf("want a boolean, found code %#x", c))
		return false
	}
}

// skip consumes one value of any type.
func (r *reader) skip() {
	c := r.byte1()
	switch {
	case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
	case c&0xf0 == 0x80:
		r.skipN(2 * int(c&0x0f))
	case c&0xf0 == 0x90:
		r.skipN(int(c & 0x0f))
	case c&0xe0 == 0xa0:
		r.raw(int(c & 0x1f))
	case c == 0xc4, c == 0xd9:
		r.raw(int(r.uintN(1)))
	case c == 0xc5, c == 0xda:
		r.raw(int(r.uintN(2)))
	case c == 0xc6, c == 0xdb:
		r.raw(int(r.uintN(4)))
	case c == 0xcc, c == 0xd0:
		r.raw(1)
	case c == 0xcd, c == 0xd1:
		r.raw(2)
	case c == 0xce, c == 0xd2, c == 0xca:
		r.raw(4)
	case c == 0xcf, c == 0xd3, c == 0xcb:
		r.raw(8)
	case c == 0xd4:
		r.raw(2)
	case c == 0xd5:
		r.raw(3)
	case c == 0xd6:
		r.raw(5)
	case c == 0xd7:
		r.raw(9)
	case c == 0xd8:
		r.raw(17)
	case c == 0xc7:
		r.raw(int(r.uintN(1)) + 1)
	case c == 0xc8:
		r.raw(int(r.uintN(2)) + 1)
	case c == 0xc9:
		r.raw(int(r.uintN(4)) + 1)
	case c == 0xdc:
		r.skipN(int(r.uintN(2)))
	case c == 0xdd:
		r.skipN(int(r.uintN(4)))
	case c == 0xde:
		r.skipN(2 * int(r.uintN(2)))
	case c == 0xdf:
		r.skipN(2 * int(r.uintN(4)))
	default:
		r.fail(fmt.Errorf("invalid code %#x", c))
	}
}

func (r *reader) skipN(n int) {
	r.depth++
	defer func() { r.depth-- }()
	if r.depth > maxSkipDepth {
		r.fail(errors.New("values nested too deeply"))
		return
	}
	for i := 0; i < n && r.err == nil; i++ {
		r.skip()
	}
}
