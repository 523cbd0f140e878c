package fleet

import (
	"testing"
	"time"
)

// Catalogue: GRP-06 (a member that fences itself and comes back): b is
// cut off until it fences itself, and while it is away c joins, so the
// assignment b comes back to gives part of what b ran to c. b's
// checkpoints still name it, and the others judge it live again, so only
// b can let those partitions go: it must release them (or claim them
// back), never leave one stalled. Found by the chaos run (a member
// self-fenced across a NATS restart, unfenced before anyone took over,
// and its partition sat still for minutes). The sessions are long beside
// the heartbeat so that b comes back well before anyone judges it dead.
func TestGRP06_UnfencedMemberReleasesOrReclaims(t *testing.T) {
	g := newGroupEnv(t)
	proxy := g.faultProxy(t)
	want := map[string][]uint64{}
	long := func(c *GroupConfig) { c.Session, c.Heartbeat = 8*time.Second, 2*time.Second }
	a, _ := g.member(t, "g6u", "a", 4, long)
	b, _ := g.memberAt(t, proxy.URL(), "g6u", "b", 4, long)
	waitFor(t, 20*time.Second, "2 and 2", func() bool { return balanced(4, a, b) })
	seqs := g.appendAccounts(t, 100, 20, want)
	waitFor(t, 20*time.Second, "every event handled", func() bool { n, _ := g.log.count(seqs); return n == len(seqs) })

	proxy.Blackhole(true)
	waitFor(t, 20*time.Second, "b to fence itself", func() bool { return b.Stats().Fenced })
	c, _ := g.member(t, "g6u", "c", 4, long)
	proxy.Blackhole(false) // b's heartbeats land again, long before its session is up
	waitFor(t, 30*time.Second, "b to unfence", func() bool { return !b.Stats().Fenced })

	seqs = append(seqs, g.appendAccounts(t, 200, 20, want)...)
	waitFor(t, 60*time.Second, "every partition owned (2, 1, 1) and every event handled", func() bool {
		n, _ := g.log.count(seqs)
		return n == len(seqs) && balanced(4, a, b, c)
	})
	g.log.checkOrder(t, want)
}
