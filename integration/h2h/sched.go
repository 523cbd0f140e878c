package main

import (
	"math"
	"runtime/metrics"
	"time"
)

// The Go runtime's own histogram of scheduling latency (time goroutines
// spend runnable before they run) tells whether a latency tail comes from
// the code path or from waiting for a CPU on a loaded machine.
const schedMetric = "/sched/latencies:seconds"

type schedStats struct {
	Count    uint64
	P50, P99 time.Duration
	Over1ms  uint64 // goroutine wake-ups that waited more than 1 ms for a CPU
}

type schedWatch struct{ before *metrics.Float64Histogram }

func readSched() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: schedMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return nil
	}
	return s[0].Value.Float64Histogram()
}

func startSchedWatch() schedWatch { return schedWatch{before: readSched()} }

// since returns the scheduling latencies recorded since the watch began
// (the histogram is cumulative; bucket bounds are upper bounds).
func (w schedWatch) since() schedStats {
	after := readSched()
	if after == nil || w.before == nil || len(after.Counts) != len(w.before.Counts) {
		return schedStats{}
	}
	counts := make([]uint64, len(after.Counts))
	var total uint64
	for i := range counts {
		counts[i] = after.Counts[i] - w.before.Counts[i]
		total += counts[i]
	}
	st := schedStats{Count: total}
	if total == 0 {
		return st
	}
	q := func(p float64) time.Duration {
		want := uint64(p * float64(total))
		var acc uint64
		for i, c := range counts {
			acc += c
			if acc > want {
				b := after.Buckets[i+1]
				if math.IsInf(b, 1) {
					b = after.Buckets[i]
				}
				return time.Duration(b * float64(time.Second))
			}
		}
		return time.Duration(after.Buckets[len(after.Buckets)-1] * float64(time.Second))
	}
	st.P50, st.P99 = q(0.50), q(0.99)
	for i, c := range counts {
		if after.Buckets[i] >= 0.001 {
			st.Over1ms += c
		}
	}
	return st
}
