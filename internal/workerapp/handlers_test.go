package workerapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
)

// testEntries returns three entries: a text payload that needs JSON
// escaping, a non-UTF-8 payload and an empty one.
func testEntries() []engine.Entry {
	var id [16]byte
	for i := range id {
		id[i] = byte(i)
	}
	return []engine.Entry{
		{Seq: 5, ID: id, Kind: 0x1001, Coordinate: engine.MustCoordinate("order:1", "shop"), Clock: 0, WallMs: 1700000000000, Payload: []byte("say \"hi\"\n")},
		{Seq: 9, ID: id, Kind: 0x2001, Coordinate: engine.MustCoordinate("user:2", "scope-1"), Clock: 3, WallMs: 1700000000001, Payload: []byte{0xff, 0x00, 0x01}},
		{Seq: 10, ID: id, Kind: 0x1000, Coordinate: engine.MustCoordinate("order", "shop"), Clock: 1, WallMs: 1700000000002},
	}
}

// testEntryLines are testEntries as --out writes them.
const testEntryLines = `{"seq":5,"id":"000102030405060708090a0b0c0d0e0f","kind":4097,"entity":"order:1","scope":"shop","clock":0,"wall_ms":1700000000000,"payload":"say \"hi\"\n"}
{"seq":9,"id":"000102030405060708090a0b0c0d0e0f","kind":8193,"entity":"user:2","scope":"scope-1","clock":3,"wall_ms":1700000000001,"payload_base64":"/wAB"}
{"seq":10,"id":"000102030405060708090a0b0c0d0e0f","kind":4096,"entity":"order","scope":"shop","clock":1,"wall_ms":1700000000002,"payload":""}
`

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestOutHandlerLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	h, err := newOutHandler(path, nil)
	if err != nil {
		t.Fatalf("newOutHandler: %v", err)
	}
	es := testEntries()
	if a := h.handle(context.Background(), es[:1], nil); a != delivery.Continue {
		t.Errorf("handle = %v, want Continue", a)
	}
	if a := h.handle(context.Background(), es[1:], nil); a != delivery.Continue {
		t.Errorf("handle = %v, want Continue", a)
	}
	// Each batch is on disk when handle returns: the checkpoint follows.
	if got := readFile(t, path); got != testEntryLines {
		t.Errorf("before Close, file =\n%s\nwant\n%s", got, testEntryLines)
	}
	if err := h.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestOutHandlerAppendsToExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	const earlier = `{"seq":1}` + "\n"
	if err := os.WriteFile(path, []byte(earlier), 0o644); err != nil {
		t.Fatal(err)
	}
	es := testEntries()
	// Two lives of a worker, as after a restart: both append.
	for _, batch := range [][]engine.Entry{es[:2], es[2:]} {
		h, err := newOutHandler(path, nil)
		if err != nil {
			t.Fatalf("newOutHandler: %v", err)
		}
		h.handle(context.Background(), batch, nil)
		if err := h.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if got := readFile(t, path); got != earlier+testEntryLines {
		t.Errorf("file =\n%s\nwant\n%s", got, earlier+testEntryLines)
	}
}

func TestOutHandlerStdout(t *testing.T) {
	if _, err := newOutHandler("-", io.Discard); err == nil {
		t.Error("--out - with a non-file stdout succeeded")
	}
	h, err := newOutHandler("-", os.Stdout)
	if err != nil {
		t.Fatalf("--out - with os.Stdout: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	// Closing the handler leaves the process's stdout open.
	if _, err := os.Stdout.Stat(); err != nil {
		t.Errorf("stdout after Close: %v", err)
	}
}

func TestOutHandlerBadPath(t *testing.T) {
	_, err := newOutHandler(filepath.Join(t.TempDir(), "missing", "out.jsonl"), nil)
	if err == nil || !strings.HasPrefix(err.Error(), "--out ") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("newOutHandler in a missing directory = %v, want an --out error wrapping ErrNotExist", err)
	}
}

// TestOutHandlerWriteFailurePanics: a failed write is a handler failure,
// which the engine handles under the restart policy.
func TestOutHandlerWriteFailurePanics(t *testing.T) {
	h, err := newOutHandler(filepath.Join(t.TempDir(), "out.jsonl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = h.Close()
	msg := mustPanic(t, func() { h.handle(context.Background(), testEntries(), nil) })
	if !strings.Contains(msg, "--out: write") {
		t.Errorf("panic %q, want an --out write failure", msg)
	}
}

// mustPanic runs f and returns what it panicked with, as text; it fails
// the test if f returns.
func mustPanic(t *testing.T, f func()) (msg string) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatal("did not panic")
		}
		msg = fmt.Sprint(r)
	}()
	f()
	return ""
}

