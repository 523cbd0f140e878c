package checkpoint_test

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/internal/fsx"
)

// A file save whose directory sync fails after the rename (defect 5): the
// new record is already in place, so the save cannot report "nothing
// happened". It returns an error matching ErrIO whose outcome is unknown
// (Store.Save's doc): the new record may be in place, and here it is.

// errDirSync is the injected directory-sync failure.
var errDirSync = errors.New("injected: directory fsync failed")

// dsCheckDirSyncErr checks that err is the save error of a failed
// directory sync of the record of id in s.
func dsCheckDirSyncErr(t testing.TB, err error, s *checkpoint.FileStore, id string) {
	t.Helper()
	for _, want := range []error{checkpoint.ErrIO, errDirSync} {
		if !errors.Is(err, want) {
			t.Fatalf("save error %v, want one matching %v", err, want)
		}
	}
	for _, not := range []error{checkpoint.ErrConflict, checkpoint.ErrCorrupt, checkpoint.ErrNotFound} {
		if errors.Is(err, not) {
			t.Fatalf("save error %v also matches %v", err, not)
		}
	}
	var ds *fsx.DirSyncError
	if !errors.As(err, &ds) {
		t.Fatalf("save error %v (%T) holds no *fsx.DirSyncError", err, err)
	}
	if want := filepath.Dir(s.Location(id)); ds.Dir != want {
		t.Fatalf("DirSyncError.Dir = %q, want the record's directory %q", ds.Dir, want)
	}
	if msg := err.Error(); !strings.Contains(msg, "sync of directory "+ds.Dir) || !strings.Contains(msg, s.Location(id)) {
		t.Fatalf("save error %q does not name the record and the failed directory sync", msg)
	}
}

// Catalogue: CKP-17 (file store, I/O fault after the rename).
func TestCKP17_FileSaveDirSyncFailure(t *testing.T) {
	ident := engine.RegionEntity("entity:dirsync").Identity()
	recAt := func(pos uint64) checkpoint.Record {
		return checkpoint.Record{Position: pos, Started: true, RegionIdentity: &ident, Owner: "w", UpdatedMs: pos}
	}
	cases := []struct {
		name   string
		id     string
		create bool // the failing save is the first (a create)
	}{
		{"update", "dirsync", false},
		{"create", "dirsync", true},
		// A long id lives in nested directories: the one synced is the
		// record's own.
		{"update, nested directories", strings.Repeat("é", 512), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			s := checkpoint.NewFileStore(t.TempDir())
			var prev checkpoint.Revision
			if !c.create {
				var err error
				if prev, err = s.Save(ctx, c.id, recAt(1), 0); err != nil {
					t.Fatal(err)
				}
			}

			s.FailDirSync(errDirSync)
			_, err := s.Save(ctx, c.id, recAt(2), prev)
			dsCheckDirSyncErr(t, err, s, c.id)
			s.FailDirSync(nil)

			// The outcome the error left open: the new record is in place,
			// at a larger revision.
			got, rev, err := s.Load(ctx, c.id)
			if err != nil {
				t.Fatalf("load after the failed sync: %v", err)
			}
			if !reflect.DeepEqual(got, recAt(2)) || rev <= prev {
				t.Fatalf("load after the failed sync = position %d at revision %d, want the new record (2) above revision %d",
					got.Position, rev, prev)
			}
			// Compare-and-swap goes on from there: the revision the failed
			// save started from is stale, the loaded one is current.
			if _, err := s.Save(ctx, c.id, recAt(3), prev); !errors.Is(err, checkpoint.ErrConflict) {
				t.Fatalf("save from the revision before the failed one: %v, want ErrConflict", err)
			}
			next, err := s.Save(ctx, c.id, recAt(3), rev)
			if err != nil || next <= rev {
				t.Fatalf("save from the loaded revision %d: %d, %v", rev, next, err)
			}
		})
	}
}

// dsRun is one durable worker's run: the batches it was handed.
type dsRun struct {
	mu      sync.Mutex
	batches [][]uint64
}

func (r *dsRun) add(b []engine.Entry) {
	seqs := make([]uint64, len(b))
	for i, e := range b {
		seqs[i] = e.Seq
	}
	r.mu.Lock()
	r.batches = append(r.batches, seqs)
	r.mu.Unlock()
}

func (r *dsRun) all() (batches [][]uint64, flat []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.batches {
		flat = append(flat, b...)
	}
	return slices.Clone(r.batches), flat
}

// dsJoin waits for w to exit; a worker that does not is a failure, not a
// hang.
func dsJoin(t testing.TB, w *delivery.Worker) error {
	t.Helper()
	select {
	case <-w.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not exit within 30s")
	}
	return w.Join()
}

