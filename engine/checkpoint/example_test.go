package checkpoint_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
)

// Load applies every load rule: a record saved for one region never
// resumes a consumer of another, and a new checkpoint starts from the
// beginning.
func ExampleLoad() {
	ctx := context.Background()
	store := checkpoint.NewMemoryStore()
	journalID := engine.NewID128()
	source := func(context.Context) (engine.SourceInfo, error) {
		return engine.SourceInfo{JournalID: journalID, Visible: 100}, nil
	}
	orders := engine.RegionEntity("order")

	start, _ := checkpoint.Load(ctx, store, "mailer", orders, source)
	fmt.Println("new checkpoint:", start.Position, start.Started, start.Revision)

	ident := orders.Identity()
	if _, err := store.Save(ctx, "mailer", checkpoint.Record{Position: 41, Started: true, RegionIdentity: &ident, JournalID: journalID.String()}, start.Revision); err != nil {
		panic(err)
	}
	start, _ = checkpoint.Load(ctx, store, "mailer", orders, source)
	fmt.Println("resume after:", start.Position, start.Started)

	_, err := checkpoint.Load(ctx, store, "mailer", engine.RegionEntity("user"), source)
	fmt.Println("another region:", errors.Is(err, checkpoint.ErrRegionMismatch))
	// Output:
	// new checkpoint: 0 false 0
	// resume after: 41 true
	// another region: true
}
