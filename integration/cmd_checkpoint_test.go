package integration

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// `worker checkpoint get|set|reset ID` (issue 16), driven through the
// binaries as a user drives them.

// cmdCkptView is `worker checkpoint get --json`.
type cmdCkptView struct {
	ID             string  `json:"id"`
	Position       uint64  `json:"position"`
	Started        bool    `json:"started"`
	Region         string  `json:"region"`
	RegionIdentity string  `json:"region_identity"`
	JournalID      string  `json:"journal_id"`
	Owner          string  `json:"owner"`
	UpdatedMs      uint64  `json:"updated_ms"`
	LastCommit     string  `json:"last_commit"`
	AgeSeconds     float64 `json:"age_seconds"`
	Epoch          uint64  `json:"epoch"`
	Revision       uint64  `json:"revision"`
}

func cmdCkptGet(t *testing.T, workerBin, natsURL, id string) cmdCkptView {
	t.Helper()
	stdout, stderr, code := cmdRun(t, "", nil, workerBin, "checkpoint", "get", id, "--json", "--nats", natsURL)
	var v cmdCkptView
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil {
		t.Fatalf("worker checkpoint get %s --json: exit %d, %v:\n%s%s", id, code, err, stdout, stderr)
	}
	return v
}

// cmdCkptSeqs reads the seqs an --out file holds.
func cmdCkptSeqs(t *testing.T, path string) []uint64 {
	t.Helper()
	var got []uint64
	for _, e := range cmdParseEntries(t, mustRead(t, path)) {
		got = append(got, e.Seq)
	}
	return got
}

// cmdCkptStop stops a worker with SIGTERM; it must exit 0.
func cmdCkptStop(t *testing.T, p *cmdProc) {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, cmdLimit); code != 0 {
		t.Fatalf("%s exited %d on SIGTERM:\n%s", p.name, code, p.output())
	}
}

// TestCmdCheckpointGetTableAndJSON: get prints the record a worker
// committed, the region as --region takes it, as a table and as JSON.
func TestCmdCheckpointGetTableAndJSON(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	natsURL := cmdOpWriter(t, writerBin)
	cmdStart(t, "worker", workerBin, "--nats", natsURL, "--region", "entity=order,kind=0x1001", "--checkpoint", "c",
		"--id", "w1", "--out", filepath.Join(t.TempDir(), "c.jsonl"))
	seqs := cmdAppend(t, writerBin, natsURL, cmdOpEvents(3, "order", "0x1001"))
	last := seqs[len(seqs)-1]
	cmdOpWait(t, workerBin, natsURL, "c", last)

	v := cmdCkptGet(t, workerBin, natsURL, "c")
	if v.ID != "c" || v.Position != last || !v.Started || v.Region != "entity=order,kind=0x1001" ||
		v.RegionIdentity != "entity=order|scope=*|fact=exact:1:1|clock=*" || v.Owner != "w1" || v.JournalID == "" ||
		v.UpdatedMs == 0 || v.LastCommit == "" || v.Revision == 0 || v.Epoch != 0 || v.AgeSeconds < 0 || v.AgeSeconds > cmdLimit.Seconds() {
		t.Errorf("get --json = %+v, want position %d of w1, region entity=order,kind=0x1001", v, last)
	}

	stdout, stderr, code := cmdRun(t, "", nil, workerBin, "checkpoint", "get", "c", "--nats", natsURL)
	if code != 0 || stderr != "" {
		t.Fatalf("get: exit %d, stderr %q", code, stderr)
	}
	for _, line := range []string{
		`CHECKPOINT\s+c`,
		fmt.Sprintf(`POSITION\s+%d \(the next worker resumes after seq %d\)`, last, last),
		`REGION\s+entity=order,kind=0x1001`,
		`JOURNAL ID\s+` + v.JournalID,
		`OWNER\s+w1`,
		`LAST COMMIT\s+` + regexp.QuoteMeta(v.LastCommit) + ` \([0-9.]+m?s ago\)`,
		`EPOCH\s+0`,
		`REVISION\s+` + strconv.FormatUint(v.Revision, 10),
	} {
		if !regexp.MustCompile(`(?m)^` + line + `$`).MatchString(stdout) {
			t.Errorf("get has no line %q:\n%s", line, stdout)
		}
	}
}

