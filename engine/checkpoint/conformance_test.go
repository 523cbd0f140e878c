package checkpoint_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/checkpointtest"
)

// TestCKP17_Conformance runs the checkpoint-store conformance suite
// (SPEC §13 CKP-17) against the engine's memory and file stores.
func TestCKP17_Conformance(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		checkpointtest.RunConformance(t, ckptMemoryTarget)
	})
	t.Run("file", func(t *testing.T) {
		checkpointtest.RunConformance(t, ckptFileTarget)
	})
}

func ckptMemoryTarget(t testing.TB) checkpointtest.Target {
	s := checkpoint.NewMemoryStore()
	return checkpointtest.Target{
		Store:    s,
		PlantRaw: func(t testing.TB, id string, data []byte) { s.PutRaw(id, data) },
		BreakIO:  func(t testing.TB, id string) func() { return s.Break(id) },
	}
}

func ckptFileTarget(t testing.TB) checkpointtest.Target {
	s := checkpoint.NewFileStore(t.TempDir())
	return checkpointtest.Target{
		Store: s,
		PlantRaw: func(t testing.TB, id string, data []byte) {
			t.Helper()
			// Keep the file header valid, at the next revision, so that the
			// record bytes are what Load sees.
			if err := s.PutRecord(id, data, ckptFileRevision(t, s.Location(id))+1); err != nil {
				t.Fatalf("plant %q: %v", id, err)
			}
		},
		BreakIO: func(t testing.TB, id string) func() {
			t.Helper()
			return ckptBreakFile(t, s.Location(id))
		},
	}
}

// ckptFileRevision reads the revision from the header of the record file
// at path (layout in FileStore's doc: "BFCK", version, three
// zero bytes, revision u64 LE); 0 when there is no readable header.
func ckptFileRevision(t testing.TB, path string) checkpoint.Revision {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if len(data) < 16 || !bytes.Equal(data[:4], []byte("BFCK")) {
		return 0
	}
	return checkpoint.Revision(binary.LittleEndian.Uint64(data[8:16]))
}

// ckptBreakFile puts a directory where the record file at path belongs (a
// record that exists is moved aside first), so that reading and writing
// it fail with I/O errors. The returned repair removes the directory and
// puts the record back.
func ckptBreakFile(t testing.TB, path string) (repair func()) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	aside := path + ".conformance-aside"
	moved := true
	if err := os.Rename(path, aside); errors.Is(err, fs.ErrNotExist) {
		moved = false
	} else if err != nil {
		t.Fatalf("move the record aside: %v", err)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatalf("put a directory at the record path: %v", err)
	}
	// A file inside, so that a store cannot "repair" the fault by
	// removing an empty directory or renaming over it.
	if err := os.WriteFile(filepath.Join(path, "blocker"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := os.RemoveAll(path); err != nil {
			t.Fatalf("remove the directory at the record path: %v", err)
		}
		if moved {
			if err := os.Rename(aside, path); err != nil {
				t.Fatalf("restore the record: %v", err)
			}
		}
	}
}

// TestPSN05_ParkConformance runs the parked-set store cases against the
// memory store.
func TestPSN05_ParkConformance(t *testing.T) {
	checkpointtest.RunParkConformance(t, func(t testing.TB) checkpointtest.ParkTarget {
		s := checkpoint.NewMemoryStore()
		return checkpointtest.ParkTarget{
			Store:    s,
			PlantRaw: func(t testing.TB, id, entity string, data []byte) { s.PutParkedRaw(id, entity, data) },
		}
	})
}
