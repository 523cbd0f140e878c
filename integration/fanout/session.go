package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batfleet/batfleet/integration/internal/benchkit"
)

const payloadSize = 100

// fleetRun is one measured fleet: a server process, the harness's side
// (producer, busy consumer, monitor) and the idle child (W > 0).
type fleetRun struct {
	cfg  config
	sys  string
	srv  *server
	sd   side
	idle *benchkit.Child
	sink *busySink
}

// snapshot is every counter at one moment.
type snapshot struct {
	at                   time.Time
	serverCPU, idleCPU   time.Duration
	selfCPU              time.Duration
	serverWait, selfWait time.Duration // run-queue waits
	idlePulls, busyPulls uint64
	writerPulls          uint64
	writerEpochs         uint64
	writerOK             bool
	busyBatches          uint64
	idle                 idleStats
}

func (f *fleetRun) snap() (snapshot, error) {
	s := snapshot{at: time.Now(), selfCPU: benchkit.SelfCPU(), selfWait: benchkit.ProcRunWait(os.Getpid())}
	var err error
	s.serverWait = benchkit.ProcRunWait(f.srv.proc.Pid())
	if s.serverCPU, err = benchkit.ProcCPU(f.srv.proc.Pid()); err != nil {
		return s, fmt.Errorf("server CPU: %w", err)
	}
	s.idlePulls, s.busyPulls = f.sd.wirePulls()
	s.busyBatches = f.sd.busy().batches.Load()
	if f.idle != nil {
		if s.idleCPU, err = benchkit.ProcCPU(f.idle.Pid()); err != nil {
			return s, fmt.Errorf("idle fleet CPU: %w", err)
		}
		if err := f.idle.Request("stats", &s.idle, 30*time.Second); err != nil {
			return s, err
		}
	}
	s.writerPulls, s.writerEpochs, s.writerOK = f.sd.writerCounters()
	return s, nil
}