// Catalogue: CKP-13 (file store, directory sync failing after the rename).
// Unlike a save that fails before the rename, the record then holds the
// handled batch's position: the worker stops with ErrCheckpointWriteFailed
// and ErrCheckpointIO, and a new worker on the same id resumes after that
// batch, neither redelivering it nor skipping anything.
func TestCKP13_DirSyncFailureAfterRename(t *testing.T) {
	const id = "ckp13-dirsync"
	dir := t.TempDir()
	j, err := journal.Open(filepath.Join(dir, "journal"), journal.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := j.Close(); err != nil {
			t.Errorf("close journal: %v", err)
		}
	})
	region := engine.RegionEntity("dirsync")
	var seqs []uint64 // the matching events, in order
	for i := range 6 {
		// A non-matching event between the matching ones: resuming must
		// step over it, not mistake it for a skip.
		for _, entity := range []string{"other:x", "dirsync:a"} {
			r, err := j.Append(context.Background(), engine.Event{
				Coordinate: engine.MustCoordinate(entity, "s"), Kind: engine.KindData, Payload: []byte{byte(i)},
			})
			if err != nil {
				t.Fatal(err)
			}
			if entity == "dirsync:a" {
				seqs = append(seqs, r.Seq)
			}
		}
	}
	ckDir := filepath.Join(dir, "ckpt")
	store := checkpoint.NewFileStore(ckDir)
	config := func(s checkpoint.Store, worker string) delivery.WorkerConfig {
		cfg := delivery.DefaultWorkerConfig()
		cfg.BatchSize = 2
		cfg.CheckpointID = id
		cfg.Checkpoints = s
		cfg.WorkerID = worker
		return cfg
	}

	// Run 1: the first batch saves; the handler of the second arms the
	// fault, so that batch's save renames the record into place and then
	// fails to sync the directory.
	var run1 dsRun
	var hookErrs []error
	cfg := config(store, "w1")
	cfg.OnCheckpointFailure = func(gotID string, err error) {
		if gotID != id {
			t.Errorf("OnCheckpointFailure id %q, want %q", gotID, id)
		}
		hookErrs = append(hookErrs, err) // the worker goroutine; read after Join
	}
	w1, err := delivery.StartWorker(t.Context(), j, region, cfg, func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
		run1.add(b)
		if b[0].Seq == seqs[2] {
			store.FailDirSync(errDirSync) // the worker's goroutine, as its save
		}
		if b[len(b)-1].Seq >= seqs[len(seqs)-1] {
			return delivery.Stop // only if the failed save did not stop it
		}
		return delivery.Continue
	})
	if err != nil {
		t.Fatal(err)
	}
	err = dsJoin(t, w1)
	for _, want := range []error{delivery.ErrCheckpointWriteFailed, checkpoint.ErrIO, errDirSync} {
		if !errors.Is(err, want) {
			t.Fatalf("first worker Join = %v, want one matching %v", err, want)
		}
	}
	if errors.Is(err, checkpoint.ErrConflict) {
		t.Fatalf("first worker Join = %v, also a conflict", err)
	}
	var we *delivery.CheckpointWriteError
	if !errors.As(err, &we) || we.ID != id {
		t.Fatalf("first worker Join = %v, want a *CheckpointWriteError for %q", err, id)
	}
	if len(hookErrs) != 1 {
		t.Fatalf("OnCheckpointFailure called %d times, want 1", len(hookErrs))
	}
	dsCheckDirSyncErr(t, hookErrs[0], store, id)
	batches, _ := run1.all()
	if want := [][]uint64{seqs[0:2], seqs[2:4]}; !reflect.DeepEqual(batches, want) {
		t.Fatalf("first worker got batches %v, want %v", batches, want)
	}
	// The save failed, so the worker did not commit the batch in memory
	// (§9.4) ...
	if st := w1.Stats(); st.Committed != seqs[1] || !st.CommittedStarted || st.Saves != 1 || st.SaveFailures != 1 {
		t.Fatalf("first worker stats %+v, want committed %d, 1 save, 1 failure", st, seqs[1])
	}
	// ... but its record is on disk: the outcome the error left open.
	rec, rev, err := checkpoint.NewFileStore(ckDir).Load(t.Context(), id)
	if err != nil || rec.Position != seqs[3] || !rec.Started || rec.Owner != "w1" || rev != 2 {
		t.Fatalf("record after the failed sync: %+v at revision %d, %v; want position %d at revision 2", rec, rev, err, seqs[3])
	}

	// Run 2: a new worker (a fresh store on the same directory, no fault)
	// resumes after the batch whose save failed to sync.
	var run2 dsRun
	last := seqs[len(seqs)-1]
	w2, err := delivery.StartWorker(t.Context(), j, region, config(checkpoint.NewFileStore(ckDir), "w2"),
		func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
			run2.add(b)
			if b[len(b)-1].Seq >= last {
				return delivery.Stop
			}
			return delivery.Continue
		})
	if err != nil {
		t.Fatal(err)
	}
	if err := dsJoin(t, w2); err != nil {
		t.Fatalf("second worker Join = %v", err)
	}
	if _, got := run2.all(); !reflect.DeepEqual(got, seqs[4:]) {
		t.Fatalf("second worker got %v, want exactly %v (no redelivery of %v, nothing skipped)", got, seqs[4:], seqs[2:4])
	}
	rec, rev, err = checkpoint.NewFileStore(ckDir).Load(t.Context(), id)
	if err != nil || rec.Position != last || rec.Owner != "w2" || rev != 3 {
		t.Fatalf("final record %+v at revision %d, %v; want position %d at revision 3", rec, rev, err, last)
	}
}
