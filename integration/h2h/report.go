package main

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/batfleet/batfleet/integration/internal/benchkit"
)

// series is one figure measured once per round.
type series struct {
	Key    string
	Label  string
	Unit   string // "events/s" or "ms"
	Values []float64
}

func (s *series) median() float64 { return median(s.Values) }

func (s *series) span() (float64, float64) {
	if len(s.Values) == 0 {
		return math.NaN(), math.NaN()
	}
	return slices.Min(s.Values), slices.Max(s.Values)
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

// percentile is the nearest-rank percentile of d (p in 0..100).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(rank, len(s)-1))]
}

// results collects every figure of a run.
type results struct {
	cfg      config
	command  string
	machine  []string
	started  time.Time
	finished time.Time
	series   map[string]*series
	order    []string
	checks   []check
	early    map[string]int // wake samples whose handler started before the ack, by system
	record   []recordRow    // the sync-always run
	notes    []string
	cpu      map[string][]float64 // process CPU µs per event, by figure key, per round
}

type recordRow struct {
	Label string
	Value float64
	Unit  string
	Note  string
}

func newResults(cfg config) *results {
	return &results{cfg: cfg, series: map[string]*series{}, early: map[string]int{}, cpu: map[string][]float64{}}
}

// addCPU records the process CPU time a measured run of n events used.
func (r *results) addCPU(key string, cpu time.Duration, n int) {
	r.cpu[key] = append(r.cpu[key], float64(cpu.Microseconds())/float64(n))
}

func (r *results) cpuMedian(key string) float64 { return median(r.cpu[key]) }

func (r *results) add(key, label, unit string, v float64) {
	s, ok := r.series[key]
	if !ok {
		s = &series{Key: key, Label: label, Unit: unit}
		r.series[key] = s
		r.order = append(r.order, key)
	}
	s.Values = append(s.Values, v)
}

// bestOf returns the key among keys with the highest median.
func (r *results) bestOf(keys []string) (string, bool) {
	best, found := "", false
	for _, k := range keys {
		s, ok := r.series[k]
		if !ok {
			continue
		}
		if !found || s.median() > r.series[best].median() {
			best, found = k, true
		}
	}
	return best, found
}

// ratioRow is batfleet ÷ the best of some JetStream figures.
type ratioRow struct {
	Label  string
	BF     string
	JS     []string
	Target float64 // 0: no target
	Lower  bool    // a latency: lower is better, the ratio is shown for context
}

func (r *results) ratioRows() []ratioRow {
	keys := func(pullers, batch int, ack string) []string {
		var ks []string
		for _, mode := range []string{"fetch", "consume"} {
			for _, a := range []string{"explicit", "ackall"} {
				if ack == "" || ack == a {
					ks = append(ks, fmt.Sprintf("js/%s/%dp/b%d/%s", mode, pullers, batch, a))
				}
			}
		}
		return ks
	}
	var rows []ratioRow
	for _, b := range r.cfg.Batches {
		t1, t2 := 0.0, 0.0
		if b == 256 {
			t1, t2 = 2, 4
		}
		rows = append(rows,
			ratioRow{Label: fmt.Sprintf("1 worker, batch %d ÷ best 1-puller AckAll", b), BF: fmt.Sprintf("bf/1w/b%d", b), JS: keys(1, b, "ackall"), Target: t1},
			ratioRow{Label: fmt.Sprintf("1 worker, batch %d ÷ best 1-puller explicit ack", b), BF: fmt.Sprintf("bf/1w/b%d", b), JS: keys(1, b, "explicit"), Target: t2})
	}
	for _, b := range r.cfg.Batches {
		rows = append(rows, ratioRow{Label: fmt.Sprintf("4 workers, batch %d ÷ best 4-puller explicit ack", b), BF: fmt.Sprintf("bf/4w/b%d", b), JS: keys(4, b, "explicit"), Target: 3})
	}
	rows = append(rows,
		ratioRow{Label: "durable append over NATS ÷ async publish", BF: "bf/append", JS: []string{"js/publish"}, Target: 1.5},
		ratioRow{Label: "idle wake p50, append/publish call start → handler start (lower is better)", BF: "bf/wake/send-p50", JS: []string{"js/wake/send-p50"}, Lower: true},
		ratioRow{Label: "idle wake p99, append/publish call start → handler start (lower is better)", BF: "bf/wake/send-p99", JS: []string{"js/wake/send-p99"}, Lower: true},
	)
	return rows
}

