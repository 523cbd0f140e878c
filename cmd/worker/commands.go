package main

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/internal/workerapp"
	"github.com/batfleet/batfleet/kvckpt"
)

// newRoot returns the worker's command tree: the root runs a worker, as
// "run" does, with the same flags; "group" and "parked" alone list, as
// their "ls" does.
func newRoot() *cobra.Command {
	root := newRunCmd("worker [run]")
	root.Short = "run a batfleet worker, or look at and move its checkpoints"
	root.Long = "worker runs a batfleet worker (worker run, the default): it pulls a region of a journal from its\n" +
		"writer over NATS, hands batches to a handler (--out or --exec) and commits its checkpoint to\n" +
		"JetStream KV. Every flag falls back on the environment variable in brackets."
	root.Version = version

	group := newGroupLsCmd("group", true)
	group.AddCommand(newGroupLsCmd("ls", false), newGroupDescribeCmd())
	parked := newParkedCmd("parked", "ls")
	parked.AddCommand(newParkedCmd("ls", "ls"), newParkedCmd("replay", "replay"), newParkedCmd("drop", "drop"))
	checkpoint := &cobra.Command{
		Use:   "checkpoint get|set|reset ID",
		Short: "read (get) or move (set, reset) one checkpoint",
		Args:  cobra.ArbitraryArgs,
		// Alone or with an unknown subcommand, it names the command, not
		// the flags given for it.
		FParseErrWhitelist: cobra.FParseErrWhitelist{UnknownFlags: true},
		RunE: cli.Action(func(_ *cobra.Command, args []string) error {
			what := "checkpoint"
			if len(args) > 0 {
				what += " " + args[0]
			}
			return cli.Usagef("unknown command %q (want checkpoint get, checkpoint set or checkpoint reset ID)", what)
		}),
	}
	checkpoint.AddCommand(newCheckpointCmd("get"), newCheckpointCmd("set"), newCheckpointCmd("reset"))
	root.AddCommand(newRunCmd("run"), newStatusCmd(), newWaitCmd(), group, parked, checkpoint)
	return root
}

// common are the flags of every worker command.
type common struct {
	logf        cli.LogFlags
	natsf       cli.NATSFlags
	journal     string
	bucket      string
	groupBucket string
}

func (o *common) register(fs *pflag.FlagSet) {
	o.logf.Register(fs)
	o.natsf.Register(fs, "nats://127.0.0.1:4222", "NATS URL of the fleet (a no-URL writer listens on the default)")
	fs.StringVar(&o.journal, "journal", "main", "journal name")
	fs.StringVar(&o.bucket, "bucket", kvckpt.DefaultBucket, "JetStream KV bucket of checkpoints")
	fs.StringVar(&o.groupBucket, "group-bucket", fleet.DefaultGroupBucket, "JetStream KV bucket of consumer groups")
}

// start builds the logger and a context cancelled by SIGINT or SIGTERM,
// then runs f.
func (o *common) start(c *cobra.Command, f func(ctx context.Context, log hclog.Logger) error) error {
	log, err := o.logf.Logger("worker", c.ErrOrStderr())
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext(context.Background(), log)
	defer stop()
	return f(ctx, log)
}

