// Package workerapp is the worker binary's logic: run a remote cursor
// worker with an output-file or child-process handler, and print the
// status of every checkpoint of a journal.
package workerapp

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/batfleet/batfleet/engine/delivery"
)

// ParseRestart parses --restart: "once" or "bounded:N/DURATION" (e.g.
// bounded:3/1m: at most 3 restarts within a minute).
func ParseRestart(s string) (delivery.RestartPolicy, error) {
	if s == "once" || s == "" {
		return delivery.RestartOnce{}, nil
	}
	rest, ok := strings.CutPrefix(s, "bounded:")
	n, d, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		return nil, fmt.Errorf("--restart %q: want once or bounded:N/DURATION (e.g. bounded:3/1m)", s)
	}
	max, err := strconv.ParseUint(n, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("--restart %q: N must be a whole number", s)
	}
	within, err := time.ParseDuration(d)
	if err != nil || within < 0 {
		return nil, fmt.Errorf("--restart %q: DURATION must be like 30s or 1m", s)
	}
	return delivery.RestartBounded{MaxRestarts: uint32(max), Within: within}, nil
}
