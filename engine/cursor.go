package engine

import (
	"context"
	"errors"
	"time"
)

// GapObservation records a jump in delivered sequences that a cancelled
// range explains: the cursor expected Expected, was handed Delivered, and
// Ranges are the cancelled ranges clipped to [Expected, Delivered).
// Observations are on the global axis, not region-filtered, and live in
// memory only.
type GapObservation struct {
	Expected  uint64
	Delivered uint64
	Ranges    []Range
}

// GapConfig configures a cursor's gap buffer: Capacity 0 disables it (the
// default), > 0 keeps the newest Capacity observations (FIFO, oldest
// dropped first), < 0 is invalid.
type GapConfig struct {
	Capacity int
}

// Cursor pulls a region from a source in ascending sequence order. Its
// state is (position, started): "after position", or "from the beginning"
// when started is false. A Cursor is not safe for concurrent use; cursors
// share nothing, and a pull changes no source state.
type Cursor struct {
	src      Source
	region   Region
	position uint64
	started  bool
	gaps     []GapObservation // ring contents, oldest first
	gapCap   int
}

// NewCursor returns a fresh cursor (0, false) on region. The region is
// validated first (ErrInvalidRegion).
func NewCursor(src Source, region Region) (*Cursor, error) {
	if err := region.Validate(); err != nil {
		return nil, err
	}
	return &Cursor{src: src, region: region}, nil
}

// WithGapConfig installs a fresh, empty gap buffer.
func (c *Cursor) WithGapConfig(cfg GapConfig) error {
	if cfg.Capacity < 0 {
		return &ConfigError{Field: "GapConfig.Capacity", Rule: "must be >= 0"}
	}
	c.gapCap = cfg.Capacity
	c.gaps = nil
	return nil
}

// Region returns the cursor's region.
func (c *Cursor) Region() Region { return c.region }

// Checkpoint returns (position, started).
func (c *Cursor) Checkpoint() (uint64, bool) { return c.position, c.started }

// Restore sets (position, started) verbatim, unvalidated.
func (c *Cursor) Restore(position uint64, started bool) {
	c.position, c.started = position, started
}

// TakeGaps drains the gap buffer in FIFO order (always empty when the
// buffer is disabled).
func (c *Cursor) TakeGaps() []GapObservation {
	out := c.gaps
	c.gaps = nil
	return out
}

// Poll returns the next matching entry, if any: PollBatch(1).
func (c *Cursor) Poll(ctx context.Context) (Entry, bool, error) {
	es, err := c.PollBatch(ctx, 1)
	if err != nil || len(es) == 0 {
		return Entry{}, false, err
	}
	return es[0], true, nil
}

// PollBatch returns up to max matching visible entries after the cursor's
// position and advances past the last one. max 0 returns nothing. On an
// error the state is unchanged and no gaps are recorded: the cursor never
// advances past an entry it failed to return.
func (c *Cursor) PollBatch(ctx context.Context, max int) ([]Entry, error) {
	es, _, _, err := c.pollBatch(ctx, max)
	return es, err
}

// pollBatch is PollBatch that also returns the batch's gap observations
// and the snapshot read before the query (for parking).
func (c *Cursor) pollBatch(ctx context.Context, max int) ([]Entry, []GapObservation, Snapshot, error) {
	if max <= 0 {
		return nil, nil, c.src.Latest(), nil
	}
	res, err := c.src.Poll(ctx, c.region, c.position, c.started, max)
	if err != nil {
		return nil, nil, Snapshot{}, err
	}
	if len(res.Entries) == 0 {
		return nil, nil, res.Snapshot, nil
	}
	gaps := observeGaps(c.position, c.started, res.Entries, res.Cancelled)
	c.recordGaps(gaps)
	c.position, c.started = res.Entries[len(res.Entries)-1].Seq, true
	return res.Entries, gaps, res.Snapshot, nil
}

func (c *Cursor) recordGaps(gaps []GapObservation) {
	if c.gapCap == 0 {
		return
	}
	c.gaps = append(c.gaps, gaps...)
	if over := len(c.gaps) - c.gapCap; over > 0 {
		c.gaps = append(c.gaps[:0:0], c.gaps[over:]...)
	}
}

// observeGaps applies the recording rule of SPEC §7 to one poll's entries.
func observeGaps(position uint64, started bool, entries []Entry, cancelled []Range) []GapObservation {
	if len(cancelled) == 0 {
		return nil
	}
	var out []GapObservation
	expected := uint64(0)
	if started {
		expected = position + 1
	}
	for _, e := range entries {
		delivered := e.Seq
		if delivered > expected {
			var clips []Range
			for _, r := range intersecting(cancelled, expected, delivered) {
				clip := Range{max(r.Start, expected), min(r.End, delivered)}
				if clip.Start < clip.End {
					clips = append(clips, clip)
				}
			}
			if len(clips) > 0 {
				out = append(out, GapObservation{Expected: expected, Delivered: delivered, Ranges: clips})
			}
		}
		expected = delivered + 1
	}
	return out
}

// Wait polls until it gets up to max entries or timeout passes, parking on
// the source between empty polls (edge-triggered by the epoch; a lost
// wake-up costs at most the remaining timeout). max 0 returns at once;
// timeout 0 is one poll; a cancelled ctx returns what it has (nothing).
func (c *Cursor) Wait(ctx context.Context, max int, timeout time.Duration) ([]Entry, error) {
	if max <= 0 {
		return nil, nil
	}
	start := time.Now()
	for {
		es, _, snap, err := c.pollBatch(ctx, max)
		if err != nil && ctx.Err() != nil {
			return nil, nil // cancellation returns empty
		}
		if err != nil || len(es) > 0 {
			return es, err
		}
		remaining := timeout - time.Since(start)
		if remaining <= 0 || ctx.Err() != nil {
			return nil, nil
		}
		c.src.Park(ctx, snap, remaining)
	}
}

// LoadCheckpoint restores the cursor from the record of id in store,
// applying load rules 1-3 of SPEC §8.5 only (not found: fresh; read error:
// ErrCheckpointIO; undecodable: ErrCheckpointCorrupt). Manual checkpoints
// are outside the worker's no-regress guarantee. It returns the record's
// revision (0 when none) for SaveCheckpoint.
func (c *Cursor) LoadCheckpoint(ctx context.Context, store CheckpointStore, id string) (Revision, error) {
	if err := ValidateCheckpointID(id); err != nil {
		return 0, err
	}
	rec, rev, err := store.Load(ctx, id)
	switch {
	case errors.Is(err, ErrCheckpointNotFound):
		c.Restore(0, false)
		return 0, nil
	case err != nil:
		return 0, err
	}
	c.Restore(rec.Position, rec.Started)
	return rev, nil
}

// SaveCheckpoint saves the cursor's state under id with compare-and-swap
// against expected (0: create) and returns the new revision.
func (c *Cursor) SaveCheckpoint(ctx context.Context, store CheckpointStore, id string, expected Revision) (Revision, error) {
	if err := ValidateCheckpointID(id); err != nil {
		return 0, err
	}
	ident := c.region.Identity()
	return store.Save(ctx, id, CheckpointRecord{
		Position: c.position, Started: c.started, RegionIdentity: &ident,
		UpdatedMs: uint64(time.Now().UnixMilli()),
	}, expected)
}
