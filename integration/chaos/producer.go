package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet"
)

// The producer role: `chaos produce ...`, the chaos program re-executed.
// It appends keyed batches through fleet.Client and keeps a log:
//
//	i P/ENTITY/SCOPE P/ENTITY/SCOPE ...   a batch about to be sent (its intent)
//	a P SEQ ENTITY                          one event of it acknowledged at SEQ
//
// Both are fsynced: an intent before its request is sent, the acks before
// the producer counts them (only fsynced acks are "acknowledged" for the
// checker). Every event's idempotency key is derived from its payload id P
// (unique over the run), so a batch resent after a lost reply — by the
// client's own retries, by this loop, or by the next incarnation of the
// producer after a SIGKILL, which resends its last unacknowledged intent
// first — is replayed by the writer, never appended twice.

// keyDomain is the domain of the payload ids' idempotency keys.
const keyDomain = "batfleet-chaos-payload"

// payloadKey is the idempotency key of the event carrying payload id p.
func payloadKey(p string) engine.IdempotencyKey {
	return engine.DeriveIdempotencyKey(keyDomain, []byte(p))
}

type produceFlags struct {
	nats, journal, id, log string
	seed                   uint64
	rate                   float64 // batches per second
	entities               int
	scopes                 string
}

// runProducer is the producer role's main; it returns the exit code.
func runProducer(args []string) int {
	fs := flag.NewFlagSet("produce", flag.ContinueOnError)
	var f produceFlags
	fs.StringVar(&f.nats, "nats", "", "NATS URL")
	fs.StringVar(&f.journal, "journal", "main", "journal")
	fs.StringVar(&f.id, "id", "", "producer id (payload ids are ID-N)")
	fs.StringVar(&f.log, "log", "", "receipt log")
	fs.Uint64Var(&f.seed, "seed", 1, "seed")
	fs.Float64Var(&f.rate, "rate", 20, "batches per second")
	fs.IntVar(&f.entities, "entities", 40, "entities")
	fs.StringVar(&f.scopes, "scopes", "s0,s1,s2", "scopes")
	if err := fs.Parse(args); err != nil || f.id == "" || f.log == "" || f.nats == "" {
		fmt.Fprintln(os.Stderr, "usage: chaos produce --nats URL --id ID --log FILE [--journal J --seed S --rate R --entities N --scopes a,b]")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := produce(ctx, f); err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "producer %s: %v\n", f.id, err)
		return 1
	}
	return 0
}

// plannedEvent is one event of a batch: payload id, entity, scope.
type plannedEvent struct{ payload, entity, scope string }

// String is the event in an intent line: P/ENTITY/SCOPE ("/" is in no
// entity or scope).
func (p plannedEvent) String() string { return p.payload + "/" + p.entity + "/" + p.scope }

func parsePlanned(s string) (plannedEvent, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return plannedEvent{}, false
	}
	return plannedEvent{parts[0], parts[1], parts[2]}, true
}

// producerState is what a producer's log says: the next payload number
// and the last intent not acknowledged (nil if none).
func producerState(path, id string) (next int, pending []plannedEvent, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	acked := map[string]bool{}
	var last []plannedEvent
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue // the end, or a line cut short
		}
		switch f[0] {
		case "i":
			// A line cut by a kill was never sent; its ids still count
			// as used, so that no id ever names two different events.
			var batch []plannedEvent
			for _, s := range f[1:] {
				pid, _, _ := strings.Cut(s, "/")
				if n, err := strconv.Atoi(strings.TrimPrefix(pid, id+"-")); err == nil && n >= next {
					next = n + 1
				}
				p, ok := parsePlanned(s)
				if !ok {
					batch = nil
					break
				}
				batch = append(batch, p)
			}
			if batch != nil {
				last = batch
			}
		case "a":
			acked[f[1]] = true
		}
	}
	if len(last) > 0 && !acked[last[0].payload] {
		pending = last
	}
	return next, pending, nil
}

func produce(ctx context.Context, f produceFlags) error {
	next, pending, err := producerState(f.log, f.id)
	if err != nil {
		return err
	}
	lf, err := os.OpenFile(f.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	// Start on a fresh line: the last one may have been cut by a kill.
	if _, err := lf.WriteString("\n"); err != nil {
		return err
	}
	nc, err := nats.Connect(f.nats, nats.Name("chaos-producer-"+f.id), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond), nats.RetryOnFailedConnect(true), nats.Timeout(5*time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	c, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: f.journal, Timeout: 3 * time.Second})
	if err != nil {
		return err
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(f.seed, uint64(next)))
	scopes := strings.Split(f.scopes, ",")
	interval := time.Duration(float64(time.Second) / f.rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for ctx.Err() == nil {
		batch := pending
		pending = nil
		if batch == nil {
			n := 1 + rng.IntN(6)
			for range n {
				batch = append(batch, plannedEvent{
					payload: fmt.Sprintf("%s-%d", f.id, next),
					entity:  entityName(rng.IntN(f.entities)),
					scope:   scopes[rng.IntN(len(scopes))],
				})
				next++
			}
		}
		if err := appendBatch(ctx, c, lf, batch); err != nil {
			return err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	return nil
}

// appendBatch logs the intent, appends until the writer acknowledges
// (same keys on every attempt), logs the receipts and syncs them. A stop
// (ctx) during the retries abandons the batch, which stays the pending
// intent of the next incarnation.
func appendBatch(ctx context.Context, c *fleet.Client, lf *os.File, batch []plannedEvent) error {
	var line strings.Builder
	line.WriteString("i")
	events := make([]engine.Event, len(batch))
	for i, p := range batch {
		line.WriteString(" " + p.String())
		events[i] = engine.Event{Coordinate: engine.MustCoordinate(p.entity, p.scope), Kind: engine.KindData,
			Payload: []byte(p.payload), Key: payloadKey(p.payload)}
	}
	line.WriteString("\n")
	if err := writeSync(lf, line.String()); err != nil {
		return err
	}
	backoff := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		receipts, err := c.Append(actx, events)
		cancel()
		if err == nil {
			var acks strings.Builder
			for i, r := range receipts {
				fmt.Fprintf(&acks, "a %s %d %s\n", batch[i].payload, r.Seq, batch[i].entity)
			}
			return writeSync(lf, acks.String())
		}
		if ctx.Err() != nil {
			return nil
		}
		fmt.Fprintf(os.Stderr, "%s append of %d events failed (retrying with the same keys): %v\n",
			time.Now().Format("15:04:05.000"), len(events), err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// entityName is the n-th entity: k<n mod 4>:<n>, so that an entity
// prefix (k1) selects a quarter of them.
func entityName(n int) string { return fmt.Sprintf("k%d:%02d", n%4, n) }

func writeSync(f *os.File, s string) error {
	if _, err := f.WriteString(s); err != nil {
		return err
	}
	return f.Sync()
}
