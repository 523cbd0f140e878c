// Command fanout measures what idle consumers cost a busy journal:
// batfleet (held pulls on the writer) side by side with JetStream (durable
// pull consumers holding Consume pull requests), in one run, systems
// alternated, at least 3 rounds, medians with min–max.
//
//	go run ./integration/fanout --out BENCHMARKS.md   # full run (make bench-fanout)
//	FANOUT_QUICK=1 go run ./integration/fanout         # smoke run to stdout
//
// Per round, system and W ∈ {0, 100, 1000} idle consumers: a fresh server
// process (the batfleet writer with its embedded nats-server, or a
// nats-server built from this module's github.com/nats-io/nats-server/v2),
// W idle consumers in a child process on regions or subjects that never
// receive an event (sharing a few connections, started evenly over one
// hold period so their renewals are spread out), one busy consumer and one
// paced producer in this process, appending single events at R = 500 and
// 5,000/s to the busy consumer's entity or subject. Reported: the
// producer's achieved rate, the server process's CPU per appended event
// (/proc/<pid>/stat), pull requests per appended event (observed on the
// wire, split idle/busy; batfleet also the writer's own count), and the
// busy consumer's latency from the acknowledged append to its handler.
//
// The same binary is its own child processes: "fanout writer" (the batfleet
// writer: internal/writerapp.Serve, the code of `writer serve`, plus
// net/http/pprof) and "fanout idle" (the idle fleet).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/batfleet/batfleet/integration/internal/benchkit"
)

// config is one run's shape.
type config struct {
	Rounds   int
	Ws       []int // idle consumers per measured fleet, sharing connections (PerConn each)
	Own      []int // idle consumers per measured fleet, one connection each
	Rates    []int // producer appends/s
	Window   time.Duration
	Warmup   time.Duration // at the rate before each measured window
	IdleFor  time.Duration // no appends: the idle fleet's own cost
	Stagger  time.Duration // idle consumers start evenly over this
	Hold     time.Duration // idle (and busy) consumers' hold: idle timeout / pull expiry
	PerConn  int           // idle consumers per NATS connection
	InFlight int           // the producer's appends in flight at most
	Batch    int           // the busy consumer's batch
	// BusyMemory makes the busy consumer keep no progress at the server:
	// an in-memory batfleet worker (no checkpoints), a JetStream consumer
	// with AckNone (a profiling aid; the report notes it).
	BusyMemory bool
	Systems    []string      // "batfleet", "jetstream"
	Root       string        // where server directories are made
	NATSBin    string        // nats-server binary; "" builds one
	Profile    string        // pprof of the server process per window, into this directory
	Settle     time.Duration // pause after the idle fleet is up
	SetupWait  time.Duration // bound of one fleet's start
}

func defaultConfig() config {
	return config{
		Rounds: 3, Ws: []int{0, 100, 1000}, Own: []int{1000}, Rates: []int{500, 5000},
		Window: 10 * time.Second, Warmup: 2 * time.Second, IdleFor: 5 * time.Second,
		Stagger: 30 * time.Second, Hold: 30 * time.Second, PerConn: 250, InFlight: 128, Batch: 64,
		Systems: []string{"batfleet", "jetstream"}, Root: os.TempDir(), Settle: time.Second, SetupWait: 3 * time.Minute,
	}
}

// quickConfig is the smoke run: one round, W up to 100, short windows.
func quickConfig() config {
	c := defaultConfig()
	c.Rounds, c.Ws, c.Own = 1, []int{0, 100}, nil
	c.Window, c.Warmup, c.IdleFor, c.Stagger = 2*time.Second, 500*time.Millisecond, time.Second, 2*time.Second
	return c
}

func main() { os.Exit(mainErr(os.Args[1:])) }

