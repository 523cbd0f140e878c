// Command writer serves a batfleet journal over NATS ("writer serve", the
// default), appends events to one ("writer append", which prints the seq
// of every event it appends from stdin, one per line) or describes one
// ("writer info"). "writer help [COMMAND]" is "--help"; "writer --version"
// prints the version; "writer completion bash|zsh|fish|powershell" prints
// a shell completion script. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/batfleet/batfleet/internal/cli"
)

// version is the program version (set with -ldflags "-X main.version=...").
var version = "0.1.0"

func main() { cli.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

// run runs the command line args and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return cli.Execute(root, args, func(err error) int { return exitCode(stderr, err) })
}

// exitCode prints a command's error and returns its exit code.
func exitCode(stderr io.Writer, err error) int {
	var natsErr *cli.NATSError
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return cli.ExitOK
	case errors.Is(err, cli.ErrUsage):
		fmt.Fprintf(stderr, "writer: %v\n", err)
		return cli.ExitUsage
	case errors.As(err, &natsErr):
		fmt.Fprintf(stderr, "writer: %v\n", err)
		return cli.ExitNoNATS
	default:
		fmt.Fprintf(stderr, "writer: %v\n", err)
		return cli.ExitFailure
	}
}
