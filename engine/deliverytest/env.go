package deliverytest

import (
	"context"
	"testing"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/checkpointtest"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
)

// Env is one backend a scenario runs against.
type Env struct {
	// Source is what workers and cursors pull from.
	Source delivery.Source
	// Store is the journal behind Source (the writer's store for remote
	// sources): scenarios append through it and use its fences.
	Store *journal.Store
	// Checkpoints is the checkpoint store durable workers commit to.
	Checkpoints checkpoint.Store
	// Parked is the parked-set store of workers that park (PSN cases).
	Parked checkpoint.ParkStore
	// PlantRecord stores raw record bytes (an encoded record, or garbage)
	// as the current record of id, as a new revision.
	PlantRecord func(t testing.TB, id string, record []byte)
	// BreakRecord makes the next save of id fail with an I/O error (for
	// the file store: a directory at the record's path); it returns a
	// function that repairs it. Nil when the backend cannot do it.
	BreakRecord func(t testing.TB, id string) (repair func())
	// Faults wraps Checkpoints (it is the same store) to inject
	// transient failures and lost replies into loads and saves.
	Faults *checkpointtest.Faulty
	// Reopen closes and reopens the journal (a writer restart) and returns
	// the fresh Env sharing the same checkpoint store. Nil when the
	// backend cannot restart.
	Reopen func(t testing.TB) Env
}

// NewEnv builds a fresh Env for one test.
type NewEnv func(t testing.TB) Env

// Append appends events through env.Store and fails the test on error.
func (env Env) Append(t testing.TB, events ...engine.Event) []engine.Receipt {
	t.Helper()
	rs, err := env.Store.AppendBatch(context.Background(), events)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return rs
}
