package fleet

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet/internal/wire"
	"github.com/batfleet/batfleet/fleet/internal/wire/wiretest"
)

// Client.Count is answered by the writer from its index: the number of
// a region's entries after a position — what pulls would deliver — and
// the wall time of the first, whatever the lag, in one small reply; a bad
// request is a 400 naming the field.
func TestClientCountMatchesPulls(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true})
	ctx := testCtx(t)
	var batch []engine.Event
	for i := range 3000 {
		batch = append(batch, event(t, fmt.Sprintf("order:%d", i%5), []byte("payload")))
		if len(batch) == 500 {
			if _, err := e.c.Append(ctx, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for _, spec := range []string{"", "entity=order:3", "entity=nobody"} {
		region, err := engine.ParseRegion(spec)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		var walls []int64
		pos, started := uint64(0), false
		for {
			res, err := e.c.Poll(ctx, region, pos, started, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Entries) == 0 {
				break
			}
			for _, en := range res.Entries {
				seqs, walls = append(seqs, en.Seq), append(walls, en.WallMs)
			}
			pos, started = res.Entries[len(res.Entries)-1].Seq, true
		}
		check := func(pos uint64, started bool, from int) {
			t.Helper()
			lag, err := e.c.Count(ctx, region, pos, started)
			if err != nil {
				t.Fatalf("count %q after %d: %v", spec, pos, err)
			}
			want := uint64(len(seqs) - from)
			var oldest int64
			if from < len(seqs) {
				oldest = walls[from]
			}
			if lag.Events != want || lag.OldestMs != oldest || lag.Visible != e.store.Visible() {
				t.Errorf("count %q after %d (started %v) = %+v, want %d events, oldest %d, visible %d",
					spec, pos, started, lag, want, oldest, e.store.Visible())
			}
			if lag.Snapshot.Incarnation != e.store.Incarnation() {
				t.Errorf("count snapshot %+v, want incarnation %s", lag.Snapshot, e.store.Incarnation())
			}
		}
		check(0, false, 0)
		if len(seqs) > 10 {
			check(seqs[9], true, 10)
			check(seqs[len(seqs)-1], true, len(seqs))
		}
	}
	// The writer counts a request once its reply is sent: the reply can
	// arrive first.
	waitFor(t, 5*time.Second, "the writer to count 7 count requests", func() bool { return e.w.Stats().Counts == 3+2*2 })

	// Bad requests: 400 naming the field.
	for _, c := range []struct {
		body  []byte
		field string
	}{
		{wiretest.MP(t, wiretest.MPKV{"v", 1, "position", "x"}), "position"},
		{wiretest.MP(t, wiretest.MPKV{"v", 9}), "v"},
		{wiretest.MP(t, wiretest.MPKV{"v", 1, "region", wiretest.MPKV{"scope", "*"}}), "region"},
	} {
		_, err := e.c.request(ctx, wire.CountSubject(testJournal), c.body)
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != 400 {
			t.Errorf("bad count request %x: %v, want a 400", c.body, err)
			continue
		}
		if want := c.field + ":"; len(re.Description) < len(want) || re.Description[:len(c.field)] != c.field {
			t.Errorf("bad count request: %q, want it to name %q", re.Description, c.field)
		}
	}
}
