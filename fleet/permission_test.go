package fleet

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/internal/natstest"
)

// refusingServer starts a server whose one user, "reader", may not
// publish to the info subject of journal "t" nor to "forbidden".
func refusingServer(t *testing.T) *server.Server {
	t.Helper()
	o := natstest.Options(t.TempDir())
	o.Users = []*server.User{{
		Username: "reader", Password: "pw",
		Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"batfleet.t.info", "forbidden"}},
		},
	}}
	return natstest.StartServer(t, o)
}

// noRefusalWaits fails t if calls on nc are still registered for
// refusals: entries must leave with the calls that made them.
func noRefusalWaits(t *testing.T, nc *nats.Conn) {
	t.Helper()
	refusalWaits.mu.Lock()
	n := len(refusalWaits.conns[nc])
	refusalWaits.mu.Unlock()
	if n != 0 {
		t.Errorf("%d calls still wait for refusals on the connection after they returned", n)
	}
}

// A request whose publish the server refuses ends with the refusal as
// soon as the server reports it, when the connection has RefusalHandler:
// with a request timeout of an hour and a context that outlives the
// test's wait, the call can only have been ended by the refusal.
func TestRefusalHandlerEndsTheRefusedRequestAtOnce(t *testing.T) {
	s := refusingServer(t)
	passedOn := make(chan error, 8)
	next := func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case passedOn <- err:
		default:
		}
	}
	nc, _ := natstest.Connect(t, s, nats.UserInfo("reader", "pw"), nats.ErrorHandler(RefusalHandler(next)))
	c, err := NewClient(nc, ClientConfig{Journal: "t", Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = c.Describe(ctx)
	var pe *PermissionError
	if !errors.As(err, &pe) {
		t.Fatalf("Describe: %v, want a *PermissionError", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Describe returned only when its context ended (%v): the refusal did not end it", ctx.Err())
	}
	if pe.Op != "publish" || pe.Subject != "batfleet.t.info" || pe.User != "reader" {
		t.Errorf("refusal = %+v, want publish to batfleet.t.info by reader", pe)
	}
	if want := `NATS refused permission to publish to "batfleet.t.info" for user "reader"`; pe.Error() != want {
		t.Errorf("message %q, want %q", pe.Error(), want)
	}
	if !errors.Is(err, ErrPermission) || !errors.Is(err, nats.ErrPermissionViolation) {
		t.Errorf("%v matches neither ErrPermission nor nats.ErrPermissionViolation", err)
	}
	noRefusalWaits(t, nc)
	select {
	case got := <-passedOn:
		if !errors.Is(got, nats.ErrPermissionViolation) {
			t.Errorf("handler passed on %v, want the permission violation", got)
		}
	case <-time.After(10 * time.Second):
		t.Error("the refusal was not passed on to the next handler within 10s")
	}
}

// Without RefusalHandler the refused request still reports the refusal,
// once its timeout has run out.
func TestRefusalWithoutHandlerIsReportedAtTheTimeout(t *testing.T) {
	s := refusingServer(t)
	quiet := func(*nats.Conn, *nats.Subscription, error) {} // a handler of the user's own
	nc, _ := natstest.Connect(t, s, nats.UserInfo("reader", "pw"), nats.ErrorHandler(quiet))
	c, err := NewClient(nc, ClientConfig{Journal: "t", Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Describe(context.Background())
	var pe *PermissionError
	if !errors.As(err, &pe) || pe.Subject != "batfleet.t.info" {
		t.Fatalf("Describe: %v, want the refusal of batfleet.t.info", err)
	}
	noRefusalWaits(t, nc)
}

// A WatchRefusals context ends, the refusal its cause, on any refusal of
// its connection; a request to another subject waits on. stop releases
// the watch.
func TestWatchRefusalsEndsOnAnyRefusal(t *testing.T) {
	s := refusingServer(t)
	nc, _ := natstest.Connect(t, s, nats.UserInfo("reader", "pw"), nats.ErrorHandler(RefusalHandler(nil)))

	// A request to the pull subject, registered as Client requests are.
	pullCtx, pullEnd := context.WithCancelCause(context.Background())
	defer pullEnd(nil)
	donePull := awaitRefusal(nc, &refusalWait{subject: "batfleet.t.pull", end: pullEnd})

	watched, stop := WatchRefusals(context.Background(), nc)
	if err := nc.Publish("forbidden", []byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-watched.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the watched context did not end within 10s of a refused publish")
	}
	var pe *PermissionError
	if !errors.As(context.Cause(watched), &pe) || pe.Subject != "forbidden" || pe.Op != "publish" {
		t.Fatalf("cause %v, want the refusal to publish to forbidden", context.Cause(watched))
	}
	// The handler ended the watch and judged the pull in one pass.
	if pullCtx.Err() != nil {
		t.Errorf("a refusal of another subject ended the pull request: %v", context.Cause(pullCtx))
	}
	stop()
	donePull()
	noRefusalWaits(t, nc)

	// The explanation of what the refusal cut short is the refusal alone.
	if err := ExplainRefusal(nc, context.Canceled); !errors.As(err, &pe) || err.Error() != pe.Error() {
		t.Errorf("ExplainRefusal(Canceled) = %v, want the refusal itself", err)
	}
	// A watch stopped before any refusal ends with Canceled, not a refusal.
	w2, stop2 := WatchRefusals(context.Background(), nc)
	stop2()
	if errors.Is(context.Cause(w2), ErrPermission) || !errors.Is(context.Cause(w2), context.Canceled) {
		t.Errorf("stopped watch: cause %v, want context.Canceled", context.Cause(w2))
	}
	noRefusalWaits(t, nc)
}
