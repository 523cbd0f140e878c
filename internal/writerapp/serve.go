// Package writerapp is the writer binary's logic: serve a journal over
// NATS (with an embedded nats-server when no URL is given) and append
// events from stdin or a synthetic generator.
package writerapp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/prometheus/client_golang/prometheus"
)

// ServeConfig configures `writer serve`.
type ServeConfig struct {
	Data    string // data directory: journals/<journal>/ and, embedded, nats/
	Journal string
	NATS    cli.NATSFlags // URL "" means: start an embedded server
	Listen  string        // the embedded server's client address
	HTTP    string        // /metrics, /healthz and /readyz address; "" for none
	Version string
	Log     hclog.Logger
	// Ready, when set, is called once the writer serves, with the NATS URL
	// workers should use.
	Ready func(natsURL string)
}

// Serve runs the writer until ctx is cancelled, then drains: in-flight
// requests are answered, the journal is closed cleanly.
func Serve(ctx context.Context, cfg ServeConfig) (err error) {
	log := cfg.Log
	if err := engine.ValidateJournalName(cfg.Journal); err != nil {
		return cli.Usagef("--journal: %v", err)
	}
	url := cfg.NATS.URL
	var extra []nats.Option
	if url == "" {
		ns, err := startEmbedded(cfg.Listen, filepath.Join(cfg.Data, "nats"), log)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
			log.Info("embedded nats-server stopped")
		}()
		url = ns.ClientURL()
		extra = append(extra, nats.InProcessServer(ns))
	}
	nc, err := cfg.NATS.Connect(url, "batfleet-writer", log, extra...)
	if err != nil {
		return &cli.NATSError{Err: err}
	}
	defer nc.Close()

	// The registry exists before the journal and the writer, whose hooks
	// feed its histograms; it is served only with --http.
	reg := cli.NewRegistry("writer", cfg.Version)
	lat := newWriterLatencies(reg)
	dir := filepath.Join(cfg.Data, "journals", cfg.Journal)
	store, err := journal.Open(dir, journal.Config{
		Logger:        log,
		MaxEntryBytes: fleet.MaxEntryBytes(nc.MaxPayload()),
		ObserveSync:   lat.fsync,
	})
	if err != nil {
		return fmt.Errorf("open journal %s: %w", dir, err)
	}
	defer func() {
		if cerr := store.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close journal: %w", cerr)
		}
	}()
	w, err := fleet.NewWriter(nc, store, fleet.WriterConfig{Journal: cfg.Journal, Version: cfg.Version, Logger: log,
		ObserveRequest: lat.request})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 35*time.Second) // > the writer's AppendTimeout
		defer cancel()
		if cerr := w.Close(cctx); cerr != nil && err == nil {
			err = cerr
		}
	}()

	if cfg.HTTP != "" {
		registerWriterMetrics(reg, w, store)
		hs, err := cli.StartProbes(cfg.HTTP, reg, probes(ctx, nc, store), log)
		if err != nil {
			return err
		}
		defer hs.Stop()
	}
	log.Info("writer ready", "nats", url, "journal", cfg.Journal, "dir", dir)
	if cfg.Ready != nil {
		cfg.Ready(url)
	}
	<-ctx.Done()
	log.Info("writer stopping")
	return nil
}

// probes are the writer's health checks. Liveness (/healthz) does not
// depend on NATS: it reads the journal's counters, which take the index
// and visibility locks, so a journal wedged under one of them makes the
// probe time out. Readiness (/readyz) needs the NATS connection up and the
// writer not stopping.
func probes(ctx context.Context, nc *nats.Conn, store *journal.Store) cli.Probes {
	return cli.Probes{
		Live: func() error {
			_ = store.Stats()
			return nil
		},
		Ready: func() error {
			if ctx.Err() != nil {
				return errors.New("writer stopping")
			}
			if !nc.IsConnected() {
				return fmt.Errorf("not connected to NATS (%s)", nc.Status())
			}
			return nil
		},
	}
}

// writerLatencies are the writer's latency histograms.
type writerLatencies struct {
	requests *prometheus.HistogramVec
	fsyncs   prometheus.Observer
}

func newWriterLatencies(reg *cli.Registry) writerLatencies {
	return writerLatencies{
		requests: reg.Histogram("batfleet_writer_request_duration_seconds",
			"Requests from arrival to answer, by endpoint (pull, append, info, count) and outcome (ok, error); an append's includes its fsync. Held pulls are left out: their time is their wait.",
			"endpoint", "outcome"),
		fsyncs: reg.Histogram("batfleet_journal_fsync_duration_seconds",
			"The fsync of each group commit (one per group of appends).").WithLabelValues(),
	}
}

