package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/internal/fsx"
)

// Segment header (16 bytes):
//
//	bytes 0-7   magic "BATFLSEG"
//	bytes 8-9   segment format version, u16 LE (1)
//	bytes 10-11 reserved, zero
//	bytes 12-15 CRC-32C of bytes 0-11, u32 LE
const (
	segmentMagic     = "BATFLSEG"
	segmentVersion   = 1
	segmentHeaderLen = 16
	segmentPrefix    = "segment-"
	segmentSuffix    = ".bfj"
	journalIDFile    = "journal_id"
	lockFile         = "LOCK"
)

func segmentName(num uint32) string {
	return fmt.Sprintf("%s%010d%s", segmentPrefix, num, segmentSuffix)
}

func segmentHeader() []byte {
	h := make([]byte, segmentHeaderLen)
	copy(h, segmentMagic)
	binary.LittleEndian.PutUint16(h[8:], segmentVersion)
	binary.LittleEndian.PutUint32(h[12:], crc32.Checksum(h[:12], castagnoli))
	return h
}

// checkSegmentHeader validates a segment header.
func checkSegmentHeader(path string, h []byte) error {
	bad := func(reason string) error { return &CorruptionError{Path: path, Offset: 0, Reason: reason} }
	if !bytes.Equal(h[:8], []byte(segmentMagic)) {
		return bad("bad segment magic")
	}
	if crc32.Checksum(h[:12], castagnoli) != binary.LittleEndian.Uint32(h[12:]) {
		return bad("segment header checksum mismatch")
	}
	if v := binary.LittleEndian.Uint16(h[8:]); v != segmentVersion {
		return bad(fmt.Sprintf("unsupported segment version %d", v))
	}
	return nil
}

// listSegments returns the segment numbers in dir, ascending. Numbers must
// be contiguous from the first.
func listSegments(dir string) ([]uint32, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var nums []uint32
	for _, de := range des {
		name := de.Name()
		if !strings.HasPrefix(name, segmentPrefix) || !strings.HasSuffix(name, segmentSuffix) {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, segmentPrefix), segmentSuffix), 10, 32)
		if err != nil {
			return nil, &CorruptionError{Path: filepath.Join(dir, name), Reason: "unparsable segment file name"}
		}
		nums = append(nums, uint32(n))
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	for i := 1; i < len(nums); i++ {
		if nums[i] != nums[i-1]+1 {
			return nil, &CorruptionError{Path: filepath.Join(dir, segmentName(nums[i-1]+1)), Reason: "segment file missing"}
		}
	}
	return nums, nil
}

// createSegment creates a new segment file with its header, fsyncs it and
// the directory.
func createSegment(dir string, num uint32) (*os.File, error) {
	path := filepath.Join(dir, segmentName(num))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	if err := writeSegmentHeader(f); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, err
	}
	if err := fsx.SyncDir(dir); err != nil {
		// Remove it, or it would block every later attempt (O_EXCL), and
		// try to make the removal durable: an empty segment that came
		// back after a power failure would make the one before it look
		// sealed.
		_ = f.Close()
		_ = os.Remove(path)
		_ = fsx.SyncDir(dir)
		return nil, err
	}
	return f, nil
}

func writeSegmentHeader(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt(segmentHeader(), 0); err != nil {
		return err
	}
	return f.Sync()
}

// lockDir takes an exclusive, non-blocking flock on dir/LOCK.
func lockDir(dir string) (*fsx.Lock, error) {
	l, err := fsx.TryLock(filepath.Join(dir, lockFile))
	switch {
	case errors.Is(err, fsx.ErrLocked):
		return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
	case err != nil:
		return nil, fmt.Errorf("journal: lock %s: %w", dir, err)
	}
	return l, nil
}

// loadJournalID reads dir/journal_id, creating it when the directory holds
// no segments yet.
func loadJournalID(dir string, fresh bool) (engine.ID128, error) {
	path := filepath.Join(dir, journalIDFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if !fresh {
			return engine.ID128{}, &CorruptionError{Path: path, Reason: "journal id file missing next to existing segments"}
		}
		id := engine.NewID128()
		if err := fsx.WriteFile(dir, journalIDFile, []byte(id.String()+"\n"), nil); err != nil {
			return engine.ID128{}, fmt.Errorf("journal: create journal id: %w", err)
		}
		return id, nil
	}
	if err != nil {
		return engine.ID128{}, fmt.Errorf("journal: read journal id: %w", err)
	}
	id, err := engine.ParseID128(strings.TrimSpace(string(data)))
	if err != nil {
		return engine.ID128{}, &CorruptionError{Path: path, Reason: err.Error()}
	}
	return id, nil
}
