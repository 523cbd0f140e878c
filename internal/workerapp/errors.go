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
