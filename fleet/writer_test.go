package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet/internal/wire"
	"github.com/batfleet/batfleet/fleet/internal/wire/wiretest"
	"github.com/batfleet/batfleet/internal/natstest"
)

// ---------------------------------------------------------------------
// Fixtures: an embedded nats-server (core NATS only), a store in
// t.TempDir(), a writer on one connection and a client on another.
// ---------------------------------------------------------------------

const testJournal = "main"

type transport struct {
	name   string
	inproc bool
}

// transports: clients connect in-process, or over loopback TCP.
var transports = []transport{{"inproc", true}, {"tcp", false}}

func startServer(t testing.TB, configure func(*server.Options)) *server.Server {
	t.Helper()
	o := natstest.Options(t.TempDir())
	o.JetStream = false // fleet needs core NATS only
	if configure != nil {
		configure(o)
	}
	return natstest.StartServer(t, o)
}

func connect(t testing.TB, ns *server.Server, inproc bool) *nats.Conn {
	t.Helper()
	var opts []nats.Option
	if inproc {
		opts = append(opts, nats.InProcessServer(ns))
	}
	nc, _ := natstest.Connect(t, ns, opts...)
	return nc
}

func openStore(t testing.TB, dir string, cfg journal.Config) *journal.Store {
	t.Helper()
	s, err := journal.Open(dir, cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func startWriter(t testing.TB, nc *nats.Conn, store *journal.Store, cfg WriterConfig) *Writer {
	t.Helper()
	if cfg.Journal == "" {
		cfg.Journal = testJournal
	}
	w, err := NewWriter(nc, store, cfg)
	if err != nil {
		t.Fatalf("new writer: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Close(ctx) // tests that care check Close themselves
	})
	return w
}

func newClient(t testing.TB, nc *nats.Conn, cfg ClientConfig) *Client {
	t.Helper()
	if cfg.Journal == "" {
		cfg.Journal = testJournal
	}
	c, err := NewClient(nc, cfg)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

type envOpts struct {
	inproc bool
	server func(*server.Options)
	store  journal.Config
	writer WriterConfig
	client ClientConfig
}

// fleetEnv is one journal served over NATS.
type fleetEnv struct {
	ns    *server.Server
	dir   string
	store *journal.Store
	wnc   *nats.Conn // the writer's connection
	w     *Writer
	cnc   *nats.Conn // the client's connection
	c     *Client
	subj  wire.Subjects
}

func newEnv(t testing.TB, o envOpts) *fleetEnv {
	t.Helper()
	e := &fleetEnv{subj: wire.SubjectsFor(testJournal)}
	e.ns = startServer(t, o.server)
	e.dir = t.TempDir()
	e.wnc = connect(t, e.ns, o.inproc)
	e.store = openStore(t, e.dir, o.store)
	e.w = startWriter(t, e.wnc, e.store, o.writer)
	e.cnc = connect(t, e.ns, o.inproc)
	e.c = newClient(t, e.cnc, o.client)
	return e
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func event(t testing.TB, entity string, payload []byte) engine.Event {
	t.Helper()
	return engine.Event{Coordinate: engine.MustCoordinate(entity, "s"), Kind: 0x1001, Payload: payload}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// pullAll drains region from the store through the client, checking
// strictly ascending seqs.
func pullAll(t testing.TB, c *Client, region engine.Region, max int) []engine.Entry {
	t.Helper()
	ctx := testCtx(t)
	var out []engine.Entry
	pos, started := uint64(0), false
	for {
		res, err := c.Poll(ctx, region, pos, started, max)
		if err != nil {
			t.Fatalf("poll after (%d, %v): %v", pos, started, err)
		}
		if len(res.Entries) == 0 {
			return out
		}
		for _, e := range res.Entries {
			if started && e.Seq <= pos {
				t.Fatalf("seq %d after position %d", e.Seq, pos)
			}
			pos, started = e.Seq, true
		}
		out = append(out, res.Entries...)
	}
}

// fakeRequest is a micro.Request that records its answer, for driving
// Writer.dispatch directly.
type fakeRequest struct {
	subject string
	data    []byte
	reply   string

	mu       sync.Mutex
	code     string
	desc     string
	resp     []byte
	answered chan struct{}
	once     sync.Once
}

func newFakeRequest(subject string, data []byte) *fakeRequest {
	return &fakeRequest{subject: subject, data: data, answered: make(chan struct{})}
}

func (f *fakeRequest) answer(code, desc string, resp []byte) error {
	f.mu.Lock()
	f.code, f.desc, f.resp = code, desc, resp
	f.mu.Unlock()
	f.once.Do(func() { close(f.answered) })
	return nil
}

func (f *fakeRequest) Respond(b []byte, _ ...micro.RespondOpt) error { return f.answer("", "", b) }
func (f *fakeRequest) RespondJSON(v any, _ ...micro.RespondOpt) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return f.answer("", "", b)
}
func (f *fakeRequest) Error(code, desc string, data []byte, _ ...micro.RespondOpt) error {
	return f.answer(code, desc, data)
}
func (f *fakeRequest) Data() []byte           { return f.data }
func (f *fakeRequest) Headers() micro.Headers { return micro.Headers{} }
func (f *fakeRequest) Subject() string        { return f.subject }
func (f *fakeRequest) Reply() string          { return f.reply }

func (f *fakeRequest) result() (code, desc string, resp []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.code, f.desc, f.resp
}

var _ micro.Request = (*fakeRequest)(nil)

// holdSlot occupies one of w's in-flight slots with a request whose
// handler blocks until release is called, then answers it; it returns
// once the handler runs. The answer, sent after dispatch returned, goes
// out on the wire to the request's reply subject, where answers receives
// it.
func holdSlot(t testing.TB, w *Writer, nc *nats.Conn) (answers <-chan *nats.Msg, release func()) {
	t.Helper()
	ch := make(chan *nats.Msg, 1)
	req := newFakeRequest(w.subj.Pull, nil)
	req.reply = nats.NewInbox()
	sub, err := nc.ChanSubscribe(req.reply, ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	hold, running := make(chan struct{}), make(chan struct{})
	w.dispatch(req, func(r micro.Request) {
		close(running)
		<-hold
		if err := r.Respond([]byte("held request answered")); err != nil {
			t.Errorf("answering the held request: %v", err)
		}
	})
	select {
	case <-running:
	case <-req.answered:
		code, desc, _ := req.result()
		t.Fatalf("held request refused: %s %s", code, desc)
	case <-time.After(10 * time.Second):
		t.Fatal("held request never started")
	}
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	return ch, release
}

// heldAnswer waits for the held request's answer.
func heldAnswer(t testing.TB, answers <-chan *nats.Msg) {
	t.Helper()
	select {
	case m := <-answers:
		if string(m.Data) != "held request answered" || m.Header.Get(micro.ErrorCodeHeader) != "" {
			t.Errorf("held request answered %q %v", m.Data, m.Header)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held request was never answered")
	}
}

// ---------------------------------------------------------------------
// Discovery.
// ---------------------------------------------------------------------

func TestWriterDiscovery(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, envOpts{inproc: tr.inproc, writer: WriterConfig{Version: "1.2.3"}})
			ctx := testCtx(t)
			jid := e.store.JournalID().String()

			request := func(verb micro.Verb, v any) {
				t.Helper()
				subj, err := micro.ControlSubject(verb, wire.ServiceName, "")
				if err != nil {
					t.Fatal(err)
				}
				msg, err := e.cnc.Request(subj, nil, 5*time.Second)
				if err != nil {
					t.Fatalf("%s: %v", subj, err)
				}
				if err := json.Unmarshal(msg.Data, v); err != nil {
					t.Fatalf("%s: %v: %s", subj, err, msg.Data)
				}
			}
			checkIdentity := func(what string, id micro.ServiceIdentity) {
				t.Helper()
				if id.Name != wire.ServiceName || id.Version != "1.2.3" || id.ID == "" {
					t.Errorf("%s identity = %+v", what, id)
				}
				if id.Metadata["journal"] != testJournal || id.Metadata["journal_id"] != jid {
					t.Errorf("%s metadata = %v, want journal %q and journal_id %s", what, id.Metadata, testJournal, jid)
				}
			}

			var ping micro.Ping
			request(micro.PingVerb, &ping)
			checkIdentity("PING", ping.ServiceIdentity)

			var info micro.Info
			request(micro.InfoVerb, &info)
			checkIdentity("INFO", info.ServiceIdentity)
			subjects := map[string]string{}
			for _, ep := range info.Endpoints {
				subjects[ep.Name] = ep.Subject
			}
			want := map[string]string{"pull": e.subj.Pull, "append": e.subj.Append, "info": e.subj.Info, "count": wire.CountSubject(testJournal)}
			if fmt.Sprint(subjects) != fmt.Sprint(want) {
				t.Errorf("endpoints = %v, want %v", subjects, want)
			}

			// One request of each kind shows in $SRV.STATS.
			if _, err := e.c.Append(ctx, []engine.Event{event(t, "order:1", []byte("x"))}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.c.Poll(ctx, engine.RegionAll(), 0, false, 10); err != nil {
				t.Fatal(err)
			}
			// micro counts a request after the handler returns, and the
			// writer answers from its own goroutine, so the reply can
			// arrive before the count: poll until both show.
			var stats micro.Stats
			counted := func() bool {
				n := 0
				for _, ep := range stats.Endpoints {
					if (ep.Name == "pull" || ep.Name == "append") && ep.NumRequests >= 1 {
						n++
					}
				}
				return n == 2
			}
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				stats = micro.Stats{}
				request(micro.StatsVerb, &stats)
				if counted() || time.Now().After(deadline) {
					break
				}
			}
			checkIdentity("STATS", stats.ServiceIdentity)
			if !counted() {
				t.Errorf("STATS endpoints %+v: want pull and append with a request each", stats.Endpoints)
			}

			// The journal's own info endpoint, with and without a body.
			in, err := e.c.Describe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if in.Journal != testJournal || in.JournalID != e.store.JournalID() || in.Incarnation != e.store.Incarnation() ||
				in.Visible != e.store.Visible() || in.StartedMs != e.store.StartedMs() || in.Events != 2 {
				t.Errorf("info = %+v (store visible %d)", in, e.store.Visible())
			}
			msg, err := e.cnc.Request(e.subj.Info, nil, 5*time.Second)
			if err != nil || msg.Header.Get(micro.ErrorCodeHeader) != "" {
				t.Fatalf("info with an empty body: %v %v", err, msg.Header)
			}
			if _, err := wire.DecodeInfo(msg.Data); err != nil {
				t.Fatalf("info reply: %v", err)
			}
			// Counters move once a reply is sent, maybe after the client
			// has it.
			waitFor(t, 5*time.Second, "the writer's counters", func() bool {
				st := e.w.Stats()
				return st.Infos >= 2 && st.Appends >= 1 && st.Pulls >= 1
			})
			if st := e.w.Stats(); st.Infos != 2 || st.Appends != 1 || st.Pulls != 1 || st.AppendEvents != 1 || len(st.Errors) != 0 {
				t.Errorf("writer stats = %+v", st)
			}
		})
	}
}

// Once NewWriter returns, the service answers requests sent from another
// connection: the endpoints are registered at the server, not just queued
// on the writer's connection.
func TestWriterReachableOnReturn(t *testing.T) {
	ns := startServer(t, nil)
	wnc := connect(t, ns, false)
	cnc := connect(t, ns, false)
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("j%d", i)
		store := openStore(t, t.TempDir(), journal.Config{})
		startWriter(t, wnc, store, WriterConfig{Journal: name})
		msg, err := cnc.Request(wire.SubjectsFor(name).Info, nil, 5*time.Second)
		if err != nil {
			t.Fatalf("writer %d: info right after NewWriter: %v", i, err)
		}
		if in, err := wire.DecodeInfo(msg.Data); err != nil || in.Journal != name {
			t.Fatalf("writer %d: info %+v, %v", i, in, err)
		}
	}
}

// Every visibility advance is announced on the epoch subject with the
// writer's journal id and incarnation, the epoch and the visible bound;
// the writer also announces its state when it starts.
func TestWriterPublishesEpochs(t *testing.T) {
	ns := startServer(t, nil)
	dir := t.TempDir()
	wnc := connect(t, ns, true)
	snc := connect(t, ns, true)
	msgs := make(chan *nats.Msg, 64)
	sub, err := snc.ChanSubscribe(wire.SubjectsFor(testJournal).Epoch, msgs)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := snc.Flush(); err != nil {
		t.Fatal(err)
	}
	store := openStore(t, dir, journal.Config{})
	w := startWriter(t, wnc, store, WriterConfig{})
	next := func() wire.EpochMessage {
		t.Helper()
		select {
		case m := <-msgs:
			em, err := wire.DecodeEpoch(m.Data)
			if err != nil {
				t.Fatalf("epoch message: %v", err)
			}
			if em.JournalID != store.JournalID() || em.Incarnation != store.Incarnation() {
				t.Fatalf("epoch message of %v/%v, want %v/%v", em.JournalID, em.Incarnation, store.JournalID(), store.Incarnation())
			}
			return em
		case <-time.After(10 * time.Second):
			t.Fatal("no epoch message")
		}
		return wire.EpochMessage{}
	}
	first := next()
	if first.Epoch != store.Epoch() || first.Visible != store.Visible() {
		t.Errorf("start message %+v, store at epoch %d visible %d", first, store.Epoch(), store.Visible())
	}
	ctx := testCtx(t)
	last := first
	for i := 0; i < 3; i++ {
		rc, err := store.Append(ctx, event(t, "order:1", nil))
		if err != nil {
			t.Fatal(err)
		}
		// Messages may coalesce, but the one covering this append comes,
		// and epochs only grow.
		for last.Visible <= rc.Seq {
			em := next()
			if em.Epoch <= last.Epoch || em.Visible < last.Visible {
				t.Fatalf("epoch went from %+v to %+v", last, em)
			}
			last = em
		}
	}
	if last.Epoch != store.Epoch() {
		t.Errorf("last message epoch %d, store %d", last.Epoch, store.Epoch())
	}
	waitFor(t, 5*time.Second, "epoch stats", func() bool { return w.Stats().Epochs >= 2 })
}

// ---------------------------------------------------------------------
// Bad input over the wire.
// ---------------------------------------------------------------------

// A bad request is answered with the micro error headers — code 400 or
// 413, a description naming the field — counted in Stats, and harms
// nobody: a concurrent well-behaved client keeps getting correct answers.
func TestWriterRefusesBadRequests(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, envOpts{inproc: tr.inproc})
			ctx := testCtx(t)

			type wireCase struct {
				wiretest.BadCase
				subject string
			}
			var cases []wireCase
			for _, c := range wiretest.BadPullCases(t) {
				cases = append(cases, wireCase{c, e.subj.Pull})
			}
			for _, c := range wiretest.BadAppendCases(t) {
				cases = append(cases, wireCase{c, e.subj.Append})
			}
			key := engine.DeriveIdempotencyKey("bad")
			cases = append(cases,
				wireCase{wiretest.BadCase{Name: "info v = 2", Body: wiretest.MP(t, wiretest.MPKV{"v", 2}), Field: "v", Code: 400}, e.subj.Info},
				wireCase{wiretest.BadCase{Name: "info not a map", Body: []byte{0x01}, Field: "v", Code: 400}, e.subj.Info},
				// Engine-level refusals: 400 with the engine's rule.
				wireCase{wiretest.BadCase{Name: "reserved kind", Body: wiretest.AppendBody(t, wiretest.ValidEvent(), wiretest.ValidEvent().With("kind", 0x0008)), Field: "engine: event 1", Code: 400, Rule: "reserved"}, e.subj.Append},
				wireCase{wiretest.BadCase{Name: "partial keyed batch", Body: wiretest.AppendBody(t, wiretest.ValidEvent().With("idempotency_key", key[:]), wiretest.ValidEvent()), Field: "journal", Code: 400, Rule: "keyed and unkeyed"}, e.subj.Append},
				wireCase{wiretest.BadCase{Name: "repeated key", Body: wiretest.AppendBody(t, wiretest.ValidEvent().With("idempotency_key", key[:]), wiretest.ValidEvent().With("idempotency_key", key[:])), Field: "journal", Code: 400, Rule: "conflict"}, e.subj.Append},
			)

			// A well-behaved client appends and reads back throughout.
			goodCtx, stopGood := context.WithCancel(ctx)
			var good atomic.Int64
			goodErr := make(chan error, 1)
			go func() {
				defer close(goodErr)
				region := engine.RegionEntity("good")
				pos, started := uint64(0), false
				for i := 0; goodCtx.Err() == nil; i++ {
					payload := []byte(fmt.Sprintf("good-%d", i))
					rc, err := e.c.Append(goodCtx, []engine.Event{event(t, "good", payload)})
					if err != nil {
						if goodCtx.Err() == nil {
							goodErr <- fmt.Errorf("append %d: %w", i, err)
						}
						return
					}
					res, err := e.c.Poll(goodCtx, region, pos, started, 10)
					if err != nil {
						if goodCtx.Err() == nil {
							goodErr <- fmt.Errorf("poll %d: %w", i, err)
						}
						return
					}
					if len(res.Entries) != 1 || res.Entries[0].Seq != rc[0].Seq || !bytes.Equal(res.Entries[0].Payload, payload) {
						goodErr <- fmt.Errorf("round %d: appended seq %d, pulled %+v", i, rc[0].Seq, res.Entries)
						return
					}
					pos, started = rc[0].Seq, true
					good.Add(1)
				}
			}()
			waitFor(t, 10*time.Second, "the good client to start", func() bool { return good.Load() > 0 })

			const rounds = 3
			want := map[string]uint64{}
			for round := 0; round < rounds; round++ {
				for _, c := range cases {
					msg, err := e.cnc.Request(c.subject, c.Body, 5*time.Second)
					if err != nil {
						t.Fatalf("%s: %v", c.Name, err)
					}
					code, desc := msg.Header.Get(micro.ErrorCodeHeader), msg.Header.Get(micro.ErrorHeader)
					if code != fmt.Sprint(c.Code) {
						t.Errorf("%s: code %q (%s), want %d", c.Name, code, desc, c.Code)
					}
					if !strings.HasPrefix(desc, c.Field+": ") && !strings.HasPrefix(desc, c.Field+" ") {
						t.Errorf("%s: description %q does not name %q", c.Name, desc, c.Field)
					}
					if c.Rule != "" && !strings.Contains(desc, c.Rule) {
						t.Errorf("%s: description %q does not give the rule %q", c.Name, desc, c.Rule)
					}
					want[code]++
				}
			}
			before := good.Load()
			waitFor(t, 10*time.Second, "the good client to go on", func() bool { return good.Load() > before })
			stopGood()
			if err := <-goodErr; err != nil {
				t.Fatalf("well-behaved client: %v", err)
			}
			t.Logf("%d bad requests answered while the good client made %d round trips", rounds*len(cases), good.Load())

			if got := e.w.Stats().Errors; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Stats().Errors = %v, want %v", got, want)
			}
			// Nothing of the bad appends was written.
			res, err := e.store.Poll(ctx, engine.RegionEntity("e"), 0, false, 10)
			if err != nil || len(res.Entries) != 0 {
				t.Errorf("bad appends left %d entries (%v)", len(res.Entries), err)
			}
		})
	}
}

