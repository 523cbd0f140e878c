package fleet

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine/delivery"
)

// Catalogue: GRP-05 (member level), GRP-10, GRP-11: member z is paused
// as a SIGSTOP would pause it (Freeze: its coordinator, heartbeat and
// handlers stop; its clock runs on) while its handler holds a batch and
// events keep coming. Past z's session, a takes z's partitions over.
// When z resumes, the held batch's commit is refused (RefusedCommits),
// z hands nothing more of the taken-over partitions to its handler under
// its old epochs — not even the batches its workers pulled during the
// pause — and no checkpoint goes back; then z rejoins and gets its share
// again under new epochs. Every event is handled, in order per member
// and epoch.
func TestGRP05_ZombieMember(t *testing.T) {
	const P = 4
	g := newGroupEnv(t)
	log := newHandLog()
	var hold atomic.Bool
	inHand := make(chan handed, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	zHook := func(d *delivery.Delivery) {
		if hold.CompareAndSwap(true, false) {
			inHand <- handed{part: d.Partition.Index, epoch: d.Epoch}
			<-release
		}
	}
	a := mustJoin(t, joinOpts{url: g.e.ns.ClientURL(), group: "g5", id: "a", parts: P}, log.handler("a", nil))
	z := mustJoin(t, joinOpts{url: g.e.ns.ClientURL(), group: "g5", id: "z", parts: P}, log.handler("z", zHook))
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before z stops
	waitFor(t, 10*time.Second, "2 and 2", func() bool { return balanced(P, a, z) })
	tr := startTraffic(t, g.e.store, 3*time.Millisecond, 16)
	tr.waitMore(t, 50)

	hold.Store(true)
	var held handed
	select {
	case held = <-inHand:
	case <-time.After(10 * time.Second):
		t.Fatal("z's handler was given no batch")
	}
	zParts := z.Partitions()
	thaw := z.Freeze()
	t.Cleanup(thaw) // before z stops
	frozen := time.Now()
	var taken map[uint16]uint64 // z's partitions, at a's epochs
	waitFor(t, 10*time.Second, "a to run all partitions", func() bool {
		if len(a.Stats().Owned) != P {
			return false
		}
		taken = map[uint16]uint64{}
		for _, p := range a.Partitions() {
			for _, zp := range zParts {
				if zp.Index == p.Index {
					taken[p.Index] = p.Epoch
				}
			}
		}
		return true
	})
	t.Logf("a ran z's partitions %v after z froze (session 600ms)", time.Since(frozen).Round(time.Millisecond))
	tr.waitMore(t, 50)

	thawed := time.Now()
	thaw()
	releaseOnce.Do(func() { close(release) })
	waitFor(t, 10*time.Second, "z's held commit refused", func() bool { return z.Stats().RefusedCommits > 0 })
	waitFor(t, 20*time.Second, "z back with its share", func() bool { return !z.Stats().Fenced && balanced(P, a, z) })
	tr.waitMore(t, 50)
	tr.halt()
	log.waitHandled(t, 20*time.Second, "every event handled", tr.appended(t))
	running(t, a, z)

	// After the thaw, z was handed nothing of a taken-over partition
	// under an epoch not above a's, but the batch it held.
	heldSeen := false
	for _, b := range log.snapshot() {
		ep, wasTaken := taken[b.part]
		if b.member != "z" || !wasTaken || b.at.Before(thawed) || b.epoch > ep {
			continue
		}
		if b.part == held.part && b.epoch == held.epoch && !heldSeen {
			heldSeen = true // recorded when the handler returned
			continue
		}
		t.Fatalf("z was handed seqs %v of partition %d under epoch %d after a claimed it at epoch %d", b.seqs, b.part, b.epoch, ep)
	}
	if !heldSeen {
		t.Fatalf("the batch z held (partition %d, epoch %d) is not in its log", held.part, held.epoch)
	}
	log.check(t, tr.wanted())
	checkpointHistory(t, g.js, "g5", P)
	_, repeats := log.count(tr.appended(t))
	t.Logf("z: refused commits %d; %d events handled, %d repeats", z.Stats().RefusedCommits, len(tr.appended(t)), repeats)
}