func mainErr(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "writer":
			return writerChild(args[1:])
		case "idle":
			return idleChild(args[1:])
		}
	}
	fs := flag.NewFlagSet("fanout", flag.ContinueOnError)
	quick := fs.Bool("quick", os.Getenv("FANOUT_QUICK") == "1", "smoke run: 1 round, W ∈ {0, 100}, 2 s windows (also FANOUT_QUICK=1; explicit flags still win)")
	out := fs.String("out", "-", "write the Markdown report here (an existing file keeps everything outside the fanout markers; without them the section is appended); - is stdout")
	rounds := fs.Int("rounds", 0, "rounds (each runs every W and system, systems alternated)")
	ws := fs.String("w", "", "idle consumer counts, comma-separated, sharing connections (default 0,100,1000)")
	own := fs.String("own", "", "idle consumer counts, comma-separated, one connection each (default 1000, none in quick mode; --own= for none)")
	rates := fs.String("rates", "", "producer rates in appends/s, comma-separated (default 500,5000)")
	window := fs.Duration("window", 0, "measured window per rate (default 10s)")
	warmup := fs.Duration("warmup", 0, "warm-up at the rate before each window (default 2s)")
	idleFor := fs.Duration("idle", 0, "no-append window per fleet (default 5s)")
	stagger := fs.Duration("stagger", 0, "start the idle consumers evenly over this (default 30s, one hold period)")
	inflight := fs.Int("inflight", 0, "producer appends in flight at most (default 128)")
	perConn := fs.Int("per-conn", 0, "idle consumers per NATS connection (default 250)")
	busyMemory := fs.Bool("busy-memory", false, "busy consumer without server-side progress: in-memory batfleet worker, JetStream AckNone (for profiling)")
	systems := fs.String("systems", "batfleet,jetstream", "systems to run")
	dir := fs.String("dir", os.TempDir(), "directory for the servers' store directories")
	natsBin := fs.String("nats-server", "", "nats-server binary for JetStream (default: go build github.com/nats-io/nats-server/v2 into a temp dir)")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the server process per measured window into this directory")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg := defaultConfig()
	if *quick {
		cfg = quickConfig()
	}
	var err error
	if *rounds > 0 {
		cfg.Rounds = *rounds
	}
	if *ws != "" {
		if cfg.Ws, err = ints(*ws); err != nil {
			fmt.Fprintf(os.Stderr, "fanout: --w: %v\n", err)
			return 2
		}
	}
	ownSet := false
	fs.Visit(func(f *flag.Flag) { ownSet = ownSet || f.Name == "own" })
	if ownSet {
		cfg.Own = nil
		if *own != "" {
			if cfg.Own, err = ints(*own); err != nil {
				fmt.Fprintf(os.Stderr, "fanout: --own: %v\n", err)
				return 2
			}
		}
	}
	if *rates != "" {
		if cfg.Rates, err = ints(*rates); err != nil {
			fmt.Fprintf(os.Stderr, "fanout: --rates: %v\n", err)
			return 2
		}
	}
	setDur := func(dst *time.Duration, v time.Duration) {
		if v > 0 {
			*dst = v
		}
	}
	setDur(&cfg.Window, *window)
	setDur(&cfg.Warmup, *warmup)
	setDur(&cfg.IdleFor, *idleFor)
	setDur(&cfg.Stagger, *stagger)
	if *inflight > 0 {
		cfg.InFlight = *inflight
	}
	if *perConn > 0 {
		cfg.PerConn = *perConn
	}
	cfg.Systems = nil
	for _, s := range []string{"batfleet", "jetstream"} {
		if strings.Contains(*systems, s) {
			cfg.Systems = append(cfg.Systems, s)
		}
	}
	cfg.Root, cfg.NATSBin, cfg.Profile, cfg.BusyMemory = *dir, *natsBin, *profile, *busyMemory
	if len(cfg.Systems) == 0 || len(cfg.Rates) == 0 || len(cfg.Ws) == 0 {
		fmt.Fprintln(os.Stderr, "fanout: need at least one system, rate and W")
		return 2
	}
	res, err := run(context.Background(), cfg, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fanout: %v\n", err)
		return 1
	}
	res.command = commandLine(args, *quick)
	if err := section.Write(*out, res.markdown()); err != nil {
		fmt.Fprintf(os.Stderr, "fanout: write report: %v\n", err)
		return 1
	}
	return 0
}

func commandLine(args []string, quick bool) string {
	c := "go run ./integration/fanout"
	if len(args) > 0 {
		c += " " + strings.Join(args, " ")
	}
	if quick && os.Getenv("FANOUT_QUICK") == "1" {
		c = "FANOUT_QUICK=1 " + c
	}
	return c
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

type sayFunc func(format string, a ...any)

// run is the orchestration: for each round and W, one fleet per system
// (their order alternating from round to round), each fleet measured
// idle and then at every rate.
func run(ctx context.Context, cfg config, progress io.Writer) (*results, error) {
	res := newResults(cfg)
	res.started = time.Now()
	res.machine = benchkit.Machine(cfg.Root, "the journals and JetStream stores")
	say := func(format string, a ...any) {
		fmt.Fprintf(progress, "fanout %s: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}
	if cfg.NATSBin == "" && contains(cfg.Systems, "jetstream") {
		dir, err := os.MkdirTemp(cfg.Root, "fanout-bin-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		say("building nats-server from the module's github.com/nats-io/nats-server/v2")
		if cfg.NATSBin, err = benchkit.BuildNATSServer(ctx, dir); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	for round := 1; round <= cfg.Rounds; round++ {
		for _, sh := range cfg.shapes() {
			order := cfg.Systems
			if round%2 == 0 {
				order = reversed(order)
			}
			for _, sys := range order {
				say("round %d, %s, W=%s", round, sys, sh)
				if err := session(ctx, cfg, self, sys, sh, round, res, say); err != nil {
					return nil, fmt.Errorf("round %d, %s, W=%s: %w", round, sys, sh, err)
				}
			}
		}
	}
	res.finished = time.Now()
	return res, nil
}

// shape is one idle fleet: W consumers sharing connections, or each on a
// connection of its own.
type shape struct {
	W   int
	Own bool
}

func (s shape) String() string {
	if s.Own {
		return benchkit.Thousands(int64(s.W)) + " (own conns)"
	}
	return benchkit.Thousands(int64(s.W))
}

// shapes lists the fleets of a round, in order.
func (c config) shapes() []shape {
	var out []shape
	for _, w := range c.Ws {
		out = append(out, shape{W: w})
	}
	for _, w := range c.Own {
		if w > 0 {
			out = append(out, shape{W: w, Own: true})
		}
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func reversed(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[len(ss)-1-i] = s
	}
	return out
}
