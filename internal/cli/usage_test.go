package cli

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

// TestUsageGroupsNATSFlags: the NATS connection and authentication flags
// are listed after the command's own, under a heading of their own; a
// flag whose help states its default shows no second default.
func TestUsageGroupsNATSFlags(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var lf LogFlags
	var nf NATSFlags
	lf.Register(fs)
	nf.Register(fs, "nats://127.0.0.1:4222", "NATS URL")
	fs.Int("batch", 64, "events per batch")
	fs.Int("inflight", 0, "requests in flight (default 4 with --gen, 1 for stdin)")
	var b bytes.Buffer
	Usage(&b, fs, "test [flags]")
	out := b.String()

	own, natsPart, found := strings.Cut(out, "\nNATS connection and authentication flags:\n")
	if !found {
		t.Fatalf("usage has no NATS heading:\n%s", out)
	}
	for name := range natsFlagNames {
		if !strings.Contains(natsPart, "  --"+name+" [") {
			t.Errorf("--%s is not under the NATS heading:\n%s", name, out)
		}
		if strings.Contains(own, "  --"+name+" [") {
			t.Errorf("--%s is listed among the command's own flags:\n%s", name, out)
		}
	}
	for _, name := range []string{"batch", "inflight", "log-level", "log-json"} {
		if !strings.Contains(own, "  --"+name+" [") {
			t.Errorf("--%s is not among the command's own flags:\n%s", name, out)
		}
	}
	_, inflight, _ := strings.Cut(own, "  --inflight [")
	inflight, _, _ = strings.Cut(inflight, "\n  --")
	if n := strings.Count(inflight, "(default"); n != 1 {
		t.Errorf("--inflight shows %d defaults, want the one its help states:\n%s", n, out)
	}
	if !strings.Contains(out, `(default "64")`) {
		t.Errorf("usage lost --batch's default:\n%s", out)
	}
}

// --force and --position are never taken from the environment: a variable
// left set must not force a later `worker checkpoint reset`.
func TestApplyEnvSkipsTypedOnlyFlags(t *testing.T) {
	t.Setenv("BATFLEET_FORCE", "true")
	t.Setenv("BATFLEET_POSITION", "7")
	t.Setenv("BATFLEET_BATCH", "9")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	force := fs.Bool("force", false, "")
	pos := fs.String("position", "", "")
	batch := fs.Int("batch", 1, "")
	if err := Parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if *force || *pos != "" || *batch != 9 {
		t.Fatalf("force %v, position %q, batch %d; want false, \"\", 9 (only batch from the environment)", *force, *pos, *batch)
	}
}
