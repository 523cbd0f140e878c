// Package engine is batfleet's data model: what every other package
// speaks, with no I/O.
//
//   - Coordinate (entity@scope), Kind (category << 12 | type id), Event
//     (what is appended), Entry (what is delivered: seq, id, kind,
//     coordinate, per-entity clock, wall time, payload) and Receipt.
//   - Region, the predicate of pulls, cursors and workers (entity prefix,
//     scope, kind filter, clock range), its persisted Identity, and the
//     text syntax of the command line (ParseRegion, Region.Spec).
//   - Range (half-open sequence ranges, such as cancelled ones), ID128
//     (journal and incarnation ids), Snapshot (a writer's visibility
//     epoch), SourceInfo and PollResult (what a source answers).
//   - The validation rules (entities, scopes, kinds, regions,
//     journal names), each a sentinel error that errors.Is matches.
//
// Values are immutable and safe to share between goroutines. A
// non-zero Coordinate is always valid: NewCoordinate (or decoding) is the
// only way to build one.
//
// The packages built on it: engine/journal (the durable journal),
// engine/checkpoint (checkpoint records and stores), engine/delivery
// (cursors and supervised workers), kvckpt (checkpoints in JetStream KV)
// and fleet (the journal served over NATS).
package engine
