package workerapp

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/internal/cli"
)

// EntryJSON is the JSON form of a delivered entry, one per line, for --out
// and --exec. payload holds the payload when it is valid UTF-8;
// otherwise payload_base64 holds it base64-encoded.
type EntryJSON struct {
	Seq           uint64  `json:"seq"`
	ID            string  `json:"id"`
	Kind          uint16  `json:"kind"`
	Entity        string  `json:"entity"`
	Scope         string  `json:"scope"`
	Clock         uint32  `json:"clock"`
	WallMs        int64   `json:"wall_ms"`
	Payload       *string `json:"payload,omitempty"`
	PayloadBase64 *string `json:"payload_base64,omitempty"`
}

func entryJSON(e engine.Entry) EntryJSON {
	j := EntryJSON{
		Seq: e.Seq, ID: hex.EncodeToString(e.ID[:]), Kind: uint16(e.Kind),
		Entity: e.Coordinate.Entity(), Scope: e.Coordinate.Scope(), Clock: e.Clock, WallMs: e.WallMs,
	}
	if utf8.Valid(e.Payload) {
		s := string(e.Payload)
		j.Payload = &s
	} else {
		s := base64.StdEncoding.EncodeToString(e.Payload)
		j.PayloadBase64 = &s
	}
	return j
}

// appendEntryLine appends e as one JSON line.
func appendEntryLine(b []byte, e engine.Entry) []byte {
	line, _ := json.Marshal(entryJSON(e)) // cannot fail: plain types
	return append(append(b, line...), '\n')
}

// outHandler writes every delivered entry as a JSON line to a file (or
// stdout) and, when that is a regular file, fsyncs it before returning,
// so the batch's checkpoint is committed only after its lines are
// durable. Devices, pipes and terminals (/dev/null, /dev/stdout piped to
// another program) cannot be synced: their lines are written, and the
// write returning is all there is to wait for.
// Safe for concurrent use (a group member runs one worker per partition).
type outHandler struct {
	f    *os.File
	own  bool // f was opened here (closed by Close)
	sync bool // f is a regular file
	mu   sync.Mutex
	buf  []byte
}

func newOutHandler(path string, stdout io.Writer) (*outHandler, error) {
	if path == "-" {
		f, ok := stdout.(*os.File)
		if !ok {
			return nil, errors.New("--out -: stdout is not a file")
		}
		return &outHandler{f: f, sync: isRegular(f)}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--out %s: %w", path, err)
	}
	return &outHandler{f: f, own: true, sync: isRegular(f)}, nil
}

// isRegular reports whether f is a regular file, the only kind fsync
// applies to.
func isRegular(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode().IsRegular()
}

func (h *outHandler) handle(_ context.Context, batch []engine.Entry, _ *delivery.Delivery) delivery.Action {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf = h.buf[:0]
	for _, e := range batch {
		h.buf = appendEntryLine(h.buf, e)
	}
	if _, err := h.f.Write(h.buf); err != nil {
		panic(fmt.Errorf("--out: write: %w", err)) // a handler failure under the restart policy
	}
	if h.sync {
		if err := h.f.Sync(); err != nil {
			panic(fmt.Errorf("--out: sync: %w", err))
		}
	}
	return delivery.Continue
}

func (h *outHandler) Close() error {
	if h.own {
		return h.f.Close()
	}
	return nil
}

// BatchEnd is the line that ends each batch sent to an --exec child.
const BatchEnd = `{"batch_end":true}`

// execHandler feeds batches to a long-running child process: each entry
// as a JSON line on its stdin, then the BatchEnd line; the child answers
// one line per batch: continue, stop, rollback or fail [SEQ] [TEXT]. A
// "fail" answer is a handler failure (naming entry SEQ when given), which
// the worker retries and then parks or hands to the restart policy; the
// child keeps running. A child that exits, hangs past the timeout or
// answers anything else is a handler failure too, and is killed: the next
// batch starts a new child.
type execHandler struct {
	cmdline string
	timeout time.Duration
	log     hclog.Logger
	stderr  io.Writer

	mu    sync.Mutex
	child *execChild
	buf   []byte
}

type execChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	unhook func()        // removes the forced-exit hook that kills the child
	lines  chan string   // answers; closed when stdout ends
	quit   chan struct{} // closed to stop the reader early
	done   chan struct{} // closed when the reader goroutine has exited
	waited chan error
}

func newExecHandler(cmdline string, timeout time.Duration, stderr io.Writer, log hclog.Logger) *execHandler {
	return &execHandler{cmdline: cmdline, timeout: timeout, log: log, stderr: stderr}
}

func (h *execHandler) start() (*execChild, error) {
	cmd := exec.Command("/bin/sh", "-c", h.cmdline)
	cmd.Stderr = h.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // kill the whole pipeline
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("--exec %q: %w", h.cmdline, err)
	}
	c := &execChild{cmd: cmd, stdin: stdin, lines: make(chan string, 1), quit: make(chan struct{}), done: make(chan struct{}), waited: make(chan error, 1)}
	go func() {
		defer close(c.done)
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			case <-c.quit:
				return
			}
		}
	}()
	go func() {
		<-c.done
		c.waited <- cmd.Wait()
	}()
	pid := cmd.Process.Pid
	c.unhook = cli.AtForcedExit(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
	h.log.Info("exec handler started", "pid", cmd.Process.Pid, "command", h.cmdline)
	return c, nil
}

