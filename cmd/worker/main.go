// Command worker runs a batfleet worker ("worker run", the default): it
// pulls a region of a journal from its writer over NATS, hands batches to
// a handler (--out or --exec) and commits its checkpoint to JetStream KV;
// with --group it is one member of a consumer group that spreads the
// region over all its members. "worker status" prints every checkpoint of
// a journal, "worker group ls|describe" its consumer groups, "worker
// parked ls|replay|drop" the entities parked by --on-poison park, "worker
// checkpoint get|set|reset ID" reads or moves one checkpoint, and
// "worker wait" waits until a checkpoint has committed through a seq.
// "worker help [COMMAND]" is "--help"; "worker --version" prints the
// version; "worker completion bash|zsh|fish|powershell" prints a shell
// completion script. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/internal/workerapp"
)

// version is the program version (set with -ldflags "-X main.version=...").
var version = "0.1.0"

func main() { cli.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run runs the command line args and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot()
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
	case errors.Is(err, cli.ErrUsage), errors.Is(err, engine.ErrInvalidConfig), errors.Is(err, fleet.ErrGroupMismatch):
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return cli.ExitUsage
	case errors.As(err, &natsErr):
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return cli.ExitNoNATS
	case errors.Is(err, workerapp.ErrWaitTimeout):
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return workerapp.ExitTimeout
	default:
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return cli.ExitFailure
	}
}
