package msgpackutil

import (
	"errors"
	"fmt"
)

// errShort reports input that ends inside a value.
var errShort = errors.New("msgpack: input ends inside a value")

// CheckBounded checks, without allocating, that data starts with one
// complete MessagePack value whose every declared length fits the bytes
// that follow it (a container of n values needs at least n bytes more, a
// string or binary of n bytes n bytes more), and whose arrays and maps
// nest at most MaxDepth deep, as Skip allows. Bytes after the value are
// not looked at.
//
// Call it before msgpack.Unmarshal of bytes from outside the process into
// a struct: msgpack/v5 (v5.4.1) sizes a decoded slice by the length its
// array declares, whatever its allocation limit says (a 13-byte member
// record declaring 2^32-1 partitions asks for 16 GiB), and skips unknown
// fields by recursion without a limit (a megabyte of nested arrays takes
// a 128 MiB stack).
func CheckBounded(data []byte) error {
	c := checker{b: data}
	c.value(0)
	return c.err
}

type checker struct {
	b   []byte
	off int
	err error
}

func (c *checker) take(n uint64) bool {
	if c.err != nil {
		return false
	}
	if n > uint64(len(c.b)-c.off) {
		c.err = errShort
		return false
	}
	c.off += int(n)
	return true
}

// length reads an n-byte big-endian length.
func (c *checker) length(n int) uint64 {
	if !c.take(uint64(n)) {
		return 0
	}
	var v uint64
	for _, b := range c.b[c.off-n : c.off] {
		v = v<<8 | uint64(b)
	}
	return v
}

func (c *checker) value(depth int) {
	if !c.take(1) {
		return
	}
	code := c.b[c.off-1]
	var items uint64 // the values an array or map holds
	switch {
	case code <= 0x7f, code >= 0xe0, code == 0xc0, code == 0xc2, code == 0xc3:
		return
	case code&0xf0 == 0x80:
		items = 2 * uint64(code&0x0f)
	case code&0xf0 == 0x90:
		items = uint64(code & 0x0f)
	case code&0xe0 == 0xa0:
		c.take(uint64(code & 0x1f))
		return
	case code == 0xdc:
		items = c.length(2)
	case code == 0xdd:
		items = c.length(4)
	case code == 0xde:
		items = 2 * c.length(2)
	case code == 0xdf:
		items = 2 * c.length(4)
	default:
		c.scalar(code)
		return
	}
	if c.err != nil {
		return
	}
	if rest := uint64(len(c.b) - c.off); items > rest {
		c.err = fmt.Errorf("msgpack: a container declares %d values in the %d bytes left", items, rest)
		return
	}
	if depth >= MaxDepth {
		c.err = fmt.Errorf("value nested deeper than %d levels", MaxDepth)
		return
	}
	for i := uint64(0); i < items && c.err == nil; i++ {
		c.value(depth + 1)
	}
}

// scalar consumes the rest of a value of code other than nil, booleans,
// fixed integers, fixed strings, arrays and maps.
func (c *checker) scalar(code byte) {
	switch code {
	case 0xc4, 0xd9: // bin8, str8
		c.take(c.length(1))
	case 0xc5, 0xda:
		c.take(c.length(2))
	case 0xc6, 0xdb:
		c.take(c.length(4))
	case 0xc7: // ext8, 16, 32: length, type byte, data
		c.take(c.length(1) + 1)
	case 0xc8:
		c.take(c.length(2) + 1)
	case 0xc9:
		c.take(c.length(4) + 1)
	case 0xcc, 0xd0:
		c.take(1)
	case 0xcd, 0xd1:
		c.take(2)
	case 0xca, 0xce, 0xd2:
		c.take(4)
	case 0xcb, 0xcf, 0xd3:
		c.take(8)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16 and a type byte
		c.take(1 + 1<<(code-0xd4))
	default: // 0xc1, never used
		c.err = fmt.Errorf("msgpack: invalid code %#x", code)
	}
}
