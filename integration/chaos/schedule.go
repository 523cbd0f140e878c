package main

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Fault kinds, as the summary counts them.
const (
	kindKillWriter   = "kill-writer"
	kindKillWorker   = "kill-worker"
	kindKillMember   = "kill-member"
	kindKillProducer = "kill-producer"
	kindPauseWriter  = "pause-writer"
	kindPauseWorker  = "pause-worker"
	kindPauseMember  = "pause-member"
	kindNATSRestart  = "nats-restart"
	kindLatency      = "latency"
	kindReset        = "reset"
	kindBlackhole    = "blackhole"
	kindSlowReader   = "slow-reader"
	kindDiskFull     = "disk-full"
)

// faultKinds in summary order, with their weights in a plan.
var faultKinds = []struct {
	kind   string
	weight int
}{
	{kindKillWriter, 6},
	{kindKillWorker, 8},
	{kindKillMember, 8},
	{kindKillProducer, 6},
	{kindPauseWriter, 3},
	{kindPauseWorker, 4},
	{kindPauseMember, 4},
	{kindNATSRestart, 3},
	{kindLatency, 8},
	{kindReset, 10},
	{kindBlackhole, 6},
	{kindSlowReader, 6},
	{kindDiskFull, 4},
}

// fault is one planned fault.
type fault struct {
	n      int
	at     time.Duration // from the start of the chaos
	kind   string
	target int           // index among the slots of the kind's role (network faults: among every proxied slot)
	dur    time.Duration // pauses, network faults, disk full, the server's downtime
	param  int           // latency in ms, slow-reader bytes per second; nats: 1 = SIGKILL (else SIGTERM); disk: 1 = kill the writer meanwhile
}

func (f fault) String() string {
	return fmt.Sprintf("#%d at %v: %s target %d for %v (param %d)", f.n, f.at.Round(time.Millisecond), f.kind, f.target, f.dur, f.param)
}

// plan draws n faults over span from seed. Every kind appears at least
// once when n allows, the rest by weight; the gaps are even with jitter.
// Without disk faults, the other kinds take their share.
func plan(seed uint64, n int, span time.Duration, diskFaults bool) []fault {
	rng := rand.New(rand.NewPCG(seed, 0x6368616f73))
	var kinds0 []struct {
		kind   string
		weight int
	}
	total := 0
	for _, k := range faultKinds {
		if k.kind != kindDiskFull || diskFaults {
			kinds0 = append(kinds0, k)
			total += k.weight
		}
	}
	kinds := make([]string, 0, n)
	if n >= len(kinds0) {
		for _, k := range kinds0 {
			kinds = append(kinds, k.kind)
		}
	}
	for len(kinds) < n {
		r := rng.IntN(total)
		for _, k := range kinds0 {
			if r < k.weight {
				kinds = append(kinds, k.kind)
				break
			}
			r -= k.weight
		}
	}
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	gap := span / time.Duration(max(n, 1))
	out := make([]fault, n)
	for i, kind := range kinds {
		jitter := time.Duration(rng.Int64N(int64(gap)/2+1)) - gap/4
		f := fault{n: i, at: max(0, time.Duration(i)*gap+gap/2+jitter), kind: kind, target: rng.IntN(1 << 20)}
		ms := func(lo, hi int) time.Duration { return time.Duration(lo+rng.IntN(hi-lo+1)) * time.Millisecond }
		switch kind {
		case kindPauseWriter:
			f.dur = ms(2000, 6000) // past the clients' 3-5 s request timeouts
		case kindPauseWorker:
			f.dur = ms(1000, 5000)
		case kindPauseMember:
			f.dur = ms(2500, 5000) // past the 2 s session: a zombie
		case kindNATSRestart:
			f.dur = ms(200, 2500)
			f.param = rng.IntN(3) / 2 // a third SIGKILL
		case kindLatency:
			f.dur, f.param = ms(1000, 4000), 20+rng.IntN(180)
		case kindBlackhole:
			f.dur = ms(1500, 4000)
		case kindSlowReader:
			f.dur, f.param = ms(1000, 4000), 2048*(1+rng.IntN(16))
		case kindDiskFull:
			// Half the time the writer is also killed while the disk is
			// full, so that its restart meets it (the journal's own
			// preallocated space often outlasts a short window).
			f.dur, f.param = ms(2000, 6000), rng.IntN(2)
		}
		out[i] = f
	}
	return out
}
