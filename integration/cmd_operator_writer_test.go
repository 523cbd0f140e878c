package integration

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/batfleet/batfleet/internal/natstest"
)

// The writer side of issue 16 (the operator's experience), driven as a
// user drives the binaries: --version and help, JSON payloads and scope
// "*" on append, liveness apart from readiness, `writer info`, and the
// repository's build target and licence.

// cmdWriterServe starts `writer serve` with an embedded nats-server and
// an HTTP endpoint under dir, and returns it with its NATS URL and HTTP
// address.
func cmdWriterServe(t testing.TB, writerBin, dir string, extra ...string) (p *cmdProc, natsURL, httpAddr string) {
	t.Helper()
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--http", "127.0.0.1:0"}, extra...)
	p = cmdStart(t, "writer", writerBin, args...)
	natsURL = p.waitLog(t, `writer ready: nats=(nats://\S+)`)[1]
	httpAddr = p.waitLog(t, `writer: serving /metrics and /healthz: addr=(\S+)`)[1]
	return p, natsURL, httpAddr
}

// TestCmdWriterVersionAndHelp (issue 16, item 9): --version prints the
// compiled-in version, `help [COMMAND]` is --help, and help lists the NATS
// connection flags apart, with one default per flag.
func TestCmdWriterVersionAndHelp(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	for _, tt := range []struct {
		bin  string
		args []string
		want string
	}{
		{writerBin, []string{"--version"}, "writer 0.1.0\n"},
		{writerBin, []string{"version"}, "writer 0.1.0\n"},
		{workerBin, []string{"--version"}, "worker 0.1.0\n"},
	} {
		stdout, stderr, code := cmdRun(t, "", nil, tt.bin, tt.args...)
		if code != 0 || stdout != tt.want || stderr != "" {
			t.Errorf("%s %v: exit %d, stdout %q, stderr %q; want 0 and %q", filepath.Base(tt.bin), tt.args, code, stdout, stderr, tt.want)
		}
	}
	for _, tt := range []struct {
		bin        string
		args       []string
		wantPrefix string
		wantFlag   string // a flag of that command
	}{
		{writerBin, []string{"help"}, "usage: writer", "--listen"},
		{writerBin, []string{"help", "append"}, "usage: writer", "--inflight"},
		{writerBin, []string{"help", "info"}, "usage: writer", "--data"},
		{workerBin, []string{"help"}, "usage: worker", "--region"},
		{workerBin, []string{"help", "status"}, "usage: worker", "--json"},
	} {
		stdout, stderr, code := cmdRun(t, "", nil, tt.bin, tt.args...)
		if code != 0 || !strings.HasPrefix(stdout, tt.wantPrefix) || !strings.Contains(stdout, "  "+tt.wantFlag+" [") || stderr != "" {
			t.Errorf("%s %v: exit %d; want 0 and the command's usage\nstdout:\n%s\nstderr:\n%s", filepath.Base(tt.bin), tt.args, code, stdout, stderr)
			continue
		}
		own, natsPart, found := strings.Cut(stdout, "\nNATS connection and authentication flags:\n")
		if !found {
			t.Errorf("%s %v: no NATS flags heading:\n%s", filepath.Base(tt.bin), tt.args, stdout)
			continue
		}
		for _, f := range []string{"--nats", "--creds", "--nkey", "--user", "--password", "--tls-ca", "--tls-cert", "--tls-key"} {
			if strings.Contains(own, "  "+f+" [") || !strings.Contains(natsPart, "  "+f+" [") {
				t.Errorf("%s %v: %s is not listed apart under the NATS heading:\n%s", filepath.Base(tt.bin), tt.args, f, stdout)
			}
		}
	}
	stdout, _, _ := cmdRun(t, "", nil, writerBin, "append", "--help")
	_, inflight, _ := strings.Cut(stdout, "  --inflight [")
	inflight, _, _ = strings.Cut(inflight, "\n  --")
	if n := strings.Count(inflight, "(default"); n != 1 {
		t.Errorf("writer append --help: --inflight shows %d defaults, want 1:\n%s", n, inflight)
	}
}

