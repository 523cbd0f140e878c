//go:build linux

package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/natstest"
	"github.com/batfleet/batfleet/kvckpt"
)

// The chaos run of consumer groups across processes (SPEC §16: GRP-04,
// GRP-05, GRP-10, GRP-11): a writer and an embedded server in this
// process, group members in child processes (helperGroupMember), which
// are killed, paused past their session and resumed, stopped gracefully
// and joined while the writer appends. Each member logs every batch its
// handler is given before the handler returns (so before the commit);
// every update of the partitions' checkpoints is recorded by a KV watcher
// started before any member. The verdict comes from those two records.
const (
	chaosGroup    = "chaos"
	chaosScope    = "chaos"
	chaosParts    = 64
	chaosSession  = 2 * time.Second
	chaosBatch    = 64
	chaosEvents   = 100_000 // in the group's region
	chaosEntities = 1_000
	chaosAppends  = 50 // appends of chaosEvents/chaosAppends region events (and a few of another scope)
	chaosMembers  = 4
	chaosKills    = 22
	chaosPauses   = 2
	chaosLeaves   = 3
	chaosJoins    = 1 // joins beyond the replacements of leaves and kills
	// chaosTakeover bounds how long the partitions of a member killed in
	// calm stay unclaimed: GRP-04's session + 1 s, and slack for a loaded
	// 2-core machine under the race detector. (During the chaos a
	// takeover may wait for several sessions: the member the partitions
	// are assigned to can be killed before it claims them.)
	chaosTakeover = chaosSession + time.Second + 3*time.Second
)

// TestGRP10_ChaosKillsPausesLeavesJoins runs 100,000 events over 1,000
// entities through a group of 4 member processes (64 partitions, 2 s
// sessions) while members are killed (SIGKILL, restarted with the same id
// or a new one), paused with SIGSTOP until their partitions are taken
// over and then resumed (zombies), stopped gracefully (SIGTERM, or stdin
// closed) and joined. It checks:
//
//   - GRP-11, on the recorded KV history of every partition checkpoint:
//     positions and epochs never go back; a claim is epoch+1 at the
//     position in place, by a named owner; under one epoch one owner
//     commits, and nothing follows its release; no update was missed.
//   - GRP-10: every event of the region is handled; each owner's log (one
//     process, one partition, one epoch) is exactly the partition's events
//     that follow the claimed position, in seq order, with no gap (so each
//     entity's events ascend); an event handled again lies beyond what the
//     earlier owner had committed.
//   - GRP-04: each owner handled at most one batch beyond its last commit;
//     every killed member's partitions are claimed again, those of a kill
//     in calm at the end within chaosTakeover; no partition is claimed,
//     unreleased, from a member whose heartbeats kept landing.
//   - GRP-05: no batch reaches a handler under an epoch the partition had
//     already left (claimed at a higher epoch, by the KV's own clock on
//     this host) — in particular a resumed zombie handles nothing more of
//     the partitions it lost, and its commits are refused (GRP-11).
//
// Every wait polls the records with a deadline; only the pacing of the
// actions and of the appends is by time. BATFLEET_CRASH_SEED replays a
// plan; BATFLEET_CHAOS_LOGDIR keeps every member's debug log.
func TestGRP10_ChaosKillsPausesLeavesJoins(t *testing.T) {
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	begin := time.Now()
	f := newChaosFleet(t)

	for range chaosMembers {
		f.start(t, f.newID())
	}
	waitFor(t, waitLimit, "every partition claimed", f.stable)
	t.Logf("%d members own the %d partitions after %v", chaosMembers, chaosParts, time.Since(begin).Round(time.Millisecond))

	appended := f.appendPaced(t, rng.Uint64())

	// The plan: kills, pauses, leaves and joins in a seeded order (the
	// pauses while events still flow), a seeded pause between actions.
	plan := []string{"pause"}
	for _, a := range []struct {
		what string
		n    int
	}{{"kill", chaosKills}, {"pause", chaosPauses - 1}, {"leave", chaosLeaves}, {"join", chaosJoins}} {
		for range a.n {
			plan = append(plan, a.what)
		}
	}
	rng.Shuffle(len(plan)-1, func(i, j int) { plan[i+1], plan[j+1] = plan[j+1], plan[i+1] })
	if i := slices.Index(plan[1:], "pause"); i > len(plan)/2 {
		plan[1+i], plan[len(plan)/2] = plan[len(plan)/2], plan[1+i]
	}
	chaosBegin := time.Now()
	for n, action := range plan {
		time.Sleep(time.Duration(200+rng.IntN(400)) * time.Millisecond) // pacing, not synchronisation
		switch action {
		case "kill":
			f.kill(t, rng, true)
		case "pause":
			f.pause(t, rng)
		case "leave":
			f.leave(t, rng, n%2 == 0)
		case "join":
			f.join(t)
		}
	}
	t.Logf("chaos: %d actions in %v", len(plan), time.Since(chaosBegin).Round(time.Millisecond))

	events := appended()
	if !poll(3*waitLimit, func() bool { return f.kv.caughtUp(events.last) && f.stable() }) {
		t.Fatalf("%s: not every event committed, or not every partition owned by a running member, after %v: %s; %s",
			time.Now().Format("15:04:05.000"), 3*waitLimit, f.kv.lagging(events.last), f.unstable())
	}
	t.Logf("every event committed %v after the start", time.Since(begin).Round(time.Millisecond))

	// GRP-04 in calm: one more kill, no restart, once every departed
	// member's session has expired for everyone.
	f.waitDeadKeysExpired(t)
	gone := f.kill(t, rng, false)
	waitFor(t, waitLimit, "the last killed member's partitions claimed by the others", func() bool {
		for part, e := range gone.owned {
			if u := f.kv.last(part); u.rec.Epoch <= e {
				return false
			}
		}
		return true
	})
	f.stopAll(t)
	f.kv.settle(t, f)
	t.Logf("run over after %v; checking", time.Since(begin).Round(time.Millisecond))

	runs := f.checkKVHistory(t)
	f.checkLogs(t, events, runs)
	f.checkTakeovers(t, gone)
	t.Logf("total %v", time.Since(begin).Round(time.Millisecond))
}

