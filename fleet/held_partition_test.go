package fleet

import (
	"fmt"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
)

// A held pull of a consumer group's partition is filed under its
// partition: appends of entities in other partitions leave it held, an
// append of an entity in it answers it with that entry.
func TestHeldPartitionPull(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true})
	p := engine.Partition{Index: 5, Count: 16}
	var in, out []string
	for i := 0; len(in) < 1 || len(out) < 20; i++ {
		name := fmt.Sprintf("acct:%d", i)
		if p.Holds(engine.Bucket(name)) {
			in = append(in, name)
		} else {
			out = append(out, name)
		}
	}
	wait := 20 * time.Second
	held := e.sendHeld(engine.RegionAll().WithPartition(p), wait)
	other := e.sendHeld(engine.RegionAll().WithPartition(engine.Partition{Index: 6, Count: 16}), wait)
	waitHeld(t, e.w, 2)
	for _, name := range out {
		if (engine.Partition{Index: 6, Count: 16}).Holds(engine.Bucket(name)) {
			continue // would answer the other pull
		}
		appendTo(t, e.store, name, 1)
	}
	matcherCaughtUp(t, e.w)
	notAnswered(t, held, "the held partition pull after appends to other partitions")
	seq := appendTo(t, e.store, in[0], 1)[0]
	o := awaitPull(t, held, 10*time.Second, "the held partition pull")
	if got := entrySeqs(o.mustReply(t, "the held partition pull").Entries); fmt.Sprint(got) != fmt.Sprint([]uint64{seq}) {
		t.Fatalf("answered with %v, want [%d]", got, seq)
	}
	notAnswered(t, other, "the other partition's pull")
	if st := e.w.Stats(); st.Held != 1 {
		t.Fatalf("%d pulls held, want the other partition's", st.Held)
	}
}
