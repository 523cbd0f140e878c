package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/pflag"
)

func TestEnvName(t *testing.T) {
	tests := []struct {
		flag, want string
	}{
		{"nats", "NATS_URL"},
		{"batch", "BATFLEET_BATCH"},
		{"log-level", "BATFLEET_LOG_LEVEL"},
		{"tls-cert", "BATFLEET_TLS_CERT"},
		{"exec-timeout", "BATFLEET_EXEC_TIMEOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			if got := EnvName(tt.flag); got != tt.want {
				t.Errorf("EnvName(%q) = %q, want %q", tt.flag, got, tt.want)
			}
		})
	}
}

// testFlags is a flag set like the binaries': a string, an int, a bool, a
// duration and the --nats URL.
type testFlags struct {
	fs    *pflag.FlagSet
	name  *string
	batch *int
	json  *bool
	idle  *time.Duration
	nats  *string
}

func newTestFlags() testFlags {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	return testFlags{
		fs:    fs,
		name:  fs.String("name", "default", ""),
		batch: fs.Int("batch", 64, ""),
		json:  fs.Bool("json", false, ""),
		idle:  fs.Duration("idle", time.Second, ""),
		nats:  fs.String("nats", "nats://127.0.0.1:4222", ""),
	}
}

func TestApplyEnvFallback(t *testing.T) {
	t.Setenv("BATFLEET_NAME", "from-env")
	t.Setenv("BATFLEET_BATCH", "7")
	t.Setenv("BATFLEET_JSON", "true")
	t.Setenv("NATS_URL", "nats://example:4222")
	f := newTestFlags()
	if err := Parse(f.fs, []string{"--batch", "9"}); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if *f.batch != 9 {
		t.Errorf("batch = %d, want 9 (the flag wins over BATFLEET_BATCH)", *f.batch)
	}
	if *f.name != "from-env" {
		t.Errorf("name = %q, want from-env", *f.name)
	}
	if !*f.json {
		t.Errorf("json = false, want true from BATFLEET_JSON")
	}
	if *f.nats != "nats://example:4222" {
		t.Errorf("nats = %q, want NATS_URL's value", *f.nats)
	}
	if *f.idle != time.Second {
		t.Errorf("idle = %v, want the default 1s (no BATFLEET_IDLE)", *f.idle)
	}
}

func TestApplyEnvBadValue(t *testing.T) {
	t.Setenv("BATFLEET_BATCH", "lots")
	t.Setenv("BATFLEET_IDLE", "soon")

	f := newTestFlags()
	err := Parse(f.fs, nil)
	if !errors.Is(err, ErrUsage) {
		t.Fatalf("Parse = %v, want an ErrUsage error", err)
	}
	want := `BATFLEET_BATCH="lots": not a whole number; BATFLEET_IDLE="soon": time: invalid duration "soon"`
	if err.Error() != want {
		t.Errorf("Parse = %q, want %q (each variable named, on one line)", err, want)
	}

	// A bad environment value behind a flag given on the command line is
	// never looked at.
	f = newTestFlags()
	if err := Parse(f.fs, []string{"--batch", "3", "--idle", "2s"}); err != nil {
		t.Fatalf("Parse with both flags given: %v", err)
	}
	if *f.batch != 3 || *f.idle != 2*time.Second {
		t.Errorf("batch, idle = %d, %v; want 3, 2s", *f.batch, *f.idle)
	}
}

// TestParseErrors: pflag's parse errors read as users type flags, with
// no "usage:" or "flag provided but not defined" in them.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, "unknown flag --bogus"},
		{"unknown flag with a value", []string{"--bogus=1"}, "unknown flag --bogus"},
		{"unknown single-dash flag", []string{"-bogus"}, "unknown flag -bogus"},
		{"bad int", []string{"--batch", "x"}, "--batch x: not a whole number"},
		{"int out of range", []string{"--batch", "99999999999999999999"}, "--batch 99999999999999999999: out of range"},
		{"bad bool", []string{"--json=maybe"}, "--json maybe: want true or false"},
		{"bad duration", []string{"--idle=soon"}, `--idle soon: time: invalid duration "soon"`},
		{"no value", []string{"--batch"}, "--batch needs a value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFlags()
			err := Parse(f.fs, tt.args)
			if !errors.Is(err, ErrUsage) || err.Error() != tt.want {
				t.Fatalf("Parse(%q) = %v, want the usage error %q", tt.args, err, tt.want)
			}
		})
	}
	f := newTestFlags()
	if err := Parse(f.fs, []string{"--help"}); !errors.Is(err, pflag.ErrHelp) {
		t.Errorf("--help: Parse = %v, want pflag.ErrHelp", err)
	}
}

