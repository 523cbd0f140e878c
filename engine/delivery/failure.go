package delivery

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/batfleet/batfleet/engine"
)

// Handler failures.
//
// A handler fails by returning d.Fail(err) (or Failed after recording
// nothing), optionally naming the failing entry with an *EntryError, or by
// panicking. A failed batch is retried with backoff (RetryPolicy), and the
// retries are narrowed to the failing entry:
//
//   - a named entry: the entries before it were handled, so they are
//     committed first; the batch is then delivered again from that entry;
//   - no entry named: the batch is bisected (handlers are idempotent by
//     contract): its first half is delivered alone, then, after a success,
//     the rest; a failing half is halved again, until one entry is left.
//     Bisection steps are immediate; a batch of 64 with one bad entry is
//     narrowed in at most 6 retries.
//
// An entry that fails RetryPolicy.Attempts times is exhausted: with a
// ParkStore the entry and every later entry of its entity are parked (see
// park.go) and the worker goes on; without one the restart policy decides,
// as for a panic: a restart delivers again from the committed position
// (the exhausted entry, as everything before it is committed), an
// exhausted budget stops the worker with ErrRestartBudgetExhausted.

// Failed is the action of a handler that failed; return it through
// Delivery.Fail so the worker knows why.
const Failed Action = StopWithRollback + 1

// EntryError names the entry a handler failed on: the entries before it
// in the batch were handled.
type EntryError struct {
	Seq uint64
	Err error
}

func (e *EntryError) Error() string { return fmt.Sprintf("entry %d: %v", e.Seq, e.Err) }

func (e *EntryError) Unwrap() error { return e.Err }

// Fail records err as the batch's failure and returns Failed: a handler
// returns d.Fail(err). Wrap err in an *EntryError (or use FailAt) to name
// the failing entry.
func (d *Delivery) Fail(err error) Action {
	if err == nil {
		err = errors.New("handler failed (no error given)")
	}
	d.failure = err
	return Failed
}

// FailAt records that the handler failed on the entry with seq (the
// entries before it were handled) and returns Failed.
func (d *Delivery) FailAt(seq uint64, err error) Action {
	if err == nil {
		err = errors.New("handler failed (no error given)")
	}
	return d.Fail(&EntryError{Seq: seq, Err: err})
}

// RetryPolicy is how a failed batch is retried before the restart policy
// (or parking) is consulted.
type RetryPolicy struct {
	// Attempts is how often an entry is handed to the handler before it
	// is exhausted (default 3). 1 retries nothing: without parking every
	// failure goes to the restart policy at once, as before retries
	// existed; with parking a failure is still narrowed to its entry
	// (named, or bisected), which is parked at once.
	Attempts int
	// Base is the wait before the first retry of an entry (default
	// 100 ms), doubling with every further attempt up to Max (default
	// 5 s). Each wait is drawn uniformly from [d/2, d] (jitter).
	Base, Max time.Duration
}

// DefaultRetryPolicy returns 3 attempts, 100 ms doubling to 5 s.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{Attempts: 3, Base: 100 * time.Millisecond, Max: 5 * time.Second}
}

// NoRetry hands every failure to the restart policy at once.
func NoRetry() RetryPolicy { return RetryPolicy{Attempts: 1} }

func (p RetryPolicy) validate() error {
	var errs []error
	if p.Attempts < 0 {
		errs = append(errs, &engine.ConfigError{Field: "Retry.Attempts", Rule: "must be >= 1 (0 means 3)"})
	}
	if p.Base < 0 {
		errs = append(errs, &engine.ConfigError{Field: "Retry.Base", Rule: "must be >= 0 (0 means 100ms)"})
	}
	if p.Max < 0 {
		errs = append(errs, &engine.ConfigError{Field: "Retry.Max", Rule: "must be >= 0 (0 means 5s)"})
	}
	if p.Base > 0 && p.Max > 0 && p.Max < p.Base {
		errs = append(errs, &engine.ConfigError{Field: "Retry.Max", Rule: fmt.Sprintf("must be >= Retry.Base (%s)", p.Base)})
	}
	return errors.Join(errs...)
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy()
	if p.Attempts == 0 {
		p.Attempts = d.Attempts
	}
	if p.Base == 0 {
		p.Base = d.Base
	}
	if p.Max == 0 {
		p.Max = max(d.Max, p.Base)
	}
	return p
}

// delay is the wait before attempt n+1 of an entry that failed n times.
func (p RetryPolicy) delay(n int) time.Duration {
	d := p.Base
	for i := 1; i < n && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

func (p RetryPolicy) String() string {
	return fmt.Sprintf("%d attempts, %s doubling to %s", p.Attempts, p.Base, p.Max)
}

// failure is one failed handler call.
type failure struct {
	text  string
	seq   uint64 // the named entry, when named
	named bool
	panic bool
}

// failureOf reads why a handler call failed.
func failureOf(d *Delivery, panicked bool, panicText string) failure {
	if panicked {
		return failure{text: panicText, panic: true}
	}
	f := failure{text: "handler returned Failed without an error (use Delivery.Fail)"}
	if d.failure != nil {
		f.text = d.failure.Error()
		var ee *EntryError
		if errors.As(d.failure, &ee) {
			f.seq, f.named = ee.Seq, true
		}
	}
	return f
}

// indexOf returns the index of the entry with seq in batch, or -1.
func indexOf(batch []engine.Entry, seq uint64) int {
	lo, hi := 0, len(batch)
	for lo < hi {
		m := (lo + hi) / 2
		switch {
		case batch[m].Seq == seq:
			return m
		case batch[m].Seq < seq:
			lo = m + 1
		default:
			hi = m
		}
	}
	return -1
}
