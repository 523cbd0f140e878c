package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The command-line side of handler failures (SPEC §17), driven through
// the binaries as cmd_test.go drives them: an --exec child answering
// "fail SEQ", --on-poison park, `worker parked ls|replay|drop`,
// `writer append` printing seqs and `worker wait` on them.

// cmdPoisonScript is an --exec handler for the PSN tests: it answers
// "fail SEQ ..." for the first entry of a batch whose entity is listed in
// $D/poison (one per line; the entries before it are handled), and
// appends "seq entity" of every entry it handles to $D/handled.
func cmdPoisonScript(dir string) string {
	return `D='` + dir + `'
echo $$ >> "$D/pids"
while IFS= read -r line; do
	case "$line" in
	'{"batch_end":true}')
		if [ -n "$fail" ]; then echo "fail $fail poisoned entity $failent"; else echo continue; fi
		fail= ;;
	*)
		[ -n "$fail" ] && continue
		seq=${line#'{"seq":'}; seq=${seq%%,*}
		ent=${line#*'"entity":"'}; ent=${ent%%'"'*}
		if grep -qxF "$ent" "$D/poison" 2>/dev/null; then fail=$seq; failent=$ent
		else echo "$seq $ent" >> "$D/handled"; fi ;;
	esac
done
`
}

// cmdSetPoison replaces $D/poison atomically with entities.
func cmdSetPoison(t testing.TB, dir string, entities ...string) {
	t.Helper()
	tmp := filepath.Join(dir, "poison.tmp")
	body := strings.Join(entities, "\n")
	if body != "" {
		body += "\n"
	}
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "poison")); err != nil {
		t.Fatal(err)
	}
}

// cmdHandled reads $D/handled: the seqs handled per entity, in order,
// without repeats (a retry hands entries again).
func cmdHandled(t testing.TB, dir string) map[string][]uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "handled"))
	if errors.Is(err, os.ErrNotExist) {
		return map[string][]uint64{}
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]uint64{}
	seen := map[uint64]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue // a line being written
		}
		seq, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			t.Fatalf("handled line %q", l)
		}
		if !seen[seq] {
			seen[seq] = true
			out[f[1]] = append(out[f[1]], seq)
		}
	}
	return out
}

// cmdAppend appends JSON lines with `writer append` and returns the seqs
// it printed on stdout, one per input line.
func cmdAppend(t testing.TB, writerBin, natsURL string, lines []string) []uint64 {
	t.Helper()
	stdout, stderr, code := cmdRun(t, strings.Join(lines, "\n")+"\n", nil, writerBin, "append", "--nats", natsURL)
	if code != 0 {
		t.Fatalf("writer append: exit %d:\n%s", code, stderr)
	}
	var seqs []uint64
	for _, f := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		seq, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			t.Fatalf("writer append printed %q, want one seq per line", stdout)
		}
		seqs = append(seqs, seq)
	}
	if len(seqs) != len(lines) {
		t.Fatalf("writer append printed %d seqs for %d events:\n%s", len(seqs), len(lines), stdout)
	}
	cmdAscending(t, "writer append's seqs", seqs)
	return seqs
}

// cmdParkedRow is one row of `worker parked ls --json`.
type cmdParkedRow struct {
	Checkpoint string `json:"checkpoint"`
	Partition  int    `json:"partition"`
	Entity     string `json:"entity"`
	FirstSeq   uint64 `json:"first_seq"`
	LastSeq    uint64 `json:"last_seq"`
	Count      uint64 `json:"count"`
	Attempts   int    `json:"attempts"`
	Error      string `json:"error"`
	Replay     bool   `json:"replay"`
}