// chaosFleet is the test's side: server, writer, the KV record and the
// member processes.
type chaosFleet struct {
	srv   interface{ ClientURL() string }
	store *journal.Store
	js    jetstream.JetStream
	ckKV  jetstream.KeyValue
	kv    *ckptHistory
	beats *memberBeats

	ids     int                    // member ids handed out
	procs   []*memberProc          // every process started, in order
	live    map[string]*memberProc // the running incarnation of each id
	kills   []killRecord
	pauses  []pauseRecord
	leaves  int
	statics int // kills restarted with the same id
}

type killRecord struct {
	id     string
	pid    int
	at     time.Time
	owned  map[uint16]uint64 // partition → epoch the killed member held
	static bool              // restarted with the same id
}

type pauseRecord struct {
	proc       *memberProc
	stop, cont time.Time
	lost       map[uint16]uint64
}

func newChaosFleet(t *testing.T) *chaosFleet {
	t.Helper()
	dir := t.TempDir()
	srv := natstest.StartServer(t)
	wnc, _ := natstest.Connect(t, srv, nats.Name("chaos-writer"))
	_, js := natstest.Connect(t, srv, nats.Name("chaos-observer"))
	s, err := journal.Open(dir, journal.Config{MaxEntryBytes: fleet.MaxEntryBytes(wnc.MaxPayload())})
	if err != nil {
		t.Fatal(err)
	}
	w, err := fleet.NewWriter(wnc, s, fleet.WriterConfig{Journal: journalName})
	if err != nil {
		_ = s.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			t.Errorf("close writer: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close journal: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The members bind this bucket; its larger history is a second line
	// of defence behind the watcher (which checks it missed nothing).
	ck, err := kvckpt.Open(ctx, js, kvckpt.Config{Journal: journalName, History: 64})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, ck.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	f := &chaosFleet{srv: srv, store: s, js: js, ckKV: kv, live: map[string]*memberProc{}}
	f.kv = watchCheckpoints(t, kv)
	f.beats = watchMembers(t, js)
	return f
}

func (f *chaosFleet) newID() string {
	f.ids++
	return fmt.Sprintf("m%d", f.ids-1)
}

// chaosEventLog is what was appended: each region event's entity and
// partition, and each partition's seqs in order.
type chaosEventLog struct {
	entity map[uint64]string
	part   map[uint64]uint16
	seqs   [chaosParts][]uint64
	last   [chaosParts]uint64
}

func chaosPartition(entity string) uint16 {
	b := engine.Bucket(entity)
	for i := range uint16(chaosParts) {
		if (engine.Partition{Index: i, Count: chaosParts}).Holds(b) {
			return i
		}
	}
	panic("no partition holds bucket " + strconv.Itoa(int(b)))
}

// appendPaced appends the events from a goroutine, paced over about 20 s
// (the chaos runs meanwhile), and returns a function that waits for the
// appends and returns what they were.
func (f *chaosFleet) appendPaced(t *testing.T, seed uint64) func() *chaosEventLog {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	log := &chaosEventLog{entity: make(map[uint64]string, chaosEvents), part: make(map[uint64]uint16, chaosEvents)}
	partOf := make([]uint16, chaosEntities)
	for i := range partOf {
		partOf[i] = chaosPartition(chaosEntity(i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		per := chaosEvents / chaosAppends
		tick := time.NewTicker(400 * time.Millisecond)
		defer tick.Stop()
		for n := range chaosAppends {
			events := make([]engine.Event, 0, per+per/20)
			for i := range per {
				events = append(events, dataEvent(chaosEntity(rng.IntN(chaosEntities)), chaosScope, strconv.Itoa(n*per+i)))
				if i%20 == 0 { // outside the group's region: never handled
					events = append(events, dataEvent(chaosEntity(rng.IntN(chaosEntities)), "other", "x"))
				}
			}
			rs, err := f.store.AppendBatch(ctx, events)
			if err != nil {
				done <- fmt.Errorf("append %d: %w", n, err)
				return
			}
			for i, rc := range rs {
				if ev := events[i]; ev.Coordinate.Scope() == chaosScope {
					e := ev.Coordinate.Entity()
					idx, _ := strconv.Atoi(e[1:])
					p := partOf[idx]
					log.entity[rc.Seq], log.part[rc.Seq] = e, p
					log.seqs[p] = append(log.seqs[p], rc.Seq)
					log.last[p] = rc.Seq
				}
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				done <- ctx.Err()
				return
			}
		}
		done <- nil
	}()
	t.Cleanup(cancel)
	return func() *chaosEventLog {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(3 * waitLimit):
			t.Fatal("appends not done within", 3*waitLimit)
		}
		return log
	}
}

func chaosEntity(i int) string { return fmt.Sprintf("e%04d", i) }

// owned returns the partitions whose checkpoint names m's id as owner,
// with their epochs, as far as the watcher has seen; mine keeps those m
// claimed itself (not those of an earlier process with its id).
func (f *chaosFleet) owned(m *memberProc, mine bool) map[uint16]uint64 {
	f.kv.mu.Lock()
	defer f.kv.mu.Unlock()
	out := map[uint16]uint64{}
	for p, u := range f.kv.latest {
		if u != nil && u.rec.Owner == m.id && (!mine || !f.kv.claimed[p].Before(m.started)) {
			out[uint16(p)] = u.rec.Epoch
		}
	}
	return out
}

// stable reports whether every partition is owned by the running process
// of its owner's id, which claimed it.
func (f *chaosFleet) stable() bool {
	f.kv.mu.Lock()
	defer f.kv.mu.Unlock()
	for p, u := range f.kv.latest {
		if u == nil || f.live[u.rec.Owner] == nil || f.kv.claimed[p].Before(f.live[u.rec.Owner].started) {
			return false
		}
	}
	return true
}

// unstable describes the partitions stable finds wanting.
func (f *chaosFleet) unstable() string {
	f.kv.mu.Lock()
	defer f.kv.mu.Unlock()
	var out []string
	for p, u := range f.kv.latest {
		switch {
		case u == nil:
			out = append(out, fmt.Sprintf("%d: no record", p))
		case f.live[u.rec.Owner] == nil || f.kv.claimed[p].Before(f.live[u.rec.Owner].started):
			out = append(out, fmt.Sprintf("%d: owner %q epoch %d since %s", p, u.rec.Owner, u.rec.Epoch, f.kv.claimed[p].Format("15:04:05.000")))
		}
	}
	return strings.Join(out, "; ")
}

// pick returns a random running member, preferring members that have
// joined and own partitions they claimed (ids in order: a seeded choice).
func (f *chaosFleet) pick(rng *rand.Rand) *memberProc {
	var owners, joined, all []string
	for id, m := range f.live {
		all = append(all, id)
		if m.hasJoined() {
			joined = append(joined, id)
			if len(f.owned(m, true)) > 0 {
				owners = append(owners, id)
			}
		}
	}
	for _, ids := range [][]string{owners, joined, all} {
		if len(ids) > 0 {
			slices.Sort(ids)
			return f.live[ids[rng.IntN(len(ids))]]
		}
	}
	return nil
}

// kill SIGKILLs a member and, with restart, starts it again at once with
// the same id (static membership) or a new one.
func (f *chaosFleet) kill(t *testing.T, rng *rand.Rand, restart bool) killRecord {
	t.Helper()
	m := f.pick(rng)
	m.signal(syscall.SIGKILL)
	at := time.Now()
	m.fate = "killed"
	_ = m.waitExit(t)
	rec := killRecord{id: m.id, pid: m.pid(), at: at, owned: f.owned(m, false), static: restart && rng.IntN(2) == 0}
	f.kills = append(f.kills, rec)
	delete(f.live, m.id)
	msg := fmt.Sprintf("%s: killed %s (pid %d, partitions %v)", at.Format("15:04:05.000"), m.id, m.pid(), slices.Sorted(maps.Keys(rec.owned)))
	if restart {
		id := m.id
		if rec.static {
			f.statics++
		} else {
			id = f.newID()
		}
		n := f.start(t, id)
		msg += fmt.Sprintf(", restarted as %s (pid %d)", id, n.pid())
	}
	t.Log(msg)
	return rec
}

// pause waits until every partition is owned by a running member, then
// SIGSTOPs a member owning partitions until every one of them has been
// claimed by another member (past its session), and resumes it.
func (f *chaosFleet) pause(t *testing.T, rng *rand.Rand) {
	t.Helper()
	if !poll(waitLimit, f.stable) {
		t.Fatalf("%s: partitions not owned by a running member for %v: %s", time.Now().Format("15:04:05.000"), waitLimit, f.unstable())
	}
	m := f.pick(rng)
	m.signal(syscall.SIGSTOP)
	p := pauseRecord{proc: m, stop: time.Now()}
	p.lost = f.owned(m, false)
	waitFor(t, waitLimit, fmt.Sprintf("the partitions of paused %s taken over", m.id), func() bool {
		for part, epoch := range p.lost {
			if u := f.kv.last(part); u.rec.Epoch <= epoch || u.rec.Owner == m.id {
				return false
			}
		}
		return true
	})
	m.signal(syscall.SIGCONT)
	p.cont = time.Now()
	m.paused = append(m.paused, [2]time.Time{p.stop, p.cont})
	f.pauses = append(f.pauses, p)
	t.Logf("%s: paused %s (pid %d, partitions %v) until they were taken over, resumed at %s",
		p.stop.Format("15:04:05.000"), m.id, m.pid(), slices.Sorted(maps.Keys(p.lost)), p.cont.Format("15:04:05.000"))
}

// waitDeadKeysExpired waits until the key of every member not running
// is gone, or has been unchanged for a session and a heartbeat by the
// server's clock (so every member judges it dead).
func (f *chaosFleet) waitDeadKeysExpired(t *testing.T) {
	t.Helper()
	waitFor(t, waitLimit, "the keys of departed members to expire", func() bool {
		f.beats.mu.Lock()
		defer f.beats.mu.Unlock()
		for id, beats := range f.beats.beats {
			if f.live[id] == nil && !f.beats.gone[id] && time.Since(beats[len(beats)-1]) < chaosSession+chaosSession/3 {
				return false
			}
		}
		return true
	})
}

// leave stops a member gracefully (SIGTERM or stdin closed), checks it
// left cleanly, and starts a new member when fewer than chaosMembers run.
func (f *chaosFleet) leave(t *testing.T, rng *rand.Rand, sigterm bool) {
	t.Helper()
	m := f.pick(rng)
	if sigterm {
		m.signal(syscall.SIGTERM)
	} else {
		_ = m.stdin.Close()
	}
	m.fate = "left"
	if err := m.waitExit(t); err != nil || !strings.HasSuffix(m.leftLine(), " <nil>") {
		t.Fatalf("member %s (pid %d) did not leave cleanly: %v, %q; stderr:\n%s", m.id, m.pid(), err, m.leftLine(), m.stderr.String())
	}
	f.leaves++
	delete(f.live, m.id)
	t.Logf("%s: %s (pid %d) left (sigterm %v): %s", time.Now().Format("15:04:05.000"), m.id, m.pid(), sigterm, m.leftLine())
	if len(f.live) < chaosMembers {
		f.join(t)
	}
}

// join starts a member with a new id.
func (f *chaosFleet) join(t *testing.T) {
	t.Helper()
	m := f.start(t, f.newID())
	t.Logf("%s: %s (pid %d) joins", time.Now().Format("15:04:05.000"), m.id, m.pid())
}

// stopAll stops every running member gracefully, at once.
func (f *chaosFleet) stopAll(t *testing.T) {
	t.Helper()
	for _, m := range f.live {
		m.fate = "stopped"
		_ = m.stdin.Close()
	}
	for _, m := range f.live {
		if err := m.waitExit(t); err != nil || !strings.HasSuffix(m.leftLine(), " <nil>") {
			t.Errorf("member %s (pid %d) did not stop cleanly: %v, %q; stderr:\n%s", m.id, m.pid(), err, m.leftLine(), m.stderr.String())
		}
	}
	f.live = map[string]*memberProc{}
}

// poll polls cond every millisecond until it holds (true) or limit
// passes (false).
func poll(limit time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// memberProc is one member process (one incarnation of a member id).
type memberProc struct {
	id      string
	n       int // the process's number in chaosFleet.procs
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stderr  *syncBuffer
	exited  chan struct{} // closed after the output was read and Wait returned
	err     error         // Wait's result, set before exited closes
	fate    string        // "killed", "left", "stopped"
	started time.Time
	paused  [][2]time.Time

	mu      sync.Mutex // guards the fields below (written by the reader)
	joined  bool
	batches []handledBatch
	bad     []string // lines that do not parse, followed by more output
	cut     string   // the last line, when it does not parse (a kill mid-write)
	left    string
}

// handledBatch is one batch a member's handler was given.
type handledBatch struct {
	part     uint16
	epoch    uint64
	at       time.Time // handler entry, on the child's clock (this host's)
	seqs     []uint64
	entities []string
}

// start starts a member process with id; it is killed when the test ends
// and, through Pdeathsig, when this process dies.
func (f *chaosFleet) start(t *testing.T, id string) *memberProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.timeout=10m")
	cmd.Env = append(os.Environ(),
		helperRoleEnv+"=group-member",
		helperNATSEnv+"="+f.srv.ClientURL(),
		helperGroupEnv+"="+chaosGroup,
		helperMemberEnv+"="+id,
		helperPartsEnv+"="+strconv.Itoa(chaosParts),
		helperSessionEnv+"="+chaosSession.String(),
		helperBatchEnv+"="+strconv.Itoa(chaosBatch),
		helperGroupScopeEnv+"="+chaosScope,
	)
	dir := os.Getenv("BATFLEET_CHAOS_LOGDIR") // keep every member's log there, at debug level
	if dir != "" {
		cmd.Env = append(cmd.Env, helperLogLevelEnv+"=debug")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	m := &memberProc{id: id, n: len(f.procs), cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = m.stderr
	if dir != "" {
		lf, err := os.Create(filepath.Join(dir, fmt.Sprintf("%02d-%s.log", m.n, id)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = lf.Close() })
		cmd.Stderr = io.MultiWriter(m.stderr, lf)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if m.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	m.started = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start member %s: %v", id, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			m.parse(sc.Text())
		}
		m.err = cmd.Wait() // after every read from the pipe
		close(m.exited)
	}()
	t.Cleanup(func() {
		m.signal(syscall.SIGKILL)
		select {
		case <-m.exited:
		case <-time.After(waitLimit):
			t.Errorf("member %s (pid %d) not reaped within %v of SIGKILL", id, m.pid(), waitLimit)
		}
		if t.Failed() && m.fate != "killed" {
			lines := strings.Split(strings.TrimSpace(m.stderr.String()), "\n")
			t.Logf("member %s (pid %d, %s) stderr, the last lines (all of it in $BATFLEET_CHAOS_LOGDIR):\n%s",
				id, m.pid(), m.fate, strings.Join(lines[max(0, len(lines)-15):], "\n"))
		}
	})
	f.procs = append(f.procs, m)
	f.live[id] = m
	return m
}

func (m *memberProc) pid() int { return m.cmd.Process.Pid }

func (m *memberProc) signal(sig syscall.Signal) { _ = m.cmd.Process.Signal(sig) }

// waitExit waits (bounded) for the process to exit and returns Wait's
// result.
func (m *memberProc) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case <-m.exited:
		return m.err
	case <-time.After(waitLimit):
		t.Fatalf("member %s (pid %d) did not exit within %v; stderr:\n%s", m.id, m.pid(), waitLimit, m.stderr.String())
		return nil
	}
}

// pauseNote describes when at falls relative to m's pauses.
func (m *memberProc) pauseNote(at time.Time) string {
	for _, p := range slices.Backward(m.paused) {
		if at.After(p[1]) {
			return fmt.Sprintf("%v after its resumption at %s", at.Sub(p[1]).Round(time.Microsecond), p[1].Format("15:04:05.000000"))
		}
	}
	return "never paused before"
}

func (m *memberProc) hasJoined() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.joined
}

func (m *memberProc) leftLine() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.left
}

