package journal

import (
	"context"
	"time"

	"github.com/batfleet/batfleet/engine"
)

// Latest returns the store's current snapshot.
func (s *Store) Latest() engine.Snapshot {
	return engine.Snapshot{Incarnation: s.incarnation, Epoch: s.gate.epoch.Load()}
}

// Park waits until the epoch is newer than snap, timeout passes, ctx is
// done or the store closes. It returns at once when the epoch is already
// newer, or snap is of another incarnation (the lost-wakeup guard), and
// reports whether a newer snapshot was seen.
func (s *Store) Park(ctx context.Context, snap engine.Snapshot, timeout time.Duration) bool {
	if snap.Incarnation != s.incarnation {
		return true
	}
	return s.gate.park(ctx, snap.Epoch, timeout, s.stop)
}

// Info returns the journal id, the incarnation and the visible bound.
func (s *Store) Info(ctx context.Context) (engine.SourceInfo, error) {
	if s.closing.Load() {
		return engine.SourceInfo{}, ErrClosed
	}
	return engine.SourceInfo{JournalID: s.journalID, Incarnation: s.incarnation, Visible: s.Visible()}, nil
}
