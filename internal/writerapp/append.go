package writerapp

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
)

// AppendConfig configures `writer append`.
type AppendConfig struct {
	NATS     cli.NATSFlags
	Journal  string
	Batch    int     // events per append request
	Gen      int     // synthetic events to generate; 0 reads JSON lines from In
	Entities int     // synthetic: distinct entities
	Scopes   int     // synthetic: distinct scopes
	Rate     float64 // synthetic: events per second; 0 means as fast as possible
	Size     int     // synthetic: payload bytes
	InFlight int     // append requests in flight at once
	In       io.Reader
	// Seqs receives, for JSON-lines input (not --gen), the seq of every
	// appended event as a decimal number on a line of its own, a
	// request's events together and in input order; nil prints none.
	Seqs     io.Writer
	Progress io.Writer // progress bar (on a terminal) and summary
	Log      hclog.Logger
}

// Summary is what an append run did.
type Summary struct {
	Events  int
	Errors  int
	Elapsed time.Duration
}

func (s Summary) String() string {
	rate := 0.0
	if s.Elapsed > 0 {
		rate = float64(s.Events) / s.Elapsed.Seconds()
	}
	return fmt.Sprintf("appended %d events in %.2fs (%.0f events/s), %d errors", s.Events, s.Elapsed.Seconds(), rate, s.Errors)
}

// jsonEvent is one input line of `writer append`.
type jsonEvent struct {
	Entity        string          `json:"entity"`
	Scope         string          `json:"scope"`
	Kind          json.RawMessage `json:"kind"`
	Payload       json.RawMessage `json:"payload"`
	PayloadBase64 *string         `json:"payload_base64"`
}

// ParseEventLine parses one JSON line: entity and scope (both required;
// scope "*" is refused, as no region can select it), kind (a number, or a
// string such as "0x1001"; default 0x1000), and payload as text (a JSON
// string), as JSON text (a JSON object or array, stored as written) or
// payload_base64 as base64. Errors name the field and the rule.
func ParseEventLine(line []byte) (engine.Event, error) {
	var je jsonEvent
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&je); err != nil {
		return engine.Event{}, fmt.Errorf("not a JSON event object: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return engine.Event{}, errors.New("unexpected data after the event object (one object per line)")
	}
	if je.Scope == "*" {
		return engine.Event{}, errors.New(`scope: "*" is refused: no region can select it (a region's scope=* is refused, and a region without a scope matches every scope); use a real scope name`)
	}
	c, err := engine.NewCoordinate(je.Entity, je.Scope)
	if err != nil {
		return engine.Event{}, fmt.Errorf("entity/scope: %w", err)
	}
	ev := engine.Event{Coordinate: c, Kind: engine.KindData}
	if len(je.Kind) > 0 && string(je.Kind) != "null" {
		k, err := parseKind(je.Kind)
		if err != nil {
			return engine.Event{}, fmt.Errorf("kind: %w", err)
		}
		ev.Kind = k
	}
	hasPayload := len(je.Payload) > 0 && string(je.Payload) != "null"
	switch {
	case hasPayload && je.PayloadBase64 != nil:
		return engine.Event{}, errors.New("payload and payload_base64 are exclusive")
	case hasPayload:
		p, err := parsePayload(je.Payload)
		if err != nil {
			return engine.Event{}, fmt.Errorf("payload: %w", err)
		}
		ev.Payload = p
	case je.PayloadBase64 != nil:
		p, err := base64.StdEncoding.DecodeString(*je.PayloadBase64)
		if err != nil {
			return engine.Event{}, fmt.Errorf("payload_base64: %v", err)
		}
		ev.Payload = p
	}
	if ev.Kind.IsReserved() {
		return engine.Event{}, fmt.Errorf("kind: %v is reserved (categories 0x0 and 0xD)", ev.Kind)
	}
	return ev, nil
}

// parsePayload returns a payload's bytes: a JSON string's text, or a JSON
// object's or array's text as written.
func parsePayload(raw json.RawMessage) ([]byte, error) {
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return []byte(s), nil
	case '{', '[':
		return append([]byte(nil), raw...), nil
	default:
		return nil, fmt.Errorf("%s is neither a string nor a JSON object or array (quote it to store it as text; use payload_base64 for binary)", raw)
	}
}

func parseKind(raw json.RawMessage) (engine.Kind, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		s = string(raw)
	}
	v, err := strconv.ParseUint(s, 0, 16)
	if err != nil {
		return 0, fmt.Errorf("%q is not a 16-bit kind (use a number or hex like \"0x1001\")", s)
	}
	return engine.Kind(v), nil
}

