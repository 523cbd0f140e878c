package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/batfleet/batfleet/internal/natstest"
)

// The worker side of issue 16 (the operator's experience), driven through
// the binaries as cmd_test.go drives them: each test fails without its
// fix.

// cmdOpWriter starts a writer with an embedded nats-server and returns
// its NATS URL.
func cmdOpWriter(t *testing.T, writerBin string) string {
	t.Helper()
	w := cmdStart(t, "writer", writerBin, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "data"))
	return w.waitLog(t, `writer ready: nats=(nats://\S+)`)[1]
}

// cmdOpWait runs `worker wait` until checkpoint id has committed through
// seq, failing the test otherwise. `worker wait` refuses a checkpoint with
// no record yet, so it is asked again until the first commit lands.
func cmdOpWait(t *testing.T, workerBin, natsURL, id string, seq uint64) {
	t.Helper()
	var stderr string
	var code int
	cmdPoll(t, cmdLimit, "checkpoint "+id+" has a record", func() bool {
		_, stderr, code = cmdRun(t, "", nil, workerBin, "wait", "--nats", natsURL, "--checkpoint", id,
			"--through", strconv.FormatUint(seq, 10), "--timeout", "20s")
		return code != 1 || !strings.Contains(stderr, "unknown checkpoint")
	})
	if code != 0 {
		t.Fatalf("worker wait --checkpoint %s --through %d: exit %d: %s", id, seq, code, stderr)
	}
}

// cmdOpEvents are n JSON lines of `writer append`, of kind.
func cmdOpEvents(n int, entity, kind string) []string {
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"entity":"%s:%d","scope":"shop","kind":"%s","payload":"p%d"}`, entity, i, kind, i))
	}
	return lines
}

// cmdOpLastLine returns the last line of s.
func cmdOpLastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestCmdOperatorWorkerOutDevices (issue 16, 1): --out /dev/null and
// --out /dev/stdout piped on handle and commit, instead of dying on an
// fsync that devices and pipes refuse.
func TestCmdOperatorWorkerOutDevices(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	natsURL := cmdOpWriter(t, writerBin)
	dir := t.TempDir()

	devnull := cmdStart(t, "--out /dev/null worker", workerBin, "--nats", natsURL, "--region", "entity=order",
		"--checkpoint", "devnull", "--out", "/dev/null")
	piped := filepath.Join(dir, "piped.jsonl")
	// The worker's stdout is a pipe into cat: /dev/stdout is that pipe.
	sh := exec.Command("/bin/sh", "-c", `exec "$0" --nats "$1" --region entity=order --checkpoint devstdout --out /dev/stdout | cat > "$2"`,
		workerBin, natsURL, piped)
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the worker and cat with it
	pipeline := cmdStartCmd(t, "--out /dev/stdout worker", sh)
	pgid := sh.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }) // runs before cmdStartCmd's

	seqs := cmdAppend(t, writerBin, natsURL, cmdOpEvents(5, "order", "0x1001"))
	last := seqs[len(seqs)-1]
	cmdOpWait(t, workerBin, natsURL, "devnull", last)
	cmdOpWait(t, workerBin, natsURL, "devstdout", last)
	cmdPoll(t, cmdLimit, "the piped worker's lines reach the file", func() bool { return cmdLineCount(piped) == len(seqs) })
	for i, e := range cmdParseEntries(t, mustRead(t, piped)) {
		if e.Seq != seqs[i] {
			t.Errorf("piped line %d: seq %d, want %d", i, e.Seq, seqs[i])
		}
	}
	for _, p := range []*cmdProc{devnull, pipeline} {
		if p.exited() {
			t.Fatalf("%s exited; output:\n%s", p.name, p.output())
		}
		if strings.Contains(p.output(), "sync") {
			t.Errorf("%s mentions sync:\n%s", p.name, p.output())
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCmdOperatorWorkerReadmeAwk (issue 16, 2): the README's awk --exec
// example, run as written, handles batches with the machine's awk (on
// Debian mawk, which hangs without -W interactive).
func TestCmdOperatorWorkerReadmeAwk(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	root := cmdModuleRoot(t)
	readme := string(mustRead(t, filepath.Join(root, "README.md")))
	m := regexp.MustCompile(`--exec '(awk [^']*scripts/demo-handler\.awk)'`).FindStringSubmatch(readme)
	if m == nil {
		t.Fatalf("README.md has no --exec 'awk … scripts/demo-handler.awk' example")
	}
	natsURL := cmdOpWriter(t, writerBin)
	cmd := exec.Command(workerBin, "--nats", natsURL, "--region", "category=2", "--checkpoint", "awk",
		"--exec", m[1], "--exec-timeout", "5s", "--attempts", "1")
	cmd.Dir = root // the example's path is relative to the repository
	wk := cmdStartCmd(t, "awk worker", cmd)
	seqs := cmdAppend(t, writerBin, natsURL, cmdOpEvents(3, "order", "0x2001"))
	cmdOpWait(t, workerBin, natsURL, "awk", seqs[len(seqs)-1])
	if wk.exited() {
		t.Fatalf("the awk worker exited; output:\n%s", wk.output())
	}
}

