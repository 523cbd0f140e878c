package delivery

import (
	"context"
	"testing"
	"time"
)

// TestWRK16_BackoffSchedule: the retry schedule after transient errors
// starts at the base (the idle timeout), doubles, is capped at 1 s, and
// starts over after reset.
// Catalogue: WRK-16 (SPEC §9.3b).
func TestWRK16_BackoffSchedule(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		base time.Duration
		want []time.Duration
	}{
		{10 * ms, []time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second}},
		{300 * ms, []time.Duration{300 * ms, 600 * ms, time.Second, time.Second}},
		{time.Second, []time.Duration{time.Second, time.Second}},
		{time.Hour, []time.Duration{time.Second, time.Second}},
		{1, []time.Duration{1, 2, 4, 8}},
	} {
		b := backoff{base: tc.base}
		for round := 0; round < 2; round++ {
			for i, want := range tc.want {
				if got := b.next(); got != want {
					t.Fatalf("base %v, round %d, wait %d = %v, want %v", tc.base, round, i, got, want)
				}
				if b.cur != tc.want[i] {
					t.Fatalf("base %v: wait stands at %v after next, want %v", tc.base, b.cur, want)
				}
			}
			b.reset()
			if b.cur != 0 {
				t.Fatalf("base %v: reset left the wait at %v", tc.base, b.cur)
			}
		}
	}
}

// TestWRK16_BackoffWait: wait sleeps the current wait and reports true;
// a done context ends it at once with false.
// Catalogue: WRK-16 (SPEC §9.3: Stop interrupts a backoff at once).
func TestWRK16_BackoffWait(t *testing.T) {
	b := backoff{base: 20 * time.Millisecond}
	b.next()
	start := time.Now()
	if !b.wait(context.Background()) {
		t.Fatal("wait with a live context = false")
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("wait returned after %v, want ≥ 20ms", d)
	}

	long := backoff{base: time.Hour}
	long.next()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start = time.Now()
	if long.wait(ctx) {
		t.Fatal("wait with a done context = true")
	}
	done := make(chan bool, 1)
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- long.wait(ctx) }()
	cancel()
	select {
	case ok := <-done:
		if ok {
			t.Fatal("wait cancelled midway = true")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled wait of 1s did not return")
	}
	if d := time.Since(start); d >= time.Second {
		t.Fatalf("cancelled waits took %v, want well under the 1 s wait", d)
	}
}
