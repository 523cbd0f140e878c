package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/integration/internal/benchkit"
	"github.com/batfleet/batfleet/kvckpt"
)

// config is one run's settings.
type config struct {
	faults  int
	seed    uint64
	span    time.Duration // the chaos phase; faults are spread over it
	dir     string        // work directory (kept with --keep)
	binDir  string        // prebuilt writer, worker, nats-server ("" builds them)
	disk    string        // "auto", "tmpfs" or "none"
	rate    float64       // batches per second per producer
	verbose bool
	out     io.Writer // progress lines
}

// run is a whole run: the fleet up, the planned faults, the drain, the
// stop, and the check.
type run struct {
	cfg   config
	logMu sync.Mutex
	begin time.Time
	bins  bins

	natsURL string
	nats    *slot
	writer  *slot
	workers []*slot // plain, in plainWorkers order
	members []*slot
	prods   []*slot
	disk    *disk

	mu       sync.Mutex
	injected map[string]int
	notes    []string // faults that could not act, with why
}

func (r *run) logf(format string, args ...any) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	fmt.Fprintf(r.cfg.out, "%7.2fs "+format+"\n", append([]any{time.Since(r.begin).Seconds()}, args...)...)
}

func (r *run) vlogf(format string, args ...any) {
	if r.cfg.verbose {
		r.logf(format, args...)
	}
}

// all is every slot but the server's.
func (r *run) all() []*slot {
	out := []*slot{r.writer}
	out = append(out, r.workers...)
	out = append(out, r.members...)
	return append(out, r.prods...)
}