// session measures one fleet: system sys with the idle consumers of sh,
// idle and then at every rate.
func session(ctx context.Context, cfg config, self, sys string, sh shape, round int, res *results, say sayFunc) (err error) {
	w := sh.W
	dir, err := os.MkdirTemp(cfg.Root, "fanout-"+sys+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	f := &fleetRun{cfg: cfg, sys: sys, sink: &busySink{}}
	stderr := &benchkit.PrefixWriter{W: os.Stderr, Prefix: sys + " server: "}
	if sys == "batfleet" {
		f.srv, err = startWriter(self, dir, stderr)
	} else {
		f.srv, err = startNATSServer(cfg.NATSBin, dir, stderr)
	}
	if err != nil {
		return err
	}
	defer func() {
		if serr := f.srv.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	if sys == "batfleet" {
		f.sd, err = newBatfleetSide(ctx, f.srv, cfg, f.sink.handle)
	} else {
		f.sd, err = newJetStreamSide(ctx, f.srv, cfg, f.sink.handle)
	}
	if err != nil {
		return err
	}
	defer f.sd.close()
	var st idleStats
	if w > 0 {
		t0 := time.Now()
		perConn := cfg.PerConn
		if sh.Own {
			perConn = 1
		}
		f.idle, err = benchkit.StartChild("idle fleet", self, idleArgs(idleOpts{system: sys, url: f.srv.url, count: w, perConn: perConn,
			stagger: cfg.Stagger, hold: cfg.Hold, batch: cfg.Batch}), &benchkit.PrefixWriter{W: os.Stderr, Prefix: sys + " idle fleet: "})
		if err != nil {
			return err
		}
		defer func() {
			if ierr := f.idle.Stop(0, time.Minute); ierr != nil && err == nil {
				err = ierr
			}
		}()
		if err := f.idle.Await("ready", &st, cfg.Stagger+cfg.SetupWait); err != nil {
			return err
		}
		say("%d idle consumers on %d connection(s) running after %s", st.Started, st.Conns, time.Since(t0).Round(100*time.Millisecond))
	}
	time.Sleep(cfg.Settle)

	ir, err := idlePhase(f)
	if err != nil {
		return err
	}
	res.addIdle(sys, sh, ir)
	say("no appends for %s: server CPU %.1f ms/s, idle pulls %.1f/s", ir.Elapsed.Round(time.Millisecond), ir.ServerCPU, ir.IdlePullsPerSec)

	base := uint64(0)
	for _, rate := range cfg.Rates {
		prof := ""
		if cfg.Profile != "" {
			own := ""
			if sh.Own {
				own = "own"
			}
			prof = filepath.Join(cfg.Profile, fmt.Sprintf("r%d-%s-w%d%s-r%d.pprof", round, sys, w, own, rate))
		}
		pr, n, err := runPhase(ctx, f, rate, base, prof)
		if err != nil {
			return fmt.Errorf("rate %d/s: %w", rate, err)
		}
		base += uint64(n)
		res.addPhase(sys, sh, rate, pr)
		if pr.MaxLag > 100*time.Millisecond {
			res.notes = append(res.notes, fmt.Sprintf("round %d, %s, W=%s, R=%d: the producer fell up to %s behind its schedule (all %d appends in flight)",
				round, sys, sh, rate, pr.MaxLag.Round(time.Millisecond), cfg.InFlight))
		}
		say("R=%d: achieved %.0f/s, server CPU %.1f µs/append, pulls/append %.4f (idle %.4f), busy ack→handler p50 %s p99 %s",
			rate, pr.Achieved, pr.ServerCPU, pr.Pulls, pr.IdlePulls, fmtDur(pr.P50), fmtDur(pr.P99))
	}
	end, err := f.snap()
	if err != nil {
		return err
	}
	label := fmt.Sprintf("round %d, %s, W=%s", round, sys, sh)
	for _, n := range f.sd.notes() {
		res.notes = append(res.notes, label+": "+n)
	}
	if f.idle != nil {
		if end.idle.Entries > 0 || end.idle.Errors > 0 || end.idle.Heartbeats > 0 {
			res.notes = append(res.notes, fmt.Sprintf("%s: idle fleet: %d events delivered (must be 0), %d errors %s, %d missed heartbeats",
				label, end.idle.Entries, end.idle.Errors, end.idle.Err, end.idle.Heartbeats))
		}
		if end.idle.Started != int64(w) {
			return fmt.Errorf("only %d of %d idle consumers running at the end (%s)", end.idle.Started, w, end.idle.Err)
		}
	}
	if n := f.sink.foreign.Load(); n > 0 {
		return fmt.Errorf("busy consumer saw %d events of no phase", n)
	}
	return nil
}

// idleResult is one fleet's cost with no appends.
type idleResult struct {
	Elapsed         time.Duration
	ServerCPU       float64 // ms of CPU per second
	IdleFleetCPU    float64 // ms of CPU per second, the idle consumers' process
	IdlePullsPerSec float64
	BusyPullsPerSec float64
}

func idlePhase(f *fleetRun) (idleResult, error) {
	a, err := f.snap()
	if err != nil {
		return idleResult{}, err
	}
	time.Sleep(f.cfg.IdleFor)
	b, err := f.snap()
	if err != nil {
		return idleResult{}, err
	}
	el := b.at.Sub(a.at)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / el.Seconds() }
	return idleResult{
		Elapsed: el, ServerCPU: ms(b.serverCPU - a.serverCPU), IdleFleetCPU: ms(b.idleCPU - a.idleCPU),
		IdlePullsPerSec: float64(b.idlePulls-a.idlePulls) / el.Seconds(),
		BusyPullsPerSec: float64(b.busyPulls-a.busyPulls) / el.Seconds(),
	}, nil
}

// phase is one rate's events: event i of the phase carries base+i in its
// payload's first 8 bytes; send, ack and seen are Unix ns per event.
type phase struct {
	base      uint64
	n         int
	send, ack []int64
	seen      []atomic.Int64
	handled   atomic.Int64
	dups      atomic.Int64
	done      chan struct{}
	once      sync.Once
}

func newPhase(base uint64, n int) *phase {
	return &phase{base: base, n: n, send: make([]int64, n), ack: make([]int64, n), seen: make([]atomic.Int64, n), done: make(chan struct{})}
}

// busySink is the busy consumer's handler state.
type busySink struct {
	cur     atomic.Pointer[phase]
	foreign atomic.Int64 // events of no phase
}

func (s *busySink) handle(payload []byte, at int64) {
	p := s.cur.Load()
	if p == nil || len(payload) < 8 {
		s.foreign.Add(1)
		return
	}
	idx := binary.LittleEndian.Uint64(payload)
	if idx < p.base || idx >= p.base+uint64(p.n) {
		s.foreign.Add(1)
		return
	}
	i := idx - p.base
	if !p.seen[i].CompareAndSwap(0, at) {
		p.dups.Add(1)
		return
	}
	if p.handled.Add(1) == int64(p.n) {
		p.once.Do(func() { close(p.done) })
	}
}

// phaseResult is one measured window at one rate.
type phaseResult struct {
	Rate     int
	Events   int           // appended in the measured window
	Span     time.Duration // the window's first due time → its last acknowledgement
	Achieved float64       // (Events-1) / Span
	// Per appended event.
	ServerCPU   float64 // µs of the server process
	IdleCPU     float64 // µs of the idle fleet's process
	SelfCPU     float64 // µs of this process (producer, busy consumer, monitor)
	Pulls       float64 // pull requests on the wire, all
	IdlePulls   float64 // … from idle consumers: none of them can match
	BusyPulls   float64 // … from the busy consumer
	WriterPulls float64 // the writer's own count of pulls answered (batfleet)
	Epochs      float64 // epoch messages the writer published (batfleet)
	IdleMsgs    float64 // messages the idle fleet's connections received
	// Per second of the window.
	IdlePullsPerSec float64
	IdleEarly       int64 // batfleet: idle holds that ended before their wait (woken without a match)
	// Busy consumer latencies.
	P50, P99         time.Duration // acknowledged → handler
	SendP50, SendP99 time.Duration // append/publish call start → handler
	AckP50, AckP99   time.Duration // append/publish call start → acknowledgement
	// The busy consumer's work: events per handler call, and (batfleet)
	// its checkpoint saves.
	PerBatch         float64
	SaveP50, SaveP99 time.Duration
	// Time the server's and this process's threads spent runnable but
	// waiting for a CPU, ms per second of the window.
	ServerWait, SelfWait float64
	BeforeAck            int           // events the handler saw before their acknowledgement arrived (counted as 0)
	MaxLag               time.Duration // the producer's worst lateness against its schedule
}

// runPhase appends at rate for the warm-up and then the measured window,
// open loop (event i is due at start + i/rate; at most InFlight appends in
// flight, a late one goes as soon as one returns), waits until the busy
// consumer has handled every event, and measures the window.
func runPhase(ctx context.Context, f *fleetRun, rate int, base uint64, profile string) (phaseResult, int, error) {
	cfg := f.cfg
	nWarm := int(float64(rate) * cfg.Warmup.Seconds())
	nMeas := int(float64(rate) * cfg.Window.Seconds())
	n := nWarm + nMeas
	p := newPhase(base, n)
	f.sd.busy().reset()
	f.sink.cur.Store(p)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var errOnce sync.Once
	var firstErr error
	jobs := make(chan int)
	var wg sync.WaitGroup
	for k := 0; k < cfg.InFlight; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, payloadSize)
			for i := range jobs {
				fillPayload(payload, base+uint64(i))
				p.send[i] = time.Now().UnixNano()
				if err := f.sd.publish(ctx, payload); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("append %d: %w", i, err); cancel() })
					continue
				}
				p.ack[i] = time.Now().UnixNano()
			}
		}()
	}
	type snapRes struct {
		s   snapshot
		err error
	}
	snapA := make(chan snapRes, 1)
	profDone := make(chan error, 1)
	var windowStart time.Time
	var maxLag time.Duration
	start := time.Now()
