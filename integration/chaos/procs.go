package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batfleet/batfleet/internal/faultproxy"
)

// Roles of the processes a run supervises.
const (
	roleNATS     = "nats"
	roleWriter   = "writer"
	roleWorker   = "worker"   // a plain checkpoint
	roleMember   = "member"   // a group member
	roleProducer = "producer" // the chaos program re-executed
)

// incarnation is one process started in a slot.
type incarnation struct {
	n       int
	pid     int
	id      string // --id of a worker or member ("" for others)
	out     string // --out file of a worker or member, the log of a producer
	started time.Time
}

// slot is one supervised process: whatever ends it (a fault, a crash),
// the supervisor starts it again, unless the slot is held (a fault keeps
// it down for a while) or stopping. Faults on one slot are serialised by
// its fault mutex.
type slot struct {
	name  string
	role  string
	dir   string // logs and outputs of this slot
	build func(inc *incarnation) *exec.Cmd
	// proxy and throttle sit between the process and NATS (nil for the
	// server itself).
	proxy    *faultproxy.Proxy
	throttle *faultproxy.Throttle
	logf     func(format string, args ...any)

	fault sync.Mutex // held by a fault acting on this slot

	mu         sync.Mutex
	cond       *sync.Cond
	cmd        *exec.Cmd
	incs       []*incarnation
	held       bool // do not restart until released
	stopping   bool
	expected   bool // the current process's end was caused on purpose
	unexpected []string
	done       chan struct{} // closed when the supervisor ends
}

func newSlot(name, role, dir string, logf func(string, ...any), build func(*incarnation) *exec.Cmd) *slot {
	s := &slot{name: name, role: role, dir: dir, build: build, logf: logf, done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// url is the NATS URL the slot's process uses: its own proxy.
func (s *slot) url() string { return s.proxy.URL() }

// start starts the supervisor, which starts the first process.
func (s *slot) start() {
	go s.supervise()
}

func (s *slot) supervise() {
	defer close(s.done)
	for {
		s.mu.Lock()
		for s.held && !s.stopping {
			s.cond.Wait()
		}
		if s.stopping {
			s.mu.Unlock()
			return
		}
		inc := &incarnation{n: len(s.incs)}
		cmd := s.build(inc)
		lf, err := os.Create(filepath.Join(s.dir, fmt.Sprintf("%s.%d.log", s.name, inc.n)))
		if err == nil {
			cmd.Stdout, cmd.Stderr = lf, lf
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		inc.started = time.Now()
		if err := cmd.Start(); err != nil {
			s.unexpected = append(s.unexpected, fmt.Sprintf("%s.%d: start: %v", s.name, inc.n, err))
			s.mu.Unlock()
			if lf != nil {
				_ = lf.Close()
			}
			time.Sleep(time.Second)
			continue
		}
		inc.pid = cmd.Process.Pid
		s.cmd, s.expected = cmd, false
		s.incs = append(s.incs, inc)
		s.mu.Unlock()

		err = cmd.Wait()
		if lf != nil {
			_ = lf.Close()
		}
		s.mu.Lock()
		s.cmd = nil
		expected, stopping := s.expected, s.stopping
		if !expected && !stopping {
			note := fmt.Sprintf("%s.%d (pid %d) exited by itself: %v; %s", s.name, inc.n, inc.pid, err, s.tail(inc))
			s.unexpected = append(s.unexpected, note)
			s.logf("unexpected exit: %s", note)
		}
		s.mu.Unlock()
		if stopping {
			return
		}
		if !expected {
			time.Sleep(500 * time.Millisecond) // do not spin on a process that cannot start
		}
	}
}

// tail returns the last lines of an incarnation's log.
func (s *slot) tail(inc *incarnation) string {
	data, _ := os.ReadFile(filepath.Join(s.dir, fmt.Sprintf("%s.%d.log", s.name, inc.n)))
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-3):], " | ")
}

// signal sends sig to the running process and returns its pid (0: none
// runs). expected marks the end the signal causes as wanted.
func (s *slot) signal(sig syscall.Signal, expected bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	if expected {
		s.expected = true
	}
	_ = s.cmd.Process.Signal(sig)
	return s.cmd.Process.Pid
}

// running reports whether a process runs in the slot now.
func (s *slot) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// waitDown waits until no process runs in the slot (bounded).
func (s *slot) waitDown(limit time.Duration) bool {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if !s.running() {
			return true
		}
	}
	return false
}

// waitUp waits until a process runs in the slot (bounded).
func (s *slot) waitUp(limit time.Duration) bool {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if s.running() {
			return true
		}
	}
	return false
}

// hold keeps the slot from restarting until release.
func (s *slot) hold() {
	s.mu.Lock()
	s.held = true
	s.mu.Unlock()
}

func (s *slot) release() {
	s.mu.Lock()
	s.held = false
	s.cond.Broadcast()
	s.mu.Unlock()
}

// stop ends the slot: SIGTERM (SIGKILL after grace), no restart. It
// returns whether the process ended within grace of the SIGTERM.
func (s *slot) stop(grace time.Duration) bool {
	s.mu.Lock()
	s.stopping = true
	s.cond.Broadcast()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
		return true
	case <-time.After(grace):
	}
	s.kill()
	<-s.done
	return false
}

// kill SIGKILLs the process's group at once (cleanup).
func (s *slot) kill() {
	s.mu.Lock()
	s.stopping = true
	s.cond.Broadcast()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
	s.mu.Unlock()
}

// incarnations returns every process started in the slot.
func (s *slot) incarnations() []*incarnation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*incarnation(nil), s.incs...)
}

func (s *slot) unexpectedExits() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.unexpected...)
}

// calm undoes the slot's network faults.
func (s *slot) calm() {
	if s.proxy != nil {
		s.proxy.SetLatency(0)
		s.proxy.Blackhole(false)
	}
	if s.throttle != nil {
		s.throttle.SetReadRate(0)
	}
}

// withProxy puts a fault proxy and a throttle between the slot's
// process and NATS at natsAddr.
func (s *slot) withProxy(natsAddr string) error {
	th, err := faultproxy.NewThrottle(natsAddr)
	if err != nil {
		return err
	}
	px, err := faultproxy.New(th.Addr())
	if err != nil {
		_ = th.Close()
		return err
	}
	s.proxy, s.throttle = px, th
	return nil
}

func (s *slot) closeProxy() {
	if s.proxy != nil {
		_ = s.proxy.Close()
	}
	if s.throttle != nil {
		_ = s.throttle.Close()
	}
}
