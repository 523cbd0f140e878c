package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet/internal/wire"
)

// WriterConfig configures a Writer. Zero values mean the defaults.
type WriterConfig struct {
	// Journal is the journal name served (required; [A-Za-z0-9_-]{1,64}).
	Journal string
	// Version is the micro service version, semver (default "0.1.0").
	Version string
	// MaxInFlight caps requests being handled at once; more are answered
	// 503 at once rather than queued without bound (default 4096).
	MaxInFlight int
	// AppendTimeout bounds one append (default 30 s).
	AppendTimeout time.Duration
	// MaxWait is the longest a pull may ask to be held (wait_ms; default
	// 30 s); a longer one is refused with 400 naming wait_ms.
	MaxWait time.Duration
	// MaxHeldPulls caps the pulls held at once (default 100,000); beyond
	// it a pull is answered at once, as if it had no wait_ms.
	MaxHeldPulls int
	// ObserveRequest, when set, is called once per answered request (from
	// the goroutine answering it): for latency histograms.
	ObserveRequest func(RequestObservation)
	// Logger receives the writer's logs; nil means none.
	Logger hclog.Logger
}

// RequestObservation is one answered request, for WriterConfig.ObserveRequest.
type RequestObservation struct {
	Endpoint string        // "pull", "append", "info" or "count"
	Took     time.Duration // from arrival to answer (an append's includes its fsync)
	Held     bool          // a pull that was held: Took is mostly its wait
	Failed   bool          // answered with an error status
}

