package delivery

import (
	"context"
	"fmt"

	"github.com/batfleet/batfleet/engine"
)

// Action is what a handler asks the worker to do after a batch.
type Action int

const (
	// Continue saves the post-batch position (durable workers) and goes on.
	Continue Action = iota
	// Stop saves the post-batch position (durable workers) and stops.
	Stop
	// StopWithRollback stops without saving; the batch will be delivered
	// again to the next worker on this checkpoint.
	StopWithRollback
	// Failed is declared in failure.go.
)

func (a Action) String() string {
	switch a {
	case Continue:
		return "continue"
	case Stop:
		return "stop"
	case StopWithRollback:
		return "stop-with-rollback"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Delivery is the context of one batch.
type Delivery struct {
	// Witness is non-nil iff the worker is durable.
	Witness *AtLeastOnce
	// Gaps are the gap observations of this batch (recomputed on
	// redelivery).
	Gaps []GapObservation
	// Group, Partition and Epoch are set for a consumer group's member:
	// the group's name, the partition this batch belongs to, and the owner
	// epoch under which this member holds it — a fencing token for the
	// handler's own sinks (a write tagged with a lower epoch than one
	// already seen for the partition comes from a former owner).
	Group     string
	Partition engine.Partition
	Epoch     uint64
	// Attempt is 1 on an entry's first delivery and counts the retries of
	// the batch's first entry after failures.
	Attempt int
	// Replay is set when the batch is a parked entity's entries handed
	// back by `worker parked replay` (they are older than entries of other
	// entities the handler has seen).
	Replay bool

	failure error // set by Fail
}

// EffectKey returns the stable effect key of entry e of this batch.
func (d *Delivery) EffectKey(e engine.Entry) EffectKey { return DeriveEffectKey(d.Witness, e) }

// Handler handles one batch of 1..BatchSize entries. It reports a failure
// by returning d.Fail(err) (naming the failing entry with d.FailAt or an
// *EntryError) or by panicking; failures are retried under the worker's
// RetryPolicy, then parked or handed to the restart policy. Its ctx is not cancelled by Stop: an
// in-flight batch always completes. Handlers must be idempotent.
type Handler func(ctx context.Context, batch []engine.Entry, d *Delivery) Action
