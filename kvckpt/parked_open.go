package kvckpt

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// BindParked binds the existing parked bucket cfg.Bucket (default
// DefaultParkedBucket) of journal cfg.Journal, for callers that must not
// create buckets (`worker parked ls|replay|drop`): unlike
// Store.OpenParked it creates nothing, and a bucket that does not exist
// is an error matching jetstream.ErrBucketNotFound. An existing bucket is
// checked as OpenParked checks it. cfg.Replicas and cfg.History are
// ignored; cfg.Timeout bounds every call, as for a Store.
func BindParked(ctx context.Context, js jetstream.JetStream, cfg Config) (*ParkedStore, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultParkedBucket
	}
	// The Store holds what the ParkedStore borrows from its checkpoint
	// store (journal, timeouts, connection); no checkpoint bucket is bound.
	st, err := Bind(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	return &ParkedStore{s: st, kv: st.kv}, nil
}
