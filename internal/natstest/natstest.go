// Package natstest runs embedded nats-servers for tests: a single
// JetStream server on a random loopback port, or a small JetStream cluster.
// Servers store under t.TempDir() and shut down (after their clients
// close) when the test ends. Only tests import this package.
package natstest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options returns the options of a JetStream server on a random loopback
// port storing under dir.
func Options(dir string) *server.Options {
	return &server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	}
}

// StartServer starts a JetStream server (Options(t.TempDir()) unless opts
// is given) and shuts it down when the test ends.
func StartServer(t testing.TB, opts ...*server.Options) *server.Server {
	t.Helper()
	var o *server.Options
	if len(opts) > 0 && opts[0] != nil {
		o = opts[0]
	} else {
		o = Options(t.TempDir())
	}
	s := Start(t, o)
	t.Cleanup(func() { Shutdown(s) })
	return s
}

// Start starts a server with o and waits until it is ready; the caller
// shuts it down.
func Start(t testing.TB, o *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("natstest: new server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("natstest: server not ready within 10s")
	}
	if o.JetStream && !s.JetStreamEnabled() {
		s.Shutdown()
		t.Fatal("natstest: JetStream did not start")
	}
	return s
}

// Shutdown stops s and waits for it.
func Shutdown(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

// Connect connects to s and closes the connection when the test ends
// (before the server's own cleanup, which was registered earlier). Extra
// options go after the defaults.
func Connect(t testing.TB, s *server.Server, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return ConnectURL(t, s.ClientURL(), opts...)
}

// ConnectURL is Connect by URL.
func ConnectURL(t testing.TB, u string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	all := append([]nats.Option{nats.Timeout(5 * time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(u, all...)
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", u, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Cluster is a JetStream cluster of embedded servers.
type Cluster struct {
	Servers []*server.Server
	Opts    []*server.Options
}

// URLs returns every server's client URL, comma separated.
func (c *Cluster) URLs() string {
	u := ""
	for i, s := range c.Servers {
		if s == nil {
			continue
		}
		if i > 0 && u != "" {
			u += ","
		}
		u += s.ClientURL()
	}
	return u
}

// StartCluster starts an n-node JetStream cluster on loopback and waits
// until it has a meta leader. Servers shut down when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = FreePort(t)
	}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir() // before the shutdown cleanup, so removed after it
	}
	c := &Cluster{}
	// Registered before the first start, so that servers already running
	// shut down when a later one fails to start.
	t.Cleanup(func() {
		for _, s := range c.Servers {
			if s != nil {
				Shutdown(s)
			}
		}
	})
	for i := 0; i < n; i++ {
		o := Options(dirs[i])
		o.ServerName = fmt.Sprintf("n%d", i)
		o.Cluster.Name = "batfleet-test"
		o.Cluster.Host = "127.0.0.1"
		o.Cluster.Port = ports[i]
		o.Routes = routes
		c.Opts = append(c.Opts, o)
		c.Servers = append(c.Servers, Start(t, o))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, s := range c.Servers {
			if s.JetStreamIsLeader() {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("natstest: cluster elected no JetStream meta leader within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StreamLeader returns the index of the node of c leading stream, or -1
// (no leader now, or the stream cannot be read).
func StreamLeader(js jetstream.JetStream, c *Cluster, stream string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil || s.CachedInfo().Cluster == nil {
		return -1
	}
	for i, srv := range c.Servers {
		if srv != nil && srv.Name() == s.CachedInfo().Cluster.Leader {
			return i
		}
	}
	return -1
}

// MoveStreamLeader makes node to of c lead stream: a leader step-down
// naming it as the preferred successor, repeated until it holds (or the
// test fails after 30 s).
func MoveStreamLeader(t testing.TB, nc *nats.Conn, c *Cluster, stream string, to int) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	req := []byte(`{"placement":{"preferred":"` + c.Servers[to].Name() + `"}}`)
	var asked time.Time
	for deadline := time.Now().Add(30 * time.Second); StreamLeader(js, c, stream) != to; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("natstest: %s's leader did not move to %s within 30s", stream, c.Servers[to].Name())
		}
		if time.Since(asked) > time.Second {
			asked = time.Now()
			_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, 2*time.Second)
		}
	}
}

// StreamCurrent reports whether stream has a leader and replicas-1
// followers, every one current and online: a node that came back has
// caught up, so another may go without the stream losing its quorum.
func StreamCurrent(js jetstream.JetStream, stream string, replicas int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return false
	}
	cl := s.CachedInfo().Cluster
	if cl == nil || cl.Leader == "" || len(cl.Replicas) != replicas-1 {
		return false
	}
	for _, r := range cl.Replicas {
		if !r.Current || r.Offline {
			return false
		}
	}
	return true
}
