package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"
)

// runDump is `chaos history --nats URL [--id CHECKPOINT]`: every revision
// of the checkpoint keys (of one checkpoint with --id), one per line, for
// looking into a failed run: start its kept server store with
// `nats-server -js -sd DIR/nats -p PORT` and point this at it.
func runDump(args []string) int {
	fs := flag.NewFlagSet("history", flag.ContinueOnError)
	url := fs.String("nats", "", "NATS URL")
	id := fs.String("id", "", "only this checkpoint")
	if err := fs.Parse(args); err != nil || *url == "" {
		fmt.Fprintln(os.Stderr, "usage: chaos history --nats URL [--id CHECKPOINT]")
		return 2
	}
	nc, js, err := connectDirect(*url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	hist, err := readHistory(ctx, js)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, h := range hist {
		if *id != "" && h.id != *id {
			continue
		}
		fmt.Printf("%d %s %s deleted=%v pos=%d started=%v owner=%q epoch=%d err=%v\n", h.rev, h.at.Format("15:04:05.000000"),
			h.id, h.deleted, h.rec.Position, h.rec.Started, h.rec.Owner, h.rec.Epoch, h.err)
	}
	return 0
}