func TestUsageNamesEnvironment(t *testing.T) {
	f := newTestFlags()
	var b bytes.Buffer
	Usage(&b, f.fs, "test [flags]")
	out := b.String()
	for _, want := range []string{"usage: test [flags]", "--batch [BATFLEET_BATCH]", `(default "64")`, "--nats [NATS_URL]", "--json [BATFLEET_JSON]\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
}

func TestLogFlagsLogger(t *testing.T) {
	for _, bad := range []string{"loud", "", "information"} {
		_, err := LogFlags{Level: bad}.Logger("x", &bytes.Buffer{})
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--log-level") {
			t.Errorf("Logger(level %q) = %v, want an ErrUsage error naming --log-level", bad, err)
		}
	}

	var b bytes.Buffer
	log, err := LogFlags{Level: "warn", JSON: true}.Logger("writer", &b)
	if err != nil {
		t.Fatalf("Logger: %v", err)
	}
	log.Info("hidden")
	log.Warn("shown", "last-seq", 7)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d log lines, want 1 (info is below warn):\n%s", len(lines), b.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("--log-json line is not JSON: %v: %s", err, lines[0])
	}
	if rec["@message"] != "shown" || rec["@module"] != "writer" || rec["last-seq"] != float64(7) {
		t.Errorf("log record = %v", rec)
	}
}

func TestNATSFlagsOptions(t *testing.T) {
	log := hclog.NewNullLogger()
	tests := []struct {
		name    string
		flags   NATSFlags
		wantErr error
		wantMsg string
	}{
		{name: "defaults", flags: NATSFlags{URL: "nats://127.0.0.1:4222"}},
		{name: "user and password", flags: NATSFlags{User: "u", Password: "p"}},
		{name: "tls pair", flags: NATSFlags{TLSCert: "c.pem", TLSKey: "k.pem"}},
		{name: "tls-cert without tls-key", flags: NATSFlags{TLSCert: "c.pem"}, wantErr: ErrUsage, wantMsg: "--tls-cert and --tls-key"},
		{name: "tls-key without tls-cert", flags: NATSFlags{TLSKey: "k.pem"}, wantErr: ErrUsage, wantMsg: "--tls-cert and --tls-key"},
		{name: "missing nkey file", flags: NATSFlags{NKey: "/nonexistent/seed.nk"}, wantErr: ErrUsage, wantMsg: "--nkey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := tt.flags.Options("test", log)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("Options = %v, want %v containing %q", err, tt.wantErr, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Options: %v", err)
			}
			if len(opts) == 0 {
				t.Fatal("Options returned no options")
			}
		})
	}
}

func TestConnectNobodyListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + ln.Addr().String()
	ln.Close()

	start := time.Now()
	nc, err := NATSFlags{}.Connect(url, "test", hclog.NewNullLogger())
	if err == nil {
		nc.Close()
		t.Fatalf("Connect to %s succeeded with nothing listening", url)
	}
	if !strings.Contains(err.Error(), url) {
		t.Errorf("error %q does not name the URL %s", err, url)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Connect took %v to fail; the first connection must not retry forever", d)
	}

	if _, err := (NATSFlags{TLSCert: "c.pem"}).Connect(url, "test", hclog.NewNullLogger()); !errors.Is(err, ErrUsage) {
		t.Errorf("Connect with bad TLS flags = %v, want ErrUsage before dialing", err)
	}
}

// TestSignalContextFirstSignal sends the test process one SIGTERM: the
// context is cancelled and the process keeps running. (The second-signal
// exit is exercised by the integration tests against the binaries.)
func TestSignalContextFirstSignal(t *testing.T) {
	var logs safeBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	ctx, stop := SignalContext(context.Background(), log)
	defer stop()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("context not cancelled 10s after SIGTERM")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "signal received") {
		if time.Now().After(deadline) {
			t.Fatalf("no 'signal received' log line; got %q", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSignalContextStop(t *testing.T) {
	ctx, stop := SignalContext(context.Background(), hclog.NewNullLogger())
	if ctx.Err() != nil {
		t.Fatal("context cancelled before any signal")
	}
	stop()
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("after stop, ctx.Err() = %v, want context.Canceled", ctx.Err())
	}
}

func TestUsagef(t *testing.T) {
	err := Usagef("--batch %d: want > 0", 0)
	if !errors.Is(err, ErrUsage) || err.Error() != "--batch 0: want > 0" {
		t.Errorf("Usagef = %q (Is ErrUsage: %v)", err, errors.Is(err, ErrUsage))
	}
}

// safeBuffer is a bytes.Buffer safe for concurrent use.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