// ratio computes a row: the ratio of medians (against the JetStream
// figure with the best median) and the range of per-round ratios (against
// that round's best JetStream figure).
func (r *results) ratio(row ratioRow) (med, lo, hi float64, jsKey string, ok bool) {
	bf, okb := r.series[row.BF]
	if !okb {
		return 0, 0, 0, "", false
	}
	var jsKeys []string
	for _, k := range row.JS {
		if _, ok := r.series[k]; ok {
			jsKeys = append(jsKeys, k)
		}
	}
	if len(jsKeys) == 0 {
		return 0, 0, 0, "", false
	}
	if row.Lower {
		jsKey = jsKeys[0]
	} else {
		jsKey, _ = r.bestOf(jsKeys)
	}
	if r.series[jsKey].median() <= 0 {
		return 0, 0, 0, "", false
	}
	med = bf.median() / r.series[jsKey].median()
	lo, hi = math.Inf(1), math.Inf(-1)
	for i, v := range bf.Values {
		best := math.NaN()
		for _, k := range jsKeys {
			if vals := r.series[k].Values; i < len(vals) && (math.IsNaN(best) || vals[i] > best) {
				best = vals[i]
			}
		}
		if math.IsNaN(best) || best <= 0 {
			continue
		}
		q := v / best
		lo, hi = math.Min(lo, q), math.Max(hi, q)
	}
	return med, lo, hi, jsKey, true
}

func fmtValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "–"
	}
	if unit == "ms" {
		return fmt.Sprintf("%.3f", v)
	}
	return benchkit.Thousands(int64(math.Round(v)))
}

// section is the head-to-head part of BENCHMARKS.md.
var section = benchkit.Section{Name: "h2h", By: "integration/h2h"}

