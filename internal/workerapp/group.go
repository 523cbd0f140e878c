package workerapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/kvckpt"
)

// groupFlags maps GroupConfig fields to the flags that set them.
var groupFlags = map[string]string{
	"Journal": "--journal", "Name": "--group", "Region": "--region", "Partitions": "--partitions",
	"Session": "--session", "Heartbeat": "--session", "MemberID": "--id", "Bucket": "--group-bucket",
}

// groupFlagErrors validates a member's config and reports its problems
// by flag name, as a usage error.
func groupFlagErrors(c fleet.GroupConfig) error {
	err := c.Validate()
	if err == nil {
		return nil
	}
	var all []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	} else {
		all = []error{err}
	}
	var msgs []string
	for _, e := range all {
		var ce *engine.ConfigError
		if errors.As(e, &ce) {
			flag := groupFlags[ce.Field]
			if flag == "--session" && ce.Field == "Heartbeat" {
				msgs = append(msgs, "--session: too short for a heartbeat of a third of it")
				continue
			}
			msgs = append(msgs, fmt.Sprintf("%s: %s", flag, ce.Rule))
			continue
		}
		msgs = append(msgs, e.Error())
	}
	return cli.Usagef("%s", strings.Join(msgs, "; "))
}

// runMember runs `worker run --group`: a member of the group until ctx is
// cancelled (a graceful leave: every partition's batch in hand is handled,
// committed and released) or it fails.
func runMember(ctx context.Context, cfg RunConfig, gcfg fleet.GroupConfig, nc *nats.Conn, client *fleet.Client,
	ckpts *kvckpt.Store, js jetstream.JetStream, h delivery.Handler, reg *cli.Registry) error {
	log := cfg.Log
	var m *fleet.Member
	err := rideOut(ctx, "join the group", cfg.CheckpointOutage, log, func() (err error) {
		m, err = fleet.JoinGroup(ctx, client, ckpts, js, gcfg, h)
		return err
	})
	if err != nil {
		return err
	}
	if cfg.HTTP != "" {
		registerMemberMetrics(reg, m, client, gcfg.Region)
		// Liveness never follows NATS (a NATS blip must not restart a
		// fleet); readiness does, and self-fencing.
		live := func() error {
			select {
			case <-m.Done():
				return errors.New("member left the group")
			default:
			}
			return nil
		}
		hs, err := cli.StartProbes(cfg.HTTP, reg, cli.Probes{Live: live, Ready: func() error {
			if err := live(); err != nil {
				return err
			}
			if !nc.IsConnected() {
				return errors.New("not connected to NATS")
			}
			if m.Stats().Fenced {
				return errors.New("self-fenced: heartbeats are not landing")
			}
			return nil
		}}, log)
		if err != nil {
			m.Stop()
			_ = m.Join()
			return err
		}
		defer hs.Stop()
	}
	log.Info("group member running", "journal", cfg.Journal, "group", gcfg.Name, "member", m.ID(),
		"region", gcfg.Region.Spec(), "partitions", m.PartitionCount(),
		"retry", gcfg.Worker.Retry.String(), "on-poison", onPoison(gcfg.Worker.Parked != nil))
	err = m.Join()
	st := m.Stats()
	log.Info("group member stopped", "claims", st.Claims, "releases", st.Releases, "error", err)
	return err
}

