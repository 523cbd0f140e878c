package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The command-line tests build cmd/writer and cmd/worker (without the race
// detector) once per test run and drive them as a user would: flags,
// stdin, log lines on stderr, signals, exit codes, `worker status --json`,
// /metrics and /healthz. Every process they start is killed in t.Cleanup.

// cmdLimit bounds every wait of the command-line tests.
const cmdLimit = 30 * time.Second

// cmdBuilt holds the one build of the binaries of a test run.
var cmdBuilt struct {
	once sync.Once
	dir  string
	err  error
}

// cmdModuleRoot returns the directory of go.mod, walking up from the
// test's working directory.
func cmdModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's working directory")
		}
		dir = parent
	}
}

// cmdTempParent is where the binaries' directory goes: inside go test's
// work directory when the test binary runs from one ($WORK/b001/x.test),
// so that go test removes it with everything else; otherwise the system
// temporary directory, where it is left behind (a package-wide TestMain
// could remove it, but this file must not add one).
func cmdTempParent() string {
	if exe, err := os.Executable(); err == nil {
		if work := filepath.Dir(filepath.Dir(exe)); strings.HasPrefix(filepath.Base(work), "go-build") {
			return work
		}
	}
	return os.TempDir()
}

// cmdBins returns the paths of the writer and worker binaries, building
// them on the first call of the test run.
func cmdBins(t testing.TB) (writer, worker string) {
	t.Helper()
	root := cmdModuleRoot(t)
	cmdBuilt.once.Do(func() {
		dir, err := os.MkdirTemp(cmdTempParent(), "batfleet-cmd-bin-")
		if err != nil {
			cmdBuilt.err = err
			return
		}
		cmdBuilt.dir = dir
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		build := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./cmd/writer", "./cmd/worker")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			cmdBuilt.err = fmt.Errorf("go build ./cmd/writer ./cmd/worker: %v\n%s", err, out)
		}
	})
	if cmdBuilt.err != nil {
		t.Fatal(cmdBuilt.err)
	}
	return filepath.Join(cmdBuilt.dir, "writer"), filepath.Join(cmdBuilt.dir, "worker")
}

// cmdEnv is the test's environment without NATS_URL and BATFLEET_*
// (which the binaries read as flag fallbacks), plus extra.
func cmdEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NATS_URL=") && !strings.HasPrefix(kv, "BATFLEET_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// cmdProc is a long-running writer, worker or script. Its stdout and
// stderr go to a file rather than a pipe: an --exec child inherits the
// worker's stderr and may outlive it, and Wait must not wait for it.
type cmdProc struct {
	name string
	cmd  *exec.Cmd
	log  string // the output file
	done chan struct{}
}

// cmdStart starts bin with args; it is killed (SIGKILL) and reaped when
// the test ends, and its output is logged if the test failed.
func cmdStart(t testing.TB, name, bin string, args ...string) *cmdProc {
	t.Helper()
	return cmdStartCmd(t, name, exec.Command(bin, args...))
}

// cmdStartCmd starts cmd (with cmdEnv if it has no environment set) as
// cmdStart does.
func cmdStartCmd(t testing.TB, name string, cmd *exec.Cmd) *cmdProc {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "output-")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor
	p := &cmdProc{name: name, cmd: cmd, log: f.Name(), done: make(chan struct{})}
	if cmd.Env == nil {
		cmd.Env = cmdEnv()
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // an error once it has exited
		select {
		case <-p.done:
		case <-time.After(cmdLimit):
			t.Errorf("%s (pid %d) not reaped within %v of SIGKILL", name, cmd.Process.Pid, cmdLimit)
		}
		if t.Failed() {
			t.Logf("%s (pid %d) output:\n%s", name, cmd.Process.Pid, p.output())
		}
	})
	return p
}

