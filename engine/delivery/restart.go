package delivery

import (
	"fmt"
	"time"

	"github.com/batfleet/batfleet/engine"
)

// RestartPolicy decides whether a handler panic restarts the worker (the
// failed batch is delivered again) or stops it with
// ErrRestartBudgetExhausted. Policies apply to handler failures only.
type RestartPolicy interface {
	// allow reports whether a restart is allowed at now, updating st.
	allow(st *restartState, now time.Time) bool
	validate() error
	String() string
}

// restartState is a worker's restart accounting.
type restartState struct {
	restarts    uint32
	windowStart time.Time
}

// RestartOnce allows exactly one restart in the worker's lifetime; nothing
// resets it. It is the default.
type RestartOnce struct{}

func (RestartOnce) allow(st *restartState, _ time.Time) bool {
	if st.restarts == 0 {
		st.restarts = 1
		return true
	}
	return false
}

func (RestartOnce) validate() error { return nil }

func (RestartOnce) String() string { return "once" }

// RestartBounded allows MaxRestarts restarts within a window of Within.
// The window starts when the worker starts; when a failure comes more than
// Within after the window start (in whole, truncated milliseconds), the
// count resets and the window restarts at that failure. Successes never
// reset it. MaxRestarts 0 never restarts.
type RestartBounded struct {
	MaxRestarts uint32
	Within      time.Duration
}

func (p RestartBounded) allow(st *restartState, now time.Time) bool {
	elapsedMs := max(int64(0), now.Sub(st.windowStart).Milliseconds())
	if elapsedMs > p.Within.Milliseconds() {
		st.restarts = 0
		st.windowStart = now
	}
	if st.restarts < p.MaxRestarts {
		st.restarts++
		return true
	}
	return false
}

func (p RestartBounded) validate() error {
	if p.Within < 0 {
		return &engine.ConfigError{Field: "Restart.Within", Rule: "must be >= 0"}
	}
	return nil
}

func (p RestartBounded) String() string { return fmt.Sprintf("bounded:%d/%s", p.MaxRestarts, p.Within) }

// Clock is the worker's time source; tests inject one to drive restart
// windows without sleeping.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock returns the real, monotonic clock.
func SystemClock() Clock { return systemClock{} }

// panicText renders a panic value: a string as is, an error by
// its Error method, anything else by fmt.Sprint.
func panicText(p any) string {
	switch v := p.(type) {
	case string:
		return v
	case error:
		return v.Error()
	default:
		return fmt.Sprint(v)
	}
}
