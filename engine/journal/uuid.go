package journal

import (
	"crypto/rand"
	"encoding/binary"
	mrand "math/rand/v2"

	"github.com/batfleet/batfleet/engine"
)

// uuidGen makes the UUIDv7 ids of unkeyed appends from a fast seeded
// generator. It is not safe for concurrent use (the committer owns one).
type uuidGen struct {
	rng *mrand.ChaCha8
}

func newUUIDGen() *uuidGen {
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	return &uuidGen{rng: mrand.NewChaCha8(seed)}
}

// next returns a UUIDv7 for unix-millisecond time ms.
func (g *uuidGen) next(ms int64) [16]byte {
	var rnd [16]byte
	binary.LittleEndian.PutUint64(rnd[0:], g.rng.Uint64())
	binary.LittleEndian.PutUint64(rnd[8:], g.rng.Uint64())
	return engine.UUIDv7(ms, rnd)
}
