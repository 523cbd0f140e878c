package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/kvckpt"
)

// Child processes for the crash tests: the test binary re-executes itself
// with -test.run=^TestHelperProcess$ and BATFLEET_HELPER_ROLE naming the
// role. A child talks to its parent through stdout lines and stops when
// its stdin closes (so it never outlives a parent that died); the parent
// kills it with SIGKILL in the tests and in t.Cleanup.

const (
	helperRoleEnv = "BATFLEET_HELPER_ROLE"
	helperNATSEnv = "BATFLEET_HELPER_NATS_URL"
	// worker role
	helperEntityEnv = "BATFLEET_HELPER_ENTITY"
	helperLastEnv   = "BATFLEET_HELPER_LAST_SEQ"
	helperPacedEnv  = "BATFLEET_HELPER_PACED" // "1": each batch waits for a line on stdin
	helperCkptEnv   = "BATFLEET_HELPER_CHECKPOINT"
	helperBatchEnv  = "BATFLEET_HELPER_BATCH"
	// writer role
	helperDirEnv = "BATFLEET_HELPER_DIR"
)

// TestHelperProcess is the entry point of child processes. Run as a normal
// test (no role in the environment) it only says so and returns.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperRoleEnv)
	if role == "" {
		t.Log("not a helper process (BATFLEET_HELPER_ROLE unset): nothing to do")
		return
	}
	var err error
	switch role {
	case "worker":
		err = helperWorker()
	case "writer":
		err = helperWriter()
	case "group-member":
		err = helperGroupMember()
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", role, err)
		t.Fatalf("helper %s: %v", role, err)
	}
}

// stdinClosed is closed when the parent closes our stdin (or dies).
func stdinClosed() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(ch)
	}()
	return ch
}

// helperWorker is a remote durable worker: kvckpt checkpoint, the batch
// size and region of its environment. It prints "seq N" for every entry
// handed to the handler and "end" after them (before the batch's
// checkpoint is saved), and stops after the batch holding the last seq,
// printing "done <Join result>". Paced, its handler then waits for a line
// on stdin before it returns, so the parent decides when each batch
// ends: the worker is never more than one batch ahead of what the parent
// has read, however slowly the parent runs.
func helperWorker() error {
	last, err := strconv.ParseUint(os.Getenv(helperLastEnv), 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %w", helperLastEnv, err)
	}
	paced := os.Getenv(helperPacedEnv) == "1"
	batch, err := strconv.Atoi(os.Getenv(helperBatchEnv))
	if err != nil {
		return fmt.Errorf("%s: %w", helperBatchEnv, err)
	}
	nc, err := nats.Connect(os.Getenv(helperNATSEnv), nats.Name("helper-worker"), nats.Timeout(5*time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: journalName})
	if err != nil {
		return err
	}
	defer client.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ck, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: journalName})
	if err != nil {
		return err
	}
	cfg := delivery.DefaultWorkerConfig()
	cfg.CheckpointID, cfg.BatchSize, cfg.IdleTimeout = os.Getenv(helperCkptEnv), batch, 50*time.Millisecond
	cfg.WorkerID = fmt.Sprintf("helper-worker-%d", os.Getpid())
	// Each line on stdin lets one paced batch end; EOF stops the worker.
	goAhead, eof := make(chan struct{}, 1024), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			goAhead <- struct{}{}
		}
		close(eof)
	}()
	out := bufio.NewWriter(os.Stdout)
	w, err := delivery.StartWorker(ctx, client, engine.RegionEntity(os.Getenv(helperEntityEnv)), withCheckpoints(cfg, ck),
		func(_ context.Context, b []engine.Entry, _ *delivery.Delivery) delivery.Action {
			for _, e := range b {
				fmt.Fprintf(out, "seq %d\n", e.Seq)
			}
			fmt.Fprintln(out, "end")
			_ = out.Flush() // one write per batch: the parent sees whole batches or nothing
			if paced {
				select {
				case <-goAhead:
				case <-eof:
				}
			}
			if b[len(b)-1].Seq >= last {
				return delivery.Stop
			}
			return delivery.Continue
		})
	if err != nil {
		return err
	}
	go func() {
		<-eof
		w.Stop()
	}()
	jerr := w.Join()
	fmt.Fprintf(out, "done %v\n", jerr)
	_ = out.Flush()
	return jerr
}

