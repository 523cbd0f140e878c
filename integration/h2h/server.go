package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// natsNode is one embedded nats-server with JetStream (file storage) on a
// random loopback TCP port, storing under a directory of its own that is
// removed at shutdown. Every system gets a fresh one per round.
type natsNode struct {
	srv   *server.Server
	dir   string // removed by shutdown
	conns []*nats.Conn
}

// startNode starts a JetStream server storing under a new directory in
// root. With syncAlways the file store fsyncs after every write (the
// config file's "sync_interval: always"); otherwise it keeps nats-server's
// default, an fsync every 2 minutes.
func startNode(root, name string, syncAlways bool) (*natsNode, error) {
	dir, err := os.MkdirTemp(root, "h2h-"+name+"-")
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: "h2h-" + name,
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   filepath.Join(dir, "nats"),
		NoLog:      true,
		NoSigs:     true,
		SyncAlways: syncAlways,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	srv.Start() // in this goroutine: it does not block
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("nats-server not ready within 10s")
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("nats-server: JetStream did not start (store %s)", opts.StoreDir)
	}
	return &natsNode{srv: srv, dir: dir}, nil
}

// connect opens a loopback TCP connection (never in-process) that
// shutdown closes before the server stops.
func (n *natsNode) connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect(n.srv.ClientURL(), nats.Name(name), nats.Timeout(5*time.Second),
		nats.MaxReconnects(0))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", name, err)
	}
	n.conns = append(n.conns, nc)
	return nc, nil
}

// path returns a path inside the node's directory (for a journal).
func (n *natsNode) path(elem string) string { return filepath.Join(n.dir, elem) }

// shutdown closes every connection, stops the server and removes its
// directory.
func (n *natsNode) shutdown() {
	for _, nc := range n.conns {
		nc.Close()
	}
	n.conns = nil
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	_ = os.RemoveAll(n.dir)
}

// rttBaseline measures core NATS request/reply round trips (100-byte
// request and reply, the responder answering from a goroutine of its
// own, as the batfleet writer does) between two fresh connections of the
// node, samples times with gap before each: the network and scheduling
// floor that any request/reply path on this machine pays at that moment.
func (n *natsNode) rttBaseline(samples int, gap time.Duration) ([]time.Duration, error) {
	a, err := n.connect("rtt-requester")
	if err != nil {
		return nil, err
	}
	defer a.Close()
	b, err := n.connect("rtt-responder")
	if err != nil {
		return nil, err
	}
	defer b.Close()
	sub, err := b.Subscribe("h2h.rtt", func(m *nats.Msg) { go func() { _ = m.Respond(m.Data) }() })
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := b.Flush(); err != nil {
		return nil, err
	}
	p := make([]byte, payloadSize)
	out := make([]time.Duration, 0, samples)
	for i := 0; i < samples; i++ {
		time.Sleep(gap)
		t0 := time.Now()
		if _, err := a.Request("h2h.rtt", p, 5*time.Second); err != nil {
			return nil, fmt.Errorf("rtt sample %d: %w", i, err)
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}
