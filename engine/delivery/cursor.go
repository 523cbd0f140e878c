package delivery

import (
	"context"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
)

// GapObservation records a jump in delivered sequences that a cancelled
// range explains: the cursor expected Expected, was handed Delivered, and
// Ranges are the cancelled ranges clipped to [Expected, Delivered).
// Observations are on the global axis, not region-filtered, and live in
// memory only.
type GapObservation struct {
	Expected  uint64
	Delivered uint64
	Ranges    []engine.Range
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
	region   engine.Region
	position uint64
	started  bool
	gaps     []GapObservation // ring contents, oldest first
	gapCap   int
	bound    *binding     // the checkpoint LoadCheckpoint bound it to; nil: in-memory
	stream   Stream       // opened on first poll when src is a Streamer
	seen     engine.ID128 // the source incarnation of the last poll
}

// binding is a cursor's durable checkpoint: where it saves, and the
// revision its next save must find.
type binding struct {
	store     checkpoint.Store
	id        string
	revision  checkpoint.Revision
	journalID string
	owner     string
}

// NewCursor returns a fresh cursor (0, false) on region. The region is
// validated first (ErrInvalidRegion).
func NewCursor(src Source, region engine.Region) (*Cursor, error) {
	if err := region.Validate(); err != nil {
		return nil, err
	}
	return &Cursor{src: src, region: region}, nil
}

// WithGapConfig installs a fresh, empty gap buffer.
func (c *Cursor) WithGapConfig(cfg GapConfig) error {
	if cfg.Capacity < 0 {
		return &engine.ConfigError{Field: "GapConfig.Capacity", Rule: "must be >= 0"}
	}
	c.gapCap = cfg.Capacity
	c.gaps = nil
	return nil
}

// Region returns the cursor's region.
func (c *Cursor) Region() engine.Region { return c.region }

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
func (c *Cursor) Poll(ctx context.Context) (engine.Entry, bool, error) {
	es, err := c.PollBatch(ctx, 1)
	if err != nil || len(es) == 0 {
		return engine.Entry{}, false, err
	}
	return es[0], true, nil
}

// PollBatch returns up to max matching visible entries after the cursor's
// position and advances past the last one. max 0 returns nothing. On an
// error the state is unchanged and no gaps are recorded: the cursor never
// advances past an entry it failed to return.
func (c *Cursor) PollBatch(ctx context.Context, max int) ([]engine.Entry, error) {
	es, _, _, err := c.pollBatch(ctx, max)
	return es, err
}

// pollBatch is PollBatch that also returns the batch's gap observations
// and the snapshot read before the query (for parking).
func (c *Cursor) pollBatch(ctx context.Context, max int) ([]engine.Entry, []GapObservation, engine.Snapshot, error) {
	es, gaps, snap, _, err := c.pollBatchWait(ctx, max, 0)
	return es, gaps, snap, err
}

// pollBatchWait is pollBatch that lets a source that can hold a poll
// (WaitingStream) wait up to wait for a match; waited reports that it did.
func (c *Cursor) pollBatchWait(ctx context.Context, max int, wait time.Duration) (es []engine.Entry, gaps []GapObservation, snap engine.Snapshot, waited bool, err error) {
	if max <= 0 {
		return nil, nil, c.src.Latest(), false, nil
	}
	res, waited, err := c.poll(ctx, max, wait)
	if err != nil {
		return nil, nil, engine.Snapshot{}, false, err
	}
	if len(res.Entries) == 0 {
		return nil, nil, res.Snapshot, waited, nil
	}
	gaps = observeGaps(c.position, c.started, res.Entries, res.Cancelled)
	c.recordGaps(gaps)
	c.position, c.started = res.Entries[len(res.Entries)-1].Seq, true
	return res.Entries, gaps, res.Snapshot, waited, nil
}

// poll asks the source for up to max entries after the cursor's position,
// through the cursor's own stream when the source keeps per-consumer
// state, held at the source for up to wait when it can hold polls.
func (c *Cursor) poll(ctx context.Context, max int, wait time.Duration) (res engine.PollResult, waited bool, err error) {
	if c.stream == nil {
		st, ok := c.src.(Streamer)
		if !ok {
			res, err = c.src.Poll(ctx, c.region, c.position, c.started, max)
			return res, false, err
		}
		c.stream = st.Stream(c.region)
	}
	if ws, ok := c.stream.(WaitingStream); ok && wait > 0 {
		res, err = ws.PollWait(ctx, c.position, c.started, max, wait)
		return res, true, err
	}
	res, err = c.stream.Poll(ctx, c.position, c.started, max)
	return res, false, err
}

