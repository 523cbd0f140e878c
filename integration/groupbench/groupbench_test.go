package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the harness's own children.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "writer" || os.Args[1] == "member") {
		os.Exit(mainErr(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestTinyRun runs every system through both phases at a tiny size and
// checks counts, never speed: every event handled, batfleet without
// repeats on graceful moves and in per-entity order, every kill counted.
// It starts real server and member processes (this test binary is their
// executable), so it takes about two minutes; -short skips it.
func TestTinyRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and member processes")
	}
	cfg := quickConfig()
	cfg.Events, cfg.Entities, cfg.Members = 3_000, 200, []int{1, 2}
	cfg.ChurnMembers, cfg.Rate, cfg.Kills, cfg.Graceful = 2, 500, 1, 1
	cfg.Warmup, cfg.FailWait, cfg.Settle = time.Second, 5*time.Second, 2*time.Second
	cfg.Root = t.TempDir()
	var log strings.Builder
	res, err := run(context.Background(), cfg, &log)
	t.Log(log.String())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(res.scaling), len(cfg.Systems)*len(cfg.Members); got != want {
		t.Fatalf("scaling results: %d, want %d", got, want)
	}
	for _, s := range res.scaling {
		if s.events != cfg.Events {
			t.Errorf("scaling %s N=%d: %d events handled, want %d", s.sys, s.n, s.events, cfg.Events)
		}
		if s.sys == sysBatfleet && s.orderViol != 0 {
			t.Errorf("scaling batfleet N=%d: %d events out of per-entity order", s.n, s.orderViol)
		}
	}
	for _, c := range res.churn {
		if c.produced == 0 || c.distinct != int(c.produced) {
			t.Errorf("churn %s: %d of %d events handled", c.sys, c.distinct, c.produced)
		}
		if c.kills != cfg.Kills {
			t.Errorf("churn %s: %d kills, want %d", c.sys, c.kills, cfg.Kills)
		}
		if c.sys == sysBatfleet {
			if c.orderViol != 0 {
				t.Errorf("churn batfleet: %d events out of per-entity order", c.orderViol)
			}
			if c.fig.unresumed != 0 {
				t.Errorf("churn batfleet: %d partitions never resumed after a kill", c.fig.unresumed)
			}
		}
	}
	md := res.markdown()
	for _, want := range []string{"### Scaling", "### Failover", "### Targets"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
