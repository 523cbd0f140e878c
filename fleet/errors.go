package fleet

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/batfleet/batfleet/engine/delivery"
)

// Sentinels for the writer's error replies (micro error codes).
var (
	// ErrBadRequest (400): malformed or invalid request; the description
	// names the field and the rule.
	ErrBadRequest = errors.New("fleet: bad request")
	// ErrUnknownJournal (404): the writer does not serve that journal.
	ErrUnknownJournal = errors.New("fleet: unknown journal")
	// ErrTooLarge (413): a request or batch over a limit.
	ErrTooLarge = errors.New("fleet: request too large")
	// ErrUnavailable (503): the writer is closing, not ready, or busy; no
	// writer answered. Matches delivery.ErrTransient: retry.
	ErrUnavailable = errors.New("fleet: writer unavailable")
	// ErrRemote (500): anything else went wrong at the writer.
	ErrRemote = errors.New("fleet: writer error")

	// ErrGroupMismatch: a consumer group exists with another region or
	// partition count than this member's (see GroupMismatchError).
	ErrGroupMismatch = errors.New("fleet: group mismatch")
	// ErrGroupCorrupt: a consumer group's record does not decode; the
	// member fails closed, naming the key.
	ErrGroupCorrupt = errors.New("fleet: group record corrupt")
)

// GroupMismatchError reports a member whose region or partition count
// differs from its group's. It matches ErrGroupMismatch.
type GroupMismatchError struct {
	Group, Key                   string
	StoredRegion, Region         string
	StoredPartitions, Partitions int
}

func (e *GroupMismatchError) Error() string {
	return fmt.Sprintf("%v: group %q (%s) has region %s over %d partitions; this member asks for %s over %d",
		ErrGroupMismatch, e.Group, e.Key, e.StoredRegion, e.StoredPartitions, e.Region, e.Partitions)
}

func (e *GroupMismatchError) Unwrap() error { return ErrGroupMismatch }

// RemoteError is an error reply from the writer. It matches the sentinel
// of its code (and ErrUnavailable also matches delivery.ErrTransient).
type RemoteError struct {
	Code        int
	Description string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("%v (%d): %s", e.sentinel(), e.Code, e.Description)
}

func (e *RemoteError) sentinel() error {
	switch e.Code {
	case 400:
		return ErrBadRequest
	case 404:
		return ErrUnknownJournal
	case 413:
		return ErrTooLarge
	case 503:
		return ErrUnavailable
	default:
		return ErrRemote
	}
}

func (e *RemoteError) Unwrap() []error {
	if e.Code == 503 {
		return []error{ErrUnavailable, delivery.ErrTransient}
	}
	return []error{e.sentinel()}
}

func remoteError(code, description string) *RemoteError {
	c, err := strconv.Atoi(code)
	if err != nil {
		c = 500
	}
	return &RemoteError{Code: c, Description: description}
}

// ErrPermission: the NATS server refused the connection permission to
// publish to a subject a call needed, or to subscribe to a subject it
// needed (its reply inbox, say). See PermissionError.
var ErrPermission = errors.New("fleet: NATS permission refused")

// PermissionError is a publish or subscription that the NATS server
// refused under the connection's permissions. It matches ErrPermission
// and nats.ErrPermissionViolation.
//
// NATS reports such a refusal apart from the call that caused it (an
// asynchronous -ERR; the request itself would just wait for its timeout).
// On a connection with RefusalHandler the calls a refusal dooms end with
// it at once; elsewhere a call that timed out is explained by the refusal
// the connection saw last (Refusal): a request whose publish was refused
// can never be answered.
type PermissionError struct {
	Op      string // "publish" or "subscribe"
	Subject string // the refused subject
	User    string // the connection's user name or nkey ("" when neither is known)
	Err     error  // the refusal as nats.go reported it
}

func (e *PermissionError) Error() string {
	op := "publish to"
	if e.Op == "subscribe" {
		op = "subscribe to"
	}
	msg := fmt.Sprintf("NATS refused permission to %s %q", op, e.Subject)
	if e.User != "" {
		msg += fmt.Sprintf(" for user %q", e.User)
	}
	return msg
}

func (e *PermissionError) Unwrap() []error { return []error{ErrPermission, e.Err} }