// ---------------------------------------------------------------------
// Payload limits.
// ---------------------------------------------------------------------

// With a 64 KiB max payload, a pull of up to 1000 entries of ~10 KiB gets
// fewer entries in a reply under the limit, and pulling on gets every
// entry exactly once; an entry of exactly MaxEntryBytes is served; one
// byte more is refused 413 at append time; a request over the max payload
// is refused by the NATS client before it is sent.
func TestWriterPayloadClamp(t *testing.T) {
	const maxPayload = 64 << 10
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, envOpts{
				inproc: tr.inproc,
				server: func(o *server.Options) { o.MaxPayload = maxPayload },
				store:  journal.Config{MaxEntryBytes: wire.MaxEntryBytes(maxPayload)},
				client: ClientConfig{AppendAttempts: 1},
			})
			ctx := testCtx(t)
			if got := e.cnc.MaxPayload(); got != maxPayload {
				t.Fatalf("client sees max payload %d", got)
			}
			region := engine.RegionEntity("big")
			var seqs []uint64
			for i := 0; i < 10; i++ {
				var batch []engine.Event
				for j := 0; j < 3; j++ {
					batch = append(batch, event(t, "big", bytes.Repeat([]byte{byte(i*3 + j)}, 10<<10)))
				}
				rcs, err := e.c.Append(ctx, batch)
				if err != nil {
					t.Fatalf("append batch %d: %v", i, err)
				}
				for _, rc := range rcs {
					seqs = append(seqs, rc.Seq)
				}
			}

			msg, err := e.cnc.Request(e.subj.Pull, wire.EncodePullRequest(wire.PullRequest{Region: region, Max: 1000}), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
				t.Fatalf("pull refused: %s %s", code, msg.Header.Get(micro.ErrorHeader))
			}
			reply, err := wire.DecodePullReply(msg.Data)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(reply.Entries); n == 0 || n >= len(seqs) {
				t.Fatalf("a pull of max 1000 got %d of %d entries", n, len(seqs))
			}
			if len(msg.Data) > maxPayload {
				t.Fatalf("reply of %d bytes over the max payload %d", len(msg.Data), maxPayload)
			}
			t.Logf("one pull: %d entries in %d bytes", len(reply.Entries), len(msg.Data))

			// Pulling on from the last entry of each reply gets every entry
			// exactly once, in replies under the limit.
			var got []engine.Entry
			pos, started := uint64(0), false
			for {
				msg, err := e.cnc.Request(e.subj.Pull, wire.EncodePullRequest(wire.PullRequest{Region: region, Position: pos, Started: started, Max: 1000}), 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if len(msg.Data) > maxPayload {
					t.Fatalf("reply of %d bytes over the max payload", len(msg.Data))
				}
				reply, err := wire.DecodePullReply(msg.Data)
				if err != nil {
					t.Fatalf("pull after (%d, %v): %v %v", pos, started, err, msg.Header)
				}
				if len(reply.Entries) == 0 {
					break
				}
				got = append(got, reply.Entries...)
				pos, started = reply.Entries[len(reply.Entries)-1].Seq, true
			}
			if len(got) != len(seqs) {
				t.Fatalf("pulled %d entries, appended %d", len(got), len(seqs))
			}
			for i, en := range got {
				if en.Seq != seqs[i] || len(en.Payload) != 10<<10 || en.Payload[0] != byte(i) {
					t.Fatalf("entry %d: seq %d (want %d), payload %d bytes of %d", i, en.Seq, seqs[i], len(en.Payload), en.Payload[0])
				}
			}
			// The client source does the same.
			if n := len(pullAll(t, e.c, region, 1000)); n != len(seqs) {
				t.Fatalf("Client.Poll drained %d entries, want %d", n, len(seqs))
			}

			// An entry of exactly the engine limit, with long entity and
			// scope, is accepted and served alone under the limit.
			entity, scope := strings.Repeat("x", 300), strings.Repeat("y", 300)
			limit := wire.MaxEntryBytes(maxPayload)
			exact := engine.Event{Coordinate: engine.MustCoordinate(entity, scope), Kind: 0x1001, Payload: make([]byte, limit-len(entity)-len(scope))}
			rc, err := e.c.Append(ctx, []engine.Event{exact})
			if err != nil {
				t.Fatalf("append of an entry of exactly MaxEntryBytes: %v", err)
			}
			msg, err = e.cnc.Request(e.subj.Pull, wire.EncodePullRequest(wire.PullRequest{Region: engine.RegionEntity(entity), Max: 10}), 5*time.Second)
			if err != nil || msg.Header.Get(micro.ErrorCodeHeader) != "" {
				t.Fatalf("pull of the largest entry: %v %v", err, msg.Header)
			}
			if reply, err = wire.DecodePullReply(msg.Data); err != nil || len(reply.Entries) != 1 || reply.Entries[0].Seq != rc[0].Seq {
				t.Fatalf("pull of the largest entry: %v %+v", err, reply)
			}
			if len(msg.Data) > maxPayload {
				t.Fatalf("reply of %d bytes over the max payload", len(msg.Data))
			}

			// One byte more: refused 413 at append time.
			over := exact
			over.Payload = append(over.Payload, 0)
			_, err = e.c.Append(ctx, []engine.Event{over})
			var re *RemoteError
			if !errors.Is(err, ErrTooLarge) || !errors.As(err, &re) || re.Code != 413 {
				t.Fatalf("append over MaxEntryBytes: %v, want a 413 matching ErrTooLarge", err)
			}
			if !strings.Contains(re.Description, journal.ErrEntryTooLarge.Error()) {
				t.Errorf("413 description %q does not carry %q", re.Description, journal.ErrEntryTooLarge)
			}
			if errors.Is(err, delivery.ErrTransient) {
				t.Errorf("a 413 is transient: %v", err)
			}

			// A request over the max payload never leaves the client.
			errsBefore := e.w.Stats().Errors
			start := time.Now()
			_, err = e.c.Append(ctx, []engine.Event{event(t, "big", make([]byte, maxPayload+1))})
			if !errors.Is(err, ErrTooLarge) || !errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, delivery.ErrTransient) {
				t.Fatalf("append over the max payload: %v, want ErrTooLarge wrapping nats.ErrMaxPayload", err)
			}
			t.Logf("oversized request refused client-side in %v: %v", time.Since(start), err)
			if got := e.w.Stats().Errors; fmt.Sprint(got) != fmt.Sprint(errsBefore) {
				t.Errorf("the writer saw the oversized request: errors %v, before %v", got, errsBefore)
			}
			if got, want := e.w.Stats().Errors["413"], uint64(1); got != want {
				t.Errorf("413s counted: %d, want %d", got, want)
			}
		})
	}
}