// parse records one line of the member's output.
func (m *memberProc) parse(line string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cut != "" {
		m.bad, m.cut = append(m.bad, m.cut), ""
	}
	switch {
	case strings.HasPrefix(line, "left "):
		m.left = line
		return
	case strings.HasPrefix(line, "joined "):
		m.joined = true
		return
	case !strings.HasPrefix(line, "b "):
		return // the test framework's lines
	}
	f := strings.Fields(line)
	bad := func() { m.cut = line }
	if len(f) < 6 || f[len(f)-1] != "." {
		bad()
		return
	}
	part, err1 := strconv.ParseUint(f[1], 10, 16)
	epoch, err2 := strconv.ParseUint(f[2], 10, 64)
	at, err3 := strconv.ParseInt(f[3], 10, 64)
	n, err4 := strconv.Atoi(f[4])
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || n != len(f)-6 {
		bad()
		return
	}
	b := handledBatch{part: uint16(part), epoch: epoch, at: time.Unix(0, at), seqs: make([]uint64, n), entities: make([]string, n)}
	for i, e := range f[5 : 5+n] {
		s, ent, ok := strings.Cut(e, ":")
		seq, err := strconv.ParseUint(s, 10, 64)
		if !ok || err != nil {
			bad()
			return
		}
		b.seqs[i], b.entities[i] = seq, ent
	}
	m.batches = append(m.batches, b)
}

