// Package workerapp is the worker binary's logic: run a remote cursor
// worker with an output-file or child-process handler, and print the
// status of every checkpoint of a journal.
package workerapp

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
)

// ParseRegion parses --region: comma-separated key=value pairs among
// entity=PREFIX, scope=SCOPE, kind=KIND or category=CAT (exclusive), and
// clock=LO-HI (inclusive). Kinds and categories take decimal or 0x hex.
// An empty spec (or "all") is every event. Values cannot contain ",".
func ParseRegion(spec string) (engine.Region, error) {
	r := engine.RegionAll()
	spec = strings.TrimSpace(spec)
	if spec == "" || spec == "all" {
		return r, nil
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(spec, ",") {
		key, val, ok := strings.Cut(part, "=")
		key = strings.TrimSpace(key)
		if !ok {
			return r, fmt.Errorf("--region: %q is not key=value", part)
		}
		if seen[key] {
			return r, fmt.Errorf("--region: %s given twice", key)
		}
		seen[key] = true
		switch key {
		case "entity":
			r = r.WithEntity(val)
		case "scope":
			r = r.WithScope(val)
		case "kind":
			k, err := strconv.ParseUint(val, 0, 16)
			if err != nil {
				return r, fmt.Errorf("--region: kind %q: want a 16-bit kind such as 0x1001", val)
			}
			r = r.WithExact(engine.Kind(k))
		case "category":
			c, err := strconv.ParseUint(val, 0, 16)
			if err != nil {
				return r, fmt.Errorf("--region: category %q: want 0-15 (or 0x0-0xf)", val)
			}
			r = r.WithCategory(uint16(c))
		case "clock":
			lo, hi, ok := strings.Cut(val, "-")
			a, err1 := strconv.ParseUint(lo, 10, 32)
			b, err2 := strconv.ParseUint(hi, 10, 32)
			if !ok || err1 != nil || err2 != nil {
				return r, fmt.Errorf("--region: clock %q: want LO-HI, e.g. 3-9", val)
			}
			r = r.WithClock(engine.ClockRange{Start: uint32(a), End: uint32(b)})
		default:
			return r, fmt.Errorf("--region: unknown key %q (want entity, scope, kind, category, clock)", key)
		}
	}
	if seen["kind"] && seen["category"] {
		return r, fmt.Errorf("--region: kind and category are exclusive")
	}
	if err := r.Validate(); err != nil {
		return r, fmt.Errorf("--region: %w", err)
	}
	return r, nil
}

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
