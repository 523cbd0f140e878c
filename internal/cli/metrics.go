package cli

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"sort"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Metrics are exposed through Prometheus' client_golang: its Go runtime
// and process collectors, exposition (text and OpenMetrics, negotiated)
// and histograms are what operators' dashboards expect, and hand-written
// exposition of histograms is where in-tree writers go wrong. Most of
// batfleet's own figures are read at scrape time from the counters the
// packages already keep (fleet.WriterStats, delivery.WorkerStats), so
// Counter, Gauge and their labelled forms take functions; latencies are
// Histograms observed as they happen.

// Sample is one value of a labelled metric, with its labels.
type Sample struct {
	Labels [][2]string
	Value  float64
}

// Registry holds the metrics of one process. It is safe for concurrent
// use. Make it with NewRegistry.
type Registry struct {
	reg *prometheus.Registry
}

// NewRegistry returns a registry holding the Go runtime and process
// collectors and batfleet_build_info{program, version, goversion} 1.
func NewRegistry(program, version string) *Registry {
	r := &Registry{reg: prometheus.NewRegistry()}
	r.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "batfleet_build_info",
		Help:        "Build information of the running binary (always 1).",
		ConstLabels: prometheus.Labels{"program": program, "version": version, "goversion": runtime.Version()},
	})
	info.Set(1)
	r.reg.MustRegister(info)
	return r
}

// Counter registers a monotonically increasing value read at each scrape.
func (r *Registry) Counter(name, help string, f func() float64) {
	r.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

// Gauge registers a value that goes up and down, read at each scrape.
func (r *Registry) Gauge(name, help string, f func() float64) {
	r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// CounterVec registers a counter with labels, read at each scrape.
func (r *Registry) CounterVec(name, help string, f func() []Sample) {
	r.reg.MustRegister(&funcVec{name: name, help: help, typ: prometheus.CounterValue, f: f})
}

// GaugeVec registers a gauge with labels, read at each scrape.
func (r *Registry) GaugeVec(name, help string, f func() []Sample) {
	r.reg.MustRegister(&funcVec{name: name, help: help, typ: prometheus.GaugeValue, f: f})
}

// LatencyBuckets are the buckets of batfleet's latency histograms, in
// seconds: 100 µs to 30 s, roughly ×2.5 apart (an fsync, a pull answered
// at once, a handler call, a KV save all land well inside).
var LatencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Histogram registers a latency histogram (seconds, LatencyBuckets) with
// the given label names and returns it for observing.
func (r *Registry) Histogram(name, help string, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: LatencyBuckets}, labels)
	r.reg.MustRegister(h)
	return h
}

// WriteText writes every metric in the Prometheus text format, sorted by
// name (what a scrape without content negotiation gets).
func (r *Registry) WriteText(w io.Writer) error {
	mfs, err := r.reg.Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return nil
}

// handler serves the registry over HTTP (text or OpenMetrics, as the
// scraper asks), logging failures to gather.
func (r *Registry) handler(log hclog.Logger) http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{ErrorLog: promLogger{log}, ErrorHandling: promhttp.ContinueOnError})
}

type promLogger struct{ log hclog.Logger }

func (p promLogger) Println(v ...any) { p.log.Warn("metrics", "error", v) }

// funcVec is a labelled metric whose samples a function returns at each
// scrape. It is unchecked (Describe sends nothing): its label names are
// whatever the samples carry.
type funcVec struct {
	name, help string
	typ        prometheus.ValueType
	f          func() []Sample
}

func (v *funcVec) Describe(chan<- *prometheus.Desc) {}

func (v *funcVec) Collect(ch chan<- prometheus.Metric) {
	for _, s := range v.f() {
		names := make([]string, len(s.Labels))
		values := make([]string, len(s.Labels))
		for i, l := range s.Labels {
			names[i], values[i] = l[0], l[1]
		}
		desc := prometheus.NewDesc(v.name, v.help, names, nil)
		m, err := prometheus.NewConstMetric(desc, v.typ, s.Value, values...)
		if err != nil {
			m = prometheus.NewInvalidMetric(desc, err)
		}
		ch <- m
	}
}

// Gather returns the registry's metric families, as a scrape sees them.
func (r *Registry) Gather() ([]*dto.MetricFamily, error) { return r.reg.Gather() }

// sortedNames returns the names of the registry's metric families, for
// tests.
func (r *Registry) sortedNames() ([]string, error) {
	mfs, err := r.reg.Gather()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, mf := range mfs {
		out = append(out, mf.GetName())
	}
	sort.Strings(out)
	return out, nil
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

// Since returns the seconds elapsed since t, for Observe.
func Since(t time.Time) float64 { return time.Since(t).Seconds() }
