// Command groupbench compares consumer groups, side by side in one run:
// batfleet groups (fleet.JoinGroup: partitions by entity bucket,
// cooperative hand-over, claims fenced by the partition checkpoint),
// synadia-io/orbit.go pcgroups v0.2.2 elastic consumer groups (a sourced
// work-queue stream partitioned by subject token, one JetStream consumer
// per member, pinned instances) and plain JetStream (N pullers sharing one
// durable, no per-key order).
//
//	cd integration/groupbench && go run . --out ../../BENCHMARKS.md   # full run (make bench-groups)
//	GROUPS_QUICK=1 go run .                                          # smoke run to stdout
//
// It lives in a module of its own so that batfleet's main module keeps its
// four dependencies.
//
// Every member is a process of its own: this binary run as "groupbench
// member" (a Go child using the fleet library, pcgroups or jetstream).
// The batfleet writer is "groupbench writer" (internal/writerapp.Serve,
// the code of `writer serve`, with its embedded nats-server); pcgroups and
// JetStream use a nats-server process built from this module's
// github.com/nats-io/nats-server/v2. Every child dies with the harness
// (Pdeathsig). Each member logs every handled batch (start, end, event
// indices) to a file of its own, one write per batch; the harness computes
// every figure from those logs.
//
// Two phases per system:
//
//   - scaling: B events over E entities loaded first, then a group of N ∈
//     {1, 2, 4, 8} members drains them with a handler that waits 2 ms per
//     batch of up to 64, one batch at a time per member process;
//   - churn: a group of 4 members on a paced live stream; ≥ 20 kill -9 of
//     a member (each followed by a replacement), then graceful leaves and
//     joins. Measured from the batch logs: time until a killed member's
//     partitions hand an event to a new owner, pauses of moved and
//     unmoved partitions, redeliveries and per-entity order.
//
// GROUPS_DEBUG=1 prints every action and every partition pause over
// 300 ms of the churn phase to stderr.
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

// Systems measured.
const (
	sysBatfleet = "batfleet"
	sysPCG      = "pcgroups"
	sysJS       = "jetstream"
)

var allSystems = []string{sysBatfleet, sysPCG, sysJS}

// config is one run's shape.
type config struct {
	Events     int           // scaling: events loaded
	Entities   int           // distinct entities (event i belongs to entity i mod Entities)
	Members    []int         // scaling: group sizes
	Partitions int           // P (batfleet partitions, pcgroups max members)
	Batch      int           // events per handler call at most
	Sleep      time.Duration // handler wait per batch
	Slots      int           // handler calls in progress at once per member process
	Flush      time.Duration // pcgroups / JetStream: a partial batch is handled after this
	Session    time.Duration // batfleet session; pcgroups and JetStream AckWait (pinned TTL)

	ChurnMembers int           // churn: group size
	Rate         int           // churn: events/s produced
	Kills        int           // churn: kill -9 cycles
	Graceful     int           // churn: leave + join cycles
	Warmup       time.Duration // churn: before the first action
	FailWait     time.Duration // churn: after a kill, before the replacement starts
	Settle       time.Duration // churn: after a join or leave

	Systems []string
	Root    string // where server directories are made
	NATSBin string // nats-server binary; "" builds one
	Phases  []string
}

func defaultConfig() config {
	return config{
		Events: 1_000_000, Entities: 10_000, Members: []int{1, 2, 4, 8}, Partitions: 16,
		Batch: 64, Sleep: 2 * time.Millisecond, Slots: 1, Flush: 5 * time.Millisecond, Session: 3 * time.Second,
		ChurnMembers: 4, Rate: 2000, Kills: 20, Graceful: 10,
		Warmup: 3 * time.Second, FailWait: 6 * time.Second, Settle: 3 * time.Second,
		Systems: allSystems, Root: os.TempDir(), Phases: []string{"scaling", "churn"},
	}
}

// quickConfig is the smoke run: 40,000 events, groups of 1 and 2, two
// kills and one leave + join.
func quickConfig() config {
	c := defaultConfig()
	c.Events, c.Entities, c.Members = 40_000, 2_000, []int{1, 2}
	c.Kills, c.Graceful, c.Warmup = 2, 1, 2*time.Second
	return c
}

func main() { os.Exit(mainErr(os.Args[1:])) }

