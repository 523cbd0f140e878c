package journal

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
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

	"github.com/batfleet/batfleet/engine"
	"github.com/vmihailenco/msgpack/v5"
)

// Crash safety with a real process kill. TestCrashRecovery re-runs the test
// binary as a child (TestCrashChild) that appends from several goroutines
// and reports every acknowledged append on stdout; the parent SIGKILLs it at
// a random moment, reopens the journal and checks everything the child was
// told against what recovery rebuilt, round after round on one growing
// journal.

const (
	crashChildEnv = "BATFLEET_CRASH_CHILD" // the journal directory; set only in the child
	crashRoundEnv = "BATFLEET_CRASH_ROUND"
	crashSeedEnv  = "BATFLEET_CRASH_SEED" // the child's seed; in the parent, an optional override

	crashRounds  = 24
	crashWorkers = 4
	// crashChildLife bounds a child that nobody kills (the parent died).
	crashChildLife = 20 * time.Second
	// crashFirstAck bounds the wait for a child's first acknowledgement.
	crashFirstAck = 30 * time.Second
)

// crashConfig is used by the child and the parent alike: small segments, so
// the journal rotates during the test.
var crashConfig = Config{SegmentBytes: 1 << 20}

var (
	crashEntities = []string{"crash:alpha", "crash:alpha:sub", "crash:beta", "crash:gamma:x"}
	crashScopes   = []string{"tenant:a", "tenant:b"}
	crashKinds    = []engine.Kind{engine.KindData, 0x2001, 0xE00F}
)

// crashOp is append number a of worker w in round r. It is a pure function
// of (seed, r, w, a), so a later round can rebuild it to retry it by its
// idempotency keys, and the parent can rebuild it to check what it reads.
type crashOp struct {
	tag    string // "r<round>.w<worker>.a<append>"
	keyed  bool
	events []engine.Event
}

func makeCrashOp(seed uint64, round, worker, a int) crashOp {
	rng := rand.New(rand.NewPCG(seed, uint64(round)<<40|uint64(worker)<<32|uint64(a)))
	op := crashOp{tag: fmt.Sprintf("r%d.w%d.a%d", round, worker, a), keyed: rng.IntN(3) == 0}
	n := 1
	if rng.IntN(2) == 0 {
		n = 2 + rng.IntN(7) // an atomic batch of 2..8
	}
	op.events = make([]engine.Event, n)
	for i := range op.events {
		payload := fmt.Appendf(nil, "%s %d/%d|", op.tag, i, n)
		filler := make([]byte, rng.IntN(700))
		for j := 0; j < len(filler); j += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], rng.Uint64())
			copy(filler[j:], w[:])
		}
		e := engine.Event{
			Coordinate: engine.MustCoordinate(crashEntities[rng.IntN(len(crashEntities))], crashScopes[rng.IntN(len(crashScopes))]),
			Kind:       crashKinds[rng.IntN(len(crashKinds))],
			Payload:    append(payload, filler...),
		}
		if op.keyed {
			e.Key = engine.DeriveIdempotencyKey("batfleet-crash-test", []byte(op.tag), []byte{byte(i)})
		}
		op.events[i] = e
	}
	return op
}

// parseCrashTag reads the tag, index and count at the start of a payload.
func parseCrashTag(payload []byte) (tag string, i, n int, ok bool) {
	head, _, found := bytes.Cut(payload, []byte("|"))
	if !found {
		return "", 0, 0, false
	}
	tag, in, found := strings.Cut(string(head), " ")
	if !found {
		return "", 0, 0, false
	}
	is, ns, found := strings.Cut(in, "/")
	if !found {
		return "", 0, 0, false
	}
	i, err1 := strconv.Atoi(is)
	n, err2 := strconv.Atoi(ns)
	return tag, i, n, err1 == nil && err2 == nil
}

func parseOpTag(tag string) (round, worker, a int, ok bool) {
	_, err := fmt.Sscanf(tag, "r%d.w%d.a%d", &round, &worker, &a)
	return round, worker, a, err == nil
}

func crashPayloadHash(p []byte) string {
	h := sha256.Sum256(p)
	return hex.EncodeToString(h[:8])
}

// TestCrashChild is the child process of TestCrashRecovery. Run directly,
// without the environment its parent sets, it does nothing.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Log("nothing to do: this test is the child process of TestCrashRecovery")
		return
	}
	round, err1 := strconv.Atoi(os.Getenv(crashRoundEnv))
	seed, err2 := strconv.ParseUint(os.Getenv(crashSeedEnv), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		crashEmit("fatal bad environment: %v\n", err)
		t.Fatal(err)
	}
	s, err := Open(dir, crashConfig)
	if err != nil {
		crashEmit("fatal open: %v\n", err)
		t.Fatal(err)
	}
	deadline := time.Now().Add(crashChildLife)
	var wg sync.WaitGroup
	for w := range crashWorkers {
		wg.Go(func() { crashWorker(s, seed, round, w, deadline) })
	}
	wg.Wait()
	_ = s.Close()
}