// TestCmdOperatorWorkerExecTimeout (issue 16, 2): an --exec child that
// never answers is reported as a timeout naming --exec-timeout, not as a
// panic.
func TestCmdOperatorWorkerExecTimeout(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	natsURL := cmdOpWriter(t, writerBin)
	cmdAppend(t, writerBin, natsURL, cmdOpEvents(2, "order", "0x1001"))
	_, stderr, code := cmdRun(t, "", nil, workerBin, "--nats", natsURL, "--exec", "cat >/dev/null",
		"--exec-timeout", "300ms", "--attempts", "1")
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	last := cmdOpLastLine(stderr)
	if !strings.HasPrefix(last, "worker: ") || !strings.Contains(last, "did not answer within 300ms (--exec-timeout)") {
		t.Errorf("last line %q, want the timeout named; stderr:\n%s", last, stderr)
	}
	if strings.Contains(stderr, "panic") {
		t.Errorf("a timeout reported as a panic:\n%s", stderr)
	}
}

// TestCmdOperatorWorkerReadOnlyBuckets (issue 16, 3): status, group ls and
// group describe on a bucket that does not exist exit 1 naming it, and
// create nothing (so asking again fails the same way).
func TestCmdOperatorWorkerReadOnlyBuckets(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	natsURL := cmdOpWriter(t, writerBin)
	tests := []struct {
		args    []string
		pattern string
	}{
		{[]string{"status", "--bucket", "typo"}, `^worker: checkpoint bucket "typo" does not exist \(is --bucket typo right\? read-only commands create nothing\)$`},
		{[]string{"status", "--json"}, `^worker: checkpoint bucket "batfleet_checkpoints" does not exist: no worker has used it`},
		{[]string{"group", "ls", "--group-bucket", "typo_groups"}, `^worker: groups bucket "typo_groups" does not exist \(is --group-bucket typo_groups right\?`},
		{[]string{"group", "describe", "g"}, `^worker: groups bucket "batfleet_groups" does not exist`},
	}
	for range 2 { // the second round finds nothing created by the first
		for _, tt := range tests {
			stdout, stderr, code := cmdRun(t, "", nil, workerBin, append(tt.args, "--nats", natsURL)...)
			what := "worker " + strings.Join(tt.args, " ")
			if code != 1 || stdout != "" {
				t.Errorf("%s: exit %d, stdout %q; want exit 1 and nothing on stdout", what, code, stdout)
			}
			cmdOneLine(t, what, stderr, tt.pattern)
		}
	}
}

