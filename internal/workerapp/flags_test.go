package workerapp

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/internal/cli"
)

func TestParseRestart(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		want    delivery.RestartPolicy
		wantMsg string
	}{
		{name: "once", spec: "once", want: delivery.RestartOnce{}},
		{name: "empty is once", spec: "", want: delivery.RestartOnce{}},
		{name: "bounded", spec: "bounded:3/1m", want: delivery.RestartBounded{MaxRestarts: 3, Within: time.Minute}},
		{name: "bounded zero", spec: "bounded:0/30s", want: delivery.RestartBounded{MaxRestarts: 0, Within: 30 * time.Second}},
		{name: "bounded compound duration", spec: "bounded:10/1h30m", want: delivery.RestartBounded{MaxRestarts: 10, Within: 90 * time.Minute}},

		{name: "unknown policy", spec: "always", wantMsg: "want once or bounded:N/DURATION"},
		{name: "bounded without count", spec: "bounded", wantMsg: "want once or bounded:N/DURATION"},
		{name: "bounded without duration", spec: "bounded:3", wantMsg: "want once or bounded:N/DURATION"},
		{name: "count not a number", spec: "bounded:x/1m", wantMsg: "N must be a whole number"},
		{name: "negative count", spec: "bounded:-1/1m", wantMsg: "N must be a whole number"},
		{name: "bad duration", spec: "bounded:3/soon", wantMsg: "DURATION must be like"},
		{name: "negative duration", spec: "bounded:3/-1m", wantMsg: "DURATION must be like"},
		{name: "duration without unit", spec: "bounded:3/60", wantMsg: "DURATION must be like"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRestart(tt.spec)
			if tt.wantMsg != "" {
				if err == nil {
					t.Fatalf("ParseRestart(%q) = %#v, want an error", tt.spec, got)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), "--restart") {
					t.Errorf("ParseRestart(%q) = %q, want it to name --restart and contain %q", tt.spec, err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRestart(%q): %v", tt.spec, err)
			}
			if got != tt.want {
				t.Errorf("ParseRestart(%q) = %#v, want %#v", tt.spec, got, tt.want)
			}
		})
	}
}

func TestParseRetry(t *testing.T) {
	tests := []struct {
		name     string
		attempts int
		backoff  time.Duration
		want     delivery.RetryPolicy
		wantMsgs []string
	}{
		{name: "defaults", attempts: 3, backoff: 100 * time.Millisecond,
			want: delivery.RetryPolicy{Attempts: 3, Base: 100 * time.Millisecond, Max: 5 * time.Second}},
		{name: "no retries", attempts: 1, backoff: 100 * time.Millisecond,
			want: delivery.RetryPolicy{Attempts: 1, Base: 100 * time.Millisecond, Max: 5 * time.Second}},
		{name: "short backoff", attempts: 5, backoff: time.Millisecond,
			want: delivery.RetryPolicy{Attempts: 5, Base: time.Millisecond, Max: 5 * time.Second}},
		{name: "backoff over the cap", attempts: 2, backoff: 10 * time.Second,
			want: delivery.RetryPolicy{Attempts: 2, Base: 10 * time.Second, Max: 10 * time.Second}},

		{name: "zero attempts", attempts: 0, backoff: time.Second, wantMsgs: []string{"--attempts 0: must be >= 1"}},
		{name: "negative attempts", attempts: -2, backoff: time.Second, wantMsgs: []string{"--attempts -2: must be >= 1"}},
		{name: "zero backoff", attempts: 3, backoff: 0, wantMsgs: []string{"--retry-backoff 0s: must be > 0"}},
		{name: "negative backoff", attempts: 3, backoff: -time.Second, wantMsgs: []string{"--retry-backoff -1s: must be > 0"}},
		{name: "both wrong", attempts: 0, backoff: 0, wantMsgs: []string{"--attempts 0", "--retry-backoff 0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRetry(tt.attempts, tt.backoff)
			if len(tt.wantMsgs) > 0 {
				if err == nil {
					t.Fatalf("ParseRetry(%d, %s) = %+v, want an error", tt.attempts, tt.backoff, got)
				}
				for _, m := range tt.wantMsgs {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("ParseRetry(%d, %s) = %q, want it to contain %q", tt.attempts, tt.backoff, err, m)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRetry(%d, %s): %v", tt.attempts, tt.backoff, err)
			}
			if got != tt.want {
				t.Errorf("ParseRetry(%d, %s) = %+v, want %+v", tt.attempts, tt.backoff, got, tt.want)
			}
			// What the flags make, the worker accepts.
			cfg := delivery.DefaultWorkerConfig()
			cfg.Retry = got
			if err := cfg.Validate(); err != nil {
				t.Errorf("the worker refuses %+v: %v", got, err)
			}
		})
	}
}

func TestParseOnPoison(t *testing.T) {
	tests := []struct {
		name     string
		spec     string
		durable  bool
		wantPark bool
		wantMsg  string
	}{
		{name: "restart", spec: "restart", wantPark: false},
		{name: "empty is restart", spec: "", wantPark: false},
		{name: "restart durable", spec: "restart", durable: true, wantPark: false},
		{name: "park durable", spec: "park", durable: true, wantPark: true},

		{name: "park in memory", spec: "park", wantMsg: "--on-poison park needs --checkpoint or --group"},
		{name: "bogus", spec: "bogus", durable: true, wantMsg: `--on-poison "bogus": want restart or park`},
		{name: "upper case", spec: "PARK", durable: true, wantMsg: `--on-poison "PARK": want restart or park`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			park, err := ParseOnPoison(tt.spec, tt.durable)
			if tt.wantMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("ParseOnPoison(%q, %v) = %v, %v; want an error containing %q", tt.spec, tt.durable, park, err, tt.wantMsg)
				}
				return
			}
			if err != nil || park != tt.wantPark {
				t.Fatalf("ParseOnPoison(%q, %v) = %v, %v; want %v", tt.spec, tt.durable, park, err, tt.wantPark)
			}
		})
	}
}

