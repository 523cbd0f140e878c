// Package fleet puts a journal on NATS.
//
// A Writer serves a *journal.Store as the NATS micro service
// "batfleet-writer" (endpoints pull, append and info on
// batfleet.<journal>.{pull,append,info}; metadata journal and journal_id)
// and publishes an epoch message on batfleet.<journal>.epoch after each
// visibility advance. A Client is the other side: appends with
// idempotency keys, info, and a delivery.Source, so delivery's cursor and
// worker run unchanged on any node, with their checkpoints in a kvckpt
// store. RunWorker does all of that for one worker, from a region in its
// text syntax, a checkpoint id and a handler.
//
// The wire protocol (MessagePack maps with snake_case keys and "v": 1,
// documented in the README) is internal to this package. Error replies
// carry the micro error headers with codes 400 (bad request, naming the
// field and the rule), 404, 413 (over a limit), 503 (closing, busy, or no
// writer) and 500; the client maps each code to an exported sentinel, and
// 503 also matches delivery.ErrTransient, which a worker retries with
// backoff.
//
// Guarantees carried over the network: replies never exceed the server's
// max payload (a pull returns fewer entries instead); an idle worker's
// pull is held by the writer and answered when a matching entry is
// visible, so appends that do not concern it cost nothing and it wakes
// with one round trip; a client that parks instead subscribes to epoch
// messages before it pulls and parks with the lost-wakeup guard (a lost
// message costs at most the idle timeout); a new writer incarnation
// always counts as newer; a retried append never duplicates.
//
// Writer, Client and their methods are safe for concurrent use.
package fleet