// TestCmdOperatorWorkerConflict (issue 16, 5): of two workers on one
// checkpoint, the one that loses the compare-and-swap stops saying which
// worker holds the checkpoint and how long ago it committed.
func TestCmdOperatorWorkerConflict(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	natsURL := cmdOpWriter(t, writerBin)
	dir := t.TempDir()
	procs := map[string]*cmdProc{}
	for _, id := range []string{"worker-a", "worker-b"} {
		procs[id] = cmdStart(t, id, workerBin, "--nats", natsURL, "--checkpoint", "dup2", "--id", id,
			"--out", filepath.Join(dir, id+".jsonl"))
		procs[id].waitLog(t, `worker running`)
	}
	cmdAppend(t, writerBin, natsURL, cmdOpEvents(1, "order", "0x1001"))
	var loser, winner string
	cmdPoll(t, cmdLimit, "one of the two workers stops", func() bool {
		for id, p := range procs {
			if p.exited() {
				loser = id
				return true
			}
		}
		return false
	})
	for id := range procs {
		if id != loser {
			winner = id
		}
	}
	p := procs[loser]
	if code := p.wait(t, cmdLimit); code != 1 {
		t.Errorf("%s: exit %d, want 1", loser, code)
	}
	last := cmdOpLastLine(p.output())
	want := `^worker: checkpoint dup2 is held by worker ` + winner + ` \(last commit [0-9.]+m?s ago\): `
	if !regexp.MustCompile(want).MatchString(last) {
		t.Errorf("%s's last line %q does not match %q", loser, last, want)
	}
	for _, bad := range []string{"err_code", "kv:", "nats:"} {
		if strings.Contains(last, bad) {
			t.Errorf("%s's last line carries %q: %s", loser, bad, last)
		}
	}
	if procs[winner].exited() {
		t.Errorf("%s, the holder, exited too:\n%s", winner, procs[winner].output())
	}
}

// TestCmdOperatorWorkerNoWriter (issue 16, 6): a worker on a journal no
// writer serves says so once and waits; it starts when a writer comes.
// --wait-writer bounds the wait.
func TestCmdOperatorWorkerNoWriter(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	natsURL := cmdOpWriter(t, writerBin)
	dir := t.TempDir()

	_, stderr, code := cmdRun(t, "", nil, workerBin, "--nats", natsURL, "--journal", "typo", "--wait-writer", "0", "--out", "/dev/null")
	cmdOneLine(t, "--wait-writer 0", stderr,
		`^worker: no writer serves journal "typo" \(nothing answers on its subjects\); gave up after --wait-writer 0s \(is --journal right\?\)$`)
	if code != 1 {
		t.Errorf("--wait-writer 0 with no writer: exit %d, want 1", code)
	}

	wk := cmdStart(t, "worker on journal other", workerBin, "--nats", natsURL, "--journal", "other", "--checkpoint", "c",
		"--out", filepath.Join(dir, "other.jsonl"))
	wk.waitLog(t, `no writer serves journal "other"`)
	if strings.Contains(wk.output(), "worker running") {
		t.Fatalf("the worker says it runs with no writer:\n%s", wk.output())
	}
	w2 := cmdStart(t, "writer of journal other", writerBin, "serve", "--nats", natsURL, "--journal", "other",
		"--data", filepath.Join(dir, "data2"))
	w2.waitLog(t, `writer ready`)
	wk.waitLog(t, `worker running`)
	out := wk.output()
	if n := strings.Count(out, "no writer serves"); n != 1 {
		t.Errorf("said %d times that no writer serves the journal, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "[WARN]"); n != 1 {
		t.Errorf("%d warnings while waiting, want the one:\n%s", n, out)
	}
}

// TestCmdOperatorWorkerErrorTexts (issue 16, 8): bad flags name the flag
// as users type it, the value and the rule, with no Go field names or
// package prefixes.
func TestCmdOperatorWorkerErrorTexts(t *testing.T) {
	_, workerBin := cmdBins(t)
	out := filepath.Join(t.TempDir(), "out.jsonl")
	tests := []struct {
		name    string
		env     []string
		args    []string
		pattern string
	}{
		{"region category 16", nil, []string{"--region", "category=16"}, `^worker: --region: category 16: out of range, want 0-15 \(or 0x0-0xf\)$`},
		{"region entity star", nil, []string{"--region", "entity=*"}, `^worker: --region: entity prefix "\*" is not a glob; omit the prefix to match every entity$`},
		{"batch 0", nil, []string{"--batch", "0"}, `^worker: --batch 0: must be >= 1 \(the most entries per handler call\)$`},
		{"idle without unit", nil, []string{"--idle", "5"}, `^worker: --idle 5: a duration needs a unit, e.g. 5s \(see worker --help\)$`},
		{"idle from the environment", []string{"BATFLEET_IDLE=5"}, nil, `^worker: BATFLEET_IDLE="5": a duration needs a unit, e.g. 5s `},
		{"wait timeout without unit", nil, []string{"wait", "--checkpoint", "c", "--through", "1", "--timeout", "10"},
			`^worker: --timeout 10: a duration needs a unit, e.g. 10s \(see worker wait --help\)$`},
		{"wait-writer", nil, []string{"--wait-writer", "soon"}, `^worker: --wait-writer soon: not a duration: want a number with a unit`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := tt.args
			if len(args) == 0 || args[0] != "wait" {
				args = append(args, "--out", out)
			}
			stdout, stderr, code := cmdRun(t, "", tt.env, workerBin, args...)
			if code != 2 || stdout != "" {
				t.Errorf("exit %d, stdout %q; want exit 2 and nothing on stdout", code, stdout)
			}
			cmdOneLine(t, tt.name, stderr, tt.pattern)
			for _, bad := range []string{"engine:", "BatchSize", "IdleTimeout", "invalid value", "parse error"} {
				if strings.Contains(stderr, bad) {
					t.Errorf("stderr carries %q: %s", bad, stderr)
				}
			}
		})
	}
}

