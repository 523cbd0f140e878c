// Package cli holds what the writer and worker binaries share: flags with
// environment fallbacks, logging, NATS connection options, the metrics
// and health HTTP server, signal handling and exit codes.
//
// Their command lines are cobra commands (github.com/spf13/cobra; see
// Execute), chosen over kong because cobra brings subcommands, help,
// --version and shell completion for bash, zsh, fish and powershell
// (`completion SHELL`) built in, and because its flags are pflag's, whose
// API mirrors the standard flag package's: every flag is registered as it
// was (fs.StringVar, fs.Var), where kong would have made each a struct
// tag, and the environment fallbacks stay in one function, ApplyEnv, not
// in a tag on every flag.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"
)

// Exit codes of both binaries.
const (
	ExitOK       = 0   // finished, or stopped gracefully by a signal
	ExitFailure  = 1   // failed while running (the error is logged)
	ExitUsage    = 2   // bad flags, arguments or configuration
	ExitNoNATS   = 3   // could not connect to NATS
	ExitSignaled = 130 // a second signal: stopped at once
)

// ErrUsage marks errors in flags, arguments or configuration. Its text
// is never shown: a usage error reads as what is wrong ("--batch 0: must
// be >= 1"), with no "usage:" in front.
var ErrUsage = errors.New("cli: usage error")

// usageError is a usage error's text; it matches ErrUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

// Usagef returns an error matching ErrUsage, worded by format alone.
func Usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// EnvName returns the environment variable backing a flag: BATFLEET_ and
// the flag name upper-cased with dashes as underscores (NATS_URL for
// "nats").
func EnvName(flagName string) string {
	if flagName == "nats" {
		return "NATS_URL"
	}
	return "BATFLEET_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// noEnv are flags with no environment fallback: one-off, destructive
// choices (`worker checkpoint set --position`, `--force`) that a variable
// left in an environment must never make for a later command, and the
// --help and --version flags cobra adds.
var noEnv = map[string]bool{"force": true, "position": true, "help": true, "version": true}

// HasEnv reports whether the flag name falls back on EnvName(name).
func HasEnv(name string) bool { return !noEnv[name] }

// ApplyEnv sets every flag of fs not given on the command line (not
// Changed) from its environment variable, if set (except the flags with
// none: --force, --position, --help and --version). A value that does not
// parse is a usage error naming the variable and the rule:
// BATFLEET_IDLE="5": a duration needs a unit, e.g. 5s.
func ApplyEnv(fs *pflag.FlagSet) error {
	var msgs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || !HasEnv(f.Name) {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := f.Value.Set(v); err != nil {
				msgs = append(msgs, fmt.Sprintf("%s=%q: %s", EnvName(f.Name), v, valueRule(err)))
			}
		}
	})
	if len(msgs) > 0 {
		return Usagef("%s", strings.Join(msgs, "; "))
	}
	return nil
}

// Parse parses args into fs, then applies environment fallbacks. A parse
// error is a usage error worded by FlagError; pflag.ErrHelp is returned
// as is. (The binaries parse through cobra, whose flag errors go through
// FlagError too; Parse is for a flag set on its own.)
func Parse(fs *pflag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	fs.Init(fs.Name(), pflag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return FlagError(err)
	}
	return ApplyEnv(fs)
}

// FlagError words a pflag parse error as users type flags, as a usage
// error: "unknown flag --foo", "--idle 5: a duration needs a unit, e.g.
// 5s", "--batch needs a value".
func FlagError(err error) error {
	var (
		notExist *pflag.NotExistError
		noValue  *pflag.ValueRequiredError
		invalid  *pflag.InvalidValueError
		syntax   *pflag.InvalidSyntaxError
	)
	switch {
	case errors.As(err, &notExist):
		if s := notExist.GetSpecifiedShortnames(); s != "" {
			return Usagef("unknown flag -%s", s) // -bogus, not pflag's 'b' in -bogus
		}
		return Usagef("unknown flag --%s", notExist.GetSpecifiedName())
	case errors.As(err, &noValue):
		return Usagef("--%s needs a value", noValue.GetFlag().Name)
	case errors.As(err, &invalid):
		return Usagef("--%s %s: %s", invalid.GetFlag().Name, invalid.GetValue(), valueRule(invalid.Unwrap()))
	case errors.As(err, &syntax):
		return Usagef("bad flag syntax %s", syntax.GetSpecifiedFlag())
	}
	return Usagef("%v", err)
}

