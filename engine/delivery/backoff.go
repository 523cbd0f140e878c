package delivery

import (
	"context"
	"time"
)

// maxBackoff caps the wait between retries after transient errors.
const maxBackoff = time.Second

// backoff is the retry schedule after transient errors: the
// first wait is base (the idle timeout), each later one doubles, capped at
// maxBackoff; a success resets it. The worker's polls and its startup
// fetches share it.
type backoff struct {
	base, cur time.Duration
}

// next advances the schedule and returns the wait it now stands at.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = min(b.base, maxBackoff)
	} else {
		b.cur = min(2*b.cur, maxBackoff)
	}
	return b.cur
}

// reset starts the schedule over (after a success).
func (b *backoff) reset() { b.cur = 0 }

// wait sleeps for the current wait (next must have been called) or until
// ctx is done; it reports false when ctx ended it.
func (b *backoff) wait(ctx context.Context) bool { return sleepCtx(ctx, b.cur) }

// sleepCtx waits d or until ctx ends; false when ctx ended it.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
