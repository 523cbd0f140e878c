package journal_test

import (
	"context"
	"fmt"
	"os"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/journal"
)

// Open a journal, append events, and poll a region of it.
func Example() {
	dir, err := os.MkdirTemp("", "journal-example-")
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
	// One event; then a batch, which becomes visible all at once. Each
	// receipt comes back once its events are durable.
	if _, err := store.Append(ctx, engine.Event{Coordinate: engine.MustCoordinate("order:1", "shop"), Kind: engine.KindData, Payload: []byte("created")}); err != nil {
		panic(err)
	}
	receipts, err := store.AppendBatch(ctx, []engine.Event{
		{Coordinate: engine.MustCoordinate("order:1", "shop"), Kind: engine.KindData, Payload: []byte("paid")},
		{Coordinate: engine.MustCoordinate("user:7", "shop"), Kind: engine.KindData, Payload: []byte("signed up")},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("batch at seqs", receipts[0].Seq, receipts[1].Seq)

	// The events of order:1, from the beginning (seq 0 is the journal's
	// own OPEN_COMPLETED event, outside this region).
	res, err := store.Poll(ctx, engine.RegionEntity("order:1"), 0, false, 10)
	if err != nil {
		panic(err)
	}
	for _, e := range res.Entries {
		fmt.Println(e.Seq, e.Coordinate, e.Clock, string(e.Payload))
	}
	// Output:
	// batch at seqs 2 3
	// 1 order:1@shop 0 created
	// 2 order:1@shop 1 paid
}