// ckptUpdate is one update of the checkpoint bucket, as the watcher saw it.
type ckptUpdate struct {
	rev     uint64
	part    int // -1: not one of the group's partitions
	op      jetstream.KeyValueOp
	rec     checkpoint.Record
	err     error // the record does not decode
	created time.Time
}

// ckptHistory is every update of the checkpoint bucket, recorded by a
// watcher with history started before any member.
type ckptHistory struct {
	mu      sync.Mutex
	updates []ckptUpdate
	latest  [chaosParts]*ckptUpdate
	claimed [chaosParts]time.Time // when the latest epoch was claimed
}

// last returns partition p's latest update (a zero one if none).
func (h *ckptHistory) last(p uint16) ckptUpdate {
	h.mu.Lock()
	defer h.mu.Unlock()
	if u := h.latest[p]; u != nil {
		return *u
	}
	return ckptUpdate{}
}

func watchCheckpoints(t *testing.T, kv jetstream.KeyValue) *ckptHistory {
	t.Helper()
	h := &ckptHistory{}
	prefix := journalName + "."
	watchAll(t, kv, func(e jetstream.KeyValueEntry) {
		u := ckptUpdate{rev: e.Revision(), part: -1, op: e.Operation(), created: e.Created()}
		if id, err := kvckpt.ParseKeyToken(strings.TrimPrefix(e.Key(), prefix)); err == nil {
			if rest, ok := strings.CutPrefix(id, "group:"+chaosGroup+":"); ok {
				if i, err := strconv.Atoi(rest); err == nil && i >= 0 && i < chaosParts {
					u.part = i
				}
			}
		}
		if u.op == jetstream.KeyValuePut {
			u.rec, u.err = checkpoint.Decode(e.Value())
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.updates = append(h.updates, u)
		if u.part >= 0 {
			if prev := h.latest[u.part]; prev == nil || prev.rec.Epoch != u.rec.Epoch {
				h.claimed[u.part] = u.created
			}
			h.latest[u.part] = &u
		}
	})
	return h
}

// watchAll calls f with every update of kv, history included, from a
// goroutine, until the test ends.
func watchAll(t *testing.T, kv jetstream.KeyValue, f func(jetstream.KeyValueEntry)) {
	t.Helper()
	w, err := kv.WatchAll(context.Background(), jetstream.IncludeHistory())
	if err != nil {
		t.Fatalf("watch bucket %s: %v", kv.Bucket(), err)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for e := range w.Updates() {
			if e != nil { // nil: the end of the (empty) initial values
				f(e)
			}
		}
	}()
	t.Cleanup(func() {
		_ = w.Stop()
		select {
		case <-ended:
		case <-time.After(waitLimit):
			t.Errorf("watcher of %s did not end within %v", kv.Bucket(), waitLimit)
		}
	})
}

// memberBeats records when each member's key was written (its heartbeats
// landing), by the server's clock, from a watcher of the groups bucket
// started before any member.
type memberBeats struct {
	mu    sync.Mutex
	beats map[string][]time.Time
	gone  map[string]bool // the key was deleted (a graceful leave, a purge)
}

func watchMembers(t *testing.T, js jetstream.JetStream) *memberBeats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The members bind the bucket created here (as they would create it).
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: fleet.DefaultGroupBucket, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	b := &memberBeats{beats: map[string][]time.Time{}, gone: map[string]bool{}}
	prefix := journalName + "." + chaosGroup + ".m."
	watchAll(t, kv, func(e jetstream.KeyValueEntry) {
		token, ok := strings.CutPrefix(e.Key(), prefix)
		id, err := kvckpt.ParseKeyToken(token)
		if !ok || err != nil {
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		b.gone[id] = e.Operation() != jetstream.KeyValuePut
		if !b.gone[id] {
			b.beats[id] = append(b.beats[id], e.Created())
		}
	})
	return b
}

// aliveAt reports whether id's key was written both in the last half
// session before at and in the half session before that: a member no
// observer watching its key could judge dead at at.
func (b *memberBeats) aliveAt(id string, at time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	recent, before := false, false
	for _, h := range b.beats[id] {
		switch d := at.Sub(h); {
		case d >= 0 && d < chaosSession/2:
			recent = true
		case d >= chaosSession/2 && d < chaosSession:
			before = true
		}
	}
	return recent && before
}

// caughtUp reports whether every partition's checkpoint is at or past its
// last event.
func (h *ckptHistory) caughtUp(last [chaosParts]uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p, u := range h.latest {
		if last[p] != 0 && (u == nil || !u.rec.Started || u.rec.Position < last[p]) {
			return false
		}
	}
	return true
}

// lagging describes the partitions whose checkpoint is behind last.
func (h *ckptHistory) lagging(last [chaosParts]uint64) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for p, u := range h.latest {
		switch {
		case last[p] != 0 && u == nil:
			out = append(out, fmt.Sprintf("%d: no record (last event %d)", p, last[p]))
		case last[p] != 0 && (!u.rec.Started || u.rec.Position < last[p]):
			out = append(out, fmt.Sprintf("%d: at %d/%v, owner %q epoch %d (last event %d)", p, u.rec.Position, u.rec.Started, u.rec.Owner, u.rec.Epoch, last[p]))
		}
	}
	return "lagging: " + strings.Join(out, ", ")
}