// TestRunRefusesBadPoisonFlags: Run reports bad retry and poison flags as
// one usage error naming each flag, before it connects to anything.
func TestRunRefusesBadPoisonFlags(t *testing.T) {
	base := RunConfig{Out: "-", Batch: 1, Idle: time.Second, Restart: "once", ExecTimeout: time.Second,
		Attempts: 3, RetryBackoff: 100 * time.Millisecond, OnPoison: "restart", ParkedBucket: "batfleet_parked",
		NATS: cli.NATSFlags{URL: "nats://127.0.0.1:1"}, Log: hclog.NewNullLogger()}
	tests := []struct {
		name     string
		mod      func(*RunConfig)
		wantMsgs []string
	}{
		{"attempts 0", func(c *RunConfig) { c.Attempts = 0 }, []string{"--attempts 0: must be >= 1"}},
		{"negative backoff", func(c *RunConfig) { c.RetryBackoff = -time.Millisecond }, []string{"--retry-backoff -1ms: must be > 0"}},
		{"on-poison bogus", func(c *RunConfig) { c.OnPoison = "bogus" }, []string{`--on-poison "bogus": want restart or park`}},
		{"park without a checkpoint", func(c *RunConfig) { c.OnPoison = "park" }, []string{"--on-poison park needs --checkpoint or --group"}},
		{"bad parked bucket", func(c *RunConfig) { c.OnPoison, c.Checkpoint, c.ParkedBucket = "park", "c", "a.b" },
			[]string{`--parked-bucket "a.b": must be 1 or more characters of [A-Za-z0-9_-]`}},
		{"several", func(c *RunConfig) { c.Attempts, c.OnPoison = 0, "never" }, []string{"--attempts 0", `--on-poison "never"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mod(&cfg)
			err := Run(context.Background(), cfg)
			if !errors.Is(err, cli.ErrUsage) {
				t.Fatalf("Run: %v, want a usage error", err)
			}
			for _, m := range tt.wantMsgs {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Run: %q, want it to contain %q", err, m)
				}
			}
		})
	}
}

func TestParseThrough(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    uint64
		wantMsg string
	}{
		{in: "42", want: 42},
		{in: "0", want: 0},
		{in: "18446744073709551615", want: 1<<64 - 1},
		{in: "", wantMsg: "--through is required"},
		{in: "-1", wantMsg: `--through "-1": must be a sequence number`},
		{in: "4 2", wantMsg: `--through "4 2"`},
		{in: "seq 42", wantMsg: `--through "seq 42"`},
		{in: "18446744073709551616", wantMsg: "must be a sequence number"},
	} {
		got, err := ParseThrough(tc.in)
		if tc.wantMsg != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("ParseThrough(%q) = %d, %v; want an error containing %q", tc.in, got, err, tc.wantMsg)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseThrough(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

// TestWaitAndParkedFlags: bad flags of `worker wait` and `worker parked`
// are usage errors naming the flag, found before connecting.
func TestWaitAndParkedFlags(t *testing.T) {
	nowhere := cli.NATSFlags{URL: "nats://127.0.0.1:1"}
	log := hclog.NewNullLogger()
	wait := WaitConfig{NATS: nowhere, Journal: "main", Checkpoint: "c", Through: "7", Timeout: time.Second, Log: log}
	for _, tc := range []struct {
		name     string
		mod      func(*WaitConfig)
		wantMsgs []string
	}{
		{"no target", func(c *WaitConfig) { c.Checkpoint = "" }, []string{"give exactly one of --checkpoint ID or --group NAME"}},
		{"two targets", func(c *WaitConfig) { c.Group = "g" }, []string{"give exactly one of --checkpoint ID or --group NAME"}},
		{"bad checkpoint", func(c *WaitConfig) { c.Checkpoint = "a/b" }, []string{"--checkpoint: "}},
		{"bad group", func(c *WaitConfig) { c.Checkpoint, c.Group = "", "a b" }, []string{`--group "a b"`}},
		{"no through", func(c *WaitConfig) { c.Through = "" }, []string{"--through is required"}},
		{"zero timeout", func(c *WaitConfig) { c.Timeout = 0 }, []string{"--timeout 0s: must be > 0"}},
		{"several", func(c *WaitConfig) { c.Through, c.Timeout = "x", -time.Second }, []string{`--through "x"`, "--timeout -1s"}},
	} {
		t.Run("wait "+tc.name, func(t *testing.T) {
			cfg := wait
			tc.mod(&cfg)
			err := Wait(context.Background(), cfg)
			if !errors.Is(err, cli.ErrUsage) {
				t.Fatalf("Wait: %v, want a usage error", err)
			}
			for _, m := range tc.wantMsgs {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Wait: %q, want it to contain %q", err, m)
				}
			}
		})
	}
	parked := ParkedConfig{NATS: nowhere, Journal: "main", ParkedBucket: "batfleet_parked", Checkpoint: "c", Entity: "e", Log: log}
	for _, tc := range []struct {
		name    string
		mod     func(*ParkedConfig)
		run     func(context.Context, ParkedConfig) error
		wantMsg string
	}{
		{"ls without target", func(c *ParkedConfig) { c.Checkpoint = "" }, parkedLs, "give exactly one of --checkpoint ID or --group NAME"},
		{"ls with both", func(c *ParkedConfig) { c.Group = "g" }, parkedLs, "give exactly one of --checkpoint ID or --group NAME"},
		{"ls bad bucket", func(c *ParkedConfig) { c.ParkedBucket = "" }, parkedLs, `--parked-bucket "": must be`},
		{"replay without entity", func(c *ParkedConfig) { c.Entity = "" }, parkedReplay, "--entity is required: the parked entity to replay"},
		{"drop without entity", func(c *ParkedConfig) { c.Entity = "" }, parkedDrop, "--entity is required: the parked entity to drop"},
		{"drop bad checkpoint", func(c *ParkedConfig) { c.Checkpoint = "a/b" }, parkedDrop, "--checkpoint: "},
	} {
		t.Run("parked "+tc.name, func(t *testing.T) {
			cfg := parked
			tc.mod(&cfg)
			err := tc.run(context.Background(), cfg)
			if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("%v, want a usage error containing %q", err, tc.wantMsg)
			}
		})
	}
}

func parkedLs(ctx context.Context, c ParkedConfig) error {
	_, err := ParkedList(ctx, c)
	return err
}

func parkedReplay(ctx context.Context, c ParkedConfig) error {
	_, err := ParkedReplay(ctx, c)
	return err
}

func parkedDrop(ctx context.Context, c ParkedConfig) error {
	_, err := ParkedDrop(ctx, c)
	return err
}
