package fleet

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet/internal/wire"
)

// ClientConfig configures a Client. Zero values mean the defaults.
type ClientConfig struct {
	// Journal is the journal to talk to (required).
	Journal string
	// Timeout bounds each request whose context has no deadline (default 5 s).
	Timeout time.Duration
	// AppendAttempts is how often Append sends a request whose outcome is
	// unknown (timeout, no writer, connection lost) before giving up; the
	// idempotency keys make resending safe (default 5).
	AppendAttempts int
	// Logger receives the client's logs; nil means none.
	Logger hclog.Logger
}

func (c ClientConfig) withDefaults() ClientConfig {
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.AppendAttempts == 0 {
		c.AppendAttempts = 5
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// Client talks to a journal's writer over NATS: appends, info, and a
// delivery.Source for cursors and workers. A cursor's pulls are held by
// the writer until something matches (its Stream's PollWait), so an idle
// consumer needs no epoch messages; a client subscribes to them only when
// it first pulls without a hold or parks — before that pull, or with the
// first park returning at once — so parking keeps the lost-wakeup guard
// (a newer epoch, or any new incarnation, wakes it; the park timeout is
// only the safety net). Every client hears the message a writer publishes
// when it starts, and abandons holds of the writer it replaces.
//
// A request, or its reply, that passes through a NATS server as it dies
// is lost without a word. The writer announces itself again after each
// reconnection, and a client sends again the requests it still waits for
// when it hears that or its own connection reconnects (at most 3 times a
// request): an append is safe to send again (idempotency keys), a pull
// only reads. So losing a NATS node costs a reconnection, not a request
// timeout.
//
// A Client is safe for concurrent use.
type Client struct {
	nc         *nats.Conn
	cfg        ClientConfig
	log        hclog.Logger
	subj       wire.Subjects
	countSubj  string
	startedSub *nats.Subscription
	subMu      sync.Mutex
	sub        *nats.Subscription // epoch messages; nil until epochs subscribes

	mu      sync.Mutex
	latest  engine.Snapshot
	known   bool                      // latest holds a real snapshot
	retired map[engine.ID128]struct{} // incarnations superseded by a newer one
	wake    chan struct{}             // closed and replaced when latest moves
	// maxHold is the longest hold the writer grants, from its info reply
	// (0 until one was seen).
	maxHold atomic.Int64
	// retire is closed when a newer incarnation than latest's is seen:
	// pulls held by the writer that is gone are abandoned then.
	retire chan struct{}
	// resend is cancelled and replaced when a request in flight may have
	// been lost without a word: the writer announced itself (it restarted,
	// or reconnected to NATS) or this connection reconnected. Requests
	// waiting then are sent again (requestWithin). A context, so that a
	// request's context.AfterFunc on it needs no goroutine.
	resend       context.Context
	resendCancel context.CancelFunc
	dropped      bool         // test hook: ignore epoch messages
	journal      engine.ID128 // the journal id replies carry; epochs of others are ignored
	hasJID       bool

	// Background pulls (pull-ahead of the streams) run under bgCtx and
	// are counted in bg; Close cancels and waits for them.
	bgMu     sync.Mutex
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bgClosed bool
	bg       sync.WaitGroup

	// reconnected carries this connection's reconnections to
	// watchReconnects, which ends when Close removes it.
	reconnected chan nats.Status
	watchDone   chan struct{}
}

// maxResends bounds how often one request is sent again after
// reconnections (see resend) before it waits out its timeout.
const maxResends = 3

// errMayBeLost ends a request whose answer a reconnection may have lost.
var errMayBeLost = errors.New("fleet: a reconnection may have lost the request")

var _ delivery.Source = (*Client)(nil)

// NewClient subscribes to the journal's epoch subject and returns the
// client. It does not contact the writer.
func NewClient(nc *nats.Conn, cfg ClientConfig) (*Client, error) {
	if err := engine.ValidateJournalName(cfg.Journal); err != nil {
		return nil, fmt.Errorf("fleet: ClientConfig.Journal: %w", err)
	}
	cfg = cfg.withDefaults()
	c := &Client{
		nc: nc, cfg: cfg, subj: wire.SubjectsFor(cfg.Journal), countSubj: wire.CountSubject(cfg.Journal),
		log:     cfg.Logger.Named("client").With("journal", cfg.Journal),
		retired: make(map[engine.ID128]struct{}),
		wake:    make(chan struct{}),
		retire:  make(chan struct{}),
	}
	c.resend, c.resendCancel = context.WithCancel(context.Background())
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	// The started subject (a message per writer start, and after each of
	// its reconnections) tells a client whose pulls are held of a restart. Epoch messages (one per group
	// commit) are subscribed to only when a plain pull or a park needs
	// them (epochs): a fleet of idle workers on held pulls receives none.
	sub, err := nc.Subscribe(c.subj.Started, c.onStarted)
	if err != nil {
		return nil, fmt.Errorf("fleet: subscribe %s: %w", c.subj.Started, err)
	}
	c.startedSub = sub
	c.reconnected, c.watchDone = nc.StatusChanged(nats.CONNECTED), make(chan struct{})
	go c.watchReconnects()
	return c, nil
}

// watchReconnects sends again the requests in flight after each
// reconnection of the client's connection, until Close.
func (c *Client) watchReconnects() {
	defer close(c.watchDone)
	for range c.reconnected {
		c.log.Debug("reconnected to NATS; sending the requests in flight again")
		c.mayHaveLost()
	}
}

// mayHaveLost tells the requests in flight to send again.
func (c *Client) mayHaveLost() {
	c.mu.Lock()
	cancel := c.resendCancel
	c.resend, c.resendCancel = context.WithCancel(context.Background())
	c.mu.Unlock()
	cancel()
}

// resent returns the context cancelled at the next reconnection.
func (c *Client) resent() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resend
}

// epochs subscribes to epoch messages unless the client already is, and
// makes sure the server has the subscription: a pull sent afterwards sees
// every epoch published after its reply (the lost-wakeup guard). It
// reports whether it subscribed now.
func (c *Client) epochs() (subscribed bool, err error) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if c.sub != nil {
		return false, nil
	}
	sub, err := c.nc.Subscribe(c.subj.Epoch, c.onEpoch)
	if err != nil {
		return false, fmt.Errorf("fleet: subscribe %s: %w", c.subj.Epoch, err)
	}
	if err := c.nc.FlushTimeout(c.cfg.Timeout); err != nil {
		_ = sub.Unsubscribe()
		return false, fmt.Errorf("%w: subscribe %s: %w", delivery.ErrTransient, c.subj.Epoch, err)
	}
	c.sub = sub
	return true, nil
}