func (c WriterConfig) withDefaults() WriterConfig {
	if c.Version == "" {
		c.Version = "0.1.0"
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 4096
	}
	if c.AppendTimeout == 0 {
		c.AppendTimeout = 30 * time.Second
	}
	if c.MaxWait == 0 {
		c.MaxWait = 30 * time.Second
	}
	if c.MaxHeldPulls == 0 {
		c.MaxHeldPulls = 100_000
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// WriterStats are a writer's counters.
type WriterStats struct {
	Pulls        uint64 // pull requests answered with entries or empty
	PullEntries  uint64
	PullBytes    uint64 // reply bytes
	Appends      uint64 // append requests that succeeded
	AppendEvents uint64
	AppendBytes  uint64 // request bytes
	Infos        uint64
	Counts       uint64            // count requests answered
	Epochs       uint64            // epoch messages published
	Held         int               // pulls held now
	PullsHeld    uint64            // pulls that were held (answered later)
	HeldExpired  uint64            // held pulls answered empty at their wait_ms
	Errors       map[string]uint64 // error replies by code
}

// Writer serves an journal.Store over NATS as the micro service
// "batfleet-writer": endpoints pull, append, info and count on
// batfleet.<journal>.*, and epoch messages on batfleet.<journal>.epoch
// after each visibility advance (coalesced). Requests are handed to
// goroutines the Writer owns, so a slow append (waiting for its group
// commit) never holds up pulls; Close drains them.
type Writer struct {
	nc    *nats.Conn
	store *journal.Store
	cfg   WriterConfig
	log   hclog.Logger
	subj  wire.Subjects
	svc   micro.Service

	maxPayload int
	holds      *holds
	figures    map[string]*endpointFigures // by endpoint name; fixed after NewWriter

	mu       sync.Mutex // guards closing and wg.Add
	closing  bool
	inflight sync.WaitGroup
	sem      chan struct{}

	quit      chan struct{}
	pubDone   chan struct{}
	closeOnce sync.Once
	closeErr  error

	stats struct {
		pulls, pullEntries, pullBytes, appends, appendEvents, appendBytes, infos, counts, epochs atomic.Uint64
		held, heldExpired                                                                        atomic.Uint64
		errMu                                                                                    sync.Mutex
		errs                                                                                     map[string]uint64
	}
}

// NewWriter registers the service on nc and starts publishing epochs. The
// store stays the caller's: Close the Writer before the store.
func NewWriter(nc *nats.Conn, store *journal.Store, cfg WriterConfig) (*Writer, error) {
	if err := engine.ValidateJournalName(cfg.Journal); err != nil {
		return nil, fmt.Errorf("fleet: WriterConfig.Journal: %w", err)
	}
	if limit := MaxEntryBytes(nc.MaxPayload()); store.MaxEntryBytes() > limit {
		return nil, &engine.ConfigError{Field: "journal.Config.MaxEntryBytes",
			Rule: fmt.Sprintf("is %d; entries must fit a pull reply under the server's max payload of %d bytes: at most %d (fleet.MaxEntryBytes)",
				store.MaxEntryBytes(), nc.MaxPayload(), limit)}
	}
	cfg = cfg.withDefaults()
	w := &Writer{
		nc: nc, store: store, cfg: cfg,
		log:        cfg.Logger.Named("writer").With("journal", cfg.Journal),
		subj:       wire.SubjectsFor(cfg.Journal),
		maxPayload: int(nc.MaxPayload()),
		sem:        make(chan struct{}, cfg.MaxInFlight),
		holds:      newHolds(cfg.MaxHeldPulls, store.Visible()),
		quit:       make(chan struct{}),
		pubDone:    make(chan struct{}),
	}
	w.stats.errs = make(map[string]uint64)
	w.figures = map[string]*endpointFigures{}
	for _, name := range []string{"pull", "append", "info", "count"} {
		w.figures[name] = &endpointFigures{name: name, observe: cfg.ObserveRequest}
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        wire.ServiceName,
		Version:     cfg.Version,
		Description: "batfleet journal writer",
		Metadata:    map[string]string{"journal": cfg.Journal, "journal_id": store.JournalID().String()},
		// micro times a handler until it returns and counts the errors
		// answered before then: the refusals at arrival. Requests run on
		// after that (held pulls, appends waiting for their fsync), so each
		// endpoint's data carries its figures from arrival to answer.
		StatsHandler: func(e *micro.Endpoint) any { return w.figures[e.Name].snapshot() },
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: register service: %w", err)
	}
	w.svc = svc
	for _, ep := range []struct {
		name, subject string
		accept        func(micro.Request) func(micro.Request)
	}{
		{"pull", w.subj.Pull, w.acceptPull},
		{"append", w.subj.Append, w.acceptAppend},
		{"info", w.subj.Info, w.acceptInfo},
		{"count", wire.CountSubject(cfg.Journal), w.acceptCount},
	} {
		accept, fig := ep.accept, w.figures[ep.name]
		if err := svc.AddEndpoint(ep.name, micro.HandlerFunc(func(r micro.Request) {
			w.serve(measuredRequest{Request: r, fig: fig, start: time.Now()}, accept)
		}),
			micro.WithEndpointSubject(ep.subject)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("fleet: add endpoint %s: %w", ep.name, err)
		}
	}
	// Make sure the server has the endpoints' subscriptions before
	// returning, so that requests sent once NewWriter returns reach it.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		w.log.Warn("could not confirm the service subscriptions", "error", err)
	}
	// Announce the incarnation: clients whose pulls are held (and so take
	// no epoch messages) learn of a restart from it. publishEpochs
	// announces again after each reconnection.
	if err := w.announce(); err != nil {
		w.log.Warn("could not announce the writer's start", "error", err)
	}
	go w.publishEpochs(nc.StatusChanged(nats.CONNECTED))
	w.log.Info("writer serving", "subjects", "batfleet."+cfg.Journal+".*",
		"journal-id", store.JournalID().String(), "incarnation", store.Incarnation().String(), "max-payload", w.maxPayload)
	return w, nil
}

// Close stops taking requests (new ones are answered 503), waits for the
// ones in flight to be answered (or ctx to end), then stops the service
// and the epoch publisher. It is idempotent. When ctx ends first, Close
// reports it and returns while those requests may still run: each ends
// within AppendTimeout, and one that finds the store closed under it
// answers 503. Give ctx at least AppendTimeout to close without that.
func (w *Writer) Close(ctx context.Context) error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closing = true
		w.mu.Unlock()
		for _, h := range w.holds.close() {
			w.fail(h.req, 503, "writer closing")
		}
		drained := make(chan struct{})
		go func() { w.inflight.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-ctx.Done():
			w.closeErr = fmt.Errorf("fleet: writer close: requests still in flight: %w", ctx.Err())
		}
		if err := w.svc.Stop(); err != nil && w.closeErr == nil {
			w.closeErr = err
		}
		close(w.quit)
		<-w.pubDone
		w.log.Info("writer stopped")
	})
	return w.closeErr
}

