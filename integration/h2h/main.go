// Command h2h runs batfleet head to head with JetStream pull consumers in
// one process, on one embedded nats-server per system and round, over
// loopback TCP, and writes the figures, their batfleet ÷ JetStream ratios
// and the durability settings as Markdown (BENCHMARKS.md).
//
//	go run ./integration/h2h --out BENCHMARKS.md            # full run
//	go run ./integration/h2h --quick                        # smoke run to stdout
//
// Measured for both systems, rounds alternating batfleet and JetStream:
// consumer throughput (1 and 4 workers/pullers, batch 64 and 256, a
// checkpoint or ack per batch), idle wake latency p50/p99, and durable
// append throughput over NATS. See report.go for the exact definitions.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/batfleet/batfleet/integration/internal/benchkit"
)

// config is one run's shape.
type config struct {
	Events      int
	Rounds      int
	Batches     []int
	WakeSamples int
	WakeGap     time.Duration // idle time before each wake sample
	SyncEvents  int           // events of the sync-always record run; 0 skips it
	Batfleet    bool
	JetStream   bool
	Root        string        // where store directories are made
	RunTimeout  time.Duration // bound of one measured run
	ProfileDir  string        // one CPU profile per measured step; "" for none
}

func defaultConfig() config {
	return config{
		Events: 1_000_000, Rounds: 3, Batches: []int{64, 256}, WakeSamples: 2000, WakeGap: time.Millisecond,
		SyncEvents: 100_000, Batfleet: true, JetStream: true, Root: os.TempDir(), RunTimeout: 10 * time.Minute,
	}
}

// quickConfig is the smoke run: small volumes, one round.
func quickConfig() config {
	c := defaultConfig()
	c.Events, c.Rounds, c.WakeSamples, c.SyncEvents, c.RunTimeout = 20_000, 1, 200, 5_000, 2*time.Minute
	return c
}

func main() { os.Exit(mainErr(os.Args[1:])) }

func mainErr(args []string) int {
	fs := flag.NewFlagSet("h2h", flag.ContinueOnError)
	events := fs.Int("events", 1_000_000, "events in the journal and the stream")
	rounds := fs.Int("rounds", 3, "rounds per system (alternating batfleet, JetStream)")
	quick := fs.Bool("quick", false, "smoke run: 20,000 events, 1 round, 200 wake samples (explicit flags still win)")
	out := fs.String("out", "-", "write the Markdown report here (an existing file keeps the text outside the h2h markers); - is stdout")
	wake := fs.Int("wake-samples", 2000, "wake-latency samples per round and system")
	syncEvents := fs.Int("sync-events", 100_000, "events of the one sync_interval: always record run (0 skips it)")
	systems := fs.String("systems", "batfleet,jetstream", "systems to run (for profiling one side)")
	dir := fs.String("dir", os.TempDir(), "directory for the servers' and journals' store directories")
	cpuprofile := fs.String("cpuprofile", "", "write one CPU profile per measured step into this directory (<round>-<figure>.pprof)")
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
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["events"] || !*quick {
		cfg.Events = *events
	}
	if set["rounds"] || !*quick {
		cfg.Rounds = *rounds
	}
	if set["wake-samples"] || !*quick {
		cfg.WakeSamples = *wake
	}
	if set["sync-events"] || !*quick {
		cfg.SyncEvents = *syncEvents
	}
	cfg.Root = *dir
	cfg.Batfleet = strings.Contains(*systems, "batfleet")
	cfg.JetStream = strings.Contains(*systems, "jetstream")
	if cfg.Events < 1000 || cfg.Rounds < 1 || cfg.WakeSamples < 1 || (!cfg.Batfleet && !cfg.JetStream) {
		fmt.Fprintln(os.Stderr, "h2h: need --events >= 1000, --rounds >= 1, --wake-samples >= 1 and at least one system")
		return 2
	}
	cfg.ProfileDir = *cpuprofile
	res, err := run(context.Background(), cfg, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "h2h: %v\n", err)
		return 1
	}
	res.command = "go run ./integration/h2h " + strings.Join(args, " ")
	if err := section.Write(*out, res.markdown()); err != nil {
		fmt.Fprintf(os.Stderr, "h2h: write report: %v\n", err)
		return 1
	}
	return 0
}