// crashEmit writes one or more whole lines with a single Write, so lines
// of concurrent workers never interleave (pipe writes up to PIPE_BUF are
// atomic).
func crashEmit(format string, args ...any) {
	_, _ = os.Stdout.Write(fmt.Appendf(nil, format, args...))
}

// crashWorker appends until killed: single events and batches, some keyed,
// and now and then a retry of an earlier keyed append of this worker, of
// this round (must replay) or of an earlier one (replays, or appends anew
// if that append never became durable).
func crashWorker(s *Store, seed uint64, round, worker int, deadline time.Time) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed^0x9e3779b97f4a7c15, uint64(round)<<8|uint64(worker)))
	mine := map[string][]engine.Receipt{} // this round's acknowledged appends
	do := func(op crashOp) ([]engine.Receipt, bool) {
		rs, err := s.AppendBatch(ctx, op.events)
		if err != nil {
			crashEmit("fatal append %s: %v\n", op.tag, err)
			return nil, false
		}
		var b []byte
		for i, r := range rs {
			e := op.events[i]
			b = fmt.Appendf(b, "ack %d %s %d %d %t %s %s %s %s\n", r.Seq, op.tag, i, len(rs), r.Replayed,
				e.Coordinate.Entity(), e.Coordinate.Scope(), crashPayloadHash(e.Payload), hex.EncodeToString(r.ID[:]))
		}
		_, _ = os.Stdout.Write(b)
		return rs, true
	}
	for a := 0; time.Now().Before(deadline); a++ {
		op := makeCrashOp(seed, round, worker, a)
		rs, ok := do(op)
		if !ok {
			return
		}
		mine[op.tag] = rs
		if !op.keyed || rng.IntN(3) != 0 {
			continue
		}
		r2, a2 := round, rng.IntN(a+1)
		if round > 0 && rng.IntN(2) == 0 {
			r2, a2 = rng.IntN(round), rng.IntN(40)
		}
		old := makeCrashOp(seed, r2, worker, a2)
		if !old.keyed {
			continue
		}
		again, ok := do(old)
		if !ok {
			return
		}
		if orig, known := mine[old.tag]; known && r2 == round {
			for i := range again {
				if !again[i].Replayed || again[i].Seq != orig[i].Seq || again[i].ID != orig[i].ID {
					crashEmit("bad retry of %s: receipt %d is %+v, first append gave %+v\n", old.tag, i, again[i], orig[i])
				}
			}
		}
	}
}

// crashAck is one acknowledged receipt as the child reported it.
type crashAck struct {
	round    int
	seq      uint64
	tag      string
	i, n     int
	replayed bool
	entity   string
	scope    string
	hash     string
	id       string
}

func parseCrashAck(line string, round int) (crashAck, error) {
	f := strings.Fields(line)
	if len(f) != 10 || f[0] != "ack" {
		return crashAck{}, fmt.Errorf("malformed ack line %q", line)
	}
	a := crashAck{round: round, tag: f[2], entity: f[6], scope: f[7], hash: f[8], id: f[9]}
	var errs [4]error
	a.seq, errs[0] = strconv.ParseUint(f[1], 10, 64)
	a.i, errs[1] = strconv.Atoi(f[3])
	a.n, errs[2] = strconv.Atoi(f[4])
	a.replayed, errs[3] = strconv.ParseBool(f[5])
	if err := errors.Join(errs[:]...); err != nil {
		return crashAck{}, fmt.Errorf("ack line %q: %w", line, err)
	}
	return a, nil
}

