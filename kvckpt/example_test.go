package kvckpt_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/kvckpt"
)

// Checkpoints of journal "orders" live under "orders.<id>": readable ids
// stay as they are, others are base64url-encoded behind "=". Saves are
// compare-and-swap: a second create of one id conflicts.
func ExampleStore_Key() {
	// An embedded JetStream server, in-process (no network).
	dir, err := os.MkdirTemp("", "kvckpt-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ns, err := server.NewServer(&server.Options{
		JetStream: true, StoreDir: dir, DontListen: true, NoLog: true, NoSigs: true,
	})
	if err != nil {
		panic(err)
	}
	ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(5 * time.Second) {
		panic("server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}

	ctx := context.Background()
	store, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: "orders"})
	if err != nil {
		panic(err)
	}
	for _, id := range []string{"billing", "witness-cursor", "a b", "名前", "x:y@z", "*"} {
		fmt.Println(store.Key(id))
	}

	ident := engine.RegionEntity("order").Identity()
	rec := checkpoint.Record{Position: 42, Started: true, RegionIdentity: &ident}
	rev, err := store.Save(ctx, "billing", rec, 0)
	fmt.Println("created at revision", rev, err)
	_, err = store.Save(ctx, "billing", rec, 0)
	fmt.Println("second create conflicts:", errors.Is(err, checkpoint.ErrConflict))
	got, rev, err := store.Load(ctx, "billing")
	fmt.Println("loaded position", got.Position, "at revision", rev, err)

	// Output:
	// orders.billing
	// orders.witness-cursor
	// orders.=YSBi
	// orders.=5ZCN5YmN
	// orders.=eDp5QHo
	// orders.=Kg
	// created at revision 1 <nil>
	// second create conflicts: true
	// loaded position 42 at revision 1 <nil>
}