// run is the program's core: rounds alternating the systems, then the
// sync-always record. Progress goes to progress.
func run(ctx context.Context, cfg config, progress io.Writer) (*results, error) {
	res := newResults(cfg)
	res.started = time.Now()
	res.machine = benchkit.Machine(cfg.Root, "journals and JetStream stores", "nats-server embedded in the harness process")
	say := func(format string, a ...any) { fmt.Fprintf(progress, "h2h: "+format+"\n", a...) }
	say("generating %d events", cfg.Events)
	wl := newWorkload(cfg.Events)
	for round := 1; round <= cfg.Rounds; round++ {
		if cfg.Batfleet {
			if err := batfleetRound(ctx, cfg, res, wl, round, say); err != nil {
				return nil, fmt.Errorf("round %d, batfleet: %w", round, err)
			}
		}
		if cfg.JetStream {
			if err := jetstreamRound(ctx, cfg, res, wl, round, say); err != nil {
				return nil, fmt.Errorf("round %d, jetstream: %w", round, err)
			}
		}
	}
	if cfg.SyncEvents > 0 {
		if err := syncRecord(ctx, cfg, res, say); err != nil {
			return nil, fmt.Errorf("sync-always record: %w", err)
		}
	}
	res.finished = time.Now()
	return res, nil
}

type sayFunc func(format string, a ...any)