// markdown renders the report.
func (r *results) markdown() string {
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	cfg := r.cfg
	w("## batfleet vs JetStream pull consumers, head to head (one run)\n\n")
	w("Command (from the module root):\n\n```\n%s\n```\n\n", r.command)
	w("Run %s → %s (%s). %s events of %d-byte payloads across %s entities; %d round(s), systems alternated (batfleet, JetStream, batfleet, JetStream, …), each on a fresh embedded nats-server and store directory per round; medians with min–max over the rounds. Wake latency: %s samples per round.\n\n",
		r.started.Format(time.RFC3339), r.finished.Format("15:04:05"), r.finished.Sub(r.started).Round(time.Second),
		benchkit.Thousands(int64(cfg.Events)), payloadSize, benchkit.Thousands(numEntities), cfg.Rounds, benchkit.Thousands(int64(cfg.WakeSamples)))
	w("**Machine.** The numbers are noisy: the machine is shared and other jobs ran during the measurement; compare only within this run.\n\n")
	for _, m := range r.machine {
		w("- %s\n", m)
	}
	w("\n**Durability settings.**\n\n")
	w("- Each system runs on an embedded nats-server %s of its own per round (JetStream, file storage in a fresh store directory, 1 replica, the server's default `sync_interval` of 2 minutes), in this process, reached over loopback TCP; every node (writer, producer, each worker or puller, publisher) has its own connection.\n", server.VERSION)
	w("- batfleet journal: every append is fsynced (group commit) before it is acknowledged and becomes visible. Append figures are with that fsync.\n")
	w("- JetStream stream: file storage with the default sync — a PubAck means written to the OS, fsynced within 2 minutes, **not fsynced per message**. The append ratio therefore compares an fsynced append with a non-fsynced publish; the `sync_interval: always` record below shows JetStream with an fsync per write.\n")
	w("- Consumer progress: batfleet saves a KV compare-and-swap checkpoint (R1 file bucket, same server, same default sync) after every batch and waits for it; JetStream acks with the client's fire-and-forget `Ack()` (it does not wait for the server): with Fetch after each batch is handled (explicit: every message of the batch; AckAll: its last message), with Consume as messages are handled (explicit: each message; AckAll: every batch-th message and the last), and a run counts as done only when the consumer's ack floor has reached the last message with nothing pending.\n\n")
	w("**Workload and handler.** The same events for both: event i is on entity `i %% 10000` (batfleet entity `ent:p<e%%4>:e<e>`, scope `bench`; JetStream subject `ent.p<e%%4>.e<e>`), 100-byte payload starting with i. The same handler reads every payload byte (a byte sum) and records the event index; every run is checked to have handled each event exactly once with the right byte sum.\n\n")
	w("- batfleet: 1 remote worker on region `entity=ent` (all events), or 4 remote workers on the disjoint regions `ent:p0`…`ent:p3`; durable (`fleet.StartWorker` with a `kvckpt` store), idle timeout 1 s. Appends: `fleet.Client.Append`, %d events per request, %d requests in flight.\n", appendBatch, appendInFlight)
	w("- JetStream: one durable pull consumer (deliver all, MaxAckPending %d) per run, shared by 1 or 4 pullers; `Fetch(batch)` with a %s max wait (`FetchMaxWait`: the server ends each fetch; a run is timed to its last event handled and acknowledged), or `Consume` with `PullMaxMessages(batch)` and a %s pull expiry; AckAll only with one puller (on a shared durable it would ack other pullers' unhandled messages). Publishing: `PublishAsync` with the client's default window (4,000 pending).\n\n", maxAckPending, fetchWait, consumeExpiry)

	w("### Consumer throughput (events/s to the handler, until the last event is handled and committed/acked)\n\n")
	w("| system | configuration | median | min–max | per round | CPU µs/event |\n|---|---|---:|---:|---|---:|\n")
	for _, k := range r.order {
		s := r.series[k]
		if s.Unit != "events/s" || k == "bf/append" || k == "js/publish" {
			continue
		}
		r.row(&b, s)
	}
	w("\n### Durable append over NATS (events/s)\n\n")
	w("| system | configuration | median | min–max | per round | CPU µs/event |\n|---|---|---:|---:|---|---:|\n")
	for _, k := range []string{"bf/append", "js/publish"} {
		if s, ok := r.series[k]; ok {
			r.row(&b, s)
		}
	}
	w("\nbatfleet's figure includes an fsync of every group commit; JetStream's does not include per-message fsync (default `sync_interval`: 2 min). See the `sync_interval: always` record below.\n")
	w("\n### Idle wake latency (acknowledged append/publish → handler start, ms)\n\n")
	w("| system | percentile | median | min–max | per round |\n|---|---|---:|---:|---|\n")
	for _, k := range r.order {
		if s := r.series[k]; s.Unit == "ms" || s.Unit == "n" {
			r.row(&b, s)
		}
	}
	for _, sys := range []string{"batfleet", "jetstream"} {
		if n, ok := r.early[sys]; ok && n > 0 {
			w("\n%s: in %d samples the handler started before the acknowledgement reached the producer; they count as 0 ms.", sys, n)
		}
	}
	w("\nbatfleet: one durable remote worker (batch 64, KV checkpoint per batch) parked on an idle region; each sample appends one event with `fleet.Client.Append` once the worker has committed the previous one, parked, and stayed idle %s. JetStream: one durable `Consume` puller (batch 64, explicit ack) holding a pull request; each sample is one synchronous `Publish` (waits for the PubAck) after the previous message was handled and acked and %s passed. batfleet's path after the acknowledgement is one epoch message (one way) plus one pull request/reply; the core NATS baseline is a bare request/reply between two connections of the same server, measured right after batfleet's series with the same spacing — the floor any round trip on this machine paid at that moment. The scheduler rows are the Go runtime's own histogram (`/sched/latencies`) over each series: time a goroutine waited for a CPU slot inside this process (not OS-level preemption of the process's threads).\n", cfg.WakeGap, cfg.WakeGap)

	w("\n### Ratios: batfleet ÷ JetStream (same run)\n\n")
	w("| comparison | JetStream figure used | ratio of medians | per-round range | target | met | CPU per event, JetStream ÷ batfleet |\n|---|---|---:|---:|---|---|---:|\n")
	for _, row := range r.ratioRows() {
		med, lo, hi, jsKey, ok := r.ratio(row)
		if !ok {
			continue
		}
		target, met := "–", "–"
		if row.Target > 0 {
			target = fmt.Sprintf("≥ %.1f×", row.Target)
			met = yesNo(med >= row.Target)
		}
		cpu := "–"
		if bc, jc := r.cpuMedian(row.BF), r.cpuMedian(jsKey); bc > 0 && jc > 0 {
			cpu = fmt.Sprintf("%.2f×", jc/bc)
		}
		w("| %s | %s | %.2f× | %.2f–%.2f× | %s | %s | %s |\n", row.Label, r.series[jsKey].Label, med, lo, hi, target, met, cpu)
	}
	if s, ok := r.series["bf/wake/p99"]; ok {
		lo, hi := s.span()
		w("| batfleet idle wake p99 (absolute) | – | %.3f ms | %.3f–%.3f ms | ≤ 3 ms | %s | – |\n", s.median(), lo, hi, yesNo(s.median() <= 3))
	}
	w("\nRatio of medians: batfleet's median ÷ the median of the JetStream configuration with the best median among those named. Per-round range: each round's batfleet figure ÷ that round's best JetStream figure among them. CPU per event: the whole process's CPU time (user + system, from getrusage: embedded server, both sides' clients, handler) during the run ÷ events, median over the rounds; JetStream ÷ batfleet above 1 means batfleet spends less CPU per event. On this shared 2-core machine wall-clock throughput depends on how much CPU the other jobs leave; CPU per event does not. For latencies a ratio below 1 means batfleet is faster; they use the time from the start of the append/publish call, because JetStream usually delivers the message to the idle puller before the PubAck reaches the publisher (acknowledgement → handler start is then ≤ 0, counted as 0), which makes a ratio of the acknowledgement-based figures meaningless. The call-start figures include batfleet's journal fsync (its append returns only once the event is durable) and not any fsync on JetStream's side, so they are not like for like either: they are context, not a target.\n")

	if len(r.record) > 0 {
		w("\n### For the record: `sync_interval: always` (one run, %d events)\n\n", cfg.SyncEvents)
		w("A fresh server per system with `SyncAlways` (the config file's `sync_interval: always`): JetStream fsyncs every stream write; for batfleet it makes the KV checkpoint bucket fsync every save (the journal fsyncs anyway).\n\n")
		w("| figure | value | unit | note |\n|---|---:|---|---|\n")
		for _, rr := range r.record {
			w("| %s | %s | %s | %s |\n", rr.Label, fmtValue(rr.Value, rr.Unit), rr.Unit, rr.Note)
		}
	}

	w("\n### Checks\n\n")
	exact, stalls := 0, []string{}
	for _, c := range r.checks {
		if c.exact() {
			exact++
		}
		if c.MaxStall >= 500*time.Millisecond {
			stalls = append(stalls, fmt.Sprintf("%s: no progress for %s", c.Label, c.MaxStall.Round(50*time.Millisecond)))
		}
		for _, n := range c.Notes {
			stalls = append(stalls, fmt.Sprintf("%s: %s", c.Label, n))
		}
	}
	w("%d of %d measured runs handled every event exactly once with the right byte sum.\n", exact, len(r.checks))
	if len(stalls) > 0 {
		w("\nIrregularities (included in the figures above):\n\n")
		for _, s := range stalls {
			w("- %s\n", s)
		}
	} else {
		w("No run stalled (no 500 ms without progress), no redeliveries.\n")
	}
	for _, n := range r.notes {
		w("\n%s\n", n)
	}
	return b.String()
}

func (r *results) row(b *bytes.Buffer, s *series) {
	sys, conf, _ := strings.Cut(s.Label, ": ")
	lo, hi := s.span()
	var per []string
	for _, v := range s.Values {
		per = append(per, fmtValue(v, s.Unit))
	}
	cpu := ""
	if v, ok := r.cpu[s.Key]; ok {
		cpu = fmt.Sprintf(" %.2f |", median(v))
	}
	fmt.Fprintf(b, "| %s | %s | %s | %s–%s | %s |%s\n", sys, conf, fmtValue(s.median(), s.Unit),
		fmtValue(lo, s.Unit), fmtValue(hi, s.Unit), strings.Join(per, ", "), cpu)
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}