func cmdParkedLs(t testing.TB, workerBin, natsURL string, args ...string) map[string]cmdParkedRow {
	t.Helper()
	stdout, stderr, code := cmdRun(t, "", nil, workerBin, append([]string{"parked", "ls", "--nats", natsURL, "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("worker parked ls --json: exit %d: %s", code, stderr)
	}
	var rows []cmdParkedRow
	if err := json.Unmarshal([]byte(stdout), &rows); err != nil {
		t.Fatalf("worker parked ls --json printed no JSON array: %v\n%s", err, stdout)
	}
	m := map[string]cmdParkedRow{}
	for _, r := range rows {
		m[r.Entity] = r
	}
	return m
}

func cmdMetric(t testing.TB, body, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s:\n%s", name, body)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("%s = %q", name, m[1])
	}
	return v
}

// TestPSN04_PSN06_CmdExecParkReplayDrop: an --exec child answers "fail
// SEQ" for two entities; with --on-poison park both are parked from their
// first event on, in order, and every other entity is delivered (PSN-04).
// `worker parked ls` shows them; after the child heals one, `parked
// replay` hands its parked events back in seq order and it flows again;
// `parked drop` discards the other's, whose later events then flow
// (PSN-06). /metrics counts it all.
func TestPSN04_PSN06_CmdExecParkReplayDrop(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	dir := t.TempDir()
	w := cmdStart(t, "writer", writerBin, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "data"))
	natsURL := w.waitLog(t, `writer ready: nats=(nats://\S+)`)[1]

	hdir := filepath.Join(dir, "h")
	if err := os.Mkdir(hdir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmdWriteScript(t, filepath.Join(hdir, "h.sh"), cmdPoisonScript(hdir))
	cmdKillGroupOnCleanup(t, filepath.Join(hdir, "pids"))
	cmdSetPoison(t, hdir, "order:poison", "order:drop")
	wk := cmdStart(t, "park worker", workerBin, "--nats", natsURL, "--region", "entity=order", "--checkpoint", "psn",
		"--batch", "16", "--on-poison", "park", "--attempts", "2", "--retry-backoff", "10ms", "--http", "127.0.0.1:0",
		"--exec", "exec /bin/sh '"+filepath.Join(hdir, "h.sh")+"'")
	wk.waitLog(t, `worker running: .*retry="2 attempts, 10ms doubling to 5s" on-poison=park`)
	metricsURL := "http://" + wk.waitLog(t, `worker: serving /metrics and /healthz: addr=(\S+)`)[1] + "/metrics"

	// 140 events: order:0..9, with order:poison every 7th and order:drop
	// every 11th event.
	var lines, ents []string
	for i := range 140 {
		ent := fmt.Sprintf("order:%d", i%10)
		switch {
		case i%7 == 3:
			ent = "order:poison"
		case i%11 == 5:
			ent = "order:drop"
		}
		ents = append(ents, ent)
		lines = append(lines, fmt.Sprintf(`{"entity":%q,"scope":"shop","payload":"%d"}`, ent, i))
	}
	seqs := cmdAppend(t, writerBin, natsURL, lines)
	want := map[string][]uint64{}
	for i, s := range seqs {
		want[ents[i]] = append(want[ents[i]], s)
	}
	last := seqs[len(seqs)-1]

	// The checkpoint moves past everything: parked entries included. (A
	// wait on a checkpoint with no record yet is an error, not a wait:
	// first see it committed once.)
	cmdPoll(t, cmdLimit, "checkpoint psn has a record", func() bool { return cmdStatus(t, workerBin, natsURL)["psn"].Started })
	if _, stderr, code := cmdRun(t, "", nil, workerBin, "wait", "--nats", natsURL, "--checkpoint", "psn",
		"--through", strconv.FormatUint(last, 10), "--timeout", "30s"); code != 0 {
		t.Fatalf("worker wait through %d: exit %d: %s", last, code, stderr)
	}
	parked := cmdParkedLs(t, workerBin, natsURL, "--checkpoint", "psn")
	if len(parked) != 2 {
		t.Fatalf("parked ls: %+v, want order:poison and order:drop", parked)
	}
	for _, ent := range []string{"order:poison", "order:drop"} {
		p, s := parked[ent], want[ent]
		if p.Checkpoint != "psn" || p.Partition != -1 || p.FirstSeq != s[0] || p.LastSeq != s[len(s)-1] || p.Count != uint64(len(s)) ||
			p.Attempts != 2 || !strings.Contains(p.Error, "poisoned entity "+ent) || p.Replay {
			t.Errorf("parked %s = %+v, want seqs %d..%d (%d events) after 2 attempts", ent, p, s[0], s[len(s)-1], len(s))
		}
	}
	got := cmdHandled(t, hdir)
	for ent, s := range want {
		switch ent {
		case "order:poison", "order:drop":
			if len(got[ent]) != 0 {
				t.Errorf("parked entity %s reached the handler: %v", ent, got[ent])
			}
		default:
			if fmt.Sprint(got[ent]) != fmt.Sprint(s) {
				t.Errorf("entity %s handled %v, want %v", ent, got[ent], s)
			}
		}
	}
	stdout, stderr, code := cmdRun(t, "", nil, workerBin, "parked", "ls", "--nats", natsURL, "--checkpoint", "psn")
	if code != 0 || !regexp.MustCompile(`(?m)^psn\s+order:poison\s+`+strconv.FormatUint(want["order:poison"][0], 10)+`\s`).MatchString(stdout) ||
		!strings.Contains(stdout, "FIRST SEQ") {
		t.Errorf("parked ls (table): exit %d\n%s%s", code, stdout, stderr)
	}
	_, body := cmdHTTPGet(t, metricsURL)
	nParked := len(want["order:poison"]) + len(want["order:drop"])
	if v := cmdMetric(t, body, "batfleet_worker_parked_entities"); v != 2 {
		t.Errorf("batfleet_worker_parked_entities = %v, want 2", v)
	}
	if v := cmdMetric(t, body, "batfleet_worker_parked_entries"); v != float64(nParked) {
		t.Errorf("batfleet_worker_parked_entries = %v, want %d", v, nParked)
	}
	if v := cmdMetric(t, body, "batfleet_worker_handler_failures_total"); v < 4 {
		t.Errorf("batfleet_worker_handler_failures_total = %v, want >= 4 (2 attempts of 2 entities)", v)
	}
	if v := cmdMetric(t, body, "batfleet_worker_handler_retries_total"); v < 2 {
		t.Errorf("batfleet_worker_handler_retries_total = %v, want >= 2", v)
	}

	// PSN-06: heal order:poison, replay it.
	cmdSetPoison(t, hdir, "order:drop")
	stdout, stderr, code = cmdRun(t, "", nil, workerBin, "parked", "replay", "--nats", natsURL, "--checkpoint", "psn", "--entity", "order:poison")
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("replay of entity order:poison in checkpoint psn requested: %d entries", len(want["order:poison"]))) {
		t.Fatalf("parked replay: exit %d\n%s%s", code, stdout, stderr)
	}
	cmdPoll(t, cmdLimit, "the replay unparked order:poison", func() bool {
		_, ok := cmdParkedLs(t, workerBin, natsURL, "--checkpoint", "psn")["order:poison"]
		return !ok
	})
	if got := cmdHandled(t, hdir)["order:poison"]; fmt.Sprint(got) != fmt.Sprint(want["order:poison"]) {
		t.Errorf("replayed order:poison %v, want %v in seq order", got, want["order:poison"])
	}
	_, body = cmdHTTPGet(t, metricsURL)
	if v := cmdMetric(t, body, "batfleet_worker_replayed_entries_total"); v != float64(len(want["order:poison"])) {
		t.Errorf("batfleet_worker_replayed_entries_total = %v, want %d", v, len(want["order:poison"]))
	}

	// Drop order:drop: its parked events are never delivered; heal it and
	// its next events flow.
	stdout, stderr, code = cmdRun(t, "", nil, workerBin, "parked", "drop", "--nats", natsURL, "--checkpoint", "psn", "--entity", "order:drop")
	if code != 0 || !strings.Contains(stdout, "dropped entity order:drop from checkpoint psn") {
		t.Fatalf("parked drop: exit %d\n%s%s", code, stdout, stderr)
	}
	if p := cmdParkedLs(t, workerBin, natsURL, "--checkpoint", "psn"); len(p) != 0 {
		t.Fatalf("parked ls after replay and drop: %+v, want nothing", p)
	}
	// Once dropped, the worker sees it within its refresh (about a
	// second): only then may order:drop flow. A drop it has not seen yet
	// would park the new events again, so wait for the metric.
	cmdPoll(t, cmdLimit, "the worker saw the drop", func() bool {
		_, body := cmdHTTPGet(t, metricsURL)
		return cmdMetric(t, body, "batfleet_worker_parked_entities") == 0
	})
	cmdSetPoison(t, hdir)
	more := cmdAppend(t, writerBin, natsURL, []string{
		`{"entity":"order:drop","scope":"shop","payload":"after 1"}`,
		`{"entity":"order:poison","scope":"shop","payload":"after 2"}`,
		`{"entity":"order:drop","scope":"shop","payload":"after 3"}`,
	})
	if _, stderr, code := cmdRun(t, "", nil, workerBin, "wait", "--nats", natsURL, "--checkpoint", "psn",
		"--through", strconv.FormatUint(more[2], 10)); code != 0 {
		t.Fatalf("worker wait through %d: exit %d: %s", more[2], code, stderr)
	}
	got = cmdHandled(t, hdir)
	if fmt.Sprint(got["order:drop"]) != fmt.Sprint([]uint64{more[0], more[2]}) {
		t.Errorf("order:drop handled %v, want only the events after the drop %v", got["order:drop"], []uint64{more[0], more[2]})
	}
	if wantPoison := append(append([]uint64{}, want["order:poison"]...), more[1]); fmt.Sprint(got["order:poison"]) != fmt.Sprint(wantPoison) {
		t.Errorf("order:poison handled %v, want %v", got["order:poison"], wantPoison)
	}

	// Replay and drop of an entity that is not parked (the bucket exists).
	for _, cmd := range []string{"replay", "drop"} {
		stdout, stderr, code := cmdRun(t, "", nil, workerBin, "parked", cmd, "--nats", natsURL, "--checkpoint", "psn", "--entity", "order:drop")
		if code != 1 || stdout != "" {
			t.Errorf("parked %s of an unparked entity: exit %d, stdout %q; want 1 and nothing", cmd, code, stdout)
		}
		cmdOneLine(t, "parked "+cmd, stderr, `^worker: entity order:drop is not parked in checkpoint psn$`)
	}
	if strings.Contains(wk.output(), "panic") {
		t.Errorf("the worker's log mentions a panic:\n%s", wk.output())
	}
	wk.signal(t, syscall.SIGTERM)
	if code := wk.wait(t, cmdLimit); code != 0 {
		t.Errorf("park worker after SIGTERM: exit %d, want 0", code)
	}
}

