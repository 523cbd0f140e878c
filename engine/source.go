package engine

import (
	"context"
	"time"
)

// Snapshot identifies a point in a writer's visibility history: the writer
// incarnation and the epoch within it. Epochs restart at 0 with every
// incarnation, so they compare only within one.
type Snapshot struct {
	Incarnation ID128
	Epoch       uint64
}

// NewerThan reports whether s is newer than old: another incarnation
// always is; within one incarnation, a larger epoch is.
func (s Snapshot) NewerThan(old Snapshot) bool {
	return s.Incarnation != old.Incarnation || s.Epoch > old.Epoch
}

// SourceInfo is what a worker fetches from its source before the first
// poll: the journal it reads and the bound its checkpoint must stay under.
type SourceInfo struct {
	JournalID   ID128
	Incarnation ID128
	Visible     uint64
}

// Source is what a cursor and a cursor worker pull from: the local *Store,
// or a fleet client over NATS. Implementations are safe for concurrent use.
type Source interface {
	// Poll is the pull primitive (SPEC §6.2): up to max visible entries of
	// region after position (from the beginning when started is false),
	// with the snapshot read before the query, the visible bound and the
	// cancelled ranges intersecting the scanned interval. Retryable
	// failures wrap ErrTransient.
	Poll(ctx context.Context, region Region, position uint64, started bool, max int) (PollResult, error)
	// Latest returns the newest snapshot the source knows of.
	Latest() Snapshot
	// Park waits until a snapshot newer than snap exists, timeout passes or
	// ctx is done; it returns at once when one already exists. It reports
	// whether a newer snapshot was seen.
	Park(ctx context.Context, snap Snapshot, timeout time.Duration) bool
	// Info returns the journal id, the incarnation and the visible bound.
	Info(ctx context.Context) (SourceInfo, error)
}

var _ Source = (*Store)(nil)

// Latest returns the store's current snapshot.
func (s *Store) Latest() Snapshot {
	return Snapshot{Incarnation: s.incarnation, Epoch: s.gate.epoch.Load()}
}

// Park waits until the epoch is newer than snap, timeout passes, ctx is
// done or the store closes. It returns at once when the epoch is already
// newer, or snap is of another incarnation (the lost-wakeup guard), and
// reports whether a newer snapshot was seen.
func (s *Store) Park(ctx context.Context, snap Snapshot, timeout time.Duration) bool {
	if snap.Incarnation != s.incarnation {
		return true
	}
	return s.gate.park(ctx, snap.Epoch, timeout, s.stop)
}

// Info returns the journal id, the incarnation and the visible bound.
func (s *Store) Info(ctx context.Context) (SourceInfo, error) {
	if s.closing.Load() {
		return SourceInfo{}, ErrClosed
	}
	return SourceInfo{JournalID: s.journalID, Incarnation: s.incarnation, Visible: s.Visible()}, nil
}
