package cli

import (
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Probes are the checks behind the HTTP health endpoints; a nil check
// always passes.
//
// Live answers /healthz, the liveness probe (an orchestrator restarts a
// process that fails it): nil while the process is alive and not wedged.
// It must not depend on NATS, or a NATS blip would restart every process
// of a fleet at once.
//
// Ready answers /readyz, the readiness probe (an orchestrator stops
// sending work to a process that fails it, and waits): nil while the
// process is connected and serving.
type Probes struct {
	Live  func() error
	Ready func() error
}

// StartProbes listens on addr and serves /metrics, /healthz (p.Live) and
// /readyz (p.Ready) until Stop. A probe answers 200 "ok" while its check
// returns nil, 503 with the reason otherwise.
func StartProbes(addr string, reg *Registry, p Probes, log hclog.Logger) (*HTTPServer, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", reg.handler(log))
	probe := func(what string, check func() error) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			if check != nil {
				if err := check(); err != nil {
					http.Error(w, what+": "+err.Error(), http.StatusServiceUnavailable)
					return
				}
			}
			_, _ = io.WriteString(w, "ok\n")
		}
	}
	mux.HandleFunc("/healthz", probe("unhealthy", p.Live))
	mux.HandleFunc("/readyz", probe("not ready", p.Ready))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, Usagef("--http %s: %v", addr, err)
	}
	h := &HTTPServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(h.done)
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.err = err
			log.Error("http server failed", "error", err)
		}
	}()
	// The message is the one scripts and tests wait for; readyz is extra.
	log.Info("serving /metrics and /healthz", "addr", ln.Addr().String(), "readiness", "/readyz")
	return h, nil
}
