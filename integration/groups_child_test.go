package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/kvckpt"
)

// The group-member role of the helper process (TestHelperProcess): one
// consumer-group member, for the multi-process group tests.
const (
	helperGroupEnv      = "BATFLEET_HELPER_GROUP"      // group name
	helperMemberEnv     = "BATFLEET_HELPER_MEMBER"     // member id
	helperPartsEnv      = "BATFLEET_HELPER_PARTITIONS" // P
	helperSessionEnv    = "BATFLEET_HELPER_SESSION"    // session, a time.Duration
	helperGroupScopeEnv = "BATFLEET_HELPER_SCOPE"      // the group's region: this scope
	helperLogLevelEnv   = "BATFLEET_HELPER_LOG_LEVEL"  // of the member's log on stderr (default info)
)

// helperGroupMember joins the group of its environment (fleet.JoinGroup,
// checkpoints in the default kvckpt bucket, batch size helperBatchEnv)
// and prints "joined <id>", then one line per batch handed to its
// handler, written and flushed before the handler returns, so before the
// batch's commit:
//
//	b <partition> <epoch> <unix-nanos at handler entry> <n> <seq>:<entity> … .
//
// The trailing "." marks a whole line (a process killed mid-write leaves
// at most a cut last line, of a batch it never committed). It leaves the
// group gracefully when its stdin closes or on SIGTERM, and then prints
// "left <stats> <Join result>".
func helperGroupMember() error {
	parts, err := strconv.Atoi(os.Getenv(helperPartsEnv))
	if err != nil {
		return fmt.Errorf("%s: %w", helperPartsEnv, err)
	}
	session, err := time.ParseDuration(os.Getenv(helperSessionEnv))
	if err != nil {
		return fmt.Errorf("%s: %w", helperSessionEnv, err)
	}
	batch, err := strconv.Atoi(os.Getenv(helperBatchEnv))
	if err != nil {
		return fmt.Errorf("%s: %w", helperBatchEnv, err)
	}
	id := os.Getenv(helperMemberEnv)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-stdinClosed()
		stop()
	}()

	nc, err := nats.Connect(os.Getenv(helperNATSEnv), nats.Name("helper-member-"+id), nats.Timeout(5*time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: journalName})
	if err != nil {
		return err
	}
	defer client.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ck, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: journalName})
	if err != nil {
		return err
	}
	level := hclog.LevelFromString(os.Getenv(helperLogLevelEnv))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: id, Level: level, Output: os.Stderr, TimeFormat: "15:04:05.000"})

	var mu sync.Mutex // partitions' handlers run concurrently
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	handler := func(_ context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
		at := time.Now().UnixNano()
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, "b %d %d %d %d", d.Partition.Index, d.Epoch, at, len(b))
		for _, e := range b {
			fmt.Fprintf(out, " %d:%s", e.Seq, e.Coordinate.Entity())
		}
		_, _ = out.WriteString(" .\n")
		if err := out.Flush(); err != nil {
			// The parent is gone: nothing may be committed unlogged.
			panic(fmt.Sprintf("handled-entries log: %v", err))
		}
		return delivery.Continue
	}

	wcfg := delivery.DefaultWorkerConfig()
	wcfg.BatchSize, wcfg.IdleTimeout = batch, fleet.DefaultIdleTimeout
	m, err := fleet.JoinGroup(ctx, client, ck, js, fleet.GroupConfig{
		Journal:    journalName,
		Name:       os.Getenv(helperGroupEnv),
		Region:     engine.RegionAll().WithScope(os.Getenv(helperGroupScopeEnv)),
		Partitions: parts,
		Session:    session,
		MemberID:   id,
		Worker:     wcfg,
		Logger:     logger,
	}, handler)
	if err != nil {
		return err
	}
	mu.Lock()
	fmt.Fprintf(out, "joined %s\n", id)
	_ = out.Flush()
	mu.Unlock()
	jerr := m.Join()
	st := m.Stats()
	mu.Lock()
	fmt.Fprintf(out, "left claims=%d releases=%d refused=%d rebalances=%d %v\n", st.Claims, st.Releases, st.RefusedCommits, st.Rebalances, jerr)
	_ = out.Flush()
	mu.Unlock()
	return jerr
}
