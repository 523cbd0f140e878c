// Command worker runs a batfleet worker ("worker run", the default): it
// pulls a region of a journal from its writer over NATS, hands batches to
// a handler (--out or --exec) and commits its checkpoint to JetStream KV;
// with --group it is one member of a consumer group that spreads the
// region over all its members. "worker status" prints every checkpoint of
// a journal, "worker group ls|describe" its consumer groups, "worker
// parked ls|replay|drop" the entities parked by --on-poison park, "worker
// checkpoint get|set|reset ID" reads or moves one checkpoint, and
// "worker wait" waits until a checkpoint has committed through a seq.
// See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/internal/workerapp"
	"github.com/batfleet/batfleet/kvckpt"
)

// version is the program version (set with -ldflags "-X main.version=...").
var version = "0.1.0"

func main() { cli.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Printf("worker %s\n", version)
		return cli.ExitOK
	}
	if len(args) > 0 && args[0] == "help" { // "worker help [COMMAND]" is "worker [COMMAND] --help"
		args = append(args[1:len(args):len(args)], "--help")
	}
	cmd := "run"
	if len(args) > 0 && (args[0] == "run" || args[0] == "status" || args[0] == "wait") {
		cmd, args = args[0], args[1:]
	}
	if len(args) > 0 && args[0] == "parked" {
		cmd, args = "parked ls", args[1:]
		switch {
		case len(args) > 0 && (args[0] == "ls" || args[0] == "replay" || args[0] == "drop"):
			cmd, args = "parked "+args[0], args[1:]
		case len(args) > 0 && !strings.HasPrefix(args[0], "-"):
			fmt.Fprintf(os.Stderr, "worker: unknown command \"parked %s\" (want parked ls, parked replay or parked drop)\n", args[0])
			return cli.ExitUsage
		}
	}
	if len(args) > 0 && args[0] == "group" {
		cmd, args = "group ls", args[1:]
		switch {
		case len(args) > 0 && args[0] == "ls":
			args = args[1:]
		case len(args) > 0 && args[0] == "describe":
			cmd, args = "group describe", args[1:]
		case len(args) > 0 && !strings.HasPrefix(args[0], "-"):
			fmt.Fprintf(os.Stderr, "worker: unknown command \"group %s\" (want group ls or group describe NAME)\n", args[0])
			return cli.ExitUsage
		}
	}
	if len(args) > 0 && args[0] == "checkpoint" {
		args = args[1:]
		if len(args) == 0 || (args[0] != "get" && args[0] != "set" && args[0] != "reset") {
			if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
				cmd = "checkpoint get"
			} else {
				what := "checkpoint"
				if len(args) > 0 {
					what += " " + args[0]
				}
				fmt.Fprintf(os.Stderr, "worker: unknown command %q (want checkpoint get, checkpoint set or checkpoint reset ID)\n", what)
				return cli.ExitUsage
			}
		} else {
			cmd, args = "checkpoint "+args[0], args[1:]
		}
	}
	fs := flag.NewFlagSet("worker "+cmd, flag.ContinueOnError)
	typed := workerapp.NewFlags(fs) // bad values named as typed: --idle 5: a duration needs a unit
	var logf cli.LogFlags
	var natsf cli.NATSFlags
	logf.Register(fs)
	natsf.Register(fs, "nats://127.0.0.1:4222", "NATS URL of the fleet (a no-URL writer listens on the default)")
	journal := fs.String("journal", "main", "journal name")
	bucket := fs.String("bucket", kvckpt.DefaultBucket, "JetStream KV bucket of checkpoints")
	var rc workerapp.RunConfig
	var pc workerapp.ParkedConfig
	var wc workerapp.WaitConfig
	var cc workerapp.CheckpointConfig
	var asJSON bool
	switch cmd {
	case "run":
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
		fs.StringVar(&rc.From, "from", "beginning", "where a checkpoint with no record starts: beginning, end, seq:N or time:RFC3339 (a stored checkpoint always wins)")
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
	case "status", "group ls", "group describe":
		fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	case "parked ls", "parked replay", "parked drop":
		fs.StringVar(&pc.Checkpoint, "checkpoint", "", "the checkpoint whose parked set to read (ls) or change (replay, drop)")
		fs.StringVar(&pc.Group, "group", "", "or the consumer group: all its partitions (ls), the entity's partition (replay, drop)")
		fs.StringVar(&pc.ParkedBucket, "parked-bucket", kvckpt.DefaultParkedBucket, "JetStream KV bucket of parked entities")
		if cmd == "parked ls" {
			fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
		} else {
			fs.StringVar(&pc.Entity, "entity", "", "the parked entity to "+strings.TrimPrefix(cmd, "parked "))
		}
	case "checkpoint get":
		fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	case "checkpoint set", "checkpoint reset":
		if cmd == "checkpoint set" {
			fs.StringVar(&cc.Position, "position", "", "the seq the next worker resumes after (required): below the journal's visible bound, or end (everything visible so far is skipped)")
		}
		fs.BoolVar(&cc.Force, "force", false, "move it even if its owner looks alive (see --alive-window), or if it is a group partition's checkpoint")
		typed.Duration(&cc.AliveWindow, "alive-window", workerapp.DefaultAliveWindow, "a checkpoint committed less than this long ago has a live owner: refused without --force")
	case "wait":
		fs.StringVar(&wc.Checkpoint, "checkpoint", "", "wait for this checkpoint")
		fs.StringVar(&wc.Group, "group", "", "or for every partition of this consumer group")
		fs.StringVar(&wc.Through, "through", "", "the seq to wait for (required): done once committed through it, or nothing of the region is left up to it")
		typed.Duration(&wc.Timeout, "timeout", workerapp.DefaultWaitTimeout, "give up after this long (exit 4)")
	}
	groupBucket := fs.String("group-bucket", fleet.DefaultGroupBucket, "JetStream KV bucket of consumer groups")
	synopsis := "worker [run] --region SPEC (--checkpoint ID | --group NAME) (--out FILE|- | --exec CMD) [flags]\n" +
		"  |  worker status [--json]  |  worker group ls [--json]  |  worker group describe NAME [--json]\n" +
		"  |  worker parked ls (--checkpoint ID | --group NAME) [--json]\n" +
		"  |  worker parked replay|drop (--checkpoint ID | --group NAME) --entity E\n" +
		"  |  worker wait (--checkpoint ID | --group NAME) --through SEQ [--timeout D]\n" +
		"  |  worker checkpoint get ID [--json]  |  worker checkpoint set ID --position SEQ|end [--force]\n" +
		"  |  worker checkpoint reset ID [--force]"
	if err := typed.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cli.Usage(os.Stdout, fs, synopsis)
			return cli.ExitOK
		}
		fmt.Fprintf(os.Stderr, "worker: %v (see worker %s --help)\n", err, cmd)
		return cli.ExitUsage
	}
	var nameArg string
	if cmd == "group describe" || strings.HasPrefix(cmd, "checkpoint ") {
		if fs.NArg() == 0 {
			what := "the group's name"
			if cmd != "group describe" {
				what = "the checkpoint's id"
			}
			fmt.Fprintf(os.Stderr, "worker: %s needs %s (see worker %s --help)\n", cmd, what, cmd)
			return cli.ExitUsage
		}
		nameArg, args = fs.Arg(0), fs.Args()[1:]
		// Flags may follow the name too.
		if err := typed.Parse(args); err != nil {
			fmt.Fprintf(os.Stderr, "worker: %v (see worker %s --help)\n", err, cmd)
			return cli.ExitUsage
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "worker: unexpected argument %q (see worker %s --help)\n", fs.Arg(0), cmd)
		return cli.ExitUsage
	}
	log, err := logf.Logger("worker", os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
		return cli.ExitUsage
	}
	ctx, stop := cli.SignalContext(context.Background(), log)
	defer stop()

	switch cmd {
	case "run":
		rc.NATS, rc.Journal, rc.Bucket, rc.Log, rc.Stdout, rc.Stderr = natsf, *journal, *bucket, log, os.Stdout, os.Stderr
		rc.GroupBucket = *groupBucket
		err = workerapp.Run(ctx, rc)
	case "status":
		_, err = workerapp.Status(ctx, workerapp.StatusConfig{NATS: natsf, Journal: *journal, Bucket: *bucket, JSON: asJSON, Out: os.Stdout, Log: log})
	case "group ls", "group describe":
		gc := workerapp.GroupConfig{NATS: natsf, Journal: *journal, Bucket: *bucket, GroupBucket: *groupBucket,
			Name: nameArg, JSON: asJSON, Out: os.Stdout, Log: log}
		if cmd == "group ls" {
			_, err = workerapp.GroupList(ctx, gc)
		} else {
			_, err = workerapp.GroupDescribe(ctx, gc)
		}
	case "parked ls", "parked replay", "parked drop":
		pc.NATS, pc.Journal, pc.Bucket, pc.GroupBucket, pc.JSON, pc.Out, pc.Log = natsf, *journal, *bucket, *groupBucket, asJSON, os.Stdout, log
		switch cmd {
		case "parked ls":
			_, err = workerapp.ParkedList(ctx, pc)
		case "parked replay":
			_, err = workerapp.ParkedReplay(ctx, pc)
		default:
			_, err = workerapp.ParkedDrop(ctx, pc)
		}
	case "checkpoint get", "checkpoint set", "checkpoint reset":
		cc.NATS, cc.Journal, cc.Bucket, cc.ID, cc.JSON, cc.Out, cc.Log = natsf, *journal, *bucket, nameArg, asJSON, os.Stdout, log
		switch cmd {
		case "checkpoint get":
			_, err = workerapp.CheckpointGet(ctx, cc)
		case "checkpoint set":
			_, err = workerapp.CheckpointSet(ctx, cc)
		default:
			_, err = workerapp.CheckpointReset(ctx, cc)
		}
	case "wait":
		wc.NATS, wc.Journal, wc.Bucket, wc.GroupBucket, wc.Log = natsf, *journal, *bucket, *groupBucket, log
		err = workerapp.Wait(ctx, wc)
	}
	return exitCode(err)
}

func exitCode(err error) int {
	var natsErr *cli.NATSError
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return cli.ExitOK
	case errors.Is(err, cli.ErrUsage), errors.Is(err, engine.ErrInvalidConfig), errors.Is(err, fleet.ErrGroupMismatch):
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
		return cli.ExitUsage
	case errors.As(err, &natsErr):
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
		return cli.ExitNoNATS
	case errors.Is(err, workerapp.ErrWaitTimeout):
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
		return workerapp.ExitTimeout
	default:
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
		return cli.ExitFailure
	}
}