func registerMemberMetrics(reg *cli.Registry, m *fleet.Member, c *fleet.Client, region engine.Region) {
	reg.Gauge("batfleet_group_partitions_owned", "Partitions this member runs.", func() float64 { return float64(len(m.Stats().Owned)) })
	reg.Gauge("batfleet_group_unowned_partitions", "Partitions no live member runs, in this member's view.", func() float64 { return float64(m.Stats().Unowned) })
	reg.Counter("batfleet_group_rebalances_total", "Changes of the target assignment this member has seen.", func() float64 { return float64(m.Stats().Rebalances) })
	reg.Counter("batfleet_group_claims_total", "Partitions this member claimed.", func() float64 { return float64(m.Stats().Claims) })
	reg.Counter("batfleet_group_releases_total", "Partitions this member released to another.", func() float64 { return float64(m.Stats().Releases) })
	reg.Counter("batfleet_group_refused_commits_total", "Commits refused because another member had claimed the partition (a zombie's).", func() float64 {
		return float64(m.Stats().RefusedCommits)
	})
	reg.Gauge("batfleet_group_fenced", "1 while the member has stopped handling because its heartbeats do not land.", func() float64 {
		if m.Stats().Fenced {
			return 1
		}
		return 0
	})
	reg.Counter("batfleet_group_fences_total", "Times the member fenced itself: stopped handling because its heartbeats did not land.", func() float64 {
		return float64(m.Stats().Fences)
	})
	label := func(p fleet.PartitionStats) [][2]string {
		return [][2]string{{"partition", strconv.Itoa(int(p.Index))}, {"member", m.ID()}}
	}
	perPart := func(f func(fleet.PartitionStats) float64) func() []cli.Sample {
		return func() []cli.Sample {
			var out []cli.Sample
			for _, p := range m.Partitions() {
				out = append(out, cli.Sample{Labels: label(p), Value: f(p)})
			}
			return out
		}
	}
	reg.CounterVec("batfleet_group_partition_events_total", "Entries of the partition handed to the handler by this member.", perPart(func(p fleet.PartitionStats) float64 { return float64(p.Worker.Events) }))
	reg.CounterVec("batfleet_group_partition_handler_failures_total", "Handler calls of the partition that failed, under this member.", perPart(func(p fleet.PartitionStats) float64 { return float64(p.Worker.Failures) }))
	reg.CounterVec("batfleet_group_partition_handler_retries_total", "Handler calls of the partition that retried entries after a failure, under this member.", perPart(func(p fleet.PartitionStats) float64 { return float64(p.Worker.Retries) }))
	reg.CounterVec("batfleet_group_partition_replayed_entries_total", "Parked entries of the partition handed back by replays, under this member.", perPart(func(p fleet.PartitionStats) float64 { return float64(p.Worker.Replayed) }))
	reg.GaugeVec("batfleet_group_partition_parked_entities", "Entities of the partition parked now.", perPart(func(p fleet.PartitionStats) float64 { return float64(p.Worker.ParkedEntities) }))
	reg.GaugeVec("batfleet_group_partition_parked_entries", "Entries of the partition's parked entities parked now.", perPart(func(p fleet.PartitionStats) float64 { return float64(p.Worker.ParkedEntries) }))
	reg.GaugeVec("batfleet_group_partition_epoch", "Owner epoch under which this member runs the partition.", perPart(func(p fleet.PartitionStats) float64 { return float64(p.Epoch) }))
	reg.GaugeVec("batfleet_group_partition_committed_position", "Last committed sequence of the partition.", perPart(func(p fleet.PartitionStats) float64 { return float64(p.Worker.Committed) }))
	lag := &lagCounter{client: c}
	count := m.PartitionCount()
	reg.GaugeVec("batfleet_group_partition_lag_events", "Events of the partition after its committed position, counted by the writer (what worker group describe shows); left out until the writer has answered.", func() []cli.Sample {
		var out []cli.Sample
		for _, p := range m.Partitions() {
			part := region.WithPartition(engine.Partition{Index: p.Index, Count: uint16(count)})
			n := lag.count(part, p.Worker.Committed, p.Worker.CommittedStarted)
			if !math.IsNaN(n) {
				out = append(out, cli.Sample{Labels: label(p), Value: n})
			}
		}
		return out
	})
}

// GroupConfig configures `worker group ls` and `worker group describe`.
type GroupConfig struct {
	NATS        cli.NATSFlags
	Journal     string
	Bucket      string // checkpoints
	GroupBucket string
	Name        string // describe: the group
	JSON        bool
	Out         io.Writer
	Log         hclog.Logger
}

// GroupDescription is `worker group describe` in JSON: the group's
// records, with each partition's lag in events.
type GroupDescription struct {
	fleet.GroupInfo
	RegionSpec string              `json:"region_spec"` // Region as --region takes it
	Parts      []GroupPartitionRow `json:"parts"`
}

// GroupPartitionRow is a partition's checkpoint with its lag.
type GroupPartitionRow struct {
	fleet.GroupPartitionInfo
	LagEvents int64 `json:"lag_events"` // matching events after the position, counted by the writer (-1: unknown)
}