func execute(ctx context.Context, cfg config) (*summary, error) {
	r := &run{cfg: cfg, begin: time.Now(), injected: map[string]int{}}
	for _, d := range []string{"logs", "out", "nats", "bin"} {
		if err := os.MkdirAll(filepath.Join(cfg.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	b := bins{}
	if cfg.binDir != "" {
		self, _ := os.Executable()
		b = bins{writer: filepath.Join(cfg.binDir, "writer"), worker: filepath.Join(cfg.binDir, "worker"),
			natsServer: filepath.Join(cfg.binDir, "nats-server"), self: self}
	} else {
		root, err := moduleRoot()
		if err != nil {
			return nil, err
		}
		r.logf("building writer, worker and nats-server")
		if b, err = buildBins(ctx, root, filepath.Join(cfg.dir, "bin")); err != nil {
			return nil, err
		}
	}
	r.bins = b
	var err error
	if r.disk, err = newDisk(filepath.Join(cfg.dir, "writer-data"), cfg.disk); err != nil {
		return nil, err
	}
	defer r.disk.unmount()
	if r.disk.mode == "none" {
		r.logf("writer disk: no disk faults (%s)", r.disk.why)
	} else {
		r.logf("writer disk: %s (%s)", r.disk.mode, r.disk.dir)
	}

	port, err := benchkit.FreePort()
	if err != nil {
		return nil, err
	}
	r.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	logs := filepath.Join(cfg.dir, "logs")
	r.nats = newSlot("nats-server", roleNATS, logs, r.logf, natsCmd(b, port, filepath.Join(cfg.dir, "nats")))
	defer r.nats.kill()
	r.nats.start()
	nc, js, err := connectDirect(r.natsURL)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if err := waitNATS(ctx, js, 30*time.Second); err != nil {
		return nil, err
	}
	if err := createCheckpointBucket(ctx, js); err != nil {
		return nil, fmt.Errorf("checkpoint bucket: %w", err)
	}

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	out := filepath.Join(cfg.dir, "out")
	mk := func(name, role string, build func(s *slot, inc *incarnation) *exec.Cmd) (*slot, error) {
		var s *slot
		s = newSlot(name, role, logs, r.logf, func(inc *incarnation) *exec.Cmd { return build(s, inc) })
		return s, s.withProxy(addr)
	}
	r.writer, err = mk("writer", roleWriter, func(s *slot, _ *incarnation) *exec.Cmd {
		return exec.Command(b.writer, "serve", "--nats", s.url(), "--data", r.disk.dir, "--journal", journalName)
	})
	if err != nil {
		return nil, err
	}
	for _, w := range plainWorkers {
		s, err := mk(w.checkpoint, roleWorker, func(s *slot, inc *incarnation) *exec.Cmd {
			inc.id = fmt.Sprintf("%s.%d", s.name, inc.n)
			inc.out = filepath.Join(out, inc.id+".jsonl")
			return exec.Command(b.worker, "run", "--nats", s.url(), "--journal", journalName, "--region", w.spec,
				"--checkpoint", w.checkpoint, "--out", inc.out, "--id", inc.id, "--batch", "32")
		})
		if err != nil {
			return nil, err
		}
		r.workers = append(r.workers, s)
	}
	for i := range members {
		s, err := mk(fmt.Sprintf("m%d", i), roleMember, func(s *slot, inc *incarnation) *exec.Cmd {
			inc.id = fmt.Sprintf("%s.%d", s.name, inc.n)
			inc.out = filepath.Join(out, inc.id+".jsonl")
			return exec.Command(b.worker, "run", "--nats", s.url(), "--journal", journalName, "--region", groupSpec,
				"--group", groupName, "--partitions", strconv.Itoa(groupParts), "--session", session.String(),
				"--out", inc.out, "--id", inc.id, "--batch", "32")
		})
		if err != nil {
			return nil, err
		}
		r.members = append(r.members, s)
	}
	for i := range producers {
		s, err := mk(fmt.Sprintf("p%d", i), roleProducer, func(s *slot, inc *incarnation) *exec.Cmd {
			inc.id = s.name
			inc.out = filepath.Join(out, s.name+".log") // one log over its incarnations
			return exec.Command(b.self, "produce", "--nats", s.url(), "--journal", journalName, "--id", s.name,
				"--log", inc.out, "--seed", strconv.FormatUint(cfg.seed+uint64(i)*7919+uint64(inc.n)<<32, 10),
				"--rate", strconv.FormatFloat(cfg.rate, 'f', -1, 64), "--entities", strconv.Itoa(entities))
		})
		if err != nil {
			return nil, err
		}
		r.prods = append(r.prods, s)
	}
	defer func() {
		for _, s := range r.all() {
			s.kill()
			s.closeProxy()
		}
	}()
	r.writer.start()
	for _, s := range append(append(slices.Clone(r.workers), r.members...), r.prods...) {
		s.start()
	}
	r.logf("fleet up: nats-server %s, writer, %d workers, %d group members (%d partitions), %d producers; work dir %s",
		r.natsURL, len(r.workers), len(r.members), groupParts, len(r.prods), cfg.dir)

	// The chaos.
	faults := plan(cfg.seed, cfg.faults, cfg.span, r.disk.mode != "none")
	time.Sleep(2 * time.Second) // let the fleet start
	r.logf("chaos: %d faults over %v", len(faults), cfg.span)
	chaosBegin := time.Now()
	var wg sync.WaitGroup
	for _, f := range faults {
		if d := time.Until(chaosBegin.Add(f.at)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.inject(f)
		}()
	}
	wg.Wait()
	r.logf("chaos over after %v", time.Since(chaosBegin).Round(time.Millisecond))
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	// The drain.
	sum, err := r.drainAndCheck(ctx, nc, js)
	if sum != nil {
		r.mu.Lock()
		sum.injected = r.injected
		r.mu.Unlock()
		sum.diskMode = r.disk.mode
	}
	return sum, err
}

// count records one injected fault.
func (r *run) count(kind string) {
	r.mu.Lock()
	r.injected[kind]++
	r.mu.Unlock()
}

func (r *run) note(f fault, why string) {
	r.mu.Lock()
	r.notes = append(r.notes, fmt.Sprintf("%v: %s", f, why))
	r.mu.Unlock()
	r.logf("fault %s did not act: %s", f, why)
}

// inject carries out one fault.
func (r *run) inject(f fault) {
	pick := func(ss []*slot) *slot { return ss[f.target%len(ss)] }
	switch f.kind {
	case kindKillWriter:
		r.kill(f, r.writer)
	case kindKillWorker:
		r.kill(f, pick(r.workers))
	case kindKillMember:
		r.kill(f, pick(r.members))
	case kindKillProducer:
		r.kill(f, pick(r.prods))
	case kindPauseWriter:
		r.pause(f, r.writer)
	case kindPauseWorker:
		r.pause(f, pick(r.workers))
	case kindPauseMember:
		r.pause(f, pick(r.members))
	case kindNATSRestart:
		s := r.nats
		s.fault.Lock()
		defer s.fault.Unlock()
		sig := syscall.SIGTERM
		if f.param == 1 {
			sig = syscall.SIGKILL
		}
		s.hold()
		if s.signal(sig, true) == 0 {
			s.release()
			r.note(f, "nats-server not running")
			return
		}
		if !s.waitDown(30 * time.Second) {
			s.signal(syscall.SIGKILL, true)
			s.waitDown(10 * time.Second)
		}
		r.count(f.kind)
		time.Sleep(f.dur)
		s.release()
		s.waitUp(10 * time.Second)
		r.vlogf("fault %s: nats-server restarted (%v)", f, sig)
	case kindLatency, kindReset, kindBlackhole, kindSlowReader:
		s := pick(r.all())
		s.fault.Lock()
		defer s.fault.Unlock()
		r.count(f.kind)
		switch f.kind {
		case kindLatency:
			s.proxy.SetLatency(time.Duration(f.param) * time.Millisecond)
		case kindReset:
			s.proxy.ResetAll()
		case kindBlackhole:
			s.proxy.Blackhole(true)
		case kindSlowReader:
			s.throttle.SetReadRate(f.param)
		}
		if f.kind != kindReset {
			time.Sleep(f.dur)
			s.calm()
		}
		r.vlogf("fault %s on %s", f, s.name)
	case kindDiskFull:
		s := r.writer
		what, err := r.disk.fill(f.dur, func() {
			if f.param == 1 {
				time.Sleep(200 * time.Millisecond)
				s.fault.Lock()
				if s.signal(syscall.SIGKILL, true) != 0 {
					r.count(kindKillWriter)
				}
				s.fault.Unlock()
			}
		})
		if err != nil {
			r.note(f, err.Error())
			return
		}
		r.count(f.kind)
		r.vlogf("fault %s: %s", f, what)
	}
}

// kill SIGKILLs the slot's process; the supervisor starts it again.
func (r *run) kill(f fault, s *slot) {
	s.fault.Lock()
	defer s.fault.Unlock()
	s.waitUp(10 * time.Second) // it may be restarting after an earlier fault
	pid := s.signal(syscall.SIGKILL, true)
	if pid == 0 {
		r.note(f, s.name+" not running")
		return
	}
	r.count(f.kind)
	s.waitDown(10 * time.Second)
	s.waitUp(10 * time.Second)
	r.vlogf("fault %s: killed %s (pid %d)", f, s.name, pid)
}

// pause SIGSTOPs the slot's process for f.dur, then SIGCONTs it.
func (r *run) pause(f fault, s *slot) {
	s.fault.Lock()
	defer s.fault.Unlock()
	s.waitUp(10 * time.Second)
	s.mu.Lock()
	var p *os.Process
	if s.cmd != nil {
		p = s.cmd.Process
	}
	s.mu.Unlock()
	if p == nil || p.Signal(syscall.SIGSTOP) != nil {
		r.note(f, s.name+" not running")
		return
	}
	r.count(f.kind)
	time.Sleep(f.dur)
	_ = p.Signal(syscall.SIGCONT)
	r.vlogf("fault %s: paused %s (pid %d)", f, s.name, p.Pid)
}

// drainAndCheck stops the producers, waits until every checkpoint has
// committed through the journal's end, stops everything and checks.
func (r *run) drainAndCheck(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) (*summary, error) {
	for _, s := range r.all() {
		s.calm()
	}
	r.nats.release()
	if err := waitNATS(ctx, js, 30*time.Second); err != nil {
		return nil, err
	}
	for _, s := range r.prods {
		s.stop(30 * time.Second)
	}
	r.logf("producers stopped; draining")
	c, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: journalName})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var visible uint64
	deadline := time.Now().Add(2 * time.Minute)
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := c.Describe(actx)
		cancel()
		if err == nil {
			visible = info.Visible
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("writer does not answer: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	store, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: journalName})
	if err != nil {
		return nil, err
	}
	// Each wait is bounded on its own; a checkpoint still lagging then is
	// undrained (a liveness failure), and so is one the checker finds
	// below its region's last event after the stop.
	undrained := map[string][]string{}
	if visible > 0 {
		wait := func(limit time.Duration, f func(context.Context) error) error {
			wctx, cancel := context.WithTimeout(ctx, limit)
			defer cancel()
			return waitRetry(wctx, f)
		}
		for _, w := range plainWorkers {
			if err := wait(2*time.Minute, func(ctx context.Context) error { return fleet.WaitFor(ctx, c, store, w.checkpoint, visible-1) }); err != nil {
				undrained[w.checkpoint] = append(undrained[w.checkpoint], "drain: "+err.Error())
			}
		}
		if err := wait(2*time.Minute, func(ctx context.Context) error {
			return fleet.WaitForGroup(ctx, c, store, js, fleet.DefaultGroupBucket, groupName, visible-1)
		}); err != nil {
			// Name every partition still lagging (the group's wait stops
			// at the first).
			for p := range groupParts {
				id := groupCheckpoint(p)
				if err := wait(3*time.Second, func(ctx context.Context) error { return fleet.WaitFor(ctx, c, store, id, visible-1) }); err != nil {
					undrained[id] = append(undrained[id], "drain: "+err.Error())
				}
			}
		}
	}
	r.logf("drained through seq %d (%d checkpoints not drained within 2 minutes)", visible, len(undrained))
	if len(undrained) > 0 {
		r.diagnose()
	}
	for _, s := range append(slices.Clone(r.workers), r.members...) {
		s.stop(30 * time.Second)
	}
	if !r.writer.stop(40 * time.Second) {
		r.logf("writer did not stop within 40s of SIGTERM: killed")
	}
	hist, err := readHistory(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("checkpoint history: %w", err)
	}
	nc.Close()
	r.nats.stop(30 * time.Second)
	r.logf("fleet stopped; checking")
	sum, err := r.check(hist)
	if sum != nil {
		for id, why := range undrained {
			sum.undrained[id] = append(why, sum.undrained[id]...)
		}
		r.mu.Lock()
		sum.notes = append(sum.notes, r.notes...)
		r.mu.Unlock()
		for _, s := range append(r.all(), r.nats) {
			sum.unexpected = append(sum.unexpected, s.unexpectedExits()...)
		}
	}
	return sum, err
}

// waitRetry calls wait until it succeeds or ctx ends, riding out the
// transient errors of a fleet just out of chaos.
func waitRetry(ctx context.Context, wait func(context.Context) error) error {
	for {
		err := wait(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		}
	}
}

// diagnose prints what the operator commands say about the checkpoints
// and the group (a drain that did not finish).
func (r *run) diagnose() {
	for _, args := range [][]string{{"status"}, {"group", "describe", groupName}} {
		cmd := exec.Command(r.bins.worker, append(args, "--nats", r.natsURL, "--journal", journalName)...)
		out, err := cmd.CombinedOutput()
		r.logf("diagnosis: worker %s (%v):\n%s", strings.Join(args, " "), err, out)
	}
}