func newRunCmd(use string) *cobra.Command {
	var o common
	var rc workerapp.RunConfig
	c := &cobra.Command{
		Use:   use + " --region SPEC (--checkpoint ID | --group NAME) (--out FILE|- | --exec CMD)",
		Short: "run a worker (the default)",
		Args:  cli.NoArgs,
	}
	fs := c.Flags()
	typed := workerapp.NewFlags(fs) // bad values named as typed: --idle 5: a duration needs a unit
	o.register(fs)
	fs.StringVar(&rc.Region, "region", "", "region: entity=PREFIX,scope=SCOPE,kind=KIND|category=CAT,clock=LO-HI (empty: everything)")
	fs.StringVar(&rc.Checkpoint, "checkpoint", "", "durable checkpoint id (omit for an in-memory worker)")
	typed.Int(&rc.Replicas, "replicas", 1, "replicas of the checkpoint bucket, if this worker creates it")
	typed.Int(&rc.Batch, "batch", 64, "most entries per handler call")
	typed.Duration(&rc.Idle, "idle", fleet.DefaultIdleTimeout, "idle timeout: how long the writer holds an idle pull before it is renewed")
	fs.StringVar(&rc.Restart, "restart", "once", "policy for handler failures that retries did not cure: once or bounded:N/DURATION")
	typed.Int(&rc.Attempts, "attempts", 3, "handler attempts per entry before it is exhausted (1: no retries)")
	typed.Duration(&rc.RetryBackoff, "retry-backoff", 100*time.Millisecond, "wait before the first retry of a failed entry, doubling up to 5s")
	fs.StringVar(&rc.OnPoison, "on-poison", workerapp.OnPoisonRestart, "what becomes of an exhausted entry: restart (the --restart policy decides) or park (park it and its entity's later entries; needs --checkpoint or --group)")
	fs.StringVar(&rc.ParkedBucket, "parked-bucket", kvckpt.DefaultParkedBucket, "JetStream KV bucket of parked entities")
	fs.StringVar(&rc.From, "from", "beginning", "where a checkpoint with no record starts: beginning, end, seq:N or time:RFC3339 (a stored checkpoint always wins; with --group, each partition when it is first claimed)")
	fs.StringVar(&rc.ID, "id", "", "owner name written into checkpoints (default host-pid-random)")
	fs.StringVar(&rc.Out, "out", "", "handler: append one JSON line per entry to FILE (or - for stdout)")
	fs.StringVar(&rc.Exec, "exec", "", "handler: a long-running command fed batches on stdin (see README)")
	typed.Duration(&rc.ExecTimeout, "exec-timeout", 30*time.Second, "how long --exec may take to answer a batch")
	typed.Duration(&rc.CheckpointOutage, "checkpoint-outage", 0, "give up after the checkpoint store is unavailable this long (0: ride out any outage)")
	typed.UntilForever(&rc.WaitWriter, "wait-writer", "how long to wait at start for a writer of --journal when none answers: a duration (0: give up at once, exit 1) or forever")
	fs.StringVar(&rc.HTTP, "http", "", "address serving /metrics and /healthz (e.g. 127.0.0.1:9101)")
	fs.StringVar(&rc.Group, "group", "", "join this consumer group: the region is spread over its members (excludes --checkpoint)")
	typed.Int(&rc.Partitions, "partitions", 16, "a group's partitions: a power of two from 1 to 1024 (fixed by its first member)")
	typed.Duration(&rc.Session, "session", 3*time.Second, "a group member's session: silent this long, its partitions are taken over")
	c.RunE = cli.Action(func(c *cobra.Command, _ []string) error {
		return o.start(c, func(ctx context.Context, log hclog.Logger) error {
			rc.NATS, rc.Journal, rc.Bucket, rc.GroupBucket, rc.Log = o.natsf, o.journal, o.bucket, o.groupBucket, log
			rc.Stdout, rc.Stderr, rc.Version = c.OutOrStdout(), c.ErrOrStderr(), version
			return workerapp.Run(ctx, rc)
		})
	})
	return c
}

func newStatusCmd() *cobra.Command {
	var o common
	var asJSON bool
	c := &cobra.Command{Use: "status [--json]", Short: "every checkpoint of the journal, with its lag", Args: cli.NoArgs}
	o.register(c.Flags())
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	c.RunE = cli.Action(func(c *cobra.Command, _ []string) error {
		return o.start(c, func(ctx context.Context, log hclog.Logger) error {
			_, err := workerapp.Status(ctx, workerapp.StatusConfig{NATS: o.natsf, Journal: o.journal, Bucket: o.bucket,
				JSON: asJSON, Out: c.OutOrStdout(), Log: log})
			return err
		})
	})
	return c
}

// newGroupLsCmd returns `group ls`; as the parent "group" (parent true)
// it lists too, and an argument is an unknown subcommand.
func newGroupLsCmd(use string, parent bool) *cobra.Command {
	var o common
	var asJSON bool
	c := &cobra.Command{Use: use + " [--json]", Short: "the journal's consumer groups", Args: cli.NoArgs}
	if parent {
		c.Use, c.Short, c.Args = "group ls|describe NAME", "the journal's consumer groups (group alone: group ls)", cobra.ArbitraryArgs
	}
	o.register(c.Flags())
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	c.RunE = cli.Action(func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return cli.Usagef("unknown command \"group %s\" (want group ls or group describe NAME)", args[0])
		}
		return o.start(c, func(ctx context.Context, log hclog.Logger) error {
			_, err := workerapp.GroupList(ctx, workerapp.GroupConfig{NATS: o.natsf, Journal: o.journal, Bucket: o.bucket,
				GroupBucket: o.groupBucket, JSON: asJSON, Out: c.OutOrStdout(), Log: log})
			return err
		})
	})
	return c
}

func newGroupDescribeCmd() *cobra.Command {
	var o common
	var asJSON bool
	c := &cobra.Command{Use: "describe NAME [--json]", Short: "one consumer group: its members and partitions",
		Args: cli.OneArg("the group's name")}
	o.register(c.Flags())
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	c.RunE = cli.Action(func(c *cobra.Command, args []string) error {
		return o.start(c, func(ctx context.Context, log hclog.Logger) error {
			_, err := workerapp.GroupDescribe(ctx, workerapp.GroupConfig{NATS: o.natsf, Journal: o.journal, Bucket: o.bucket,
				GroupBucket: o.groupBucket, Name: args[0], JSON: asJSON, Out: c.OutOrStdout(), Log: log})
			return err
		})
	})
	return c
}

