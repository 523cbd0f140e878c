package fleet

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

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
	return parseRefusal(nc, nc.LastError())
}

// parseRefusal returns err as a PermissionError on nc, or nil when err is
// not a permission violation naming its subject.
func parseRefusal(nc *nats.Conn, err error) *PermissionError {
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

// dooms reports whether refusal pe keeps a request to subject on nc from
// being answered: its publish was refused, or the subscription of the
// connection's reply inbox.
func dooms(nc *nats.Conn, pe *PermissionError, subject string) bool {
	if pe.Op == "publish" {
		return pe.Subject == subject
	}
	inbox := nc.Opts.InboxPrefix
	if inbox == "" {
		inbox = nats.InboxPrefix
	}
	return strings.HasPrefix(pe.Subject, inbox)
}

// The calls waiting on each connection that a refusal may end at once.
// NATS reports a refused publish or subscription apart from the call that
// caused it, through the connection's error handler; a connection with
// RefusalHandler installed ends the calls a refusal dooms there and then,
// instead of at their timeout. Entries live only while calls wait, so a
// closed connection leaves nothing behind.
var refusalWaits struct {
	mu    sync.Mutex
	conns map[*nats.Conn]map[*refusalWait]struct{}
}

// refusalWait is one waiting call: a request to subject, or (subject "")
// a WatchRefusals context that any refusal ends.
type refusalWait struct {
	subject string
	end     context.CancelCauseFunc
}

// awaitRefusal registers w on nc and returns the func that removes it.
func awaitRefusal(nc *nats.Conn, w *refusalWait) (done func()) {
	refusalWaits.mu.Lock()
	if refusalWaits.conns == nil {
		refusalWaits.conns = map[*nats.Conn]map[*refusalWait]struct{}{}
	}
	ws := refusalWaits.conns[nc]
	if ws == nil {
		ws = map[*refusalWait]struct{}{}
		refusalWaits.conns[nc] = ws
	}
	ws[w] = struct{}{}
	refusalWaits.mu.Unlock()
	return func() {
		refusalWaits.mu.Lock()
		// The map that holds w is nc's current one: a map leaves conns
		// only when empty.
		ws := refusalWaits.conns[nc]
		delete(ws, w)
		if len(ws) == 0 {
			delete(refusalWaits.conns, nc)
		}
		refusalWaits.mu.Unlock()
	}
}

// endRefused ends, with pe as their cause, the calls on nc that pe dooms.
func endRefused(nc *nats.Conn, pe *PermissionError) {
	refusalWaits.mu.Lock()
	defer refusalWaits.mu.Unlock()
	for w := range refusalWaits.conns[nc] {
		if w.subject == "" || dooms(nc, pe, w.subject) {
			w.end(pe)
		}
	}
}

// RefusalHandler returns a NATS error handler (nats.ErrorHandler) that
// ends at once, with a *PermissionError, the calls a permission refusal
// dooms — a Client's request whose publish or reply inbox was refused, a
// WatchRefusals context — and then passes every error on to next (nil
// for none). Without it on the connection, such a request is still
// reported as refused, but only after its timeout.
func RefusalHandler(next nats.ErrHandler) nats.ErrHandler {
	return func(nc *nats.Conn, sub *nats.Subscription, err error) {
		if pe := parseRefusal(nc, err); pe != nil {
			endRefused(nc, pe)
		}
		if next != nil {
			next(nc, sub, err)
		}
	}
}

// WatchRefusals returns a context derived from ctx that ends, with the
// *PermissionError as its cause, as soon as nc's server refuses any
// publish or subscription of nc (RefusalHandler must be nc's error
// handler). It suits a short command — every refusal means it cannot do
// its job — not a long-running worker. stop releases the watch.
func WatchRefusals(ctx context.Context, nc *nats.Conn) (watched context.Context, stop context.CancelFunc) {
	watched, end := context.WithCancelCause(ctx)
	done := awaitRefusal(nc, &refusalWait{end: end})
	return watched, func() {
		done()
		end(context.Canceled)
	}
}

// refusedRequest returns the refusal nc's server reported last when it
// keeps a request to subject from being answered, or nil.
func refusedRequest(nc *nats.Conn, subject string) error {
	if pe := Refusal(nc); pe != nil && dooms(nc, pe, subject) {
		return pe
	}
	return nil
}

// ExplainRefusal returns err, led by the permission refusal that explains
// it when it is a timeout, a cancellation (a WatchRefusals context ended
// it) or another sign of an unanswered request, and
// nc's server refused a publish or subscription last: the refusal is then
// the cause worth reporting. Errors that already are a PermissionError
// are returned as they are.
func ExplainRefusal(nc *nats.Conn, err error) error {
	if err == nil || errors.Is(err, ErrPermission) {
		return err
	}
	if !kvckpt.Transient(err) && !errors.Is(err, delivery.ErrTransient) && !errors.Is(err, context.Canceled) {
		return err // a WatchRefusals context ends calls with Canceled
	}
	if pe := Refusal(nc); pe != nil {
		if errors.Is(err, context.Canceled) {
			return pe // the refusal ended it: "context canceled" would only blur it
		}
		return fmt.Errorf("%w: %w", pe, err)
	}
	return err
}
