package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/kvckpt"
)

// Read-your-writes barriers.
//
// A producer that appended an event (its receipt's seq) and wants to read
// a projection that includes it waits until the projection's checkpoint
// has committed through that seq: WaitFor. The single writer's total order
// makes this exact: a checkpoint at position p has handled every matching
// entry with seq <= p. A region with no matching entry between the
// checkpoint's position and seq has nothing to wait for, which the writer
// answers from its index (a pull of one entry), so waiting on a
// projection the write does not concern returns at once.

// ErrUnknownCheckpoint: WaitFor was asked about a checkpoint that has no
// record (no worker ever committed it, or the id is misspelt).
var ErrUnknownCheckpoint = errors.New("fleet: unknown checkpoint")

// WaitFor returns nil once checkpoint id in store has committed through
// seq, or once the checkpoint's region has no entry with a seq in
// (position, seq] (nothing to wait for). It watches the record, so it
// returns within milliseconds of the commit. A checkpoint with no record
// is ErrUnknownCheckpoint; a record without a region identity or of
// another journal is an error; ctx bounds the wait.
func WaitFor(ctx context.Context, c *Client, store *kvckpt.Store, id string, seq uint64) error {
	if err := checkpoint.ValidateID(id); err != nil {
		return err
	}
	return waitOne(ctx, c, store, id, seq, nil)
}

// WaitForGroup is WaitFor for every partition of consumer group name (in
// the groups bucket; "" is DefaultGroupBucket): it returns once each
// partition has committed through seq or has nothing to wait for. A group
// that does not exist is ErrGroupNotFound.
func WaitForGroup(ctx context.Context, c *Client, store *kvckpt.Store, js jetstream.JetStream, bucket, name string, seq uint64) error {
	if bucket == "" {
		bucket = DefaultGroupBucket
	}
	info, err := DescribeGroup(ctx, js, store, c.cfg.Journal, bucket, name)
	if err != nil {
		return err
	}
	region, err := engine.ParseRegionIdentity(info.Region)
	if err != nil {
		return fmt.Errorf("%w: group %q: region: %v", ErrGroupCorrupt, name, err)
	}
	for i := 0; i < info.Partitions; i++ {
		part := region.WithPartition(engine.Partition{Index: uint16(i), Count: uint16(info.Partitions)})
		if err := waitOne(ctx, c, store, partitionCheckpointID(name, uint16(i)), seq, &part); err != nil {
			return fmt.Errorf("fleet: group %q partition %d: %w", name, i, err)
		}
	}
	return nil
}

// waitOne waits on one checkpoint. region is the partition's region for a
// group's partition (whose record may not exist yet: position 0), nil for
// a plain checkpoint (whose record must exist and names its region).
func waitOne(ctx context.Context, c *Client, store *kvckpt.Store, id string, seq uint64, region *engine.Region) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes, err := store.Watch(wctx, id)
	if err != nil {
		return err
	}
	defer func() {
		cancel()
		for range changes { // the watch goroutine has ended when it closes
		}
	}()
	// The record's changes wake the check. The wake-up is the write's
	// publication, which can reach this client a moment before the
	// bucket has stored it: a check that finds nothing new looks again
	// after 1, 2, 4, … 64 ms. A slow tick also covers a seq that was not
	// visible yet when the region was asked.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	recheck := time.NewTimer(time.Hour)
	defer recheck.Stop()
	// A write published just before the subscription took effect and not
	// stored yet at the first check wakes nothing: the first check is
	// followed by rechecks too.
	again := time.Millisecond // the next recheck's delay
	for {
		done, err := waitCheck(ctx, c, store, id, seq, region)
		if done || err != nil {
			return err
		}
		if again > 0 && again <= 64*time.Millisecond {
			recheck.Reset(again)
			again *= 2
		}
		select {
		case <-tick.C:
		case <-recheck.C:
		case <-ctx.Done():
			return fmt.Errorf("fleet: waiting for checkpoint %q to reach seq %d: %w", id, seq, ctx.Err())
		case _, ok := <-changes:
			if !ok {
				return fmt.Errorf("fleet: waiting for checkpoint %q to reach seq %d: %w", id, seq, ctx.Err())
			}
			again = time.Millisecond
		}
	}
}

// waitCheck reports whether checkpoint id is through seq, or has nothing
// to wait for.
func waitCheck(ctx context.Context, c *Client, store *kvckpt.Store, id string, seq uint64, region *engine.Region) (bool, error) {
	rec, _, err := store.Load(ctx, id)
	var pos uint64
	var started bool
	switch {
	case errors.Is(err, checkpoint.ErrNotFound) && region != nil:
		// A partition nobody committed yet.
	case errors.Is(err, checkpoint.ErrNotFound):
		return false, fmt.Errorf("%w: %q (%s has no record)", ErrUnknownCheckpoint, id, store.Location(id))
	case err != nil:
		return false, err
	default:
		pos, started = rec.Position, rec.Started
		if started && pos >= seq {
			return true, nil
		}
		if region == nil {
			if rec.RegionIdentity == nil {
				return false, fmt.Errorf("fleet: checkpoint %q (%s) names no region", id, store.Location(id))
			}
			r, err := engine.ParseRegionIdentity(*rec.RegionIdentity)
			if err != nil {
				return false, fmt.Errorf("fleet: checkpoint %q (%s): region: %w", id, store.Location(id), err)
			}
			region = &r
		}
	}
	// Does anything match in (pos, seq]? One entry is enough to know.
	res, err := c.Poll(ctx, *region, pos, started, 1)
	if err != nil {
		return false, err
	}
	switch {
	case len(res.Entries) > 0:
		return res.Entries[0].Seq > seq, nil
	default:
		// Nothing matches below the visible bound (seqs < Visible are
		// visible): done if seq is visible.
		return res.Visible > seq, nil
	}
}
