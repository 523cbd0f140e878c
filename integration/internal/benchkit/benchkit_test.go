package benchkit

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary be a child: "echo" answers each command
// line with "<cmd> {"n":<k>}", and "exit" exits with status 3.
func TestMain(m *testing.M) {
	switch os.Getenv("BENCHKIT_CHILD") {
	case "echo":
		ReadyLine("ready", map[string]int{"pid": os.Getpid()})
		sc := bufio.NewScanner(os.Stdin)
		for k := 1; sc.Scan(); k++ {
			fmt.Println("noise")
			ReadyLine(sc.Text(), map[string]int{"n": k})
		}
		os.Exit(0)
	case "exit":
		os.Exit(3)
	}
	os.Exit(m.Run())
}

func startSelf(t *testing.T, mode string) *Child {
	t.Helper()
	t.Setenv("BENCHKIT_CHILD", mode)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c, err := StartChild(mode, self, nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestChildLines: Await skips other lines and decodes the tagged one,
// Request gets each answer in turn, Stop after stdin closes is clean.
func TestChildLines(t *testing.T) {
	c := startSelf(t, "echo")
	var ready struct{ Pid int }
	if err := c.Await("ready", &ready, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ready.Pid != c.Pid() {
		t.Fatalf("ready pid %d, child pid %d", ready.Pid, c.Pid())
	}
	for k := 1; k <= 3; k++ {
		var got struct{ N int }
		if err := c.Request("stats", &got, time.Minute); err != nil {
			t.Fatal(err)
		}
		if got.N != k {
			t.Fatalf("answer %d: n = %d", k, got.N)
		}
	}
	if cpu, err := ProcCPU(c.Pid()); err != nil || cpu < 0 {
		t.Fatalf("ProcCPU of a live child: %v, %v", cpu, err)
	}
	if err := c.Stop(0, time.Minute); err != nil {
		t.Fatal(err)
	}
	if c.Err() != nil {
		t.Fatalf("clean exit reported as %v", c.Err())
	}
	if _, err := ProcCPU(c.Pid()); err == nil {
		t.Fatal("ProcCPU of a reaped child: no error")
	}
}

// TestChildExits: an Await on a child that exits names the exit; Stop
// reports a failing exit; Kill of a live child returns once it is gone.
func TestChildExits(t *testing.T) {
	c := startSelf(t, "exit")
	var v struct{}
	err := c.Await("ready", &v, time.Minute)
	if err == nil || !strings.Contains(err.Error(), `exit exited before "ready": exit status 3`) {
		t.Fatalf("await on an exiting child: %v", err)
	}
	if err := c.Stop(0, time.Minute); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("stop of a failed child: %v", err)
	}

	e := startSelf(t, "echo")
	e.Kill()
	select {
	case <-e.Exited():
	default:
		t.Fatal("Kill returned before the exit")
	}
	if err := e.Await("never", &v, time.Minute); err == nil {
		t.Fatal("await on a killed child: no error")
	}
	s := startSelf(t, "echo")
	if err := s.Stop(syscall.SIGTERM, time.Minute); err != nil {
		t.Fatalf("an exit caused by the signal sent is no error: %v", err)
	}
}

// TestSectionWrite: the section replaces its own markers' content, and
// leaves another section and hand-written text alone; a file without the
// markers gets it appended; a missing file is created; "-" writes nothing.
func TestSectionWrite(t *testing.T) {
	sec := Section{Name: "fanout", By: "integration/fanout"}
	file := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	orig := "# Benchmarks\n\n<!-- h2h:begin x -->\nh2h\n<!-- h2h:end -->\n\nhand-written\n"
	if err := os.WriteFile(file, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"first\n", "second\n"} {
		if err := sec.Write(file, r); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(file)
	want := orig + "\n" + sec.Begin() + "\nsecond\n" + sec.End() + "\n"
	if string(got) != want {
		t.Fatalf("report file:\n%s\nwant:\n%s", got, want)
	}

	// An older opening marker (other words after the name) is still found.
	old := "intro\n<!-- fanout:begin (older words) -->\nold\n<!-- fanout:end -->\ntail\n"
	if err := os.WriteFile(file, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sec.Write(file, "new\n"); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(file)
	if want := "intro\n" + sec.Begin() + "\nnew\n" + sec.End() + "\ntail\n"; string(got) != want {
		t.Fatalf("report file:\n%s\nwant:\n%s", got, want)
	}

	fresh := filepath.Join(t.TempDir(), "NEW.md")
	if err := sec.Write(fresh, "x\n"); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(fresh)
	if want := "# Benchmarks\n\n" + sec.Begin() + "\nx\n" + sec.End() + "\n"; string(got) != want {
		t.Fatalf("new report file:\n%s\nwant:\n%s", got, want)
	}
	if err := sec.Write(filepath.Join(t.TempDir(), "no", "such", "dir.md"), "x\n"); err == nil {
		t.Fatal("write into a missing directory: no error")
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", -1234567: "-1,234,567", 100000: "100,000"} {
		if got := Thousands(n); got != want {
			t.Errorf("Thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestMachine: one line each for CPU, memory and OS, storage, software
// (with the harness's own), load and source.
func TestMachine(t *testing.T) {
	lines := Machine(t.TempDir(), "journals", "pcgroups v0.2.2")
	if len(lines) != 6 {
		t.Fatalf("%d lines: %q", len(lines), lines)
	}
	for i, prefix := range []string{"CPU: ", "memory: ", "storage: ", "software: go", "load average at start: ", "source: "} {
		if !strings.HasPrefix(lines[i], prefix) {
			t.Errorf("line %d %q lacks %q", i, lines[i], prefix)
		}
	}
	if !strings.HasSuffix(lines[2], " for journals") || !strings.HasSuffix(lines[3], ", pcgroups v0.2.2") {
		t.Errorf("storage or software line: %q", lines[2:4])
	}
}

func TestPrefixWriter(t *testing.T) {
	var b strings.Builder
	p := &PrefixWriter{W: &b, Prefix: "x: "}
	for _, s := range []string{"one\ntw", "o\n", "three"} {
		if _, err := p.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.String(); got != "x: one\nx: two\n" {
		t.Fatalf("prefixed: %q (an unfinished line waits for its end)", got)
	}
}