// newParkedCmd returns `parked ls|replay|drop` (op); as the parent
// "parked" it is ls, and an argument is an unknown subcommand.
func newParkedCmd(use, op string) *cobra.Command {
	var o common
	var pc workerapp.ParkedConfig
	c := &cobra.Command{Args: cli.NoArgs}
	switch {
	case use == "parked":
		c.Use, c.Short, c.Args = "parked ls|replay|drop", "the entities parked by --on-poison park (parked alone: parked ls)", cobra.ArbitraryArgs
	case op == "ls":
		c.Use, c.Short = "ls (--checkpoint ID | --group NAME) [--json]", "list a checkpoint's (or a group's) parked entities"
	default:
		c.Use, c.Short = op+" (--checkpoint ID | --group NAME) --entity E", op+" a parked entity"
	}
	fs := c.Flags()
	o.register(fs)
	fs.StringVar(&pc.Checkpoint, "checkpoint", "", "the checkpoint whose parked set to read (ls) or change (replay, drop)")
	fs.StringVar(&pc.Group, "group", "", "or the consumer group: all its partitions (ls), the entity's partition (replay, drop)")
	fs.StringVar(&pc.ParkedBucket, "parked-bucket", kvckpt.DefaultParkedBucket, "JetStream KV bucket of parked entities")
	if op == "ls" {
		fs.BoolVar(&pc.JSON, "json", false, "print JSON instead of a table")
	} else {
		fs.StringVar(&pc.Entity, "entity", "", "the parked entity to "+op)
	}
	c.RunE = cli.Action(func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return cli.Usagef("unknown command \"parked %s\" (want parked ls, parked replay or parked drop)", args[0])
		}
		return o.start(c, func(ctx context.Context, log hclog.Logger) error {
			pc.NATS, pc.Journal, pc.Bucket, pc.GroupBucket, pc.Out, pc.Log = o.natsf, o.journal, o.bucket, o.groupBucket, c.OutOrStdout(), log
			var err error
			switch op {
			case "ls":
				_, err = workerapp.ParkedList(ctx, pc)
			case "replay":
				_, err = workerapp.ParkedReplay(ctx, pc)
			default:
				_, err = workerapp.ParkedDrop(ctx, pc)
			}
			return err
		})
	})
	return c
}

// newCheckpointCmd returns `checkpoint get|set|reset ID` (op).
func newCheckpointCmd(op string) *cobra.Command {
	var o common
	var cc workerapp.CheckpointConfig
	c := &cobra.Command{Args: cli.OneArg("the checkpoint's id")}
	fs := c.Flags()
	o.register(fs)
	switch op {
	case "get":
		c.Use, c.Short = "get ID [--json]", "one checkpoint: its position, owner and lag"
		fs.BoolVar(&cc.JSON, "json", false, "print JSON instead of a table")
	case "set":
		c.Use, c.Short = "set ID --position SEQ|end [--force]", "move a checkpoint to a seq (or to the journal's end)"
		fs.StringVar(&cc.Position, "position", "", "the seq the next worker resumes after (required): below the journal's visible bound, or end (everything visible so far is skipped)")
	case "reset":
		c.Use, c.Short = "reset ID [--force]", "delete a checkpoint: its next worker starts as --from says"
	}
	if op != "get" {
		fs.BoolVar(&cc.Force, "force", false, "move it even if its owner looks alive (see --alive-window), or if it is a group partition's checkpoint")
		workerapp.NewFlags(fs).Duration(&cc.AliveWindow, "alive-window", workerapp.DefaultAliveWindow, "a checkpoint committed less than this long ago has a live owner: refused without --force")
	}
	c.RunE = cli.Action(func(c *cobra.Command, args []string) error {
		return o.start(c, func(ctx context.Context, log hclog.Logger) error {
			cc.NATS, cc.Journal, cc.Bucket, cc.ID, cc.Out, cc.Log = o.natsf, o.journal, o.bucket, args[0], c.OutOrStdout(), log
			var err error
			switch op {
			case "get":
				_, err = workerapp.CheckpointGet(ctx, cc)
			case "set":
				_, err = workerapp.CheckpointSet(ctx, cc)
			default:
				_, err = workerapp.CheckpointReset(ctx, cc)
			}
			return err
		})
	})
	return c
}

func newWaitCmd() *cobra.Command {
	var o common
	var wc workerapp.WaitConfig
	c := &cobra.Command{
		Use:   "wait (--checkpoint ID | --group NAME) --through SEQ [--timeout D]",
		Short: "wait until a checkpoint (or a group) has committed through a seq (exit 4 on timeout)",
		Args:  cli.NoArgs,
	}
	fs := c.Flags()
	o.register(fs)
	fs.StringVar(&wc.Checkpoint, "checkpoint", "", "wait for this checkpoint")
	fs.StringVar(&wc.Group, "group", "", "or for every partition of this consumer group")
	fs.StringVar(&wc.Through, "through", "", "the seq to wait for (required): done once committed through it, or nothing of the region is left up to it")
	workerapp.NewFlags(fs).Duration(&wc.Timeout, "timeout", workerapp.DefaultWaitTimeout, "give up after this long (exit 4)")
	c.RunE = cli.Action(func(c *cobra.Command, _ []string) error {
		return o.start(c, func(ctx context.Context, log hclog.Logger) error {
			wc.NATS, wc.Journal, wc.Bucket, wc.GroupBucket, wc.Log = o.natsf, o.journal, o.bucket, o.groupBucket, log
			return workerapp.Wait(ctx, wc)
		})
	})
	return c
}
