package workerapp

import (
	"errors"
	"fmt"
	"time"
)

// ExitTimeout is the exit code of `worker wait` when its --timeout passed
// before the checkpoint (or group) committed through the seq.
const ExitTimeout = 4

// ErrWaitTimeout: `worker wait` gave up at its --timeout (exit ExitTimeout).
var ErrWaitTimeout = errors.New("timed out")

// WaitTimeoutError reports a `worker wait` that timed out; it matches
// ErrWaitTimeout.
type WaitTimeoutError struct {
	What    string        // "checkpoint ID" or "group NAME"
	Through uint64        // the seq waited for
	Timeout time.Duration // --timeout
	Where   string        // where it stands, when known ("" otherwise)
}

func (e *WaitTimeoutError) Error() string {
	msg := fmt.Sprintf("timed out after %s: %s has not committed through seq %d", e.Timeout, e.What, e.Through)
	if e.Where != "" {
		msg += " (" + e.Where + ")"
	}
	return msg
}

func (e *WaitTimeoutError) Is(target error) bool { return target == ErrWaitTimeout }

// NotParkedError reports a `worker parked replay|drop` of an entity that
// is not parked.
type NotParkedError struct {
	Entity string
	In     string // "checkpoint ID", or "group NAME (partition P, checkpoint ID)"
}

func (e *NotParkedError) Error() string {
	return fmt.Sprintf("entity %s is not parked in %s", e.Entity, e.In)
}

// MissingBucketError reports a KV bucket that a read-only command (status,
// group ls|describe, wait, parked) needs and that does not exist: such
// commands create nothing. It matches jetstream.ErrBucketNotFound.
type MissingBucketError struct {
	What    string // "checkpoint bucket", "groups bucket"
	Bucket  string
	Flag    string // the flag that names it: "--bucket", "--group-bucket"
	Default bool   // Bucket is the flag's default
	Err     error
}

func (e *MissingBucketError) Error() string {
	if e.Default {
		return fmt.Sprintf("%s %q does not exist: no worker has used it on this NATS deployment yet (read-only commands create nothing; give %s if yours has another name)",
			e.What, e.Bucket, e.Flag)
	}
	return fmt.Sprintf("%s %q does not exist (is %s %s right? read-only commands create nothing)", e.What, e.Bucket, e.Flag, e.Bucket)
}

func (e *MissingBucketError) Unwrap() error { return e.Err }

// HeldError reports a worker stopped by a lost compare-and-swap of its
// checkpoint: another worker moved it (or it was reset). Owner and
// LastCommit say who holds it, from the record read back. It matches
// what it wraps (checkpoint.ErrConflict).
type HeldError struct {
	Checkpoint string
	Owner      string        // the record's owner ("" when unknown)
	LastCommit time.Duration // how long ago the owner committed (with Owner)
	Reset      bool          // the record was deleted: the checkpoint was reset
	Err        error
}

func (e *HeldError) Error() string {
	switch {
	case e.Reset:
		return fmt.Sprintf("checkpoint %s was reset (its record was deleted) while this worker ran; start it again to begin from the start", e.Checkpoint)
	case e.Owner != "":
		return fmt.Sprintf("checkpoint %s is held by worker %s (last commit %s ago): one checkpoint has one worker at a time; give each worker its own --checkpoint, or share a region with --group",
			e.Checkpoint, e.Owner, roundAge(e.LastCommit))
	}
	return fmt.Sprintf("checkpoint %s was moved by another worker: one checkpoint has one worker at a time; give each worker its own --checkpoint, or share a region with --group", e.Checkpoint)
}

func (e *HeldError) Unwrap() error { return e.Err }

// roundAge rounds an age for people: tenths of a second below 10 s,
// whole seconds above.
func roundAge(d time.Duration) time.Duration {
	switch {
	case d < 0:
		return 0
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

// NoWriterError reports that no writer serves the journal (nothing
// answers its subjects) and the worker gave up waiting (--wait-writer).
type NoWriterError struct {
	Journal string
	Waited  time.Duration // --wait-writer
}

func (e *NoWriterError) Error() string {
	return fmt.Sprintf("no writer serves journal %q (nothing answers on its subjects); gave up after --wait-writer %s (is --journal right?)", e.Journal, e.Waited)
}
