package cli

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// testTree is a command tree like the binaries': a root that runs with
// its own flags, a subcommand taking one argument, and what each action
// saw.
type testTree struct {
	root  *cobra.Command
	ran   string // the command whose action ran
	args  []string
	batch int
	json  bool
	nats  string
}

func newTestTree() *testTree {
	t := &testTree{}
	t.root = &cobra.Command{Use: "prog [run]", Args: NoArgs, Version: "1.2.3",
		RunE: Action(func(*cobra.Command, []string) error { t.ran = "run"; return nil })}
	var lf LogFlags
	var nf NATSFlags
	lf.Register(t.root.Flags())
	nf.Register(t.root.Flags(), "nats://127.0.0.1:4222", "NATS URL")
	t.root.Flags().IntVar(&t.batch, "batch", 64, "events per batch")
	get := &cobra.Command{Use: "get ID", Short: "get one", Args: OneArg("the id"),
		RunE: Action(func(_ *cobra.Command, args []string) error {
			t.ran, t.args = "get", args
			if args[0] == "fail" {
				return errors.New("it failed")
			}
			return nil
		})}
	get.Flags().BoolVar(&t.json, "json", false, "print JSON")
	get.Flags().StringVar(&t.nats, "nats", "nats://127.0.0.1:4222", "NATS URL")
	t.root.AddCommand(get)
	return t
}

// execute runs the tree on args; exitCode prints "prog: ERR" and returns 1.
func (t *testTree) execute(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	t.root.SetOut(&out)
	t.root.SetErr(&errOut)
	code = Execute(t.root, args, func(err error) int {
		fmt.Fprintf(&errOut, "prog: %v\n", err)
		return ExitFailure
	})
	return out.String(), errOut.String(), code
}

func TestExecute(t *testing.T) {
	tests := []struct {
		name       string
		env        [2]string
		args       []string
		wantCode   int
		wantStdout string // a substring ("" for none)
		wantStderr string // the whole of it
		wantRan    string
	}{
		{name: "root runs", args: nil, wantRan: "run"},
		{name: "root runs with flags", args: []string{"--batch", "5"}, wantRan: "run"},
		{name: "version flag", args: []string{"--version"}, wantStdout: "prog 1.2.3\n"},
		{name: "version command", args: []string{"version"}, wantStdout: "prog 1.2.3\n"},
		{name: "help", args: []string{"--help"}, wantStdout: "usage: prog [run] [flags]\n"},
		{name: "help command", args: []string{"help", "get"}, wantStdout: "usage: prog get ID [flags]\n"},
		{name: "unknown flag", args: []string{"get", "x", "--bogus"}, wantCode: ExitUsage,
			wantStderr: "prog: unknown flag --bogus (see prog get --help)\n"},
		{name: "unknown single-dash flag", args: []string{"-bogus"}, wantCode: ExitUsage,
			wantStderr: "prog: unknown flag -bogus (see prog --help)\n"},
		{name: "bad value", args: []string{"--batch", "lots"}, wantCode: ExitUsage,
			wantStderr: "prog: --batch lots: not a whole number (see prog --help)\n"},
		{name: "bad env value", env: [2]string{"BATFLEET_BATCH", "lots"}, wantCode: ExitUsage,
			wantStderr: "prog: BATFLEET_BATCH=\"lots\": not a whole number (see prog --help)\n"},
		{name: "missing argument", args: []string{"get"}, wantCode: ExitUsage,
			wantStderr: "prog: get needs the id (see prog get --help)\n"},
		{name: "extra argument", args: []string{"get", "a", "b"}, wantCode: ExitUsage,
			wantStderr: "prog: unexpected argument \"b\" (see prog get --help)\n"},
		{name: "stray root argument", args: []string{"extra"}, wantCode: ExitUsage,
			wantStderr: "prog: unexpected argument \"extra\" (see prog --help)\n"},
		{name: "near a command", args: []string{"gte"}, wantCode: ExitUsage,
			wantStderr: "prog: unknown command \"gte\": did you mean get? (see prog --help)\n"},
		{name: "help for no command", args: []string{"help", "got"}, wantCode: ExitFailure,
			wantStderr: "prog: unknown command \"got\" (see prog --help)\n"},
		{name: "action error", args: []string{"get", "fail"}, wantCode: ExitFailure, wantStderr: "prog: it failed\n", wantRan: "get"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env[0] != "" {
				t.Setenv(tt.env[0], tt.env[1])
			}
			tree := newTestTree()
			stdout, stderr, code := tree.execute(tt.args...)
			if code != tt.wantCode || stderr != tt.wantStderr || !strings.Contains(stdout, tt.wantStdout) || tree.ran != tt.wantRan {
				t.Errorf("%q: exit %d, ran %q, stderr %q, stdout:\n%s\nwant exit %d, ran %q, stderr %q, stdout with %q",
					tt.args, code, tree.ran, stderr, stdout, tt.wantCode, tt.wantRan, tt.wantStderr, tt.wantStdout)
			}
		})
	}
}