// Stats returns a snapshot of the writer's counters.
func (w *Writer) Stats() WriterStats {
	st := WriterStats{
		Pulls: w.stats.pulls.Load(), PullEntries: w.stats.pullEntries.Load(), PullBytes: w.stats.pullBytes.Load(),
		Appends: w.stats.appends.Load(), AppendEvents: w.stats.appendEvents.Load(), AppendBytes: w.stats.appendBytes.Load(),
		Infos: w.stats.infos.Load(), Counts: w.stats.counts.Load(), Epochs: w.stats.epochs.Load(), Errors: map[string]uint64{},
		Held: w.holds.count(), PullsHeld: w.stats.held.Load(), HeldExpired: w.stats.heldExpired.Load(),
	}
	w.stats.errMu.Lock()
	for k, v := range w.stats.errs {
		st.Errors[k] = v
	}
	w.stats.errMu.Unlock()
	return st
}

// serve checks a request at once with accept, which answers a bad one
// itself (through micro, which counts the error) and returns nil, or
// returns the work to dispatch.
func (w *Writer) serve(r measuredRequest, accept func(micro.Request) func(micro.Request)) {
	if handle := accept(r); handle != nil {
		w.dispatch(r, handle)
	}
}

// dispatch hands a request to a goroutine of the writer's, or answers 503
// when closing or over MaxInFlight.
func (w *Writer) dispatch(r micro.Request, handle func(micro.Request)) {
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		w.fail(r, 503, "writer closing")
		return
	}
	select {
	case w.sem <- struct{}{}:
	default:
		w.mu.Unlock()
		w.fail(r, 503, fmt.Sprintf("writer busy: %d requests in flight", w.cfg.MaxInFlight))
		return
	}
	w.inflight.Add(1)
	w.mu.Unlock()
	dr := detachedRequest{Request: r, nc: w.nc}
	if m, ok := r.(measuredRequest); ok {
		dr = detachedRequest{Request: m.Request, nc: w.nc, fig: m.fig, start: m.start}
	}
	go func() {
		defer w.inflight.Done()
		defer func() { <-w.sem }()
		defer func() {
			if p := recover(); p != nil {
				w.log.Error("request handler panicked", "subject", r.Subject(), "panic", p)
				w.fail(dr, 500, "internal error")
			}
		}()
		handle(dr)
	}()
}

// detachedRequest answers a request after its micro handler has returned.
// micro's own Respond and Error record the outcome on the request, which
// the micro dispatcher reads as soon as the handler returns, so answering
// through them from another goroutine is a data race; this publishes the
// reply (with the same micro error headers) on the writer's connection.
type detachedRequest struct {
	micro.Request
	nc    *nats.Conn
	fig   *endpointFigures
	start time.Time
	held  bool // a pull answered after being held
}

func (d detachedRequest) reply(m *nats.Msg, opts []micro.RespondOpt) error {
	for _, opt := range opts {
		opt(m)
	}
	err := d.nc.PublishMsg(m)
	d.fig.record(time.Since(d.start), m.Header.Get(micro.ErrorHeader), d.held)
	return err
}

func (d detachedRequest) Respond(data []byte, opts ...micro.RespondOpt) error {
	return d.reply(&nats.Msg{Subject: d.Reply(), Data: data}, opts)
}

func (d detachedRequest) RespondJSON(v any, opts ...micro.RespondOpt) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return d.Respond(data, opts...)
}

func (d detachedRequest) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	return d.reply(&nats.Msg{Subject: d.Reply(), Data: data, Header: nats.Header{
		micro.ErrorHeader: []string{description}, micro.ErrorCodeHeader: []string{code},
	}}, opts)
}

// measuredRequest is a request answered in its micro handler (refused at
// arrival): micro counts the error, and its endpoint's figures the answer.
type measuredRequest struct {
	micro.Request
	fig   *endpointFigures
	start time.Time
}

func (m measuredRequest) Respond(data []byte, opts ...micro.RespondOpt) error {
	err := m.Request.Respond(data, opts...)
	m.fig.record(time.Since(m.start), "", false)
	return err
}

func (m measuredRequest) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	err := m.Request.Error(code, description, data, opts...)
	m.fig.record(time.Since(m.start), description, false)
	return err
}

