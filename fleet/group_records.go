package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/internal/msgpackutil"
	"github.com/batfleet/batfleet/kvckpt"
)

// Consumer-group records in the groups bucket (default batfleet_groups),
// under "<journal>.<group>.":
//
//	config        the group's immutable configuration: region identity and
//	              partition count (created by the first member)
//	m.<member>    a member's heartbeat: its id, incarnation, the partitions
//	              it runs, rewritten every heartbeat; deleted on leave
//
// Values are MessagePack maps with a version field. The partitions'
// positions are checkpoints in the checkpoints bucket, ids
// "group:<name>:<i>", whose records carry the owner and the owner epoch.

// DefaultGroupBucket is the KV bucket of consumer-group records.
const DefaultGroupBucket = "batfleet_groups"

// groupConfigRecord is the value of "<journal>.<group>.config".
type groupConfigRecord struct {
	V              int    `msgpack:"v"`
	RegionIdentity string `msgpack:"region_identity"`
	Partitions     int    `msgpack:"partitions"`
	CreatedMs      int64  `msgpack:"created_ms"`
}

// memberRecord is the value of "<journal>.<group>.m.<member>".
type memberRecord struct {
	V           int      `msgpack:"v"`
	Member      string   `msgpack:"member"`
	Incarnation string   `msgpack:"incarnation"`
	Owned       []uint16 `msgpack:"owned"`
	SessionMs   int64    `msgpack:"session_ms"`
	UpdatedMs   int64    `msgpack:"updated_ms"`
}

func groupPrefix(journal, group string) string { return journal + "." + group + "." }

func memberKey(journal, group, member string) string {
	return groupPrefix(journal, group) + "m." + kvckpt.KeyToken(member)
}

// partitionCheckpointID is the checkpoint id of partition i of group.
func partitionCheckpointID(group string, i uint16) string {
	return fmt.Sprintf("group:%s:%d", group, i)
}

func encodeRecord(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodeMember decodes a member record. The bytes are anyone's who can
// write to the bucket: msgpackutil.CheckBounded first, so that a declared
// length cannot size an allocation (msgpack/v5 would make "owned" as long
// as its array claims).
func decodeMember(data []byte) (memberRecord, error) {
	var m memberRecord
	if err := msgpackutil.CheckBounded(data); err != nil {
		return m, err
	}
	if err := msgpack.Unmarshal(data, &m); err != nil {
		return m, err
	}
	if m.V != 1 || m.Member == "" {
		return m, fmt.Errorf("version %d, member %q: not a member record of this version", m.V, m.Member)
	}
	return m, nil
}

// decodeGroupConfig decodes a group config record of version 1 (checked
// with msgpackutil.CheckBounded first, as decodeMember).
func decodeGroupConfig(data []byte) (groupConfigRecord, error) {
	var c groupConfigRecord
	if err := msgpackutil.CheckBounded(data); err != nil {
		return c, err
	}
	if err := msgpack.Unmarshal(data, &c); err != nil {
		return c, err
	}
	if c.V != 1 {
		return c, fmt.Errorf("version %d: not a group config of this version", c.V)
	}
	return c, nil
}

// openGroupBucket binds the groups bucket, creating it when missing.
func openGroupBucket(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (jetstream.KeyValue, error) {
	// Another member may be creating the bucket right now: on a young
	// cluster "exists" on create can be followed by "not found" on bind
	// for a moment; retry that until ctx ends.
	for {
		kv, err := bindGroupBucket(ctx, js, bucket, replicas)
		if err == nil || !errors.Is(err, errBucketRace) {
			return kv, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("fleet: group bucket %q: %w", bucket, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// errBucketRace marks a bucket that exists but could not be bound yet.
var errBucketRace = errors.New("fleet: group bucket created but not bound yet")

func bindGroupBucket(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: "batfleet consumer groups",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    max(replicas, 1),
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bucket)
			if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil, fmt.Errorf("%w: %w", errBucketRace, err)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: group bucket %q: %w", bucket, err)
	}
	return kv, nil
}

// ensureGroupConfig creates the group's configuration, or checks the
// existing one: another region or partition count is ErrGroupMismatch
// (fail closed: a group is never reinterpreted), a record that does not
// decode is ErrGroupCorrupt naming its key.
func ensureGroupConfig(ctx context.Context, kv jetstream.KeyValue, journal, group string, region engine.Region, parts int) error {
	key := groupPrefix(journal, group) + "config"
	want := groupConfigRecord{V: 1, RegionIdentity: region.Identity(), Partitions: parts, CreatedMs: time.Now().UnixMilli()}
	value, err := encodeRecord(want)
	if err != nil {
		return err
	}
	// "Exists" on create then "not found" on read: deleted meanwhile, or,
	// on a replicated bucket, a read answered by a replica that has not
	// caught up with the create yet. Both pass: try again for a while.
	for attempt := 0; attempt < 40; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("fleet: the group config %s: %w", key, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
		if _, err := kv.Create(ctx, key, value); err == nil {
			return nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("fleet: create the group config %s: %w", key, err)
		}
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // deleted meanwhile, or a replica behind: again
		}
		if err != nil {
			return fmt.Errorf("fleet: read the group config %s: %w", key, err)
		}
		got, err := decodeGroupConfig(e.Value())
		if err != nil || got.Partitions == 0 {
			return fmt.Errorf("%w: %s does not decode as a group config (%v)", ErrGroupCorrupt, key, err)
		}
		if got.RegionIdentity != want.RegionIdentity || got.Partitions != parts {
			return &GroupMismatchError{Group: group, Key: key,
				StoredRegion: got.RegionIdentity, StoredPartitions: got.Partitions,
				Region: want.RegionIdentity, Partitions: parts}
		}
		return nil
	}
	return fmt.Errorf("fleet: the group config %s exists on create but cannot be read (deleted over and over, or a replica never catching up)", key)
}

// sortedOwned returns the partitions of m in order.
func sortedOwned(m map[uint16]bool) []uint16 {
	out := make([]uint16, 0, len(m))
	for p, ok := range m {
		if ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}