// settle waits until the watcher has seen the bucket's last update.
func (h *ckptHistory) settle(t *testing.T, f *chaosFleet) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := f.js.Stream(ctx, "KV_"+f.ckKV.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	waitFor(t, waitLimit, fmt.Sprintf("the watcher to see revision %d", last), func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.updates) > 0 && h.updates[len(h.updates)-1].rev >= last
	})
}

// ord orders checkpoint positions: not started before every seq.
func ord(pos uint64, started bool) uint64 {
	if !started {
		return 0
	}
	return pos + 1
}

// epochRun is one epoch of a partition, from the KV history.
type epochRun struct {
	owner                     string
	claimPos                  uint64
	claimStarted              bool
	lastPos                   uint64 // the last position its owner committed
	lastStarted               bool
	claimed, ended            time.Time // KV times of its claim and of the next claim (zero: none)
	releasedRev, lastOwnerRev uint64
}

// failures collects the violations of one check and reports them at once.
type failures struct {
	what string
	n    int
	msgs []string
}

func (v *failures) add(format string, args ...any) {
	v.n++
	if len(v.msgs) < 15 {
		v.msgs = append(v.msgs, fmt.Sprintf(format, args...))
	}
}

func (v *failures) report(t *testing.T) {
	t.Helper()
	if v.n > 0 {
		t.Errorf("%s: %d violations; the first:\n  %s", v.what, v.n, strings.Join(v.msgs, "\n  "))
	}
}