// valueRule words a flag value's parse error: the rule it breaks, for
// pflag's own types, whose errors are strconv's.
func valueRule(err error) string {
	var num *strconv.NumError
	if !errors.As(err, &num) {
		return err.Error()
	}
	switch {
	case num.Func == "ParseBool":
		return "want true or false"
	case errors.Is(num.Err, strconv.ErrRange):
		return "out of range"
	case num.Func == "ParseFloat":
		return "not a number"
	}
	return "not a whole number"
}

// Usage writes fs's flags, with their environment variables, to w: the
// command's own flags first, then the NATS connection and authentication
// flags (NATSFlags) apart. A flag whose help already says its default
// ("(default ...") gets no second one, and a bool flag that is off unless
// given shows none.
func Usage(w io.Writer, fs *pflag.FlagSet, synopsis string) {
	fmt.Fprintf(w, "usage: %s\n\n", synopsis)
	writeFlags(w, fs)
}

// writeFlags writes fs's flags as Usage does, without the synopsis.
func writeFlags(w io.Writer, fs *pflag.FlagSet) {
	var own, natsFlags []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		switch {
		case f.Hidden:
		case natsFlagNames[f.Name]:
			natsFlags = append(natsFlags, f)
		default:
			own = append(own, f)
		}
	})
	show := func(f *pflag.Flag) {
		name := "--" + f.Name
		if f.Shorthand != "" {
			name = "-" + f.Shorthand + ", " + name
		}
		if HasEnv(f.Name) {
			name += " [" + EnvName(f.Name) + "]"
		}
		def := ""
		offSwitch := f.NoOptDefVal == "true" && f.DefValue == "false" // a bool flag, off unless given
		if f.DefValue != "" && !offSwitch && !strings.Contains(f.Usage, "(default") {
			def = " (default " + strconv.Quote(f.DefValue) + ")"
		}
		fmt.Fprintf(w, "  %s\n      %s%s\n", name, f.Usage, def)
	}
	if len(own) > 0 {
		fmt.Fprintf(w, "flags (environment variable in brackets):\n")
		for _, f := range own {
			show(f)
		}
	}
	if len(natsFlags) > 0 {
		fmt.Fprintf(w, "\nNATS connection and authentication flags:\n")
		for _, f := range natsFlags {
			show(f)
		}
	}
}

// LogFlags are the logging flags of both binaries.
type LogFlags struct {
	Level string
	JSON  bool
}

// Register adds --log-level and --log-json to fs.
func (l *LogFlags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&l.Level, "log-level", "info", "log level: trace, debug, info, warn, error")
	fs.BoolVar(&l.JSON, "log-json", false, "log JSON lines instead of text")
}

// Logger builds the hclog logger writing to w.
func (l LogFlags) Logger(name string, w io.Writer) (hclog.Logger, error) {
	level := hclog.LevelFromString(l.Level)
	if level == hclog.NoLevel {
		return nil, Usagef("--log-level %q: want trace, debug, info, warn or error", l.Level)
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: level, JSONFormat: l.JSON, Output: w}), nil
}

// NATSFlags are the NATS connection flags of both binaries.
type NATSFlags struct {
	URL      string
	Creds    string
	NKey     string
	User     string
	Password string
	TLSCA    string
	TLSCert  string
	TLSKey   string
}

// natsFlagNames are the flags NATSFlags.Register adds, which Usage lists
// apart.
var natsFlagNames = map[string]bool{
	"nats": true, "creds": true, "nkey": true, "user": true, "password": true,
	"tls-ca": true, "tls-cert": true, "tls-key": true,
}