// Close unsubscribes from epoch messages. Parked callers return at their
// timeout or context.
func (c *Client) Close() error {
	c.bgMu.Lock()
	c.bgClosed = true
	c.bgMu.Unlock()
	c.bgCancel()
	c.bg.Wait()
	c.nc.RemoveStatusListener(c.reconnected)
	<-c.watchDone
	err := c.startedSub.Unsubscribe()
	c.subMu.Lock()
	if c.sub != nil {
		err = errors.Join(err, c.sub.Unsubscribe())
	}
	c.subMu.Unlock()
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		return nil
	}
	return err
}

func (c *Client) onEpoch(m *nats.Msg) { c.epochMessage(m) }

// onStarted takes the writer's announcement: at its start, and again
// whenever it reconnected to NATS. Either way requests in flight to it
// may have been lost (to a process that died, or in a NATS server that
// went away), so they are sent again.
func (c *Client) onStarted(m *nats.Msg) {
	if c.epochMessage(m) {
		c.mayHaveLost()
	}
}

// epochMessage observes an epoch or started message and reports whether
// it was this journal's.
func (c *Client) epochMessage(m *nats.Msg) bool {
	em, err := wire.DecodeEpoch(m.Data)
	if err != nil {
		c.log.Debug("ignoring malformed epoch message", "error", err)
		return false
	}
	c.mu.Lock()
	ignore := c.dropped || (c.hasJID && em.JournalID != c.journal)
	c.mu.Unlock()
	if ignore {
		return false // dropped for a test, or another journal's stray message
	}
	c.observe(engine.Snapshot{Incarnation: em.Incarnation, Epoch: em.Epoch})
	return true
}

