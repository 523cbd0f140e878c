package delivery

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/journal"
)

// Helpers of the cursor and worker tests: a local journal is the source.

// openTestStore opens a journal in a fresh temporary directory and closes
// it when the test ends.
func openTestStore(t testing.TB, cfg journal.Config) *journal.Store {
	t.Helper()
	dir := t.TempDir()
	s, err := journal.Open(dir, cfg)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ev(entity, scope string, payload string) engine.Event {
	return engine.Event{Coordinate: engine.MustCoordinate(entity, scope), Kind: engine.KindData, Payload: []byte(payload)}
}

func mustAppend(t testing.TB, s *journal.Store, e engine.Event) engine.Receipt {
	t.Helper()
	r, err := s.Append(context.Background(), e)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return r
}

func seqsOf(es []engine.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func equalSeqs(a, b []uint64) bool { return slices.Equal(a, b) }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// pollAll drains region from the beginning.
func pollAll(t testing.TB, s *journal.Store, region engine.Region) []engine.Entry {
	t.Helper()
	var out []engine.Entry
	pos, started := uint64(0), false
	for {
		res, err := s.Poll(context.Background(), region, pos, started, 1000)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if len(res.Entries) == 0 {
			return out
		}
		out = append(out, res.Entries...)
		pos, started = res.Entries[len(res.Entries)-1].Seq, true
	}
}