// GroupList prints the journal's groups: name, region, partitions, live
// members and partitions without an owner.
func GroupList(ctx context.Context, cfg GroupConfig) (_ []fleet.GroupInfo, err error) {
	nc, err := cfg.NATS.Connect(cfg.NATS.URL, "batfleet-worker-group", cfg.Log)
	if err != nil {
		return nil, &cli.NATSError{Err: err}
	}
	defer nc.Close()
	ctx, stopWatch := fleet.WatchRefusals(ctx, nc)
	defer stopWatch()
	defer func() { err = fleet.ExplainRefusal(nc, err) }()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	// Read-only: a bucket that does not exist is an error, never created.
	if err := checkGroupBucket(ctx, js, cfg.GroupBucket); err != nil {
		return nil, err
	}
	names, err := fleet.ListGroups(ctx, js, cfg.Journal, cfg.GroupBucket)
	if err != nil {
		return nil, err
	}
	var store *kvckpt.Store
	if len(names) > 0 {
		if store, err = bindCheckpoints(ctx, js, cfg.Journal, cfg.Bucket); err != nil {
			return nil, err
		}
	}
	infos := []fleet.GroupInfo{}
	for _, name := range names {
		info, err := fleet.DescribeGroup(ctx, js, store, cfg.Journal, cfg.GroupBucket, name)
		if errors.Is(err, fleet.ErrGroupNotFound) {
			continue // deleted since it was listed
		}
		if err != nil {
			return nil, err
		}
		infos = append(infos, info)
	}
	if cfg.JSON {
		enc := json.NewEncoder(cfg.Out)
		enc.SetIndent("", "  ")
		return infos, enc.Encode(infos)
	}
	tw := tabwriter.NewWriter(cfg.Out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tREGION\tPARTITIONS\tLIVE MEMBERS\tUNOWNED")
	for _, g := range infos {
		live, unowned := 0, 0
		for _, m := range g.Members {
			if m.Live {
				live++
			}
		}
		for _, p := range g.Parts {
			if p.Owner == "" {
				unowned++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", g.Name, regionSpec(g.Region), g.Partitions, live, unowned)
	}
	if len(infos) == 0 {
		fmt.Fprintln(tw, "(no groups)")
	}
	return infos, tw.Flush()
}

// GroupDescribe prints one group: its members (id, partitions, heartbeat
// age) and its partitions (owner, epoch, position, lag in events).
func GroupDescribe(ctx context.Context, cfg GroupConfig) (d GroupDescription, err error) {
	if err := engine.ValidateJournalName(cfg.Name); err != nil {
		return d, cli.Usagef("group name %q: must be 1 to 64 characters of [A-Za-z0-9_-]", cfg.Name)
	}
	nc, err := cfg.NATS.Connect(cfg.NATS.URL, "batfleet-worker-group", cfg.Log)
	if err != nil {
		return d, &cli.NATSError{Err: err}
	}
	defer nc.Close()
	ctx, stopWatch := fleet.WatchRefusals(ctx, nc)
	defer stopWatch()
	defer func() { err = fleet.ExplainRefusal(nc, err) }()
	js, err := jetstream.New(nc)
	if err != nil {
		return d, err
	}
	// Read-only: a bucket that does not exist is an error, never created.
	if err := checkGroupBucket(ctx, js, cfg.GroupBucket); err != nil {
		return d, err
	}
	store, err := bindCheckpoints(ctx, js, cfg.Journal, cfg.Bucket)
	if err != nil {
		return d, err
	}
	info, err := fleet.DescribeGroup(ctx, js, store, cfg.Journal, cfg.GroupBucket, cfg.Name)
	if err != nil {
		return d, err
	}
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: cfg.Journal, Logger: cfg.Log})
	if err != nil {
		return d, err
	}
	defer client.Close()
	d.GroupInfo, d.RegionSpec = info, regionSpec(info.Region)
	for _, p := range info.Parts {
		row := GroupPartitionRow{GroupPartitionInfo: p, LagEvents: -1}
		if p.Problem == "" {
			region, err := engine.ParseRegionIdentity(p.Region)
			if err == nil {
				if lag, err := client.Count(ctx, region, p.Position, p.Started); err == nil {
					row.LagEvents = int64(min(lag.Events, math.MaxInt64))
				}
			}
		}
		d.Parts = append(d.Parts, row)
	}
	if cfg.JSON {
		enc := json.NewEncoder(cfg.Out)
		enc.SetIndent("", "  ")
		return d, enc.Encode(d)
	}
	tw := tabwriter.NewWriter(cfg.Out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "group %s of journal %s: region %s, %d partitions, created %s\n\n",
		info.Name, info.Journal, regionSpec(info.Region), info.Partitions, info.Created.Format(time.RFC3339))
	fmt.Fprintln(tw, "MEMBER\tPARTITIONS\tLAST HEARTBEAT\tSESSION\tLIVE")
	for _, m := range info.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s ago\t%s\t%v\n", m.ID, partList(m.Partitions), m.HeartbeatAge.Round(time.Millisecond), m.Session, m.Live)
	}
	if len(info.Members) == 0 {
		fmt.Fprintln(tw, "(no members)")
	}
	fmt.Fprintln(tw, "\nPARTITION\tOWNER\tEPOCH\tPOSITION\tLAG EVENTS\tPROBLEM")
	for _, p := range d.Parts {
		pos, lag, owner := "-", "?", p.Owner
		if p.Started {
			pos = strconv.FormatUint(p.Position, 10)
		}
		if p.LagEvents >= 0 {
			lag = strconv.FormatInt(p.LagEvents, 10)
		}
		if owner == "" {
			owner = "(none)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\n", p.Index, owner, p.Epoch, pos, lag, p.Problem)
	}
	return d, tw.Flush()
}

// partList prints partitions compactly: "0-3,7".
func partList(ps []uint16) string {
	if len(ps) == 0 {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", ps[i], ps[j])
		} else {
			fmt.Fprintf(&b, "%d", ps[i])
		}
		i = j + 1
	}
	return b.String()
}
