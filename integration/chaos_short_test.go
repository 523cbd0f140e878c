//go:build linux

package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// chaosShortFaults and chaosShortMinutes size the short chaos run of
// make test: at least 20 faults in about a minute (the long one is
// make chaos).
const (
	chaosShortFaults  = 24
	chaosShortMinutes = "0.7"
)

// chaosSummary matches the last line integration/chaos prints.
var chaosSummary = regexp.MustCompile(`^chaos seed=(\d+) faults=(\d+) \[[^\]]*\] disk=\S+ acknowledged=(\d+) lost=(\d+) duplicated=(\d+) delivery-misses=(\d+) order-violations=(\d+) checkpoint-regressions=(\d+) non-owner-commits=(\d+) undrained=(\d+) duration=\S+$`)

// TestCHAOS01_Short runs the chaos program (integration/chaos, built here)
// for a short seeded run: the whole fleet as processes — an external
// nats-server, the writer, plain workers, group members and producers,
// each behind a fault proxy — with kills, pauses, a server restart,
// network faults and a full disk under the writer, then its checker. It
// fails on any loss or violation, and when fewer than 20 faults acted.
// BATFLEET_CRASH_SEED replays a run (the seed is logged); the program's
// whole output is logged when the test fails.
func TestCHAOS01_Short(t *testing.T) {
	seed := crashSeed(t)
	root := cmdModuleRoot(t)
	bin := filepath.Join(t.TempDir(), "chaos")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./integration/chaos")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./integration/chaos: %v\n%s", err, out)
	}
	// The work directory (logs, delivery logs, the server's store) is
	// kept when the test fails.
	work, err := os.MkdirTemp("", "batfleet-chaos-short-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "--faults", strconv.Itoa(chaosShortFaults), "--minutes", chaosShortMinutes,
		"--seed", strconv.FormatUint(seed, 10), "--dir", work, "-v")
	cmd.Dir = root
	cmd.Env = cmdEnv()
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) } // it stops its fleet
	cmd.WaitDelay = time.Minute
	out, err := cmd.CombinedOutput()
	if len(out) == 0 {
		out = []byte("(no output)")
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	m := chaosSummary.FindStringSubmatch(last)
	if m == nil {
		t.Logf("chaos output:\n%s", out)
		t.Fatalf("seed %d: chaos run failed (%v); last line: %s; work directory kept: %s", seed, err, last, work)
	}
	for _, l := range lines { // the phases, for the record
		if f := strings.Fields(l); len(f) > 1 && strings.HasSuffix(f[0], "s") &&
			(f[1] == "fleet" || f[1] == "chaos" || f[1] == "chaos:" || f[1] == "producers" || f[1] == "drained") {
			t.Log(strings.TrimSpace(l))
		}
	}
	t.Log(last)
	if err != nil {
		t.Errorf("seed %d: chaos exited with %v", seed, err)
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	if n(2) < 20 {
		t.Errorf("seed %d: %d faults acted, want at least 20", seed, n(2))
	}
	if n(3) == 0 {
		t.Errorf("seed %d: no append was acknowledged", seed)
	}
	for i, what := range []string{"lost", "duplicated", "delivery misses", "order violations", "checkpoint regressions", "commits by a non-owner", "undrained checkpoints"} {
		if v := n(4 + i); v != 0 {
			t.Errorf("seed %d: %d %s", seed, v, what)
		}
	}
	if t.Failed() {
		t.Logf("chaos output:\n%s", out)
		t.Logf("work directory kept: %s", work)
		t.Logf("replay: go run ./integration/chaos --faults %d --minutes %s --seed %d (or BATFLEET_CRASH_SEED=%d go test -run TestCHAOS01 ./integration/)",
			chaosShortFaults, chaosShortMinutes, seed, seed)
	}
	if !t.Failed() {
		_ = os.RemoveAll(work) // the tmpfs is unmounted by then
	}
}