// sawJournal records the journal id of a reply (replies are
// authoritative; epoch messages of other journals are then ignored).
func (c *Client) sawJournal(id engine.ID128) {
	c.mu.Lock()
	c.journal, c.hasJID = id, true
	c.mu.Unlock()
}

// observe folds a snapshot seen in an epoch message or a reply into
// latest, waking parkers when it is newer. Snapshots of incarnations that
// were superseded are ignored, so a late message cannot move latest back.
func (c *Client) observe(s engine.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, old := c.retired[s.Incarnation]; old {
		return
	}
	if c.known && !s.NewerThan(c.latest) {
		return
	}
	if c.known && s.Incarnation != c.latest.Incarnation {
		c.retired[c.latest.Incarnation] = struct{}{}
		close(c.retire)
		c.retire = make(chan struct{})
	}
	c.latest, c.known = s, true
	close(c.wake)
	c.wake = make(chan struct{})
}

// retirement returns a channel closed when a writer incarnation newer
// than the latest one seen appears (the writer restarted).
func (c *Client) retirement() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.retire
}

// Latest returns the newest snapshot seen in a reply or epoch message.
func (c *Client) Latest() engine.Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.latest
}

// Park waits until a snapshot newer than snap arrives (an epoch message or
// a reply of another caller), timeout passes or ctx is done. It returns at
// once when one already arrived.
func (c *Client) Park(ctx context.Context, snap engine.Snapshot, timeout time.Duration) bool {
	if now, err := c.epochs(); now || err != nil {
		// Not subscribed before: an epoch may have been missed since snap
		// was read. Return as if woken, so the caller polls again (now
		// subscribed) before it parks.
		return true
	}
	c.mu.Lock()
	if c.known && c.latest.NewerThan(snap) {
		c.mu.Unlock()
		return true
	}
	ch := c.wake
	c.mu.Unlock()
	if timeout <= 0 {
		return false
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// request sends one request and maps failures: no writer, timeouts and
// connection trouble wrap delivery.ErrTransient; error replies become
// *RemoteError.
func (c *Client) request(ctx context.Context, subject string, body []byte) ([]byte, error) {
	return c.requestWithin(ctx, subject, body, c.cfg.Timeout)
}

// requestWithin is request with its own bound (a held pull waits longer
// than Timeout).
func (c *Client) requestWithin(ctx context.Context, subject string, body []byte, timeout time.Duration) ([]byte, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	msg, err := c.requestOnce(ctx, subject, body, timeout)
	for resends := 0; errors.Is(err, errMayBeLost) && resends < maxResends && ctx.Err() == nil; resends++ {
		c.log.Debug("sending again a request a reconnection may have lost", "subject", subject)
		msg, err = c.requestOnce(ctx, subject, body, timeout)
	}
	if err != nil {
		var pe *PermissionError
		if errors.As(err, &pe) {
			return nil, pe
		}
		if perr := refusedRequest(c.nc, subject); perr != nil {
			return nil, perr // NATS refused it: no answer can come (permission.go)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err() // the caller gave up: not the writer's fault
		}
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return nil, fmt.Errorf("%w: no writer answers %s: %w", ErrUnavailable, subject, delivery.ErrTransient)
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, errMayBeLost),
			errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
			errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionReconnecting):
			return nil, fmt.Errorf("%w: %s: %w", delivery.ErrTransient, subject, err)
		case errors.Is(err, nats.ErrMaxPayload):
			return nil, fmt.Errorf("%w: %s: %w", ErrTooLarge, subject, err)
		}
		return nil, fmt.Errorf("fleet: %s: %w", subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		return nil, remoteError(code, msg.Header.Get(micro.ErrorHeader))
	}
	return msg.Data, nil
}

