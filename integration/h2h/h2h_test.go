package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// testProgress forwards the harness's progress lines to the test log.
type testProgress struct{ t *testing.T }

func (p testProgress) Write(b []byte) (int, error) {
	p.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestQuickRun runs the harness's core in --quick mode (one round of every
// measurement, both systems, and the sync-always record) so CI keeps it
// working. It asserts what each run handled, never how fast: every
// measured run must have handled each of its events exactly once, with the
// workload's byte sum, and every figure must have been produced.
func TestQuickRun(t *testing.T) {
	cfg := quickConfig()
	cfg.Root = t.TempDir()
	// Generous bounds, since only what the runs handled is asserted: on a
	// loaded machine a JetStream run can stall for tens of seconds, more
	// than once (a message sent to a Fetch that already gave up waits
	// for the consumer's 30 s AckWait; a lost Consume pull request for
	// two missed heartbeats). Runs take seconds otherwise; the whole
	// bound stays under go test's default timeout, so a hang is reported
	// here, with what was handled.
	cfg.RunTimeout = 3 * time.Minute
	if raceEnabled {
		// Byte-heavy NATS traffic is 8–11× slower under the race detector.
		cfg.Events, cfg.WakeSamples, cfg.SyncEvents = 10_000, 100, 2_000
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := run(ctx, cfg, testProgress{t})
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	// 4 batfleet runs + 12 JetStream runs + 2 wake series per round, then
	// the record: 4 JetStream and 2 batfleet runs.
	if want := 4 + 12 + 2 + 4 + 2; len(res.checks) != want {
		t.Fatalf("%d measured runs, want %d", len(res.checks), want)
	}
	for i, c := range res.checks {
		if len(c.Notes) > 0 || c.MaxStall >= time.Second {
			t.Logf("%s: longest stall %v, %v", c.Label, c.MaxStall, c.Notes)
		}
		want := int64(cfg.Events)
		switch {
		case strings.Contains(c.Label, "wake"):
			want = int64(cfg.WakeSamples)
		case i >= 18: // the sync-always record
			want = int64(cfg.SyncEvents)
		}
		if c.Expected != want {
			t.Errorf("%s: expected %d events, want %d", c.Label, c.Expected, want)
		}
		if c.Handled != c.Expected || c.Distinct != c.Expected || c.Missing != 0 || c.Duplicates != 0 || c.OutOfRange != 0 || !c.SumOK {
			t.Errorf("%s: handled %d of %d (distinct %d, missing %d, duplicates %d, foreign %d, byte sum ok %v)",
				c.Label, c.Handled, c.Expected, c.Distinct, c.Missing, c.Duplicates, c.OutOfRange, c.SumOK)
		}
	}

	keys := []string{"bf/append", "js/publish", "bf/wake/p50", "bf/wake/p99", "js/wake/p50", "js/wake/p99"}
	for _, w := range []int{1, 4} {
		for _, b := range cfg.Batches {
			keys = append(keys, fmt.Sprintf("bf/%dw/b%d", w, b))
		}
	}
	for _, v := range jsVariants(cfg.Batches) {
		keys = append(keys, v.key())
	}
	for _, k := range keys {
		s, ok := res.series[k]
		if !ok || len(s.Values) != cfg.Rounds {
			t.Errorf("figure %s: missing or not one value per round (%v)", k, s)
			continue
		}
		if s.Unit == "events/s" && s.Values[0] <= 0 {
			t.Errorf("figure %s = %v, want a positive rate", k, s.Values[0])
		}
	}
	if len(res.record) != 1+4+1+2 {
		t.Errorf("%d sync-always figures, want 8", len(res.record))
	}
	res.command = "go run ./integration/h2h --quick"
	md := res.markdown()
	for _, want := range []string{"Ratios: batfleet ÷ JetStream", "1 worker, batch 256 ÷ best 1-puller AckAll", "sync_interval: always", "Durability settings"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