// endpointFigures are an endpoint's statistics from each request's
// arrival to its answer (micro's own stop when its handler returns).
type endpointFigures struct {
	name    string
	observe func(RequestObservation) // WriterConfig.ObserveRequest
	mu      sync.Mutex
	d       endpointData
}

// endpointData is an endpoint's "data" in the service's STATS reply.
type endpointData struct {
	NumRequests           uint64        `json:"num_requests"`
	NumErrors             uint64        `json:"num_errors"`
	LastError             string        `json:"last_error,omitempty"`
	ProcessingTime        time.Duration `json:"processing_time"`
	AverageProcessingTime time.Duration `json:"average_processing_time"`
}

func (f *endpointFigures) record(took time.Duration, failure string, held bool) {
	if f == nil {
		return
	}
	if f.observe != nil {
		f.observe(RequestObservation{Endpoint: f.name, Took: took, Held: held, Failed: failure != ""})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.d.NumRequests++
	f.d.ProcessingTime += took
	f.d.AverageProcessingTime = f.d.ProcessingTime / time.Duration(f.d.NumRequests)
	if failure != "" {
		f.d.NumErrors++
		f.d.LastError = failure
	}
}

func (f *endpointFigures) snapshot() endpointData {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.d
}

func (w *Writer) fail(r micro.Request, code int, description string) {
	description = wire.ClipDescription(description)
	c := strconv.Itoa(code)
	w.stats.errMu.Lock()
	w.stats.errs[c]++
	w.stats.errMu.Unlock()
	if code >= 500 {
		w.log.Warn("request failed", "subject", r.Subject(), "code", code, "error", description)
	} else {
		w.log.Debug("request refused", "subject", r.Subject(), "code", code, "error", description)
	}
	if err := r.Error(c, description, nil); err != nil {
		w.log.Warn("could not send error reply", "error", err)
	}
}

func (w *Writer) failRequest(r micro.Request, err error) {
	var re *wire.RequestError
	if errors.As(err, &re) {
		w.fail(r, re.Code, re.Description())
		return
	}
	w.fail(r, 400, err.Error())
}

// failEngine answers an engine error with its code.
func (w *Writer) failEngine(r micro.Request, err error) {
	switch {
	case errors.Is(err, journal.ErrClosed), errors.Is(err, journal.ErrFenceActive), errors.Is(err, context.DeadlineExceeded):
		w.fail(r, 503, err.Error())
	case errors.Is(err, journal.ErrEntryTooLarge), errors.Is(err, journal.ErrBatchTooLarge), errors.Is(err, journal.ErrEntityClockOverflow):
		w.fail(r, 413, err.Error())
	case errors.Is(err, journal.ErrEmptyBatch), errors.Is(err, engine.ErrReservedKind),
		errors.Is(err, journal.ErrIdempotencyPartialBatch), errors.Is(err, journal.ErrIdempotencyConflict),
		errors.Is(err, engine.ErrInvalidRegion), isInvalidCoordinate(err):
		w.fail(r, 400, err.Error())
	default:
		w.fail(r, 500, err.Error())
	}
}

func isInvalidCoordinate(err error) bool {
	var ic *engine.InvalidCoordinateError
	return errors.As(err, &ic)
}

// acceptPull checks a pull request at arrival.
func (w *Writer) acceptPull(r micro.Request) func(micro.Request) {
	req, err := wire.DecodePullRequest(r.Data())
	if err != nil {
		w.failRequest(r, err)
		return nil
	}
	if time.Duration(req.WaitMs)*time.Millisecond > w.cfg.MaxWait {
		w.failRequest(r, wire.BadField("wait_ms", "must be at most %d (this writer's maximum hold)", w.cfg.MaxWait.Milliseconds()))
		return nil
	}
	return func(r micro.Request) { w.runPull(r, req) }
}

// handlePull is acceptPull and its work in one.
func (w *Writer) handlePull(r micro.Request) {
	if run := w.acceptPull(r); run != nil {
		run(r)
	}
}

func (w *Writer) runPull(r micro.Request, req wire.PullRequest) {
	wait := time.Duration(req.WaitMs) * time.Millisecond
	res, err := w.poll(req)
	if err != nil {
		w.failEngine(r, err)
		return
	}
	stale := req.Incarnation != (engine.ID128{}) && req.Incarnation != w.store.Incarnation()
	if len(res.Entries) == 0 && wait > 0 && !stale {
		hr := r
		if dr, ok := r.(detachedRequest); ok {
			dr.held = true
			hr = dr
		}
		h := &heldPull{req: hr, pull: req, expires: time.Now().Add(wait)}
		if w.holds.add(h, res.Visible, func(from, to uint64) bool { return w.matchesBetween(h, from, to) }) {
			w.stats.held.Add(1)
			return
		}
		// Not held: the index is full or closing, or an entry made
		// visible since the poll matches. Answer with what is there now.
		if res, err = w.poll(req); err != nil {
			w.failEngine(r, err)
			return
		}
	}
	w.reply(r, res)
}

// poll runs the pull's query against the journal, sized to the reply.
func (w *Writer) poll(req wire.PullRequest) (engine.PollResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.AppendTimeout)
	defer cancel()
	return w.store.PollWithin(ctx, req.Region, req.Position, req.Started, req.Max,
		wire.PullBudget(w.maxPayload, req.MaxBytes), wire.EntryOverhead)
}