// runCrashChild starts a child on dir, waits for its first acknowledgement
// and then delay more, SIGKILLs it and returns every complete line it wrote.
func runCrashChild(t *testing.T, dir string, seed uint64, round int, delay time.Duration) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		crashChildEnv+"="+dir,
		crashRoundEnv+"="+strconv.Itoa(round),
		crashSeedEnv+"="+strconv.FormatUint(seed, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()

	var lines []string
	firstAck := make(chan struct{})
	eof := make(chan struct{})
	go func() {
		defer close(eof)
		r := bufio.NewReader(stdout)
		acked := false
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return // io.EOF once the child is gone; a partial last line is dropped
			}
			lines = append(lines, strings.TrimSuffix(line, "\n"))
			if !acked && (strings.HasPrefix(line, "ack ") || strings.HasPrefix(line, "fatal ")) {
				acked = true
				close(firstAck)
			}
		}
	}()

	select {
	case <-firstAck:
	case <-eof:
		_ = cmd.Wait()
		killed = true
		t.Fatalf("round %d: child exited before its first acknowledgement: %v\nstderr:\n%s", round, cmd.ProcessState, stderr.String())
	case <-time.After(crashFirstAck):
		_ = cmd.Process.Kill()
		<-eof
		_ = cmd.Wait() // stderr is complete only after Wait
		killed = true
		t.Fatalf("round %d: no acknowledgement from the child within %v\nstderr:\n%s", round, crashFirstAck, stderr.String())
	}
	time.Sleep(delay) // the crash point: not a wait for a condition
	// A child that already exited (it reported a fatal error) is caught
	// below by its exit status and by verify, which reports its lines.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("kill child: %v", err)
	}
	<-eof
	err = cmd.Wait()
	killed = true
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("round %d: child ended with %v, want killed by SIGKILL\nstderr:\n%s", round, err, stderr.String())
	}
	if strings.Contains(stderr.String(), "DATA RACE") || strings.Contains(stderr.String(), "panic:") {
		t.Errorf("round %d: child stderr:\n%s", round, stderr.String())
	}
	return lines
}

// crashHistory is what the parent knows across rounds.
type crashHistory struct {
	seed          uint64
	acked         map[uint64]crashAck // every acknowledged seq, all rounds
	prev          []engine.Entry      // what the previous reopen delivered
	lastRanges    []engine.Range
	prevAllocated uint64
	totalAcks     int
	unacked       int // durable user events whose acknowledgement the kill cut off
	verifyTime    time.Duration
}

func TestCrashRecovery(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(crashSeedEnv); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("%s: %v", crashSeedEnv, err)
		}
	}
	t.Logf("seed %d (repeat with %s=%d)", seed, crashSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 0xc7a5))
	dir := t.TempDir()
	h := &crashHistory{seed: seed, acked: make(map[uint64]crashAck)}
	start := time.Now()
	for round := range crashRounds {
		delay := time.Duration(20+rng.IntN(131)) * time.Millisecond
		lines := runCrashChild(t, dir, seed, round, delay)
		s := openJournal(t, dir, crashConfig)
		h.verify(t, round, s, lines)
		closeJournal(t, s)
		if t.Failed() {
			t.Fatalf("stopping after round %d (seed %d)", round, seed)
		}
	}
	segs, _ := listSegments(dir)
	cancelled := uint64(0)
	for _, r := range h.lastRanges {
		cancelled += r.End - r.Start
	}
	t.Logf("%d rounds in %v (verification %v): %d acknowledged receipts, %d durable but unacknowledged events, "+
		"%d seqs allocated, %d cancelled, %d segments",
		crashRounds, time.Since(start).Round(time.Millisecond), h.verifyTime.Round(time.Millisecond), h.totalAcks,
		h.unacked, h.prevAllocated, cancelled, len(segs))
}

