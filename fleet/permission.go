package fleet

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/kvckpt"
)

// violationRe picks the operation and subject out of the server's
// permission violation, the only place nats.go gives them (nats.go
// itself reads a refused subscription's subject from this text).
var violationRe = regexp.MustCompile(`Permissions Violation for (Publish|Subscription) to "([^"]+)"`)

// Refusal returns the permission refusal nc's server reported last, or
// nil when its last error was none.
func Refusal(nc *nats.Conn) *PermissionError {
	if nc == nil {
		return nil
	}
	err := nc.LastError()
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return nil
	}
	m := violationRe.FindStringSubmatch(err.Error())
	if m == nil {
		return nil
	}
	pe := &PermissionError{Op: "publish", Subject: m[2], User: nc.Opts.User, Err: err}
	if m[1] == "Subscription" {
		pe.Op = "subscribe"
	}
	if pe.User == "" {
		pe.User = nc.Opts.Nkey
	}
	return pe
}

// refusedRequest returns the refusal that keeps a request to subject from
// being answered — its publish refused, or the subscription of the reply
// inbox — or nil.
func refusedRequest(nc *nats.Conn, subject string) error {
	pe := Refusal(nc)
	if pe == nil {
		return nil
	}
	inbox := nc.Opts.InboxPrefix
	if inbox == "" {
		inbox = nats.InboxPrefix
	}
	if (pe.Op == "publish" && pe.Subject == subject) || (pe.Op == "subscribe" && strings.HasPrefix(pe.Subject, inbox)) {
		return pe
	}
	return nil
}

// ExplainRefusal returns err, led by the permission refusal that explains
// it when it is a timeout (or another sign of an unanswered request) and
// nc's server refused a publish or subscription last: the refusal is then
// the cause worth reporting. Errors that already are a PermissionError
// are returned as they are.
func ExplainRefusal(nc *nats.Conn, err error) error {
	if err == nil || errors.Is(err, ErrPermission) {
		return err
	}
	if !kvckpt.Transient(err) && !errors.Is(err, delivery.ErrTransient) {
		return err
	}
	if pe := Refusal(nc); pe != nil {
		return fmt.Errorf("%w: %w", pe, err)
	}
	return err
}
