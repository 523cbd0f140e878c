package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // the writer child's /debug/pprof
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/batfleet/batfleet/integration/internal/benchkit"
	"github.com/batfleet/batfleet/internal/writerapp"
)

// writerReady is the writer child's ready line.
type writerReady struct {
	NATS    string `json:"nats"`
	Metrics string `json:"metrics"`
	PProf   string `json:"pprof"`
}

// writerChild is "fanout writer": the batfleet writer process. It runs
// internal/writerapp.Serve — the code of `writer serve` — with an embedded
// nats-server on a free loopback port and /metrics, plus net/http/pprof on
// a port of its own, until its stdin closes or it gets SIGTERM.
func writerChild(args []string) int {
	fs := flag.NewFlagSet("fanout writer", flag.ContinueOnError)
	data := fs.String("data", "", "data directory")
	journal := fs.String("journal", journalName, "journal")
	if err := fs.Parse(args); err != nil || *data == "" {
		fmt.Fprintln(os.Stderr, "fanout writer: need --data")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()

	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintf(os.Stderr, "fanout writer: pprof: %v\n", err)
		return 1
	}
	go func() { _ = http.Serve(pln, nil) }()
	mport, err := benchkit.FreePort()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fanout writer: %v\n", err)
		return 1
	}
	maddr := fmt.Sprintf("127.0.0.1:%d", mport)
	log := hclog.New(&hclog.LoggerOptions{Name: "writer", Level: hclog.Error, Output: os.Stderr})
	err = writerapp.Serve(ctx, writerapp.ServeConfig{
		Data: *data, Journal: *journal, Listen: "127.0.0.1:0", HTTP: maddr, Version: "0.1.0", Log: log,
		Ready: func(url string) {
			benchkit.ReadyLine("ready", writerReady{NATS: url, Metrics: maddr, PProf: pln.Addr().String()})
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "fanout writer: %v\n", err)
		return 1
	}
	return 0
}
