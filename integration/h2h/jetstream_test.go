package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// spentTimer is a context whose deadline has passed but whose timer has
// not fired yet: what a goroutine sees on a starved machine.
type spentTimer struct{ context.Context }

func (spentTimer) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// TestFetchOnceSpentWait: a fetch never rests on a client-side deadline.
// One spent before the request left (its timer not yet fired, the
// goroutine starved) made nats.go refuse the fetch and ended the run; one
// that ends before the server's messages are read drops them. Here the
// run's context reports a spent deadline and no error: the fetch still
// brings what is there, and an empty one ends at the server's wait.
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

	starved := spentTimer{ctx}
	msgs, err := fetchOnce(starved, c, 1, 30*time.Second, nil, handle)
	if err != nil || len(msgs) != 1 || handled != 1 {
		t.Fatalf("fetch under a spent deadline: %d messages, %d handled, error %v; want the 1 published", len(msgs), handled, err)
	}
	if err := msgs[0].Ack(); err != nil {
		t.Fatal(err)
	}
	msgs, err = fetchOnce(starved, c, 8, 200*time.Millisecond, nil, handle)
	if err != nil || len(msgs) != 0 || handled != 1 {
		t.Fatalf("empty fetch: %d messages, %d handled, error %v; want none and no error", len(msgs), handled, err)
	}
}
