package kvckpt

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Bind binds the existing checkpoint bucket cfg.Bucket (default
// DefaultBucket) of journal cfg.Journal, for callers that must not create
// buckets (`worker status`, `worker group ls|describe`, `worker wait`,
// `worker parked`): unlike Open it creates nothing, and a bucket that does
// not exist is an error matching jetstream.ErrBucketNotFound. An existing
// bucket is checked as Open checks it (ErrBucketUnusable). cfg.Replicas
// and cfg.History are ignored; cfg.Timeout bounds the bind, and every
// later call, as for a Store from Open.
func Bind(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ctx, cancel := withTimeout(ctx, cfg.Timeout)
	defer cancel()
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("kvckpt: bind bucket %q: %w", cfg.Bucket, err)
	}
	if err := checkBucket(ctx, kv); err != nil {
		return nil, err
	}
	return &Store{js: js, kv: kv, cfg: cfg, journal: cfg.Journal}, nil
}
