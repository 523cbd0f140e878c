package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"

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
	proc    *child
	url     string
	stopSig syscall.Signal
}

func (s *server) stop() error { return s.proc.stop(s.stopSig, 60*time.Second) }

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
		Ready: func(url string) { readyLine("ready", map[string]string{"nats": url}) },
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
	proc, err := startChild("writer", self, []string{"writer", "--data", dir}, &prefixWriter{w: os.Stderr, prefix: "batfleet writer: "})
	if err != nil {
		return nil, err
	}
	var r struct {
		NATS string `json:"nats"`
	}
	if err := proc.await("ready", &r, time.Minute); err != nil {
		_ = proc.stop(syscall.SIGKILL, 5*time.Second)
		return nil, err
	}
	return &server{proc: proc, url: r.NATS}, nil
}

// startNATSServer starts a JetStream nats-server process storing under
// dir (file storage, the server's default sync).
func startNATSServer(bin, dir string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", filepath.Join(dir, "nats"),
		"-n", "groupbench-js", "-l", filepath.Join(dir, "nats-server.log")}
	proc, err := startChild("nats-server", bin, args, &prefixWriter{w: os.Stderr, prefix: "nats-server: "})
	if err != nil {
		return nil, err
	}
	s := &server{proc: proc, url: fmt.Sprintf("nats://127.0.0.1:%d", port), stopSig: syscall.SIGTERM}
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect(s.url, nats.Timeout(time.Second))
		if err == nil {
			_, jerr := nc.JetStream()
			nc.Close()
			if jerr == nil {
				return s, nil
			}
			err = jerr
		}
		select {
		case <-proc.exit:
			log, _ := os.ReadFile(filepath.Join(dir, "nats-server.log"))
			return nil, fmt.Errorf("nats-server exited: %v\n%s", proc.err, log)
		default:
		}
		if time.Now().After(deadline) {
			_ = proc.stop(syscall.SIGKILL, 5*time.Second)
			return nil, fmt.Errorf("nats-server not ready within 30s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