func mainErr(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "writer":
			return writerChild(args[1:])
		case "member":
			return memberChild(args[1:])
		}
	}
	fs := flag.NewFlagSet("groupbench", flag.ContinueOnError)
	quick := fs.Bool("quick", os.Getenv("GROUPS_QUICK") == "1", "smoke run: 40,000 events, N ∈ {1, 2}, 2 kills, 1 leave + join (also GROUPS_QUICK=1; explicit flags still win)")
	out := fs.String("out", "-", "write the Markdown report here (an existing file keeps everything outside the groups markers; without them the section is appended); - is stdout")
	events := fs.Int("events", 0, "scaling: events loaded (default 1,000,000; also GROUPS_EVENTS)")
	entities := fs.Int("entities", 0, "entities (default 10,000)")
	members := fs.String("members", "", "scaling: group sizes, comma-separated (default 1,2,4,8)")
	partitions := fs.Int("partitions", 0, "partitions P (default 16)")
	sleep := fs.Duration("sleep", 0, "handler wait per batch (default 2ms)")
	slots := fs.Int("slots", 0, "handler calls at once per member process (default 1)")
	rate := fs.Int("rate", 0, "churn: events/s produced (default 2,000)")
	kills := fs.Int("kills", -1, "churn: kill -9 cycles (default 20)")
	graceful := fs.Int("graceful", -1, "churn: leave + join cycles (default 10)")
	churnMembers := fs.Int("churn-members", 0, "churn: group size (default 4)")
	systems := fs.String("systems", strings.Join(allSystems, ","), "systems to run")
	phases := fs.String("phases", "scaling,churn", "phases to run")
	dir := fs.String("dir", os.TempDir(), "directory for the servers' store directories and member logs")
	natsBin := fs.String("nats-server", "", "nats-server binary for pcgroups and JetStream (default: go build github.com/nats-io/nats-server/v2 into a temp dir)")
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
	if *events == 0 {
		if v, err := strconv.Atoi(os.Getenv("GROUPS_EVENTS")); err == nil && v > 0 {
			*events = v
		}
	}
	setInt := func(dst *int, v int) {
		if v > 0 {
			*dst = v
		}
	}
	setInt(&cfg.Events, *events)
	setInt(&cfg.Entities, *entities)
	setInt(&cfg.Partitions, *partitions)
	setInt(&cfg.Slots, *slots)
	setInt(&cfg.Rate, *rate)
	setInt(&cfg.ChurnMembers, *churnMembers)
	if *kills >= 0 {
		cfg.Kills = *kills
	}
	if *graceful >= 0 {
		cfg.Graceful = *graceful
	}
	if *sleep > 0 {
		cfg.Sleep = *sleep
	}
	if *members != "" {
		ms, err := ints(*members)
		if err != nil {
			fmt.Fprintf(os.Stderr, "groupbench: --members: %v\n", err)
			return 2
		}
		cfg.Members = ms
	}
	cfg.Systems = pick(*systems, allSystems)
	cfg.Phases = pick(*phases, []string{"scaling", "churn"})
	cfg.Root, cfg.NATSBin = *dir, *natsBin
	if len(cfg.Systems) == 0 || len(cfg.Phases) == 0 {
		fmt.Fprintln(os.Stderr, "groupbench: need at least one system and phase")
		return 2
	}
	res, err := run(context.Background(), cfg, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "groupbench: %v\n", err)
		return 1
	}
	res.command = commandLine(args, *quick)
	if err := section.Write(*out, res.markdown()); err != nil {
		fmt.Fprintf(os.Stderr, "groupbench: write report: %v\n", err)
		return 1
	}
	return 0
}

func pick(list string, from []string) []string {
	var out []string
	for _, s := range from {
		for _, f := range strings.Split(list, ",") {
			if strings.TrimSpace(f) == s {
				out = append(out, s)
			}
		}
	}
	return out
}

func commandLine(args []string, quick bool) string {
	c := "go run ."
	if len(args) > 0 {
		c += " " + strings.Join(args, " ")
	}
	if v := os.Getenv("GROUPS_EVENTS"); v != "" {
		c = "GROUPS_EVENTS=" + v + " " + c
	}
	if quick && os.Getenv("GROUPS_QUICK") == "1" {
		c = "GROUPS_QUICK=1 " + c
	}
	return "cd integration/groupbench && " + c
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

type sayFunc func(format string, a ...any)

// run is the orchestration: per phase, each system in turn on a fresh
// server.
func run(ctx context.Context, cfg config, progress io.Writer) (*results, error) {
	res := &results{cfg: cfg, started: time.Now(), machine: benchkit.Machine(cfg.Root, "the journals, JetStream stores and batch logs", "pcgroups v0.2.2")}
	say := func(format string, a ...any) {
		fmt.Fprintf(progress, "groupbench %s: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}
	if cfg.NATSBin == "" && (contains(cfg.Systems, sysPCG) || contains(cfg.Systems, sysJS)) {
		dir, err := os.MkdirTemp(cfg.Root, "groupbench-bin-")
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
	env := &runEnv{cfg: cfg, self: self, say: say}
	if contains(cfg.Phases, "scaling") {
		for _, sys := range cfg.Systems {
			say("scaling, %s: %s events over %s entities, N ∈ %v", sys, benchkit.Thousands(int64(cfg.Events)), benchkit.Thousands(int64(cfg.Entities)), cfg.Members)
			sr, err := scaling(ctx, env, sys)
			if err != nil {
				return nil, fmt.Errorf("scaling, %s: %w", sys, err)
			}
			res.scaling = append(res.scaling, sr...)
		}
	}
	if contains(cfg.Phases, "churn") {
		for _, sys := range cfg.Systems {
			say("churn, %s: %d members, %d events/s, %d kills, %d leaves + joins", sys, cfg.ChurnMembers, cfg.Rate, cfg.Kills, cfg.Graceful)
			cr, err := churn(ctx, env, sys)
			if err != nil {
				return nil, fmt.Errorf("churn, %s: %w", sys, err)
			}
			res.churn = append(res.churn, cr)
		}
	}
	res.finished = time.Now()
	return res, nil
}

// runEnv is what every phase needs.
type runEnv struct {
	cfg  config
	self string
	say  sayFunc
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
