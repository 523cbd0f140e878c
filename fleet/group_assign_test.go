package fleet

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func counts(target []string) map[string]int {
	c := map[string]int{}
	for _, o := range target {
		c[o]++
	}
	return c
}

func moves(before, after []string) int {
	n := 0
	for i := range before {
		if before[i] != "" && before[i] != after[i] {
			n++
		}
	}
	return n
}

// Catalogue: GRP-02: one member owns all P; a second joins ⇒ exactly P/2
// move; a third ⇒ balanced, with the fewest moves.
func TestGRP02_AssignJoins(t *testing.T) {
	const P = 16
	one := assign(P, []string{"a"}, make([]string, P))
	if c := counts(one); c["a"] != P {
		t.Fatalf("one member owns %v", c)
	}
	two := assign(P, []string{"a", "b"}, one)
	if c := counts(two); c["a"] != 8 || c["b"] != 8 || moves(one, two) != 8 {
		t.Fatalf("two members: %v, %d moves", c, moves(one, two))
	}
	three := assign(P, []string{"a", "b", "c"}, two)
	c := counts(three)
	if c["a"]+c["b"]+c["c"] != P || c["c"] != 5 || moves(two, three) != 5 {
		t.Fatalf("three members: %v, %d moves, want c 5 and 5 moves", c, moves(two, three))
	}
	// Sticky: the same view gives the same assignment.
	if again := assign(P, []string{"c", "b", "a"}, three); !slices.Equal(again, three) {
		t.Fatalf("not stable: %v then %v", three, again)
	}
}

// Catalogue: GRP-08: more members than partitions ⇒ the extra ones own
// nothing; when an owner dies a standby takes its partition over, and
// nothing else moves.
func TestGRP08_AssignStandbys(t *testing.T) {
	cur := assign(2, []string{"a", "b", "c", "d"}, make([]string, 2))
	if c := counts(cur); len(c) != 2 || c[""] != 0 {
		t.Fatalf("2 partitions over 4 members: %v", cur)
	}
	var dead string
	live := []string{}
	for _, m := range []string{"a", "b", "c", "d"} {
		if m == cur[0] {
			dead = m
			continue
		}
		live = append(live, m)
	}
	after := assign(2, live, cur)
	if after[1] != cur[1] || after[0] == dead || after[0] == "" {
		t.Fatalf("after %s died: %v (was %v)", dead, after, cur)
	}
}

// A property of assign, from random views: every partition owned by a
// live member, shares within one of each other, and the moves no more
// than the partitions that must move (those of dead owners, the excess of
// owners over their share, and the unowned).
func TestAssignProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	for trial := range 3000 {
		P := 1 << rng.IntN(8)
		var pool []string
		for i := range 1 + rng.IntN(12) {
			pool = append(pool, fmt.Sprintf("m%02d", i))
		}
		cur := make([]string, P)
		for i := range cur {
			if rng.IntN(5) > 0 {
				cur[i] = pool[rng.IntN(len(pool))]
			}
		}
		var live []string
		for _, m := range pool {
			if rng.IntN(4) > 0 {
				live = append(live, m)
			}
		}
		target := assign(P, live, cur)
		if len(live) == 0 {
			if c := counts(target); c[""] != P {
				t.Fatalf("trial %d: no live member, yet %v", trial, target)
			}
			continue
		}
		c := counts(target)
		lo, hi := P/len(live), (P+len(live)-1)/len(live)
		for _, m := range live {
			if c[m] < lo || c[m] > hi {
				t.Fatalf("trial %d: %s owns %d of %d over %d live, want %d..%d", trial, m, c[m], P, len(live), lo, hi)
			}
		}
		if c[""] != 0 {
			t.Fatalf("trial %d: unowned partitions with live members: %v", trial, target)
		}
		// Moves: a live owner keeps min(owned, share) of its partitions.
		isLive := map[string]bool{}
		for _, m := range live {
			isLive[m] = true
		}
		owned := map[string]int{}
		for _, o := range cur {
			if isLive[o] {
				owned[o]++
			}
		}
		mustMove := 0
		for _, o := range cur {
			if o != "" && !isLive[o] {
				mustMove++
			}
		}
		for _, m := range live {
			mustMove += max(0, owned[m]-hi)
		}
		if got := moves(cur, target); got > mustMove+len(live) {
			t.Fatalf("trial %d: %d moves, want at most %d", trial, got, mustMove+len(live))
		}
		// Convergence: assigning again from the result moves nothing.
		if again := assign(P, live, target); !slices.Equal(again, target) {
			t.Fatalf("trial %d: does not converge: %v then %v", trial, target, again)
		}
	}
}