// verify checks the reopened store s of round against everything known.
func (h *crashHistory) verify(t *testing.T, round int, s *Store, lines []string) {
	t.Helper()
	defer func(t0 time.Time) { h.verifyTime += time.Since(t0) }(time.Now())
	// What the child acknowledged.
	acks := 0
	for _, line := range lines {
		switch {
		case strings.HasPrefix(line, "ack "):
			a, err := parseCrashAck(line, round)
			if err != nil {
				t.Error(err)
				continue
			}
			acks++
			if old, ok := h.acked[a.seq]; ok && (old.tag != a.tag || old.i != a.i) {
				t.Errorf("seq %d acknowledged twice: %s[%d] in round %d, %s[%d] in round %d",
					a.seq, old.tag, old.i, old.round, a.tag, a.i, a.round)
				continue
			}
			if _, ok := h.acked[a.seq]; !ok {
				h.acked[a.seq] = a
			}
		case strings.HasPrefix(line, "bad "), strings.HasPrefix(line, "fatal "):
			t.Errorf("round %d: child reported: %s", round, line)
		default:
			t.Logf("round %d: child wrote %q", round, line)
		}
	}
	if acks == 0 {
		t.Errorf("round %d: no acknowledgement", round)
	}
	h.totalAcks += acks

	res := pollJournal(t, s)
	entries := res.Entries
	st := s.Stats()
	ranges := s.CancelledRanges()
	if st.Visible != st.Allocated {
		t.Errorf("after reopen visible %d, allocated %d", st.Visible, st.Allocated)
	}
	if st.Allocated <= h.prevAllocated {
		t.Errorf("round %d: allocated %d, previous round %d: the journal did not grow", round, st.Allocated, h.prevAllocated)
	}
	if norm, err := engine.NormalizeRanges(ranges); err != nil || len(norm) != len(ranges) {
		t.Errorf("cancelled ranges %v not normalised (%v)", ranges, err)
	}
	for _, r := range ranges {
		if !slices.Contains(h.lastRanges, r) {
			t.Logf("round %d: cancelled range %v (a torn or uncommitted batch)", round, r)
		}
	}
	if n := len(ranges); n > 0 && ranges[n-1].End > st.Allocated {
		t.Errorf("cancelled range %v past allocated %d", ranges[n-1], st.Allocated)
	}

	// Seqs: strictly increasing, never cancelled, and with the cancelled
	// ranges they cover [0, allocated) exactly.
	covered := make([]int8, st.Allocated) // 1 delivered, 2 cancelled
	bySeq := make(map[uint64]engine.Entry, len(entries))
	for i, e := range entries {
		if i > 0 && e.Seq <= entries[i-1].Seq {
			t.Fatalf("seq %d delivered after seq %d", e.Seq, entries[i-1].Seq)
		}
		if e.Seq >= st.Allocated {
			t.Fatalf("seq %d delivered, allocated %d", e.Seq, st.Allocated)
		}
		covered[e.Seq] = 1
		bySeq[e.Seq] = e
	}
	for _, r := range ranges {
		for seq := r.Start; seq < r.End && seq < st.Allocated; seq++ {
			if covered[seq] == 1 {
				t.Errorf("cancelled seq %d (range %v) delivered", seq, r)
			}
			covered[seq] = 2
		}
	}
	for seq, c := range covered {
		if c == 0 {
			t.Errorf("seq %d below allocated %d is neither delivered nor cancelled: a silent hole", seq, st.Allocated)
		}
	}

	// Lifecycle: this reopen's OPEN_COMPLETED is last; one open per child
	// and per parent so far, one close per parent before this one.
	last := entries[len(entries)-1]
	if last.Seq != st.Allocated-1 || last.Kind != engine.KindOpenCompleted || last.Coordinate != engine.LifecycleCoordinate() {
		t.Errorf("last entry seq %d kind %v at %v, want OPEN_COMPLETED at seq %d at %v",
			last.Seq, last.Kind, last.Coordinate, st.Allocated-1, engine.LifecycleCoordinate())
	}
	var info map[string]string
	if err := msgpack.Unmarshal(last.Payload, &info); err != nil || info["incarnation"] != s.Incarnation().String() ||
		info["journal_id"] != s.JournalID().String() {
		t.Errorf("open event payload %v (%v), want this incarnation %s and journal %s", info, err, s.Incarnation(), s.JournalID())
	}
	opens, closes := 0, 0
	for _, e := range entries {
		if e.Coordinate == engine.LifecycleCoordinate() {
			switch e.Kind {
			case engine.KindOpenCompleted:
				opens++
			case engine.KindCloseCompleted:
				closes++
			}
		}
	}
	if opens != 2*(round+1) || closes != round {
		t.Errorf("round %d: %d OPEN_COMPLETED and %d CLOSE_COMPLETED, want %d and %d", round, opens, closes, 2*(round+1), round)
	}

	// Every acknowledged receipt, of every round, is there. This round's
	// are compared with what the child was told; earlier rounds' were
	// compared when they were new, and the check below proves that nothing
	// delivered then has changed since.
	for seq, a := range h.acked {
		e, ok := bySeq[seq]
		if !ok {
			t.Errorf("acknowledged seq %d (%s[%d], round %d) is missing", seq, a.tag, a.i, a.round)
			continue
		}
		if a.round != round {
			continue
		}
		tag, i, n, _ := parseCrashTag(e.Payload)
		if tag != a.tag || i != a.i || n != a.n || e.Coordinate.Entity() != a.entity || e.Coordinate.Scope() != a.scope ||
			crashPayloadHash(e.Payload) != a.hash || hex.EncodeToString(e.ID[:]) != a.id {
			t.Errorf("acknowledged seq %d: acked %s[%d/%d] at %s@%s hash %s id %s; reads %s[%d/%d] at %v hash %s id %x",
				seq, a.tag, a.i, a.n, a.entity, a.scope, a.hash, a.id, tag, i, n, e.Coordinate, crashPayloadHash(e.Payload), e.ID)
		}
	}
	// Everything the previous reopen delivered is still delivered, unchanged.
	for _, p := range h.prev {
		if e, ok := bySeq[p.Seq]; !ok || !identicalEntry(e, p) {
			t.Errorf("seq %d was delivered after the previous crash and changed or vanished: %+v", p.Seq, e)
		}
	}

	// User entries: each is an event the child built, and each append is
	// there whole (all its events, contiguous seqs) or not at all.
	groups := map[string][]engine.Entry{}
	for _, e := range entries {
		if e.Coordinate == engine.LifecycleCoordinate() {
			continue
		}
		tag, _, _, ok := parseCrashTag(e.Payload)
		if !ok {
			t.Errorf("seq %d: unexpected payload %q", e.Seq, e.Payload)
			continue
		}
		groups[tag] = append(groups[tag], e)
		if _, ok := h.acked[e.Seq]; !ok && e.Seq >= h.prevAllocated {
			h.unacked++
		}
	}
	for tag, es := range groups {
		r, w, a, ok := parseOpTag(tag)
		if !ok {
			t.Errorf("seq %d: bad tag %q", es[0].Seq, tag)
			continue
		}
		if es[len(es)-1].Seq < h.prevAllocated {
			continue // checked in an earlier round, and unchanged since
		}
		op := makeCrashOp(h.seed, r, w, a)
		if len(es) != len(op.events) {
			t.Errorf("append %s has %d of its %d events (seqs %v): not all-or-nothing", tag, len(es), len(op.events), seqList(es))
			continue
		}
		for i, e := range es {
			want := op.events[i]
			if e.Seq != es[0].Seq+uint64(i) || e.Coordinate != want.Coordinate || e.Kind != want.Kind ||
				!bytes.Equal(e.Payload, want.Payload) || (op.keyed && e.ID != [16]byte(want.Key)) {
				t.Errorf("append %s event %d: read seq %d %v kind %v id %x, want seq %d %v kind %v key %x",
					tag, i, e.Seq, e.Coordinate, e.Kind, e.ID, es[0].Seq+uint64(i), want.Coordinate, want.Kind, want.Key)
			}
		}
	}

	// Per entity, clocks strictly increase and wall times never decrease
	// in seq order.
	type clockState struct {
		clock uint32
		wall  int64
	}
	clocks := map[string]clockState{}
	for _, e := range entries {
		ent := e.Coordinate.Entity()
		if prev, ok := clocks[ent]; ok && (e.Clock <= prev.clock || e.WallMs < prev.wall) {
			t.Errorf("entity %s: seq %d has clock %d wall %d after clock %d wall %d", ent, e.Seq, e.Clock, e.WallMs, prev.clock, prev.wall)
		}
		clocks[ent] = clockState{e.Clock, e.WallMs}
	}

	h.verifyDisk(t, s.Dir(), bySeq, ranges)
	h.prev, h.prevAllocated, h.lastRanges = entries, st.Allocated, ranges
}

