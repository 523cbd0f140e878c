package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestUsageGroupsNATSFlags: the NATS connection and authentication flags
// are listed after the command's own, under a heading of their own; a
// flag whose help states its default shows no second default.
func TestUsageGroupsNATSFlags(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
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
// left set must not force a later `worker checkpoint reset`; nor are
// cobra's --help and --version. Usage shows them with no variable.
func TestApplyEnvSkipsTypedOnlyFlags(t *testing.T) {
	t.Setenv("BATFLEET_FORCE", "true")
	t.Setenv("BATFLEET_POSITION", "7")
	t.Setenv("BATFLEET_BATCH", "9")
	t.Setenv("BATFLEET_HELP", "true")
	t.Setenv("BATFLEET_VERSION", "true")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	force := fs.Bool("force", false, "force it")
	pos := fs.String("position", "", "where")
	batch := fs.Int("batch", 1, "")
	help := fs.Bool("help", false, "")
	version := fs.Bool("version", false, "")
	if err := Parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if *force || *pos != "" || *batch != 9 || *help || *version {
		t.Fatalf("force %v, position %q, batch %d, help %v, version %v; want false, \"\", 9, false, false (only batch from the environment)",
			*force, *pos, *batch, *help, *version)
	}
	var b bytes.Buffer
	Usage(&b, fs, "t")
	for _, want := range []string{"  --force\n      force it\n", "  --position\n      where\n", "  --batch [BATFLEET_BATCH]\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, b.String())
		}
	}
}