// Close releases what the cursor holds at its source (a remote client's
// pull ahead for it). The cursor can still poll afterwards; a worker
// closes its cursor when it exits.
func (c *Cursor) Close() {
	if c.stream != nil {
		c.stream.Close()
		c.stream = nil
	}
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

// observeGaps applies the gap recording rule to one poll's entries.
func observeGaps(position uint64, started bool, entries []engine.Entry, cancelled []engine.Range) []GapObservation {
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
			var clips []engine.Range
			for _, r := range engine.Intersecting(cancelled, expected, delivered) {
				clip := engine.Range{Start: max(r.Start, expected), End: min(r.End, delivered)}
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
func (c *Cursor) Wait(ctx context.Context, max int, timeout time.Duration) ([]engine.Entry, error) {
	if max <= 0 {
		return nil, nil
	}
	start := time.Now()
	for {
		es, _, _, err := c.next(ctx, max, timeout-time.Since(start))
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, nil // cancellation returns empty
		case err != nil || len(es) > 0:
			return es, err
		case time.Since(start) >= timeout || ctx.Err() != nil:
			return nil, nil
		}
	}
}

// next is one step of every consumer loop (Wait, and the worker's): poll
// once and, when nothing matches, wait for at most park — held at the
// source when it can hold polls, else parked on the source with the
// snapshot read before that poll (the lost-wakeup guard) — then return
// nothing so the caller polls again.
func (c *Cursor) next(ctx context.Context, max int, park time.Duration) ([]engine.Entry, []GapObservation, engine.Snapshot, error) {
	es, gaps, snap, waited, err := c.pollBatchWait(ctx, max, park)
	// The first answer of a new writer incarnation returns at once, so
	// the caller re-checks its checkpoint against the new writer before
	// any wait, while the new journal's bound is still the
	// one it came back with.
	restarted := err == nil && c.seen != (engine.ID128{}) && snap.Incarnation != (engine.ID128{}) && snap.Incarnation != c.seen
	if err == nil && snap.Incarnation != (engine.ID128{}) {
		c.seen = snap.Incarnation
	}
	if err == nil && len(es) == 0 && !waited && !restarted && park > 0 && ctx.Err() == nil {
		c.src.Park(ctx, snap, park)
	}
	return es, gaps, snap, err
}

// LoadCheckpoint binds the cursor to checkpoint id in store and restores
// its state from the stored record, under every load rule —
// the rules a durable worker applies (checkpoint.Load): a record of
// another region, of another journal or ahead of the source is refused,
// and nothing is changed. With no record the cursor starts from the
// beginning, and its first SaveCheckpoint creates one.
func (c *Cursor) LoadCheckpoint(ctx context.Context, store checkpoint.Store, id string) error {
	r, err := checkpoint.Load(ctx, store, id, c.region, c.src.Info)
	if err != nil {
		return err
	}
	owner := DefaultWorkerID()
	if c.bound != nil {
		owner = c.bound.owner
	}
	c.bound = &binding{store: store, id: id, revision: r.Revision, journalID: r.JournalID, owner: owner}
	c.Restore(r.Position, r.Started)
	return nil
}

// SaveCheckpoint saves the cursor's (position, started) to the checkpoint
// LoadCheckpoint bound it to, with compare-and-swap on the revision it
// loaded or last saved (checkpoint.ErrConflict when another saver moved
// it), as a complete record: region identity, journal id, owner (a
// DefaultWorkerID made at the first load) and the save time. A cursor
// bound to no checkpoint (in-memory) saves nothing and returns nil.
func (c *Cursor) SaveCheckpoint(ctx context.Context) error {
	b := c.bound
	if b == nil {
		return nil
	}
	ident := c.region.Identity()
	rev, err := b.store.Save(ctx, b.id, checkpoint.Record{
		Position: c.position, Started: c.started, RegionIdentity: &ident,
		JournalID: b.journalID, Owner: b.owner, UpdatedMs: uint64(time.Now().UnixMilli()),
	}, b.revision)
	if err != nil {
		return err
	}
	b.revision = rev
	return nil
}
