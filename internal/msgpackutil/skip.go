// Package msgpackutil holds MessagePack helpers shared by the decoders of
// persisted records (coordinates, checkpoint records, cancelled ranges).
package msgpackutil

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// MaxDepth bounds the nesting of values skipped in decoded input (the
// unknown keys of a checkpoint record or of a coordinate). msgpack's own
// Decoder.Skip recurses without a limit: a few megabytes of nested arrays
// would overflow the goroutine stack, a fatal error no recover catches.
const MaxDepth = 32

// Skip skips one value, refusing arrays and maps nested deeper than
// MaxDepth.
func Skip(dec *msgpack.Decoder) error { return skipNested(dec, 0) }

func skipNested(dec *msgpack.Decoder, depth int) error {
	c, err := dec.PeekCode()
	if err != nil {
		return err
	}
	var n int
	switch {
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		if n, err = dec.DecodeArrayLen(); err != nil {
			return err
		}
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		if n, err = dec.DecodeMapLen(); err != nil {
			return err
		}
		n *= 2
	default:
		return dec.Skip() // scalars, strings, binaries, extensions: flat
	}
	if depth >= MaxDepth {
		return fmt.Errorf("value nested deeper than %d levels", MaxDepth)
	}
	for range n {
		if err := skipNested(dec, depth+1); err != nil {
			return err
		}
	}
	return nil
}