// TestPSN07_CmdAppendWait: `writer append` prints each event's seq, and
// `worker wait --through` on it returns only once the checkpoint's
// handler has handled and committed it: it times out (exit 4) while the
// handler holds the batch, returns at once for a region the seq does not
// concern, and for a group waits for every partition.
func TestPSN07_CmdAppendWait(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	dir := t.TempDir()
	w := cmdStart(t, "writer", writerBin, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "data"))
	natsURL := w.waitLog(t, `writer ready: nats=(nats://\S+)`)[1]

	// orders: an --exec handler that records each seq and, while $D/hold
	// exists, holds the batch (after touching $D/busy).
	hdir := filepath.Join(dir, "h")
	if err := os.Mkdir(hdir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmdWriteScript(t, filepath.Join(hdir, "h.sh"), `D='`+hdir+`'
echo $$ >> "$D/pids"
while IFS= read -r line; do
	case "$line" in
	'{"batch_end":true}')
		if [ -e "$D/hold" ]; then
			touch "$D/busy"
			while [ -e "$D/hold" ]; do sleep 0.02; done
		fi
		echo continue ;;
	*) s=${line#'{"seq":'}; echo "${s%%,*}" >> "$D/handled" ;;
	esac
done
`)
	cmdKillGroupOnCleanup(t, filepath.Join(hdir, "pids"))
	orders := cmdStart(t, "orders worker", workerBin, "--nats", natsURL, "--region", "entity=order", "--checkpoint", "orders",
		"--exec", "exec /bin/sh '"+filepath.Join(hdir, "h.sh")+"'")
	users := cmdStart(t, "users worker", workerBin, "--nats", natsURL, "--region", "entity=user", "--checkpoint", "users",
		"--out", filepath.Join(dir, "users.jsonl"))
	orders.waitLog(t, `worker running`)
	users.waitLog(t, `worker running`)

	wait := func(timeout string, args ...string) (string, int, time.Duration) {
		t.Helper()
		start := time.Now()
		_, stderr, code := cmdRun(t, "", nil, workerBin, append([]string{"wait", "--nats", natsURL, "--timeout", timeout}, args...)...)
		return stderr, code, time.Since(start)
	}
	first := cmdAppend(t, writerBin, natsURL, []string{
		`{"entity":"order:1","scope":"shop"}`, `{"entity":"user:1","scope":"shop"}`,
	})
	for _, id := range []string{"orders", "users"} {
		if stderr, code, _ := wait("30s", "--checkpoint", id, "--through", strconv.FormatUint(first[1], 10)); code != 0 {
			t.Fatalf("wait --checkpoint %s --through %d: exit %d: %s", id, first[1], code, stderr)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "users.jsonl")); err != nil || !strings.Contains(string(b), fmt.Sprintf(`"seq":%d,`, first[1])) {
		t.Errorf("after the wait, users.jsonl lacks seq %d: %q (%v)", first[1], b, err)
	}

	// Hold the orders handler and append one order.
	if err := os.WriteFile(filepath.Join(hdir, "hold"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	seq := cmdAppend(t, writerBin, natsURL, []string{`{"entity":"order:2","scope":"shop","payload":"mine"}`})[0]
	through := strconv.FormatUint(seq, 10)
	cmdPoll(t, cmdLimit, "the orders handler holds the batch", func() bool {
		_, err := os.Stat(filepath.Join(hdir, "busy"))
		return err == nil
	})
	// A wait with time to spare, started now: it must still be waiting
	// once the short one below has timed out.
	bg := cmdStart(t, "waiting", workerBin, "wait", "--nats", natsURL, "--checkpoint", "orders", "--through", through, "--timeout", "30s")
	stderr, code, took := wait("500ms", "--checkpoint", "orders", "--through", through)
	if code != 4 {
		t.Errorf("wait while the handler holds the batch: exit %d after %v, want 4 (timeout):\n%s", code, took, stderr)
	}
	cmdOneLine(t, "wait timeout", stderr, fmt.Sprintf(`^worker: timed out after 500ms: checkpoint orders has not committed through seq %d \(it is at position %d\)$`, seq, first[0]))
	// The users region has nothing up to seq: at once, though the orders
	// handler is stuck.
	if stderr, code, took := wait("10s", "--checkpoint", "users", "--through", through); code != 0 || took > 5*time.Second {
		t.Errorf("wait on a region the seq does not concern: exit %d after %v:\n%s", code, took, stderr)
	}
	if bg.exited() {
		t.Fatalf("the wait returned while the handler still held seq %d; output:\n%s", seq, bg.output())
	}
	if err := os.Remove(filepath.Join(hdir, "hold")); err != nil {
		t.Fatal(err)
	}
	if code := bg.wait(t, cmdLimit); code != 0 {
		t.Fatalf("wait after the handler let go: exit %d; output:\n%s", code, bg.output())
	}
	// Read-your-writes: what the wait promised is there.
	if b, err := os.ReadFile(filepath.Join(hdir, "handled")); err != nil || !regexp.MustCompile(`(?m)^`+through+`$`).Match(b) {
		t.Errorf("after the wait, the handler has not recorded seq %d: %q (%v)", seq, b, err)
	}
	if r := cmdStatus(t, workerBin, natsURL)["orders"]; !r.Started || r.Position < seq {
		t.Errorf("status of orders after the wait: %+v, want position >= %d", r, seq)
	}

	// A group: wait for every partition.
	grp := cmdStart(t, "group member", workerBin, "--nats", natsURL, "--region", "entity=acct", "--group", "accts",
		"--partitions", "4", "--session", "2s", "--out", filepath.Join(dir, "accts.jsonl"))
	grp.waitLog(t, `group member running`)
	var accts []string
	for i := range 20 {
		accts = append(accts, fmt.Sprintf(`{"entity":"acct:%d","scope":"bank"}`, i))
	}
	as := cmdAppend(t, writerBin, natsURL, accts)
	if stderr, code, _ := wait("30s", "--group", "accts", "--through", strconv.FormatUint(as[len(as)-1], 10)); code != 0 {
		t.Fatalf("wait --group accts: exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(filepath.Join(dir, "accts.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range as {
		if !strings.Contains(string(b), fmt.Sprintf(`"seq":%d,`, s)) {
			t.Errorf("after wait --group, accts.jsonl lacks seq %d", s)
		}
	}
	for _, p := range []*cmdProc{orders, users, grp} {
		p.signal(t, syscall.SIGTERM)
	}
	for _, p := range []*cmdProc{orders, users, grp} {
		if code := p.wait(t, cmdLimit); code != 0 {
			t.Errorf("%s after SIGTERM: exit %d, want 0", p.name, code)
		}
	}
}

// TestPSN_CmdBadInput: waits on unknown checkpoints and groups, replay
// and drop of entities that are not parked, and bad poison flags each
// give one clear line and the documented exit code; the read-only
// commands create no bucket.
func TestPSN_CmdBadInput(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	dir := t.TempDir()
	w := cmdStart(t, "writer", writerBin, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "data"))
	natsURL := w.waitLog(t, `writer ready: nats=(nats://\S+)`)[1]
	out := filepath.Join(dir, "out.jsonl")
	tests := []struct {
		name    string
		env     []string
		args    []string
		code    int
		pattern string // the one stderr line
	}{
		{"wait unknown checkpoint", nil, []string{"wait", "--checkpoint", "nosuch", "--through", "5"}, 1,
			`^worker: fleet: unknown checkpoint: "nosuch" \(no checkpoint bucket "batfleet_checkpoints"\)$`},
		{"wait unknown group", nil, []string{"wait", "--group", "nosuch", "--through", "5"}, 1, `^worker: fleet: no such group: "nosuch"`},
		{"wait without through", nil, []string{"wait", "--checkpoint", "c"}, 2, `^worker: --through is required`},
		{"wait bad through", nil, []string{"wait", "--checkpoint", "c", "--through", "seq 5"}, 2, `^worker: --through "seq 5": must be a sequence number`},
		{"wait two targets", nil, []string{"wait", "--checkpoint", "c", "--group", "g", "--through", "5"}, 2,
			`^worker: give exactly one of --checkpoint ID or --group NAME$`},
		{"wait bad timeout (env)", []string{"BATFLEET_TIMEOUT=0s"}, []string{"wait", "--checkpoint", "c", "--through", "5"}, 2,
			`^worker: --timeout 0s: must be > 0$`},
		{"replay unknown entity", nil, []string{"parked", "replay", "--checkpoint", "psn", "--entity", "order:9"}, 1,
			`^worker: entity order:9 is not parked in checkpoint psn$`},
		{"drop unknown entity", nil, []string{"parked", "drop", "--checkpoint", "psn", "--entity", "order:9"}, 1,
			`^worker: entity order:9 is not parked in checkpoint psn$`},
		{"replay without entity", nil, []string{"parked", "replay", "--checkpoint", "psn"}, 2, `^worker: --entity is required: the parked entity to replay$`},
		{"parked ls wrong bucket", nil, []string{"parked", "ls", "--checkpoint", "psn", "--parked-bucket", "nosuch"}, 1,
			`^worker: parked bucket "nosuch" does not exist`},
		{"parked ls without target", nil, []string{"parked", "ls"}, 2, `^worker: give exactly one of --checkpoint ID or --group NAME$`},
		{"parked unknown command", nil, []string{"parked", "purge", "--checkpoint", "psn"}, 2, `^worker: unknown command "parked purge"`},
		{"ls takes no entity", nil, []string{"parked", "ls", "--checkpoint", "psn", "--entity", "e"}, 2, `^worker: unknown flag --entity`},
		{"on-poison bogus", nil, []string{"--checkpoint", "c", "--out", out, "--on-poison", "bogus"}, 2,
			`^worker: --on-poison "bogus": want restart or park$`},
		{"on-poison bogus (env)", []string{"BATFLEET_ON_POISON=bogus"}, []string{"--checkpoint", "c", "--out", out}, 2,
			`^worker: --on-poison "bogus": want restart or park$`},
		{"attempts 0", nil, []string{"--out", out, "--attempts", "0"}, 2,
			`^worker: --attempts 0: must be >= 1 \(handler attempts per entry; 1 retries nothing\)$`},
		{"attempts 0 (env)", []string{"BATFLEET_ATTEMPTS=0"}, []string{"--out", out}, 2, `^worker: --attempts 0: must be >= 1`},
		{"attempts not a number (env)", []string{"BATFLEET_ATTEMPTS=many"}, []string{"--out", out}, 2, `^worker: BATFLEET_ATTEMPTS="many": `},
		{"retry-backoff 0", nil, []string{"--out", out, "--retry-backoff", "0s"}, 2, `^worker: --retry-backoff 0s: must be > 0`},
		{"park in memory", nil, []string{"--out", out, "--on-poison", "park"}, 2,
			`^worker: --on-poison park needs --checkpoint or --group \(the parked set belongs to a checkpoint\)$`},
		{"bad parked bucket", nil, []string{"--out", out, "--checkpoint", "c", "--on-poison", "park", "--parked-bucket", "a.b"}, 2,
			`^worker: --parked-bucket "a.b": must be`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append(append([]string{}, tt.args...), "--nats", natsURL)
			stdout, stderr, code := cmdRun(t, "", tt.env, workerBin, args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			cmdOneLine(t, tt.name, stderr, tt.pattern)
		})
	}

	t.Run("parked ls with nothing parked", func(t *testing.T) {
		t.Parallel()
		stdout, stderr, code := cmdRun(t, "", nil, workerBin, "parked", "ls", "--nats", natsURL, "--checkpoint", "psn")
		if code != 0 || !strings.Contains(stdout, "(nothing parked)") || stderr != "" {
			t.Errorf("parked ls: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		stdout, _, code = cmdRun(t, "", nil, workerBin, "parked", "--nats", natsURL, "--checkpoint", "psn", "--json")
		if code != 0 || strings.TrimSpace(stdout) != "[]" {
			t.Errorf("parked (ls) --json: exit %d, stdout %q; want []", code, stdout)
		}
	})

	t.Run("help", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{{"wait", "--help"}, {"parked", "replay", "-h"}, {"run", "--help"}} {
			stdout, _, code := cmdRun(t, "", nil, workerBin, args...)
			if code != 0 || !strings.HasPrefix(stdout, "usage: worker "+strings.Join(args[:len(args)-1], " ")+" ") {
				t.Errorf("worker %v: exit %d\n%s", args, code, stdout)
			}
		}
		if stdout, _, code := cmdRun(t, "", nil, workerBin, "--help"); code != 0 || !strings.Contains(stdout, "\n  parked ") || !strings.Contains(stdout, "\n  wait ") {
			t.Errorf("worker --help: exit %d, want the commands listed\n%s", code, stdout)
		}
		stdout, _, _ := cmdRun(t, "", nil, workerBin, "run", "--help")
		for _, flag := range []string{"-attempts", "-retry-backoff", "-on-poison", "-parked-bucket", "[BATFLEET_ON_POISON]"} {
			if !strings.Contains(stdout, flag) {
				t.Errorf("worker run --help lacks %s:\n%s", flag, stdout)
			}
		}
	})

	// After every case: none of the read-only commands made a bucket.
	t.Cleanup(func() {
		nc, err := nats.Connect(natsURL, nats.Timeout(5*time.Second))
		if err != nil {
			t.Errorf("connect %s: %v", natsURL, err)
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Errorf("jetstream: %v", err)
			return
		}
		for _, b := range []string{"batfleet_parked", "batfleet_checkpoints", "batfleet_groups", "nosuch"} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := js.KeyValue(ctx, b)
			cancel()
			if !errors.Is(err, jetstream.ErrBucketNotFound) {
				t.Errorf("bucket %s after the read-only commands: %v, want it not to exist", b, err)
			}
		}
	})
}
