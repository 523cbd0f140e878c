package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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

// machine describes the machine and software the run used.
func machine(root string) []string {
	cpu := firstLine("/proc/cpuinfo", "model name")
	if cpu == "" {
		cpu = "unknown CPU"
	}
	mem := "unknown"
	if f := strings.Fields(firstLine("/proc/meminfo", "MemTotal")); len(f) == 2 && f[1] == "kB" {
		if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	load, _ := os.ReadFile("/proc/loadavg")
	fs := fsType(root)
	return []string{
		fmt.Sprintf("CPU: %s, %d logical cores visible to Go (GOMAXPROCS %d)", cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0)),
		fmt.Sprintf("memory: %s", mem),
		fmt.Sprintf("OS: %s/%s, kernel %s", runtime.GOOS, runtime.GOARCH, strings.TrimSpace(string(kernel))),
		fmt.Sprintf("storage: %s (file system %s) for journals and JetStream stores", root, fs),
		fmt.Sprintf("software: %s, nats-server %s (embedded), nats.go %s", runtime.Version(), server.VERSION, nats.Version),
		fmt.Sprintf("load average at start: %s (shared machine: other jobs were running)", strings.Join(strings.Fields(string(load))[:3], " ")),
	}
}

func firstLine(file, prefix string) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == prefix {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// fsType returns the file system type of the mount holding dir, from
// /proc/mounts (the longest mount point that prefixes dir).
func fsType(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "unknown"
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	data, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "unknown"
	}
	best, typ := "", "unknown"
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/") || mp == "/") && len(mp) > len(best) {
			best, typ = mp, f[2]
		}
	}
	return typ
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
