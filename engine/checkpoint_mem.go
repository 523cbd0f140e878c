package engine

import (
	"context"
	"fmt"
	"sync"
)

// MemoryCheckpointStore keeps checkpoint records in memory, with the same
// compare-and-swap contract as the durable stores. It is the reference
// implementation for tests; records die with the process.
type MemoryCheckpointStore struct {
	mu      sync.Mutex
	records map[string]memRecord
	rev     Revision // last revision handed out (store-global, like KV)
	broken  map[string]bool
}

type memRecord struct {
	data []byte // encoded, so corrupt bytes can be planted and Load decodes like the others
	rev  Revision
}

var _ CheckpointStore = (*MemoryCheckpointStore)(nil)

// NewMemoryCheckpointStore returns an empty in-memory store.
func NewMemoryCheckpointStore() *MemoryCheckpointStore {
	return &MemoryCheckpointStore{records: make(map[string]memRecord)}
}

// Location names the record of id.
func (m *MemoryCheckpointStore) Location(id string) string { return fmt.Sprintf("memory:%q", id) }

// Load returns the record of id and its revision.
func (m *MemoryCheckpointStore) Load(ctx context.Context, id string) (CheckpointRecord, Revision, error) {
	if err := ctx.Err(); err != nil {
		return CheckpointRecord{}, 0, fmt.Errorf("%w: %w", ErrCheckpointIO, err)
	}
	m.mu.Lock()
	r, ok := m.records[id]
	broken := m.broken[id]
	m.mu.Unlock()
	if broken {
		return CheckpointRecord{}, 0, fmt.Errorf("%w: %s: injected fault", ErrCheckpointIO, m.Location(id))
	}
	if !ok {
		return CheckpointRecord{}, 0, ErrCheckpointNotFound
	}
	rec, err := DecodeCheckpoint(r.data)
	if err != nil {
		return CheckpointRecord{}, 0, &CheckpointCorruptError{ID: id, Location: m.Location(id), Reason: err.Error()}
	}
	return rec, r.rev, nil
}

// Save stores rec if the stored revision equals expected (0: create).
func (m *MemoryCheckpointStore) Save(ctx context.Context, id string, rec CheckpointRecord, expected Revision) (Revision, error) {
	if err := ValidateCheckpointID(id); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrCheckpointIO, err)
	}
	data := EncodeCheckpoint(rec)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.broken[id] {
		return 0, fmt.Errorf("%w: %s: injected fault", ErrCheckpointIO, m.Location(id))
	}
	cur, ok := m.records[id]
	switch {
	case expected == 0 && ok:
		return 0, fmt.Errorf("%w: %s exists (revision %d)", ErrCheckpointConflict, m.Location(id), cur.rev)
	case expected != 0 && (!ok || cur.rev != expected):
		return 0, fmt.Errorf("%w: %s is at revision %d, expected %d", ErrCheckpointConflict, m.Location(id), cur.rev, expected)
	}
	m.rev++
	m.records[id] = memRecord{data: data, rev: m.rev}
	return m.rev, nil
}

// PutRaw stores raw bytes under id as a new revision, bypassing encoding:
// tests use it to plant corrupt or foreign records.
func (m *MemoryCheckpointStore) PutRaw(id string, data []byte) Revision {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rev++
	m.records[id] = memRecord{data: append([]byte(nil), data...), rev: m.rev}
	return m.rev
}

// Break makes Load and Save of id fail with ErrCheckpointIO until the
// returned repair function is called: tests use it to inject I/O faults.
func (m *MemoryCheckpointStore) Break(id string) (repair func()) {
	m.mu.Lock()
	if m.broken == nil {
		m.broken = make(map[string]bool)
	}
	m.broken[id] = true
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		delete(m.broken, id)
		m.mu.Unlock()
	}
}