// execScript writes a /bin/sh handler script into dir and returns the
// --exec command line running it. The script sees $D (dir) and counts its
// lives in $D/lives, so that one script can behave differently in each
// child process: $life is 1 in the first child, 2 in the next. Each child
// appends its pid, which is also its process group id, to $D/pids.
func execScript(t *testing.T, dir, body string) string {
	t.Helper()
	script := `D='` + dir + `'
life=$(( $(cat "$D/lives" 2>/dev/null || echo 0) + 1 ))
echo $life > "$D/lives"
echo $$ >> "$D/pids"
` + body
	path := filepath.Join(dir, "handler.sh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// exec: the script's shell replaces the "sh -c" the handler starts, so
	// $$ is the pid of the child's process group leader.
	return "exec /bin/sh '" + path + "'"
}

// readBatch is a shell function that reads one batch, appending its lines
// to $D/got; it fails when stdin ends.
const readBatch = `read_batch() {
	while IFS= read -r line; do
		printf '%s\n' "$line" >> "$D/got"
		[ "$line" = '{"batch_end":true}' ] && return 0
	done
	return 1
}
`

func newTestExec(t *testing.T, cmdline string, timeout time.Duration) *execHandler {
	t.Helper()
	h := newExecHandler(cmdline, timeout, io.Discard, hclog.NewNullLogger())
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func childPIDs(t *testing.T, dir string) []int {
	t.Helper()
	var pids []int
	for _, f := range strings.Fields(readFile(t, filepath.Join(dir, "pids"))) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// gone reports whether the process group pgid (the exec handler starts
// each child in a group of its own) empties within a few seconds: killed
// grandchildren are reaped by init, not by the handler.
func gone(pgid int) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func TestExecHandlerAnswers(t *testing.T) {
	dir := t.TempDir()
	h := newTestExec(t, execScript(t, dir, readBatch+`
for answer in continue stop rollback; do
	read_batch || exit 0
	echo $answer
done
read_batch
`), 10*time.Second)
	es := testEntries()
	want := []delivery.Action{delivery.Continue, delivery.Stop, delivery.StopWithRollback}
	for i, w := range want {
		if got := h.handle(context.Background(), es[i:i+1], &delivery.Delivery{}); got != w {
			t.Errorf("batch %d: handle = %v, want %v", i, got, w)
		}
	}
	// The child got each batch as JSON lines, each ended by BatchEnd.
	lines := strings.SplitAfter(testEntryLines, "\n")
	wantGot := lines[0] + BatchEnd + "\n" + lines[1] + BatchEnd + "\n" + lines[2] + BatchEnd + "\n"
	if got := readFile(t, filepath.Join(dir, "got")); got != wantGot {
		t.Errorf("the child read\n%s\nwant\n%s", got, wantGot)
	}
	if pids := childPIDs(t, dir); len(pids) != 1 {
		t.Errorf("%d children started, want 1 for every batch", len(pids))
	}
}

// mustFail calls the handler's batch protocol and returns its failure,
// failing the test unless it is one (and handle must not panic on it).
func mustFail(t *testing.T, h *execHandler, batch []engine.Entry) error {
	t.Helper()
	a, err := h.call(batch)
	if err == nil || a != delivery.Failed {
		t.Fatalf("call = %v, %v; want Failed with an error", a, err)
	}
	return err
}

func TestExecHandlerFailures(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		life1   string // what the first child does after reading a batch
		wantMsg string // in the failure
	}{
		{name: "nonsense answer", timeout: 10 * time.Second, life1: "echo maybe", wantMsg: `answered "maybe" (want continue, stop, rollback or fail [SEQ] [TEXT])`},
		{name: "empty answer", timeout: 10 * time.Second, life1: "echo", wantMsg: `answered ""`},
		{name: "fail prefix only", timeout: 10 * time.Second, life1: "echo failed", wantMsg: `answered "failed"`},
		{name: "fail seq overflows", timeout: 10 * time.Second, life1: "echo fail 99999999999999999999 x", wantMsg: `SEQ is not a 64-bit sequence number`},
		{name: "child exits", timeout: 10 * time.Second, life1: "exit 0", wantMsg: "exited without answering"},
		// The timeout also covers the child's start: long enough that a
		// shell slow to start on a busy machine still writes its pid.
		{name: "child hangs", timeout: 2 * time.Second, life1: "sleep 60", wantMsg: "did not answer within 2s (--exec-timeout)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			h := newTestExec(t, execScript(t, dir, readBatch+`
while read_batch; do
	if [ $life -eq 1 ]; then `+tt.life1+`; else echo continue; fi
done
`), tt.timeout)
			es := testEntries()

			start := time.Now()
			err := mustFail(t, h, es)
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("failure %q, want it to contain %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "panic") {
				t.Errorf("failure %q mentions a panic", err)
			}
			var ee *delivery.EntryError
			if errors.As(err, &ee) {
				t.Errorf("failure %q names entry %d; a broken protocol names none", err, ee.Seq)
			}
			if d := time.Since(start); d < tt.timeout && strings.Contains(tt.wantMsg, "did not answer") || d > 30*time.Second {
				t.Errorf("the failure took %v (timeout %v)", d, tt.timeout)
			}
			// The failed child is gone, its whole process group with it
			// (the hanging child's sleep included).
			pids := childPIDs(t, dir)
			if len(pids) != 1 {
				t.Fatalf("children %v, want 1", pids)
			}
			if !gone(pids[0]) {
				t.Errorf("after the failure, process group %d still has processes", pids[0])
			}

			// The next batch starts a fresh child, which continues.
			if got := h.handle(context.Background(), es, &delivery.Delivery{}); got != delivery.Continue {
				t.Errorf("after the failure: handle = %v, want Continue from a new child", got)
			}
			if pids := childPIDs(t, dir); len(pids) != 2 || pids[0] == pids[1] {
				t.Errorf("children %v, want two different ones", pids)
			}
		})
	}
}

// TestExecHandlerFailureIsNoPanic: handle reports a broken child with
// Delivery.Fail (the Failed action), never by panicking.
func TestExecHandlerFailureIsNoPanic(t *testing.T) {
	h := newTestExec(t, execScript(t, t.TempDir(), readBatch+`
read_batch
sleep 60
`), 100*time.Millisecond)
	if got := h.handle(context.Background(), testEntries(), &delivery.Delivery{}); got != delivery.Failed {
		t.Errorf("handle of a hanging child = %v, want Failed", got)
	}
}

func TestParseExecAnswer(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    delivery.Action
		wantF   ExecFailure
		wantMsg string // an error containing this
	}{
		{name: "continue", line: "continue", want: delivery.Continue},
		{name: "stop with spaces", line: "  stop \r", want: delivery.Stop},
		{name: "rollback", line: "rollback", want: delivery.StopWithRollback},
		{name: "bare fail", line: "fail", want: delivery.Failed},
		{name: "fail with seq", line: "fail 42", want: delivery.Failed, wantF: ExecFailure{Seq: 42, Named: true}},
		{name: "fail with seq 0", line: "fail 0", want: delivery.Failed, wantF: ExecFailure{Seq: 0, Named: true}},
		{name: "fail with seq and text", line: "fail 42 card declined: code 51", want: delivery.Failed,
			wantF: ExecFailure{Seq: 42, Named: true, Text: "card declined: code 51"}},
		{name: "fail with tabs", line: "fail\t7\t\tbad  row ", want: delivery.Failed, wantF: ExecFailure{Seq: 7, Named: true, Text: "bad  row"}},
		{name: "fail with text only", line: "fail database down", want: delivery.Failed, wantF: ExecFailure{Text: "database down"}},
		{name: "fail with text starting with a digit", line: "fail 3rd retry", want: delivery.Failed, wantF: ExecFailure{Text: "3rd retry"}},
		{name: "fail with a negative number is text", line: "fail -1", want: delivery.Failed, wantF: ExecFailure{Text: "-1"}},
		{name: "max seq", line: "fail 18446744073709551615", want: delivery.Failed, wantF: ExecFailure{Seq: 1<<64 - 1, Named: true}},

		{name: "seq overflows", line: "fail 18446744073709551616", wantMsg: "SEQ is not a 64-bit sequence number"},
		{name: "unknown word", line: "maybe", wantMsg: "want continue, stop, rollback or fail [SEQ] [TEXT]"},
		{name: "empty", line: "", wantMsg: "want continue"},
		{name: "fail glued to text", line: "failed 3", wantMsg: "want continue"},
		{name: "upper case", line: "FAIL 3", wantMsg: "want continue"},
		{name: "continue with extra words", line: "continue now", wantMsg: "want continue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, f, err := ParseExecAnswer(tt.line)
			if tt.wantMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("ParseExecAnswer(%q) = %v, %+v, %v; want an error containing %q", tt.line, a, f, err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseExecAnswer(%q): %v", tt.line, err)
			}
			if a != tt.want || f != tt.wantF {
				t.Errorf("ParseExecAnswer(%q) = %v, %+v; want %v, %+v", tt.line, a, f, tt.want, tt.wantF)
			}
		})
	}
}

// TestExecHandlerFailAnswer: a "fail" answer is a failure of the batch,
// naming its entry when the seq is in the batch; the child keeps running.
func TestExecHandlerFailAnswer(t *testing.T) {
	dir := t.TempDir()
	var logBuf strings.Builder
	var logMu sync.Mutex
	log := hclog.New(&hclog.LoggerOptions{Output: &lockedWriter{w: &logBuf, mu: &logMu}, Level: hclog.Warn})
	h := newExecHandler(execScript(t, dir, readBatch+`
for answer in 'fail 9 bad payload' 'fail' 'fail database down' 'fail 77 gone' continue; do
	read_batch || exit 0
	echo "$answer"
done
while read_batch; do echo continue; done
`), 10*time.Second, io.Discard, log)
	t.Cleanup(func() { _ = h.Close() })
	es := testEntries() // seqs 5, 9, 10

	err := mustFail(t, h, es)
	var ee *delivery.EntryError
	if !errors.As(err, &ee) || ee.Seq != 9 || !strings.Contains(err.Error(), "bad payload") {
		t.Errorf("fail 9 bad payload: failure %v, want an EntryError for seq 9 with the text", err)
	}
	for _, want := range []string{"exec handler answered fail", "exec handler answered fail: database down"} {
		err := mustFail(t, h, es)
		if errors.As(err, &ee) || err.Error() != want {
			t.Errorf("failure %q (%T), want %q naming no entry", err, err, want)
		}
	}
	// A seq outside the batch: a failure naming no entry, and a log line.
	err = mustFail(t, h, es)
	if errors.As(err, &ee) || !strings.Contains(err.Error(), "gone") || !strings.Contains(err.Error(), "seq 77, which is not in its batch of seqs 5..10") {
		t.Errorf("fail 77 gone: failure %q, want one naming no entry that says seq 77 is not in the batch", err)
	}
	logMu.Lock()
	logged := logBuf.String()
	logMu.Unlock()
	if !strings.Contains(logged, "exec handler answered fail naming a seq that is not in its batch") || !strings.Contains(logged, "seq=77") {
		t.Errorf("log %q, want a line about seq 77 outside the batch", logged)
	}
	if a, err := h.call(es); a != delivery.Continue || err != nil {
		t.Errorf("after the fail answers: %v, %v; want Continue", a, err)
	}
	// Failing batches did not cost the child its life.
	if pids := childPIDs(t, dir); len(pids) != 1 {
		t.Errorf("children %v, want the one child throughout", pids)
	}
	// handle turns a failure into the Failed action.
	dir2 := t.TempDir()
	h2 := newTestExec(t, execScript(t, dir2, readBatch+`
while read_batch; do echo 'fail 5 no'; done
`), 10*time.Second)
	if got := h2.handle(context.Background(), es, &delivery.Delivery{}); got != delivery.Failed {
		t.Errorf("handle of fail 5 = %v, want Failed", got)
	}
}

// lockedWriter serialises writes into a strings.Builder shared with the
// test.
type lockedWriter struct {
	w  *strings.Builder
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestExecHandlerStartFailure(t *testing.T) {
	// /bin/sh starts, the command does not exist: the child exits at once.
	h := newTestExec(t, "/nonexistent/handler", 10*time.Second)
	if err := mustFail(t, h, testEntries()); !strings.Contains(err.Error(), "exec handler") {
		t.Errorf("failure %q, want an exec handler failure", err)
	}
}

func TestExecHandlerClose(t *testing.T) {
	dir := t.TempDir()
	h := newTestExec(t, execScript(t, dir, readBatch+`
while read_batch; do echo continue; done
`), 10*time.Second)
	if err := h.Close(); err != nil {
		t.Errorf("Close before any batch: %v", err)
	}
	if got := h.handle(context.Background(), testEntries(), &delivery.Delivery{}); got != delivery.Continue {
		t.Fatalf("handle = %v, want Continue", got)
	}
	pid := childPIDs(t, dir)[0]
	if err := syscall.Kill(-pid, 0); err != nil {
		t.Fatalf("child %d is not a live process group leader: %v", pid, err)
	}
	start := time.Now()
	if err := h.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if !gone(pid) {
		t.Errorf("child %d still running after Close", pid)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("Close took %v for a child that exits at end of input", d)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestExecHandlerCloseKillsStubbornChild: a child that ignores the end of
// its input is killed, with its process group.
func TestExecHandlerCloseKillsStubbornChild(t *testing.T) {
	dir := t.TempDir()
	h := newTestExec(t, execScript(t, dir, readBatch+`
read_batch && echo continue
trap '' TERM HUP
while :; do sleep 1; done
`), 10*time.Second)
	if got := h.handle(context.Background(), testEntries(), &delivery.Delivery{}); got != delivery.Continue {
		t.Fatalf("handle = %v, want Continue", got)
	}
	pid := childPIDs(t, dir)[0]
	start := time.Now()
	if err := h.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if !gone(pid) {
		t.Errorf("process group %d still has processes after Close", pid)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v, want about a second", d)
	}
}

// A child that never reads its stdin cannot hang the worker: a batch
// bigger than the pipe buffer fails within --exec-timeout.
func TestExecHandlerChildNotReading(t *testing.T) {
	dir := t.TempDir()
	h := newTestExec(t, execScript(t, dir, "sleep 60\n"), 300*time.Millisecond)
	big := make([]engine.Entry, 0, 600)
	for _, e := range testEntries() {
		for len(big) < cap(big) {
			e.Payload = make([]byte, 256) // about 600 × 700 B of JSON: well over 64 KiB
			big = append(big, e)
		}
	}
	start := time.Now()
	if err := mustFail(t, h, big); !strings.Contains(err.Error(), "did not read its batch within 300ms") {
		t.Errorf("failure %q, want a read timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the failure took %v with a 300ms timeout", d)
	}
}

// A child that answers before it is sent a batch breaks the framing.
func TestExecHandlerEarlyAnswer(t *testing.T) {
	dir := t.TempDir()
	h := newTestExec(t, execScript(t, dir, readBatch+`
read_batch
echo continue
echo continue
while read_batch; do echo continue; done
`), 10*time.Second)
	if got := h.handle(context.Background(), testEntries(), &delivery.Delivery{}); got != delivery.Continue {
		t.Fatalf("first batch: %v", got)
	}
	// The extra "continue" arrives before the second batch is sent.
	deadline := time.Now().Add(5 * time.Second)
	for len(h.child.lines) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := mustFail(t, h, testEntries()); !strings.Contains(err.Error(), "before it was sent a batch") {
		t.Errorf("failure %q, want the framing error", err)
	}
}
