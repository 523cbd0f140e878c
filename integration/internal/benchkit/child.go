package benchkit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Child is a child process that talks in lines: it writes "<tag> <json>"
// lines on stdout (read with Await; ReadyLine writes them) and stops when
// its stdin closes.
type Child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	exit  chan struct{} // closed when the process has exited
	err   error         // its Wait error, once exit is closed
	mu    sync.Mutex    // one request at a time
}

// StartChild starts path with args; its stderr goes to stderr. The child
// dies with the harness where the OS allows (Linux). Its two goroutines
// end when the process has exited and its stdout is drained. Up to 64
// lines wait for Await; beyond that, lines nobody awaits are dropped, so a
// chatty child never blocks on its stdout.
func StartChild(name, path string, args []string, stderr io.Writer) (*Child, error) {
	cmd := exec.Command(path, args...)
	cmd.Stderr = stderr
	cmd.SysProcAttr = childAttr()
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &Child{name: name, cmd: cmd, stdin: in, lines: make(chan string, 64), exit: make(chan struct{})}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			default: // nobody asked: an unsolicited line is dropped
			}
		}
	}()
	go func() {
		<-scanned // Wait closes stdout: read it to the end first
		c.err = cmd.Wait()
		close(c.lines)
		close(c.exit)
	}()
	return c, nil
}

// Name is the name the child was started with.
func (c *Child) Name() string { return c.name }

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Exited is closed once the process has exited; Err is then its exit error.
func (c *Child) Exited() <-chan struct{} { return c.exit }

// Err is the process's exit error (nil for a clean exit), once Exited is
// closed; nil before.
func (c *Child) Err() error {
	select {
	case <-c.exit:
		return c.err
	default:
		return nil
	}
}

// Await waits up to timeout for a line "<tag> <json>" and decodes its
// JSON into v; other lines are skipped.
func (c *Child) Await(tag string, v any, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				<-c.exit
				return fmt.Errorf("%s exited before %q: %v", c.name, tag, c.err)
			}
			rest, found := strings.CutPrefix(line, tag+" ")
			if !found {
				continue
			}
			if err := json.Unmarshal([]byte(rest), v); err != nil {
				return fmt.Errorf("%s: bad %q line %q: %w", c.name, tag, line, err)
			}
			return nil
		case <-t.C:
			return fmt.Errorf("%s: no %q within %s", c.name, tag, timeout)
		}
	}
}

// Request sends a command line and awaits the answer of the same tag;
// requests are answered one at a time.
func (c *Child) Request(cmd string, v any, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	return c.Await(cmd, v, timeout)
}

// Stop closes stdin (and sends sig when not 0), waits up to grace for the
// exit, then kills the process. An exit caused by sig is not an error.
func (c *Child) Stop(sig syscall.Signal, grace time.Duration) error {
	_ = c.stdin.Close()
	if sig != 0 {
		_ = c.cmd.Process.Signal(sig)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.exit:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.exit
		return fmt.Errorf("%s did not exit within %s; killed", c.name, grace)
	}
	var ee *exec.ExitError
	if c.err != nil && !(errors.As(c.err, &ee) && sig != 0) {
		return fmt.Errorf("%s: %w", c.name, c.err)
	}
	return nil
}

// Kill is kill -9; it returns once the process has exited.
func (c *Child) Kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exit
	_ = c.stdin.Close()
}

// ReadyLine prints "<tag> <json of v>" on stdout: the children's side of
// Await.
func ReadyLine(tag string, v any) {
	b, _ := json.Marshal(v)
	fmt.Printf("%s %s\n", tag, b)
}

// PrefixWriter writes each complete line written to it to W with Prefix
// (children's stderr, told apart).
type PrefixWriter struct {
	W      io.Writer
	Prefix string

	mu  sync.Mutex
	buf []byte
}

func (p *PrefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.W, "%s%s\n", p.Prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}
