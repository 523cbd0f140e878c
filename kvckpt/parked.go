package kvckpt

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultParkedBucket holds the parked sets of workers that park poison
// entries (checkpoint.Parked).
const DefaultParkedBucket = "batfleet_parked"

// ParkedStore is a checkpoint.ParkStore on a JetStream KV bucket: one key
// per parked entity, "<journal>.<checkpoint id token>.<entity token>"
// (tokens as KeyToken writes them), valued with the MessagePack record.
// It is safe for concurrent use.
type ParkedStore struct {
	s  *Store // the checkpoint store it belongs to: journal, timeouts, connection
	kv jetstream.KeyValue
}

var _ checkpoint.ParkStore = (*ParkedStore)(nil)

// OpenParked creates the parked bucket (bucket, default
// "batfleet_parked"; file storage and the replicas of the checkpoint
// bucket), or binds an existing one, checked like the checkpoint bucket.
func (s *Store) OpenParked(ctx context.Context, bucket string) (*ParkedStore, error) {
	if bucket == "" {
		bucket = DefaultParkedBucket
	}
	if err := (Config{Journal: s.journal, Bucket: bucket}).Validate(); err != nil {
		return nil, err
	}
	cfg := s.cfg
	cfg.Bucket = bucket
	cfg.History = DefaultHistory
	st, err := Open(ctx, s.js, cfg)
	if err != nil {
		return nil, err
	}
	return &ParkedStore{s: s, kv: st.kv}, nil
}

// key is the KV key of (id, entity).
func (p *ParkedStore) key(id, entity string) string {
	return p.prefix(id) + encodeID(entity)
}

func (p *ParkedStore) prefix(id string) string { return p.s.journal + "." + encodeID(id) + "." }

// ParkedLocation names the bucket and key of (id, entity).
func (p *ParkedStore) ParkedLocation(id, entity string) string {
	return "kv:" + p.kv.Bucket() + "/" + p.key(id, entity)
}

// ListParked returns the parked set of checkpoint id, sorted by entity. A
// value that does not decode, or names another entity than its key, is
// checkpoint.ErrCorrupt naming the key.
func (p *ParkedStore) ListParked(ctx context.Context, id string) ([]checkpoint.ParkedRevision, error) {
	if err := checkpoint.ValidateID(id); err != nil {
		return nil, err
	}
	ctx, cancel := withTimeout(ctx, p.s.cfg.Timeout)
	defer cancel()
	lister, err := p.kv.ListKeysFiltered(ctx, p.prefix(id)+"*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, ioError("kv:"+p.kv.Bucket()+"/"+p.prefix(id)+"*", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	if err := ctx.Err(); err != nil {
		return nil, ioError("kv:"+p.kv.Bucket()+"/"+p.prefix(id)+"*", err)
	}
	var out []checkpoint.ParkedRevision
	for _, k := range keys {
		e, err := p.kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			continue // unparked since it was listed
		case err != nil:
			return nil, ioError("kv:"+p.kv.Bucket()+"/"+k, err)
		}
		rec, err := checkpoint.DecodeParked(e.Value())
		if err == nil && encodeID(rec.Entity) != strings.TrimPrefix(k, p.prefix(id)) {
			err = fmt.Errorf("the record names entity %q, another than its key", rec.Entity)
		}
		if err != nil {
			return nil, &checkpoint.CorruptError{ID: id, Location: "kv:" + p.kv.Bucket() + "/" + k, Reason: "parked record: " + err.Error()}
		}
		out = append(out, checkpoint.ParkedRevision{Parked: rec, Revision: checkpoint.Revision(e.Revision())})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Entity < out[j].Entity })
	return out, nil
}

// PutParked stores rec with compare-and-swap (expected 0: create).
func (p *ParkedStore) PutParked(ctx context.Context, id string, rec checkpoint.Parked, expected checkpoint.Revision) (checkpoint.Revision, error) {
	if err := checkpoint.ValidateID(id); err != nil {
		return 0, err
	}
	if rec.Entity == "" {
		return 0, errors.New("kvckpt: parked record: entity is empty")
	}
	ctx, cancel := withTimeout(ctx, p.s.cfg.Timeout)
	defer cancel()
	loc := p.ParkedLocation(id, rec.Entity)
	if err := p.s.awaitConnected(ctx); err != nil {
		return 0, ioError(loc, err)
	}
	var rev uint64
	var err error
	if expected == 0 {
		rev, err = p.kv.Create(ctx, p.key(id, rec.Entity), checkpoint.EncodeParked(rec))
	} else {
		rev, err = p.kv.Update(ctx, p.key(id, rec.Entity), checkpoint.EncodeParked(rec), uint64(expected))
	}
	switch {
	case err == nil:
		return checkpoint.Revision(rev), nil
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return 0, fmt.Errorf("%w: %s (expected revision %d): %w", checkpoint.ErrConflict, loc, expected, err)
	default:
		return 0, ioError(loc, err)
	}
}

// DeleteParked deletes the record of (id, entity) if it is at expected
// (a delete marker, so a concurrent update conflicts).
func (p *ParkedStore) DeleteParked(ctx context.Context, id, entity string, expected checkpoint.Revision) error {
	if err := checkpoint.ValidateID(id); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, p.s.cfg.Timeout)
	defer cancel()
	loc := p.ParkedLocation(id, entity)
	if err := p.s.awaitConnected(ctx); err != nil {
		return ioError(loc, err)
	}
	if _, err := p.kv.Get(ctx, p.key(id, entity)); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return fmt.Errorf("%w: %s", checkpoint.ErrNotFound, loc)
		}
		return ioError(loc, err)
	}
	err := p.kv.Delete(ctx, p.key(id, entity), jetstream.LastRevision(uint64(expected)))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return fmt.Errorf("%w: %s (expected revision %d): %w", checkpoint.ErrConflict, loc, expected, err)
	default:
		return ioError(loc, err)
	}
}
