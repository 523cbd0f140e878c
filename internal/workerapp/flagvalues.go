package workerapp

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/batfleet/batfleet/internal/cli"
)

// Flags registers the worker's typed flags. Their values refuse what they
// cannot take with the rule alone, which cli.FlagError (a value on the
// command line) and cli.ApplyEnv (one from the environment) put after the
// flag as users type it — "--idle 5: a duration needs a unit, e.g. 5s",
// `BATFLEET_IDLE="5": …` — rather than as pflag words it ("invalid
// argument "5" for "--idle" flag: …").
type Flags struct {
	fs *pflag.FlagSet
}

// NewFlags wraps fs.
func NewFlags(fs *pflag.FlagSet) *Flags { return &Flags{fs: fs} }

// Duration defines a duration flag (see Flags).
func (f *Flags) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	f.fs.Var(&durationValue{p: p}, name, usage)
}

// Int defines an int flag (see Flags).
func (f *Flags) Int(p *int, name string, def int, usage string) {
	*p = def
	f.fs.Var(&intValue{p: p}, name, usage)
}

// Parse parses args, then applies the environment fallbacks: cli.Parse.
// A refused value is a usage error naming the flag (or the variable) and
// the rule; pflag.ErrHelp is returned as is. (The worker binary parses
// through cobra, which words its flag errors with cli.FlagError too.)
func (f *Flags) Parse(args []string) error { return cli.Parse(f.fs, args) }

type durationValue struct {
	p *time.Duration
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
		return err
	}
	*v.p = d
	return nil
}

// Type names the value kind (pflag.Value).
func (v *durationValue) Type() string { return "duration" }

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
	p *int
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
			return errors.New("out of range")
		}
		return errors.New("not a whole number")
	}
	*v.p = int(n)
	return nil
}

// Type names the value kind (pflag.Value).
func (v *intValue) Type() string { return "int" }

// UntilForever defines a duration flag that also takes "forever" (stored
// as WaitForever, its default): --wait-writer.
func (f *Flags) UntilForever(p *time.Duration, name, usage string) {
	*p = WaitForever
	f.fs.Var(&foreverValue{durationValue{p: p}}, name, usage)
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
		return err
	}
	*v.p = d
	return nil
}

// Type names the value kind (pflag.Value).
func (v *foreverValue) Type() string { return "duration|forever" }
