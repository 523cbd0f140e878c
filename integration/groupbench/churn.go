package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// churnResult is one system's churn phase.
type churnResult struct {
	sys                  string
	produced             uint64
	rate                 float64 // achieved production rate
	maxLag               time.Duration
	distinct             int
	repeats, orderViol   int
	kills, leaves, joins int
	processes            int // member processes started
	fig                  churnFigures
	duration             time.Duration
	notes                []string
}

const churnGroup = "churn"

// churnRig is the churn phase's member processes.
type churnRig struct {
	env   *runEnv
	sys   string
	srv   *server
	js    jetstream.JetStream
	dir   string
	logs  []string
	all   []*member
	alive []*member // oldest first
	seq   int
}

func (c *churnRig) start(memberName string) (*member, error) {
	cfg := c.env.cfg
	c.seq++
	label := fmt.Sprintf("%s#%d", memberName, c.seq)
	log := filepath.Join(c.dir, fmt.Sprintf("churn-%s-%d.log", c.sys, c.seq))
	m, err := startMember(c.env, memberOpts{system: c.sys, url: c.srv.url, name: memberName, group: churnGroup, log: log,
		partitions: cfg.Partitions, batch: cfg.Batch, slots: cfg.Slots, sleep: cfg.Sleep, flush: cfg.Flush, session: cfg.Session, open: true},
		len(c.logs), label)
	if err != nil {
		return nil, err
	}
	c.logs = append(c.logs, log)
	c.all = append(c.all, m)
	c.alive = append(c.alive, m)
	return m, nil
}

func (c *churnRig) remove(m *member) {
	c.alive = slices.DeleteFunc(c.alive, func(x *member) bool { return x == m })
}

// instances returns the live processes of pcgroups member name.
func (c *churnRig) instances(name string) []*member {
	var out []*member
	for _, m := range c.alive {
		if m.group == name {
			out = append(out, m)
		}
	}
	return out
}

// active returns the instance of name that handled a batch last.
func (c *churnRig) active(name string) *member {
	var best *member
	var bestNs int64 = -1
	for _, m := range c.instances(name) {
		s, err := m.stat()
		if err == nil && s.LastNs > bestNs {
			best, bestNs = m, s.LastNs
		}
	}
	return best
}

