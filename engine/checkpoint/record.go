package checkpoint

import "context"

// Record is a durable cursor position.
type Record struct {
	Position uint64
	Started  bool
	// RegionIdentity is the region the position belongs to; nil when the
	// record carries none (such a record never loads into a worker).
	RegionIdentity *string
	// JournalID binds the record to one journal; "" when absent (an old
	// record: not checked, and added by the next save).
	JournalID string
	Owner     string // the saving worker's id; informational
	UpdatedMs uint64 // unix ms of the save; informational
	// Epoch is the owner epoch of a consumer group's partition checkpoint:
	// each claim of the partition writes the record with Epoch+1, so the
	// record is also the fence against a former owner. 0 (encoded as an
	// absent key) for other checkpoints.
	Epoch uint64
}

// Revision is a checkpoint store's compare-and-swap token. Zero means "no
// record": a save with expected revision 0 creates.
type Revision uint64

// Store persists checkpoint records with compare-and-swap.
// Implementations are safe for concurrent use.
type Store interface {
	// Load returns the record of id and its revision. Errors: ErrNotFound,
	// ErrCorrupt (a *CorruptError), ErrIO.
	Load(ctx context.Context, id string) (Record, Revision, error)
	// Save stores rec under id if the stored revision equals expected (0:
	// only if no record exists) and returns the new, larger revision.
	// Errors: ErrConflict (nothing was written), and ErrIO, after which
	// the outcome is unknown: the previous record is stored, or rec is (a
	// lost reply, a timeout after the write landed, a failed directory
	// sync after the rename). Either is safe, as a record only ever holds
	// the position of a handled batch; a caller that must know reads the
	// record back.
	Save(ctx context.Context, id string, rec Record, expected Revision) (Revision, error)
	// Location names where id is stored (a file path, a bucket and key),
	// for errors and logs.
	Location(id string) string
}
