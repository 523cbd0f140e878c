package journal

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
)

// Payload reads go through read-only memory mappings of the segment files:
// a poll copies each payload out of the OS page cache without a system
// call, so a selective region (whose payloads lie far apart) costs about
// what a contiguous one does. The active segment is mapped with room to
// grow (SegmentBytes plus the largest group), and only published offsets,
// which are on disk, are ever read; a read outside a mapping falls back to
// pread. Close unmaps under mapMu, which every copy holds for reading.

// mapSlack is how far past SegmentBytes the active segment can grow: one
// maximal batch plus one maximal group.
const mapSlack = 128 << 20

type segMaps struct {
	mu   sync.RWMutex
	maps [][]byte // by segment number; nil where mapping failed
}

// mapSegment maps f read-only, length bytes (0: the file's size).
func mapSegment(f *os.File, length int64) ([]byte, error) {
	if length == 0 {
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		length = st.Size()
	}
	if length <= 0 {
		return nil, nil
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(length), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("journal: map %s: %w", f.Name(), err)
	}
	return b, nil
}

// add appends the mapping of the next segment.
func (m *segMaps) add(b []byte) {
	m.mu.Lock()
	m.maps = append(m.maps, b)
	m.mu.Unlock()
}

// unmapAll releases every mapping; later copies fall back to pread (and
// find the files closed).
func (m *segMaps) unmapAll() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for i, b := range m.maps {
		if b != nil {
			errs = append(errs, syscall.Munmap(b))
		}
		m.maps[i] = nil
	}
	return errors.Join(errs...)
}

// copyOut copies [off, off+len(dst)) of segment seg into dst. It reports
// false when that range is not mapped (the caller then reads the file). A
// fault while copying (the file was cut behind the journal's back) is
// returned as an error instead of crashing the process.
func (m *segMaps) copyOut(seg uint32, off int64, dst []byte) (ok bool, err error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if int(seg) >= len(m.maps) {
		return false, nil
	}
	b := m.maps[seg]
	if b == nil || off < 0 || off+int64(len(dst)) > int64(len(b)) {
		return false, nil
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			ok, err = true, fmt.Errorf("fault reading the segment mapping: %v", p)
		}
	}()
	copy(dst, b[off:])
	return true, nil
}
