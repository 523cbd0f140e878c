package engine

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

// PollResult is one answer of the pull primitive.
type PollResult struct {
	Entries   []Entry  // ascending by seq
	Snapshot  Snapshot // read before the query: the snapshot to park on
	Visible   uint64   // the visible bound of the snapshot the query used
	Cancelled []Range  // cancelled ranges intersecting the scanned interval
}
