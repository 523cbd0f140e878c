// Command writer serves a batfleet journal over NATS ("writer serve", the
// default), appends events to one ("writer append", which prints the seq
// of every event it appends from stdin, one per line) or describes one
// ("writer info"). "writer help [COMMAND]" is "--help"; "writer --version"
// prints the version. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/internal/writerapp"
)

// version is the program version (set with -ldflags "-X main.version=...").
var version = "0.1.0"

func main() { cli.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Printf("writer %s\n", version)
		return cli.ExitOK
	}
	if len(args) > 0 && args[0] == "help" {
		args = append(args[1:len(args):len(args)], "--help")
	}
	cmd := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "append" || args[0] == "info") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("writer "+cmd, flag.ContinueOnError)
	var logf cli.LogFlags
	var natsf cli.NATSFlags
	logf.Register(fs)
	journal := fs.String("journal", "main", "journal name ([A-Za-z0-9_-]{1,64})")
	var serve writerapp.ServeConfig
	var app writerapp.AppendConfig
	var info writerapp.InfoConfig
	switch cmd {
	case "serve":
		natsf.Register(fs, "", "NATS URL to join; empty starts an embedded nats-server with JetStream")
		fs.StringVar(&serve.Data, "data", "./data", "data directory (journals/, and nats/ for the embedded server)")
		fs.StringVar(&serve.Listen, "listen", "127.0.0.1:4222", "client address of the embedded nats-server")
		fs.StringVar(&serve.HTTP, "http", "", "address serving /metrics and /healthz (e.g. 127.0.0.1:9100)")
	case "append":
		natsf.Register(fs, "nats://127.0.0.1:4222", "NATS URL of the fleet")
		fs.IntVar(&app.Batch, "batch", 256, "events per append request")
		fs.IntVar(&app.Gen, "gen", 0, "generate this many synthetic events instead of reading JSON lines from stdin")
		fs.IntVar(&app.Entities, "entities", 1000, "synthetic: distinct entities (order:N and user:N)")
		fs.IntVar(&app.Scopes, "scopes", 4, "synthetic: distinct scopes (scope-N)")
		fs.Float64Var(&app.Rate, "rate", 0, "synthetic: events per second (0: as fast as possible)")
		fs.IntVar(&app.Size, "size", 100, "synthetic: payload bytes")
		fs.IntVar(&app.InFlight, "inflight", 0, "append requests in flight (default 4 with --gen, 1 for stdin, which keeps input order)")
	case "info":
		natsf.Register(fs, "nats://127.0.0.1:4222", "NATS URL of the fleet")
		fs.StringVar(&info.Data, "data", "", "the writer's data directory on this machine: adds the journal's disk use, and is read when no writer answers")
		fs.BoolVar(&info.JSON, "json", false, "print JSON instead of a table")
		fs.DurationVar(&info.Timeout, "timeout", writerapp.DefaultInfoTimeout, "how long to wait for the writer's answer")
	}
	synopsis := "writer [serve] [flags]  |  writer append [flags] < events.jsonl   (prints each appended event's seq on stdout)\n" +
		"  |  writer info [--data DIR] [--json]  |  writer help [COMMAND]  |  writer --version"
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cli.Usage(os.Stdout, fs, synopsis)
			return cli.ExitOK
		}
		fmt.Fprintf(os.Stderr, "writer: %v (see writer %s --help)\n", err, cmd)
		return cli.ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "writer: unexpected argument %q (see writer %s --help)\n", fs.Arg(0), cmd)
		return cli.ExitUsage
	}
	log, err := logf.Logger("writer", os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "writer: %v\n", err)
		return cli.ExitUsage
	}
	ctx, stop := cli.SignalContext(context.Background(), log)
	defer stop()

	switch cmd {
	case "serve":
		serve.Journal, serve.NATS, serve.Version, serve.Log = *journal, natsf, version, log
		err = writerapp.Serve(ctx, serve)
	case "append":
		app.Journal, app.NATS, app.Log, app.In, app.Seqs, app.Progress = *journal, natsf, log, os.Stdin, os.Stdout, os.Stderr
		if app.InFlight == 0 {
			app.InFlight = 1
			if app.Gen > 0 {
				app.InFlight = 4
			}
		}
		_, err = writerapp.Append(ctx, app)
	case "info":
		info.Journal, info.NATS, info.Out, info.Log = *journal, natsf, os.Stdout, log
		_, err = writerapp.Info(ctx, info)
	}
	return exitCode("writer", err)
}

func exitCode(prog string, err error) int {
	var natsErr *cli.NATSError
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return cli.ExitOK
	case errors.Is(err, cli.ErrUsage):
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		return cli.ExitUsage
	case errors.As(err, &natsErr):
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		return cli.ExitNoNATS
	default:
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		return cli.ExitFailure
	}
}
