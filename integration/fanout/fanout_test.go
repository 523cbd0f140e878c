package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the harness's child processes
// ("writer", "idle"), as the harness re-executes itself.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "writer" || os.Args[1] == "idle") {
		os.Exit(mainErr(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestMarkdown renders made-up results: every configuration row and the
// targets against W=0 and JetStream.
func TestMarkdown(t *testing.T) {
	cfg := defaultConfig()
	cfg.Rounds = 3
	res := newResults(cfg)
	res.started, res.finished = time.Now(), time.Now().Add(time.Minute)
	for round := 0; round < cfg.Rounds; round++ {
		for _, sys := range cfg.Systems {
			for _, sh := range cfg.shapes() {
				w := sh.W
				res.addIdle(sys, sh, idleResult{Elapsed: time.Second, ServerCPU: 1})
				for _, rate := range cfg.Rates {
					res.addPhase(sys, sh, rate, phaseResult{Rate: rate, Events: rate * 10, Achieved: float64(rate), ServerCPU: 50 + float64(w)/100,
						Pulls: 1, IdlePulls: float64(w) / 30 / float64(rate), IdlePullsPerSec: float64(w) / 30, P50: 100 * time.Microsecond, P99: 800 * time.Microsecond})
				}
			}
		}
	}
	res.command = "go run ./integration/fanout"
	md := res.markdown()
	for _, want := range []string{
		"| batfleet | 1,000 | 5,000 | 5,000 (5,000–5,000) | 60.0 (60.0–60.0) |",
		"writer CPU per append ≤ 1.5× its W=0 figure | 60.0 vs 50.0 µs: 1.20×",
		"writer CPU per append ≤ JetStream server's (same W) | 60.0 vs 60.0 µs: 1.00× (per round 1.00–1.00×) | yes",
		"| 1,000 | 500 | non-matching pulls per append ≤ 0.01 | 0.0667",
		"| 1,000 (own conns) | 5,000 | busy worker wake p99 ≤ 1 ms | 0.800 ms",
		"busy worker wake p99 within 10 % of its W=0 figure | 0.800 vs 0.800 ms: 1.00×",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// TestQuickRun runs the harness end to end in a tiny configuration (both
// systems, W ∈ {0, 10}, 1,000 appends/s, half-second windows) and checks that
// every figure was produced; the run itself fails on any event not
// handled exactly once. It asserts nothing about speed.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	cfg := quickConfig()
	cfg.Root = t.TempDir()
	cfg.Ws, cfg.Rates = []int{0, 10}, []int{1000}
	cfg.Window, cfg.Warmup, cfg.IdleFor, cfg.Stagger, cfg.Settle = 500*time.Millisecond, 100*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	cfg.InFlight = 16
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := run(ctx, cfg, testLog{t})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, sys := range cfg.Systems {
		for _, sh := range cfg.shapes() {
			if len(res.idles[key{sys, sh, 0}]) != 1 {
				t.Errorf("%s W=%s: no idle figures", sys, sh)
			}
			for _, rate := range cfg.Rates {
				ps := res.phases[key{sys, sh, rate}]
				if len(ps) != 1 || ps[0].Events != rate/2 || ps[0].Achieved <= 0 {
					t.Errorf("%s W=%s R=%d: figures %+v", sys, sh, rate, ps)
				}
			}
		}
	}
	for _, n := range res.notes {
		t.Log(n)
	}
	res.command = "go test ./integration/fanout"
	if md := res.markdown(); !strings.Contains(md, "| 10 | 1,000 | writer CPU per append ≤ 1.5× its W=0 figure") {
		t.Errorf("report lacks the targets:\n%s", md)
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
