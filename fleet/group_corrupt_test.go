package fleet

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/kvckpt"
)

// Catalogue: GRP-07 (fail closed): a group config record that does not
// decode — garbage written with the raw KV API — refuses every member at
// JoinGroup with ErrGroupCorrupt naming the record's key; the record is
// not overwritten and nothing else is written (no member key, no
// partition checkpoint).
func TestGRP07_CorruptGroupConfig(t *testing.T) {
	g := newGroupEnv(t)
	kv, err := openGroupBucket(testCtx(t), g.js, DefaultGroupBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	valid, err := encodeRecord(groupConfigRecord{V: 1, RegionIdentity: engine.RegionEntity("acct").Identity(), Partitions: 4, CreatedMs: 1})
	if err != nil {
		t.Fatal(err)
	}
	zero, err := encodeRecord(groupConfigRecord{V: 1, RegionIdentity: engine.RegionEntity("acct").Identity()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		value []byte
	}{
		{"not msgpack", []byte{0xc1, 0xff, 0x00, 'x'}},
		{"truncated", valid[:len(valid)/2]},
		{"not a map", []byte{0xa3, 'a', 'b', 'c'}},
		{"no partitions", zero},
	} {
		t.Run(tc.name, func(t *testing.T) {
			group := "gk" + strings.ReplaceAll(tc.name, " ", "")
			key := groupPrefix(testJournal, group) + "config"
			rev, err := kv.Create(testCtx(t), key, tc.value)
			if err != nil {
				t.Fatal(err)
			}
			cfg := GroupConfig{Journal: testJournal, Name: group, Region: engine.RegionEntity("acct"), Partitions: 4, MemberID: "a"}
			m, err := JoinGroup(context.Background(), g.e.c, g.ckpts, g.js, cfg, g.log.handler("a"))
			if err == nil {
				m.Stop()
				<-m.Done()
				t.Fatal("JoinGroup over a corrupt group config succeeded")
			}
			if !errors.Is(err, ErrGroupCorrupt) || !strings.Contains(err.Error(), key) {
				t.Fatalf("JoinGroup: %v, want ErrGroupCorrupt naming %s", err, key)
			}
			e, err := kv.Get(testCtx(t), key)
			if err != nil || e.Revision() != rev || !bytes.Equal(e.Value(), tc.value) {
				t.Fatalf("the corrupt record was touched: %v", err)
			}
			if _, err := kv.Get(testCtx(t), memberKey(testJournal, group, "a")); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Fatalf("a refused member's key: %v, want none", err)
			}
			for p := range uint16(4) {
				if _, _, err := g.ckpts.Load(testCtx(t), partitionCheckpointID(group, p)); !errors.Is(err, checkpoint.ErrNotFound) {
					t.Fatalf("partition %d checkpoint of a refused member: %v, want none", p, err)
				}
			}
		})
	}
}

// Catalogue: GRP-11 (fail closed): a partition checkpoint record that does
// not decode — garbage written with the raw KV API — stops the member
// that would claim it: it leaves the group with a checkpoint.CorruptError
// naming the checkpoint and its key, hands nothing of that partition to
// its handler, and never overwrites the record. A second member fails
// the same way rather than take the partition from position 0.
func TestGRP11_CorruptPartitionCheckpoint(t *testing.T) {
	const P = 4
	g := newGroupEnv(t)
	id := partitionCheckpointID("gx", 2)
	key := g.ckpts.Key(id)
	raw, err := g.js.KeyValue(testCtx(t), kvckpt.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	garbage := []byte("\x00not a checkpoint\xff")
	rev, err := raw.Create(testCtx(t), key, garbage)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]uint64{}
	seqs := appendEntity(t, g.e.store, entityIn(2, P), 5, want)
	for _, mid := range []string{"a", "b"} {
		m, _ := g.member(t, "gx", mid, P, nil)
		select {
		case <-m.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("member %s runs on with a corrupt checkpoint: owns %v", mid, m.Stats().Owned)
		}
		err := m.Join()
		var ce *checkpoint.CorruptError
		if !errors.Is(err, checkpoint.ErrCorrupt) || !errors.As(err, &ce) || ce.ID != id || !strings.Contains(err.Error(), key) {
			t.Fatalf("member %s left with %v, want a CorruptError naming %s and its key %s", mid, err, id, key)
		}
		if n, _ := g.log.count(seqs); n != 0 {
			t.Fatalf("%d events of the corrupt partition handled", n)
		}
	}
	e, err := raw.Get(testCtx(t), key)
	if err != nil || e.Revision() != uint64(rev) || !bytes.Equal(e.Value(), garbage) {
		t.Fatalf("the corrupt checkpoint was touched: %v", err)
	}
}
