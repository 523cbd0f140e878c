package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestFetchOnceSpentWait: a Fetch whose wait ran out before it was sent
// (its goroutine stalled on a loaded machine; nats.go refuses the spent
// deadline) is an empty fetch, not an error that ends the run; the next
// one brings what is there.
func TestFetchOnceSpentWait(t *testing.T) {
	node, err := startNode(t.TempDir(), "fetch", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.shutdown)
	nc, err := node.connect("fetch-test")
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "F", Subjects: []string{"f.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "f.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	c, err := js.CreateConsumer(ctx, "F", jetstream.ConsumerConfig{Durable: "f", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	handled := 0
	handle := func(jetstream.Msg) { handled++ }

	msgs, err := fetchOnce(ctx, c, 8, 0, nil, handle) // a wait spent before the request leaves
	if err != nil || len(msgs) != 0 || handled != 0 {
		t.Fatalf("fetch with a spent wait: %d messages, %d handled, error %v; want an empty fetch", len(msgs), handled, err)
	}
	msgs, err = fetchOnce(ctx, c, 1, 30*time.Second, nil, handle)
	if err != nil || len(msgs) != 1 || handled != 1 {
		t.Fatalf("next fetch: %d messages, %d handled, error %v; want the 1 published", len(msgs), handled, err)
	}
}
