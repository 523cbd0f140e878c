package delivery

import (
	"errors"
	"fmt"
)

// Sentinel errors.
var (
	// ErrTransient: a source failure worth retrying (writer unavailable or
	// closing, no responders, timeout, connection lost). Remote sources wrap
	// such errors with it; the worker backs off and re-polls.
	ErrTransient = errors.New("delivery: transient source error")

	// ErrCheckpointWriteFailed: a worker's checkpoint save failed or
	// conflicted; the worker stopped (see CheckpointWriteError).
	ErrCheckpointWriteFailed = errors.New("delivery: checkpoint write failed")

	// ErrWorkerCrashed: a panic outside the handler (in a source, say)
	// stopped the worker.
	ErrWorkerCrashed = errors.New("delivery: worker crashed")

	// ErrRestartBudgetExhausted: the handler panicked more often than the
	// restart policy allows (see BudgetExhaustedError).
	ErrRestartBudgetExhausted = errors.New("delivery: restart budget exhausted")
)

// CheckpointWriteError reports a failed or conflicting checkpoint save by
// a worker. It matches ErrCheckpointWriteFailed and its Cause (so a
// conflict also matches ErrConflict).
type CheckpointWriteError struct {
	ID    string
	Cause error
}

func (e *CheckpointWriteError) Error() string {
	return fmt.Sprintf("%v: id %q: %v", ErrCheckpointWriteFailed, e.ID, e.Cause)
}

func (e *CheckpointWriteError) Unwrap() []error { return []error{ErrCheckpointWriteFailed, e.Cause} }

// BudgetExhaustedError reports a worker that stopped because its handler
// failed (after its retries) more often than its restart policy allows. It
// matches ErrRestartBudgetExhausted.
type BudgetExhaustedError struct {
	LastPanic   string // the last panic's text ("" if the handler never panicked)
	LastFailure string // the last failure's text: a panic's, or an error's
}

func (e *BudgetExhaustedError) Error() string {
	if e.LastFailure == "" || e.LastFailure == e.LastPanic {
		return fmt.Sprintf("%v: last panic: %s", ErrRestartBudgetExhausted, e.LastPanic)
	}
	return fmt.Sprintf("%v: last failure: %s", ErrRestartBudgetExhausted, e.LastFailure)
}

func (e *BudgetExhaustedError) Unwrap() error { return ErrRestartBudgetExhausted }

// WorkerCrashedError reports a panic outside the handler. It matches
// ErrWorkerCrashed.
type WorkerCrashedError struct {
	Panic string
}

func (e *WorkerCrashedError) Error() string {
	return fmt.Sprintf("%v: %s", ErrWorkerCrashed, e.Panic)
}

func (e *WorkerCrashedError) Unwrap() error { return ErrWorkerCrashed }