// answer answers a held pull with a fresh poll.
func (w *Writer) answer(h *heldPull) {
	res, err := w.poll(h.pull)
	if err != nil {
		w.failEngine(h.req, err)
		return
	}
	w.reply(h.req, res)
}

// matchesBetween reports whether an entry visible in [from, to) matches h.
func (w *Writer) matchesBetween(h *heldPull, from, to uint64) bool {
	heads, _ := w.store.Heads(nil, from, to)
	for i := range heads {
		if h.matches(&heads[i]) {
			return true
		}
	}
	return false
}

// reply sends a pull's reply.
func (w *Writer) reply(r micro.Request, res engine.PollResult) {
	out := &wire.PullReply{
		JournalID: w.store.JournalID(), Incarnation: res.Snapshot.Incarnation,
		Epoch: res.Snapshot.Epoch, Visible: res.Visible, Entries: res.Entries, Cancelled: res.Cancelled,
	}
	reply, err := wire.EncodePullReplyWithin(out, w.maxPayload)
	if err != nil {
		w.fail(r, 500, err.Error())
		return
	}
	if err := r.Respond(reply); err != nil {
		w.log.Warn("could not send pull reply", "error", err)
		return
	}
	w.stats.pulls.Add(1)
	w.stats.pullEntries.Add(uint64(len(out.Entries)))
	w.stats.pullBytes.Add(uint64(len(reply)))
}

// acceptAppend checks an append request at arrival.
func (w *Writer) acceptAppend(r micro.Request) func(micro.Request) {
	if len(r.Data()) > w.maxPayload {
		w.fail(r, 413, "request over the max payload")
		return nil
	}
	events, err := wire.DecodeAppendRequest(r.Data(), journal.DefaultMaxBatchEvents)
	if err != nil {
		w.failRequest(r, err)
		return nil
	}
	return func(r micro.Request) { w.runAppend(r, events) }
}

func (w *Writer) runAppend(r micro.Request, events []engine.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.AppendTimeout)
	defer cancel()
	receipts, err := w.store.AppendBatch(ctx, events)
	if err != nil {
		w.failEngine(r, err)
		return
	}
	if err := r.Respond(wire.EncodeAppendReply(receipts)); err != nil {
		w.log.Warn("could not send append reply", "error", err)
		return
	}
	w.stats.appends.Add(1)
	w.stats.appendEvents.Add(uint64(len(events)))
	w.stats.appendBytes.Add(uint64(len(r.Data())))
}

// acceptInfo checks an info request at arrival.
func (w *Writer) acceptInfo(r micro.Request) func(micro.Request) {
	if err := wire.DecodeInfoRequest(r.Data()); err != nil {
		w.failRequest(r, err)
		return nil
	}
	return w.runInfo
}

func (w *Writer) runInfo(r micro.Request) {
	st := w.store.Stats()
	snap := w.store.Latest()
	if err := r.Respond(wire.EncodeInfo(wire.Info{
		Journal: w.cfg.Journal, JournalID: w.store.JournalID(), Incarnation: snap.Incarnation,
		Epoch: st.Epoch, Visible: st.Visible, Events: uint64(st.Entries),
		CancelledRanges: st.Cancelled, StartedMs: w.store.StartedMs(),
		MaxWaitMs: uint32(min(w.cfg.MaxWait.Milliseconds(), math.MaxUint32)),
	})); err != nil {
		w.log.Warn("could not send info reply", "error", err)
		return
	}
	w.stats.infos.Add(1)
}

