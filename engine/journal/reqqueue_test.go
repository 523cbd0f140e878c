package journal

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestReqQueue_TakeAllKeepsPushOrder(t *testing.T) {
	q := newReqQueue()
	var pushed []*request
	for i := range 5 {
		r := &request{size: i}
		q.push(r)
		pushed = append(pushed, r)
	}
	if q.len() != 5 {
		t.Fatalf("len %d, want 5", q.len())
	}
	got := q.takeAll(nil)
	if len(got) != 5 || q.len() != 0 {
		t.Fatalf("took %d, %d left; want 5 and 0", len(got), q.len())
	}
	for i, r := range got {
		if r != pushed[i] || r.next != nil {
			t.Fatalf("position %d: request %d (next %p), want %d with no link", i, r.size, r.next, i)
		}
	}
	if more := q.takeAll(nil); len(more) != 0 {
		t.Fatalf("empty queue gave %d requests", len(more))
	}
}

func TestReqQueue_WaitTimesOut(t *testing.T) {
	q := newReqQueue()
	q.push(&request{})
	tm := time.NewTimer(10 * time.Millisecond)
	if q.wait(2, tm) {
		t.Fatal("wait for 2 returned true with 1 queued")
	}
	if q.want.Load() != 0 {
		t.Fatalf("want left at %d after the timeout", q.want.Load())
	}
	if !q.wait(1, nil) {
		t.Fatal("wait for 1 returned false with 1 queued")
	}
}

// Many producers, one consumer waiting for counts: every request is taken
// exactly once and no wake-up is lost (a lost one would leave the
// consumer asleep until the long deadline).
func TestReqQueue_NoLostWakeups(t *testing.T) {
	q := newReqQueue()
	const producers, each = 8, 2000
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				q.push(&request{size: p*each + i})
				if i%7 == 0 {
					runtime.Gosched()
				}
			}
		})
	}
	seen := make([]bool, producers*each)
	taken := 0
	var batch []*request
	for taken < len(seen) {
		k := int64(min(1+taken%5, len(seen)-taken))
		deadline := time.NewTimer(10 * time.Second)
		if !q.wait(k, deadline) {
			t.Fatalf("no wake-up for %d requests after taking %d of %d", k, taken, len(seen))
		}
		deadline.Stop()
		batch = q.takeAll(batch[:0])
		for _, r := range batch {
			if seen[r.size] {
				t.Fatalf("request %d taken twice", r.size)
			}
			seen[r.size] = true
		}
		taken += len(batch)
	}
	wg.Wait()
	if rest := q.takeAll(nil); len(rest) != 0 || q.len() != 0 {
		t.Fatalf("%d requests left, len %d", len(rest), q.len())
	}
}