// TestCmdCheckpointSetResumesAfterAndResetRedelivers: with its worker
// stopped, set moves the checkpoint back and the next worker delivers
// from the seq after it; reset makes the next one deliver everything
// again from the start.
func TestCmdCheckpointSetResumesAfterAndResetRedelivers(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	natsURL := cmdOpWriter(t, writerBin)
	dir := t.TempDir()
	start := func(name string) (*cmdProc, string) {
		out := filepath.Join(dir, name+".jsonl")
		return cmdStart(t, name, workerBin, "--nats", natsURL, "--region", "entity=order", "--checkpoint", "c", "--out", out), out
	}
	first, _ := start("first")
	seqs := cmdAppend(t, writerBin, natsURL, cmdOpEvents(4, "order", "0x1001"))
	cmdOpWait(t, workerBin, natsURL, "c", seqs[3])
	cmdCkptStop(t, first)

	// --alive-window 1ms: the stopped worker's last commit is older.
	stdout, stderr, code := cmdRun(t, "", nil, workerBin, "checkpoint", "set", "c", "--position", strconv.FormatUint(seqs[1], 10),
		"--alive-window", "1ms", "--nats", natsURL)
	if code != 0 {
		t.Fatalf("checkpoint set: exit %d:\n%s", code, stderr)
	}
	if want := fmt.Sprintf("checkpoint c set: position %d → %d (revision ", seqs[3], seqs[1]); !strings.HasPrefix(stdout, want) || strings.Count(stdout, "\n") != 1 {
		t.Errorf("set printed %q, want one line starting %q", stdout, want)
	}
	if v := cmdCkptGet(t, workerBin, natsURL, "c"); v.Position != seqs[1] || !v.Started || v.Owner != "worker-checkpoint-set" || v.Region != "entity=order" {
		t.Errorf("after set: %+v", v)
	}
	second, secondOut := start("second")
	more := cmdAppend(t, writerBin, natsURL, cmdOpEvents(1, "order", "0x1001"))
	cmdOpWait(t, workerBin, natsURL, "c", more[0])
	if got, want := cmdCkptSeqs(t, secondOut), append(slices.Clone(seqs[2:]), more...); !slices.Equal(got, want) {
		t.Errorf("after set --position %d the next worker delivered %v, want %v", seqs[1], got, want)
	}
	cmdCkptStop(t, second)

	// The record is this command's own: no window needed.
	stdout, stderr, code = cmdRun(t, "", nil, workerBin, "checkpoint", "reset", "c", "--alive-window", "1ms", "--nats", natsURL)
	if code != 0 || !strings.HasPrefix(stdout, fmt.Sprintf("checkpoint c reset: position %d → beginning (revision ", more[0])) {
		t.Fatalf("checkpoint reset: exit %d: %s%s", code, stdout, stderr)
	}
	_, thirdOut := start("third")
	cmdOpWait(t, workerBin, natsURL, "c", more[0])
	if got, want := cmdCkptSeqs(t, thirdOut), append(slices.Clone(seqs), more...); !slices.Equal(got, want) {
		t.Errorf("after reset the next worker delivered %v, want everything: %v", got, want)
	}
}

// TestCmdCheckpointRefusedWhileOwnerAliveForceWinsTheRace: reset and set
// refuse a checkpoint its worker committed a moment ago (exit 1, nothing
// written); with --force the reset lands, and the running worker loses
// its next compare-and-swap and stops with a conflict, leaving the reset
// in place.
func TestCmdCheckpointRefusedWhileOwnerAliveForceWinsTheRace(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	natsURL := cmdOpWriter(t, writerBin)
	live := cmdStart(t, "live worker", workerBin, "--nats", natsURL, "--region", "entity=order", "--checkpoint", "c",
		"--id", "w1", "--out", filepath.Join(t.TempDir(), "live.jsonl"))
	seqs := cmdAppend(t, writerBin, natsURL, cmdOpEvents(2, "order", "0x1001"))
	cmdOpWait(t, workerBin, natsURL, "c", seqs[1])
	before := cmdCkptGet(t, workerBin, natsURL, "c")

	for _, args := range [][]string{{"reset", "c"}, {"set", "c", "--position", "0"}} {
		stdout, stderr, code := cmdRun(t, "", nil, workerBin, append(append([]string{"checkpoint"}, args...), "--nats", natsURL)...)
		if code != 1 || stdout != "" {
			t.Errorf("checkpoint %s of a live checkpoint: exit %d, stdout %q; want exit 1", strings.Join(args, " "), code, stdout)
		}
		cmdOneLine(t, "refusal", stderr, `^worker: checkpoint has a live owner: checkpoint c is held by worker w1 \(last commit [0-9.]+m?s ago, within --alive-window 1m0s\): stop that worker first, or give --force`)
	}
	if after := cmdCkptGet(t, workerBin, natsURL, "c"); after.Revision != before.Revision {
		t.Fatalf("refused commands moved the record: revision %d → %d", before.Revision, after.Revision)
	}

	stdout, stderr, code := cmdRun(t, "", nil, workerBin, "checkpoint", "reset", "c", "--force", "--nats", natsURL)
	if code != 0 || stdout != fmt.Sprintf("checkpoint c reset: position %d → beginning (revision %d → %d)\n", seqs[1], before.Revision, before.Revision+1) {
		t.Fatalf("reset --force: exit %d: %q %s", code, stdout, stderr)
	}
	// The live worker handles the next event and loses its save.
	cmdAppend(t, writerBin, natsURL, cmdOpEvents(1, "order", "0x1001"))
	if code := live.wait(t, cmdLimit); code != 1 {
		t.Fatalf("the live worker exited %d, want 1:\n%s", code, live.output())
	}
	if last := cmdOpLastLine(live.output()); !strings.HasPrefix(last, "worker: checkpoint c is held by worker worker-checkpoint-reset (last commit ") {
		t.Errorf("the live worker's last line %q, want the conflict naming the reset", last)
	}
	if v := cmdCkptGet(t, workerBin, natsURL, "c"); v.Started || v.Owner != "worker-checkpoint-reset" {
		t.Errorf("after the race: %+v, want the reset in place", v)
	}
}

