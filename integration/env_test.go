package integration

import (
	"context"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/checkpointtest"
	"github.com/batfleet/batfleet/engine/deliverytest"
)

// TestWorkerScenariosFleet runs the shared worker scenarios (SPEC §13) on
// the fleet backend: workers pull through a fleet.Client over loopback TCP
// from a fleet.Writer, and durable ones commit to kvckpt on the same
// embedded server. This is where the † cases (CKP-03/04/07/10/11/14/16,
// WRK-03/04/05/07/08, GAP-10) run over the network with the KV checkpoint
// store; fleet_cases_test.go has the † cases that only a fleet has
// (VIS-15, WRK-16, WRK-18), e2e_test.go has WRK-17.
func TestWorkerScenariosFleet(t *testing.T) {
	deliverytest.RunWorkerScenarios(t, fleetEnv)
}

// fleetEnv is an deliverytest.NewEnv: a fresh server, journal, writer,
// client and KV checkpoint store per call, all closed when t ends.
func fleetEnv(t testing.TB) deliverytest.Env {
	t.Helper()
	return newRig(t).env()
}

// env describes the rig's current writer incarnation as an Env.
//
//   - Source: the fleet.Client (remote pulls, epoch-message parking);
//   - Store: the writer's local journal (scenarios append and fence there);
//   - Checkpoints and Faults: the kvckpt.Store, wrapped to inject
//     transient failures and lost replies (one wrapper per rig);
//   - PlantRecord: a raw kv.Put of the bytes under the store's key for id
//     (a new revision, bypassing compare-and-swap);
//   - BreakRecord: the KV stream's max message size drops to 1 byte, so
//     the JetStream server rejects every write to the bucket (reads still
//     work) and a save fails as checkpoint.ErrIO, never as a
//     conflict; repair restores the limit. It breaks the whole bucket,
//     which is fine for a scenario with one durable worker;
//   - Reopen: a clean writer restart on the same directory (a new
//     incarnation) and connection; client and KV store stay.
func (r *rig) env() deliverytest.Env {
	r.mu.Lock()
	if r.faults == nil {
		r.faults = checkpointtest.NewFaulty(r.Checkpoints)
	}
	faults := r.faults
	r.mu.Unlock()
	return deliverytest.Env{
		Source:      r.Client,
		Store:       r.Store(),
		Checkpoints: faults,
		Parked:      r.Parked,
		Faults:      faults,
		PlantRecord: r.plantRecord,
		BreakRecord: r.breakRecord,
		Reopen: func(t testing.TB) deliverytest.Env {
			t.Helper()
			r.restartWriter(t)
			return r.env()
		},
	}
}

// plantRecord stores record as the current value of id's key.
func (r *rig) plantRecord(t testing.TB, id string, record []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.KV.Put(ctx, r.Checkpoints.Key(id), record); err != nil {
		t.Fatalf("plant record %q: %v", id, err)
	}
}

// breakRecord makes every write to the checkpoint bucket fail at the
// server (max message size 1 byte) until the returned repair runs.
func (r *rig) breakRecord(t testing.TB, id string) (repair func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := r.JS.Stream(ctx, "KV_"+r.Checkpoints.Bucket())
	if err != nil {
		t.Fatalf("break record %q: checkpoint stream: %v", id, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatalf("break record %q: stream info: %v", id, err)
	}
	cfg := info.Config
	old := cfg.MaxMsgSize
	cfg.MaxMsgSize = 1
	if _, err := r.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("break record %q: update stream: %v", id, err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cfg.MaxMsgSize = old
		if _, err := r.JS.UpdateStream(ctx, cfg); err != nil {
			t.Errorf("repair record %q: update stream: %v", id, err)
		}
	}
}

// TestFleetBreakRecordIsIO checks the BreakRecord mechanism itself: while
// the bucket is broken a save fails with ErrIO (not a conflict)
// and the stored record is intact; after repair saves work again.
func TestFleetBreakRecordIsIO(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	ident := engine.RegionEntity("entity:break").Identity()
	rec := checkpoint.Record{Position: 3, Started: true, RegionIdentity: &ident, Owner: "t"}
	rev, err := r.Checkpoints.Save(ctx, "break", rec, 0)
	if err != nil {
		t.Fatalf("first save: %v", err)
	}
	repair := r.breakRecord(t, "break")
	rec2 := rec
	rec2.Position = 9
	_, err = r.Checkpoints.Save(ctx, "break", rec2, rev)
	wantErrIs(t, "save on a broken bucket", err, checkpoint.ErrIO)
	wantNotErrIs(t, "save on a broken bucket", err, checkpoint.ErrConflict)
	if got, _ := loadCheckpoint(t, r.Checkpoints, "break"); got.Position != 3 {
		t.Fatalf("record after a failed save at %d, want 3", got.Position)
	}
	repair()
	if _, err := r.Checkpoints.Save(ctx, "break", rec2, rev); err != nil {
		t.Fatalf("save after repair: %v", err)
	}
	if got, _ := loadCheckpoint(t, r.Checkpoints, "break"); got.Position != 9 {
		t.Fatalf("record after repair at %d, want 9", got.Position)
	}
}
