package delivery

import (
	"context"
	"time"

	"github.com/batfleet/batfleet/engine"
)

// Source is what a cursor and a cursor worker pull from: the local *Store,
// or a fleet client over NATS. Implementations are safe for concurrent use.
type Source interface {
	// Poll is the pull primitive: up to max visible entries of
	// region after position (from the beginning when started is false),
	// with the snapshot read before the query, the visible bound and the
	// cancelled ranges intersecting the scanned interval. Retryable
	// failures wrap ErrTransient.
	Poll(ctx context.Context, region engine.Region, position uint64, started bool, max int) (engine.PollResult, error)
	// Latest returns the newest snapshot the source knows of.
	Latest() engine.Snapshot
	// Park waits until a snapshot newer than snap exists, timeout passes or
	// ctx is done; it returns at once when one already exists. It reports
	// whether a newer snapshot was seen.
	Park(ctx context.Context, snap engine.Snapshot, timeout time.Duration) bool
	// Info returns the journal id, the incarnation and the visible bound.
	Info(ctx context.Context) (engine.SourceInfo, error)
}

// Streamer is implemented by sources that keep state for each consumer (a
// fleet client pulls ahead for each cursor). A Cursor on a Streamer opens
// one Stream for its region and polls through it, so that state is the
// cursor's own; other sources are polled directly.
type Streamer interface {
	Stream(region engine.Region) Stream
}

// Stream is one consumer's polls of one region on a Streamer: Poll is
// Source.Poll for that region. Close releases what the stream holds (a
// pull in flight); a Stream is used by one goroutine at a time.
type Stream interface {
	Poll(ctx context.Context, position uint64, started bool, max int) (engine.PollResult, error)
	Close()
}

// WaitingStream is a Stream whose source can hold a poll until a matching
// entry is visible (a fleet client's held pulls): PollWait is Poll that,
// when nothing matches, waits up to wait at the source. A cursor waiting
// for entries uses it instead of parking, so its source is not asked
// again on every epoch.
type WaitingStream interface {
	Stream
	PollWait(ctx context.Context, position uint64, started bool, max int, wait time.Duration) (engine.PollResult, error)
}