// TestCmdCheckpointBadInput: unknown checkpoints, malformed or too large
// positions, missing ids and subcommands, and a missing bucket each exit
// with a one-line error naming the rule; nothing creates the bucket.
func TestCmdCheckpointBadInput(t *testing.T) {
	writerBin, workerBin := cmdBins(t)
	natsURL := cmdOpWriter(t, writerBin)

	// No worker has run: the default bucket does not exist, and stays so.
	for range 2 {
		for _, args := range [][]string{{"get", "c"}, {"set", "c", "--position", "0"}, {"reset", "c"}, {"get", "c", "--bucket", "typo"}} {
			stdout, stderr, code := cmdRun(t, "", nil, workerBin, append(append([]string{"checkpoint"}, args...), "--nats", natsURL)...)
			if code != 1 || stdout != "" {
				t.Errorf("checkpoint %v with no bucket: exit %d, stdout %q", args, code, stdout)
			}
			cmdOneLine(t, "no bucket", stderr, `^worker: checkpoint bucket "(batfleet_checkpoints|typo)" does not exist`)
		}
	}

	cmdStart(t, "worker", workerBin, "--nats", natsURL, "--region", "entity=order", "--checkpoint", "c",
		"--out", filepath.Join(t.TempDir(), "c.jsonl"))
	seqs := cmdAppend(t, writerBin, natsURL, cmdOpEvents(2, "order", "0x1001"))
	cmdOpWait(t, workerBin, natsURL, "c", seqs[1])
	visible := seqs[1] + 1
	tests := []struct {
		name    string
		args    []string
		code    int
		pattern string
	}{
		{"unknown checkpoint", []string{"get", "nobody"}, 1, `^worker: unknown checkpoint "nobody": journal main has no record of it in bucket "batfleet_checkpoints" \(see worker status\)$`},
		{"unknown checkpoint set", []string{"set", "nobody", "--position", "0"}, 1, `^worker: unknown checkpoint "nobody"`},
		{"malformed position", []string{"set", "c", "--position", "abc"}, 2, `^worker: --position "abc": must be a sequence number \(a whole number >= 0\) or end$`},
		{"missing position", []string{"set", "c"}, 2, `^worker: --position is required`},
		{"position beyond visible", []string{"set", "c", "--position", strconv.FormatUint(visible, 10), "--force"}, 1,
			fmt.Sprintf(`^worker: --position %d: beyond the journal's visible bound %d \(the position must be a seq the writer has made visible, 0 to %d; or end\)$`, visible, visible, visible-1)},
		{"missing id", []string{"reset"}, 2, `^worker: checkpoint reset needs the checkpoint's id \(see worker checkpoint reset --help\)$`},
		{"unknown subcommand", []string{"move", "c"}, 2, `^worker: unknown command "checkpoint move" \(want checkpoint get, checkpoint set or checkpoint reset ID\)$`},
		{"alive window without unit", []string{"reset", "c", "--alive-window", "5"}, 2, `^worker: --alive-window 5: a duration needs a unit`},
		{"extra argument", []string{"get", "c", "d"}, 2, `^worker: unexpected argument "d"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := cmdRun(t, "", nil, workerBin, append(append([]string{"checkpoint"}, tt.args...), "--nats", natsURL)...)
			if code != tt.code || stdout != "" {
				t.Errorf("exit %d, stdout %q; want exit %d and nothing on stdout", code, stdout, tt.code)
			}
			cmdOneLine(t, tt.name, stderr, tt.pattern)
		})
	}
	if v := cmdCkptGet(t, workerBin, natsURL, "c"); v.Position != seqs[1] || v.Owner == "worker-checkpoint-set" {
		t.Errorf("bad input moved the checkpoint: %+v", v)
	}
	// No NATS: exit 3.
	_, stderr, code := cmdRun(t, "", nil, workerBin, "checkpoint", "get", "c", "--nats", "nats://127.0.0.1:1")
	if code != 3 {
		t.Errorf("no NATS: exit %d, want 3: %s", code, stderr)
	}
}