// TestCmdOperatorWorkerRegionsAsTyped (issue 16, 13): logs, status and
// group ls/describe print regions as --region takes them (kinds in hex).
func TestCmdOperatorWorkerRegionsAsTyped(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	natsURL := cmdOpWriter(t, writerBin)
	dir := t.TempDir()
	const spec = "entity=order,kind=0x2001"
	wk := cmdStart(t, "typed worker", workerBin, "--nats", natsURL, "--region", "kind=0x2001,entity=order", "--checkpoint", "typed",
		"--out", filepath.Join(dir, "typed.jsonl"))
	wk.waitLog(t, `worker running: .*region="?`+regexp.QuoteMeta(spec)+`"? `)
	member := cmdStart(t, "group member", workerBin, "--nats", natsURL, "--region", "category=0xa", "--group", "g",
		"--partitions", "2", "--out", filepath.Join(dir, "g.jsonl"))
	member.waitLog(t, `group member running: .*region="?category=0xa"? `) // hclog quotes some values

	seqs := cmdAppend(t, writerBin, natsURL, cmdOpEvents(2, "order", "0x2001"))
	cmdOpWait(t, workerBin, natsURL, "typed", seqs[len(seqs)-1])

	stdout, stderr, code := cmdRun(t, "", nil, workerBin, "status", "--nats", natsURL)
	if code != 0 || !regexp.MustCompile(`(?m)^typed\s+`+regexp.QuoteMeta(spec)+`\s`).MatchString(stdout) {
		t.Errorf("worker status: exit %d, want the region as typed:\n%s%s", code, stdout, stderr)
	}
	stdout, stderr, code = cmdRun(t, "", nil, workerBin, "status", "--nats", natsURL, "--json")
	var rows []struct {
		ID         string `json:"id"`
		Region     string `json:"region"`
		RegionSpec string `json:"region_spec"`
	}
	if err := json.Unmarshal([]byte(stdout), &rows); code != 0 || err != nil {
		t.Fatalf("worker status --json: exit %d, %v:\n%s%s", code, err, stdout, stderr)
	}
	found := false
	for _, r := range rows {
		if r.ID == "typed" {
			found = true
			if r.RegionSpec != spec || r.Region != "entity=order|scope=*|fact=exact:2:1|clock=*" {
				t.Errorf("status --json row %+v, want region_spec %q and the identity in region", r, spec)
			}
		}
	}
	if !found {
		t.Errorf("status --json has no row typed:\n%s", stdout)
	}

	cmdPoll(t, cmdLimit, "group g is listed", func() bool {
		stdout, _, code := cmdRun(t, "", nil, workerBin, "group", "ls", "--nats", natsURL)
		return code == 0 && regexp.MustCompile(`(?m)^g\s+category=0xa\s+2\s`).MatchString(stdout)
	})
	stdout, stderr, code = cmdRun(t, "", nil, workerBin, "group", "describe", "g", "--nats", natsURL)
	if code != 0 || !strings.Contains(stdout, "group g of journal main: region category=0xa, 2 partitions") {
		t.Errorf("worker group describe g: exit %d, want the region as typed:\n%s%s", code, stdout, stderr)
	}
}

