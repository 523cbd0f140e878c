package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Metrics are collected at scrape time from the counters the packages
// already keep (fleet.WriterStats, delivery.WorkerStats), and written in the
// Prometheus text exposition format (version 0.0.4). A dozen counters do
// not justify the client_golang dependency tree.

// Sample is one value of a metric, with its labels.
type Sample struct {
	Labels [][2]string
	Value  float64
}

type metric struct {
	name, help, typ string
	collect         func() []Sample
}

// Registry holds the metrics of one process. It is safe for concurrent use.
type Registry struct {
	mu      sync.Mutex
	metrics []metric
}

// Counter registers a monotonically increasing value.
func (r *Registry) Counter(name, help string, f func() float64) {
	r.add(metric{name, help, "counter", func() []Sample { return []Sample{{Value: f()}} }})
}

// Gauge registers a value that goes up and down.
func (r *Registry) Gauge(name, help string, f func() float64) {
	r.add(metric{name, help, "gauge", func() []Sample { return []Sample{{Value: f()}} }})
}

// CounterVec registers a counter with labels.
func (r *Registry) CounterVec(name, help string, f func() []Sample) {
	r.add(metric{name, help, "counter", f})
}

// GaugeVec registers a gauge with labels.
func (r *Registry) GaugeVec(name, help string, f func() []Sample) {
	r.add(metric{name, help, "gauge", f})
}

func (r *Registry) add(m metric) {
	r.mu.Lock()
	r.metrics = append(r.metrics, m)
	r.mu.Unlock()
}

// WriteText writes every metric in the Prometheus text format, sorted by
// name.
func (r *Registry) WriteText(w io.Writer) error {
	r.mu.Lock()
	ms := append([]metric(nil), r.metrics...)
	r.mu.Unlock()
	sort.Slice(ms, func(i, j int) bool { return ms[i].name < ms[j].name })
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", m.name, escapeHelp(m.help), m.name, m.typ)
		for _, s := range m.collect() {
			b.WriteString(m.name)
			if len(s.Labels) > 0 {
				b.WriteByte('{')
				for i, l := range s.Labels {
					if i > 0 {
						b.WriteByte(',')
					}
					fmt.Fprintf(&b, "%s=\"%s\"", l[0], escapeLabel(l[1]))
				}
				b.WriteByte('}')
			}
			b.WriteByte(' ')
			b.WriteString(strconv.FormatFloat(s.Value, 'g', -1, 64))
			b.WriteByte('\n')
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

// HTTPServer serves /metrics, /healthz (liveness) and /readyz (readiness);
// see Probes.
type HTTPServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
	err  error
}

// StartHTTP is StartProbes with healthy as both probes: /healthz and
// /readyz answer 200 while healthy returns nil, 503 with the reason
// otherwise. A check that depends on NATS belongs in Probes.Ready only.
func StartHTTP(addr string, reg *Registry, healthy func() error, log hclog.Logger) (*HTTPServer, error) {
	return StartProbes(addr, reg, Probes{Live: healthy, Ready: healthy}, log)
}

// Addr returns the listening address.
func (h *HTTPServer) Addr() string { return h.ln.Addr().String() }

// Stop shuts the server down and waits for it.
func (h *HTTPServer) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := h.srv.Shutdown(ctx)
	<-h.done
	return errors.Join(err, h.err)
}
