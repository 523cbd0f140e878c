// Package checkpointtest holds what tests of checkpoint stores and of
// their users share: RunConformance, the conformance suite every
// checkpoint.Store passes (catalogue CKP-17: the memory and
// file stores in engine/checkpoint, the JetStream KV store in kvckpt), and
// Faulty, a wrapper that plants records and injects faults (I/O errors,
// lost replies) into any store for tests of workers and cursors.
package checkpointtest