// acceptCount checks a count request at arrival.
func (w *Writer) acceptCount(r micro.Request) func(micro.Request) {
	req, err := wire.DecodeCountRequest(r.Data())
	if err != nil {
		w.failRequest(r, err)
		return nil
	}
	return func(r micro.Request) { w.runCount(r, req) }
}

// runCount answers how many entries of a region follow a position,
// counted from the index (no payload is read or sent): `worker status`
// and the workers' lag metric, for any lag.
func (w *Writer) runCount(r micro.Request, req wire.CountRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.AppendTimeout)
	defer cancel()
	res, err := w.store.Count(ctx, req.Region, req.Position, req.Started)
	if err != nil {
		w.failEngine(r, err)
		return
	}
	if err := r.Respond(wire.EncodeCountReply(wire.CountReply{
		JournalID: w.store.JournalID(), Incarnation: res.Snapshot.Incarnation, Epoch: res.Snapshot.Epoch,
		Visible: res.Visible, Count: res.Count, OldestMs: res.OldestWallMs,
	})); err != nil {
		w.log.Warn("could not send count reply", "error", err)
		return
	}
	w.stats.counts.Add(1)
}

// announce publishes the writer's incarnation and bounds on the started
// subject.
func (w *Writer) announce() error {
	return w.nc.Publish(w.subj.Started, wire.EncodeEpoch(wire.EpochMessage{
		JournalID: w.store.JournalID(), Incarnation: w.store.Incarnation(), Epoch: w.store.Epoch(), Visible: w.store.Visible(),
	}))
}

// publishEpochs follows the journal's visibility: after each advance it
// answers the held pulls that became satisfiable, then sends one epoch
// message (advances that happen meanwhile coalesce into the next one); it
// also answers held pulls empty when their wait expires.
//
// After each reconnection of its connection (reconnected) it announces the
// writer again on the started subject: requests and replies that were
// passing through a NATS server that went away are lost without a word,
// and the announcement tells clients to send again what they still wait
// for, instead of waiting out their timeouts.
func (w *Writer) publishEpochs(reconnected chan nats.Status) {
	defer close(w.pubDone)
	defer w.nc.RemoveStatusListener(reconnected)
	var last uint64
	sent := false
	expiry := time.NewTimer(time.Hour)
	expiry.Stop()
	defer expiry.Stop()
	var buf []journal.Head
	heads := func(from uint64) ([]journal.Head, uint64) {
		var upTo uint64
		buf, upTo = w.store.Heads(buf[:0], from, ^uint64(0))
		return buf, upTo
	}
	for {
		epoch, changed := w.store.Changed()
		if !sent || epoch != last {
			for _, h := range w.holds.advance(w.store.Visible(), heads) {
				w.answer(h)
			}
			msg := wire.EncodeEpoch(wire.EpochMessage{
				JournalID: w.store.JournalID(), Incarnation: w.store.Incarnation(),
				Epoch: epoch, Visible: w.store.Visible(),
			})
			if err := w.nc.Publish(w.subj.Epoch, msg); err != nil {
				w.log.Debug("epoch publish failed (workers fall back to their idle timeout)", "error", err)
			} else {
				w.stats.epochs.Add(1)
			}
			last, sent = epoch, true
		}
		due, next := w.holds.expired(time.Now())
		for _, h := range due {
			w.stats.heldExpired.Add(1)
			w.answer(h)
		}
		if !next.IsZero() {
			expiry.Reset(time.Until(next))
		}
		select {
		case <-changed:
		case <-expiry.C:
		case <-w.holds.kick:
		case _, ok := <-reconnected:
			if !ok {
				reconnected = nil // removed: the connection closed
				break
			}
			if err := w.announce(); err != nil {
				w.log.Warn("could not announce the writer after reconnecting", "error", err)
			} else {
				w.log.Info("reconnected to NATS; announced the writer again", "server", w.nc.ConnectedUrlRedacted())
			}
		case <-w.quit:
			return
		}
		expiry.Stop()
	}
}