// checkKVHistory checks GRP-11 on every recorded update and returns each
// partition's epochs.
func (f *chaosFleet) checkKVHistory(t *testing.T) [chaosParts]map[uint64]*epochRun {
	t.Helper()
	v := &failures{what: "GRP-11 KV history"}
	steal := &failures{what: "GRP-04/05 a partition claimed from a member alive by its heartbeats (not after its session)"}
	f.kv.mu.Lock()
	updates := slices.Clone(f.kv.updates)
	f.kv.mu.Unlock()
	var runs [chaosParts]map[uint64]*epochRun
	var prev [chaosParts]*ckptUpdate
	claims, releases, commits := 0, 0, 0
	for i := range updates {
		u := &updates[i]
		if u.rev != uint64(i)+1 {
			v.add("update %d has revision %d: the watcher missed updates", i, u.rev)
		}
		if u.part < 0 {
			v.add("revision %d: a key that is not a partition of the group", u.rev)
			continue
		}
		if u.op != jetstream.KeyValuePut || u.err != nil {
			v.add("partition %d, revision %d: %v (decode error %v)", u.part, u.rev, u.op, u.err)
			continue
		}
		rec, p := u.rec, u.part
		ident := engine.RegionAll().WithScope(chaosScope).WithPartition(engine.Partition{Index: uint16(p), Count: chaosParts}).Identity()
		if rec.RegionIdentity == nil || *rec.RegionIdentity != ident {
			v.add("partition %d, revision %d: region identity %v, want %q", p, u.rev, rec.RegionIdentity, ident)
		}
		if runs[p] == nil {
			runs[p] = map[uint64]*epochRun{}
		}
		before := prev[p]
		prev[p] = u
		if before == nil || rec.Epoch > before.rec.Epoch { // a claim
			claims++
			wantEpoch, pos, started := uint64(1), uint64(0), false
			if before != nil {
				wantEpoch, pos, started = before.rec.Epoch+1, before.rec.Position, before.rec.Started
				runs[p][before.rec.Epoch].ended = u.created
			}
			if rec.Epoch != wantEpoch || rec.Owner == "" || rec.Position != pos || rec.Started != started {
				v.add("partition %d, revision %d: claim (owner %q, epoch %d, position %d/%v) after epoch %d at %d/%v: want epoch+1 at the same position, with an owner",
					p, u.rev, rec.Owner, rec.Epoch, rec.Position, rec.Started, wantEpoch-1, pos, started)
			}
			if before != nil && before.rec.Owner != "" && before.rec.Owner != rec.Owner && f.beats.aliveAt(before.rec.Owner, u.created) {
				steal.add("partition %d, revision %d (%s): %s claims epoch %d from %s, unreleased, whose key was written within the last half session and the one before",
					p, u.rev, u.created.Format("15:04:05.000000"), rec.Owner, rec.Epoch, before.rec.Owner)
			}
			runs[p][rec.Epoch] = &epochRun{owner: rec.Owner, claimPos: rec.Position, claimStarted: rec.Started,
				lastPos: rec.Position, lastStarted: rec.Started, claimed: u.created, lastOwnerRev: u.rev}
			continue
		}
		run := runs[p][before.rec.Epoch]
		switch {
		case rec.Epoch < before.rec.Epoch:
			v.add("partition %d, revision %d: epoch %d after %d (owner %q after %q): a commit after a takeover", p, u.rev, rec.Epoch, before.rec.Epoch, rec.Owner, before.rec.Owner)
			continue
		case ord(rec.Position, rec.Started) < ord(before.rec.Position, before.rec.Started):
			v.add("partition %d, revision %d: position %d/%v after %d/%v: it went back", p, u.rev, rec.Position, rec.Started, before.rec.Position, before.rec.Started)
		case run.releasedRev != 0:
			v.add("partition %d, revision %d: owner %q writes epoch %d after its release at revision %d", p, u.rev, rec.Owner, rec.Epoch, run.releasedRev)
		case rec.Owner == "": // a release
			releases++
			run.releasedRev = u.rev
			if rec.Position != before.rec.Position || rec.Started != before.rec.Started {
				v.add("partition %d, revision %d: a release moved the position", p, u.rev)
			}
		case rec.Owner != run.owner:
			v.add("partition %d, revision %d: %q commits under epoch %d, claimed by %q", p, u.rev, rec.Owner, rec.Epoch, run.owner)
		default:
			commits++
			run.lastPos, run.lastStarted, run.lastOwnerRev = rec.Position, rec.Started, u.rev
		}
	}
	v.report(t)
	steal.report(t)
	t.Logf("KV history: %d updates: %d claims, %d commits, %d releases", len(updates), claims, commits, releases)
	return runs
}

