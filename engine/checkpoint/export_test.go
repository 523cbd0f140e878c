package checkpoint

import (
	"os"
	"path/filepath"
)

// Test hooks, compiled into this package's tests only: planting records
// and injecting faults.

// PutRaw stores raw bytes under id as a new revision, bypassing encoding:
// tests use it to plant corrupt or foreign records.
func (m *MemoryStore) PutRaw(id string, data []byte) Revision {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rev++
	m.records[id] = memRecord{data: append([]byte(nil), data...), rev: m.rev}
	return m.rev
}

// Break makes Load and Save of id fail with ErrIO until the
// returned repair function is called: tests use it to inject I/O faults.
func (m *MemoryStore) Break(id string) (repair func()) {
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

// PutRaw writes raw bytes as the whole record file of id: tests use it to
// plant corrupt or foreign records.
func (s *FileStore) PutRaw(id string, data []byte) error {
	path := s.path(id)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// PutRecord writes record bytes with a valid header at revision rev:
// tests use it to plant records the encoder would not write (goldens,
// foreign regions).
func (s *FileStore) PutRecord(id string, record []byte, rev Revision) error {
	return s.PutRaw(id, encodeCheckpointFile(rev, record))
}

// FailDirSync makes the directory sync that follows the rename of every
// later save fail with err, as fsx.WriteFile reports it (a
// *fsx.DirSyncError: the new record is then in place); FailDirSync(nil)
// restores the real sync. Call it from the goroutine that saves, or
// before the saver starts.
func (s *FileStore) FailDirSync(err error) {
	if err == nil {
		s.syncDir = nil
		return
	}
	s.syncDir = func(string) error { return err }
}

// PutParkedRaw stores raw bytes as the parked record of (id, entity).
func (m *MemoryStore) PutParkedRaw(id, entity string, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.parked == nil {
		m.parked = make(map[string]map[string]memRecord)
	}
	if m.parked[id] == nil {
		m.parked[id] = make(map[string]memRecord)
	}
	m.rev++
	m.parked[id][entity] = memRecord{data: append([]byte(nil), data...), rev: m.rev}
}
