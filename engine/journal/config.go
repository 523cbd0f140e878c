package journal

import (
	"errors"
	"os"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/hashicorp/go-hclog"
)

// Defaults applied by Config.withDefaults for zero-valued fields.
const (
	DefaultSegmentBytes       = 128 << 20
	DefaultMaxEntryBytes      = 900 << 10 // fits a pull reply under NATS' default 1 MiB max payload
	DefaultMaxBatchEvents     = 65536
	DefaultMaxBatchBytes      = 64 << 20
	DefaultIdempotencyWindow  = 1 << 24 // sequences
	DefaultIdempotencyMaxKeys = 1 << 26
	DefaultMaxGroupBytes      = 8 << 20
)

// Config tunes a Store. The zero value is usable: every zero field means
// the documented default.
type Config struct {
	// Logger receives the store's logs; nil means no logging.
	Logger hclog.Logger

	// SegmentBytes is the size after which the journal starts a new segment
	// file (default 128 MiB; 1 MiB to 1 GiB).
	SegmentBytes int64

	// MaxEntryBytes caps one event's entity, scope and payload bytes
	// together (default 900 KiB, which fits a pull reply under NATS' default
	// 1 MiB max payload). A fleet writer requires it to fit the server's
	// max payload: fleet.MaxEntryBytes(nc.MaxPayload()) is the largest value.
	MaxEntryBytes int

	// MaxBatchEvents and MaxBatchBytes cap one append (default 65,536 events
	// and 64 MiB of encoded entries).
	MaxBatchEvents int
	MaxBatchBytes  int

	// IdempotencyWindow is how many sequences a key is remembered for: a key
	// appended at seq s replays while allocated <= s+window (default 2^24).
	IdempotencyWindow uint64
	// IdempotencyMaxKeys caps remembered keys; the oldest are forgotten
	// first (default 2^26).
	IdempotencyMaxKeys int

	// GroupCommitLinger bounds how long the committer waits for more
	// appends to join a group when the previous group was larger than what
	// has arrived. Zero means adaptive: a quarter of the recent fsync time,
	// at most 500µs. Negative disables lingering.
	GroupCommitLinger time.Duration

	// WallClock is the wall clock for entry timestamps (default time.Now).
	WallClock func() time.Time

	// ObserveSync, when set, receives the time of each group commit's
	// fsync, from the committer's goroutine (keep it quick: a histogram's
	// Observe): for latency metrics.
	ObserveSync func(time.Duration)

	faults *faults // fault injection for tests; nil in production
}

// faults lets tests inject I/O failures and stalls. Every hook is optional.
type faults struct {
	// write replaces the write of one group's bytes at offset off of f.
	write func(f *os.File, p []byte, off int64) (int, error)
	// sync runs before each fsync of the active segment; an error fails it.
	sync func() error
	// persistRanges runs before the cancelled-ranges file is written.
	persistRanges func() error
	// readPayload runs before a payload read of seq.
	readPayload func(seq uint64) error
	// zeroWrite replaces a write of preallocation zeros at offset off of f.
	zeroWrite func(f *os.File, p []byte, off int64) (int, error)
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.SegmentBytes == 0 {
		c.SegmentBytes = DefaultSegmentBytes
	}
	if c.MaxEntryBytes == 0 {
		c.MaxEntryBytes = DefaultMaxEntryBytes
	}
	if c.MaxBatchEvents == 0 {
		c.MaxBatchEvents = DefaultMaxBatchEvents
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.IdempotencyWindow == 0 {
		c.IdempotencyWindow = DefaultIdempotencyWindow
	}
	if c.IdempotencyMaxKeys == 0 {
		c.IdempotencyMaxKeys = DefaultIdempotencyMaxKeys
	}
	if c.WallClock == nil {
		c.WallClock = time.Now
	}
	return c
}

// Validate reports every problem of c at once (errors.Join of
// *ConfigError values, each matching ErrInvalidConfig). Zero values are
// valid: they mean defaults.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, rule string) { errs = append(errs, &engine.ConfigError{Field: field, Rule: rule}) }
	if c.SegmentBytes != 0 && (c.SegmentBytes < 1<<20 || c.SegmentBytes > 1<<30) {
		bad("SegmentBytes", "must be between 1 MiB and 1 GiB")
	}
	if c.MaxEntryBytes < 0 || c.MaxEntryBytes > 64<<20 {
		bad("MaxEntryBytes", "must be between 0 (default) and 64 MiB")
	}
	if c.MaxBatchEvents < 0 {
		bad("MaxBatchEvents", "must be >= 0 (0 means default)")
	}
	if c.MaxBatchBytes < 0 || c.MaxBatchBytes > 256<<20 {
		bad("MaxBatchBytes", "must be between 0 (default) and 256 MiB")
	}
	if c.IdempotencyMaxKeys < 0 {
		bad("IdempotencyMaxKeys", "must be >= 0 (0 means default)")
	}
	return errors.Join(errs...)
}