// churn runs a group of ChurnMembers on a live stream at Rate events/s:
// Kills kill -9 cycles (kill, FailWait, a replacement, Settle), then
// Graceful leave + join cycles (Settle after each).
//
// batfleet and JetStream: the victim is the oldest member; the replacement
// is a new member (a join). pcgroups members have no liveness-driven
// reassignment (membership is administrative), so each member name runs
// two instances — pcgroups' high-availability model: the pinned one and a
// standby that the server pins once the pinned TTL (= AckWait = the
// session) has passed without pulls; the victim is the instance handling
// batches, the replacement a new standby of the same name. A graceful
// pcgroups leave is DeleteMembers then stopping the name's instances; a
// join starts two instances of a new name, then AddMembers.
func churn(ctx context.Context, env *runEnv, sys string) (res churnResult, err error) {
	cfg := env.cfg
	res.sys = sys
	began := time.Now()
	dir, err := os.MkdirTemp(cfg.Root, "groupbench-churn-"+sys+"-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	srv, err := startServer(env, sys, dir)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := srv.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	nc, err := connect(srv.url, "groupbench-harness")
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	rig := &churnRig{env: env, sys: sys, srv: srv, js: js, dir: dir}
	defer func() {
		for _, e := range stopAll(rig.alive, time.Minute) {
			if e != nil {
				res.notes = append(res.notes, e.Error())
			}
		}
	}()
	n := cfg.ChurnMembers
	var names []string // pcgroups member names, in the group
	switch sys {
	case sysJS:
		if err := jsSetup(ctx, js); err != nil {
			return res, err
		}
		if err := jsDurable(ctx, js, churnGroup, n, cfg.Session); err != nil {
			return res, err
		}
	case sysPCG:
		if err := jsSetup(ctx, js); err != nil {
			return res, err
		}
		if err := pcgCreate(ctx, js, churnGroup, cfg.Partitions); err != nil {
			return res, err
		}
		for i := range n {
			names = append(names, fmt.Sprintf("m%d", i))
		}
		if err := pcgMembers(ctx, js, churnGroup, true, names...); err != nil {
			return res, err
		}
	}
	if sys == sysPCG {
		for _, name := range names {
			if _, err := rig.start(name); err != nil {
				return res, err
			}
		}
		time.Sleep(time.Second) // the first instances get pinned
		for _, name := range names {
			if _, err := rig.start(name); err != nil {
				return res, err
			}
		}
	} else {
		for i := range n {
			if _, err := rig.start(fmt.Sprintf("m%d", i)); err != nil {
				return res, err
			}
		}
		if sys == sysBatfleet {
			if err := waitBalanced(rig.alive, cfg.Partitions, time.Minute); err != nil {
				res.notes = append(res.notes, err.Error())
			}
		}
	}
	prod, err := newProducer(sys, srv.url, cfg.Entities)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	pc := startPaced(ctx, prod, cfg.Rate)
	stopped := false
	defer func() {
		if !stopped {
			_, _, _ = pc.stop()
			prod.close()
		}
	}()
	time.Sleep(cfg.Warmup)
	var acts []action
	for k := range cfg.Kills {
		var victim *member
		if sys == sysPCG {
			victim = rig.active(names[k%len(names)])
		} else {
			victim = rig.alive[0]
		}
		if victim == nil {
			return res, fmt.Errorf("kill %d: no live instance", k+1)
		}
		stored := pc.stored()
		at := time.Now()
		victim.c.Kill()
		rig.remove(victim)
		acts = append(acts, action{kind: "kill", at: at.UnixNano(), proc: victim.proc, desc: victim.name, stored: stored})
		env.say("%s: kill -9 %s (%d/%d)", sys, victim.name, k+1, cfg.Kills)
		time.Sleep(cfg.FailWait)
		if sys == sysPCG {
			if _, err := rig.start(victim.group); err != nil { // a new standby
				return res, err
			}
		} else {
			m, err := rig.start(fmt.Sprintf("r%d", k))
			if err != nil {
				return res, err
			}
			acts = append(acts, action{kind: "join", at: m.ready.UnixNano(), proc: m.proc, desc: m.name})
		}
		time.Sleep(cfg.Settle)
	}
	for g := range cfg.Graceful {
		if sys == sysPCG {
			name := names[g%len(names)]
			victim := rig.active(name)
			at := time.Now()
			if err := pcgMembers(ctx, js, churnGroup, false, name); err != nil {
				return res, err
			}
			acts = append(acts, action{kind: "leave", at: at.UnixNano(), proc: victim.proc, desc: name})
			time.Sleep(time.Second)
			for _, m := range rig.instances(name) {
				if err := m.c.Stop(0, time.Minute); err != nil {
					res.notes = append(res.notes, err.Error())
				}
				rig.remove(m)
			}
			time.Sleep(max(cfg.Settle-time.Second, 0))
			joined := fmt.Sprintf("j%d", g)
			first, err := rig.start(joined)
			if err != nil {
				return res, err
			}
			if _, err := rig.start(joined); err != nil {
				return res, err
			}
			at = time.Now()
			if err := pcgMembers(ctx, js, churnGroup, true, joined); err != nil {
				return res, err
			}
			acts = append(acts, action{kind: "join", at: at.UnixNano(), proc: first.proc, desc: joined})
			names[g%len(names)] = joined
		} else {
			victim := rig.alive[0]
			at := time.Now()
			acts = append(acts, action{kind: "leave", at: at.UnixNano(), proc: victim.proc, desc: victim.name})
			if err := victim.c.Stop(0, time.Minute); err != nil {
				res.notes = append(res.notes, err.Error())
			}
			rig.remove(victim)
			time.Sleep(cfg.Settle)
			m, err := rig.start(fmt.Sprintf("j%d", g))
			if err != nil {
				return res, err
			}
			acts = append(acts, action{kind: "join", at: m.ready.UnixNano(), proc: m.proc, desc: m.name})
		}
		env.say("%s: leave + join %d/%d", sys, g+1, cfg.Graceful)
		time.Sleep(cfg.Settle)
	}
	produced, lag, perr := pc.stop()
	prod.close()
	stopped = true
	if perr != nil {
		return res, fmt.Errorf("producer: %w", perr)
	}
	res.produced, res.maxLag = produced, lag
	res.rate = float64(produced) / time.Since(t0).Seconds()
	// drain: every produced event handled
	var h handling
	var bs []batch
	deadline := time.Now().Add(3 * time.Minute)
	for {
		time.Sleep(time.Second)
		if bs, err = readLogs(rig.logs); err != nil {
			return res, err
		}
		h = account(bs, produced, cfg.Entities)
		if h.distinct == int(produced) {
			break
		}
		if time.Now().After(deadline) {
			res.notes = append(res.notes, fmt.Sprintf("only %d of %d events handled 3 minutes after the producer stopped", h.distinct, produced))
			break
		}
	}
	endNs := time.Now().UnixNano()
	res.distinct, res.repeats, res.orderViol = h.distinct, h.repeats, h.orderViol
	if h.foreign > 0 {
		res.notes = append(res.notes, fmt.Sprintf("%d handled events outside the produced range", h.foreign))
	}
	for _, a := range acts {
		switch a.kind {
		case "kill":
			res.kills++
		case "leave":
			res.leaves++
		case "join":
			res.joins++
		}
	}
	res.processes = len(rig.all)
	res.fig = analyzeChurn(bs, h, acts, sys, cfg.Entities, cfg.Partitions, endNs)
	res.duration = time.Since(began)
	env.say("%s churn: failover p50 %s p99 %s (%d unresumed), moved p99 %s, unmoved max %s, graceful repeats %d, order violations %d",
		sys, fmtDur(percentile(res.fig.failover, 50)), fmtDur(percentile(res.fig.failover, 99)), res.fig.unresumed,
		fmtDur(percentile(res.fig.moved, 99)), fmtDur(percentile(res.fig.unmoved, 100)), res.fig.gracefulRepeat, res.orderViol)
	return res, nil
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}
