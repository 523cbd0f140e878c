package checkpoint

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

	"github.com/batfleet/batfleet/internal/fsx"
)

// FileStore keeps one file per checkpoint under <dir>/cursors/.
//
// File names: an id made only of [A-Za-z0-9_-] (up to 200 bytes) is kept
// verbatim as "v-<id>.ckpt"; any other id is hex-encoded as "h-<hex>.ckpt",
// with hex longer than 200 digits split into nested directories of 200
// digits each (a 1024-byte id is 2048 digits). The mapping is injective,
// reversible and never leaves <dir>/cursors.
//
// File layout: "BFCK", a version byte (1), three zero bytes, the revision
// as u64 LE, then the record bytes. A save takes an flock on
// "<file>.lock", checks the revision, writes a temporary file, fsyncs it,
// renames it over the record and fsyncs the directory, so compare-and-swap
// holds against every saver, other processes included.
//
// Save errors follow Store.Save: ErrConflict when nothing was written;
// ErrIO when a step failed. A failure before the rename leaves the
// previous record intact. A failure of the final directory sync comes
// after the rename: the error matches ErrIO (and wraps a
// *fsx.DirSyncError naming the directory), but its outcome is unknown —
// the new record is in place at the next revision, and Load returns it,
// though it may not survive a crash of the operating system. A caller
// must not assume the previous record is still stored; it reads the
// record back if it needs to know (a worker stops, and the next worker
// resumes from whatever Load returns: never before a handled batch,
// since the new record holds a handled batch's position).
type FileStore struct {
	root    string             // <dir>/cursors
	syncDir func(string) error // nil: fsx.SyncDir; tests inject failures
}

var _ Store = (*FileStore)(nil)

const (
	ckptMagic     = "BFCK"
	ckptHeaderLen = 16
	ckptSuffix    = ".ckpt"
	ckptChunk     = 200
)

// NewFileStore returns a store rooted at dir/cursors (created on
// the first save).
func NewFileStore(dir string) *FileStore {
	return &FileStore{root: filepath.Join(dir, "cursors")}
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
	return "", fmt.Errorf("checkpoint: %q is not a checkpoint file key", key)
}

func (s *FileStore) path(id string) string {
	return filepath.Join(s.root, checkpointFileKey(id))
}

// Location returns the record's file path.
func (s *FileStore) Location(id string) string { return s.path(id) }

// Load reads the record of id.
func (s *FileStore) Load(ctx context.Context, id string) (Record, Revision, error) {
	if err := ValidateID(id); err != nil {
		return Record{}, 0, err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return Record{}, 0, fmt.Errorf("%w: %w", ErrIO, err)
	}
	path := s.path(id)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, 0, ErrNotFound
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("%w: %w", ErrIO, err)
	}
	rev, body, err := parseCheckpointFile(data)
	if err == nil {
		var rec Record
		if rec, err = Decode(body); err == nil {
			return rec, rev, nil
		}
	}
	return Record{}, 0, &CorruptError{ID: id, Location: path, Reason: err.Error()}
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

// Save stores rec if the stored revision equals expected (0: create). An
// ErrIO from the directory sync after the rename leaves the outcome
// unknown: rec may be in place (see FileStore).
func (s *FileStore) Save(ctx context.Context, id string, rec Record, expected Revision) (Revision, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ValidateID(id); err != nil {
		return 0, err
	}
	path := s.path(id)
	ioErr := func(err error) error { return fmt.Errorf("%w: %s: %w", ErrIO, path, err) }
	dir := filepath.Dir(path)
	if err := fsx.MkdirAll(dir); err != nil {
		return 0, ioErr(err)
	}
	lock, err := fsx.LockContext(ctx, path+".lock")
	if err != nil {
		return 0, ioErr(err)
	}
	defer func() { _ = lock.Unlock() }()

	var cur Revision
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return 0, ioErr(err)
	default:
		if cur, _, err = parseCheckpointFile(data); err != nil {
			return 0, fmt.Errorf("%w: %s holds an unreadable record (%v); revision unknown", ErrConflict, path, err)
		}
	}
	if expected == 0 && cur != 0 {
		return 0, fmt.Errorf("%w: %s exists (revision %d)", ErrConflict, path, cur)
	}
	if expected != cur {
		return 0, fmt.Errorf("%w: %s is at revision %d, expected %d", ErrConflict, path, cur, expected)
	}
	next := cur + 1
	if err := fsx.WriteFile(dir, filepath.Base(path), encodeCheckpointFile(next, Encode(rec)), s.syncDir); err != nil {
		return 0, ioErr(err)
	}
	return next, nil
}