// handling is one handling of an event: by which process, at which epoch.
type handling struct {
	proc  *memberProc
	epoch uint64
}

// checkLogs checks GRP-10, GRP-04's bound and GRP-05 on the members' logs
// against what was appended and the KV history.
func (f *chaosFleet) checkLogs(t *testing.T, ev *chaosEventLog, runs [chaosParts]map[uint64]*epochRun) {
	t.Helper()
	order := &failures{what: "GRP-10 order and completeness"}
	bound := &failures{what: "GRP-04 at most the uncommitted batch redelivered"}
	stale := &failures{what: "GRP-05 a batch handled under an epoch the partition had already left"}
	handled := make(map[uint64][]handling, len(ev.entity))
	type ownerKey struct {
		proc  int
		part  uint16
		epoch uint64
	}
	batches, entries := 0, 0
	for _, m := range f.procs {
		m.mu.Lock()
		bs, bad, cut := m.batches, m.bad, m.cut
		m.mu.Unlock()
		if len(bad) > 0 || (cut != "" && m.fate != "killed") {
			order.add("member %s (pid %d, %s): lines that do not parse: %q %q", m.id, m.pid(), m.fate, bad, cut)
		}
		logs := map[ownerKey][]uint64{}
		var keys []ownerKey
		for _, b := range bs {
			batches++
			entries += len(b.seqs)
			run := runs[b.part%chaosParts][b.epoch]
			if b.part >= chaosParts || run == nil || run.owner != m.id {
				order.add("member %s (pid %d): a batch of partition %d under epoch %d, which it never claimed", m.id, m.pid(), b.part, b.epoch)
				continue
			}
			if !run.ended.IsZero() && run.ended.Before(b.at) {
				stale.add("member %s (pid %d, %s): partition %d epoch %d: a batch (seqs %d..%d) handed to its handler at %s, %v after the claim of epoch %d at %s",
					m.id, m.pid(), m.pauseNote(b.at), b.part, b.epoch, b.seqs[0], b.seqs[len(b.seqs)-1], b.at.Format("15:04:05.000000"),
					b.at.Sub(run.ended).Round(time.Microsecond), b.epoch+1, run.ended.Format("15:04:05.000000"))
			}
			k := ownerKey{m.n, b.part, b.epoch}
			if _, seen := logs[k]; !seen {
				keys = append(keys, k)
			}
			for i, s := range b.seqs {
				if ev.entity[s] != b.entities[i] || ev.part[s] != b.part {
					order.add("member %s: seq %d (%s) handed to partition %d: appended as %q in partition %d", m.id, s, b.entities[i], b.part, ev.entity[s], ev.part[s])
				}
				logs[k] = append(logs[k], s)
				handled[s] = append(handled[s], handling{m, b.epoch})
			}
		}
		// Each owner's log is exactly its partition's events after the
		// claimed position, in order, with no gap.
		for _, k := range keys {
			got, run, seqs := logs[k], runs[k.part][k.epoch], ev.seqs[k.part]
			from, _ := slices.BinarySearch(seqs, run.claimPos+1)
			if !run.claimStarted {
				from = 0
			}
			if want := seqs[from:min(from+len(got), len(seqs))]; !slices.Equal(got, want) {
				at := 0
				for at < len(want) && got[at] == want[at] {
					at++
				}
				order.add("member %s (pid %d) partition %d epoch %d (claimed at %d/%v): handled %d seqs, the %d-th is %v, want %v",
					m.id, m.pid(), k.part, k.epoch, run.claimPos, run.claimStarted, len(got), at, head(got[at:], 3), head(want[at:], 3))
			}
			beyond := 0
			for _, s := range got {
				if ord(s, true) > ord(run.lastPos, run.lastStarted) {
					beyond++
				}
			}
			if beyond > chaosBatch {
				bound.add("member %s partition %d epoch %d: %d seqs handled beyond its last commit (%d), more than a batch", m.id, k.part, k.epoch, beyond, run.lastPos)
			}
		}
	}
	// Every event handled; a repeat only of what an earlier owner had not
	// committed.
	repeats := 0
	for p := range chaosParts {
		for _, s := range ev.seqs[p] {
			hs := handled[s]
			if len(hs) == 0 {
				order.add("seq %d (%s, partition %d) never handled", s, ev.entity[s], p)
				continue
			}
			slices.SortFunc(hs, func(a, b handling) int { return int(a.epoch) - int(b.epoch) })
			for i := 1; i < len(hs); i++ {
				repeats++
				first, again := hs[i-1], hs[i]
				run := runs[p][first.epoch]
				switch {
				case first.epoch == again.epoch:
					order.add("seq %d handled twice under epoch %d (members %s and %s)", s, first.epoch, first.proc.id, again.proc.id)
				case ord(s, true) <= ord(run.lastPos, run.lastStarted):
					order.add("seq %d handled by %s at epoch %d, which committed it (position %d), and again by %s at epoch %d",
						s, first.proc.id, first.epoch, run.lastPos, again.proc.id, again.epoch)
				}
			}
		}
	}
	// The zombies: nothing handled of what they lost, no commit refused
	// that landed.
	for _, z := range f.pauses {
		after := 0
		z.proc.mu.Lock()
		zb := z.proc.batches
		z.proc.mu.Unlock()
		for _, b := range zb {
			if e, lost := z.lost[b.part]; lost && e == b.epoch && runs[b.part][e].ended.Before(b.at) {
				after++ // (SIGSTOP lands a moment after it is sent: a batch may start after z.stop)
			}
		}
		for part, e := range z.lost {
			if run := runs[part][e]; !run.ended.Before(z.cont) {
				stale.add("zombie %s: partition %d not claimed again before its resumption", z.proc.id, part)
			}
		}
		if after > 0 {
			stale.add("zombie %s handled %d batches of the partitions it lost after it was resumed", z.proc.id, after)
		}
		t.Logf("zombie %s (pid %d): paused %v until %d partitions %v were taken over, resumed; %d batches of them handled since; %s",
			z.proc.id, z.proc.pid(), z.cont.Sub(z.stop).Round(time.Millisecond), len(z.lost), slices.Sorted(maps.Keys(z.lost)), after, z.proc.leftLine())
	}
	order.report(t)
	bound.report(t)
	stale.report(t)
	t.Logf("members: %d processes, %d batches, %d entries handled for %d events (%d repeats)", len(f.procs), batches, entries, len(ev.entity), repeats)
}

