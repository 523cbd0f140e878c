package kvckpt

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine/checkpoint"
)

// JetStream API errors that a server or cluster answers while it cannot
// serve a request for now (a restart, a leader election, a node loss). No
// nats.go sentinel names them; jetstream.APIError's Is matches on the
// error code, so these values are matched with errors.Is like the others.
var (
	errClusterNotAvailable = &jetstream.APIError{ErrorCode: 10008} // JetStream system temporarily unavailable
	errClusterNotLeader    = &jetstream.APIError{ErrorCode: 10009} // JetStream cluster can not handle request
	errNoSuitablePeers     = &jetstream.APIError{ErrorCode: 10005} // no suitable peers for placement (nodes still joining)
	errStreamOffline       = &jetstream.APIError{ErrorCode: 10118} // stream is offline
	errLastSeqNotReady     = &jetstream.APIError{ErrorCode: 10163} // expected last sequence per subject temporarily unavailable
)

// transientErrors are the failures that say "not now": a timeout, no
// responder (no server, or a stream without a leader yet), a connection
// that is down or being re-established, a cluster that is not ready. A
// request that failed this way may be retried; a save that failed this
// way may also have landed (its reply was lost), which the caller
// reconciles by reading the key. Everything else (a conflict, a closed
// connection, a bucket that does not exist) is not retried.
var transientErrors = []error{
	context.DeadlineExceeded,
	nats.ErrTimeout,
	nats.ErrNoResponders,
	nats.ErrDisconnected,
	nats.ErrConnectionReconnecting,
	nats.ErrStaleConnection,
	jetstream.ErrNoStreamResponse,
	jetstream.ErrServerShutdown,
	errClusterNotAvailable,
	errClusterNotLeader,
	errNoSuitablePeers,
	errStreamOffline,
	errLastSeqNotReady,
}

// Transient reports whether err is a failure of the checkpoint store that
// may pass by itself (see transientErrors). It matches with errors.Is,
// never by text or by number outside the list above.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	for _, t := range transientErrors {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// ioError wraps a failed store call at location: a transient failure
// matches checkpoint.ErrUnavailable (and checkpoint.ErrIO), any other
// checkpoint.ErrIO.
func ioError(location string, err error) error {
	if Transient(err) {
		return fmt.Errorf("%w: %s: %w", checkpoint.ErrUnavailable, location, err)
	}
	return fmt.Errorf("%w: %s: %w", checkpoint.ErrIO, location, err)
}
