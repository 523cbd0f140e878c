package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/batfleet/batfleet/integration/internal/benchkit"
)

// member is a member process, from the harness's side.
type member struct {
	c     *benchkit.Child
	name  string // process name (batfleet member id, pcgroups instance)
	group string // pcgroups: the member name it consumes as
	proc  int    // index of its log in the phase's log list
	ready time.Time
}

// startMember starts a member process and waits until it has joined.
func startMember(env *runEnv, o memberOpts, proc int, label string) (*member, error) {
	c, err := benchkit.StartChild("member "+label, env.self, o.args(), &benchkit.PrefixWriter{W: os.Stderr, Prefix: o.system + " member " + label + ": "})
	if err != nil {
		return nil, err
	}
	var x struct{}
	if err := c.Await("ready", &x, time.Minute); err != nil {
		_ = c.Stop(syscall.SIGKILL, 5*time.Second)
		return nil, err
	}
	return &member{c: c, name: label, group: o.name, proc: proc, ready: time.Now()}, nil
}

func (m *member) stat() (memberStats, error) {
	var s memberStats
	err := m.c.Request("stat", &s, 30*time.Second)
	return s, err
}

// stopAll stops members gracefully (concurrently), killing those that do
// not leave within grace.
func stopAll(ms []*member, grace time.Duration) []error {
	errs := make([]error, len(ms))
	done := make(chan struct{})
	for i, m := range ms {
		go func() {
			errs[i] = m.c.Stop(0, grace)
			done <- struct{}{}
		}()
	}
	for range ms {
		<-done
	}
	return errs
}

// scalingResult is one group size's drain of the loaded events.
type scalingResult struct {
	sys                string
	n                  int
	events             int // distinct events handled
	repeats, orderViol int
	preGo              int // handled while the gate was closed
	steady, whole      float64
	elapsed            time.Duration // go → last event handled
	serverCores        float64       // server process CPU ÷ elapsed
	memberCores        float64       // members' CPU ÷ elapsed
	avgBatch           float64
	load               time.Duration // the system's load (and pcgroups' sourcing) time
	notes              []string
}