// kill stops a child and waits for its goroutines.
func (h *execHandler) kill(c *execChild) {
	close(c.quit)
	_ = c.stdin.Close()
	if c.cmd.Process != nil {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-c.done
	<-c.waited
	c.unhook()
}

// broken kills the current child, which broke the protocol, and returns
// the failure; the next batch starts a new child.
func (h *execHandler) broken(format string, args ...any) error {
	if h.child != nil {
		h.kill(h.child)
		h.child = nil
	}
	return fmt.Errorf(format, args...)
}

// handle is the delivery.Handler: a failure of the child is reported with
// d.Fail (d.FailAt when the child named the failing entry), never as a
// panic.
func (h *execHandler) handle(_ context.Context, batch []engine.Entry, d *delivery.Delivery) delivery.Action {
	a, err := h.call(batch)
	if err != nil {
		return d.Fail(err) // an *delivery.EntryError names the entry
	}
	return a
}

// call hands batch to the child and returns its answer's action, or the
// failure: an *delivery.EntryError when the child answered "fail SEQ" for
// an entry of the batch.
func (h *execHandler) call(batch []engine.Entry) (delivery.Action, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.child == nil {
		c, err := h.start()
		if err != nil {
			return delivery.Failed, fmt.Errorf("exec handler: %w", err)
		}
		h.child = c
	}
	h.buf = h.buf[:0]
	for _, e := range batch {
		h.buf = appendEntryLine(h.buf, e)
	}
	h.buf = append(append(h.buf, BatchEnd...), '\n')
	// An answer before the batch is sent breaks the one-line-per-batch
	// framing: it would be taken for this batch's answer.
	select {
	case line, ok := <-h.child.lines:
		if ok {
			return delivery.Failed, h.broken("exec handler answered %q before it was sent a batch", line)
		}
		return delivery.Failed, h.broken("exec handler exited")
	default:
	}
	t := time.NewTimer(h.timeout)
	defer t.Stop()
	// The write is bounded by the timeout too: a child that stops reading
	// would otherwise block it once the batch outgrows the pipe buffer.
	child := h.child
	written := make(chan error, 1)
	go func() {
		_, err := child.stdin.Write(h.buf)
		written <- err
	}()
	select {
	case err := <-written:
		if err != nil {
			return delivery.Failed, h.broken("exec handler: write batch: %v (the child exited?)", err)
		}
	case <-t.C:
		h.kill(child) // unblocks the write
		h.child = nil
		<-written
		return delivery.Failed, fmt.Errorf("exec handler did not read its batch within %s (--exec-timeout)", h.timeout)
	}
	select {
	case line, ok := <-h.child.lines:
		if !ok {
			return delivery.Failed, h.broken("exec handler exited without answering")
		}
		a, f, err := ParseExecAnswer(line)
		if err != nil {
			return delivery.Failed, h.broken("exec handler answered %q (%v)", line, err)
		}
		if a != delivery.Failed {
			return a, nil
		}
		return delivery.Failed, h.failure(batch, f)
	case <-t.C:
		return delivery.Failed, h.broken("exec handler did not answer within %s (--exec-timeout)", h.timeout)
	}
}

// failure is the error of a "fail" answer to batch: an
// *delivery.EntryError when it names an entry of the batch. A seq outside
// the batch is logged and the failure reported unnamed.
func (h *execHandler) failure(batch []engine.Entry, f ExecFailure) error {
	reason := "exec handler answered fail"
	if f.Text != "" {
		reason += ": " + f.Text
	}
	if !f.Named {
		return errors.New(reason)
	}
	for _, e := range batch {
		if e.Seq == f.Seq {
			return &delivery.EntryError{Seq: f.Seq, Err: errors.New(reason)}
		}
	}
	first, last := batch[0].Seq, batch[len(batch)-1].Seq
	h.log.Warn("exec handler answered fail naming a seq that is not in its batch; the failure is treated as naming no entry",
		"seq", f.Seq, "batch-first", first, "batch-last", last, "entries", len(batch))
	return fmt.Errorf("%s (it named seq %d, which is not in its batch of seqs %d..%d)", reason, f.Seq, first, last)
}

// ExecFailure is a "fail [SEQ] [TEXT]" answer of an --exec child.
type ExecFailure struct {
	Seq   uint64 // the failing entry, when Named
	Named bool
	Text  string // the reason, may be empty
}

// ParseExecAnswer parses one answer line of an --exec child: continue,
// stop, rollback, or fail [SEQ] [TEXT] (Failed: SEQ, a decimal number,
// names the failing entry; TEXT, the rest of the line, says why).
// Surrounding white space is ignored. Anything else is an error.
func ParseExecAnswer(line string) (delivery.Action, ExecFailure, error) {
	s := strings.TrimSpace(line)
	switch s {
	case "continue":
		return delivery.Continue, ExecFailure{}, nil
	case "stop":
		return delivery.Stop, ExecFailure{}, nil
	case "rollback":
		return delivery.StopWithRollback, ExecFailure{}, nil
	}
	word, rest := cutWord(s)
	if word != "fail" {
		return delivery.Failed, ExecFailure{}, errors.New("want continue, stop, rollback or fail [SEQ] [TEXT]")
	}
	var f ExecFailure
	arg, text := cutWord(rest)
	if arg != "" && strings.Trim(arg, "0123456789") == "" {
		seq, err := strconv.ParseUint(arg, 10, 64)
		if err != nil {
			return delivery.Failed, ExecFailure{}, fmt.Errorf("fail %s: SEQ is not a 64-bit sequence number", arg)
		}
		f.Seq, f.Named, rest = seq, true, text
	}
	f.Text = rest
	return delivery.Failed, f, nil
}

// cutWord splits s at its first run of white space: the word before it
// and the rest after it.
func cutWord(s string) (word, rest string) {
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeftFunc(s[i:], unicode.IsSpace)
}

// Close ends the child: stdin is closed so it can exit by itself, then it
// is killed if it has not within a second.
func (h *execHandler) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.child
	if c == nil {
		return nil
	}
	h.child = nil
	_ = c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(time.Second):
		close(c.quit)
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
	<-c.waited
	c.unhook()
	return nil
}
