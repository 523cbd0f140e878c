package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
)

// GroupInfo describes a consumer group as its records stand: its
// configuration, its members' keys and its partitions' checkpoints.
type GroupInfo struct {
	Journal    string    `json:"journal"`
	Name       string    `json:"name"`
	Region     string    `json:"region"` // the group region's identity
	Partitions int       `json:"partitions"`
	Created    time.Time `json:"created"`
	// Members are the member keys, in id order: graceful leavers have
	// none; a killed member's stays until its partitions are taken over
	// and it is replaced, or forever (look at HeartbeatAge).
	Members []GroupMemberInfo `json:"members"`
	// Parts has one row per partition, in order.
	Parts []GroupPartitionInfo `json:"parts"`
}

// GroupMemberInfo is one member key.
type GroupMemberInfo struct {
	ID          string   `json:"id"`
	Incarnation string   `json:"incarnation"`
	Partitions  []uint16 `json:"partitions"` // what it announced: run, claiming, or reclaiming after a restart
	Session     string   `json:"session"`
	// HeartbeatAge is how long ago the key was last written, by the KV
	// server's clock against this machine's: for display only (members
	// judge each other on their own monotonic clocks).
	HeartbeatAge time.Duration `json:"heartbeat_age_ns"`
	// Live is HeartbeatAge < Session: how members would judge it, give or
	// take the clock difference.
	Live bool `json:"live"`
}

// GroupPartitionInfo is one partition's checkpoint.
type GroupPartitionInfo struct {
	Index        uint16 `json:"index"`
	CheckpointID string `json:"checkpoint_id"`
	Region       string `json:"region"` // the partition's region identity
	Owner        string `json:"owner"`  // "" when released or never claimed
	Epoch        uint64 `json:"epoch"`
	Position     uint64 `json:"position"`
	Started      bool   `json:"started"`
	Revision     uint64 `json:"revision"`
	// Problem says why the record cannot be used (it does not decode, or
	// belongs to another region); "" when it can, or there is none yet.
	Problem string `json:"problem,omitempty"`
}

// ListGroups returns the names of the journal's consumer groups in the
// groups bucket (DefaultGroupBucket when ""), sorted; none when the bucket
// does not exist.
func ListGroups(ctx context.Context, js jetstream.JetStream, journal, bucket string) ([]string, error) {
	kv, err := groupBucket(ctx, js, bucket)
	if kv == nil || err != nil {
		return nil, err
	}
	lister, err := kv.ListKeysFiltered(ctx, journal+".*.config")
	if err != nil {
		return nil, fmt.Errorf("fleet: list groups in %s: %w", kv.Bucket(), err)
	}
	var names []string
	for k := range lister.Keys() {
		names = append(names, strings.TrimSuffix(strings.TrimPrefix(k, journal+"."), ".config"))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fleet: list groups in %s: %w", kv.Bucket(), err)
	}
	slices.Sort(names)
	return names, nil
}

// ErrGroupNotFound: no consumer group of that name in the journal.
var ErrGroupNotFound = errors.New("fleet: no such group")

// DescribeGroup reads group name of journal: its configuration from the
// groups bucket (DefaultGroupBucket when bucket is ""), its member keys,
// and its partitions' checkpoints from ckpts. A group that does not exist
// is ErrGroupNotFound; a configuration that does not decode is
// ErrGroupCorrupt naming the key.
func DescribeGroup(ctx context.Context, js jetstream.JetStream, ckpts checkpoint.Store, journal, bucket, name string) (GroupInfo, error) {
	info := GroupInfo{Journal: journal, Name: name}
	kv, err := groupBucket(ctx, js, bucket)
	if err != nil {
		return info, err
	}
	if kv == nil {
		return info, fmt.Errorf("%w: %q (no groups bucket)", ErrGroupNotFound, name)
	}
	key := groupPrefix(journal, name) + "config"
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return info, fmt.Errorf("%w: %q in journal %q", ErrGroupNotFound, name, journal)
	}
	if err != nil {
		return info, fmt.Errorf("fleet: read %s: %w", key, err)
	}
	cfg, err := decodeGroupConfig(e.Value())
	if err != nil || cfg.Partitions < 1 || cfg.Partitions > engine.Buckets {
		return info, fmt.Errorf("%w: %s does not decode as a group config (%v)", ErrGroupCorrupt, key, err)
	}
	region, err := engine.ParseRegionIdentity(cfg.RegionIdentity)
	if err != nil {
		return info, fmt.Errorf("%w: %s: region: %v", ErrGroupCorrupt, key, err)
	}
	info.Region, info.Partitions, info.Created = cfg.RegionIdentity, cfg.Partitions, time.UnixMilli(cfg.CreatedMs).UTC()

	lister, err := kv.ListKeysFiltered(ctx, groupPrefix(journal, name)+"m.*")
	if err != nil {
		return info, fmt.Errorf("fleet: list the members of %q: %w", name, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	now := time.Now()
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // left since it was listed
		}
		if err != nil {
			return info, fmt.Errorf("fleet: read %s: %w", k, err)
		}
		rec, err := decodeMember(e.Value())
		if err != nil {
			info.Members = append(info.Members, GroupMemberInfo{ID: k, Session: "corrupt: " + err.Error()})
			continue
		}
		session := time.Duration(rec.SessionMs) * time.Millisecond
		age := max(now.Sub(e.Created()), 0)
		info.Members = append(info.Members, GroupMemberInfo{
			ID: rec.Member, Incarnation: rec.Incarnation, Partitions: rec.Owned,
			Session: session.String(), HeartbeatAge: age, Live: age < session,
		})
	}
	slices.SortFunc(info.Members, func(a, b GroupMemberInfo) int { return strings.Compare(a.ID, b.ID) })

	for i := range cfg.Partitions {
		p := uint16(i)
		part := region.WithPartition(engine.Partition{Index: p, Count: uint16(cfg.Partitions)})
		row := GroupPartitionInfo{Index: p, CheckpointID: partitionCheckpointID(name, p), Region: part.Identity()}
		rec, rev, err := ckpts.Load(ctx, row.CheckpointID)
		switch {
		case errors.Is(err, checkpoint.ErrNotFound):
		case errors.Is(err, checkpoint.ErrCorrupt):
			row.Problem = err.Error()
		case err != nil:
			return info, err
		case rec.RegionIdentity == nil || *rec.RegionIdentity != row.Region:
			row.Problem = (&checkpoint.RegionMismatchError{Location: ckpts.Location(row.CheckpointID), Stored: rec.RegionIdentity, Expected: row.Region}).Error()
		default:
			row.Owner, row.Epoch, row.Position, row.Started, row.Revision = rec.Owner, rec.Epoch, rec.Position, rec.Started, uint64(rev)
		}
		info.Parts = append(info.Parts, row)
	}
	return info, nil
}

// groupBucket binds an existing groups bucket; nil when there is none.
func groupBucket(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	if bucket == "" {
		bucket = DefaultGroupBucket
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: group bucket %q: %w", bucket, err)
	}
	return kv, nil
}
