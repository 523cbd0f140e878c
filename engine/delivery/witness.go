package delivery

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/batfleet/batfleet/engine"
)

// AtLeastOnce is the witness a durable worker hands its handler with every
// batch: proof that the batch is delivered under a durable checkpoint, so
// it will be delivered again after a failure until a save covers it. Only
// a durable worker mints one (at start); in-memory workers pass nil.
// Witnesses are comparable by pointer.
type AtLeastOnce struct {
	checkpointID string
}

// CheckpointID returns the id of the checkpoint the worker commits to.
func (w *AtLeastOnce) CheckpointID() string { return w.checkpointID }

// EffectKey is an opaque 32-byte digest identifying one effect of one
// delivered entry under one checkpoint. It is stable across redeliveries:
// derive it, store it atomically with the effect, and skip effects whose
// key is already stored to get exactly-once effects.
type EffectKey [32]byte

// DeriveEffectKey derives the effect key of entry e under witness w:
// SHA-256 over a domain tag, the checkpoint id, the entry id and its seq,
// each length-prefixed. Every field is stable under redelivery.
func DeriveEffectKey(w *AtLeastOnce, e engine.Entry) EffectKey {
	h := sha256.New()
	var n [8]byte
	put := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	put([]byte("batfleet/effect-key/v1"))
	id := ""
	if w != nil {
		id = w.checkpointID
	}
	put([]byte(id))
	put(e.ID[:])
	binary.BigEndian.PutUint64(n[:], e.Seq)
	h.Write(n[:])
	var k EffectKey
	copy(k[:], h.Sum(nil))
	return k
}

// ObservedOnce pairs a witness with an effect key: proof that an effect
// was derived under a durable checkpoint. batfleet does no deduplication
// with it.
type ObservedOnce struct {
	witness *AtLeastOnce
	key     EffectKey
}

// NewObservedOnce builds the proof from a witness and a key.
func NewObservedOnce(w *AtLeastOnce, key EffectKey) ObservedOnce {
	return ObservedOnce{witness: w, key: key}
}

// Parts returns the witness and the key.
func (o ObservedOnce) Parts() (*AtLeastOnce, EffectKey) { return o.witness, o.key }
