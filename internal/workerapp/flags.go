// Package workerapp is the worker binary's logic: run a remote cursor
// worker with an output-file or child-process handler, and print the
// status of every checkpoint of a journal.
package workerapp

import (
	"errors"
	"fmt"
	"regexp"
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

// Poison policies of --on-poison: what happens to an entry whose handler
// attempts are exhausted.
const (
	OnPoisonRestart = "restart" // the --restart policy decides (the default)
	OnPoisonPark    = "park"    // the entry and its entity's later entries are parked
)

// ParseRetry checks --attempts and --retry-backoff and returns the retry
// policy they make: attempts handler calls per entry (1: no retries), the
// first retry after backoff, doubling up to 5s (or backoff, if longer).
func ParseRetry(attempts int, backoff time.Duration) (delivery.RetryPolicy, error) {
	var errs []string
	if attempts < 1 {
		errs = append(errs, fmt.Sprintf("--attempts %d: must be >= 1 (handler attempts per entry; 1 retries nothing)", attempts))
	}
	if backoff <= 0 {
		errs = append(errs, fmt.Sprintf("--retry-backoff %s: must be > 0 (the wait before the first retry, e.g. 100ms)", backoff))
	}
	if len(errs) > 0 {
		return delivery.RetryPolicy{}, errors.New(strings.Join(errs, "; "))
	}
	p := delivery.DefaultRetryPolicy()
	p.Attempts, p.Base = attempts, backoff
	p.Max = max(p.Max, backoff)
	return p, nil
}

// ParseOnPoison parses --on-poison: "restart" (also "") or "park". Park
// needs a durable checkpoint (--checkpoint or --group): the parked set
// belongs to a checkpoint.
func ParseOnPoison(s string, durable bool) (park bool, err error) {
	switch s {
	case OnPoisonRestart, "":
		return false, nil
	case OnPoisonPark:
		if !durable {
			return false, errors.New("--on-poison park needs --checkpoint or --group (the parked set belongs to a checkpoint)")
		}
		return true, nil
	}
	return false, fmt.Errorf("--on-poison %q: want restart or park", s)
}

// bucketName is what a KV bucket name may hold.
var bucketName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// checkBucketFlag checks a bucket name flag (such as --parked-bucket).
func checkBucketFlag(flag, name string) error {
	if !bucketName.MatchString(name) {
		return fmt.Errorf("%s %q: must be 1 or more characters of [A-Za-z0-9_-]", flag, name)
	}
	return nil
}