// TestCmdWriterAppendPayloadAndScope (issue 16, item 7): a JSON object or
// array as payload is stored as its JSON text, and scope "*" is refused
// with an error naming the field.
func TestCmdWriterAppendPayloadAndScope(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	dir := t.TempDir()
	_, natsURL, _ := cmdWriterServe(t, writerBin, dir)

	seqs := cmdAppend(t, writerBin, natsURL, []string{
		`{"entity":"order:1","scope":"shop","payload":{"total": 12.5,"items":["a","b"]}}`,
		`{"entity":"order:2","scope":"shop","payload":[1,{"x":null}]}`,
		`{"entity":"order:3","scope":"shop","payload":"plain text"}`,
	})
	out := filepath.Join(dir, "orders.jsonl")
	cmdStart(t, "worker", workerBin, "--nats", natsURL, "--region", "entity=order", "--out", out)
	cmdPoll(t, cmdLimit, "the worker wrote the three events", func() bool { return cmdLineCount(out) >= 3 })
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]string{}
	for _, e := range cmdParseEntries(t, data) {
		if e.Payload == nil {
			t.Fatalf("entry %d has no text payload: %s", e.Seq, data)
		}
		got[e.Seq] = *e.Payload
	}
	for i, want := range []string{`{"total": 12.5,"items":["a","b"]}`, `[1,{"x":null}]`, "plain text"} {
		if got[seqs[i]] != want {
			t.Errorf("seq %d: payload %q, want %q", seqs[i], got[seqs[i]], want)
		}
	}

	for _, tt := range []struct{ line, want string }{
		{`{"entity":"order:4","scope":"*","payload":"x"}`, `scope: \"*\" is refused: no region can select it`},
		{`{"entity":"order:4","scope":"shop","payload":42}`, `payload: 42 is neither a string nor a JSON object or array`},
		{`{"entity":"order:4","payload":"x"}`, `entity/scope: `},
	} {
		stdout, stderr, code := cmdRun(t, tt.line+"\n", nil, writerBin, "append", "--nats", natsURL)
		if code != 1 || stdout != "" || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "1 input lines rejected") {
			t.Errorf("append %s: exit %d, stdout %q; want 1, nothing, and an error containing %q\nstderr:\n%s", tt.line, code, stdout, tt.want, stderr)
		}
	}
}

// TestCmdWriterLivenessApartFromReadiness (issue 16, item 10): when NATS
// goes away, /readyz fails and /healthz (liveness) keeps answering 200.
func TestCmdWriterLivenessApartFromReadiness(t *testing.T) {
	writerBin, _ := cmdBins(t)
	srv := natstest.StartServer(t)
	w := cmdStart(t, "writer", writerBin, "serve", "--nats", srv.ClientURL(), "--data", filepath.Join(t.TempDir(), "data"),
		"--http", "127.0.0.1:0")
	w.waitLog(t, `writer ready`)
	base := "http://" + w.waitLog(t, `writer: serving /metrics and /healthz: addr=(\S+)`)[1]
	wantLivenessApartFromReadiness(t, w, base, srv)
}

