package workerapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/hashicorp/go-hclog"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/internal/natstest"
	"github.com/batfleet/batfleet/kvckpt"
)

func TestGroupFlagErrorsNameTheFlag(t *testing.T) {
	base := fleet.GroupConfig{Name: "g", Region: engine.RegionAll(), MemberID: "m"}
	for _, tc := range []struct {
		mod  func(*fleet.GroupConfig)
		want []string
	}{
		{func(c *fleet.GroupConfig) { c.Name = "bad name" }, []string{"--group:", "[A-Za-z0-9_-]"}},
		{func(c *fleet.GroupConfig) { c.Partitions = 12 }, []string{"--partitions:", "power of two", "got 12"}},
		{func(c *fleet.GroupConfig) { c.Partitions = 2048 }, []string{"--partitions:", "1024"}},
		{func(c *fleet.GroupConfig) { c.Session = -time.Second }, []string{"--session:", "> 0"}},
		{func(c *fleet.GroupConfig) { c.MemberID = "bad\x00id" }, []string{"--id:"}},
		{func(c *fleet.GroupConfig) { c.Name, c.Partitions = "", 3 }, []string{"--group:", "--partitions:"}},
		{func(c *fleet.GroupConfig) {
			c.Region = engine.RegionAll().WithPartition(engine.Partition{Index: 0, Count: 2})
		}, []string{"--region:", "partition"}},
	} {
		cfg := base
		tc.mod(&cfg)
		err := groupFlagErrors(cfg)
		if !errors.Is(err, cli.ErrUsage) {
			t.Fatalf("%+v: %v, want a usage error", cfg, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%+v: %q does not say %q", cfg, err, w)
			}
		}
	}
	if err := groupFlagErrors(base); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

func TestRunGroupRefusesCheckpointToo(t *testing.T) {
	err := Run(context.Background(), RunConfig{Group: "g", Checkpoint: "c", Out: "-", Batch: 1, Idle: time.Second,
		Restart: "once", Attempts: 3, RetryBackoff: time.Millisecond, ExecTimeout: time.Second, Log: hclog.NewNullLogger()})
	if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "--group excludes --checkpoint") {
		t.Fatalf("Run: %v, want a usage error naming --group and --checkpoint", err)
	}
}

func TestPartList(t *testing.T) {
	for _, tc := range []struct {
		in   []uint16
		want string
	}{{nil, "-"}, {[]uint16{3}, "3"}, {[]uint16{0, 1, 2, 3}, "0-3"}, {[]uint16{0, 1, 3, 5, 6}, "0-1,3,5-6"}} {
		if got := partList(tc.in); got != tc.want {
			t.Fatalf("partList(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestGroupListAndDescribe runs a writer and a group of two members in
// process and reads them back as `worker group ls` and `worker group
// describe` do, as tables and as JSON.
func TestGroupListAndDescribe(t *testing.T) {
	o := natstest.Options(t.TempDir())
	ns := natstest.StartServer(t, o)
	nc, js := natstest.Connect(t, ns)
	store, err := journal.Open(t.TempDir(), journal.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	w, err := fleet.NewWriter(nc, store, fleet.WriterConfig{Journal: "main"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Close(ctx)
	})
	const events = 300
	for i := range events {
		ev := engine.Event{Coordinate: engine.MustCoordinate(fmt.Sprintf("acct:%d", i%30), "s"), Kind: engine.KindData}
		if _, err := store.Append(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: "main"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	ckpts, err := kvckpt.Open(context.Background(), js, kvckpt.Config{Journal: "main"})
	if err != nil {
		t.Fatal(err)
	}
	h := func(context.Context, []engine.Entry, *delivery.Delivery) delivery.Action { return delivery.Continue }
	var members []*fleet.Member
	for _, id := range []string{"m1", "m2"} {
		m, err := fleet.JoinGroup(context.Background(), client, ckpts, js, fleet.GroupConfig{
			Name: "projections", Region: engine.RegionEntity("acct"), Partitions: 4, MemberID: id,
			Session: time.Second, Heartbeat: 250 * time.Millisecond,
		}, h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.StopAndJoin() })
		members = append(members, m)
	}
	natsf := cli.NATSFlags{URL: ns.ClientURL()}
	cfg := GroupConfig{NATS: natsf, Journal: "main", Bucket: kvckpt.DefaultBucket, GroupBucket: fleet.DefaultGroupBucket,
		Name: "projections", Log: hclog.NewNullLogger()}

	// Converged: each member runs 2 partitions and nothing lags.
	deadline := time.Now().Add(20 * time.Second)
	var d GroupDescription
	for {
		var out bytes.Buffer
		c := cfg
		c.JSON, c.Out = true, &out
		if d, err = GroupDescribe(context.Background(), c); err != nil {
			t.Fatalf("describe: %v", err)
		}
		var decoded GroupDescription
		if err := json.Unmarshal(out.Bytes(), &decoded); err != nil {
			t.Fatalf("describe --json printed %q: %v", out.String(), err)
		}
		if converged(decoded) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group did not converge: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling the group's state
	}
	if d.Region != engine.RegionEntity("acct").Identity() || d.Partitions != 4 || len(d.Members) != 2 {
		t.Fatalf("described %+v", d.GroupInfo)
	}

	// A member's metrics, as `worker run --group --http` serves them.
	reg := cli.NewRegistry("worker", "test")
	registerMemberMetrics(reg, members[0], client, engine.RegionEntity("acct"))
	var text strings.Builder
	if err := reg.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nbatfleet_group_partitions_owned 2\n", "\nbatfleet_group_fenced 0\n", "\nbatfleet_group_fences_total 0\n",
		"\nbatfleet_group_unowned_partitions 0\n", `batfleet_group_partition_epoch{member="m1",partition="`} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("member metrics lack %q:\n%s", want, grep(text.String(), "batfleet_group"))
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if problems, err := promlint.NewWithMetricFamilies(families).Lint(); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}

	var table bytes.Buffer
	c := cfg
	c.Out = &table
	if _, err := GroupDescribe(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"group projections of journal main", "MEMBER", "m1", "m2", "PARTITION", "LAG EVENTS"} {
		if !strings.Contains(table.String(), want) {
			t.Fatalf("describe table lacks %q:\n%s", want, table.String())
		}
	}
	table.Reset()
	infos, err := GroupList(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Name != "projections" || !strings.Contains(table.String(), "projections") {
		t.Fatalf("ls: %+v\n%s", infos, table.String())
	}

	c.Name = "missing"
	if _, err := GroupDescribe(context.Background(), c); !errors.Is(err, fleet.ErrGroupNotFound) {
		t.Fatalf("describe of a missing group: %v, want ErrGroupNotFound", err)
	}
	c.Name = "bad name"
	if _, err := GroupDescribe(context.Background(), c); !errors.Is(err, cli.ErrUsage) {
		t.Fatalf("describe of a bad name: %v, want a usage error", err)
	}
	for _, m := range members {
		if err := m.StopAndJoin(); err != nil {
			t.Fatalf("leave: %v", err)
		}
	}
}

// converged reports whether both members run two partitions each and
// every partition is owned, caught up, at epoch ≥ 1.
func converged(d GroupDescription) bool {
	if len(d.Members) != 2 || len(d.Parts) != 4 {
		return false
	}
	for _, m := range d.Members {
		if !m.Live || len(m.Partitions) != 2 {
			return false
		}
	}
	for _, p := range d.Parts {
		if p.Owner == "" || p.Epoch == 0 || p.LagEvents != 0 || p.Problem != "" {
			return false
		}
	}
	return true
}