// Register adds the NATS flags to fs (natsFlagNames); defaultURL is
// --nats's default.
func (n *NATSFlags) Register(fs *pflag.FlagSet, defaultURL, urlHelp string) {
	fs.StringVar(&n.URL, "nats", defaultURL, urlHelp)
	fs.StringVar(&n.Creds, "creds", "", "NATS credentials file (JWT + nkey)")
	fs.StringVar(&n.NKey, "nkey", "", "NATS nkey seed file")
	fs.StringVar(&n.User, "user", "", "NATS user")
	fs.StringVar(&n.Password, "password", "", "NATS password")
	fs.StringVar(&n.TLSCA, "tls-ca", "", "CA certificate file for the NATS server")
	fs.StringVar(&n.TLSCert, "tls-cert", "", "client certificate file for NATS")
	fs.StringVar(&n.TLSKey, "tls-key", "", "client key file for NATS")
}

// Options returns the nats.Options for the flags: reconnect forever,
// logging disconnects and reconnects.
func (n NATSFlags) Options(name string, log hclog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(5 * time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if n.Creds != "" {
		opts = append(opts, nats.UserCredentials(n.Creds))
	}
	if n.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(n.NKey)
		if err != nil {
			return nil, Usagef("--nkey %s: %v", n.NKey, err)
		}
		opts = append(opts, o)
	}
	if n.User != "" || n.Password != "" {
		opts = append(opts, nats.UserInfo(n.User, n.Password))
	}
	if n.TLSCA != "" {
		opts = append(opts, nats.RootCAs(n.TLSCA))
	}
	if (n.TLSCert == "") != (n.TLSKey == "") {
		return nil, Usagef("--tls-cert and --tls-key go together")
	}
	if n.TLSCert != "" {
		opts = append(opts, nats.ClientCert(n.TLSCert, n.TLSKey))
	}
	return opts, nil
}

// Connect connects to url with the flags' options, giving up after
// timeout (the first connection is not retried forever: a wrong URL
// should fail fast with one clear line).
func (n NATSFlags) Connect(url, name string, log hclog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := n.Options(name, log)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, append(append(opts, n.refusalLogger(log)), extra...)...)
	if err != nil {
		return nil, n.connectError(url, err) // connect_errors.go
	}
	return nc, nil
}

var forced struct {
	mu    sync.Mutex
	next  int
	hooks map[int]func()
}

// AtForcedExit registers f to run when a second signal exits the process
// at once (to kill child processes, say); remove unregisters it.
func AtForcedExit(f func()) (remove func()) {
	forced.mu.Lock()
	defer forced.mu.Unlock()
	if forced.hooks == nil {
		forced.hooks = make(map[int]func())
	}
	id := forced.next
	forced.next++
	forced.hooks[id] = f
	return func() {
		forced.mu.Lock()
		delete(forced.hooks, id)
		forced.mu.Unlock()
	}
}

func runForcedExitHooks() {
	forced.mu.Lock()
	hooks := make([]func(), 0, len(forced.hooks))
	for _, f := range forced.hooks {
		hooks = append(hooks, f)
	}
	forced.mu.Unlock()
	for _, f := range hooks {
		f()
	}
}

// forcedExit is set by a second signal before its hooks run.
var forcedExit atomic.Bool

// Exit ends the process with code, or with ExitSignaled when a second
// signal is forcing the exit: its hooks (killing --exec children, say) can
// let the normal path finish first, and that must not turn a forced exit
// into a clean one. Mains exit through it.
func Exit(code int) {
	if forcedExit.Load() {
		code = ExitSignaled
	}
	os.Exit(code)
}

// SignalContext returns a context cancelled by the first SIGINT or
// SIGTERM; a second one runs the AtForcedExit hooks and exits the process
// at once with ExitSignaled.
// stop releases the signal handlers.
func SignalContext(parent context.Context, log hclog.Logger) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			cancel() // before the log line: whoever reads it knows the stop was requested
			log.Info("signal received; finishing the work in hand (send again to stop at once)", "signal", sig.String())
		case <-done:
			return
		}
		select {
		case sig := <-ch:
			log.Warn("second signal; exiting now", "signal", sig.String())
			forcedExit.Store(true)
			runForcedExitHooks()
			os.Exit(ExitSignaled)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}

// NATSError reports a failure to reach NATS (exit code ExitNoNATS).
type NATSError struct{ Err error }

func (e *NATSError) Error() string { return e.Err.Error() }
func (e *NATSError) Unwrap() error { return e.Err }
