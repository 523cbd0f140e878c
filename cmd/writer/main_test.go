package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/batfleet/batfleet/internal/cli"
)

// runWriter runs the writer's command line in process.
func runWriter(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), code
}

// TestCommandLine: the writer's commands, flags and their errors, none of
// which gets as far as NATS.
func TestCommandLine(t *testing.T) {
	tests := []struct {
		name       string
		env        [2]string
		args       []string
		wantCode   int
		wantStdout string // a substring
		wantStderr string // the whole of it
	}{
		{name: "version", args: []string{"--version"}, wantStdout: "writer 0.1.0\n"},
		{name: "version, one dash", args: []string{"-version"}, wantStdout: "writer 0.1.0\n"},
		{name: "version command", args: []string{"version"}, wantStdout: "writer 0.1.0\n"},
		{name: "help", args: []string{"help"}, wantStdout: "usage: writer [serve] [flags]\n"},
		{name: "help append", args: []string{"help", "append"}, wantStdout: "usage: writer append [flags] < events.jsonl\n"},
		{name: "help for no command", args: []string{"help", "bogus"}, wantCode: cli.ExitUsage,
			wantStderr: "writer: unknown command \"bogus\" (see writer --help)\n"},
		{name: "append --help", args: []string{"append", "--help"}, wantStdout: "  --inflight [BATFLEET_INFLIGHT]\n"},
		{name: "info -h", args: []string{"info", "-h"}, wantStdout: "  --timeout [BATFLEET_TIMEOUT]\n"},
		{name: "unknown flag", args: []string{"append", "--bogus"}, wantCode: cli.ExitUsage,
			wantStderr: "writer: unknown flag --bogus (see writer append --help)\n"},
		{name: "serve is the default", args: []string{"--journal", "a/b"}, wantCode: cli.ExitUsage,
			wantStderr: "writer: --journal: "},
		{name: "single-dash flags", args: []string{"append", "-batch", "0"}, wantCode: cli.ExitUsage,
			wantStderr: "writer: --batch must be > 0\n"},
		{name: "single-dash flag with a value", args: []string{"append", "-batch=0"}, wantCode: cli.ExitUsage,
			wantStderr: "writer: --batch must be > 0\n"},
		{name: "bad value", args: []string{"append", "--batch", "lots"}, wantCode: cli.ExitUsage,
			wantStderr: "writer: --batch lots: not a whole number (see writer append --help)\n"},
		{name: "environment", env: [2]string{"BATFLEET_BATCH", "0"}, args: []string{"append"}, wantCode: cli.ExitUsage,
			wantStderr: "writer: --batch must be > 0\n"},
		{name: "bad environment value", env: [2]string{"BATFLEET_BATCH", "lots"}, args: []string{"append"}, wantCode: cli.ExitUsage,
			wantStderr: "writer: BATFLEET_BATCH=\"lots\": not a whole number (see writer append --help)\n"},
		{name: "stray argument", args: []string{"info", "extra"}, wantCode: cli.ExitUsage,
			wantStderr: "writer: unexpected argument \"extra\" (see writer info --help)\n"},
		{name: "bad log level", args: []string{"info", "--log-level", "loud"}, wantCode: cli.ExitUsage,
			wantStderr: "writer: --log-level \"loud\": want trace, debug, info, warn or error\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env[0] != "" {
				t.Setenv(tt.env[0], tt.env[1])
			}
			stdout, stderr, code := runWriter(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(stdout, tt.wantStdout) || !strings.HasPrefix(stderr, tt.wantStderr) ||
				(tt.wantStderr == "") != (stderr == "") {
				t.Errorf("writer %q: exit %d, stderr %q, stdout:\n%s\nwant exit %d, stderr %q, stdout with %q",
					tt.args, code, stderr, stdout, tt.wantCode, tt.wantStderr, tt.wantStdout)
			}
		})
	}
}

// TestCompletion: `writer completion SHELL` prints a script for each
// shell, and the completions it asks the binary for name the commands.
func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		stdout, stderr, code := runWriter(t, "completion", shell)
		if code != 0 || stderr != "" || len(stdout) < 1000 || !strings.Contains(stdout, "writer") {
			t.Errorf("completion %s: exit %d, stderr %q, %d bytes", shell, code, stderr, len(stdout))
		}
	}
	stdout, _, code := runWriter(t, cobra.ShellCompNoDescRequestCmd, "")
	for _, cmd := range []string{"append", "completion", "help", "info", "serve"} {
		if code != 0 || !strings.Contains(stdout, "\n"+cmd+"\n") && !strings.HasPrefix(stdout, cmd+"\n") {
			t.Errorf("completing a command: exit %d, no %s in\n%s", code, cmd, stdout)
		}
	}
	stdout, _, _ = runWriter(t, cobra.ShellCompNoDescRequestCmd, "append", "--inf")
	if !strings.HasPrefix(stdout, "--inflight\n") {
		t.Errorf("completing append --inf: %q, want --inflight", stdout)
	}
}
