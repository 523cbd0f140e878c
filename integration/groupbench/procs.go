package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a child process that talks in lines: it writes "<tag> <json>"
// lines on stdout (read with await) and stops when its stdin closes.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	exit  chan struct{} // closed when the process has exited
	err   error         // its Wait error, once exit is closed
	mu    sync.Mutex    // one request at a time
}

// startChild starts path with args; its stderr goes to stderr. Its two
// goroutines end when the process has exited and its stdout is drained.
func startChild(name, path string, args []string, stderr io.Writer) (*child, error) {
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
	c := &child{name: name, cmd: cmd, stdin: in, lines: make(chan string, 64), exit: make(chan struct{})}
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

func (c *child) pid() int { return c.cmd.Process.Pid }

// await waits for a line "<tag> <json>" and decodes its JSON into v.
func (c *child) await(tag string, v any, timeout time.Duration) error {
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

// request sends a command line and awaits the answer of the same tag.
func (c *child) request(cmd string, v any, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	return c.await(cmd, v, timeout)
}

// stop closes stdin (or sends sig when not 0), waits up to grace for the
// exit, then kills the process.
func (c *child) stop(sig syscall.Signal, grace time.Duration) error {
	_ = c.stdin.Close()
	if sig != 0 {
		_ = c.cmd.Process.Signal(sig)
	}
	select {
	case <-c.exit:
	case <-time.After(grace):
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

// kill is kill -9; it returns once the process has exited.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exit
	_ = c.stdin.Close()
}

// readyLine prints "<tag> <json of v>" on stdout (the children's side).
func readyLine(tag string, v any) {
	b, _ := json.Marshal(v)
	fmt.Printf("%s %s\n", tag, b)
}

// procCPU returns the user + system CPU time of process pid so far, from
// /proc/<pid>/stat (clock ticks of 10 ms); 0 for a process that is gone.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	const tick = 10 * time.Millisecond // USER_HZ 100
	return time.Duration(ut+st) * tick
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// goTool returns the go command.
func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// buildNATSServer builds the module's nats-server into dir (run from the
// harness's module directory).
func buildNATSServer(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "nats-server")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool(), "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build nats-server: %w\n%s", err, out)
	}
	return bin, nil
}

// prefixWriter writes each line with a prefix (children's stderr).
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}
