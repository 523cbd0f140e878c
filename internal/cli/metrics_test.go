package cli

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// testRegistry registers, out of name order, a counter, a gauge, a
// labelled counter whose label values need escaping, a labelled gauge with
// no samples and a help text that needs escaping.
func testRegistry(appends *atomic.Int64) *Registry {
	reg := &Registry{}
	reg.Gauge("batfleet_journal_visible", "Visibility watermark.", func() float64 { return 1e6 })
	reg.Counter("batfleet_writer_appends_total", "Append requests that succeeded.", func() float64 { return float64(appends.Load()) })
	reg.CounterVec("batfleet_writer_errors_total", "Error replies by code.", func() []Sample {
		return []Sample{
			{Labels: [][2]string{{"code", "bad_request"}}, Value: 3},
			{Labels: [][2]string{{"code", `a"b\c` + "\nd"}, {"node", "n1"}}, Value: 1},
		}
	})
	reg.GaugeVec("batfleet_empty", "No samples yet.", func() []Sample { return nil })
	reg.Gauge("batfleet_ratio", `A help with a backslash \ and a`+"\nnewline.", func() float64 { return 0.25 })
	return reg
}

const testRegistryText = `# HELP batfleet_empty No samples yet.
# TYPE batfleet_empty gauge
# HELP batfleet_journal_visible Visibility watermark.
# TYPE batfleet_journal_visible gauge
batfleet_journal_visible 1e+06
# HELP batfleet_ratio A help with a backslash \\ and a\nnewline.
# TYPE batfleet_ratio gauge
batfleet_ratio 0.25
# HELP batfleet_writer_appends_total Append requests that succeeded.
# TYPE batfleet_writer_appends_total counter
batfleet_writer_appends_total 42
# HELP batfleet_writer_errors_total Error replies by code.
# TYPE batfleet_writer_errors_total counter
batfleet_writer_errors_total{code="bad_request"} 3
batfleet_writer_errors_total{code="a\"b\\c\nd",node="n1"} 1
`

func TestRegistryWriteText(t *testing.T) {
	var appends atomic.Int64
	appends.Store(42)
	reg := testRegistry(&appends)
	var b strings.Builder
	if err := reg.WriteText(&b); err != nil {
		t.Fatalf("WriteText: %v", err)
	}
	if got := b.String(); got != testRegistryText {
		t.Errorf("WriteText:\n%s\nwant:\n%s", got, testRegistryText)
	}

	// Values are read at every scrape.
	appends.Add(1)
	b.Reset()
	if err := reg.WriteText(&b); err != nil {
		t.Fatalf("WriteText: %v", err)
	}
	if !strings.Contains(b.String(), "\nbatfleet_writer_appends_total 43\n") {
		t.Errorf("second scrape does not show the new counter value:\n%s", b.String())
	}
}

func TestRegistryEmpty(t *testing.T) {
	var b strings.Builder
	if err := (&Registry{}).WriteText(&b); err != nil || b.Len() != 0 {
		t.Errorf("empty registry wrote %q, %v; want nothing", b.String(), err)
	}
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func TestStartHTTP(t *testing.T) {
	var appends atomic.Int64
	appends.Store(42)
	var unhealthy atomic.Pointer[error]
	healthy := func() error {
		if p := unhealthy.Load(); p != nil {
			return *p
		}
		return nil
	}
	h, err := StartHTTP("127.0.0.1:0", testRegistry(&appends), healthy, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("StartHTTP: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = h.Stop()
		}
	})
	base := "http://" + h.Addr()

	code, hdr, body := get(t, base+"/metrics")
	if code != http.StatusOK || body != testRegistryText {
		t.Errorf("/metrics = %d:\n%s\nwant 200:\n%s", code, body, testRegistryText)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("/metrics Content-Type = %q, want the Prometheus text format", ct)
	}

	if code, _, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("healthy /healthz = %d %q, want 200 \"ok\\n\"", code, body)
	}
	reason := errors.New("not connected to NATS")
	unhealthy.Store(&reason)
	if code, _, body := get(t, base+"/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not connected to NATS") {
		t.Errorf("unhealthy /healthz = %d %q, want 503 with the reason", code, body)
	}
	unhealthy.Store(nil)
	if code, _, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("healthy again: /healthz = %d, want 200", code)
	}
	if code, _, _ := get(t, base+"/nothing"); code != http.StatusNotFound {
		t.Errorf("/nothing = %d, want 404", code)
	}

	stopped = true
	if err := h.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if c, err := net.DialTimeout("tcp", h.Addr(), time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Stop", h.Addr())
	}
}

func TestStartHTTPAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h, err := StartHTTP(ln.Addr().String(), &Registry{}, func() error { return nil }, hclog.NewNullLogger())
	if err == nil {
		_ = h.Stop()
		t.Fatalf("StartHTTP on %s (in use) succeeded", ln.Addr())
	}
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--http "+ln.Addr().String()) {
		t.Errorf("StartHTTP = %v, want an ErrUsage error naming --http and the address", err)
	}
}