func (l writerLatencies) request(o fleet.RequestObservation) {
	if o.Held {
		return
	}
	outcome := "ok"
	if o.Failed {
		outcome = "error"
	}
	l.requests.WithLabelValues(o.Endpoint, outcome).Observe(o.Took.Seconds())
}

func (l writerLatencies) fsync(d time.Duration) { l.fsyncs.Observe(d.Seconds()) }

func registerWriterMetrics(reg *cli.Registry, w *fleet.Writer, store *journal.Store) {
	c := func(name, help string, f func(fleet.WriterStats) uint64) {
		reg.Counter(name, help, func() float64 { return float64(f(w.Stats())) })
	}
	c("batfleet_writer_appends_total", "Append requests that succeeded.", func(s fleet.WriterStats) uint64 { return s.Appends })
	c("batfleet_writer_append_events_total", "Events appended over NATS.", func(s fleet.WriterStats) uint64 { return s.AppendEvents })
	c("batfleet_writer_append_bytes_total", "Bytes of append requests.", func(s fleet.WriterStats) uint64 { return s.AppendBytes })
	c("batfleet_writer_pulls_total", "Pull requests answered.", func(s fleet.WriterStats) uint64 { return s.Pulls })
	c("batfleet_writer_pull_entries_total", "Entries sent in pull replies.", func(s fleet.WriterStats) uint64 { return s.PullEntries })
	c("batfleet_writer_pull_bytes_total", "Bytes of pull replies.", func(s fleet.WriterStats) uint64 { return s.PullBytes })
	c("batfleet_writer_epochs_total", "Epoch messages published.", func(s fleet.WriterStats) uint64 { return s.Epochs })
	c("batfleet_writer_held_pulls_total", "Pulls held until an entry matched or their wait_ms expired.", func(s fleet.WriterStats) uint64 { return s.PullsHeld })
	c("batfleet_writer_held_pulls_expired_total", "Held pulls answered empty when their wait_ms expired.", func(s fleet.WriterStats) uint64 { return s.HeldExpired })
	reg.Gauge("batfleet_writer_held_pulls", "Pulls held now.", func() float64 { return float64(w.Stats().Held) })
	reg.CounterVec("batfleet_writer_errors_total", "Error replies by code.", func() []cli.Sample {
		var out []cli.Sample
		for code, n := range w.Stats().Errors {
			out = append(out, cli.Sample{Labels: [][2]string{{"code", code}}, Value: float64(n)})
		}
		return out
	})
	reg.Gauge("batfleet_journal_visible", "Visibility watermark (next sequence to become visible).", func() float64 { return float64(store.Visible()) })
	reg.Gauge("batfleet_journal_epoch", "Current visibility epoch.", func() float64 { return float64(store.Latest().Epoch) })
	reg.Gauge("batfleet_journal_entries", "Indexed entries.", func() float64 { return float64(store.Stats().Entries) })
}

// startEmbedded starts a JetStream nats-server listening on listen, storing
// under dir. The checkpoint bucket's writes are acknowledged after reaching
// the OS and fsynced at the server's default interval: a process crash
// loses nothing acknowledged; an OS crash may roll a checkpoint back, which
// means redelivery, never a skip. The journal itself fsyncs every append.
func startEmbedded(listen, dir string, log hclog.Logger) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, cli.Usagef("--listen %q: %v", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, cli.Usagef("--listen %q: bad port", listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT // a free port, shown in the "writer ready" log line
	} else {
		// Fail fast and clearly on a taken port (the server itself would
		// only report it after its 10 s readiness wait).
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return nil, &cli.NATSError{Err: fmt.Errorf("embedded nats-server cannot listen on %s: %w (choose another address with --listen)", listen, err)}
		}
		_ = ln.Close()
	}
	opts := &server.Options{
		ServerName: "batfleet-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	ns.SetLoggerV2(&serverLogger{log: log.Named("nats-server")}, false, false, false)
	go ns.Start() // Start blocks only until the accept loops run; errors surface below
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, &cli.NATSError{Err: fmt.Errorf("embedded nats-server did not start listening on %s (is the port in use? choose another with --listen)", listen)}
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		return nil, &cli.NATSError{Err: fmt.Errorf("embedded nats-server: JetStream did not start (store dir %s)", dir)}
	}
	log.Info("embedded nats-server started", "url", ns.ClientURL(), "store-dir", dir)
	return ns, nil
}

// serverLogger routes nats-server logs to hclog: notices at debug level
// (a JetStream server logs a couple of dozen lines at start), warnings and
// errors as such. Fatalf never exits.
type serverLogger struct{ log hclog.Logger }

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.log.Trace(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.log.Trace(fmt.Sprintf(format, v...)) }
