package journal

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batfleet/batfleet/engine"
)

// gate is the sequence gate: the allocation frontier, the visibility
// watermark, the cancelled ranges and the epoch with its parked readers.
//
// Lock order: mu (watermark) and wakeMu (epoch) are never held together.
// A publish updates the watermark under mu, releases it, then bumps the
// epoch and wakes parkers under wakeMu. A reader reads the epoch first and
// the watermark second, so whatever it sees at epoch E is at least what
// was published by E.
type gate struct {
	mu        sync.Mutex
	allocated uint64
	visible   uint64
	ranges    []engine.Range // normalised; replaced, never mutated (copy on write)

	epoch  atomic.Uint64
	wakeMu sync.Mutex
	wake   chan struct{} // closed and replaced on every epoch increment
}

func newGate() *gate {
	return &gate{wake: make(chan struct{})}
}

// reserve hands out n sequences and returns the first.
func (g *gate) reserve(n uint64) uint64 {
	g.mu.Lock()
	first := g.allocated
	g.allocated += n
	g.mu.Unlock()
	return first
}

// resume sets the allocation frontier after recovery (never lowers it).
func (g *gate) resume(allocated uint64) {
	g.mu.Lock()
	if allocated > g.allocated {
		g.allocated = allocated
	}
	g.mu.Unlock()
}

// publish moves the visibility watermark to upTo, increments the epoch and
// wakes parked readers. upTo must lie in [visible, allocated]; upTo ==
// visible is a no-op publish that still moves the epoch.
func (g *gate) publish(upTo uint64) error {
	g.mu.Lock()
	if upTo > g.allocated || upTo < g.visible {
		err := &GateViolationError{Operation: "publish", Requested: upTo, Allocated: g.allocated, Visible: g.visible}
		g.mu.Unlock()
		return err
	}
	g.visible = upTo
	g.mu.Unlock()
	g.bump()
	return nil
}

// bump increments the epoch and wakes every parked reader.
func (g *gate) bump() {
	g.wakeMu.Lock()
	g.epoch.Add(1)
	close(g.wake)
	g.wake = make(chan struct{})
	g.wakeMu.Unlock()
}

// cancel records r as cancelled. It does not move the epoch.
func (g *gate) cancel(rs ...engine.Range) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	merged, err := engine.NormalizeRanges(append(append([]engine.Range(nil), g.ranges...), rs...))
	if err != nil {
		return err
	}
	g.ranges = merged
	return nil
}

// setRanges installs recovered ranges.
func (g *gate) setRanges(rs []engine.Range) {
	g.mu.Lock()
	g.ranges = rs
	g.mu.Unlock()
}

// snapshot returns one coherent view of (visible, cancelled ranges). The
// ranges slice must not be modified.
func (g *gate) snapshot() (visible uint64, ranges []engine.Range) {
	g.mu.Lock()
	visible, ranges = g.visible, g.ranges
	g.mu.Unlock()
	return visible, ranges
}

func (g *gate) frontiers() (allocated, visible uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.allocated, g.visible
}

// changed returns the current epoch and a channel closed when it moves.
func (g *gate) changed() (uint64, <-chan struct{}) {
	g.wakeMu.Lock()
	defer g.wakeMu.Unlock()
	return g.epoch.Load(), g.wake
}

// park waits until the epoch is newer than snapshot, the timeout passes,
// ctx is done or stop is closed (stop may be nil). It returns true when the
// epoch moved. A snapshot that is already stale returns at once: this is
// the lost-wakeup guard.
func (g *gate) park(ctx context.Context, snapshot uint64, timeout time.Duration, stop <-chan struct{}) bool {
	epoch, ch := g.changed()
	if epoch > snapshot {
		return true
	}
	if timeout <= 0 {
		return false
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return g.epoch.Load() > snapshot
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}