// requestOnce sends the request once and waits at most timeout, or less
// if ctx ends sooner, so retries (Append) get their chances within the
// caller's deadline. Two things end the wait early, each then its
// error: a refusal of its publish or reply inbox (a *PermissionError,
// where the connection has RefusalHandler: permission.go), and a
// reconnection that may have lost it (errMayBeLost).
func (c *Client) requestOnce(ctx context.Context, subject string, body []byte, timeout time.Duration) (*nats.Msg, error) {
	ended, end := context.WithCancelCause(ctx)
	defer end(nil)
	defer awaitRefusal(c.nc, &refusalWait{subject: subject, end: end})()
	defer context.AfterFunc(c.resent(), func() { end(errMayBeLost) })()
	rctx, cancel := context.WithTimeout(ended, timeout)
	defer cancel()
	msg, err := c.nc.RequestWithContext(rctx, subject, body)
	if err != nil && ctx.Err() == nil {
		if cause := context.Cause(ended); cause != nil && cause != context.Canceled {
			return nil, cause // refused, or maybe lost
		}
	}
	return msg, err
}

// Poll is the pull primitive over NATS. The reply may hold
// fewer than max entries to fit the max payload, but at least one if any
// match. Poll never pulls ahead; a Cursor polls through a Stream, which
// does.
func (c *Client) Poll(ctx context.Context, region engine.Region, position uint64, started bool, max int) (engine.PollResult, error) {
	if max <= 0 {
		return engine.PollResult{Snapshot: c.Latest()}, nil
	}
	if _, err := c.epochs(); err != nil {
		return engine.PollResult{}, err
	}
	return c.pull(ctx, region, position, started, min(max, wire.MaxPullEntries))
}

// background returns a context for one background pull, registered with
// the client's wait group, or ok=false once the client is closing.
func (c *Client) background() (ctx context.Context, cancel context.CancelFunc, ok bool) {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.bgClosed {
		return nil, nil, false
	}
	c.bg.Add(1)
	ctx, cancel = context.WithCancel(c.bgCtx)
	return ctx, cancel, true
}

// pull sends one pull request.
func (c *Client) pull(ctx context.Context, region engine.Region, position uint64, started bool, max int) (engine.PollResult, error) {
	return c.pullWait(ctx, region, position, started, max, 0, engine.ID128{})
}

// pullWait sends one pull request that the writer may hold for up to wait
// (a held pull; 0 answers at once), only while it is still incarnation
// (zero: whatever its incarnation).
func (c *Client) pullWait(ctx context.Context, region engine.Region, position uint64, started bool, max int, wait time.Duration, incarnation engine.ID128) (engine.PollResult, error) {
	data, err := c.requestWithin(ctx, c.subj.Pull, wire.EncodePullRequest(wire.PullRequest{
		Region: region, Position: position, Started: started, Max: max,
		WaitMs: uint32(wait.Milliseconds()), Incarnation: incarnation,
	}), wait+c.cfg.Timeout)
	if err != nil {
		return engine.PollResult{}, err
	}
	reply, err := wire.DecodePullReply(data)
	if err != nil {
		return engine.PollResult{}, fmt.Errorf("%w: %w", ErrRemote, err)
	}
	snap := engine.Snapshot{Incarnation: reply.Incarnation, Epoch: reply.Epoch}
	c.sawJournal(reply.JournalID)
	c.observe(snap)
	return engine.PollResult{Entries: reply.Entries, Snapshot: snap, Visible: reply.Visible, Cancelled: reply.Cancelled}, nil
}

// Info asks the writer for its journal's state.
func (c *Client) Info(ctx context.Context) (engine.SourceInfo, error) {
	in, err := c.Describe(ctx)
	if err != nil {
		return engine.SourceInfo{}, err
	}
	return engine.SourceInfo{JournalID: in.JournalID, Incarnation: in.Incarnation, Visible: in.Visible}, nil
}

// Info is the writer's description of its journal (the info endpoint).
type Info struct {
	Journal         string
	JournalID       engine.ID128
	Incarnation     engine.ID128
	Epoch           uint64
	Visible         uint64         // the visible bound
	Events          uint64         // entries in the journal's index
	CancelledRanges []engine.Range // sequences that never become visible
	StartedMs       int64          // when this writer incarnation started (unix ms)
	MaxWait         time.Duration  // the longest hold the writer grants a pull (0: not said)
}

