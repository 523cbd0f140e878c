package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/integration/internal/benchkit"
	"github.com/batfleet/batfleet/internal/writerapp"
)

const (
	journalName = "groupbench"
	scopeName   = "gb"
	streamName  = "GB"
	subjectRoot = "gb"
)

// server is one system's server process.
type server struct {
	proc    *benchkit.Child
	url     string
	stopSig syscall.Signal
}

func (s *server) stop() error { return s.proc.Stop(s.stopSig, 60*time.Second) }

// writerChild is "groupbench writer": the batfleet writer process. It runs
// internal/writerapp.Serve — the code of `writer serve` — with an embedded
// nats-server on a free loopback port until its stdin closes or it gets
// SIGTERM.
func writerChild(args []string) int {
	fs := flag.NewFlagSet("groupbench writer", flag.ContinueOnError)
	data := fs.String("data", "", "data directory")
	if err := fs.Parse(args); err != nil || *data == "" {
		fmt.Fprintln(os.Stderr, "groupbench writer: need --data")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }() // ends with the process
	log := hclog.New(&hclog.LoggerOptions{Name: "writer", Level: hclog.Error, Output: os.Stderr})
	err := writerapp.Serve(ctx, writerapp.ServeConfig{
		Data: *data, Journal: journalName, Listen: "127.0.0.1:0", Version: "0.1.0", Log: log,
		Ready: func(url string) { benchkit.ReadyLine("ready", map[string]string{"nats": url}) },
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "groupbench writer: %v\n", err)
		return 1
	}
	return 0
}

// startWriter starts the batfleet writer child (writer + embedded
// nats-server in one process) storing under dir.
func startWriter(self, dir string) (*server, error) {
	proc, err := benchkit.StartChild("writer", self, []string{"writer", "--data", dir}, &benchkit.PrefixWriter{W: os.Stderr, Prefix: "batfleet writer: "})
	if err != nil {
		return nil, err
	}
	var r struct {
		NATS string `json:"nats"`
	}
	if err := proc.Await("ready", &r, time.Minute); err != nil {
		_ = proc.Stop(syscall.SIGKILL, 5*time.Second)
		return nil, err
	}
	return &server{proc: proc, url: r.NATS}, nil
}

// startNATSServer starts a JetStream nats-server process storing under
// dir (file storage, the server's default sync).
func startNATSServer(bin, dir string) (*server, error) {
	ns, err := benchkit.StartNATSServer(bin, dir, "groupbench-js", &benchkit.PrefixWriter{W: os.Stderr, Prefix: "nats-server: "})
	if err != nil {
		return nil, err
	}
	return &server{proc: ns.Child, url: ns.URL, stopSig: syscall.SIGTERM}, nil
}

// startServer starts the server of sys storing under dir.
func startServer(env *runEnv, sys, dir string) (*server, error) {
	if sys == sysBatfleet {
		return startWriter(env.self, dir)
	}
	return startNATSServer(env.cfg.NATSBin, dir)
}

func connect(url, name string) (*nats.Conn, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.Timeout(5*time.Second), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", name, err)
	}
	return nc, nil
}