// verifyDisk reads the segment files themselves: every event frame is
// delivered or cancelled, no seq is on disk twice, and every batch on
// disk is delivered whole or cancelled whole.
func (h *crashHistory) verifyDisk(t *testing.T, dir string, bySeq map[uint64]engine.Entry, ranges []engine.Range) {
	t.Helper()
	nums, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	cancelled := func(seq uint64) bool { return len(engine.Intersecting(ranges, seq, seq+1)) > 0 }
	onDisk := map[uint64]bool{}
	for _, num := range nums {
		for _, f := range readDiskFrames(t, filepath.Join(dir, segmentName(num))) {
			switch f.typ {
			case frameEvent:
				if onDisk[f.seq] {
					t.Errorf("seq %d is on disk twice", f.seq)
				}
				onDisk[f.seq] = true
				if _, ok := bySeq[f.seq]; !ok && !cancelled(f.seq) {
					t.Errorf("seq %d is on disk (segment %d offset %d) but neither delivered nor cancelled", f.seq, num, f.off)
				}
			case frameBatchBegin:
				delivered, hidden := 0, 0
				for seq := f.a; seq < f.a+f.b; seq++ {
					if _, ok := bySeq[seq]; ok {
						delivered++
					} else if cancelled(seq) {
						hidden++
					}
				}
				if delivered != int(f.b) && hidden != int(f.b) {
					t.Errorf("batch [%d, %d) on disk: %d delivered, %d cancelled: not all-or-nothing", f.a, f.a+f.b, delivered, hidden)
				}
			}
		}
	}
	for seq := range bySeq {
		if !onDisk[seq] {
			t.Errorf("seq %d is delivered but has no frame on disk", seq)
		}
	}
}
