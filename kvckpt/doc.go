// Package kvckpt stores batfleet checkpoints in a NATS JetStream KV bucket
// with compare-and-swap, implementing checkpoint.Store, so a worker
// on any node commits its position to the NATS deployment and no two
// workers can both move one checkpoint.
//
// # Layout
//
// Bucket: "batfleet_checkpoints" by default, file storage, at least 8
// revisions of history, no TTL, replicas from Config (3 in a cluster).
// Key: "<journal>.<encoded checkpoint id>". An id made only of
// [A-Za-z0-9_-] is written verbatim; any other id is written as "=" and
// the unpadded base64url of its bytes ("=" never occurs in a valid id, and
// base64url uses only KV-legal characters), so the mapping is injective,
// reversible and total over valid ids. Value: the checkpoint record bytes
// of the record format. The record's revision is the KV revision.
//
// # Compare-and-swap
//
// A first save (expected revision 0) is kv.Create, which fails if the key
// holds a value; every later save is kv.Update against the revision read
// at load or returned by the previous save. Conflicts are recognised with
// errors.Is(err, jetstream.ErrKeyExists) and
// errors.Is(err, jetstream.ErrKeyRevisionMismatch) — never by code or
// text, as replicated buckets report another code — and returned as
// checkpoint.ErrConflict.
//
// # Deleted keys
//
// A deleted or purged key loads as "not found": a worker started on it
// begins from the start of the journal and its first save creates the key
// again. A worker that was running while the key was deleted holds a stale
// revision: its next save conflicts and it stops. Deleting a key is thus
// the deliberate way to reset a checkpoint, and never moves a running
// worker backwards.
//
// # Durability
//
// A save returns once the JetStream ack arrives: the write is on the
// servers' disks (for R3, on a quorum) but an R1 file bucket fsyncs only
// at the server's sync interval. A process crash never loses an
// acknowledged save; an OS crash of the only server may roll one back,
// which means redelivery, never a skip.
//
// # Timeouts
//
// Every call takes a context and is bounded by Config.Timeout (default
// 5 s) or the context's deadline, whichever comes first; a nil context is
// context.Background() (bounded by Config.Timeout alone). A disconnected
// server surfaces as checkpoint.ErrIO, never a hang. A Store is safe for
// concurrent use.
//
// Save publishes only while the client is connected: during an outage it
// waits for the reconnect (within its timeout) instead of leaving the save
// in nats.go's reconnect buffer, where it could fail at its deadline and
// still be applied afterwards; a save that was never sent fails with
// checkpoint.ErrIO and leaves the record intact. A save whose request
// times out while connected is still ambiguous, as any timeout is: it may
// have been applied. Compare-and-swap keeps that safe — it lands only on
// the revision its worker last saw, and records a position the worker had
// handled — and the worker stops on the error either way.
package kvckpt