// Describe returns the writer's full info reply.
func (c *Client) Describe(ctx context.Context) (Info, error) {
	data, err := c.request(ctx, c.subj.Info, wire.EncodeInfoRequest())
	if err != nil {
		return Info{}, err
	}
	in, err := wire.DecodeInfo(data)
	if err != nil {
		return Info{}, fmt.Errorf("%w: %w", ErrRemote, err)
	}
	c.sawJournal(in.JournalID)
	c.observe(engine.Snapshot{Incarnation: in.Incarnation, Epoch: in.Epoch})
	maxWait := time.Duration(in.MaxWaitMs) * time.Millisecond
	if maxWait > 0 {
		c.maxHold.Store(int64(maxWait))
	}
	return Info{
		Journal: in.Journal, JournalID: in.JournalID, Incarnation: in.Incarnation, Epoch: in.Epoch,
		Visible: in.Visible, Events: in.Events, CancelledRanges: in.CancelledRanges, StartedMs: in.StartedMs,
		MaxWait: maxWait,
	}, nil
}

// Lag is a count answer: how many entries of a region follow a position.
type Lag struct {
	Events   uint64          // matching visible entries after the position
	OldestMs int64           // wall time (unix ms) of the first of them; 0 when Events is 0
	Visible  uint64          // the visible bound counted up to
	Snapshot engine.Snapshot // the epoch the count saw
}

// Count asks the writer how many entries of region follow position (from
// the beginning when started is false): what pulls from there would
// deliver now. The writer counts them from its index without sending any,
// so the answer costs one small request whatever the lag.
func (c *Client) Count(ctx context.Context, region engine.Region, position uint64, started bool) (Lag, error) {
	data, err := c.request(ctx, c.countSubj, wire.EncodeCountRequest(wire.CountRequest{Region: region, Position: position, Started: started}))
	if err != nil {
		return Lag{}, err
	}
	reply, err := wire.DecodeCountReply(data)
	if err != nil {
		return Lag{}, fmt.Errorf("%w: %w", ErrRemote, err)
	}
	snap := engine.Snapshot{Incarnation: reply.Incarnation, Epoch: reply.Epoch}
	c.sawJournal(reply.JournalID)
	c.observe(snap)
	return Lag{Events: reply.Count, OldestMs: reply.OldestMs, Visible: reply.Visible, Snapshot: snap}, nil
}

// Append appends events atomically and returns their receipts once they
// are durable and visible. Events without idempotency keys get random
// UUIDv7 ones (which become their ids), so resending a request whose outcome is unknown (a timeout, a
// lost connection, no writer for a moment) never duplicates: Append
// resends up to AppendAttempts times while ctx allows. A batch must be
// all keyed or all unkeyed.
func (c *Client) Append(ctx context.Context, events []engine.Event) ([]engine.Receipt, error) {
	if len(events) == 0 {
		return nil, journal.ErrEmptyBatch
	}
	unkeyed := events[0].Key.IsZero()
	for i := range events {
		if events[i].Key.IsZero() != unkeyed {
			return nil, journal.ErrIdempotencyPartialBatch
		}
	}
	if unkeyed {
		keyed := make([]engine.Event, len(events))
		copy(keyed, events)
		keys := make([]byte, 16*len(keyed))
		_, _ = rand.Read(keys) // crypto/rand.Read never fails on Linux
		ms := time.Now().UnixMilli()
		for i := range keyed {
			// UUIDv7, so the ids the events get (a keyed event's id is its
			// key) are UUIDv7 like those of local appends.
			keyed[i].Key = engine.IdempotencyKey(engine.UUIDv7(ms, [16]byte(keys[16*i:16*i+16])))
		}
		events = keyed
	}
	body := wire.EncodeAppendRequest(events)
	backoff := 50 * time.Millisecond
	var lastErr error
	for attempt := 1; attempt <= c.cfg.AppendAttempts; attempt++ {
		data, err := c.request(ctx, c.subj.Append, body)
		if err == nil {
			receipts, err := wire.DecodeAppendReply(data)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrRemote, err)
			}
			if len(receipts) != len(events) {
				return nil, fmt.Errorf("%w: %d receipts for %d events", ErrRemote, len(receipts), len(events))
			}
			return receipts, nil
		}
		if !errors.Is(err, delivery.ErrTransient) || ctx.Err() != nil {
			return nil, err
		}
		lastErr = err
		c.log.Debug("append outcome unknown; resending with the same keys", "attempt", attempt, "error", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		backoff = min(2*backoff, time.Second)
	}
	return nil, lastErr
}