// wantLivenessApartFromReadiness checks p's probes at base: both 200
// while connected; once srv (its NATS) is shut down, /readyz answers 503
// with the reason and /healthz (liveness) keeps answering 200, and p
// keeps running.
func wantLivenessApartFromReadiness(t *testing.T, p *cmdProc, base string, srv *server.Server) {
	t.Helper()
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := cmdHTTPGet(t, base+path); code != http.StatusOK {
			t.Fatalf("connected: %s = %d %q, want 200", path, code, body)
		}
	}
	natstest.Shutdown(srv)
	var readyBody string
	cmdPoll(t, cmdLimit, "/readyz fails once NATS is gone", func() bool {
		code, body := cmdHTTPGet(t, base+"/readyz")
		readyBody = body
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(readyBody, "not connected to NATS") {
		t.Errorf("/readyz body %q, want the reason", readyBody)
	}
	if code, body := cmdHTTPGet(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("NATS down: /healthz = %d %q, want 200 (liveness must not follow NATS)", code, body)
	}
	if p.exited() {
		t.Fatalf("%s exited when NATS went away:\n%s", p.name, p.output())
	}
}

// cmdInfo is `writer info --json`.
type cmdInfo struct {
	Journal     string `json:"journal"`
	Running     bool   `json:"running"`
	JournalID   string `json:"journal_id"`
	Incarnation string `json:"incarnation"`
	Visible     uint64 `json:"visible"`
	Events      uint64 `json:"events"`
	DiskBytes   *int64 `json:"disk_bytes"`
}

func cmdWriterInfo(t testing.TB, writerBin string, args ...string) cmdInfo {
	t.Helper()
	stdout, stderr, code := cmdRun(t, "", nil, writerBin, append([]string{"info", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("writer info %v: exit %d:\n%s", args, code, stderr)
	}
	var in cmdInfo
	if err := json.Unmarshal([]byte(stdout), &in); err != nil {
		t.Fatalf("writer info --json printed no JSON object: %v\n%s", err, stdout)
	}
	return in
}

// TestCmdWriterInfo (issue 16, writer info): from a running writer over
// NATS, with disk use from --data; from the data directory once the writer
// is stopped; bad input refused naming the flag.
func TestCmdWriterInfo(t *testing.T) {
	writerBin, _ := cmdBins(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	w, natsURL, _ := cmdWriterServe(t, writerBin, dir)
	seqs := cmdAppend(t, writerBin, natsURL, []string{
		`{"entity":"order:1","scope":"shop","payload":"a"}`,
		`{"entity":"order:2","scope":"shop","payload":"b"}`,
	})

	live := cmdWriterInfo(t, writerBin, "--nats", natsURL)
	if !live.Running || live.Journal != "main" || len(live.JournalID) != 32 || len(live.Incarnation) != 32 ||
		live.Visible <= seqs[1] || live.Events < 2 || live.DiskBytes != nil {
		t.Errorf("writer info (running, no --data) = %+v; want running, ids, visible > %d, events >= 2, no disk use", live, seqs[1])
	}
	withData := cmdWriterInfo(t, writerBin, "--nats", natsURL, "--data", data)
	if withData.JournalID != live.JournalID || withData.DiskBytes == nil || *withData.DiskBytes <= 0 {
		t.Errorf("writer info --data = %+v; want the same journal id and a disk use", withData)
	}
	stdout, stderr, code := cmdRun(t, "", nil, writerBin, "info", "--nats", natsURL, "--data", data)
	for _, want := range []string{"journal id", live.JournalID, "incarnation", "visible", "events", "cancelled", "none", "disk use"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("writer info table: exit %d, no %q:\n%s%s", code, want, stdout, stderr)
		}
	}

	w.signal(t, syscall.SIGTERM)
	if code := w.wait(t, cmdLimit); code != 0 {
		t.Fatalf("writer after SIGTERM: exit %d", code)
	}
	offline := cmdWriterInfo(t, writerBin, "--nats", natsURL, "--data", data)
	if offline.Running || offline.JournalID != live.JournalID || offline.DiskBytes == nil || *offline.DiskBytes <= 0 {
		t.Errorf("writer info with the writer stopped = %+v; want not running, journal id %s and a disk use", offline, live.JournalID)
	}
	stdout, _, code = cmdRun(t, "", nil, writerBin, "info", "--nats", natsURL, "--data", data)
	if code != 0 || !strings.Contains(stdout, "not running") {
		t.Errorf("writer info table, writer stopped: exit %d:\n%s", code, stdout)
	}

	for _, tt := range []struct {
		name    string
		args    []string
		code    int
		pattern string
	}{
		{"no writer, no --data", []string{"--nats", natsURL}, 3, `^writer: connect to NATS at `},
		{"data without a journal", []string{"--nats", natsURL, "--data", t.TempDir()}, 2, `^writer: .*--data: .* holds no journal`},
		{"bad journal", []string{"--journal", "a/b"}, 2, `^writer: --journal: `},
		{"bad timeout", []string{"--timeout", "-1s"}, 2, `^writer: --timeout must be > 0`},
	} {
		stdout, stderr, code := cmdRun(t, "", nil, writerBin, append([]string{"info"}, tt.args...)...)
		if code != tt.code || stdout != "" {
			t.Errorf("%s: exit %d, stdout %q; want %d and nothing\nstderr:\n%s", tt.name, code, stdout, tt.code, stderr)
		}
		cmdOneLine(t, tt.name, stderr, tt.pattern)
	}
}

// TestCmdMakeBuildAndLicense (issue 16, item 14): `make build` puts the two
// binaries, and nothing else, into its bin directory; the repository has
// an MIT licence.
func TestCmdMakeBuildAndLicense(t *testing.T) {
	root := cmdModuleRoot(t)
	bin := filepath.Join(t.TempDir(), "bin")
	stdout, stderr, code := cmdRun(t, "", nil, "make", "-C", root, "build", "BIN="+bin)
	if code != 0 {
		t.Fatalf("make build: exit %d\n%s%s", code, stdout, stderr)
	}
	entries, err := os.ReadDir(bin)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if strings.Join(names, " ") != "worker writer" {
		t.Errorf("make build put %v into bin/, want [worker writer]", names)
	}
	lic, err := os.ReadFile(filepath.Join(root, "LICENSE"))
	if err != nil {
		t.Fatalf("LICENSE: %v", err)
	}
	if !strings.HasPrefix(string(lic), "MIT License") || !strings.Contains(string(lic), "batfleet authors") {
		t.Errorf("LICENSE is not the MIT licence of the batfleet authors:\n%s", lic)
	}
}
