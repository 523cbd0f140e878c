package delivery_test

import (
	"context"
	"fmt"
	"os"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
)

// A durable worker on a local journal: it hands each batch of its region
// to the handler and commits its checkpoint after each one, so a worker
// started again on the same checkpoint id resumes after the last commit.
func Example() {
	dir, err := os.MkdirTemp("", "delivery-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	store, err := journal.Open(dir, journal.Config{})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	ctx := context.Background()
	for _, p := range []string{"created", "paid", "shipped"} {
		if _, err := store.Append(ctx, engine.Event{Coordinate: engine.MustCoordinate("order:1", "shop"), Kind: engine.KindData, Payload: []byte(p)}); err != nil {
			panic(err)
		}
	}

	checkpoints := checkpoint.NewMemoryStore() // a file or KV store survives the process
	run := func(stopAfter int) {
		cfg := delivery.DefaultWorkerConfig()
		cfg.CheckpointID, cfg.Checkpoints, cfg.BatchSize = "order-mailer", checkpoints, 1
		handled := 0
		w, err := delivery.StartWorker(ctx, store, engine.RegionEntity("order"), cfg,
			func(_ context.Context, batch []engine.Entry, d *delivery.Delivery) delivery.Action {
				fmt.Printf("%s: seq %d %s\n", d.Witness.CheckpointID(), batch[0].Seq, batch[0].Payload)
				if handled++; handled == stopAfter {
					return delivery.Stop // commit this batch, then stop
				}
				return delivery.Continue
			})
		if err != nil {
			panic(err)
		}
		if err := w.Join(); err != nil {
			panic(err)
		}
	}
	run(2) // handles created and paid, then stops
	run(1) // resumes after paid
	// Output:
	// order-mailer: seq 1 created
	// order-mailer: seq 2 paid
	// order-mailer: seq 3 shipped
}
