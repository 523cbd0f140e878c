package delivery

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/journal"
)

func TestParseStartFrom(t *testing.T) {
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for in, want := range map[string]StartFrom{
		"": FromBeginning(), "beginning": FromBeginning(), "end": FromEnd(),
		"seq:0": FromSeq(0), "seq:42": FromSeq(42), "time:2026-12-04T10:00:00Z": FromTime(at),
	} {
		got, err := ParseStartFrom(in)
		if err != nil || got.String() != want.String() {
			t.Errorf("ParseStartFrom(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"start", "seq:", "seq:-1", "seq:x", "time:yesterday", "time:2026-12-04", "END"} {
		_, err := ParseStartFrom(bad)
		var ce *engine.ConfigError
		if !errors.As(err, &ce) || ce.Field != "from" {
			t.Errorf("ParseStartFrom(%q) = %v, want a ConfigError naming from", bad, err)
		}
	}
}

// fromRun starts an in-memory worker (or a durable one on ck, id) on
// entity "from" with cfg.From = from and returns what it was handed
// once want entries arrived.
func fromRun(t *testing.T, s *journal.Store, from StartFrom, ck checkpoint.Store, id string, after func(), want int) []uint64 {
	t.Helper()
	cfg := DefaultWorkerConfig()
	cfg.From = from
	if ck != nil {
		cfg.CheckpointID, cfg.Checkpoints = id, ck
	}
	var mu sync.Mutex
	var got []uint64
	w, err := StartWorker(context.Background(), s, engine.RegionEntity("from"), cfg, func(_ context.Context, b []engine.Entry, _ *Delivery) Action {
		mu.Lock()
		got = append(got, seqsOf(b)...)
		mu.Unlock()
		return Continue
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := w.StopAndJoin(); err != nil {
			t.Errorf("Join = %v", err)
		}
	}()
	if after != nil {
		// The start position is in place once the worker publishes it.
		waitFor(t, "the worker to take its start position", func() bool { return w.Stats().CommittedStarted })
		after()
	}
	waitFor(t, "the entries", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= want })
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(got)
}

func TestStartFrom(t *testing.T) {
	s := openTestStore(t, journal.Config{})
	var seqs []uint64
	for i := 0; i < 4; i++ {
		seqs = append(seqs, mustAppend(t, s, ev("from", "s", "x")).Seq)
	}
	t.Run("beginning", func(t *testing.T) {
		if got := fromRun(t, s, FromBeginning(), nil, "", nil, 4); !slices.Equal(got, seqs) {
			t.Fatalf("got %v, want %v", got, seqs)
		}
	})
	t.Run("seq", func(t *testing.T) {
		if got := fromRun(t, s, FromSeq(seqs[2]), nil, "", nil, 2); !slices.Equal(got, seqs[2:]) {
			t.Fatalf("got %v, want %v", got, seqs[2:])
		}
	})
	t.Run("end", func(t *testing.T) {
		var later uint64
		got := fromRun(t, s, FromEnd(), nil, "", func() { later = mustAppend(t, s, ev("from", "s", "late")).Seq }, 1)
		if !slices.Equal(got, []uint64{later}) {
			t.Fatalf("got %v, want only the event appended after the start (%d)", got, later)
		}
		seqs = append(seqs, later)
	})
	t.Run("time", func(t *testing.T) {
		// Let the writer's clock pass the last entry's millisecond, then
		// append more: FromTime(now) starts with those.
		es := pollAll(t, s, engine.RegionEntity("from"))
		lastMs := es[len(es)-1].WallMs
		waitFor(t, "the clock to move past the last entry", func() bool { return time.Now().UnixMilli() > lastMs })
		at := time.Now()
		var fresh []uint64
		for i := 0; i < 3; i++ {
			fresh = append(fresh, mustAppend(t, s, ev("from", "s", "fresh")).Seq)
		}
		if got := fromRun(t, s, FromTime(at), nil, "", nil, 3); !slices.Equal(got, fresh) {
			t.Fatalf("got %v, want the events appended at or after %v: %v", got, at, fresh)
		}
		if got := fromRun(t, s, FromTime(at.Add(-time.Hour)), nil, "", nil, len(seqs)+3); !slices.Equal(got, append(slices.Clone(seqs), fresh...)) {
			t.Fatalf("an hour earlier: got %v, want every event", got)
		}
		seqs = append(seqs, fresh...)
	})
	t.Run("record-wins", func(t *testing.T) {
		ck := checkpoint.NewMemoryStore()
		// A durable worker commits up to seqs[1], then stops.
		cfg := DefaultWorkerConfig()
		cfg.CheckpointID, cfg.Checkpoints = "from-rec", ck
		w, err := StartWorker(context.Background(), s, engine.RegionEntity("from"), cfg, func(_ context.Context, b []engine.Entry, _ *Delivery) Action {
			return Stop
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Join(); err != nil {
			t.Fatal(err)
		}
		rec, _, err := ck.Load(context.Background(), "from-rec")
		if err != nil {
			t.Fatal(err)
		}
		i := slices.Index(seqs, rec.Position)
		if got := fromRun(t, s, FromEnd(), ck, "from-rec", nil, len(seqs)-i-1); !slices.Equal(got, seqs[i+1:]) {
			t.Fatalf("with a stored record at %d, From=end delivered %v, want %v", rec.Position, got, seqs[i+1:])
		}
	})
	t.Run("seq-beyond-visible", func(t *testing.T) {
		cfg := DefaultWorkerConfig()
		cfg.From = FromSeq(s.Visible() + 10)
		w, err := StartWorker(context.Background(), s, engine.RegionEntity("from"), cfg, func(context.Context, []engine.Entry, *Delivery) Action { return Continue })
		if err != nil {
			t.Fatal(err)
		}
		var ce *engine.ConfigError
		if err := w.Join(); !errors.As(err, &ce) || ce.Field != "from" {
			t.Fatalf("Join = %v, want a ConfigError naming from", err)
		}
	})
}
