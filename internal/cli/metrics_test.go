package cli

import (
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

// testRegistry registers, out of name order, a counter, a gauge, a
// labelled counter whose label values need escaping, a labelled gauge with
// no samples and a help text that needs escaping.
func testRegistry(appends *atomic.Int64) *Registry {
	reg := NewRegistry("writer", "1.2.3")
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

// testRegistryText is what the text format shows of testRegistry's own
// metrics (a labelled metric with no samples shows nothing).
const testRegistryText = `# HELP batfleet_journal_visible Visibility watermark.
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

// ownFamilies keeps the lines of text about the metrics testRegistry
// registers (dropping the runtime, process and build metrics).
func ownFamilies(text string) string {
	own := map[string]bool{"batfleet_journal_visible": true, "batfleet_ratio": true,
		"batfleet_writer_appends_total": true, "batfleet_writer_errors_total": true, "batfleet_empty": true}
	var b strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		name := strings.TrimPrefix(strings.TrimPrefix(line, "# HELP "), "# TYPE ")
		if i := strings.IndexAny(name, " {"); i >= 0 {
			name = name[:i]
		}
		if own[name] {
			b.WriteString(line)
		}
	}
	return b.String()
}

func TestRegistryWriteText(t *testing.T) {
	var appends atomic.Int64
	appends.Store(42)
	reg := testRegistry(&appends)
	var b strings.Builder
	if err := reg.WriteText(&b); err != nil {
		t.Fatalf("WriteText: %v", err)
	}
	if got := ownFamilies(b.String()); got != testRegistryText {
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

// TestRegistryStandardMetrics (issue 16): every registry carries the Go
// runtime and process collectors and batfleet_build_info; histograms show
// their buckets, sum and count; the names pass promlint.
func TestRegistryStandardMetrics(t *testing.T) {
	reg := NewRegistry("worker", "1.2.3")
	h := reg.Histogram("batfleet_worker_handler_duration_seconds", "Handler calls.", "outcome")
	h.WithLabelValues("done").Observe(0.003)
	h.WithLabelValues("done").Observe(7)
	var b strings.Builder
	if err := reg.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{
		`batfleet_build_info{goversion="` + runtime.Version() + `",program="worker",version="1.2.3"} 1`,
		"\ngo_goroutines ", "\ngo_memstats_heap_inuse_bytes ", "\nprocess_resident_memory_bytes ", "\nprocess_open_fds ",
		`batfleet_worker_handler_duration_seconds_bucket{outcome="done",le="0.0025"} 0`,
		`batfleet_worker_handler_duration_seconds_bucket{outcome="done",le="0.005"} 1`,
		`batfleet_worker_handler_duration_seconds_bucket{outcome="done",le="+Inf"} 2`,
		`batfleet_worker_handler_duration_seconds_sum{outcome="done"} 7.003`,
		`batfleet_worker_handler_duration_seconds_count{outcome="done"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mustGather(t, reg)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	names, err := reg.sortedNames()
	if err != nil || len(names) < 10 {
		t.Errorf("families %v, %v", names, err)
	}
}

func mustGather(t *testing.T, reg *Registry) []*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

func TestRegistryEmpty(t *testing.T) {
	var b strings.Builder
	if err := NewRegistry("writer", "0").WriteText(&b); err != nil || strings.Contains(b.String(), "batfleet_") && !strings.Contains(b.String(), "batfleet_build_info") {
		t.Errorf("a new registry wrote %q, %v; want the standard metrics only", b.String(), err)
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
	if code != http.StatusOK || ownFamilies(body) != testRegistryText {
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
	h, err := StartHTTP(ln.Addr().String(), NewRegistry("writer", "0"), func() error { return nil }, hclog.NewNullLogger())
	if err == nil {
		_ = h.Stop()
		t.Fatalf("StartHTTP on %s (in use) succeeded", ln.Addr())
	}
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--http "+ln.Addr().String()) {
		t.Errorf("StartHTTP = %v, want an ErrUsage error naming --http and the address", err)
	}
}
