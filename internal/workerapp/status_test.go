package workerapp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/kvckpt"
)

// TestStatusCountsLagAtTheWriter (issue 16, defect 4): `worker status`
// reports each checkpoint's exact lag in matching events without a single
// pull (it used to page through every lagging entry, payloads and all, up
// to a million): the writer counts from its index and sends no entry.
func TestStatusCountsLagAtTheWriter(t *testing.T) {
	r := newCheckpointRig(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// 24,000 events, a third of them of entity order:7 — the region of
	// the sparse checkpoint "c" below.
	var batch []engine.Event
	var sevens []engine.Receipt
	for i := range 24000 {
		entity := fmt.Sprintf("user:%d", i)
		if i%3 == 0 {
			entity = "order:7"
		}
		batch = append(batch, engine.Event{Coordinate: engine.MustCoordinate(entity, "s"), Kind: engine.KindData, Payload: []byte("0123456789")})
		if len(batch) == 1000 {
			rcs, err := r.store.AppendBatch(ctx, batch)
			if err != nil {
				t.Fatal(err)
			}
			for j, rc := range rcs {
				if batch[j].Coordinate.Entity() == "order:7" {
					sevens = append(sevens, rc)
				}
			}
			batch = batch[:0]
		}
	}
	ident := engine.RegionEntity("order:7").Identity()
	all := engine.RegionAll().Identity()
	r.plant(t, "c", checkpoint.Record{Position: sevens[99].Seq, Started: true, RegionIdentity: &ident, JournalID: r.jid,
		Owner: "w1", UpdatedMs: uint64(time.Now().UnixMilli())})
	r.plant(t, "everything", checkpoint.Record{RegionIdentity: &all, JournalID: r.jid, Owner: "w2",
		UpdatedMs: uint64(time.Now().UnixMilli())})
	before := r.w.Stats()

	var out bytes.Buffer
	rows, err := Status(ctx, StatusConfig{NATS: r.natsf, Journal: "main", Bucket: kvckpt.DefaultBucket, JSON: true, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	var printed []CheckpointStatus
	if err := json.Unmarshal(out.Bytes(), &printed); err != nil || len(printed) != len(rows) {
		t.Fatalf("status --json printed %q: %v", out.String(), err)
	}
	lags := map[string]int64{}
	for _, row := range rows {
		if row.Problem != "" {
			t.Errorf("%s: problem %q", row.ID, row.Problem)
		}
		lags[row.ID] = row.LagEvents
	}
	if want := int64(len(sevens) - 100); lags["c"] != want {
		t.Errorf("lag of c (entity=order:7 after its 100th event) = %d, want %d", lags["c"], want)
	}
	if want := int64(r.store.Stats().Entries); lags["everything"] != want {
		t.Errorf("lag of a checkpoint that has not started = %d, want every entry: %d", lags["everything"], want)
	}
	// The writer counts a request once its reply is sent: the reply can
	// arrive first.
	after := r.w.Stats()
	for deadline := time.Now().Add(5 * time.Second); after.Counts-before.Counts < 2 && time.Now().Before(deadline); after = r.w.Stats() {
		time.Sleep(5 * time.Millisecond)
	}
	if after.Pulls != before.Pulls || after.PullEntries != before.PullEntries {
		t.Errorf("status pulled: %d pulls, %d entries sent; want none (the writer counts)",
			after.Pulls-before.Pulls, after.PullEntries-before.PullEntries)
	}
	if after.Counts-before.Counts != 2 {
		t.Errorf("status sent %d count requests, want one per checkpoint (2)", after.Counts-before.Counts)
	}

	// The table shows the same figures.
	out.Reset()
	if _, err := Status(ctx, StatusConfig{NATS: r.natsf, Journal: "main", Bucket: kvckpt.DefaultBucket, Out: &out}); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(" %d ", len(sevens)-100); !strings.Contains(out.String(), want) {
		t.Errorf("status table lacks the lag %q:\n%s", want, out.String())
	}
}
