package cli

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestStartProbesSplitsLivenessFromReadiness: a readiness failure (NATS
// down) fails /readyz only; /healthz follows the liveness check alone.
func TestStartProbesSplitsLivenessFromReadiness(t *testing.T) {
	var notReady, notLive atomic.Pointer[error]
	check := func(p *atomic.Pointer[error]) func() error {
		return func() error {
			if e := p.Load(); e != nil {
				return *e
			}
			return nil
		}
	}
	h, err := StartProbes("127.0.0.1:0", NewRegistry("writer", "0"), Probes{Live: check(&notLive), Ready: check(&notReady)}, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("StartProbes: %v", err)
	}
	t.Cleanup(func() { _ = h.Stop() })
	base := "http://" + h.Addr()
	want := func(path string, code int, body string) {
		t.Helper()
		got, _, b := get(t, base+path)
		if got != code || !strings.Contains(b, body) {
			t.Errorf("%s = %d %q, want %d containing %q", path, got, b, code, body)
		}
	}
	want("/healthz", http.StatusOK, "ok")
	want("/readyz", http.StatusOK, "ok")

	disconnected := errors.New("not connected to NATS")
	notReady.Store(&disconnected)
	want("/healthz", http.StatusOK, "ok")
	want("/readyz", http.StatusServiceUnavailable, "not ready: not connected to NATS")

	wedged := errors.New("journal wedged")
	notLive.Store(&wedged)
	want("/healthz", http.StatusServiceUnavailable, "unhealthy: journal wedged")

	notReady.Store(nil)
	notLive.Store(nil)
	want("/healthz", http.StatusOK, "ok")
	want("/readyz", http.StatusOK, "ok")
}

// TestStartHTTPServesReadyz: StartHTTP's one check answers both probes.
func TestStartHTTPServesReadyz(t *testing.T) {
	h, err := StartHTTP("127.0.0.1:0", NewRegistry("writer", "0"), func() error { return errors.New("down") }, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("StartHTTP: %v", err)
	}
	t.Cleanup(func() { _ = h.Stop() })
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _, body := get(t, "http://"+h.Addr()+path); code != http.StatusServiceUnavailable || !strings.Contains(body, "down") {
			t.Errorf("%s = %d %q, want 503 naming the reason", path, code, body)
		}
	}
}