// output returns what the process has written so far.
func (p *cmdProc) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// waitLog waits for output matching pattern and returns its submatches.
// It fails the test if the process exits first.
func (p *cmdProc) waitLog(t testing.TB, pattern string) []string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(cmdLimit)
	for {
		exited := p.exited()
		if m := re.FindStringSubmatch(p.output()); m != nil {
			return m
		}
		if exited {
			t.Fatalf("%s exited (%v) before logging %q; output:\n%s", p.name, p.cmd.ProcessState, pattern, p.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %v; output:\n%s", p.name, pattern, cmdLimit, p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *cmdProc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

func (p *cmdProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to limit for the process to exit and returns its exit
// code (-1 when a signal killed it).
func (p *cmdProc) wait(t testing.TB, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		t.Fatalf("%s did not exit within %v; output:\n%s", p.name, limit, p.output())
		return 0
	}
}

// cmdRun runs bin to completion (bounded by cmdLimit) with stdin and
// extra environment, and returns its stdout, stderr and exit code.
func cmdRun(t testing.TB, stdin string, env []string, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cmdEnv(env...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within %v; stderr:\n%s", filepath.Base(bin), strings.Join(args, " "), cmdLimit, e.String())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run %s: %v", bin, err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// cmdPoll calls cond until it returns true, failing the test after limit.
func cmdPoll(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cmdCheckpoint is one row of `worker status --json`.
type cmdCheckpoint struct {
	ID        string `json:"id"`
	Region    string `json:"region"`
	Position  uint64 `json:"position"`
	Started   bool   `json:"started"`
	LagEvents int64  `json:"lag_events"`
	Owner     string `json:"owner"`
	Problem   string `json:"problem"`
}

func cmdStatus(t testing.TB, worker, natsURL string) map[string]cmdCheckpoint {
	t.Helper()
	stdout, stderr, code := cmdRun(t, "", nil, worker, "status", "--nats", natsURL, "--json")
	if code != 0 {
		t.Fatalf("worker status --json: exit %d: %s", code, stderr)
	}
	var rows []cmdCheckpoint
	if err := json.Unmarshal([]byte(stdout), &rows); err != nil {
		t.Fatalf("worker status --json printed no JSON array: %v\n%s", err, stdout)
	}
	m := map[string]cmdCheckpoint{}
	for _, r := range rows {
		m[r.ID] = r
	}
	return m
}

func cmdHTTPGet(t testing.TB, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// cmdEntry is one line of --out.
type cmdEntry struct {
	Seq           uint64  `json:"seq"`
	Kind          uint16  `json:"kind"`
	Entity        string  `json:"entity"`
	Scope         string  `json:"scope"`
	Payload       *string `json:"payload"`
	PayloadBase64 *string `json:"payload_base64"`
}

func cmdParseEntries(t testing.TB, data []byte) []cmdEntry {
	t.Helper()
	var es []cmdEntry
	for i, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		var e cmdEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("--out line %d is not JSON: %v: %q", i+1, err, line)
		}
		es = append(es, e)
	}
	return es
}

func cmdLineCount(path string) int {
	b, _ := os.ReadFile(path) // missing: 0 lines
	return bytes.Count(b, []byte("\n"))
}

// cmdAscending fails the test unless seqs strictly ascend.
func cmdAscending(t testing.TB, what string, seqs []uint64) {
	t.Helper()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("%s: seq %d after %d (index %d): not in ascending order", what, seqs[i], seqs[i-1], i)
		}
	}
}

// cmdKillGroupOnCleanup kills, when the test ends, the process groups of
// the pids listed in pidFile: --exec children, which the worker starts in
// groups of their own.
func cmdKillGroupOnCleanup(t testing.TB, pidFile string) {
	t.Cleanup(func() {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid <= 1 {
				continue
			}
			if pgid, err := syscall.Getpgid(pid); err == nil && pgid > 1 && pgid != syscall.Getpgrp() {
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
			}
		}
	})
}

// cmdGroupGone reports whether the process group pgid has no process left.
func cmdGroupGone(pgid int) bool {
	return errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}

func cmdWriteScript(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// cmdStdinEvents are the JSON lines of the stdin append in TestCmdFleet:
// 22 events in region entity=order, 6 of category 2 (one in both), and 3
// others: 30 events.
func cmdStdinEvents() (lines string, orders, cat2 int) {
	var b strings.Builder
	for i := range 20 {
		fmt.Fprintf(&b, `{"entity":"order:stdin-%d","scope":"shop","kind":"0x1001","payload":"stdin %d"}`+"\n", i, i)
		orders++
	}
	b.WriteString(`{"entity":"order:bin","scope":"shop","payload_base64":"/wAB"}` + "\n")
	orders++
	b.WriteString("\n") // blank lines are skipped
	b.WriteString(`{"entity":"order:both","scope":"shop","kind":"0x2abc","payload":"both"}` + "\n")
	orders++
	cat2++
	for i := range 5 {
		fmt.Fprintf(&b, `{"entity":"user:stdin-%d","scope":"shop","kind":8193,"payload":"cat2 %d"}`+"\n", i, i)
		cat2++
	}
	for i := range 3 {
		fmt.Fprintf(&b, `{"entity":"ordering:%d","scope":"shop"}`+"\n", i) // not under the prefix "order"
	}
	return b.String(), orders, cat2
}

// TestCmdFleet runs a whole fleet from the binaries: a writer with an
// embedded nats-server, synthetic and stdin appends, a durable --out worker
// killed with SIGKILL and restarted, a durable --exec worker, then the
// graceful-stop and second-signal paths, and SIGTERM for everything.
func TestCmdFleet(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	dir := t.TempDir()

	w := cmdStart(t, "writer", writerBin, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--http", "127.0.0.1:0")
	natsURL := w.waitLog(t, `writer ready: nats=(nats://\S+)`)[1]
	writerHTTP := w.waitLog(t, `writer: serving /metrics and /healthz: addr=(\S+)`)[1]

	// A durable --out worker on the orders, and a durable --exec worker on
	// category 2 whose handler appends every seq to a file.
	outFile := filepath.Join(dir, "orders.jsonl")
	outArgs := []string{"--nats", natsURL, "--region", "entity=order", "--checkpoint", "orders", "--batch", "64",
		"--out", outFile, "--http", "127.0.0.1:0", "--log-level", "debug"}
	out1 := cmdStart(t, "orders worker (life 1)", workerBin, append(outArgs, "--id", "orders-1")...)

	execSeqs := filepath.Join(dir, "cat2.seqs")
	execPids := filepath.Join(dir, "cat2.pids")
	cmdWriteScript(t, filepath.Join(dir, "cat2.sh"), `echo $$ >> '`+execPids+`'
while IFS= read -r line; do
	case "$line" in
	'{"batch_end":true}') echo continue ;;
	*) s=${line#'{"seq":'}; echo "${s%%,*}" >> '`+execSeqs+`' ;;
	esac
done
`)
	cmdKillGroupOnCleanup(t, execPids)
	ex := cmdStart(t, "cat2 worker", workerBin, "--nats", natsURL, "--region", "category=2", "--checkpoint", "cat2",
		"--batch", "100", "--exec", "exec /bin/sh '"+filepath.Join(dir, "cat2.sh")+"'")
	out1.waitLog(t, `worker running`)
	ex.waitLog(t, `worker running`)

	// 5,000 synthetic events (2,500 on order:*, 1,667 of category 2) at a
	// rate that leaves time to kill the orders worker half-way.
	const gen, genOrders, genCat2 = 5000, 2500, 1667
	app := cmdStart(t, "writer append --gen", writerBin, "append", "--nats", natsURL, "--gen", strconv.Itoa(gen), "--rate", "5000")
	cmdPoll(t, cmdLimit, "orders worker wrote 300 lines", func() bool { return cmdLineCount(outFile) >= 300 })
	out1.signal(t, syscall.SIGKILL)
	if code := out1.wait(t, cmdLimit); code != -1 {
		t.Fatalf("orders worker after SIGKILL: exit code %d, want -1 (killed)", code)
	}
	life1, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	if code := app.wait(t, cmdLimit); code != 0 {
		t.Fatalf("writer append --gen: exit %d", code)
	}
	app.waitLog(t, fmt.Sprintf(`appended %d events in .*, 0 errors`, gen))

	// JSON lines from stdin, appended while the orders worker is down.
	lines, stdinOrders, stdinCat2 := cmdStdinEvents()
	if _, stderr, code := cmdRun(t, lines, nil, writerBin, "append", "--nats", natsURL); code != 0 || !strings.Contains(stderr, "appended 30 events") {
		t.Fatalf("writer append < lines: exit %d, want 0 and 30 events:\n%s", code, stderr)
	}
	// A rejected line: exit 1, and the log names the line and the field.
	if _, stderr, code := cmdRun(t, `{"entity":"order:x","scope":"shop","kind":1}`+"\n", nil, writerBin, "append", "--nats", natsURL); code != 1 ||
		!strings.Contains(stderr, "line=1") || !strings.Contains(stderr, "kind") || !strings.Contains(stderr, "1 input lines rejected") {
		t.Errorf("writer append < bad line: exit %d, want 1 with the line and field named:\n%s", code, stderr)
	}

	out2 := cmdStart(t, "orders worker (life 2)", workerBin, append(outArgs, "--id", "orders-2")...)
	out2.waitLog(t, `worker running`)
	workerHTTP := out2.waitLog(t, `worker: serving /metrics and /healthz: addr=(\S+)`)[1]

	wantOrders, wantCat2 := genOrders+stdinOrders, genCat2+stdinCat2
	var st map[string]cmdCheckpoint
	cmdPoll(t, 60*time.Second, "every checkpoint caught up (lag_events 0)", func() bool {
		st = cmdStatus(t, workerBin, natsURL)
		for _, id := range []string{"orders", "cat2"} {
			if r, ok := st[id]; !ok || !r.Started || r.LagEvents != 0 || r.Problem != "" {
				return false
			}
		}
		return true
	})
	if r := st["orders"]; r.Region != "entity=order|scope=*|fact=none|clock=*" || r.Owner != "orders-2" {
		t.Errorf("status of orders = %+v, want its region identity and owner orders-2", r)
	}
	if r := st["cat2"]; r.Region != "entity=*|scope=*|fact=category:2|clock=*" {
		t.Errorf("status of cat2 = %+v, want its region identity", r)
	}

	// The out file: every order event at least once, ascending within each
	// life of the worker, at most one batch delivered twice.
	all, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(all, life1) {
		t.Fatal("the restarted worker did not append to the out file")
	}
	// SIGKILL can end the killed worker's write of a batch part-way (the
	// kernel stops copying a write to a regular file at a fatal signal),
	// leaving its last line unterminated. That batch was not committed
	// (the handler never returned), so life 2 delivers it again; the
	// fragment is no delivery and is left out.
	complete1 := life1[:bytes.LastIndexByte(life1, '\n')+1]
	if torn := len(life1) - len(complete1); torn > 0 {
		t.Logf("life 1 ends with %d bytes of a line cut off by SIGKILL", torn)
	}
	es1, es2 := cmdParseEntries(t, complete1), cmdParseEntries(t, all[len(life1):])
	seen := map[uint64]bool{}
	var dups int
	for life, es := range [][]cmdEntry{es1, es2} {
		seqs := make([]uint64, len(es))
		for i, e := range es {
			seqs[i] = e.Seq
			if e.Entity != "order" && !strings.HasPrefix(e.Entity, "order:") {
				t.Errorf("entity %q delivered to region entity=order", e.Entity)
			}
			if seen[e.Seq] {
				dups++
			}
			seen[e.Seq] = true
		}
		cmdAscending(t, fmt.Sprintf("orders worker life %d", life+1), seqs)
	}
	t.Logf("orders: life 1 wrote %d lines, life 2 %d lines, %d redelivered", len(es1), len(es2), dups)
	if len(es1) < 300 || len(es2) < stdinOrders {
		t.Errorf("life 1 wrote %d lines, life 2 %d; want >= 300 and >= %d", len(es1), len(es2), stdinOrders)
	}
	if len(seen) != wantOrders {
		t.Errorf("%d distinct order events in the out file, want %d", len(seen), wantOrders)
	}
	if dups > 64 {
		t.Errorf("%d events redelivered after the kill, want at most one batch (64)", dups)
	}
	var sawBin, sawText bool
	for _, e := range es2 {
		switch e.Entity {
		case "order:bin":
			sawBin = true
			if e.Payload != nil || e.PayloadBase64 == nil || *e.PayloadBase64 != "/wAB" || e.Kind != 0x1000 {
				t.Errorf("order:bin delivered as %+v, want payload_base64 /wAB and kind 0x1000", e)
			}
		case "order:stdin-3":
			sawText = true
			if e.Payload == nil || *e.Payload != "stdin 3" || e.Kind != 0x1001 || e.Scope != "shop" {
				t.Errorf("order:stdin-3 delivered as %+v", e)
			}
		}
	}
	if !sawBin || !sawText {
		t.Errorf("stdin events missing from life 2: order:bin %v, order:stdin-3 %v", sawBin, sawText)
	}

	// The --exec worker's handler saw every category-2 event once, in order.
	var execs []uint64
	b, err := os.ReadFile(execSeqs)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			t.Fatalf("exec handler recorded %q", f)
		}
		execs = append(execs, n)
	}
	cmdAscending(t, "exec handler", execs)
	if len(execs) != wantCat2 {
		t.Errorf("exec handler saw %d events, want %d", len(execs), wantCat2)
	}

	// Metrics and health of the writer and of a worker.
	if code, body := cmdHTTPGet(t, "http://"+writerHTTP+"/metrics"); code != 200 ||
		!regexp.MustCompile(`(?m)^batfleet_writer_appends_total [1-9][0-9]*$`).MatchString(body) ||
		!strings.Contains(body, "# TYPE batfleet_writer_appends_total counter") ||
		// client_golang's standard metrics and the latency histograms (issue 16).
		!regexp.MustCompile(`(?m)^batfleet_build_info\{goversion="[^"]+",program="writer",version="[^"]+"\} 1$`).MatchString(body) ||
		!regexp.MustCompile(`(?m)^go_goroutines [0-9]+$`).MatchString(body) ||
		!regexp.MustCompile(`(?m)^process_resident_memory_bytes \S+$`).MatchString(body) ||
		!regexp.MustCompile(`(?m)^batfleet_writer_request_duration_seconds_count\{endpoint="append",outcome="ok"\} [1-9][0-9]*$`).MatchString(body) ||
		!regexp.MustCompile(`(?m)^batfleet_writer_request_duration_seconds_count\{endpoint="pull",outcome="ok"\} [1-9][0-9]*$`).MatchString(body) ||
		!regexp.MustCompile(`(?m)^batfleet_journal_fsync_duration_seconds_count [1-9][0-9]*$`).MatchString(body) {
		t.Errorf("writer /metrics: %d\n%s", code, body)
	}
	if code, body := cmdHTTPGet(t, "http://"+writerHTTP+"/healthz"); code != 200 {
		t.Errorf("writer /healthz: %d %s", code, body)
	}
	if code, body := cmdHTTPGet(t, "http://"+workerHTTP+"/metrics"); code != 200 ||
		!regexp.MustCompile(`(?m)^batfleet_worker_events_total [1-9][0-9]*$`).MatchString(body) ||
		!regexp.MustCompile(`(?m)^batfleet_build_info\{goversion="[^"]+",program="worker",version="[^"]+"\} 1$`).MatchString(body) ||
		!regexp.MustCompile(`(?m)^batfleet_worker_handler_duration_seconds_count\{outcome="done"\} [1-9][0-9]*$`).MatchString(body) ||
		!regexp.MustCompile(`(?m)^batfleet_worker_checkpoint_save_duration_seconds_count\{outcome="ok"\} [1-9][0-9]*$`).MatchString(body) ||
		!regexp.MustCompile(`(?m)^batfleet_worker_lag_events 0$`).MatchString(body) {
		t.Errorf("worker /metrics: %d\n%s", code, body)
	}
	if code, body := cmdHTTPGet(t, "http://"+workerHTTP+"/healthz"); code != 200 {
		t.Errorf("worker /healthz: %d %s", code, body)
	}

	// The table form of status.
	if stdout, stderr, code := cmdRun(t, "", nil, workerBin, "status", "--nats", natsURL); code != 0 ||
		!strings.Contains(stdout, "LAG EVENTS") || !regexp.MustCompile(`(?m)^orders\s+entity=order\s`).MatchString(stdout) {
		t.Errorf("worker status: exit %d\n%s%s", code, stdout, stderr)
	}

	cmdGracefulStop(t, dir, workerBin, natsURL)
	cmdSecondSignal(t, dir, workerBin, natsURL)

	// SIGTERM everything: each finishes and exits 0.
	for _, p := range []*cmdProc{out2, ex} {
		p.signal(t, syscall.SIGTERM)
	}
	for _, p := range []*cmdProc{out2, ex} {
		if code := p.wait(t, cmdLimit); code != 0 {
			t.Errorf("%s after SIGTERM: exit %d, want 0; output:\n%s", p.name, code, p.output())
		}
		if !strings.Contains(p.output(), "worker stopped") {
			t.Errorf("%s did not log 'worker stopped'", p.name)
		}
	}
	w.signal(t, syscall.SIGTERM)
	if code := w.wait(t, cmdLimit); code != 0 {
		t.Errorf("writer after SIGTERM: exit %d, want 0; output:\n%s", code, w.output())
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(natsURL, "nats://"), time.Second); err == nil {
		c.Close()
		t.Errorf("the writer's NATS port %s still accepts connections after it exited", natsURL)
	}
}

// cmdGracefulStop: SIGTERM while a durable --exec worker is in the middle
// of a batch. The worker waits for the handler, commits that batch and
// exits 0.
func cmdGracefulStop(t *testing.T, dir, workerBin, natsURL string) {
	t.Helper()
	gdir := filepath.Join(dir, "graceful")
	if err := os.Mkdir(gdir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The first batch: write its last seq to busy, wait for the file go.
	cmdWriteScript(t, filepath.Join(gdir, "h.sh"), `D='`+gdir+`'
echo $$ >> "$D/pids"
n=0
while IFS= read -r line; do
	case "$line" in
	'{"batch_end":true}')
		n=$((n+1))
		if [ $n -eq 1 ]; then
			echo "$last" > "$D/busy.tmp" && mv "$D/busy.tmp" "$D/busy"
			while [ ! -e "$D/go" ]; do sleep 0.02; done
		fi
		echo continue ;;
	*) last=${line#'{"seq":'}; last=${last%%,*} ;;
	esac
done
`)
	cmdKillGroupOnCleanup(t, filepath.Join(gdir, "pids"))
	p := cmdStart(t, "graceful worker", workerBin, "--nats", natsURL, "--region", "all", "--checkpoint", "graceful",
		"--batch", "50", "--exec", "exec /bin/sh '"+filepath.Join(gdir, "h.sh")+"'")
	var busy []byte
	cmdPoll(t, cmdLimit, "graceful worker's handler holds its first batch", func() bool {
		var err error
		busy, err = os.ReadFile(filepath.Join(gdir, "busy"))
		return err == nil
	})
	last, err := strconv.ParseUint(strings.TrimSpace(string(busy)), 10, 64)
	if err != nil {
		t.Fatalf("handler's last seq %q: %v", busy, err)
	}
	p.signal(t, syscall.SIGTERM)
	p.waitLog(t, `signal received`)
	if p.exited() {
		t.Fatalf("the worker exited before its handler answered; output:\n%s", p.output())
	}
	if err := os.WriteFile(filepath.Join(gdir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, cmdLimit); code != 0 {
		t.Fatalf("graceful worker: exit %d after SIGTERM, want 0; output:\n%s", code, p.output())
	}
	r, ok := cmdStatus(t, workerBin, natsURL)["graceful"]
	if !ok || !r.Started || r.Position != last {
		t.Errorf("checkpoint graceful after SIGTERM = %+v (found %v), want the batch in hand committed: position %d", r, ok, last)
	}
}

// cmdSecondSignal: a second signal while a worker waits on a stuck --exec
// batch exits at once with 130.
func cmdSecondSignal(t *testing.T, dir, workerBin, natsURL string) {
	t.Helper()
	sdir := filepath.Join(dir, "stuck")
	if err := os.Mkdir(sdir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmdWriteScript(t, filepath.Join(sdir, "h.sh"), `D='`+sdir+`'
echo $$ >> "$D/pids"
while IFS= read -r line; do
	[ "$line" = '{"batch_end":true}' ] && break
done
touch "$D/busy"
sleep 120
`)
	cmdKillGroupOnCleanup(t, filepath.Join(sdir, "pids"))
	p := cmdStart(t, "stuck worker", workerBin, "--nats", natsURL, "--region", "all", "--batch", "10",
		"--exec-timeout", "10m", "--exec", "exec /bin/sh '"+filepath.Join(sdir, "h.sh")+"'")
	cmdPoll(t, cmdLimit, "stuck worker's handler holds a batch", func() bool {
		_, err := os.Stat(filepath.Join(sdir, "busy"))
		return err == nil
	})
	b, err := os.ReadFile(filepath.Join(sdir, "pids"))
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if pgid, err := syscall.Getpgid(child); err != nil || pgid != child {
		t.Fatalf("exec child %d: process group %d, %v; want a group of its own", child, pgid, err)
	}
	p.signal(t, syscall.SIGTERM)
	p.waitLog(t, `signal received`)
	if p.exited() {
		t.Fatalf("the worker exited on the first signal with a batch in hand; output:\n%s", p.output())
	}
	start := time.Now()
	p.signal(t, syscall.SIGINT)
	if code := p.wait(t, 5*time.Second); code != 130 {
		t.Errorf("stuck worker after a second signal: exit %d, want 130; output:\n%s", code, p.output())
	}
	t.Logf("second signal: exit 130 after %v", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(p.output(), "second signal; exiting now") {
		t.Errorf("no 'second signal' log line:\n%s", p.output())
	}
	// Exiting at once leaves the --exec child to end by itself when it
	// next reads its stdin (closed now); this one sleeps on, and the
	// cleanup kills it.
	if !cmdGroupGone(child) {
		t.Logf("the stuck --exec child (process group %d) outlives the worker's exit 130", child)
	}
}

// cmdOneLine fails the test unless s is exactly one line matching pattern,
// with no trace of a panic.
func cmdOneLine(t testing.TB, what, s, pattern string) {
	t.Helper()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Errorf("%s: stderr is %d lines, want exactly one:\n%s", what, strings.Count(s, "\n"), s)
	}
	if !regexp.MustCompile(pattern).MatchString(strings.TrimSuffix(s, "\n")) {
		t.Errorf("%s: stderr %q does not match %q", what, s, pattern)
	}
	for _, bad := range []string{"goroutine", "panic"} {
		if strings.Contains(s, bad) {
			t.Errorf("%s: stderr mentions %q:\n%s", what, bad, s)
		}
	}
}

// cmdFreeAddr returns a loopback address where nothing listens.
func cmdFreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestCmdErrors: bad flags and configuration exit 2, an unreachable NATS
// exits 3, each with one clear line on stderr; a writer whose --listen
// port is taken fails with a clear last line.
func TestCmdErrors(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	dead := "nats://" + cmdFreeAddr(t)
	tmp := t.TempDir()
	out := filepath.Join(tmp, "out.jsonl")
	tests := []struct {
		name    string
		env     []string
		bin     string
		args    []string
		code    int
		pattern string // the one stderr line
	}{
		{"region entity=*", nil, workerBin, []string{"--region", "entity=*", "--out", out}, 2,
			`^worker: --region: entity prefix "\*" is not a glob`},
		{"region unknown key", nil, workerBin, []string{"run", "--region", "owner=me", "--out", out}, 2, `^worker: --region: unknown key "owner"`},
		{"unknown worker flag", nil, workerBin, []string{"--bogus"}, 2, `^worker: unknown flag --bogus \(see worker --help\)$`},
		{"unknown status flag", nil, workerBin, []string{"status", "--out", "x"}, 2, `^worker: unknown flag --out`},
		{"stray argument", nil, workerBin, []string{"--out", out, "extra"}, 2, `^worker: unexpected argument "extra"`},
		{"no handler", nil, workerBin, []string{"--region", "entity=order"}, 2, `give exactly one handler`},
		{"two handlers", nil, workerBin, []string{"--out", out, "--exec", "cat"}, 2, `give exactly one handler`},
		{"bad restart", nil, workerBin, []string{"--out", out, "--restart", "always"}, 2, `--restart "always"`},
		{"bad checkpoint id", nil, workerBin, []string{"--out", out, "--checkpoint", "a/b"}, 2, `^worker: --checkpoint: `},
		{"bad log level", nil, writerBin, []string{"--log-level", "loud"}, 2, `^writer: --log-level "loud"`},
		{"append batch 0", nil, writerBin, []string{"append", "--batch", "0"}, 2, `^writer: --batch must be > 0$`},
		{"append bad env", []string{"BATFLEET_BATCH=lots"}, writerBin, []string{"append"}, 2, `^writer: BATFLEET_BATCH="lots": `},
		{"append bad journal", nil, writerBin, []string{"append", "--journal", "a/b"}, 2, `^writer: --journal: `},
		{"unknown writer flag", nil, writerBin, []string{"append", "--bogus"}, 2, `^writer: unknown flag --bogus \(see writer append --help\)$`},
		{"append without NATS", nil, writerBin, []string{"append", "--nats", dead, "--gen", "10"}, 3,
			`^writer: connect to NATS at ` + regexp.QuoteMeta(dead) + `: `},
		{"worker without NATS", nil, workerBin, []string{"--nats", dead, "--out", out}, 3, `^worker: connect to NATS at ` + regexp.QuoteMeta(dead) + `: `},
		{"status without NATS (NATS_URL)", []string{"NATS_URL=" + dead}, workerBin, []string{"status"}, 3,
			`^worker: connect to NATS at ` + regexp.QuoteMeta(dead) + `: `},
		{"serve joining no NATS", nil, writerBin, []string{"--nats", dead, "--data", filepath.Join(tmp, "data")}, 3,
			`^writer: connect to NATS at ` + regexp.QuoteMeta(dead) + `: `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// NATS_URL points at nothing, for a case that gets as far as
			// connecting.
			stdout, stderr, code := cmdRun(t, "", append([]string{"NATS_URL=" + dead}, tt.env...), tt.bin, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			cmdOneLine(t, tt.name, stderr, tt.pattern)
		})
	}

	t.Run("help", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{{"--help"}, {"append", "-h"}} {
			stdout, stderr, code := cmdRun(t, "", nil, writerBin, args...)
			if code != 0 || !strings.HasPrefix(stdout, "usage: writer") || !strings.Contains(stdout, "[NATS_URL]") || stderr != "" {
				t.Errorf("writer %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, stdout, stderr)
			}
		}
	})

	t.Run("listen port in use", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		stdout, stderr, code := cmdRun(t, "", nil, writerBin, "--listen", ln.Addr().String(), "--data", filepath.Join(t.TempDir(), "data"))
		if code == 0 {
			t.Errorf("writer --listen %s (in use): exit 0", ln.Addr())
		}
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		lastLine := lines[len(lines)-1]
		if !strings.HasPrefix(lastLine, "writer: ") || !strings.Contains(lastLine, ln.Addr().String()) || !strings.Contains(lastLine, "in use") {
			t.Errorf("last stderr line %q, want one naming the address and the cause; stderr:\n%s", lastLine, stderr)
		}
		for _, bad := range []string{"goroutine", "panic"} {
			if strings.Contains(stderr, bad) {
				t.Errorf("stderr mentions %q:\n%s", bad, stderr)
			}
		}
		if stdout != "" {
			t.Errorf("stdout %q, want nothing", stdout)
		}
	})
}

// TestCmdDemo runs scripts/demo.sh (what `make demo` runs) with the
// binaries in bin/ and a small DEMO_EVENTS, and checks it leaves nothing
// running.
func TestCmdDemo(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	root := cmdModuleRoot(t)
	binDir := filepath.Join(root, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{writerBin, workerBin} {
		cmdInstall(t, src, filepath.Join(binDir, filepath.Base(src)))
	}

	cmd := exec.Command("bash", filepath.Join(root, "scripts", "demo.sh"))
	cmd.Dir = root
	cmd.Env = cmdEnv("DEMO_EVENTS=4000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the demo and its background jobs
	start := time.Now()
	demo := cmdStartCmd(t, "demo", cmd)
	pgid := cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }) // runs before cmdStartCmd's
	code := demo.wait(t, 90*time.Second)
	output := demo.output()
	t.Logf("demo: exit %d after %v", code, time.Since(start).Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("demo: exit %d, want 0; output:\n%s", code, output)
	}
	for _, want := range []string{"== worker status", "LAG EVENTS", "== summary", "done."} {
		if !strings.Contains(output, want) {
			t.Errorf("demo output lacks %q:\n%s", want, output)
		}
	}

	// Nothing the demo started is left: its process group is empty and
	// the writer's NATS port stops accepting.
	cmdPoll(t, 10*time.Second, "the demo's process group empties", func() bool { return cmdGroupGone(pgid) })
	m := regexp.MustCompile(`writer serving journal 'main' on nats://(\S+)`).FindStringSubmatch(output)
	if m == nil {
		t.Fatalf("demo output does not name the NATS URL:\n%s", output)
	}
	cmdPoll(t, 10*time.Second, "the demo writer's NATS port "+m[1]+" stops accepting", func() bool {
		c, err := net.DialTimeout("tcp", m[1], time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
}

// cmdInstall copies the binary src to dst through a temporary file and a
// rename, so that a process running an older dst is not disturbed.
func cmdInstall(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		t.Fatal(err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		t.Fatal(err)
	}
}
