package delivery_test

import (
	"context"
	"strings"
	"testing"

	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/checkpointtest"
	"github.com/batfleet/batfleet/engine/deliverytest"
	"github.com/batfleet/batfleet/engine/journal"
)

// scenarioCatalogue is the catalogue coverage of the worker scenario
// suite; TestScenarioCatalogue keeps it equal to WorkerScenarios().
var scenarioCatalogue = []string{
	"CK-04", "CKP-03", "CKP-04", "CKP-05", "CKP-07", "CKP-10", "CKP-11", "CKP-13", "CKP-14", "CKP-15",
	"CKP-16", "CKP-18", "WRK-01", "WRK-02", "WRK-03", "WRK-04", "WRK-05", "WRK-06", "WRK-07", "WRK-08",
	"WRK-09", "WRK-10", "WRK-11", "WRK-12", "WRK-13", "WRK-14", "WRK-15", "GAP-10", "RST-01", "RST-02",
	"RST-03", "RST-04", "RST-05", "RST-08", "RST-09", "OUT-01", "OUT-02", "OUT-03", "OUT-04", "OUT-05",
	"OUT-06", "OUT-07", "OUT-08", "PSN-01", "PSN-02", "PSN-03", "PSN-04", "PSN-05", "PSN-06",
}

func TestScenarioCatalogue(t *testing.T) {
	var got []string
	for _, sc := range deliverytest.WorkerScenarios() {
		got = append(got, sc.ID)
	}
	if strings.Join(got, " ") != strings.Join(scenarioCatalogue, " ") {
		t.Fatalf("WorkerScenarios() ids = %v, want %v", got, scenarioCatalogue)
	}
}

// TestWorkerScenariosMemory runs the worker scenarios on a local journal
// with the in-memory checkpoint store.
func TestWorkerScenariosMemory(t *testing.T) {
	deliverytest.RunWorkerScenarios(t, func(t testing.TB) deliverytest.Env {
		mem := checkpoint.NewMemoryStore()
		return scenarioLocalEnv(t, t.TempDir(), checkpointtest.NewFaulty(mem), mem)
	})
}

// TestWorkerScenariosFile runs the worker scenarios on a local journal
// with the file checkpoint store.
func TestWorkerScenariosFile(t *testing.T) {
	deliverytest.RunWorkerScenarios(t, func(t testing.TB) deliverytest.Env {
		// The file store keeps no parked sets: parking runs on a memory store.
		return scenarioLocalEnv(t, t.TempDir(), checkpointtest.NewFaulty(checkpoint.NewFileStore(t.TempDir())), checkpoint.NewMemoryStore())
	})
}

// scenarioLocalEnv opens the journal in dir and describes it as an Env over
// ck. The store is closed when the test ends (an earlier Close, as in
// WRK-10, is fine: Close is idempotent). Reopen closes it and opens the same
// directory again, keeping ck.
func scenarioLocalEnv(t testing.TB, dir string, ck *checkpointtest.Faulty, parked checkpoint.ParkStore) deliverytest.Env {
	t.Helper()
	s, err := journal.Open(dir, journal.Config{})
	if err != nil {
		t.Fatalf("open journal %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close journal %s: %v", dir, err)
		}
	})
	return deliverytest.Env{
		Source:      s,
		Store:       s,
		Checkpoints: ck,
		Parked:      parked,
		Faults:      ck,
		PlantRecord: func(t testing.TB, id string, record []byte) {
			t.Helper()
			if err := ck.Plant(context.Background(), id, record); err != nil {
				t.Fatalf("plant record %q: %v", id, err)
			}
		},
		BreakRecord: func(t testing.TB, id string) func() { return ck.Break(id) },
		Reopen: func(t testing.TB) deliverytest.Env {
			t.Helper()
			if err := s.Close(); err != nil {
				t.Fatalf("close journal for reopen: %v", err)
			}
			return scenarioLocalEnv(t, dir, ck, parked)
		},
	}
}