// checkTakeovers checks GRP-04's takeover bound on the kill in calm,
// and that every partition of a killed member was claimed again; it
// reports the takeovers during the chaos and the static restarts (GRP-09).
func (f *chaosFleet) checkTakeovers(t *testing.T, calm killRecord) {
	t.Helper()
	v := &failures{what: "GRP-04 a killed member's partitions claimed again"}
	f.kv.mu.Lock()
	updates := slices.Clone(f.kv.updates)
	f.kv.mu.Unlock()
	var lat []time.Duration
	var calmMax time.Duration
	reclaimed, static := 0, 0
	for _, k := range f.kills {
		for part, e := range k.owned {
			i := slices.IndexFunc(updates, func(u ckptUpdate) bool { return u.part == int(part) && u.rec.Epoch > e })
			if i < 0 {
				v.add("partition %d of %s (pid %d, epoch %d) never claimed again", part, k.id, k.pid, e)
				continue
			}
			d := updates[i].created.Sub(k.at)
			switch {
			case k.static:
				static++
				if updates[i].rec.Owner == k.id {
					reclaimed++
				}
			case k.pid == calm.pid:
				calmMax = max(calmMax, d)
				if d > chaosTakeover {
					v.add("partition %d of %s, killed in calm at epoch %d, claimed by %s %v after the kill (bound %v)", part, k.id, e, updates[i].rec.Owner, d.Round(time.Millisecond), chaosTakeover)
				}
			default:
				lat = append(lat, d)
			}
		}
	}
	v.report(t)
	slices.Sort(lat)
	if len(lat) > 0 {
		t.Logf("%d kills during the chaos (%d restarted with the same id): %d partitions of members gone for good claimed again after median %v, max %v; %d of %d partitions of static restarts reclaimed by the same id",
			len(f.kills)-1, f.statics, len(lat), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), reclaimed, static)
	}
	t.Logf("kill in calm: %d partitions of %s claimed by the others within %v (session %v, bound %v); %d graceful leaves, %d pauses",
		len(calm.owned), calm.id, calmMax.Round(time.Millisecond), chaosSession, chaosTakeover, f.leaves, len(f.pauses))
}
