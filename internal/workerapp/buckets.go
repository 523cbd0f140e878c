package workerapp

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/kvckpt"
)

// bindCheckpoints binds the existing checkpoint bucket, creating nothing:
// a missing one is a *MissingBucketError (matching
// jetstream.ErrBucketNotFound).
func bindCheckpoints(ctx context.Context, js jetstream.JetStream, journal, bucket string) (*kvckpt.Store, error) {
	if bucket == "" {
		bucket = kvckpt.DefaultBucket
	}
	store, err := kvckpt.Bind(ctx, js, kvckpt.Config{Journal: journal, Bucket: bucket})
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, &MissingBucketError{What: "checkpoint bucket", Bucket: bucket, Flag: "--bucket",
			Default: bucket == kvckpt.DefaultBucket, Err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint bucket %q: %w", bucket, err)
	}
	return store, nil
}

// checkGroupBucket reports a groups bucket that does not exist as a
// *MissingBucketError, creating nothing.
func checkGroupBucket(ctx context.Context, js jetstream.JetStream, bucket string) error {
	if bucket == "" {
		bucket = fleet.DefaultGroupBucket
	}
	bctx, cancel := context.WithTimeout(ctx, kvckpt.DefaultTimeout)
	defer cancel()
	_, err := js.KeyValue(bctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return &MissingBucketError{What: "groups bucket", Bucket: bucket, Flag: "--group-bucket",
			Default: bucket == fleet.DefaultGroupBucket, Err: err}
	}
	if err != nil {
		return fmt.Errorf("groups bucket %q: %w", bucket, err)
	}
	return nil
}
