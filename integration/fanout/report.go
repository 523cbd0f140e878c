package main

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/batfleet/batfleet/integration/internal/benchkit"
)

// holdFraction is how much of the requested rate counts as holding it.
const holdFraction = 0.99

type key struct {
	sys  string
	sh   shape
	rate int
}

// results collects every figure of a run, one value per round.
type results struct {
	cfg      config
	command  string
	machine  []string
	started  time.Time
	finished time.Time
	phases   map[key][]phaseResult
	idles    map[key][]idleResult // rate 0
	notes    []string
}

func newResults(cfg config) *results {
	return &results{cfg: cfg, phases: map[key][]phaseResult{}, idles: map[key][]idleResult{}}
}

func (r *results) addPhase(sys string, sh shape, rate int, p phaseResult) {
	k := key{sys, sh, rate}
	r.phases[k] = append(r.phases[k], p)
}

func (r *results) addIdle(sys string, sh shape, i idleResult) {
	k := key{sys, sh, 0}
	r.idles[k] = append(r.idles[k], i)
}

// values returns f of every round's result of k.
func (r *results) values(k key, f func(phaseResult) float64) []float64 {
	var out []float64
	for _, p := range r.phases[k] {
		out = append(out, f(p))
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cell renders the median of v and, for more than one value, its min–max.
func cell(v []float64, format string) string {
	if len(v) == 0 {
		return "–"
	}
	m := fmt.Sprintf(format, median(v))
	if len(v) == 1 {
		return m
	}
	return fmt.Sprintf("%s (%s–%s)", m, fmt.Sprintf(format, slices.Min(v)), fmt.Sprintf(format, slices.Max(v)))
}

func rateCell(v []float64) string {
	if len(v) == 0 {
		return "–"
	}
	t := func(x float64) string { return benchkit.Thousands(int64(math.Round(x))) }
	if len(v) == 1 {
		return t(v[0])
	}
	return fmt.Sprintf("%s (%s–%s)", t(median(v)), t(slices.Min(v)), t(slices.Max(v)))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func sysName(s string) string {
	if s == "jetstream" {
		return "JetStream"
	}
	return s
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// ratios returns median(a) / median(b) and the range of the per-round
// ratios a[i] / b[i].
func ratios(a, b []float64) (med, lo, hi float64) {
	med = median(a) / median(b)
	lo, hi = math.Inf(1), math.Inf(-1)
	for i := 0; i < len(a) && i < len(b); i++ {
		q := a[i] / b[i]
		lo, hi = math.Min(lo, q), math.Max(hi, q)
	}
	return med, lo, hi
}

// section is the fanout part of BENCHMARKS.md.
var section = benchkit.Section{Name: "fanout", By: "integration/fanout"}

// markdown renders the report.
func (r *results) markdown() string {
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	cfg := r.cfg
	w("## Idle fan-out: what idle consumers cost a busy journal, batfleet vs JetStream (one run)\n\n")
	w("Command (from the module root; `make bench-fanout`):\n\n```\n%s\n```\n\n", r.command)
	var shapes []string
	for _, sh := range cfg.shapes() {
		shapes = append(shapes, sh.String())
	}
	w("Run %s → %s (%s). %d round(s); in each, for W ∈ {%s} idle consumers, one fleet per system, the systems' order alternating from round to round; medians with min–max over the rounds.\n\n",
		r.started.Format(time.RFC3339), r.finished.Format("15:04:05"), r.finished.Sub(r.started).Round(time.Second), cfg.Rounds, strings.Join(shapes, ", "))
	w("**Machine.** Shared with other jobs while measuring; compare only within this run.\n\n")
	for _, m := range r.machine {
		w("- %s\n", m)
	}
	w("\n**Setup.** Each fleet gets a fresh server process and store directory:\n\n")
	w("- batfleet: the writer process — `internal/writerapp.Serve`, the code of `writer serve`, with its embedded nats-server %s (JetStream for the checkpoint bucket) on loopback TCP and `/metrics`; run as a child process of the harness (`fanout writer`, which adds net/http/pprof). Every append is fsynced before it is acknowledged.\n", natsserver.VERSION)
	w("- JetStream: a nats-server %s process built from this module's `github.com/nats-io/nats-server/v2`, stream `%s` on `fan.>` (file storage, 1 replica, the default `sync_interval` of 2 minutes: **not** fsynced per message).\n", natsserver.VERSION, streamName)
	w("- W idle consumers in one child process (`fanout idle`), %d per NATS connection (\"own conns\": one connection each, as idle workers in separate processes would have), started evenly over %s (one hold period, so their renewals are spread out), each holding a pull: batfleet durable workers (`delivery.StartWorker` over a shared `fleet.Client`, kvckpt checkpoints, idle timeout %s → held pulls of %s) on `entity=idle:<i>`; JetStream durable pull consumers filtered on `fan.idle.<i>`, each with `Consume` (pull expiry %s, heartbeat %s). No event ever matches them.\n",
		cfg.PerConn, cfg.Stagger, cfg.Hold, cfg.Hold, cfg.Hold, cfg.Hold/2)
	w("- In the harness process: one producer appending single events of %d bytes, paced open loop at R/s (event i due at start + i/R; up to %d appends in flight on its one connection) — batfleet `fleet.Client.Append` to entity `%s`, JetStream `js.Publish` to `%s` (waits for the PubAck); and one busy durable consumer of that entity or subject on its own connection, batch %d: a batfleet worker saving a KV checkpoint per batch, a JetStream `Consume` with explicit `Ack()` of every message.\n",
		payloadSize, cfg.InFlight, busyEntity, busySubject, cfg.Batch)
	if cfg.BusyMemory {
		w("- **This run's busy consumer keeps no progress at the server** (`--busy-memory`): an in-memory batfleet worker (no checkpoints), a JetStream consumer with AckNone.\n")
	}
	w("- Per fleet: %s with no appends, then per rate %s of warm-up and a %s measured window; the phase ends when the busy consumer has handled every event (each exactly once, checked).\n\n", cfg.IdleFor, cfg.Warmup, cfg.Window)
	w("**Figures.** *Achieved*: events of the window ÷ (last acknowledgement − the window's first due time). *Server CPU*: user + system CPU of the server process (`/proc/<pid>/stat`; batfleet: writer and embedded nats-server, JetStream: nats-server) over the window and until the busy consumer is done, ÷ events appended in the window. *Pull requests*: counted on the wire by a subscriber to the pull subjects (`batfleet.%s.pull`, classified by the requester's reply inbox; `$JS.API.CONSUMER.MSG.NEXT.%s.>`, by consumer name) ÷ events appended; *idle* ones can never match. *Busy ack → handler*: handler start minus the producer's receipt of the acknowledgement, per event (0 when the handler was first).\n\n", journalName, streamName)

	w("### Per configuration\n\n")
	w("| system | W | R requested | achieved appends/s | server CPU µs/append | pull requests/append | idle consumers' pulls/append | busy ack → handler p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, rate := range cfg.Rates {
		for _, sh := range cfg.shapes() {
			for _, sys := range cfg.Systems {
				k := key{sys, sh, rate}
				if len(r.phases[k]) == 0 {
					continue
				}
				w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", sysName(sys), sh, benchkit.Thousands(int64(rate)),
					rateCell(r.values(k, func(p phaseResult) float64 { return p.Achieved })),
					cell(r.values(k, func(p phaseResult) float64 { return p.ServerCPU }), "%.1f"),
					cell(r.values(k, func(p phaseResult) float64 { return p.Pulls }), "%.4f"),
					cell(r.values(k, func(p phaseResult) float64 { return p.IdlePulls }), "%.4f"),
					cell(r.values(k, func(p phaseResult) float64 { return ms(p.P50) }), "%.3f"),
					cell(r.values(k, func(p phaseResult) float64 { return ms(p.P99) }), "%.3f"))
			}
		}
	}

	w("\n### Context (medians over the rounds)\n\n")
	w("| system | W | R | writer's own pulls/append | epoch messages/append | messages to the idle fleet/append | idle pulls/s | idle holds woken early | busy: events per handler call | busy: checkpoint save p50 / p99 ms | busy: call start → handler p50 / p99 ms | append/publish latency p50 / p99 ms | handled before the ack | idle fleet CPU µs/append | harness CPU µs/append | waiting for a CPU, ms/s: server / harness |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, rate := range cfg.Rates {
		for _, sh := range cfg.shapes() {
			for _, sys := range cfg.Systems {
				k := key{sys, sh, rate}
				if len(r.phases[k]) == 0 {
					continue
				}
				med := func(format string, f func(phaseResult) float64) string {
					return fmt.Sprintf(format, median(r.values(k, f)))
				}
				dash := func(ok bool, s string) string {
					if !ok {
						return "–"
					}
					return s
				}
				bf, idle := sys == "batfleet", sh.W > 0
				w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s | %s | %s | %s / %s |\n", sysName(sys), sh, benchkit.Thousands(int64(rate)),
					dash(bf, med("%.4f", func(p phaseResult) float64 { return p.WriterPulls })),
					dash(bf, med("%.3f", func(p phaseResult) float64 { return p.Epochs })),
					dash(idle, med("%.3f", func(p phaseResult) float64 { return p.IdleMsgs })),
					med("%.1f", func(p phaseResult) float64 { return p.IdlePullsPerSec }),
					dash(bf && idle, med("%.0f", func(p phaseResult) float64 { return float64(p.IdleEarly) })),
					med("%.2f", func(p phaseResult) float64 { return p.PerBatch }),
					dash(bf && !cfg.BusyMemory, med("%.3f", func(p phaseResult) float64 { return ms(p.SaveP50) })+" / "+med("%.3f", func(p phaseResult) float64 { return ms(p.SaveP99) })),
					med("%.3f", func(p phaseResult) float64 { return ms(p.SendP50) }), med("%.3f", func(p phaseResult) float64 { return ms(p.SendP99) }),
					med("%.3f", func(p phaseResult) float64 { return ms(p.AckP50) }), med("%.3f", func(p phaseResult) float64 { return ms(p.AckP99) }),
					med("%.0f %%", func(p phaseResult) float64 { return 100 * float64(p.BeforeAck) / float64(p.Events) }),
					dash(idle, med("%.1f", func(p phaseResult) float64 { return p.IdleCPU })),
					med("%.1f", func(p phaseResult) float64 { return p.SelfCPU }),
					med("%.0f", func(p phaseResult) float64 { return p.ServerWait }), med("%.0f", func(p phaseResult) float64 { return p.SelfWait }))
			}
		}
	}
	w("\n*Writer's own pulls*: `batfleet_writer_pulls_total` from the writer's `/metrics` (pulls answered). *Epoch messages*: `batfleet_writer_epochs_total` per append (one per group commit); they go to the clients subscribed to them. *Messages to the idle fleet*: every message its connections received (`nats.Conn` statistics: pull replies and renewals, heartbeats, epoch messages), per append. *Idle holds woken early*: batfleet idle workers' held pulls (`PollWait`) that returned before 90 %% of their wait — a wake-up without a match — counted in the idle process. *Events per handler call*: the busy consumer's batches (JetStream's `Consume` hands over one message per call). *Checkpoint save*: the busy batfleet worker's KV compare-and-swap per batch, timed around `Save`. *Handled before the ack*: events the busy consumer handled before the producer had the acknowledgement (counted as 0 ms above). The harness CPU covers the producer, the busy consumer and the monitor. *Waiting for a CPU*: time the process's threads were runnable but not running (`/proc/<pid>/task/*/schedstat`), per second of the window: the machine's CPU contention as each process felt it.\n")

	w("\n### No appends (the idle fleet's own cost)\n\n")
	w("| system | W | server CPU ms/s | idle pull requests/s | idle fleet CPU ms/s |\n|---|---:|---:|---:|---:|\n")
	for _, sh := range cfg.shapes() {
		for _, sys := range cfg.Systems {
			is := r.idles[key{sys, sh, 0}]
			if len(is) == 0 {
				continue
			}
			get := func(f func(idleResult) float64) []float64 {
				var out []float64
				for _, i := range is {
					out = append(out, f(i))
				}
				return out
			}
			w("| %s | %s | %s | %s | %s |\n", sysName(sys), sh,
				cell(get(func(i idleResult) float64 { return i.ServerCPU }), "%.2f"),
				cell(get(func(i idleResult) float64 { return i.IdlePullsPerSec }), "%.1f"),
				cell(get(func(i idleResult) float64 { return i.IdleFleetCPU }), "%.2f"))
		}
	}

	r.targets(&b)

	if len(r.notes) > 0 {
		w("\n### Irregularities (included in the figures)\n\n")
		for _, n := range r.notes {
			w("- %s\n", n)
		}
	} else {
		w("\nNo irregularities: every event was handled exactly once by the busy consumer, none reached an idle consumer, no consumer errors or missed heartbeats.\n")
	}
	return b.String()
}

// targets renders the targets at the largest W sharing connections (the
// set-up the targets are for), and at each W on connections of their own,
// against W=0 and against JetStream at the same W.
func (r *results) targets(b *bytes.Buffer) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	cfg := r.cfg
	big := slices.Max(cfg.Ws)
	if !slices.Contains(cfg.Ws, 0) || !slices.Contains(cfg.Systems, "batfleet") {
		return
	}
	var shapes []shape
	if big > 0 {
		shapes = append(shapes, shape{W: big})
	}
	for _, sh := range cfg.shapes() {
		if sh.Own {
			shapes = append(shapes, sh)
		}
	}
	if len(shapes) == 0 {
		return
	}
	w("\n### Targets (batfleet, same run)\n\n")
	w("| W | R | target | figure | met |\n|---|---:|---|---|---|\n")
	for _, sh := range shapes {
		for _, rate := range cfg.Rates {
			bf, bf0, js := key{"batfleet", sh, rate}, key{"batfleet", shape{}, rate}, key{"jetstream", sh, rate}
			if len(r.phases[bf]) == 0 || len(r.phases[bf0]) == 0 {
				continue
			}
			row := func(target, figure string, ok bool) {
				w("| %s | %s | %s | %s | %s |\n", sh, benchkit.Thousands(int64(rate)), target, figure, yesNo(ok))
			}
			ach := r.values(bf, func(p phaseResult) float64 { return p.Achieved })
			row(fmt.Sprintf("producer holds the requested rate (≥ %.0f %%)", holdFraction*100),
				fmt.Sprintf("%s/s, min %s/s", benchkit.Thousands(int64(math.Round(median(ach)))), benchkit.Thousands(int64(math.Round(slices.Min(ach))))), median(ach) >= holdFraction*float64(rate))
			cpu := func(k key) []float64 { return r.values(k, func(p phaseResult) float64 { return p.ServerCPU }) }
			m, lo, hi := ratios(cpu(bf), cpu(bf0))
			row("writer CPU per append ≤ 1.5× its W=0 figure",
				fmt.Sprintf("%.1f vs %.1f µs: %.2f× (per round %.2f–%.2f×)", median(cpu(bf)), median(cpu(bf0)), m, lo, hi), m <= 1.5)
			if len(r.phases[js]) > 0 {
				m, lo, hi := ratios(cpu(bf), cpu(js))
				row("writer CPU per append ≤ JetStream server's (same W)",
					fmt.Sprintf("%.1f vs %.1f µs: %.2f× (per round %.2f–%.2f×)", median(cpu(bf)), median(cpu(js)), m, lo, hi), m <= 1)
			}
			np := r.values(bf, func(p phaseResult) float64 { return p.IdlePulls })
			early := r.values(bf, func(p phaseResult) float64 { return float64(p.IdleEarly) / float64(p.Events) })
			pps := r.values(bf, func(p phaseResult) float64 { return p.IdlePullsPerSec })
			row("non-matching pulls per append ≤ 0.01",
				fmt.Sprintf("%.4f (max %.4f) = %.1f pulls/s ÷ R: hold renewals, W ÷ %s = %.1f/s; woken without a match: %.4f per append",
					median(np), slices.Max(np), median(pps), cfg.Hold, float64(sh.W)/cfg.Hold.Seconds(), median(early)), median(np) <= 0.01)
			p99 := func(k key) []float64 { return r.values(k, func(p phaseResult) float64 { return ms(p.P99) }) }
			row("busy worker wake p99 ≤ 1 ms", fmt.Sprintf("%.3f ms (per round %.3f–%.3f)", median(p99(bf)), slices.Min(p99(bf)), slices.Max(p99(bf))), median(p99(bf)) <= 1)
			m, lo, hi = ratios(p99(bf), p99(bf0))
			row("busy worker wake p99 within 10 % of its W=0 figure",
				fmt.Sprintf("%.3f vs %.3f ms: %.2f× (per round %.2f–%.2f×)", median(p99(bf)), median(p99(bf0)), m, lo, hi), m <= 1.10)
		}
	}
	w("\nRatios are of medians; per round: the same round's figure ÷ that round's W=0 figure (or JetStream's). A target is met when its median is. The targets are stated for idle consumers sharing a few connections; the rows for idle consumers on connections of their own are the same targets applied to that set-up.\n")
}