// Append runs `writer append`.
func Append(ctx context.Context, cfg AppendConfig) (Summary, error) {
	log := cfg.Log
	if err := engine.ValidateJournalName(cfg.Journal); err != nil {
		return Summary{}, cli.Usagef("--journal: %v", err)
	}
	if cfg.Batch <= 0 {
		return Summary{}, cli.Usagef("--batch must be > 0")
	}
	if cfg.Gen > 0 && (cfg.Entities <= 0 || cfg.Scopes <= 0 || cfg.Size < 0 || cfg.Rate < 0) {
		return Summary{}, cli.Usagef("--gen needs --entities > 0, --scopes > 0, --size >= 0 and --rate >= 0")
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 1
	}
	nc, err := cfg.NATS.Connect(cfg.NATS.URL, "batfleet-writer-append", log)
	if err != nil {
		return Summary{}, &cli.NATSError{Err: err}
	}
	defer nc.Close()
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: cfg.Journal, Logger: log})
	if err != nil {
		return Summary{}, err
	}
	defer client.Close()

	batches := make(chan []engine.Event, cfg.InFlight)
	var sum Summary
	var mu sync.Mutex
	var firstErr, printErr error
	prog := newProgress(cfg.Progress, cfg.Gen)
	start := time.Now()

	var wg sync.WaitGroup
	for i := 0; i < cfg.InFlight; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var line []byte
			for batch := range batches {
				receipts, err := client.Append(ctx, batch)
				mu.Lock()
				if err == nil && cfg.Gen == 0 && cfg.Seqs != nil {
					line = appendSeqLines(line[:0], receipts)
					if _, werr := cfg.Seqs.Write(line); werr != nil && printErr == nil {
						printErr = werr
					}
				}
				if err != nil {
					sum.Errors += len(batch)
					if firstErr == nil {
						firstErr = err
					}
					log.Error("append failed", "events", len(batch), "error", err)
				} else {
					sum.Events += len(batch)
				}
				prog.update(sum.Events, time.Since(start))
				mu.Unlock()
			}
		}()
	}

	produceErr := func() error {
		defer close(batches)
		send := func(b []engine.Event) bool {
			select {
			case batches <- b:
				return true
			case <-ctx.Done():
				return false
			}
		}
		if cfg.Gen > 0 {
			return generate(ctx, cfg, send)
		}
		return readLines(ctx, cfg, send, func(n int) {
			mu.Lock()
			sum.Errors += n
			mu.Unlock()
		})
	}()
	wg.Wait()
	sum.Elapsed = time.Since(start)
	prog.done(sum)
	if produceErr != nil {
		return sum, produceErr
	}
	if firstErr != nil {
		return sum, fmt.Errorf("%d events not appended; first error: %w", sum.Errors, firstErr)
	}
	if sum.Errors > 0 {
		return sum, fmt.Errorf("%d input lines rejected", sum.Errors)
	}
	if printErr != nil {
		return sum, fmt.Errorf("the events were appended, but their seqs could not be printed: %w", printErr)
	}
	return sum, ctx.Err()
}

// appendSeqLines appends the seq of each receipt, one decimal number per
// line.
func appendSeqLines(b []byte, receipts []engine.Receipt) []byte {
	for _, r := range receipts {
		b = strconv.AppendUint(b, r.Seq, 10)
		b = append(b, '\n')
	}
	return b
}

func generate(ctx context.Context, cfg AppendConfig, send func([]engine.Event) bool) error {
	payload := make([]byte, cfg.Size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	coords := make([]engine.Coordinate, 0, cfg.Entities)
	for i := 0; i < cfg.Entities; i++ {
		// Two entity families (order:*, user:*) so regions can pick one.
		family := []string{"order", "user"}[i%2]
		coords = append(coords, engine.MustCoordinate(fmt.Sprintf("%s:%d", family, i), fmt.Sprintf("scope-%d", i%cfg.Scopes)))
	}
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(cfg.Batch) / cfg.Rate)
	}
	next := time.Now()
	for i := 0; i < cfg.Gen; {
		n := min(cfg.Batch, cfg.Gen-i)
		batch := make([]engine.Event, n)
		for j := range batch {
			seq := i + j
			kind := engine.Kind(0x1001)
			if seq%3 == 0 {
				kind = 0x2001 // a second category, for category regions
			}
			batch[j] = engine.Event{Coordinate: coords[seq%len(coords)], Kind: kind, Payload: payload}
		}
		if !send(batch) {
			return ctx.Err()
		}
		i += n
		if interval > 0 {
			next = next.Add(interval)
			select {
			case <-time.After(time.Until(next)):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

func readLines(ctx context.Context, cfg AppendConfig, send func([]engine.Event) bool, rejected func(int)) error {
	sc := bufio.NewScanner(cfg.In)
	sc.Buffer(make([]byte, 64<<10), 2<<20)
	var batch []engine.Event
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		ev, err := ParseEventLine([]byte(text))
		if err != nil {
			cfg.Log.Error("rejected input line", "line", line, "error", err)
			rejected(1)
			continue
		}
		batch = append(batch, ev)
		if len(batch) == cfg.Batch {
			if !send(batch) {
				return ctx.Err()
			}
			batch = nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read input at line %d: %w", line+1, err)
	}
	if len(batch) > 0 && !send(batch) {
		return ctx.Err()
	}
	return nil
}

// progress draws a bar on a terminal and a one-line summary otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	total int
	last  time.Time
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) update(events int, elapsed time.Duration) {
	if !p.tty || p.w == nil || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	rate := float64(events) / max(elapsed.Seconds(), 1e-9)
	if p.total > 0 {
		const width = 30
		done := width * events / p.total
		fmt.Fprintf(p.w, "\r[%s%s] %3d%% %d/%d events %.0f/s ", strings.Repeat("#", done), strings.Repeat(".", width-done),
			100*events/p.total, events, p.total, rate)
		return
	}
	fmt.Fprintf(p.w, "\r%d events %.0f/s ", events, rate)
}

func (p *progress) done(s Summary) {
	if p.w == nil {
		return
	}
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintln(p.w, s.String())
}