func batfleetRound(ctx context.Context, cfg config, res *results, wl *workload, round int, say sayFunc) error {
	b, err := startBatfleet(cfg.Root, wl, false)
	if err != nil {
		return err
	}
	defer b.close()
	var rate float64
	cpu, err := measure(ctx, cfg, fmt.Sprintf("r%d-bf-append", round), func(ctx context.Context) (err error) {
		rate, err = b.appendAll(ctx, wl.n)
		return err
	})
	if err != nil {
		return err
	}
	res.addCPU("bf/append", cpu, wl.n)
	res.add("bf/append", fmt.Sprintf("batfleet: Client.Append, %d events/request, %d in flight (fsynced)", appendBatch, appendInFlight), "events/s", rate)
	say("round %d batfleet append: %s events/s", round, benchkit.Thousands(int64(rate)))
	for _, workers := range []int{1, 4} {
		for _, batch := range cfg.Batches {
			label := fmt.Sprintf("batfleet %d worker(s), batch %d", workers, batch)
			var c check
			run := fmt.Sprintf("r%d-%dw-b%d", round, workers, batch)
			cpu, err := measure(ctx, cfg, run+"-bf", func(ctx context.Context) (err error) {
				rate, c, err = b.consume(ctx, label, workers, batch, run)
				return err
			})
			if err != nil {
				return err
			}
			res.addCPU(fmt.Sprintf("bf/%dw/b%d", workers, batch), cpu, wl.n)
			res.checks = append(res.checks, c)
			w := "1 worker"
			if workers > 1 {
				w = fmt.Sprintf("%d workers (disjoint regions)", workers)
			}
			res.add(fmt.Sprintf("bf/%dw/b%d", workers, batch), fmt.Sprintf("batfleet: %s, batch %d, KV CAS checkpoint per batch", w, batch), "events/s", rate)
			say("round %d %s: %s events/s", round, label, benchkit.Thousands(int64(rate)))
		}
	}
	var lat *latency
	var c check
	if _, err := measure(ctx, cfg, fmt.Sprintf("r%d-bf-wake", round), func(ctx context.Context) (err error) {
		lat, c, err = b.wake(ctx, cfg.WakeSamples, cfg.WakeGap, fmt.Sprintf("r%d", round))
		return err
	}); err != nil {
		return err
	}
	res.checks = append(res.checks, c)
	addLatency(res, "bf", "batfleet", lat)
	say("round %d batfleet wake: p50 %s p99 %s", round, percentile(lat.fromAck, 50), percentile(lat.fromAck, 99))
	rtt, err := b.node.rttBaseline(cfg.WakeSamples, cfg.WakeGap)
	if err != nil {
		return err
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	res.add("rtt/p50", "core NATS (baseline): request/reply round trip p50, same server, right after batfleet's series", "ms", ms(percentile(rtt, 50)))
	res.add("rtt/p99", "core NATS (baseline): request/reply round trip p99", "ms", ms(percentile(rtt, 99)))
	say("round %d core NATS request/reply baseline: p50 %s p99 %s", round, percentile(rtt, 50), percentile(rtt, 99))
	return nil
}

func jetstreamRound(ctx context.Context, cfg config, res *results, wl *workload, round int, say sayFunc) error {
	j, err := startJetStream(cfg.Root, wl, false)
	if err != nil {
		return err
	}
	defer j.close()
	var rate float64
	cpu, err := measure(ctx, cfg, fmt.Sprintf("r%d-js-publish", round), func(ctx context.Context) (err error) {
		rate, err = j.publishAll(ctx, wl.n)
		return err
	})
	if err != nil {
		return err
	}
	res.addCPU("js/publish", cpu, wl.n)
	res.add("js/publish", "JetStream: PublishAsync, default 4,000 pending (not fsynced per message)", "events/s", rate)
	say("round %d jetstream publish: %s events/s", round, benchkit.Thousands(int64(rate)))
	for _, v := range jsVariants(cfg.Batches) {
		var c check
		cpu, err := measure(ctx, cfg, fmt.Sprintf("r%d-%s", round, v.key()), func(ctx context.Context) (err error) {
			rate, c, err = j.consume(ctx, v, fmt.Sprintf("r%d", round))
			return err
		})
		if err != nil {
			return err
		}
		res.addCPU(v.key(), cpu, wl.n)
		res.checks = append(res.checks, c)
		res.add(v.key(), "JetStream: "+v.String(), "events/s", rate)
		say("round %d jetstream %s: %s events/s", round, v, benchkit.Thousands(int64(rate)))
	}
	var lat *latency
	var c check
	if _, err := measure(ctx, cfg, fmt.Sprintf("r%d-js-wake", round), func(ctx context.Context) (err error) {
		lat, c, err = j.wake(ctx, cfg.WakeSamples, cfg.WakeGap, fmt.Sprintf("r%d", round))
		return err
	}); err != nil {
		return err
	}
	res.checks = append(res.checks, c)
	addLatency(res, "js", "jetstream", lat)
	say("round %d jetstream wake: p50 %s p99 %s", round, percentile(lat.fromAck, 50), percentile(lat.fromAck, 99))
	return nil
}

func addLatency(res *results, prefix, sys string, lat *latency) {
	name := map[string]string{"bf": "batfleet", "js": "JetStream"}[prefix]
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	res.add(prefix+"/wake/p50", name+": p50", "ms", ms(percentile(lat.fromAck, 50)))
	res.add(prefix+"/wake/p99", name+": p99", "ms", ms(percentile(lat.fromAck, 99)))
	res.add(prefix+"/wake/send-p50", name+": p50 from the start of the append/publish call", "ms", ms(percentile(lat.fromSend, 50)))
	res.add(prefix+"/wake/send-p99", name+": p99 from the start of the append/publish call", "ms", ms(percentile(lat.fromSend, 99)))
	if len(lat.toWake) > 0 {
		res.add(prefix+"/wake/to-wake-p50", name+": p50 of its first leg, call start → worker's park returns (epoch message)", "ms", ms(percentile(lat.toWake, 50)))
		res.add(prefix+"/wake/to-wake-p99", name+": p99 of its first leg", "ms", ms(percentile(lat.toWake, 99)))
		res.add(prefix+"/wake/pull-p50", name+": p50 of its second leg, park returns → handler start (one pull round trip)", "ms", ms(percentile(lat.wakeToStart, 50)))
		res.add(prefix+"/wake/pull-p99", name+": p99 of its second leg", "ms", ms(percentile(lat.wakeToStart, 99)))
	}
	res.add(prefix+"/wake/sched-p50", name+": Go scheduler latency p50 during the series (runnable → running, whole process)", "ms", ms(lat.sched.P50))
	res.add(prefix+"/wake/sched-p99", name+": Go scheduler latency p99 during the series", "ms", ms(lat.sched.P99))
	res.add(prefix+"/wake/sched-over1ms", name+": goroutine wake-ups that waited ≥ 1 ms for a CPU during the series", "n", float64(lat.sched.Over1ms))
	res.early[sys] += lat.early
}

// syncRecord runs each system once on a server with SyncAlways: JetStream
// publish and 1-puller batch-256 consumers; batfleet append and batch-256
// workers (whose KV checkpoints are then fsynced on every save).
func syncRecord(ctx context.Context, cfg config, res *results, say sayFunc) error {
	n := min(cfg.SyncEvents, cfg.Events)
	cfg.SyncEvents = n
	res.cfg.SyncEvents = n
	wl := newWorkload(n)
	batch := cfg.Batches[len(cfg.Batches)-1]
	if cfg.JetStream {
		j, err := startJetStream(cfg.Root, wl, true)
		if err != nil {
			return err
		}
		err = func() error {
			defer j.close()
			rctx, cancel := context.WithTimeout(ctx, cfg.RunTimeout)
			rate, err := j.publishAll(rctx, n)
			cancel()
			if err != nil {
				return err
			}
			res.record = append(res.record, recordRow{"JetStream PublishAsync, sync always", rate, "events/s", "an fsync per stream write"})
			say("sync-always jetstream publish: %s events/s", benchkit.Thousands(int64(rate)))
			for _, v := range jsVariants([]int{batch})[:4] {
				rctx, cancel := context.WithTimeout(ctx, cfg.RunTimeout)
				rate, c, err := j.consume(rctx, v, "sync")
				cancel()
				if err != nil {
					return err
				}
				res.checks = append(res.checks, c)
				res.record = append(res.record, recordRow{"JetStream " + v.String() + ", sync always", rate, "events/s", ""})
				say("sync-always jetstream %s: %s events/s", v, benchkit.Thousands(int64(rate)))
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	if cfg.Batfleet {
		b, err := startBatfleet(cfg.Root, wl, true)
		if err != nil {
			return err
		}
		defer b.close()
		rctx, cancel := context.WithTimeout(ctx, cfg.RunTimeout)
		rate, err := b.appendAll(rctx, n)
		cancel()
		if err != nil {
			return err
		}
		res.record = append(res.record, recordRow{"batfleet Client.Append, KV bucket on a sync-always server", rate, "events/s", "the journal fsyncs every group commit either way"})
		say("sync-always batfleet append: %s events/s", benchkit.Thousands(int64(rate)))
		for _, workers := range []int{1, 4} {
			label := fmt.Sprintf("batfleet %d worker(s), batch %d, sync always", workers, batch)
			rctx, cancel := context.WithTimeout(ctx, cfg.RunTimeout)
			rate, c, err := b.consume(rctx, label, workers, batch, fmt.Sprintf("sync-%dw", workers))
			cancel()
			if err != nil {
				return err
			}
			res.checks = append(res.checks, c)
			res.record = append(res.record, recordRow{label, rate, "events/s", "KV checkpoint fsynced on every save"})
			say("sync-always %s: %s events/s", label, benchkit.Thousands(int64(rate)))
		}
	}
	return nil
}
