package fleet_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet"
)

// A whole fleet in one program: a NATS server with JetStream (embedded
// here; a cluster in production), a writer serving a journal, a producer
// appending through a client, and a durable worker that commits its
// checkpoint to a JetStream KV bucket.
func Example() {
	dir, err := os.MkdirTemp("", "batfleet-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: filepath.Join(dir, "nats"), NoLog: true, NoSigs: true,
	})
	if err != nil {
		panic(err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(5 * time.Second) {
		panic("nats-server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	// The writer: a journal on local disk, served on NATS.
	store, err := journal.Open(filepath.Join(dir, "journal"), journal.Config{MaxEntryBytes: fleet.MaxEntryBytes(nc.MaxPayload())})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	writer, err := fleet.NewWriter(nc, store, fleet.WriterConfig{Journal: "main"})
	if err != nil {
		panic(err)
	}
	defer writer.Close(context.Background())

	// A producer: each append returns once its events are durable.
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: "main"})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	ctx := context.Background()
	for i, item := range []string{"apples", "pears", "plums"} {
		ev := engine.Event{Coordinate: engine.MustCoordinate(fmt.Sprintf("order:%d", i+1), "shop"), Kind: engine.KindData, Payload: []byte(item)}
		if _, err := client.Append(ctx, []engine.Event{ev}); err != nil {
			panic(err)
		}
	}

	// A durable worker: everything it needs is in the options. This one
	// stops after three events; a long-running one stops when ctx ends.
	handled := 0
	err = fleet.RunWorker(ctx, nc, fleet.WorkerOptions{
		Region:     "entity=order,scope=shop",
		Checkpoint: "order-projector",
		Handler: func(_ context.Context, batch []engine.Entry, _ *delivery.Delivery) delivery.Action {
			for _, e := range batch {
				fmt.Println(e.Seq, e.Coordinate, string(e.Payload))
			}
			if handled += len(batch); handled == 3 {
				return delivery.Stop // commit, then stop
			}
			return delivery.Continue
		},
	})
	fmt.Println("worker:", err)
	// Output:
	// 1 order:1@shop apples
	// 2 order:2@shop pears
	// 3 order:3@shop plums
	// worker: <nil>
}
