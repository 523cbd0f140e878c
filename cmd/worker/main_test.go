package main

import (
	"bytes"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/batfleet/batfleet/internal/cli"
)

// runWorker runs the worker's command line in process.
func runWorker(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// deadNATS returns a NATS URL nothing listens on.
func deadNATS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + ln.Addr().String()
	ln.Close()
	return url
}

// TestCommandLine: the worker's commands, flags and their errors; those
// that get as far as NATS find nothing there (exit 3).
func TestCommandLine(t *testing.T) {
	dead := deadNATS(t)
	tests := []struct {
		name       string
		env        [2]string
		args       []string
		wantCode   int
		wantStdout string // a substring
		wantStderr string // its beginning ("" for none)
	}{
		{name: "version", args: []string{"--version"}, wantStdout: "worker 0.1.0\n"},
		{name: "help", args: []string{"help"}, wantStdout: "usage: worker [run] --region SPEC"},
		{name: "help lists the commands", args: []string{"--help"}, wantStdout: "\n  checkpoint   read (get) or move (set, reset) one checkpoint\n"},
		{name: "help checkpoint set", args: []string{"help", "checkpoint", "set"}, wantStdout: "usage: worker checkpoint set ID --position SEQ|end [--force] [flags]\n"},
		{name: "--position has no variable", args: []string{"checkpoint", "set", "-h"}, wantStdout: "\n  --position\n      the seq"},
		{name: "help status", args: []string{"status", "--help"}, wantStdout: "  --json [BATFLEET_JSON]\n"},
		{name: "run is the default", args: []string{"--region", "owner=me", "--out", "-"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: --region: unknown key \"owner\""},
		{name: "run", args: []string{"run", "--region", "owner=me", "--out", "-"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: --region: unknown key \"owner\""},
		{name: "run reaches NATS", args: []string{"--region", "entity=order", "--checkpoint", "c", "--out", "-", "--nats", dead},
			wantCode: cli.ExitNoNATS, wantStderr: "worker: "},
		{name: "unknown flag", args: []string{"--bogus"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: unknown flag --bogus (see worker --help)\n"},
		{name: "unknown flag of a command", args: []string{"status", "--out", "x"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: unknown flag --out (see worker status --help)\n"},
		{name: "unknown single-dash flag", args: []string{"-bogus"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: unknown flag -bogus (see worker --help)\n"},
		{name: "single-dash flags", args: []string{"-region", "owner=me", "-out", "-"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: --region: unknown key \"owner\""},
		{name: "typed value", args: []string{"--idle", "5", "--out", "-"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: --idle 5: a duration needs a unit, e.g. 5s (see worker --help)\n"},
		{name: "typed value from the environment", env: [2]string{"BATFLEET_IDLE", "5"}, args: []string{"--out", "-"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: BATFLEET_IDLE=\"5\": a duration needs a unit, e.g. 5s (see worker --help)\n"},
		{name: "environment", env: [2]string{"BATFLEET_REGION", "owner=me"}, args: []string{"--out", "-"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: --region: unknown key \"owner\""},
		{name: "flags after the id", args: []string{"checkpoint", "reset", "c", "--alive-window", "5"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: --alive-window 5: a duration needs a unit, e.g. 5s (see worker checkpoint reset --help)\n"},
		{name: "flags after the id reach NATS", args: []string{"checkpoint", "get", "c", "--json", "--nats", dead},
			wantCode: cli.ExitNoNATS, wantStderr: "worker: "},
		{name: "missing id", args: []string{"checkpoint", "reset"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: checkpoint reset needs the checkpoint's id (see worker checkpoint reset --help)\n"},
		{name: "extra argument", args: []string{"checkpoint", "get", "c", "d"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: unexpected argument \"d\" (see worker checkpoint get --help)\n"},
		{name: "unknown checkpoint command", args: []string{"checkpoint", "move", "c", "--nats", dead}, wantCode: cli.ExitUsage,
			wantStderr: "worker: unknown command \"checkpoint move\" (want checkpoint get, checkpoint set or checkpoint reset ID)\n"},
		{name: "unknown parked command", args: []string{"parked", "purge"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: unknown command \"parked purge\" (want parked ls, parked replay or parked drop)\n"},
		{name: "unknown group command", args: []string{"group", "rm"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: unknown command \"group rm\" (want group ls or group describe NAME)\n"},
		{name: "parked is parked ls", args: []string{"parked"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: give exactly one of --checkpoint ID or --group NAME\n"},
		{name: "a command's near miss", args: []string{"stauts"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: unknown command \"stauts\": did you mean status? (see worker --help)\n"},
		{name: "wait", args: []string{"wait", "--checkpoint", "c", "--through", "7", "--timeout", "10"}, wantCode: cli.ExitUsage,
			wantStderr: "worker: --timeout 10: a duration needs a unit, e.g. 10s (see worker wait --help)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env[0] != "" {
				t.Setenv(tt.env[0], tt.env[1])
			}
			stdout, stderr, code := runWorker(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(stdout, tt.wantStdout) || !strings.HasPrefix(stderr, tt.wantStderr) ||
				(tt.wantStderr == "") != (stderr == "") {
				t.Errorf("worker %q: exit %d, stderr %q, stdout:\n%s\nwant exit %d, stderr %q, stdout with %q",
					tt.args, code, stderr, stdout, tt.wantCode, tt.wantStderr, tt.wantStdout)
			}
		})
	}
}

// TestCompletion: `worker completion SHELL` prints a script for each
// shell, and the completions it asks the binary for name the commands,
// down to the subcommands of checkpoint.
func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		stdout, stderr, code := runWorker(t, "completion", shell)
		if code != 0 || stderr != "" || len(stdout) < 1000 || !strings.Contains(stdout, "worker") {
			t.Errorf("completion %s: exit %d, stderr %q, %d bytes", shell, code, stderr, len(stdout))
		}
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{""}, []string{"checkpoint", "completion", "group", "help", "parked", "run", "status", "wait"}},
		{[]string{"checkpoint", ""}, []string{"get", "reset", "set"}},
		{[]string{"parked", ""}, []string{"drop", "ls", "replay"}},
	} {
		stdout, _, code := runWorker(t, append([]string{cobra.ShellCompNoDescRequestCmd}, tc.args...)...)
		lines := strings.Split(stdout, "\n")
		for _, w := range tc.want {
			if code != 0 || !slices.Contains(lines, w) {
				t.Errorf("completing %q: exit %d, no %s in\n%s", tc.args, code, w, stdout)
			}
		}
	}
}
