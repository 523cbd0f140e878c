package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "produce":
			os.Exit(runProducer(os.Args[2:]))
		case "history":
			os.Exit(runDump(os.Args[2:]))
		}
	}
	os.Exit(runMain(os.Args[1:]))
}

func runMain(args []string) int {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	faults := fs.Int("faults", 200, "faults to inject")
	seed := fs.Uint64("seed", 0, "seed of the plan (0: a random one, printed)")
	minutes := fs.Float64("minutes", 0, "length of the chaos phase in minutes (0: 2.2 s per fault)")
	dir := fs.String("dir", "", "work directory (default: a new temporary one, removed after a passing run)")
	binDir := fs.String("bin", "", "directory of prebuilt writer, worker and nats-server (default: build them)")
	diskMode := fs.String("disk", "auto", "the writer's disk: auto (a tmpfs if one can be mounted, else no disk faults), tmpfs or none")
	rate := fs.Float64("rate", 25, "batches per second per producer")
	verbose := fs.Bool("v", false, "log every fault")
	keep := fs.Bool("keep", false, "keep the work directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		*seed = binary.LittleEndian.Uint64(b[:])>>1 | 1
	}
	if *minutes == 0 {
		fmt.Printf("chaos seed=%d (replay: make chaos CHAOS_FAULTS=%d CHAOS_SEED=%d)\n", *seed, *faults, *seed)
	} else {
		fmt.Printf("chaos seed=%d (replay: go run ./integration/chaos --faults %d --minutes %g --seed %d)\n", *seed, *faults, *minutes, *seed)
	}
	span := time.Duration(*minutes * float64(time.Minute))
	if span <= 0 {
		span = time.Duration(*faults) * 2200 * time.Millisecond
	}
	if *faults < 1 || (*diskMode != "auto" && *diskMode != "tmpfs" && *diskMode != "none") {
		fmt.Fprintln(os.Stderr, "chaos: --faults must be >= 1; --disk auto, tmpfs or none")
		return 2
	}
	work := *dir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "batfleet-chaos-"); err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	begin := time.Now()
	sum, err := execute(ctx, config{
		faults: *faults, seed: *seed, span: span, dir: work, binDir: *binDir, disk: *diskMode,
		rate: *rate, verbose: *verbose, out: os.Stdout,
	})
	if err != nil {
		fmt.Printf("chaos: run failed: %v (work directory %s)\n", err, work)
		fmt.Printf("chaos seed=%d FAILED: %s\n", *seed, strings.ReplaceAll(err.Error(), "\n", " "))
		return 2
	}
	for _, d := range sum.details() {
		fmt.Println(d)
	}
	keepDir := *keep || *dir != "" || sum.failed()
	if keepDir {
		fmt.Printf("work directory kept: %s\n", work)
	} else {
		_ = os.RemoveAll(work)
	}
	fmt.Printf("%s duration=%v\n", sum.line(), time.Since(begin).Round(time.Second))
	if sum.failed() {
		return 1
	}
	return 0
}
