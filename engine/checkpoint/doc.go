// Package checkpoint holds durable consumer positions: the Record (a
// position bound to a region identity and a journal id) and its
// MessagePack codec, the checkpoint id rules (ValidateID),
// the Store interface with compare-and-swap saves, the memory
// and file stores, and the load rules as one function, Load,
// that workers, cursors and the status command all use.
//
// # Guarantees
//
//   - A save is conditioned on the revision its caller last saw: two
//     savers can never both move one checkpoint (ErrConflict), and none
//     can move it back.
//   - A record never resumes a consumer of another region, of another or
//     re-created journal, or past the journal's visible bound: Load fails
//     closed (ErrRegionMismatch, ErrJournalMismatch, ErrAhead), and an
//     undecodable record is ErrCorrupt, never a silent rewind to 0.
//   - ErrIO leaves the outcome of a save unknown (the previous record or
//     the new one is stored); both are safe, as a record only ever holds
//     the position of a handled batch.
//
// # Concurrency
//
// Stores are safe for concurrent use; the file store's compare-and-swap
// holds across processes (an flock per record). kvckpt provides the
// JetStream KV store; checkpointtest the conformance suite every store
// passes.
package checkpoint
