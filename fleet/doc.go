// Package fleet puts an engine journal on NATS.
//
// A Writer serves an *journal.Store as the NATS micro service
// "batfleet-writer" (endpoints pull, append and info on
// batfleet.<journal>.{pull,append,info}; metadata journal and journal_id)
// and publishes an epoch message on batfleet.<journal>.epoch after each
// visibility advance. A Client is the other side: appends with
// idempotency keys, info, and an delivery.Source, so the engine's cursor and
// cursor worker run unchanged on any node; StartWorker wires a remote
// worker to a checkpoint store (kvckpt in a fleet).
//
// The wire protocol is in protocol.go: MessagePack maps with snake_case
// keys and "v": 1, encoded and decoded by hand for the hot messages
// (wire.go). Error replies carry the micro error headers with codes 400
// (bad request, naming the field and the rule), 404, 413 (over a limit),
// 503 (closing, busy, or no writer) and 500; the client maps each code to
// an exported sentinel (errors.go), and 503 also matches
// delivery.ErrTransient, which a worker retries with backoff.
//
// Guarantees carried over the network: replies never exceed the server's
// max payload (a pull returns fewer entries instead); a client subscribes
// to epoch messages before its first pull and parks with the lost-wakeup
// guard, so an idle worker wakes on the next epoch message (edge
// triggered), and a lost message costs at most the idle timeout; a new
// writer incarnation always counts as newer; a retried append never
// duplicates.
//
// Writer, Client and their methods are safe for concurrent use.
package fleet