// TestCmdOperatorWorkerFrom (issue 16, --from): a checkpoint with no
// record starts where --from says: end delivers only events appended
// after the start, seq:N from seq N; a stored checkpoint wins over it.
func TestCmdOperatorWorkerFrom(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	natsURL := cmdOpWriter(t, writerBin)
	dir := t.TempDir()
	early := cmdAppend(t, writerBin, natsURL, cmdOpEvents(3, "order", "0x1001"))

	endOut, seqOut := filepath.Join(dir, "end.jsonl"), filepath.Join(dir, "seq.jsonl")
	end := cmdStart(t, "--from end worker", workerBin, "--nats", natsURL, "--region", "entity=order",
		"--checkpoint", "from-end", "--from", "end", "--out", endOut)
	cmdStart(t, "--from seq worker", workerBin, "--nats", natsURL, "--region", "entity=order",
		"--checkpoint", "from-seq", "--from", fmt.Sprintf("seq:%d", early[1]), "--out", seqOut)
	end.waitLog(t, "starting where From says")
	late := cmdAppend(t, writerBin, natsURL, cmdOpEvents(2, "order", "0x1001"))
	last := late[len(late)-1]
	cmdOpWait(t, workerBin, natsURL, "from-end", last)
	cmdOpWait(t, workerBin, natsURL, "from-seq", last)
	for _, c := range []struct {
		path string
		want []uint64
	}{{endOut, late}, {seqOut, append(slices.Clone(early[1:]), late...)}} {
		var got []uint64
		for _, e := range cmdParseEntries(t, mustRead(t, c.path)) {
			got = append(got, e.Seq)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: seqs %v, want %v", filepath.Base(c.path), got, c.want)
		}
	}
	// A restart with --from beginning resumes at the stored checkpoint.
	end.signal(t, syscall.SIGTERM)
	if code := end.wait(t, cmdLimit); code != 0 {
		t.Fatalf("the --from end worker exited %d on SIGTERM:\n%s", code, end.output())
	}
	again := filepath.Join(dir, "again.jsonl")
	cmdStart(t, "restarted worker", workerBin, "--nats", natsURL, "--region", "entity=order",
		"--checkpoint", "from-end", "--from", "beginning", "--out", again)
	more := cmdAppend(t, writerBin, natsURL, cmdOpEvents(1, "order", "0x1001"))
	cmdOpWait(t, workerBin, natsURL, "from-end", more[0])
	var got []uint64
	for _, e := range cmdParseEntries(t, mustRead(t, again)) {
		got = append(got, e.Seq)
	}
	if !slices.Equal(got, more) {
		t.Errorf("after a restart: seqs %v, want only %v (the stored checkpoint wins over --from)", got, more)
	}
}

// TestCmdOperatorWorkerLivenessApartFromReadiness (issue 16, item 10):
// when NATS goes away, a worker's /readyz fails and its /healthz
// (liveness) keeps answering 200.
func TestCmdOperatorWorkerLivenessApartFromReadiness(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	srv := natstest.StartServer(t)
	cmdStart(t, "writer", writerBin, "serve", "--nats", srv.ClientURL(), "--data", filepath.Join(t.TempDir(), "data")).waitLog(t, `writer ready`)
	w := cmdStart(t, "worker", workerBin, "--nats", srv.ClientURL(), "--region", "entity=order", "--out", os.DevNull, "--http", "127.0.0.1:0")
	base := "http://" + w.waitLog(t, `serving /metrics and /healthz: addr=(\S+)`)[1]
	w.waitLog(t, `worker running`)
	wantLivenessApartFromReadiness(t, w, base, srv)
}