// A pull whose scanned interval crosses many cancelled ranges still gets
// a reply under the max payload: the cancelled list counts against the
// reply's size like the entries do (fewer entries rather than an
// oversized reply or an error).
func TestWriterReplyWithManyCancelledRanges(t *testing.T) {
	const maxPayload = 64 << 10
	e := newEnv(t, envOpts{
		inproc: true,
		server: func(o *server.Options) { o.MaxPayload = maxPayload },
		store:  journal.Config{MaxEntryBytes: wire.MaxEntryBytes(maxPayload)},
	})
	// The setup is a few thousand fsyncs: on a busy machine it can take
	// longer than testCtx's 30 s, which only guards against a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	region := engine.RegionEntity("big")
	// Two entries fill a reply's entry budget (65536 - ReplyReserve)
	// almost exactly, leaving ReplyReserve for the rest of the reply.
	payload := (maxPayload-wire.ReplyReserve(maxPayload))/2 - wire.EntryOverhead - len("big") - len("s")
	var want []uint64
	appendBig := func() {
		t.Helper()
		rc, err := e.store.Append(ctx, event(t, "big", bytes.Repeat([]byte{1}, payload)))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, rc.Seq)
	}
	for i := 0; i < 3; i++ {
		appendBig()
	}
	// Then separate cancelled ranges, each a cancelled fence with a
	// visible event after it (so the ranges do not merge), with seqs past
	// 65535 so that each costs 11 bytes on the wire.
	start := time.Now()
	var filler []engine.Event
	for i := 0; i < 10000; i++ {
		filler = append(filler, event(t, "filler", nil))
	}
	for e.store.Stats().Allocated < 1<<16 {
		if _, err := e.store.AppendBatch(ctx, filler); err != nil {
			t.Fatal(err)
		}
	}
	const ranges = 400
	for i := 0; i < ranges; i++ {
		if err := e.store.BeginFence(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.AppendFenced(ctx, []engine.Event{event(t, "hidden", nil)}); err != nil {
			t.Fatal(err)
		}
		if err := e.store.CancelFence(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Append(ctx, event(t, "filler", nil)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 4; i++ {
		appendBig()
	}
	t.Logf("%d cancelled ranges set up in %v", len(e.store.CancelledRanges()), time.Since(start))
	if n := len(e.store.CancelledRanges()); n != ranges {
		t.Fatalf("%d cancelled ranges, want %d", n, ranges)
	}

	// Pull after the first batch of big entries: the scan crosses every
	// range before it reaches the second batch.
	pos := want[2]
	msg, err := e.cnc.Request(e.subj.Pull, wire.EncodePullRequest(wire.PullRequest{Region: region, Position: pos, Started: true, Max: 1000}), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		t.Fatalf("pull across %d cancelled ranges refused: %s %s", ranges, code, msg.Header.Get(micro.ErrorHeader))
	}
	if len(msg.Data) > maxPayload {
		t.Fatalf("reply of %d bytes over the max payload", len(msg.Data))
	}
	reply, err := wire.DecodePullReply(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.Entries) == 0 || len(reply.Cancelled) != ranges {
		t.Fatalf("reply: %d entries, %d cancelled ranges", len(reply.Entries), len(reply.Cancelled))
	}

	// A remote cursor reads everything once, with every range observed.
	cur, err := delivery.NewCursor(e.c, region)
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.WithGapConfig(delivery.GapConfig{Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for {
		batch, err := cur.PollBatch(ctx, 1000)
		if err != nil {
			t.Fatalf("remote cursor: %v", err)
		}
		if len(batch) == 0 {
			break
		}
		for _, en := range batch {
			got = append(got, en.Seq)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("remote cursor got %v, want %v", got, want)
	}
	gaps := cur.TakeGaps()
	if len(gaps) != 1 || len(gaps[0].Ranges) != ranges {
		t.Fatalf("gap observations: %d (want one with %d ranges)", len(gaps), ranges)
	}
}

// ---------------------------------------------------------------------
// Concurrency limit and shutdown.
// ---------------------------------------------------------------------

// With MaxInFlight 1 and one request in the writer's hands, another is
// answered 503 at once instead of queueing, on the wire and through
// dispatch; once the slot frees, requests are served again.
func TestWriterMaxInFlight(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true, writer: WriterConfig{MaxInFlight: 1}})
	ctx := testCtx(t)
	held, release := holdSlot(t, e.w, e.cnc)

	direct := newFakeRequest(e.subj.Pull, wire.EncodePullRequest(wire.PullRequest{Region: engine.RegionAll(), Max: 1}))
	e.w.dispatch(direct, e.w.handlePull)
	select {
	case <-direct.answered:
	default:
		t.Fatal("dispatch over MaxInFlight did not answer at once")
	}
	if code, desc, _ := direct.result(); code != "503" || !strings.Contains(desc, "busy") {
		t.Errorf("dispatch over MaxInFlight: %q %q, want 503 busy", code, desc)
	}

	start := time.Now()
	_, err := e.c.Poll(ctx, engine.RegionAll(), 0, false, 10)
	var re *RemoteError
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, delivery.ErrTransient) || !errors.As(err, &re) || re.Code != 503 {
		t.Fatalf("poll while the writer is busy: %v, want a 503", err)
	}
	t.Logf("busy writer answered 503 in %v", time.Since(start))
	select {
	case m := <-held:
		t.Fatalf("the held request was answered before release: %q", m.Data)
	default:
	}
	if got := e.w.Stats().Errors["503"]; got != 2 {
		t.Errorf("503s counted: %d, want 2", got)
	}

	release()
	heldAnswer(t, held)
	waitFor(t, 10*time.Second, "a pull to be served again", func() bool {
		_, err := e.c.Poll(ctx, engine.RegionAll(), 0, false, 10)
		return err == nil
	})
}

// Close waits for the requests in flight and answers them; requests that
// come meanwhile get 503; after Close nobody answers. Both match
// ErrUnavailable and delivery.ErrTransient.
func TestWriterCloseDrainsInFlight(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true})
	ctx := testCtx(t)
	held, release := holdSlot(t, e.w, e.cnc)

	closed := make(chan error, 1)
	go func() { closed <- e.w.Close(ctx) }()

	// Requests during the drain are refused 503 "closing".
	var err error
	waitFor(t, 10*time.Second, "a 503 while closing", func() bool {
		_, err = e.c.Poll(ctx, engine.RegionAll(), 0, false, 1)
		return err != nil
	})
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != 503 || !strings.Contains(re.Description, "closing") ||
		!errors.Is(err, ErrUnavailable) || !errors.Is(err, delivery.ErrTransient) {
		t.Fatalf("poll while closing: %v, want 503 closing", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with a request in flight", err)
	default:
	}

	release()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	heldAnswer(t, held) // sent before the handler returned, so before Close did

	// After Close: 503 while the endpoints drain, then no responders.
	waitFor(t, 10*time.Second, "no responders after Close", func() bool {
		_, err = e.c.Poll(ctx, engine.RegionAll(), 0, false, 1)
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, delivery.ErrTransient) {
			t.Fatalf("poll after Close: %v, want ErrUnavailable", err)
		}
		return !errors.As(err, &re)
	})
	if err := e.w.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// Close with a context that ends first reports the requests still in
// flight, and still stops the service.
func TestWriterCloseTimeout(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true})
	held, release := holdSlot(t, e.w, e.cnc)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := e.w.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a request held: %v, want context.DeadlineExceeded", err)
	}
	_, err = e.c.Poll(testCtx(t), engine.RegionAll(), 0, false, 1)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("poll after Close: %v", err)
	}
	// The request Close gave up on is still answered when it finishes.
	release()
	heldAnswer(t, held)
}

