package checkpoint

import (
	"context"
	"fmt"
	"sync"
)

// MemoryStore keeps checkpoint records in memory, with the same
// compare-and-swap contract as the durable stores. It is the reference
// implementation for tests; records die with the process.
type MemoryStore struct {
	mu      sync.Mutex
	records map[string]memRecord
	rev     Revision                        // last revision handed out (store-global, like KV)
	broken  map[string]bool                 // ids whose Load and Save fail (set by tests)
	parked  map[string]map[string]memRecord // parked sets: checkpoint id → entity → record
}

type memRecord struct {
	data []byte // encoded, so corrupt bytes can be planted and Load decodes like the others
	rev  Revision
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty in-memory store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{records: make(map[string]memRecord)}
}

// Location names the record of id.
func (m *MemoryStore) Location(id string) string { return fmt.Sprintf("memory:%q", id) }

// Load returns the record of id and its revision.
func (m *MemoryStore) Load(ctx context.Context, id string) (Record, Revision, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return Record{}, 0, fmt.Errorf("%w: %w", ErrIO, err)
	}
	m.mu.Lock()
	r, ok := m.records[id]
	broken := m.broken[id]
	m.mu.Unlock()
	if broken {
		return Record{}, 0, fmt.Errorf("%w: %s: injected fault", ErrIO, m.Location(id))
	}
	if !ok {
		return Record{}, 0, ErrNotFound
	}
	rec, err := Decode(r.data)
	if err != nil {
		return Record{}, 0, &CorruptError{ID: id, Location: m.Location(id), Reason: err.Error()}
	}
	return rec, r.rev, nil
}

// Save stores rec if the stored revision equals expected (0: create).
func (m *MemoryStore) Save(ctx context.Context, id string, rec Record, expected Revision) (Revision, error) {
	if err := ValidateID(id); err != nil {
		return 0, err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrIO, err)
	}
	data := Encode(rec)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.broken[id] {
		return 0, fmt.Errorf("%w: %s: injected fault", ErrIO, m.Location(id))
	}
	cur, ok := m.records[id]
	switch {
	case expected == 0 && ok:
		return 0, fmt.Errorf("%w: %s exists (revision %d)", ErrConflict, m.Location(id), cur.rev)
	case expected != 0 && (!ok || cur.rev != expected):
		return 0, fmt.Errorf("%w: %s is at revision %d, expected %d", ErrConflict, m.Location(id), cur.rev, expected)
	}
	m.rev++
	m.records[id] = memRecord{data: data, rev: m.rev}
	return m.rev, nil
}
