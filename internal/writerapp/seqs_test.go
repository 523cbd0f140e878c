package writerapp

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
	"github.com/batfleet/batfleet/internal/natstest"
)

func TestAppendSeqLines(t *testing.T) {
	got := appendSeqLines([]byte("x\n"), []engine.Receipt{{Seq: 1}, {Seq: 42}, {Seq: 1<<64 - 1}})
	if want := "x\n1\n42\n18446744073709551615\n"; string(got) != want {
		t.Errorf("appendSeqLines = %q, want %q", got, want)
	}
	if got := appendSeqLines(nil, nil); len(got) != 0 {
		t.Errorf("appendSeqLines of no receipts = %q", got)
	}
}

// TestAppendPrintsSeqs: `writer append` prints the seq of every event it
// appends from JSON lines, one per line in input order (with several
// requests, and with requests in flight at once, each request's lines
// together), and none for a synthetic load.
func TestAppendPrintsSeqs(t *testing.T) {
	ns := natstest.StartServer(t)
	nc, _ := natstest.Connect(t, ns)
	store, err := journal.Open(t.TempDir(), journal.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	w, err := fleet.NewWriter(nc, store, fleet.WriterConfig{Journal: "main"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Close(ctx)
	})
	base := AppendConfig{NATS: cli.NATSFlags{URL: ns.ClientURL()}, Journal: "main", Log: hclog.NewNullLogger()}

	var in strings.Builder
	for i := range 7 {
		fmt.Fprintf(&in, `{"entity":"order:%d","scope":"shop","payload":"p%d"}`+"\n", i, i)
	}
	in.WriteString(`{"entity":"order:x","scope":"shop","kind":1}` + "\n") // rejected: no seq
	var seqs, progress bytes.Buffer
	cfg := base
	cfg.Batch, cfg.InFlight, cfg.In, cfg.Seqs, cfg.Progress = 3, 1, strings.NewReader(in.String()), &seqs, &progress
	sum, err := Append(context.Background(), cfg)
	if err == nil || sum.Events != 7 || sum.Errors != 1 {
		t.Fatalf("Append: %+v, %v; want 7 events and the rejected line", sum, err)
	}
	lines := strings.Split(strings.TrimSuffix(seqs.String(), "\n"), "\n")
	if len(lines) != 7 {
		t.Fatalf("printed %q, want 7 lines", seqs.String())
	}
	for i, l := range lines {
		seq, err := strconv.ParseUint(l, 10, 64)
		if err != nil {
			t.Fatalf("line %d %q is not a seq", i+1, l)
		}
		ents, err := store.Poll(context.Background(), engine.RegionAll(), seq-1, true, 1)
		if err != nil || len(ents.Entries) != 1 || ents.Entries[0].Seq != seq {
			t.Fatalf("seq %d: %+v, %v", seq, ents, err)
		}
		if got, want := ents.Entries[0].Coordinate.Entity(), fmt.Sprintf("order:%d", i); got != want {
			t.Errorf("line %d: seq %d is entity %s, want %s (input order)", i+1, seq, got, want)
		}
	}
	if strings.Contains(progress.String(), "\n1\n") || !strings.Contains(progress.String(), "appended 7 events") {
		t.Errorf("progress %q: want the summary alone", progress.String())
	}

	seqs.Reset()
	cfg = base
	cfg.Gen, cfg.Entities, cfg.Scopes, cfg.Size, cfg.Batch, cfg.InFlight, cfg.Seqs, cfg.Progress = 50, 5, 1, 10, 16, 2, &seqs, &progress
	if sum, err := Append(context.Background(), cfg); err != nil || sum.Events != 50 {
		t.Fatalf("Append --gen: %+v, %v", sum, err)
	}
	if seqs.Len() != 0 {
		t.Errorf("--gen printed seqs %q, want none", seqs.String())
	}
}
