package benchkit

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// ProcCPU returns the user + system CPU time of process pid so far, from
// /proc/<pid>/stat (clock ticks of 10 ms).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	const tick = 10 * time.Millisecond // USER_HZ 100
	return time.Duration(ut+st) * tick, nil
}

// ProcRunWait returns how long the threads of process pid have been
// runnable but waiting for a CPU (the second field of
// /proc/<pid>/task/*/schedstat; threads that exited are not counted).
func ProcRunWait(pid int) time.Duration {
	dirs, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var sum int64
	for _, d := range dirs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, d.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			if n, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				sum += n
			}
		}
	}
	return time.Duration(sum)
}

// SelfCPU returns this process's user + system CPU time.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// GoTool returns the go command: $GO, or go.
func GoTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// BuildNATSServer builds the nats-server of the current module's
// dependencies into dir (run from the harness's module directory) and
// returns the binary's path. The build may take up to 10 minutes.
func BuildNATSServer(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "nats-server")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, GoTool(), "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build nats-server: %w\n%s", err, out)
	}
	return bin, nil
}

// NATSServer is a JetStream nats-server process started by StartNATSServer.
type NATSServer struct {
	*Child
	URL string
}

// StartNATSServer starts bin as a JetStream server named name on a free
// loopback port, storing under dir/nats (file storage, the server's
// default sync) and logging to dir/nats-server.log, with extra arguments
// appended; it returns once a client can connect, within 30 s. Stop it
// with Stop(syscall.SIGTERM, grace).
func StartNATSServer(bin, dir, name string, stderr io.Writer, extra ...string) (*NATSServer, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	logFile := filepath.Join(dir, "nats-server.log")
	args := append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(dir, "nats"),
		"-n", name, "-l", logFile}, extra...)
	proc, err := StartChild("nats-server", bin, args, stderr)
	if err != nil {
		return nil, err
	}
	s := &NATSServer{Child: proc, URL: fmt.Sprintf("nats://127.0.0.1:%d", port)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect(s.URL, nats.Timeout(time.Second))
		if err == nil {
			nc.Close()
			return s, nil
		}
		select {
		case <-proc.Exited():
			log, _ := os.ReadFile(logFile)
			return nil, fmt.Errorf("nats-server exited: %v\n%s", proc.Err(), log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = proc.Stop(syscall.SIGKILL, 5*time.Second)
			return nil, fmt.Errorf("nats-server not ready within 30s: %w", err)
		}
	}
}
