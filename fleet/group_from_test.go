package fleet

import (
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine/delivery"
)

// TestGroupFromEnd (issue 16: `worker run --group --from end`): a new
// group started at the end handles only the events appended after its
// partitions' first claims; the claim records keep that start, so a
// member that joins later (and takes partitions over) does not move it,
// and nothing before the start is ever handed to a handler.
func TestGroupFromEnd(t *testing.T) {
	g := newGroupEnv(t)
	before := map[string][]uint64{}
	old := g.appendAccounts(t, 200, 10, before)
	from := func(c *GroupConfig) { c.Worker.From = delivery.FromEnd() }
	m1, _ := g.member(t, "tail", "m1", 4, from)
	deadline := time.Now().Add(20 * time.Second)
	for len(m1.Stats().Owned) != 4 || !allCommittedStarted(m1) {
		if time.Now().After(deadline) {
			t.Fatalf("m1 did not claim and start all 4 partitions: %+v", m1.Stats())
		}
		time.Sleep(10 * time.Millisecond) // polling the member's state
	}
	after := map[string][]uint64{}
	g.appendAccounts(t, 100, 10, after)
	m2, _ := g.member(t, "tail", "m2", 4, from)
	g.appendAccounts(t, 100, 10, after)
	var newSeqs []uint64
	for _, seqs := range after {
		newSeqs = append(newSeqs, seqs...)
	}
	for {
		if handled, _ := g.log.count(newSeqs); handled == len(newSeqs) && balanced(4, m1, m2) {
			break
		}
		if time.Now().After(deadline) {
			handled, _ := g.log.count(newSeqs)
			t.Fatalf("handled %d of the %d events appended after the start; owned %v", handled, len(newSeqs), owned(m1, m2))
		}
		time.Sleep(10 * time.Millisecond) // polling the handlers' log
	}
	if handled, _ := g.log.count(old); handled != 0 {
		t.Errorf("%d of the %d events appended before the group started at the end were handled", handled, len(old))
	}
	g.log.checkOrder(t, after)
}

// allCommittedStarted reports whether every partition m runs starts
// after a position (the end it was claimed at), rather than from the
// beginning.
func allCommittedStarted(m *Member) bool {
	for _, p := range m.Partitions() {
		if !p.Worker.CommittedStarted {
			return false
		}
	}
	return len(m.Partitions()) > 0
}
