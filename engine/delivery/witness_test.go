package delivery

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/journal"
)

// Tests of effect keys and the proofs built from them (SPEC §10).

// witEntry is an entry with the given id byte pattern and seq.
func witEntry(idByte byte, seq uint64) engine.Entry {
	var id engine.ID128
	for i := range id {
		id[i] = idByte + byte(i)
	}
	return engine.Entry{ID: id, Seq: seq, Kind: engine.KindData, Coordinate: engine.MustCoordinate("w", "s"), Payload: []byte("p")}
}

// witReference derives a key as witness.go documents it: SHA-256 over
// the domain tag, the checkpoint id and the entry id, each prefixed by its
// length as a big-endian u64, then the seq as a big-endian u64.
func witReference(checkpointID string, e engine.Entry) EffectKey {
	h := sha256.New()
	put := func(b []byte) {
		_ = binary.Write(h, binary.BigEndian, uint64(len(b)))
		h.Write(b)
	}
	put([]byte("batfleet/effect-key/v1"))
	put([]byte(checkpointID))
	put(e.ID[:])
	_ = binary.Write(h, binary.BigEndian, e.Seq)
	var k EffectKey
	copy(k[:], h.Sum(nil))
	return k
}

// TestWITExtra_DeriveEffectKey: a key is stable for the same (checkpoint
// id, entry id, seq), whatever witness pointer carries the id and
// whatever else the entry holds; it changes when any of the three does;
// a nil witness (in-memory worker) is allowed and keys like the empty id.
// Stored keys outlive versions, so the derivation itself is pinned too.
func TestWITExtra_DeriveEffectKey(t *testing.T) {
	wa, wa2, wb := &AtLeastOnce{checkpointID: "ck-a"}, &AtLeastOnce{checkpointID: "ck-a"}, &AtLeastOnce{checkpointID: "ck-b"}
	e := witEntry(1, 42)
	k := DeriveEffectKey(wa, e)
	if k != DeriveEffectKey(wa, e) || k != DeriveEffectKey(wa2, e) {
		t.Fatal("the same (checkpoint id, entry id, seq) gave different keys")
	}
	other := e
	other.Payload, other.Clock, other.WallMs, other.Kind = []byte("changed"), 9, 12345, engine.KindOpenCompleted
	other.Coordinate = engine.MustCoordinate("elsewhere", "x")
	if DeriveEffectKey(wa, other) != k {
		t.Fatal("the key depends on more than the checkpoint id, entry id and seq")
	}
	if k != witReference("ck-a", e) {
		t.Fatalf("key %x, want %x (the documented derivation)", k, witReference("ck-a", e))
	}
	if got := hex.EncodeToString(k[:]); got != "e8023c297a9a88dde7a78cc7f7cb17ec02f3e39dc100705f85de0b0342a9b7f6" {
		t.Fatalf("key = %s: the derivation changed, and keys already stored with effects would no longer match", got)
	}

	differ := map[string]EffectKey{
		"checkpoint id": DeriveEffectKey(wb, e),
		"entry id":      DeriveEffectKey(wa, witEntry(2, 42)),
		"seq":           DeriveEffectKey(wa, witEntry(1, 43)),
		"nil witness":   DeriveEffectKey(nil, e),
	}
	seen := map[EffectKey]string{k: "base"}
	for what, key := range differ {
		if prev, dup := seen[key]; dup {
			t.Fatalf("changing the %s gave the key of %s", what, prev)
		}
		seen[key] = what
	}
	// A nil witness keys like a witness of the empty id, and stably.
	if DeriveEffectKey(nil, e) != DeriveEffectKey(&AtLeastOnce{}, e) || DeriveEffectKey(nil, e) != witReference("", e) {
		t.Fatal("a nil witness does not key like the empty checkpoint id")
	}
	// Length prefixes keep the fields apart.
	if DeriveEffectKey(&AtLeastOnce{checkpointID: "a"}, witEntry(0, 1)) == DeriveEffectKey(&AtLeastOnce{checkpointID: "a\x00"}, witEntry(0, 1)) {
		t.Fatal("checkpoint ids a and a\\x00 share a key")
	}

	o := NewObservedOnce(wa, k)
	if w, key := o.Parts(); w != wa || key != k {
		t.Fatalf("Parts() = (%p, %x), want (%p, %x)", w, key, wa, k)
	}
}

// TestWITExtra_DeliveryEffectKey: Delivery.EffectKey is DeriveEffectKey
// under the batch's witness, and a batch redelivered after a panic, or to
// a new worker on the same checkpoint, gets the same keys (each run has
// its own witness).
func TestWITExtra_DeliveryEffectKey(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	var seqs []uint64
	for i := 0; i < 3; i++ {
		seqs = append(seqs, mustAppend(t, s, ev("wit", "s", fmt.Sprint(i))).Seq)
	}
	store := checkpoint.NewMemoryStore()
	var mu sync.Mutex
	keys := map[uint64][]EffectKey{}
	witnesses := map[*AtLeastOnce]bool{}
	run := func(stopAt uint64, panicOnce bool) {
		t.Helper()
		cfg := DefaultWorkerConfig()
		cfg.BatchSize = 1
		cfg.CheckpointID, cfg.Checkpoints = "wit", store
		panicked := false
		w, err := StartWorker(context.Background(), s, engine.RegionEntity("wit"), cfg,
			func(_ context.Context, b []engine.Entry, d *Delivery) Action {
				mu.Lock()
				defer mu.Unlock()
				e := b[0]
				k := d.EffectKey(e)
				if k != DeriveEffectKey(d.Witness, e) || d.Witness == nil || k != witReference("wit", e) {
					panic(fmt.Sprintf("seq %d: Delivery.EffectKey %x is not DeriveEffectKey under the witness", e.Seq, k))
				}
				keys[e.Seq] = append(keys[e.Seq], k)
				witnesses[d.Witness] = true
				if panicOnce && !panicked {
					panicked = true
					panic("redeliver")
				}
				if e.Seq == stopAt {
					return Stop
				}
				return Continue
			})
		if err != nil {
			t.Fatal(err)
		}
		if err := fltJoin(t, w); err != nil {
			t.Fatalf("Join = %v", err)
		}
	}
	run(seqs[0], true) // seqs[0] twice (panic, redelivery), then Stop
	// Rewind the record so the next worker redelivers seqs[0].
	if rec, _ := ccpLoad(t, store, "wit"); rec.Position != seqs[0] {
		t.Fatalf("record at %d after the first run, want %d", rec.Position, seqs[0])
	}
	_, rev := ccpLoad(t, store, "wit")
	if _, err := store.Save(context.Background(), "wit", ccpRecord(engine.RegionEntity("wit"), 0, false, s.JournalID().String()), rev); err != nil {
		t.Fatal(err)
	}
	run(seqs[2], false)
	mu.Lock()
	defer mu.Unlock()
	if len(witnesses) != 2 {
		t.Fatalf("%d distinct witnesses, want 2 (one per worker)", len(witnesses))
	}
	if n := len(keys[seqs[0]]); n != 3 {
		t.Fatalf("seq %d delivered %d times, want 3 (panic, redelivery, second worker)", seqs[0], n)
	}
	for seq, ks := range keys {
		for _, k := range ks[1:] {
			if k != ks[0] {
				t.Fatalf("seq %d: keys %x differ across redeliveries", seq, ks)
			}
		}
	}
	if keys[seqs[0]][0] == keys[seqs[1]][0] || keys[seqs[1]][0] == keys[seqs[2]][0] {
		t.Fatal("two entries share an effect key")
	}
}
