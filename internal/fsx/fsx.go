// Package fsx holds the file-system rules the journal and the file
// checkpoint store share: atomic, durable file replacement, directory
// sync, and advisory locks (flock(2)), so each rule is written once.
package fsx

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrLocked is returned by TryLock when another open file description
// (another process, or another Store in this one) holds the lock.
var ErrLocked = errors.New("fsx: locked")

// DirSyncError reports that a file was renamed into place but the sync of
// its directory failed: readers already see the new file, but the rename
// may not survive a crash of the operating system.
type DirSyncError struct {
	Dir   string
	Cause error
}

func (e *DirSyncError) Error() string {
	return fmt.Sprintf("renamed into place, but the sync of directory %s failed (the new file may not survive an OS crash): %v", e.Dir, e.Cause)
}

func (e *DirSyncError) Unwrap() error { return e.Cause }

// WriteFile replaces dir/name with data: it writes a temporary file in
// dir, fsyncs it, renames it over dir/name and syncs dir, so a reader sees
// the old content or the new, never a mix, and the new content is durable
// once WriteFile returns nil. syncDir syncs the directory (nil means
// SyncDir; tests inject failures through it). A failure before the rename
// leaves dir/name untouched; a failure of the final directory sync is a
// *DirSyncError: the new content is then in place.
func WriteFile(dir, name string, data []byte, syncDir func(string) error) error {
	if syncDir == nil {
		syncDir = SyncDir
	}
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	renamed := false
	defer func() {
		if !renamed {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmpName, filepath.Join(dir, name)); err != nil {
		return err
	}
	renamed = true
	if err := syncDir(dir); err != nil {
		return &DirSyncError{Dir: dir, Cause: err}
	}
	return nil
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Lock is a held advisory lock; Unlock releases it.
type Lock struct{ f *os.File }

// Unlock releases the lock and closes its file.
func (l *Lock) Unlock() error {
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	return l.f.Close()
}

// TryLock takes an exclusive flock on path (created if missing) without
// waiting: ErrLocked when it is held elsewhere.
func TryLock(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return &Lock{f: f}, nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			_ = f.Close()
			return nil, ErrLocked
		default:
			_ = f.Close()
			return nil, err
		}
	}
}

// LockContext takes an exclusive flock on path, retrying while it is held
// elsewhere until ctx ends.
func LockContext(ctx context.Context, path string) (*Lock, error) {
	for {
		l, err := TryLock(path)
		if !errors.Is(err, ErrLocked) {
			return l, err
		}
		t := time.NewTimer(200 * time.Microsecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// MkdirAll creates dir and any missing parents, and syncs the parent of
// each directory it creates, so the new directories survive a crash of the
// operating system (a file renamed into one would otherwise be lost with
// it).
func MkdirAll(dir string) error {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := SyncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}