// helperWriter opens the journal in its directory, serves it as a
// fleet.Writer, prints "ready <incarnation>" and serves until stdin
// closes; then it closes cleanly.
func helperWriter() error {
	nc, err := nats.Connect(os.Getenv(helperNATSEnv), nats.Name("helper-writer"), nats.Timeout(5*time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	s, err := journal.Open(os.Getenv(helperDirEnv), journal.Config{MaxEntryBytes: fleet.MaxEntryBytes(nc.MaxPayload())})
	if err != nil {
		return err
	}
	w, err := fleet.NewWriter(nc, s, fleet.WriterConfig{Journal: journalName})
	if err != nil {
		_ = s.Close()
		return err
	}
	fmt.Printf("ready %s\n", s.Incarnation())
	<-stdinClosed()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		return err
	}
	return s.Close()
}

// child is a running helper process.
type child struct {
	role   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // stdout, line by line; closed at EOF
	stderr *syncBuffer
	exited chan struct{} // closed after Wait returned
	err    error         // Wait's result, set before exited closes
}

// syncBuffer is a bytes.Buffer safe for the exec copier and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startChild starts the test binary in role with env added. It is killed
// (SIGKILL) and reaped when the test ends, whatever happened before.
func startChild(t testing.TB, role string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.timeout=10m")
	cmd.Env = append(append(os.Environ(), helperRoleEnv+"="+role), env...)
	c := &child{role: role, cmd: cmd, lines: make(chan string, 1<<16), stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s child: %v", role, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait() // after every read from the pipe
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.kill()
		select {
		case <-c.exited:
		case <-time.After(waitLimit):
			t.Errorf("%s child (pid %d) not reaped within %v of SIGKILL", role, cmd.Process.Pid, waitLimit)
		}
		if t.Failed() {
			t.Logf("%s child (pid %d) stderr:\n%s", role, cmd.Process.Pid, c.stderr.String())
		}
	})
	return c
}

// kill sends SIGKILL (a no-op once the child has exited).
func (c *child) kill() { _ = c.cmd.Process.Kill() }

// send writes line to the child's stdin.
func (c *child) send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		t.Fatalf("%s child (pid %d): write to stdin: %v; stderr:\n%s", c.role, c.cmd.Process.Pid, err, c.stderr.String())
	}
}

// wait waits (bounded) for the child to exit and returns Wait's result.
func (c *child) wait(t testing.TB) error {
	t.Helper()
	select {
	case <-c.exited:
		return c.err
	case <-time.After(waitLimit):
		t.Fatalf("%s child (pid %d) did not exit within %v; stderr:\n%s", c.role, c.cmd.Process.Pid, waitLimit, c.stderr.String())
		return nil
	}
}

// next returns the next stdout line, or ok false at EOF; it fails the
// test after limit.
func (c *child) next(t testing.TB, limit time.Duration) (line string, ok bool) {
	t.Helper()
	select {
	case line, ok := <-c.lines:
		return line, ok
	case <-time.After(limit):
		t.Fatalf("%s child (pid %d): no output within %v; stderr:\n%s", c.role, c.cmd.Process.Pid, limit, c.stderr.String())
		return "", false
	}
}

// expectPrefix reads lines until one starts with prefix and returns the
// rest of it; other lines (the test framework's) are skipped.
func (c *child) expectPrefix(t testing.TB, prefix string, limit time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		line, ok := c.next(t, time.Until(deadline))
		if !ok {
			t.Fatalf("%s child ended before printing %q: %v; stderr:\n%s", c.role, prefix, c.wait(t), c.stderr.String())
		}
		if rest, found := strings.CutPrefix(line, prefix); found {
			return rest
		}
	}
}
