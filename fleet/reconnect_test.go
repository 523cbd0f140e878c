package fleet

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet/internal/wire"
	"github.com/batfleet/batfleet/internal/natstest"
)

// dropFirstInfo answers info requests on nc for journal "t", except the
// first, which it takes and keeps quiet about: the request is lost, as
// one passing through a NATS server that died is. It returns a channel
// that gets each request's number as it arrives.
func dropFirstInfo(t *testing.T, nc *nats.Conn, jid engine.ID128) <-chan int {
	t.Helper()
	arrived := make(chan int, 16)
	var mu sync.Mutex
	n := 0
	sub, err := nc.Subscribe(wire.SubjectsFor("t").Info, func(m *nats.Msg) {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		if k > 1 {
			_ = m.Respond(wire.EncodeInfo(wire.Info{Journal: "t", JournalID: jid, Incarnation: jid, Visible: 7}))
		}
		arrived <- k
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return arrived
}

// waitArrival waits for request number want to reach the responder.
func waitArrival(t *testing.T, arrived <-chan int, want int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case k := <-arrived:
			if k >= want {
				return
			}
		case <-deadline:
			t.Fatalf("request %d did not reach the responder within 10s", want)
		}
	}
}

// checkSentAgain runs Describe on a client of nc with an hour's request
// timeout while the responder on rnc drops its first request; once that
// request has arrived, lose(jid) must make the client send it again: the
// answer can only come from a request sent again.
func checkSentAgain(t *testing.T, rnc, nc *nats.Conn, lose func(jid engine.ID128)) {
	t.Helper()
	jid := engine.NewID128()
	arrived := dropFirstInfo(t, rnc, jid)
	c, err := NewClient(nc, ClientConfig{Journal: "t", Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		in, err := c.Describe(ctx)
		if err == nil && in.Visible != 7 {
			err = errors.New("the answer is not the responder's")
		}
		if ctx.Err() != nil {
			err = errors.New("Describe returned only when its context ended: the request was not sent again")
		}
		done <- err
	}()
	waitArrival(t, arrived, 1)
	lose(jid)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	noRefusalWaits(t, nc)
}

// The writer's announcement on the started subject makes a client send
// again the requests it still waits for, so one that was lost (the
// writer restarted, or its NATS server died) is answered at once instead
// of after the request's timeout.
func TestClientSendsAgainWhenTheWriterAnnouncesItself(t *testing.T) {
	s := natstest.StartServer(t)
	rnc, _ := natstest.Connect(t, s)
	nc, _ := natstest.Connect(t, s)
	checkSentAgain(t, rnc, nc, func(jid engine.ID128) {
		announce := wire.EncodeEpoch(wire.EpochMessage{JournalID: jid, Incarnation: jid, Epoch: 1, Visible: 7})
		if err := rnc.Publish(wire.SubjectsFor("t").Started, announce); err != nil {
			t.Fatal(err)
		}
	})
}

// restartable starts a server on a fixed port that restart brings back.
func restartable(t *testing.T) (s func() *server.Server, restart func()) {
	t.Helper()
	o := natstest.Options(t.TempDir())
	o.Port = natstest.FreePort(t)
	cur := natstest.Start(t, o)
	var mu sync.Mutex
	t.Cleanup(func() { mu.Lock(); natstest.Shutdown(cur); mu.Unlock() })
	return func() *server.Server { mu.Lock(); defer mu.Unlock(); return cur },
		func() {
			mu.Lock()
			defer mu.Unlock()
			natstest.Shutdown(cur)
			cur = natstest.Start(t, o.Clone())
		}
}

func reconnecting(t *testing.T, s *server.Server) *nats.Conn {
	nc, _ := natstest.Connect(t, s, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	return nc
}

// A client sends again the requests in flight when its own connection
// reconnects: the request and its server went away together. (The
// responder shares the connection, so its subscription is back before
// the request is sent again.)
func TestClientSendsAgainAfterItsConnectionReconnects(t *testing.T) {
	server, restart := restartable(t)
	nc := reconnecting(t, server())
	checkSentAgain(t, nc, nc, func(engine.ID128) { restart() })
}

// After reconnecting to NATS the writer announces itself again on the
// started subject, with its incarnation (what clients send again on).
func TestWriterAnnouncesItselfAgainAfterReconnecting(t *testing.T) {
	server, restart := restartable(t)
	nc := reconnecting(t, server())
	// The listener shares the writer's connection: its subscription is
	// back before the writer's announcement after the reconnection.
	heard := make(chan wire.EpochMessage, 16)
	sub, err := nc.Subscribe(wire.SubjectsFor("t").Started, func(m *nats.Msg) {
		if em, err := wire.DecodeEpoch(m.Data); err == nil {
			heard <- em
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	store, err := journal.Open(t.TempDir(), journal.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = store.Close() }()
	w, err := NewWriter(nc, store, WriterConfig{Journal: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close(context.Background()) }()

	hear := func(what string) {
		t.Helper()
		select {
		case em := <-heard:
			if em.Incarnation != store.Incarnation() || em.JournalID != store.JournalID() {
				t.Fatalf("%s: announced incarnation %s of journal %s, want %s of %s", what, em.Incarnation, em.JournalID, store.Incarnation(), store.JournalID())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no announcement within 10s", what)
		}
	}
	hear("at the start")
	restart()
	hear("after the reconnection")
}
