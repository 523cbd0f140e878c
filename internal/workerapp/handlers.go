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
	"strings"
	"sync"
	"syscall"
	"time"
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
// stdout) and flushes it — and fsyncs a file — before returning, so the
// batch's checkpoint is committed only after its lines are written.
// Safe for concurrent use (a group member runs one worker per partition).
type outHandler struct {
	f    *os.File
	sync bool
	mu   sync.Mutex
	buf  []byte
}

func newOutHandler(path string, stdout io.Writer) (*outHandler, error) {
	if path == "-" {
		f, ok := stdout.(*os.File)
		if !ok {
			return nil, errors.New("--out -: stdout is not a file")
		}
		return &outHandler{f: f}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--out %s: %w", path, err)
	}
	return &outHandler{f: f, sync: true}, nil
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
	if h.sync {
		return h.f.Close()
	}
	return nil
}

// BatchEnd is the line that ends each batch sent to an --exec child.
const BatchEnd = `{"batch_end":true}`

// execHandler feeds batches to a long-running child process: each entry
// as a JSON line on its stdin, then the BatchEnd line; the child answers
// one line per batch: continue, stop or rollback. A child that exits,
// hangs past the timeout or answers anything else is a handler failure
// (a panic, under the restart policy); the next batch starts a new child.
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

func (h *execHandler) fail(format string, args ...any) {
	if h.child != nil {
		h.kill(h.child)
		h.child = nil
	}
	panic(fmt.Sprintf(format, args...))
}

func (h *execHandler) handle(_ context.Context, batch []engine.Entry, _ *delivery.Delivery) delivery.Action {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.child == nil {
		c, err := h.start()
		if err != nil {
			panic(err.Error())
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
			h.fail("exec handler answered %q before it was sent a batch", line)
		}
		h.fail("exec handler exited")
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
			h.fail("exec handler: write batch: %v (the child exited?)", err)
		}
	case <-t.C:
		h.kill(child) // unblocks the write
		h.child = nil
		<-written
		panic(fmt.Sprintf("exec handler did not read its batch within %s", h.timeout))
	}
	select {
	case line, ok := <-h.child.lines:
		if !ok {
			h.fail("exec handler exited without answering")
		}
		switch strings.TrimSpace(line) {
		case "continue":
			return delivery.Continue
		case "stop":
			return delivery.Stop
		case "rollback":
			return delivery.StopWithRollback
		default:
			h.fail("exec handler answered %q (want continue, stop or rollback)", line)
		}
	case <-t.C:
		h.fail("exec handler did not answer within %s", h.timeout)
	}
	return delivery.StopWithRollback // unreachable: fail panics
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