dispatch:
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(int64(i) * int64(time.Second) / int64(rate)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if i == nWarm {
			windowStart = due
			go func() { s, err := f.snap(); snapA <- snapRes{s, err} }()
			if profile != "" {
				go func() { profDone <- fetchProfile(f.srv.pprof, cfg.Window, profile) }()
			} else {
				profDone <- nil
			}
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			break dispatch
		}
		if lag := time.Since(due); i >= nWarm && lag > maxLag {
			maxLag = lag
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return phaseResult{}, n, firstErr
	}
	// Every event must reach the busy consumer.
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		return phaseResult{}, n, fmt.Errorf("busy consumer handled %d of %d events a minute after the last append", p.handled.Load(), n)
	}
	b, err := f.snap()
	if err != nil {
		return phaseResult{}, n, err
	}
	ar := <-snapA
	if ar.err != nil {
		return phaseResult{}, n, ar.err
	}
	a := ar.s
	if err := <-profDone; err != nil {
		return phaseResult{}, n, fmt.Errorf("profile: %w", err)
	}
	f.sink.cur.Store(nil)
	if d := p.dups.Load(); d > 0 {
		return phaseResult{}, n, fmt.Errorf("busy consumer saw %d events twice", d)
	}

	r := phaseResult{Rate: rate, Events: nMeas, MaxLag: maxLag}
	var lastAck int64
	var fromAck, fromSend, ackLat []time.Duration
	for i := nWarm; i < n; i++ {
		ack, send, seen := p.ack[i], p.send[i], p.seen[i].Load()
		lastAck = max(lastAck, ack)
		d := time.Duration(seen - ack)
		if d < 0 {
			r.BeforeAck++
			d = 0
		}
		fromAck = append(fromAck, d)
		fromSend = append(fromSend, time.Duration(seen-send))
		ackLat = append(ackLat, time.Duration(ack-send))
	}
	r.Span = time.Unix(0, lastAck).Sub(windowStart)
	// The window's events are due over nMeas-1 intervals of 1/rate.
	r.Achieved = float64(nMeas-1) / r.Span.Seconds()
	ev := float64(nMeas)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / ev }
	r.ServerCPU, r.IdleCPU, r.SelfCPU = us(b.serverCPU-a.serverCPU), us(b.idleCPU-a.idleCPU), us(b.selfCPU-a.selfCPU)
	idle, busy := float64(b.idlePulls-a.idlePulls), float64(b.busyPulls-a.busyPulls)
	r.Pulls, r.IdlePulls, r.BusyPulls = (idle+busy)/ev, idle/ev, busy/ev
	if a.writerOK && b.writerOK {
		r.WriterPulls = float64(b.writerPulls-a.writerPulls) / ev
		r.Epochs = float64(b.writerEpochs-a.writerEpochs) / ev
	}
	el := b.at.Sub(a.at)
	r.IdlePullsPerSec = idle / el.Seconds()
	r.ServerWait = float64(b.serverWait-a.serverWait) / float64(time.Millisecond) / el.Seconds()
	r.SelfWait = float64(b.selfWait-a.selfWait) / float64(time.Millisecond) / el.Seconds()
	r.IdleEarly = b.idle.Early - a.idle.Early
	r.IdleMsgs = float64(b.idle.InMsgs-a.idle.InMsgs) / ev
	if nb := b.busyBatches - a.busyBatches; nb > 0 {
		r.PerBatch = ev / float64(nb)
	}
	saves := f.sd.busy().savesBetween(a.at.UnixNano(), b.at.UnixNano())
	r.SaveP50, r.SaveP99 = percentile(saves, 50), percentile(saves, 99)
	r.P50, r.P99 = percentile(fromAck, 50), percentile(fromAck, 99)
	r.SendP50, r.SendP99 = percentile(fromSend, 50), percentile(fromSend, 99)
	r.AckP50, r.AckP99 = percentile(ackLat, 50), percentile(ackLat, 99)
	return r, n, nil
}

func fillPayload(p []byte, i uint64) {
	binary.LittleEndian.PutUint64(p, i)
	for j := 8; j < len(p); j++ {
		p[j] = byte(i*7 + uint64(j)*13)
	}
}

// percentile is the nearest-rank percentile of d (p in 0..100).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(rank, len(s)-1))]
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond))
}
