package kvckpt

import "errors"

var (
	// ErrBucketUnusable: an existing bucket's settings cannot hold
	// checkpoints safely (memory storage, a TTL, too little history).
	ErrBucketUnusable = errors.New("kvckpt: bucket unusable for checkpoints")
	// ErrInvalidConfig: a Config field breaks a rule.
	ErrInvalidConfig = errors.New("kvckpt: invalid config")
)
