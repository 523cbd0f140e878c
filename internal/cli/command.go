package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Execute runs root, a cobra command tree, on args (without the program
// name) and returns the exit code. A command's action is made with
// Action: the error it returns is the program's result, and exitCode
// prints it and gives its exit code. Every other error — a flag, an argument or an environment variable
// refused before the action ran — is a usage error, printed to root's
// stderr as "PROG: WHAT (see COMMAND --help)", exit ExitUsage. Help goes
// to stdout (exit 0); root.Version, if set, is printed by --version and
// by a hidden `version` command as "PROG VERSION". Single-dash long flags
// are taken as Go's flag package took them (see LongFlags).
func Execute(root *cobra.Command, args []string, exitCode func(error) int) int {
	root.SilenceErrors, root.SilenceUsage = true, true
	root.SuggestionsMinimumDistance = 2 // for NoArgs, as cobra's own unknown-command error has it
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return FlagError(err) })
	root.SetHelpFunc(func(c *cobra.Command, _ []string) { writeHelp(c.OutOrStdout(), c) })
	root.SetUsageFunc(func(c *cobra.Command) error {
		writeHelp(c.OutOrStderr(), c)
		return nil
	})
	if root.Version != "" {
		root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
		root.AddCommand(&cobra.Command{
			Use: "version", Short: "print the version", Hidden: true, Args: NoArgs,
			Run: func(c *cobra.Command, _ []string) { fmt.Fprintf(c.OutOrStdout(), "%s %s\n", root.Name(), root.Version) },
		})
	}
	strictHelp(root)
	root.SetArgs(LongFlags(root, args))
	cmd, err := root.ExecuteC()
	var done *actionError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &done):
		return exitCode(done.err)
	}
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(root.ErrOrStderr(), "%s: %v (see %s --help)\n", root.Name(), err, cmd.CommandPath())
	return ExitUsage
}

// strictHelp makes root's `help COMMAND` an error, exit ExitUsage, for a
// COMMAND that does not exist (cobra's shows the root's help, exit 0).
func strictHelp(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	for _, c := range root.Commands() {
		if c.Name() != "help" || c.Run == nil {
			continue
		}
		show := c.Run
		c.Short, c.Run = "help about any command", nil
		c.RunE = func(c *cobra.Command, args []string) error {
			if found, rest, err := root.Find(args); err != nil || found == nil || len(rest) > 0 {
				return &actionError{err: Usagef("unknown command %q (see %s --help)", strings.Join(args, " "), root.Name())}
			}
			show(c, args)
			return nil
		}
	}
}

// actionError carries the result of a command's action out of cobra.
type actionError struct{ err error }

func (e *actionError) Error() string { return e.err.Error() }
func (e *actionError) Unwrap() error { return e.err }

// Action makes a command's cobra RunE: the environment fallbacks of its
// flags first (ApplyEnv: a bad value is a usage error, shown with the help
// hint), then action, whose error is the program's result (see Execute).
func Action(action func(c *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) error {
		if err := ApplyEnv(c.Flags()); err != nil {
			return err
		}
		if err := action(c, args); err != nil {
			return &actionError{err: err}
		}
		return nil
	}
}

// NoArgs is the cobra.PositionalArgs of a command that takes none: an
// argument is a usage error, `unexpected argument "x"` (or, where x is
// close to the name of a subcommand, `unknown command "x": did you mean
// y?`).
func NoArgs(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		return Usagef("unknown command %q: did you mean %s?", args[0], strings.Join(s, " or "))
	}
	return Usagef("unexpected argument %q", args[0])
}

// OneArg is the cobra.PositionalArgs of a command that takes one
// argument, what it is ("the checkpoint's id"): none is a usage error,
// "checkpoint reset needs the checkpoint's id", as is a second.
func OneArg(what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return Usagef("%s needs %s", strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" "), what)
		case len(args) > 1:
			return Usagef("unexpected argument %q", args[1])
		}
		return nil
	}
}

// LongFlags returns args with every single-dash long flag of root's
// command tree (-journal, -batch=5), which Go's flag package took and
// pflag reads as shorthands, written with two dashes, so that scripts
// written for the flag package keep working. Only known flag names are
// rewritten, never a flag's value (the argument after a flag that takes
// one) nor anything after "--"; shell completion requests are left as
// they are.
func LongFlags(root *cobra.Command, args []string) []string {
	out := make([]string, 0, len(args)) // never nil: cobra reads os.Args for nil
	if len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) {
		return append(out, args...)
	}
	takesValue := map[string]bool{"help": false, "version": false}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) { takesValue[f.Name] = f.NoOptDefVal == "" })
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	valueNext := false
	for i, a := range args {
		switch {
		case valueNext:
			valueNext = false
		case a == "--":
			return append(out, args[i:]...)
		case strings.HasPrefix(a, "--"):
			name, _, inline := strings.Cut(a[2:], "=")
			valueNext = !inline && takesValue[name]
		case strings.HasPrefix(a, "-") && len(a) > 2:
			name, _, inline := strings.Cut(a[1:], "=")
			if tv, known := takesValue[name]; known {
				a = "-" + a
				valueNext = !inline && tv
			}
		}
		out = append(out, a)
	}
	return out
}

// writeHelp writes c's help: its synopsis, description, subcommands and
// flags with their environment variables (the NATS flags apart).
func writeHelp(w io.Writer, c *cobra.Command) {
	fmt.Fprintf(w, "usage: %s\n", c.UseLine())
	if text := strings.TrimSpace(c.Long); text != "" {
		fmt.Fprintf(w, "\n%s\n", text)
	} else if c.Short != "" {
		fmt.Fprintf(w, "\n%s\n", c.Short)
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\ncommands:\n")
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() || sub.Name() == "help" {
				fmt.Fprintf(w, "  %-*s  %s\n", c.NamePadding(), sub.Name(), sub.Short)
			}
		}
	}
	if c.Example != "" {
		fmt.Fprintf(w, "\nexamples:\n%s\n", strings.TrimRight(c.Example, "\n"))
	}
	if c.HasAvailableFlags() {
		fmt.Fprintln(w)
		writeFlags(w, c.Flags())
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\nRun \"%s help COMMAND\" for a command's help.\n", c.Root().Name())
	}
}
