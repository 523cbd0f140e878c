package workerapp

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/batfleet/batfleet/internal/cli"
)

// Flags registers the worker's typed flags so that a value they refuse is
// reported as the user typed it — "--idle 5: a duration needs a unit,
// e.g. 5s" — rather than as the flag package words it ("invalid value
// "5" for flag -idle: parse error"). A Flags is for one parse.
type Flags struct {
	fs  *flag.FlagSet
	bad error // the first value refused on the command line
}

// NewFlags wraps fs, which must use flag.ContinueOnError.
func NewFlags(fs *flag.FlagSet) *Flags { return &Flags{fs: fs} }

// Duration defines a duration flag (see Flags).
func (f *Flags) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	f.fs.Var(&durationValue{p: p, name: name, f: f}, name, usage)
}

// Int defines an int flag (see Flags).
func (f *Flags) Int(p *int, name string, def int, usage string) {
	*p = def
	f.fs.Var(&intValue{p: p, name: name, f: f}, name, usage)
}

// Parse parses args, then applies the environment fallbacks (as
// cli.Parse). A value a typed flag refused on the command line is a usage
// error naming the flag and the rule; flag.ErrHelp is returned as is.
func (f *Flags) Parse(args []string) error {
	f.fs.SetOutput(io.Discard)
	f.bad = nil
	if err := f.fs.Parse(args); err != nil {
		switch {
		case errors.Is(err, flag.ErrHelp):
			return err
		case f.bad != nil:
			return cli.Usagef("%v", f.bad)
		}
		return cli.Usagef("%v", err)
	}
	// ApplyEnv names the variable itself: BATFLEET_IDLE="5": the rule.
	return cli.ApplyEnv(f.fs)
}

// refused records the first refused value and returns the rule alone,
// for the environment fallback's own message.
func (f *Flags) refused(name, value string, rule error) error {
	if f.bad == nil {
		f.bad = fmt.Errorf("--%s %s: %w", name, value, rule)
	}
	return rule
}

type durationValue struct {
	p    *time.Duration
	name string
	f    *Flags
}

func (v *durationValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return v.p.String()
}

func (v *durationValue) Set(s string) error {
	d, err := ParseDurationFlag(s)
	if err != nil {
		return v.f.refused(v.name, s, err)
	}
	*v.p = d
	return nil
}

// ParseDurationFlag parses a duration flag's value, with an error that
// says what is wrong: a number without a unit, or not a duration at all.
func ParseDurationFlag(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err == nil {
		return d, nil
	}
	if _, nerr := strconv.ParseFloat(strings.TrimSpace(s), 64); nerr == nil {
		return 0, fmt.Errorf("a duration needs a unit, e.g. %ss", strings.TrimSpace(s))
	}
	return 0, errors.New("not a duration: want a number with a unit, e.g. 500ms, 30s, 5m or 1h30m")
}

type intValue struct {
	p    *int
	name string
	f    *Flags
}

func (v *intValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return strconv.Itoa(*v.p)
}

func (v *intValue) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 0, strconv.IntSize)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return v.f.refused(v.name, s, errors.New("out of range"))
		}
		return v.f.refused(v.name, s, errors.New("not a whole number"))
	}
	*v.p = int(n)
	return nil
}

// UntilForever defines a duration flag that also takes "forever" (stored
// as WaitForever, its default): --wait-writer.
func (f *Flags) UntilForever(p *time.Duration, name, usage string) {
	*p = WaitForever
	f.fs.Var(&foreverValue{durationValue{p: p, name: name, f: f}}, name, usage)
}

type foreverValue struct{ durationValue }

func (v *foreverValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	if *v.p == WaitForever {
		return "forever"
	}
	return v.p.String()
}

func (v *foreverValue) Set(s string) error {
	if s == "forever" {
		*v.p = WaitForever
		return nil
	}
	d, err := ParseDurationFlag(s)
	if err == nil && d < 0 {
		err = errors.New("must be >= 0 (0: do not wait), or forever")
	}
	if err != nil {
		return v.f.refused(v.name, s, err)
	}
	*v.p = d
	return nil
}
