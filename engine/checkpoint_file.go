package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// FileCheckpointStore keeps one file per checkpoint under <dir>/cursors/.
//
// File names: an id made only of [A-Za-z0-9_-] (up to 200 bytes) is kept
// verbatim as "v-<id>.ckpt"; any other id is hex-encoded as "h-<hex>.ckpt",
// with hex longer than 200 digits split into nested directories of 200
// digits each (a 1024-byte id is 2048 digits). The mapping is injective,
// reversible and never leaves <dir>/cursors.
//
// File layout: "BFCK", a version byte (1), three zero bytes, the revision
// as u64 LE, then the record bytes (SPEC §8.3). A save takes an flock on
// "<file>.lock", checks the revision, writes a temporary file, fsyncs it,
// renames it over the record and fsyncs the directory, so compare-and-swap
// holds against every saver, other processes included.
type FileCheckpointStore struct {
	root string // <dir>/cursors
}

var _ CheckpointStore = (*FileCheckpointStore)(nil)

const (
	ckptMagic     = "BFCK"
	ckptHeaderLen = 16
	ckptSuffix    = ".ckpt"
	ckptChunk     = 200
)

// NewFileCheckpointStore returns a store rooted at dir/cursors (created on
// the first save).
func NewFileCheckpointStore(dir string) *FileCheckpointStore {
	return &FileCheckpointStore{root: filepath.Join(dir, "cursors")}
}

// checkpointFileKey maps a valid checkpoint id to its relative path.
func checkpointFileKey(id string) string {
	verbatim := len(id) <= ckptChunk
	for i := 0; i < len(id) && verbatim; i++ {
		c := id[i]
		verbatim = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if verbatim {
		return "v-" + id + ckptSuffix
	}
	h := hex.EncodeToString([]byte(id))
	var parts []string
	for len(h) > ckptChunk {
		parts = append(parts, h[:ckptChunk])
		h = h[ckptChunk:]
	}
	parts = append(parts, h)
	parts[0] = "h-" + parts[0]
	return filepath.Join(parts...) + ckptSuffix
}

// checkpointIDFromFileKey reverses checkpointFileKey.
func checkpointIDFromFileKey(key string) (string, error) {
	key = strings.TrimSuffix(filepath.ToSlash(key), ckptSuffix)
	switch {
	case strings.HasPrefix(key, "v-"):
		return key[2:], nil
	case strings.HasPrefix(key, "h-"):
		b, err := hex.DecodeString(strings.ReplaceAll(key[2:], "/", ""))
		return string(b), err
	}
	return "", fmt.Errorf("engine: %q is not a checkpoint file key", key)
}

func (s *FileCheckpointStore) path(id string) string {
	return filepath.Join(s.root, checkpointFileKey(id))
}

// Location returns the record's file path.
func (s *FileCheckpointStore) Location(id string) string { return s.path(id) }

// Load reads the record of id.
func (s *FileCheckpointStore) Load(ctx context.Context, id string) (CheckpointRecord, Revision, error) {
	if err := ValidateCheckpointID(id); err != nil {
		return CheckpointRecord{}, 0, err
	}
	if err := ctx.Err(); err != nil {
		return CheckpointRecord{}, 0, fmt.Errorf("%w: %w", ErrCheckpointIO, err)
	}
	path := s.path(id)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return CheckpointRecord{}, 0, ErrCheckpointNotFound
	}
	if err != nil {
		return CheckpointRecord{}, 0, fmt.Errorf("%w: %w", ErrCheckpointIO, err)
	}
	rev, body, err := parseCheckpointFile(data)
	if err == nil {
		var rec CheckpointRecord
		if rec, err = DecodeCheckpoint(body); err == nil {
			return rec, rev, nil
		}
	}
	return CheckpointRecord{}, 0, &CheckpointCorruptError{ID: id, Location: path, Reason: err.Error()}
}

func parseCheckpointFile(data []byte) (Revision, []byte, error) {
	if len(data) < ckptHeaderLen {
		return 0, nil, fmt.Errorf("file of %d bytes is shorter than its header", len(data))
	}
	if !bytes.Equal(data[:4], []byte(ckptMagic)) {
		return 0, nil, errors.New("bad magic")
	}
	if data[4] != 1 {
		return 0, nil, fmt.Errorf("unsupported version %d", data[4])
	}
	rev := Revision(binary.LittleEndian.Uint64(data[8:]))
	if rev == 0 {
		return 0, nil, errors.New("revision 0")
	}
	return rev, data[ckptHeaderLen:], nil
}

func encodeCheckpointFile(rev Revision, record []byte) []byte {
	out := make([]byte, ckptHeaderLen, ckptHeaderLen+len(record))
	copy(out, ckptMagic)
	out[4] = 1
	binary.LittleEndian.PutUint64(out[8:], uint64(rev))
	return append(out, record...)
}

// Save stores rec if the stored revision equals expected (0: create).
func (s *FileCheckpointStore) Save(ctx context.Context, id string, rec CheckpointRecord, expected Revision) (Revision, error) {
	if err := ValidateCheckpointID(id); err != nil {
		return 0, err
	}
	path := s.path(id)
	ioErr := func(err error) error { return fmt.Errorf("%w: %s: %w", ErrCheckpointIO, path, err) }
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, ioErr(err)
	}
	unlock, err := lockFileCtx(ctx, path+".lock")
	if err != nil {
		return 0, ioErr(err)
	}
	defer unlock()

	var cur Revision
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return 0, ioErr(err)
	default:
		if cur, _, err = parseCheckpointFile(data); err != nil {
			return 0, fmt.Errorf("%w: %s holds an unreadable record (%v); revision unknown", ErrCheckpointConflict, path, err)
		}
	}
	if expected == 0 && cur != 0 {
		return 0, fmt.Errorf("%w: %s exists (revision %d)", ErrCheckpointConflict, path, cur)
	}
	if expected != cur {
		return 0, fmt.Errorf("%w: %s is at revision %d, expected %d", ErrCheckpointConflict, path, cur, expected)
	}
	next := cur + 1
	if err := writeFileAtomic(dir, filepath.Base(path), encodeCheckpointFile(next, EncodeCheckpoint(rec))); err != nil {
		return 0, ioErr(err)
	}
	return next, nil
}

// PutRaw writes raw bytes as the whole record file of id: tests use it to
// plant corrupt or foreign records.
func (s *FileCheckpointStore) PutRaw(id string, data []byte) error {
	path := s.path(id)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// PutRecord writes record bytes with a valid header at revision rev:
// tests use it to plant records the encoder would not write (goldens,
// foreign regions).
func (s *FileCheckpointStore) PutRecord(id string, record []byte, rev Revision) error {
	return s.PutRaw(id, encodeCheckpointFile(rev, record))
}

// lockFileCtx takes an exclusive flock on path, retrying until ctx ends.
func lockFileCtx(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Microsecond):
		}
	}
}
