package fsx

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"one", "two"} {
		if err := WriteFile(dir, "f", []byte(content), nil); err != nil {
			t.Fatalf("WriteFile(%q): %v", content, err)
		}
		if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(got) != content {
			t.Fatalf("after WriteFile(%q): %q, %v", content, got, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory holds %v (%v), want only f: no temporary file left", entries, err)
	}
}

// A failed directory sync comes after the rename: the new content is in
// place, and the error says so.
func TestWriteFileDirSyncFailure(t *testing.T) {
	dir := t.TempDir()
	injected := errors.New("injected dir sync failure")
	err := WriteFile(dir, "f", []byte("new"), func(string) error { return injected })
	var ds *DirSyncError
	if !errors.As(err, &ds) || ds.Dir != dir || !errors.Is(err, injected) {
		t.Fatalf("WriteFile = %v, want a *DirSyncError of %s wrapping the cause", err, dir)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "f")); string(got) != "new" {
		t.Fatalf("content %q, want the new content in place", got)
	}
}

// A failure before the rename leaves the old content.
func TestWriteFileFailureLeavesOld(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(dir, "f", []byte("old"), nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(filepath.Join(dir, "missing"), "f", []byte("new"), nil); err == nil {
		t.Fatal("WriteFile into a missing directory succeeded")
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "f")); string(got) != "old" {
		t.Fatalf("content %q, want old", got)
	}
}

func TestLocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "LOCK")
	l, err := TryLock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TryLock(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second TryLock = %v, want ErrLocked", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := LockContext(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("LockContext while held = %v, want the context's deadline", err)
	}
	got := make(chan error, 1)
	go func() {
		l2, err := LockContext(context.Background(), path)
		if err == nil {
			err = l2.Unlock()
		}
		got <- err
	}()
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("LockContext after the unlock: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("LockContext did not get the lock once it was released")
	}
}

func TestMkdirAll(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a", "b", "c")
	if err := MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("%s: %v", dir, err)
	}
	if err := MkdirAll(dir); err != nil { // exists: nothing to do
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(filepath.Join(root, "file", "x")); err == nil {
		t.Fatal("MkdirAll under a file succeeded")
	}
}
