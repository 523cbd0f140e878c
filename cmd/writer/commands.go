package main

import (
	"context"
	"io"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/internal/writerapp"
)

// newRoot returns the writer's command tree: the root serves, as "serve"
// does, with the same flags.
func newRoot(stdin io.Reader) *cobra.Command {
	root := newServeCmd("writer [serve]")
	root.Short = "serve, append to or describe a batfleet journal"
	root.Long = "writer serves a batfleet journal over NATS (writer serve, the default), appends events to one\n" +
		"(writer append, which prints the seq of every event it appends from stdin) or describes one\n" +
		"(writer info). Every flag falls back on the environment variable in brackets."
	root.Version = version
	root.AddCommand(newServeCmd("serve"), newAppendCmd(stdin), newInfoCmd())
	return root
}

// common are the flags of every writer command.
type common struct {
	logf    cli.LogFlags
	natsf   cli.NATSFlags
	journal string
}

// register adds the common flags to fs; natsURL is --nats's default.
func (o *common) register(fs *pflag.FlagSet, natsURL, natsHelp string) {
	o.logf.Register(fs)
	o.natsf.Register(fs, natsURL, natsHelp)
	fs.StringVar(&o.journal, "journal", "main", "journal name ([A-Za-z0-9_-]{1,64})")
}

// start builds the logger and a context cancelled by SIGINT or SIGTERM,
// then runs f.
func (o *common) start(c *cobra.Command, f func(ctx context.Context, log hclog.Logger) error) error {
	log, err := o.logf.Logger("writer", c.ErrOrStderr())
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext(context.Background(), log)
	defer stop()
	return f(ctx, log)
}

func newServeCmd(use string) *cobra.Command {
	var o common
	var cfg writerapp.ServeConfig
	c := &cobra.Command{Use: use, Short: "serve a journal over NATS (the default)", Args: cli.NoArgs}
	fs := c.Flags()
	o.register(fs, "", "NATS URL to join; empty starts an embedded nats-server with JetStream")
	fs.StringVar(&cfg.Data, "data", "./data", "data directory (journals/, and nats/ for the embedded server)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:4222", "client address of the embedded nats-server")
	fs.StringVar(&cfg.HTTP, "http", "", "address serving /metrics and /healthz (e.g. 127.0.0.1:9100)")
	c.RunE = cli.Action(func(c *cobra.Command, _ []string) error {
		return o.start(c, func(ctx context.Context, log hclog.Logger) error {
			cfg.Journal, cfg.NATS, cfg.Version, cfg.Log = o.journal, o.natsf, version, log
			return writerapp.Serve(ctx, cfg)
		})
	})
	return c
}

func newAppendCmd(stdin io.Reader) *cobra.Command {
	var o common
	var cfg writerapp.AppendConfig
	c := &cobra.Command{
		Use:   "append [flags] < events.jsonl",
		Short: "append JSON lines from stdin (printing each one's seq) or --gen synthetic events",
		Args:  cli.NoArgs,
	}
	fs := c.Flags()
	o.register(fs, "nats://127.0.0.1:4222", "NATS URL of the fleet")
	fs.IntVar(&cfg.Batch, "batch", 256, "events per append request")
	fs.IntVar(&cfg.Gen, "gen", 0, "generate this many synthetic events instead of reading JSON lines from stdin")
	fs.IntVar(&cfg.Entities, "entities", 1000, "synthetic: distinct entities (order:N and user:N)")
	fs.IntVar(&cfg.Scopes, "scopes", 4, "synthetic: distinct scopes (scope-N)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "synthetic: events per second (0: as fast as possible)")
	fs.IntVar(&cfg.Size, "size", 100, "synthetic: payload bytes")
	fs.IntVar(&cfg.InFlight, "inflight", 0, "append requests in flight (default 4 with --gen, 1 for stdin, which keeps input order)")
	c.RunE = cli.Action(func(c *cobra.Command, _ []string) error {
		return o.start(c, func(ctx context.Context, log hclog.Logger) error {
			cfg.Journal, cfg.NATS, cfg.Log = o.journal, o.natsf, log
			cfg.In, cfg.Seqs, cfg.Progress = stdin, c.OutOrStdout(), c.ErrOrStderr()
			if cfg.InFlight == 0 {
				cfg.InFlight = 1
				if cfg.Gen > 0 {
					cfg.InFlight = 4
				}
			}
			_, err := writerapp.Append(ctx, cfg)
			return err
		})
	})
	return c
}

func newInfoCmd() *cobra.Command {
	var o common
	var cfg writerapp.InfoConfig
	c := &cobra.Command{
		Use:   "info [--data DIR] [--json]",
		Short: "describe a journal: id, incarnation, visible bound, events, cancelled ranges",
		Args:  cli.NoArgs,
	}
	fs := c.Flags()
	o.register(fs, "nats://127.0.0.1:4222", "NATS URL of the fleet")
	fs.StringVar(&cfg.Data, "data", "", "the writer's data directory on this machine: adds the journal's disk use, and is read when no writer answers")
	fs.BoolVar(&cfg.JSON, "json", false, "print JSON instead of a table")
	fs.DurationVar(&cfg.Timeout, "timeout", writerapp.DefaultInfoTimeout, "how long to wait for the writer's answer")
	c.RunE = cli.Action(func(c *cobra.Command, _ []string) error {
		return o.start(c, func(ctx context.Context, log hclog.Logger) error {
			cfg.Journal, cfg.NATS, cfg.Out, cfg.Log = o.journal, o.natsf, c.OutOrStdout(), log
			_, err := writerapp.Info(ctx, cfg)
			return err
		})
	})
	return c
}