// Under a stream of concurrent appends, Close answers every request it
// accepted (the receipt's event is in the journal) and refuses the others
// with ErrUnavailable (their events are not); nothing times out.
func TestWriterCloseUnderLoad(t *testing.T) {
	e := newEnv(t, envOpts{inproc: true})
	ctx := testCtx(t)
	const appenders = 32

	type outcome struct {
		key engine.IdempotencyKey
		seq uint64
		err error
	}
	outcomes := make(chan outcome, 1<<16)
	var accepted atomic.Int64
	var wg sync.WaitGroup
	for a := 0; a < appenders; a++ {
		wg.Add(1)
		go func(a int) {
			defer wg.Done()
			for i := 0; ; i++ {
				key := engine.DeriveIdempotencyKey("load", []byte{byte(a)}, []byte(fmt.Sprint(i)))
				ev := event(t, "load", []byte("x"))
				ev.Key = key
				data, err := e.c.request(ctx, e.subj.Append, wire.EncodeAppendRequest([]engine.Event{ev}))
				o := outcome{key: key, err: err}
				if err == nil {
					rcs, derr := wire.DecodeAppendReply(data)
					if derr != nil || len(rcs) != 1 {
						o.err = fmt.Errorf("reply: %v %v", rcs, derr)
					} else {
						o.seq = rcs[0].Seq
						accepted.Add(1)
					}
				}
				outcomes <- o
				if err != nil {
					return
				}
			}
		}(a)
	}
	waitFor(t, 10*time.Second, "appends to flow", func() bool { return accepted.Load() >= 100 })
	closeStart := time.Now()
	closeCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := e.w.Close(closeCtx); err != nil {
		t.Fatalf("Close under load: %v", err)
	}
	t.Logf("Close under load took %v", time.Since(closeStart))
	wg.Wait()
	close(outcomes)

	// Every outcome is a receipt or ErrUnavailable, and the journal agrees.
	stored := map[[16]byte]uint64{}
	res, err := e.store.Poll(ctx, engine.RegionEntity("load"), 0, false, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range res.Entries {
		stored[en.ID] = en.Seq
	}
	ok, refused := 0, 0
	for o := range outcomes {
		switch {
		case o.err == nil:
			ok++
			if seq, found := stored[o.key]; !found || seq != o.seq {
				t.Errorf("receipt seq %d for key %s, journal has %d (found %v)", o.seq, o.key, seq, found)
			}
		case errors.Is(o.err, ErrUnavailable) && errors.Is(o.err, delivery.ErrTransient):
			refused++
			if _, found := stored[o.key]; found {
				t.Errorf("refused append of key %s is in the journal", o.key)
			}
		default:
			t.Errorf("append outcome %v, want a receipt or ErrUnavailable", o.err)
		}
	}
	if ok != len(stored) {
		t.Errorf("%d receipts, %d events in the journal", ok, len(stored))
	}
	if refused != appenders {
		t.Errorf("%d refusals, want one per appender (%d)", refused, appenders)
	}
	t.Logf("%d appends answered, %d refused", ok, refused)
}