// TestExecuteFlagsAfterArguments: flags may follow a command's argument,
// with one dash or two, and take their environment fallbacks.
func TestExecuteFlagsAfterArguments(t *testing.T) {
	t.Setenv("NATS_URL", "nats://from-env:4222")
	tree := newTestTree()
	if _, stderr, code := tree.execute("get", "ID", "--json"); code != 0 || tree.ran != "get" || !slices.Equal(tree.args, []string{"ID"}) || !tree.json {
		t.Fatalf("get ID --json: exit %d (%s), ran %q with %q, json %v", code, stderr, tree.ran, tree.args, tree.json)
	}
	if tree.nats != "nats://from-env:4222" {
		t.Errorf("--nats = %q, want NATS_URL's value", tree.nats)
	}
	tree = newTestTree()
	if _, stderr, code := tree.execute("get", "ID", "-json", "-nats", "nats://typed:4222"); code != 0 || !tree.json || tree.nats != "nats://typed:4222" {
		t.Fatalf("get ID -json -nats URL: exit %d (%s), json %v, nats %q", code, stderr, tree.json, tree.nats)
	}
}

// TestExecuteHelp: help lists the subcommands, and each flag with its
// environment variable, the NATS flags apart.
func TestExecuteHelp(t *testing.T) {
	stdout, stderr, code := newTestTree().execute("help")
	if code != 0 || stderr != "" {
		t.Fatalf("help: exit %d, stderr %q", code, stderr)
	}
	own, natsPart, found := strings.Cut(stdout, "\nNATS connection and authentication flags:\n")
	if !found {
		t.Fatalf("help has no NATS heading:\n%s", stdout)
	}
	for _, want := range []string{"\ncommands:\n", "\n  get ", "\n  completion ", "  --batch [BATFLEET_BATCH]\n", "  --log-level [BATFLEET_LOG_LEVEL]\n"} {
		if !strings.Contains(own, want) {
			t.Errorf("help lacks %q before the NATS flags:\n%s", want, stdout)
		}
	}
	if !strings.Contains(natsPart, "  --nats [NATS_URL]\n") || strings.Contains(own, "--nats") {
		t.Errorf("--nats is not listed apart:\n%s", stdout)
	}
}

// TestExecuteCompletion: `completion SHELL` prints a script that knows
// the subcommands, for each of cobra's four shells.
func TestExecuteCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		stdout, stderr, code := newTestTree().execute("completion", shell)
		if code != 0 || stderr != "" || !strings.Contains(stdout, "prog") {
			t.Errorf("completion %s: exit %d, stderr %q, %d bytes", shell, code, stderr, len(stdout))
		}
	}
	// The scripts ask the binary; its answer names the subcommands.
	stdout, _, code := newTestTree().execute(cobra.ShellCompRequestCmd, "")
	if code != 0 || !strings.Contains(stdout, "get\tget one") {
		t.Errorf("__complete: exit %d, stdout:\n%s", code, stdout)
	}
}

func TestLongFlags(t *testing.T) {
	tree := newTestTree()
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"none", nil, []string{}},
		{"single dash", []string{"-batch", "5", "-log-json"}, []string{"--batch", "5", "--log-json"}},
		{"inline value", []string{"-batch=5"}, []string{"--batch=5"}},
		{"a subcommand's flag", []string{"get", "x", "-json"}, []string{"get", "x", "--json"}},
		{"help and version", []string{"-help", "-version"}, []string{"--help", "--version"}},
		{"unknown names stay", []string{"-bogus", "-h", "-"}, []string{"-bogus", "-h", "-"}},
		{"a value stays", []string{"--nats", "-batch", "-nats", "-json"}, []string{"--nats", "-batch", "--nats", "-json"}},
		{"after a bool flag", []string{"--log-json", "-batch", "1"}, []string{"--log-json", "--batch", "1"}},
		{"after --", []string{"-batch", "1", "--", "-batch"}, []string{"--batch", "1", "--", "-batch"}},
		{"completion requests stay", []string{cobra.ShellCompRequestCmd, "-batch"}, []string{cobra.ShellCompRequestCmd, "-batch"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := LongFlags(tree.root, tt.args)
			if got == nil || !slices.Equal(got, tt.want) {
				t.Errorf("LongFlags(%q) = %#v, want %#v", tt.args, got, tt.want)
			}
		})
	}
}

// The usage error's text is what is wrong, with no "usage:" before it.
func TestUsageErrorText(t *testing.T) {
	err := fmt.Errorf("check: %w", Usagef("--batch %d: want > 0", 0))
	if !errors.Is(err, ErrUsage) || err.Error() != "check: --batch 0: want > 0" {
		t.Errorf("wrapped usage error = %q (Is ErrUsage: %v)", err, errors.Is(err, ErrUsage))
	}
	if errors.Is(errors.New("usage: x"), ErrUsage) {
		t.Error("a plain error matches ErrUsage")
	}
}
