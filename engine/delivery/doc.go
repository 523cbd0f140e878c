// Package delivery hands the events of a region to application code, in
// order, at least once: the pull Cursor and the supervised cursor Worker
// written once against the Source interface so they run
// identically on a local journal (*journal.Store) and over NATS
// (*fleet.Client).
//
// # The worker loop
//
// A worker resumes from its checkpoint (checkpoint.Load: every load rule,
// before the handler runs), then loops: poll up to BatchSize entries
// after its position; when none match, park until the source's epoch
// moves (edge-triggered; the snapshot is read before the poll, so no
// wake-up is lost) or IdleTimeout passes; else call the handler, then
// apply its Action: Continue and Stop commit the batch's last position
// with compare-and-swap, StopWithRollback does not. A handler panic
// redelivers the batch from the committed position, as long as the
// RestartPolicy allows. Transient source errors are retried with backoff
// (IdleTimeout doubling to 1 s) without touching the budget.
//
// # Guarantees
//
//   - At least once: every matching visible event reaches the handler
//     (again after a failure, at most the batch that was not committed).
//   - Strictly ascending seqs within and across batches; gaps explained
//     by cancelled ranges reach the handler as GapObservations.
//   - A checkpoint is saved only after its batch was handled, never moves
//     back, and a save that conflicts stops the worker.
//
// # Concurrency
//
// A Worker owns one goroutine; Stop is idempotent and interrupts a park
// or backoff at once, while a handler in flight always completes and its
// action (the save included) is applied; Join waits for the end and
// returns the first recorded error. A Cursor is not safe for concurrent
// use; cursors share nothing.
package delivery