// scaling loads cfg.Events once into a fresh server of sys, then drains
// them with a group of each size in turn (a new group, consumer group or
// durable each time, from the first event).
func scaling(ctx context.Context, env *runEnv, sys string) (_ []scalingResult, err error) {
	cfg := env.cfg
	dir, err := os.MkdirTemp(cfg.Root, "groupbench-scaling-"+sys+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := startServer(env, sys, dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := srv.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	nc, err := connect(srv.url, "groupbench-harness")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if sys != sysBatfleet {
		if err := jsSetup(ctx, js); err != nil {
			return nil, err
		}
	}
	if sys == sysPCG { // before the load: the groups' streams source while it runs
		for _, n := range cfg.Members {
			if err := pcgCreate(ctx, js, fmt.Sprintf("s%d", n), cfg.Partitions); err != nil {
				return nil, err
			}
		}
	}
	total := uint64(cfg.Events)
	t0 := time.Now()
	p, err := newProducer(sys, srv.url, cfg.Entities)
	if err != nil {
		return nil, err
	}
	err = bulkLoad(ctx, p, total)
	p.close()
	if err != nil {
		return nil, err
	}
	if sys == sysPCG {
		for _, n := range cfg.Members {
			if err := pcgWaitSourced(ctx, js, fmt.Sprintf("s%d", n), total, 10*time.Minute); err != nil {
				return nil, err
			}
		}
	}
	load := time.Since(t0)
	env.say("%s: %s events loaded in %s (%.0f/s%s)", sys, benchkit.Thousands(int64(total)), load.Round(100*time.Millisecond), float64(total)/load.Seconds(),
		map[bool]string{true: ", sourced into every consumer group's stream", false: ""}[sys == sysPCG])
	var out []scalingResult
	for _, n := range cfg.Members {
		r, err := scalingRun(ctx, env, sys, srv, js, dir, n, total)
		if err != nil {
			return nil, fmt.Errorf("group of %d: %w", n, err)
		}
		r.load = load
		out = append(out, r)
		env.say("%s N=%d: steady %.0f events/s, whole %.0f/s (%s), server %.2f cores, members %.2f cores, %d repeats, %d out of order",
			sys, n, r.steady, r.whole, r.elapsed.Round(10*time.Millisecond), r.serverCores, r.memberCores, r.repeats, r.orderViol)
	}
	return out, nil
}

func scalingRun(ctx context.Context, env *runEnv, sys string, srv *server, js jetstream.JetStream, dir string, n int, total uint64) (r scalingResult, err error) {
	cfg := env.cfg
	r = scalingResult{sys: sys, n: n}
	group := fmt.Sprintf("s%d", n)
	var names, logs []string
	for i := range n {
		names = append(names, fmt.Sprintf("%s-m%d", group, i))
		logs = append(logs, filepath.Join(dir, fmt.Sprintf("%s-%s-m%d.log", sys, group, i)))
	}
	switch sys {
	case sysJS:
		if err := jsDurable(ctx, js, group, n, cfg.Session); err != nil {
			return r, err
		}
	case sysPCG:
		if err := pcgMembers(ctx, js, group, true, names...); err != nil {
			return r, err
		}
	}
	var ms []*member
	defer func() {
		for i, e := range stopAll(ms, time.Minute) {
			if e != nil && err == nil {
				err = fmt.Errorf("member %s: %w", ms[i].name, e)
			}
		}
	}()
	for i := range n {
		m, err := startMember(env, memberOpts{system: sys, url: srv.url, name: names[i], group: group, log: logs[i],
			partitions: cfg.Partitions, batch: cfg.Batch, slots: cfg.Slots, sleep: cfg.Sleep, flush: cfg.Flush, session: cfg.Session}, i, names[i])
		if err != nil {
			return r, err
		}
		ms = append(ms, m)
	}
	if sys == sysBatfleet {
		if err := waitBalanced(ms, cfg.Partitions, time.Minute); err != nil {
			r.notes = append(r.notes, err.Error())
		}
	} else {
		time.Sleep(time.Second)
	}
	pids := func() (cpu time.Duration) {
		for _, m := range ms {
			cpu += cpuOf(m.c.Pid())
		}
		return cpu
	}
	s0, m0 := cpuOf(srv.proc.Pid()), pids()
	goNs := time.Now().UnixNano()
	for _, m := range ms {
		var x struct{}
		if err := m.c.Request("go", &x, 30*time.Second); err != nil {
			return r, err
		}
	}
	// wait until the members have handled every event (repeats included),
	// then until the logs show each one
	deadline := time.Now().Add(30 * time.Minute)
	var h handling
	var bs []batch
	for {
		time.Sleep(250 * time.Millisecond)
		var sum uint64
		for _, m := range ms {
			s, err := m.stat()
			if err != nil {
				return r, err
			}
			if s.Err != "" {
				return r, fmt.Errorf("member %s: log: %s", m.name, s.Err)
			}
			sum += s.Handled
		}
		if sum >= total {
			if bs, err = readLogs(logs); err != nil {
				return r, err
			}
			if h = account(bs, total, cfg.Entities); h.distinct == int(total) {
				break
			}
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("%d of %d events handled after 30 minutes", h.distinct, total)
		}
	}
	s1, m1 := cpuOf(srv.proc.Pid()), pids()
	var last int64
	r.steady, r.whole, last, r.preGo = rates(h, goNs)
	r.elapsed = time.Duration(last - goNs)
	r.events, r.repeats, r.orderViol = h.distinct, h.repeats, h.orderViol
	if h.foreign > 0 {
		r.notes = append(r.notes, fmt.Sprintf("%d handled events outside the loaded range", h.foreign))
	}
	if el := time.Since(time.Unix(0, goNs)).Seconds(); el > 0 {
		r.serverCores, r.memberCores = (s1-s0).Seconds()/el, (m1-m0).Seconds()/el
	}
	handled := 0
	for _, b := range bs {
		handled += len(b.idx)
	}
	if len(bs) > 0 {
		r.avgBatch = float64(handled) / float64(len(bs))
	}
	for i, e := range stopAll(ms, time.Minute) {
		if e != nil {
			r.notes = append(r.notes, fmt.Sprintf("member %s: %v", ms[i].name, e))
		}
	}
	ms = nil
	switch sys {
	case sysJS:
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_ = js.DeleteConsumer(dctx, streamName, group)
		cancel()
	case sysPCG:
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_ = pcgroups.DeleteElastic(dctx, js, streamName, group)
		cancel()
	}
	return r, nil
}

// waitBalanced polls batfleet members until every partition is owned and
// each member owns ⌊P/N⌋ or ⌈P/N⌉.
func waitBalanced(ms []*member, parts int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	lo, hi := parts/len(ms), (parts+len(ms)-1)/len(ms)
	var owned []int
	for time.Now().Before(deadline) {
		owned = owned[:0]
		sum, ok := 0, true
		for _, m := range ms {
			s, err := m.stat()
			if err != nil {
				return err
			}
			owned = append(owned, s.Owned)
			sum += s.Owned
			ok = ok && (s.Owned == lo || s.Owned == hi || (lo == 0 && s.Owned <= 1))
		}
		if ok && sum == parts {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("group of %d not balanced within %s: partitions owned %v", len(ms), timeout, owned)
}

// cpuOf is the CPU time of process pid so far; 0 for a process that is gone.
func cpuOf(pid int) time.Duration {
	d, _ := benchkit.ProcCPU(pid)
	return d
}
