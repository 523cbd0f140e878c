package kvckpt

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine/checkpoint"
)

// The classification of store errors (SPEC Decision 15): transient ones
// are retried (and a save that failed so may have landed), every other
// one is fatal. Matched with errors.Is, also when wrapped.
func TestTransientClassification(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		transient bool
	}{
		{"context deadline", context.DeadlineExceeded, true},
		{"nats timeout", nats.ErrTimeout, true},
		{"no responders", nats.ErrNoResponders, true},
		{"disconnected", nats.ErrDisconnected, true},
		{"reconnecting", nats.ErrConnectionReconnecting, true},
		{"stale connection", nats.ErrStaleConnection, true},
		{"no stream response", jetstream.ErrNoStreamResponse, true},
		{"server shutdown", jetstream.ErrServerShutdown, true},
		{"cluster not available (10008)", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{"not leader (10009)", &jetstream.APIError{Code: 500, ErrorCode: 10009}, true},
		{"no suitable peers (10005)", &jetstream.APIError{Code: 500, ErrorCode: 10005}, true},
		{"stream offline (10118)", &jetstream.APIError{Code: 500, ErrorCode: 10118}, true},
		{"last seq not ready (10163)", &jetstream.APIError{Code: 503, ErrorCode: 10163}, true},

		{"update conflict", jetstream.ErrKeyRevisionMismatch, false},
		{"create conflict", jetstream.ErrKeyExists, false},
		{"wrong last sequence (10071)", &jetstream.APIError{Code: 400, ErrorCode: 10071}, false},
		{"connection closed", nats.ErrConnectionClosed, false},
		{"bucket not found", jetstream.ErrBucketNotFound, false},
		{"caller cancelled", context.Canceled, false},
		{"key not found", jetstream.ErrKeyNotFound, false},
		{"something else", errors.New("disk on fire"), false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Transient(tc.err); got != tc.transient {
				t.Fatalf("Transient(%v) = %v, want %v", tc.err, got, tc.transient)
			}
			if tc.err == nil {
				return
			}
			wrapped := fmt.Errorf("kv get: %w", tc.err)
			if got := Transient(wrapped); got != tc.transient {
				t.Fatalf("Transient(wrapped %v) = %v, want %v", tc.err, got, tc.transient)
			}
			err := ioError("kv:b/k", wrapped)
			if !errors.Is(err, checkpoint.ErrIO) || errors.Is(err, checkpoint.ErrUnavailable) != tc.transient || !errors.Is(err, tc.err) {
				t.Fatalf("ioError = %v: want ErrIO, ErrUnavailable iff transient, and the cause", err)
			}
		})
	}
}
