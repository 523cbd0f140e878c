package main

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/batfleet/batfleet/integration/internal/benchkit"
)

// results collects every figure of a run.
type results struct {
	cfg      config
	command  string
	machine  []string
	started  time.Time
	finished time.Time
	scaling  []scalingResult
	churn    []churnResult
}

// section is the consumer-groups part of BENCHMARKS.md.
var section = benchkit.Section{Name: "groups", By: "integration/groupbench"}

func sysName(s string) string {
	switch s {
	case sysJS:
		return "JetStream (shared durable)"
	case sysPCG:
		return "pcgroups v0.2.2 (elastic)"
	}
	return s
}

func yesNo(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func (r *results) scale(sys string, n int) *scalingResult {
	for i := range r.scaling {
		if r.scaling[i].sys == sys && r.scaling[i].n == n {
			return &r.scaling[i]
		}
	}
	return nil
}

func (r *results) churnOf(sys string) *churnResult {
	for i := range r.churn {
		if r.churn[i].sys == sys {
			return &r.churn[i]
		}
	}
	return nil
}

// efficiency is steady(N) ÷ (N × steady(1)).
func (r *results) efficiency(sys string, n int) (float64, bool) {
	one, s := r.scale(sys, 1), r.scale(sys, n)
	if one == nil || s == nil || one.steady == 0 {
		return 0, false
	}
	return s.steady / (float64(n) * one.steady), true
}

func durs(ds []time.Duration) string {
	if len(ds) == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s / %s (n=%d)", fmtDur(percentile(ds, 50)), fmtDur(percentile(ds, 99)), fmtDur(percentile(ds, 100)), len(ds))
}

// markdown renders the report.
func (r *results) markdown() string {
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	cfg := r.cfg
	w("## Consumer groups: batfleet vs pcgroups vs plain JetStream (one run)\n\n")
	w("Command (`make bench-groups`; `GROUPS_QUICK=1 make bench-groups` is a smoke run to stdout):\n\n```\n%s\n```\n\n", r.command)
	w("Run %s → %s (%s). Systems in turn, each on a fresh server; same events, handler, member counts and kills for each.\n\n",
		r.started.Format(time.RFC3339), r.finished.Format("15:04:05"), r.finished.Sub(r.started).Round(time.Second))
	w("**Machine.** Shared with other jobs while measuring; absolute numbers are noise, compare ratios within this run.\n\n")
	for _, m := range r.machine {
		w("- %s\n", m)
	}
	w("\n**Setup.**\n\n")
	w("- Events: event *i* belongs to entity `e<i mod %s>` and carries its index in a %d-byte payload. batfleet: appended to the writer in order (scope `%s`); JetStream and pcgroups: published in order to `%s.<entity>` on stream `%s` (file storage, 1 replica).\n",
		benchkit.Thousands(int64(cfg.Entities)), payloadSize, scopeName, subjectRoot, streamName)
	w("- Handler (the same in every system): a batch of up to %d events waits %s (an I/O-bound projection), **one batch at a time per member process** (`--slots %d`), then the batch is logged (start, end, event indices: one write per batch). batfleet hands it batches directly; pcgroups and JetStream hand over one message per callback, so a batcher collects up to %d (or fewer once the first has waited %s), then acks each message explicitly after the handler.\n",
		cfg.Batch, cfg.Sleep, cfg.Slots, cfg.Batch, cfg.Flush)
	w("- batfleet: the writer process (`internal/writerapp.Serve`, the code of `writer serve`, embedded nats-server %s, JetStream KV for checkpoints and the groups bucket); each member a Go child process (`groupbench member`) calling `fleet.JoinGroup` (what `fleet.RunWorker` with `WorkerOptions.Group` and `worker run --group` run), region `scope=%s`, P = %d, session %s (heartbeat 1 s), batch %d, a KV checkpoint per batch.\n",
		natsserver.VERSION, scopeName, cfg.Partitions, cfg.Session, cfg.Batch)
	w("- pcgroups: `github.com/synadia-io/orbit.go/pcgroups` v0.2.2 elastic groups on a nats-server %s process built from this module: `CreateElastic` with %d partitions on `%s.*` (partition = the server's FNV-1a 32 of the entity token mod %d), membership by `AddMembers`/`DeleteMembers`, each member `ElasticConsume` with explicit acks and AckWait = %s (pcgroups derives the pinned TTL %s, pull expiry %s and inactive threshold from it).\n",
		natsserver.VERSION, cfg.Partitions, subjectRoot, cfg.Partitions, cfg.Session, cfg.Session, max(cfg.Session/2, time.Second))
	w("- JetStream: the same nats-server; N pullers sharing one durable (explicit ack, AckWait %s, MaxAckPending 1,000 × N), each `Consume` with pull expiry %s; no per-key order.\n\n",
		cfg.Session, max(cfg.Session/2, time.Second))

	if len(r.scaling) > 0 {
		w("### Scaling: draining %s loaded events\n\n", benchkit.Thousands(int64(cfg.Events)))
		w("Each N drains the whole load with a new group (pcgroups: a new elastic group, whose work-queue stream sourced the load before the run; JetStream: a new durable). Members start with their handler gated (a batch waits ≤ 1 s for the gate) until all have joined (batfleet: until the partitions are balanced), then the gate opens. *Steady*: the middle 80 %% of the events, in the order they were first handled, over the time they took. *Whole*: every event after the gate opened ÷ (last handled − gate opened). *Scaling*: steady(N) ÷ (N × steady(1)). CPU in cores (CPU seconds per second of the run).\n\n")
		w("| system | N | steady events/s | whole events/s | scaling | server CPU | members' CPU | events per batch | repeats | out of order |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, sys := range cfg.Systems {
			for _, n := range cfg.Members {
				s := r.scale(sys, n)
				if s == nil {
					continue
				}
				eff := "–"
				if e, ok := r.efficiency(sys, n); ok {
					eff = fmt.Sprintf("%.2f", e)
				}
				w("| %s | %d | %s | %s | %s | %.2f | %.2f | %.1f | %s | %s |\n", sysName(sys), n,
					benchkit.Thousands(int64(s.steady)), benchkit.Thousands(int64(s.whole)), eff, s.serverCores, s.memberCores, s.avgBatch,
					benchkit.Thousands(int64(s.repeats)), benchkit.Thousands(int64(s.orderViol)))
			}
		}
		w("\n**Where scaling stops** (the first N below 0.9, and the CPU the server and the members then used, of the machine's %d cores; other jobs' CPU not counted):", runtime.NumCPU())
		for _, sys := range cfg.Systems {
			stop := "scales to the largest N measured"
			for _, n := range cfg.Members {
				if e, ok := r.efficiency(sys, n); ok && e < 0.9 {
					s := r.scale(sys, n)
					stop = fmt.Sprintf("N=%d (%.2f): server %.2f cores + members %.2f cores", n, e, s.serverCores, s.memberCores)
					break
				}
			}
			w(" %s — %s;", sys, stop)
		}
		w("\n")
		w("\nLoad (append or publish, in order, one request in flight; pcgroups: until every group's stream had sourced it): ")
		var loads []string
		for _, sys := range cfg.Systems {
			if s := r.scale(sys, cfg.Members[0]); s != nil {
				loads = append(loads, fmt.Sprintf("%s %s (%s events/s)", sys, s.load.Round(100*time.Millisecond), benchkit.Thousands(int64(float64(cfg.Events)/s.load.Seconds()))))
			}
		}
		w("%s.\n\n", strings.Join(loads, ", "))
		if contains(cfg.Systems, sysBatfleet) && len(cfg.Systems) > 1 {
			w("**Ratios (steady throughput, same run):**\n\n| N | batfleet ÷ pcgroups | batfleet ÷ JetStream |\n|---:|---:|---:|\n")
			for _, n := range cfg.Members {
				bf := r.scale(sysBatfleet, n)
				if bf == nil {
					continue
				}
				ratio := func(sys string) string {
					if o := r.scale(sys, n); o != nil && o.steady > 0 {
						return fmt.Sprintf("%.2f", bf.steady/o.steady)
					}
					return "–"
				}
				w("| %d | %s | %s |\n", n, ratio(sysPCG), ratio(sysJS))
			}
			w("\n")
		}
	}

	if len(r.churn) > 0 {
		w("### Failover and rebalancing: %d members on a live stream of %s events/s\n\n", cfg.ChurnMembers, benchkit.Thousands(int64(cfg.Rate)))
		w("Per system: %s warm-up, then %d × (kill -9 of a member, %s, a replacement starts, %s), then %d × (graceful leave, %s, join, %s). batfleet and JetStream: the victim is the oldest member, the replacement a new member (a join). pcgroups has no liveness-driven reassignment (membership is administrative), so each member name runs **two instances** — its high-availability model: the pinned one and a standby the server pins once the pinned TTL has passed without pulls; the victim is the instance handling batches, the replacement a new standby. A graceful pcgroups leave is `DeleteMembers` then stopping that name's instances; a join starts two instances of a new name, then `AddMembers`.\n\n",
			cfg.Warmup, cfg.Kills, cfg.FailWait, cfg.Settle, cfg.Graceful, cfg.Settle, cfg.Settle)
		w("Figures from the batch logs (all processes on one machine share its clock). A partition's *visits* are the batches holding any of its events (JetStream has no partitions: its flow is sliced by batfleet's partition function, and nothing \"moves\"). *Failover*: per (kill, partition the victim handled in its last second), kill → first batch of that partition by another process. *Backlog closed*: per kill, until every event stored before the kill has been handled (for JetStream: until the victim's unacknowledged messages were redelivered and handled). *Moved*: per partition whose process changed after a graceful leave or join (filed under the action whose window holds the new owner's first batch; one that finishes after a kill, under the last leave or join), the old owner's last batch end → the new owner's first batch start. *Unmoved*: per (leave or join, partition that did not move), its longest pause until the next action (a partition still between two owners at the next action counts as moved there); *quiet*: the same in the 1.5 s before each action, for partitions not changing owner then (the baseline). *Unaffected partitions during failover*: those the victim did not hold and that did not change owner. *Repeats*: events handled again. Durations as p50 / p99 / max.\n\n")
		w("| system | kills | failover | never resumed | backlog closed | repeats per kill (median) | unaffected partitions' longest pause during failover |\n|---|---:|---|---:|---|---:|---|\n")
		for _, sys := range cfg.Systems {
			c := r.churnOf(sys)
			if c == nil {
				continue
			}
			fo := durs(c.fig.failover)
			if sys == sysJS {
				fo = "n/a (no partitions)"
			}
			w("| %s | %d | %s | %d | %s | %s | %s |\n", sysName(sys), c.kills, fo, c.fig.unresumed, durs(c.fig.backlog),
				medianInt(c.fig.killRepeat), durs(c.fig.killUnaffected))
		}
		w("\n| system | leaves / joins | moved partitions' pause | on leave | on join | unmoved partitions' longest pause | quiet baseline | repeats on graceful moves |\n|---|---:|---|---|---|---|---|---:|\n")
		for _, sys := range cfg.Systems {
			c := r.churnOf(sys)
			if c == nil {
				continue
			}
			mv, ml, mj := durs(c.fig.moved), durs(c.fig.movedLeave), durs(c.fig.movedJoin)
			if sys == sysJS {
				mv, ml, mj = "n/a", "n/a", "n/a"
			}
			w("| %s | %d / %d | %s | %s | %s | %s | %s | %s |\n", sysName(sys), c.leaves, c.joins, mv, ml, mj,
				durs(c.fig.unmoved), durs(c.fig.quiet), benchkit.Thousands(int64(c.fig.gracefulRepeat)))
		}
		w("\n| system | events produced | achieved rate | member processes started | events repeated (all) | out of per-entity order | phase time |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, sys := range cfg.Systems {
			c := r.churnOf(sys)
			if c == nil {
				continue
			}
			w("| %s | %s | %s/s | %d | %s | %s | %s |\n", sysName(sys), benchkit.Thousands(int64(c.produced)), benchkit.Thousands(int64(c.rate)), c.processes,
				benchkit.Thousands(int64(c.repeats)), benchkit.Thousands(int64(c.orderViol)), c.duration.Round(time.Second))
		}
		w("\n*Out of per-entity order*: events handled for the first time after a later event of the same entity had been handled.\n\n")
	}
	r.targets(&b)
	var notes []string
	for _, s := range r.scaling {
		for _, n := range s.notes {
			notes = append(notes, fmt.Sprintf("scaling, %s, N=%d: %s", s.sys, s.n, n))
		}
		if s.preGo > 0 {
			notes = append(notes, fmt.Sprintf("scaling, %s, N=%d: %s events handled before the gate opened (not in the rates)", s.sys, s.n, benchkit.Thousands(int64(s.preGo))))
		}
	}
	for _, c := range r.churn {
		for _, n := range c.notes {
			notes = append(notes, fmt.Sprintf("churn, %s: %s", c.sys, n))
		}
		if c.maxLag > 100*time.Millisecond {
			notes = append(notes, fmt.Sprintf("churn, %s: the producer fell up to %s behind its schedule", c.sys, c.maxLag.Round(time.Millisecond)))
		}
		if c.distinct != int(c.produced) {
			notes = append(notes, fmt.Sprintf("churn, %s: %d of %d events handled", c.sys, c.distinct, c.produced))
		}
	}
	if len(notes) > 0 {
		w("\n### Irregularities (included in the figures)\n\n")
		for _, n := range notes {
			w("- %s\n", n)
		}
	}
	return b.String()
}

func medianInt(v []int) string {
	if len(v) == 0 {
		return "–"
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return benchkit.Thousands(int64(s[len(s)/2]))
}

// targets renders batfleet's targets, met or missed (never asserted).
func (r *results) targets(b *bytes.Buffer) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	cfg := r.cfg
	if !contains(cfg.Systems, sysBatfleet) {
		return
	}
	w("### Targets (batfleet, this run)\n\n| target | figure | |\n|---|---|---|\n")
	if one := r.scale(sysBatfleet, 1); one != nil {
		for _, n := range cfg.Members {
			if n == 1 {
				continue
			}
			if e, ok := r.efficiency(sysBatfleet, n); ok {
				s := r.scale(sysBatfleet, n)
				w("| N=%d: throughput ≥ 0.9 × N × one member's | %s vs %d × %s events/s = %.2f (writer process %.2f cores, members %.2f cores of %d) | %s |\n",
					n, benchkit.Thousands(int64(s.steady)), n, benchkit.Thousands(int64(one.steady)), e, s.serverCores, s.memberCores, runtime.NumCPU(), yesNo(e >= 0.9))
			}
		}
	}
	if c := r.churnOf(sysBatfleet); c != nil {
		p99 := percentile(c.fig.failover, 99)
		w("| kill -9: p99 until each partition resumes elsewhere ≤ 4 s | p99 %s over %d partitions of %d kills (%d never resumed) | %s |\n",
			fmtDur(p99), len(c.fig.failover), c.kills, c.fig.unresumed, yesNo(len(c.fig.failover) > 0 && p99 <= 4*time.Second && c.fig.unresumed == 0))
		mp := percentile(c.fig.moved, 99)
		w("| graceful leave/join: moved partitions resume ≤ 500 ms p99 | p99 %s over %d moves | %s |\n", fmtDur(mp), len(c.fig.moved), yesNo(len(c.fig.moved) > 0 && mp <= 500*time.Millisecond))
		um := percentile(c.fig.unmoved, 100)
		w("| longest pause of a partition that did not move ≤ 100 ms | max %s (p99 %s; quiet baseline max %s) | %s |\n", fmtDur(um), fmtDur(percentile(c.fig.unmoved, 99)), fmtDur(percentile(c.fig.quiet, 100)), yesNo(um <= 100*time.Millisecond))
		w("| events redelivered on graceful moves = 0 | %d | %s |\n", c.fig.gracefulRepeat, yesNo(c.fig.gracefulRepeat == 0))
	}
	w("\nA target is judged on this run's figures; none is asserted as a limit.\n")
}
