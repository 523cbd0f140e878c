package kvckpt

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/checkpointtest"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/internal/natstest"
)

// ---- embedded servers, stores and small helpers ------------------------

// testOpTimeout bounds every store call a test makes directly.
const testOpTimeout = 30 * time.Second

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testOpTimeout)
	t.Cleanup(cancel)
	return ctx
}

// testServer is an embedded JetStream server on a loopback port that a test
// can shut down and start again on the same port and store directory (a
// server restart, as clients see it). Its cleanup is registered before any
// client's, so clients close first.
type testServer struct {
	t    testing.TB
	opts *server.Options // the real port in place of server.RANDOM_PORT
	mu   sync.Mutex
	ns   *server.Server // nil while stopped
}

func startTestServer(t testing.TB) *testServer {
	t.Helper()
	o := natstest.Options(t.TempDir())
	ns := natstest.Start(t, o.Clone())
	ts := &testServer{t: t, ns: ns, opts: o}
	// A restart must come back where the clients look for it.
	ts.opts.Port = ns.Addr().(*net.TCPAddr).Port
	t.Cleanup(ts.Stop)
	return ts
}

// URL is the server's client URL; it stays the same across restarts.
func (ts *testServer) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", ts.opts.Port) }

// Stop shuts the server down and waits for it; a no-op when stopped.
func (ts *testServer) Stop() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.ns != nil {
		natstest.Shutdown(ts.ns)
		ts.ns = nil
	}
}

// Restart starts the stopped server again on the same port and store
// directory. Call it from the test goroutine.
func (ts *testServer) Restart() {
	ts.t.Helper()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.ns != nil {
		ts.t.Fatal("restart of a running server")
	}
	ts.ns = natstest.Start(ts.t, ts.opts.Clone())
}

// openStore opens a Store on js; journal "j" unless cfg names one.
func openStore(t testing.TB, js jetstream.JetStream, cfg Config) *Store {
	t.Helper()
	if cfg.Journal == "" {
		cfg.Journal = "j"
	}
	s, err := Open(testCtx(t), js, cfg)
	if err != nil {
		t.Fatalf("open %+v: %v", cfg, err)
	}
	return s
}

// newServerStore is one server, one client and one store with cfg.
func newServerStore(t testing.TB, cfg Config) (*testServer, *nats.Conn, *Store) {
	t.Helper()
	ts := startTestServer(t)
	nc, js := natstest.ConnectURL(t, ts.URL())
	return ts, nc, openStore(t, js, cfg)
}

// waitFor polls cond every few milliseconds until it holds, failing the
// test after timeout.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitBucket waits until the store's bucket answers (after a restart the
// client must reconnect and the server must have recovered the stream).
func waitBucket(t testing.TB, nc *nats.Conn, s *Store) {
	t.Helper()
	waitFor(t, "the client to reconnect", 15*time.Second, nc.IsConnected)
	waitFor(t, "the bucket to answer", 15*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := s.kv.Status(ctx)
		return err == nil
	})
}

// testRecord is a complete record, distinguishable by pos and owner.
func testRecord(pos uint64, owner string) checkpoint.Record {
	ident := engine.RegionEntity("order").Identity()
	return checkpoint.Record{
		Position: pos, Started: true, RegionIdentity: &ident,
		JournalID: "0123456789abcdef0123456789abcdef", Owner: owner,
		UpdatedMs: 1_700_000_000_000 + pos,
	}
}

func mustSave(t testing.TB, s *Store, id string, rec checkpoint.Record, expected checkpoint.Revision) checkpoint.Revision {
	t.Helper()
	rev, err := s.Save(testCtx(t), id, rec, expected)
	if err != nil {
		t.Fatalf("save %q (expected %d): %v", short(id), expected, err)
	}
	return rev
}

func mustLoad(t testing.TB, s *Store, id string) (checkpoint.Record, checkpoint.Revision) {
	t.Helper()
	rec, rev, err := s.Load(testCtx(t), id)
	if err != nil {
		t.Fatalf("load %q: %v", short(id), err)
	}
	return rec, rev
}

func wantIs(t testing.TB, err error, what string, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("%s: error %v, want one matching %v", what, err, target)
		}
	}
}

func short(id string) string {
	if len(id) <= 40 {
		return id
	}
	return fmt.Sprintf("%s…(%d bytes)", id[:20], len(id))
}

// ---- CKP-17: the engine's conformance suite ------------------------------

// TestCKP17_Conformance runs the checkpoint-store conformance suite against
// a Store on a fresh embedded server per subtest.
//
// BreakIO shuts the server down (Load and Save then fail with
// ErrIO) and its repair starts it again on the same port and
// store directory; the file bucket and its revisions come back, and the
// client reconnects. The client runs without a reconnect buffer
// (nats.ReconnectBufSize(-1)): while disconnected a call fails at once
// instead of waiting for its deadline, and a failed save is not replayed
// after the reconnect (with the default 8 MiB buffer it would be: see
// TestSaveTimedOutWhileDisconnected), so "I/O error, record intact" holds.
// Closing the connection would also break I/O, but nothing can repair it
// under the same Store.
func TestCKP17_Conformance(t *testing.T) {
	checkpointtest.RunConformance(t, func(t testing.TB) checkpointtest.Target {
		ts := startTestServer(t)
		nc, js := natstest.ConnectURL(t, ts.URL(), nats.ReconnectBufSize(-1))
		s := openStore(t, js, Config{Journal: "conformance", Timeout: time.Second})
		return checkpointtest.Target{
			Store: s,
			PlantRaw: func(t testing.TB, id string, data []byte) {
				t.Helper()
				if _, err := s.kv.Put(testCtx(t), s.Key(id), data); err != nil {
					t.Fatalf("plant %q: %v", short(id), err)
				}
			},
			BreakIO: func(t testing.TB, id string) func() {
				t.Helper()
				ts.Stop()
				waitFor(t, "the client to notice the shutdown", 10*time.Second, func() bool { return !nc.IsConnected() })
				return func() {
					t.Helper()
					ts.Restart()
					waitBucket(t, nc, s)
				}
			},
		}
	})
}

// ---- CK-03: key encoding ---------------------------------------------------

// kvKeyRe is the KV key rule of nats.go (jetstream/kv.go, validKeyRe).
var kvKeyRe = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)

// ck03IDs are the valid ids of SPEC §13 CK-03 and the long ids of the
// brief: 1024 ASCII bytes, and 3-byte runes up to the 1024-byte limit.
func ck03IDs() []string {
	return []string{
		"witness-cursor", "a.b", "a b", "名前", "x:y@z", `a\b`, "*", ">",
		strings.Repeat("x", 1024),
		strings.Repeat("名", 341),       // 1023 bytes
		strings.Repeat("名", 341) + "x", // 1024 bytes
	}
}

// checkKey fails unless s.Key(id) is a legal KV key of exactly two
// non-empty dot-separated tokens, the journal and the encoded id.
func checkKey(t testing.TB, s *Store, id string) string {
	t.Helper()
	key := s.Key(id)
	if !kvKeyRe.MatchString(key) {
		t.Fatalf("key %q of id %q is not KV-legal", short(key), short(id))
	}
	toks := strings.Split(key, ".")
	if len(toks) != 2 || toks[0] != s.journal || toks[1] == "" {
		t.Fatalf("key %q of id %q: tokens %q, want [%q, <non-empty>]", short(key), short(id), toks, s.journal)
	}
	return key
}

func checkRoundTrip(t testing.TB, id string) {
	t.Helper()
	enc := encodeID(id)
	got, err := decodeID(enc)
	if err != nil || got != id {
		t.Fatalf("decodeID(encodeID(%q)) = %q, %v", short(id), short(got), err)
	}
}

// verbatimChars are the characters an id may consist of to be kept verbatim.
const verbatimChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"

// idPieces are fragments random ids are built from: readable characters,
// the characters keys cannot hold, and multi-byte runes.
var idPieces = []string{
	"a", "Z", "0", "_", "-", ".", " ", ":", "@", "*", ">", `\`, "~", "#", "%",
	"+", ",", "'", `"`, "?", "!", "$", "&", "(", ")", "[", "]", "{", "}",
	"^", "`", ";", "é", "ö", "名", "前", "😀", "\u0085", "\u00a0", "\ufeff",
}

// randomID returns a random valid checkpoint id: mostly short, sometimes
// made only of verbatim characters, sometimes close to the 1024-byte limit.
func randomID(rng *rand.Rand) string {
	for {
		var b strings.Builder
		n := 1 + rng.IntN(24)
		if rng.IntN(40) == 0 {
			n = 300 + rng.IntN(800)
		}
		verbatim := rng.IntN(4) == 0
		for range n {
			var p string
			switch {
			case verbatim:
				p = string(verbatimChars[rng.IntN(len(verbatimChars))])
			case rng.IntN(8) == 0: // any rune from U+0020 up
				r := rune(0x20 + rng.IntN(utf8.MaxRune-0x20))
				if !utf8.ValidRune(r) {
					continue
				}
				p = string(r)
			default:
				p = idPieces[rng.IntN(len(idPieces))]
			}
			if b.Len()+len(p) > 1024 {
				break
			}
			b.WriteString(p)
		}
		if id := b.String(); checkpoint.ValidateID(id) == nil {
			return id
		}
	}
}

// TestCK03_KeyEncoding checks the id-to-key mapping (SPEC §13 CK-03): it is
// reversible, injective and KV-legal for the catalogue ids and thousands of
// random valid ids, keeps [A-Za-z0-9_-] ids readable, rejects keys it never
// produces, and works through a real bucket (Save, Load, List).
func TestCK03_KeyEncoding(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	keyOnly := &Store{journal: "j"} // Key needs only the journal

	t.Run("catalogue-ids", func(t *testing.T) {
		seen := make(map[string]string)
		for _, id := range ck03IDs() {
			if err := checkpoint.ValidateID(id); err != nil {
				t.Fatalf("CK-03 id %q is invalid: %v", short(id), err)
			}
			checkRoundTrip(t, id)
			key := checkKey(t, keyOnly, id)
			if prev, dup := seen[key]; dup {
				t.Fatalf("ids %q and %q share key %q", short(prev), short(id), short(key))
			}
			seen[key] = id
		}
		if got := keyOnly.Key("witness-cursor"); got != "j.witness-cursor" {
			t.Errorf("Key(witness-cursor) = %q, want it verbatim", got)
		}
	})

	t.Run("random-ids", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(seed, 1))
		const n = 4000
		keys := make(map[string]string, n)
		for range n {
			id := randomID(rng)
			checkRoundTrip(t, id)
			key := checkKey(t, keyOnly, id)
			if prev, dup := keys[key]; dup && prev != id {
				t.Fatalf("seed %d: ids %q and %q share key %q", seed, short(prev), short(id), short(key))
			}
			keys[key] = id
		}
		t.Logf("%d distinct ids, %d distinct keys", len(keys), len(keys))
	})

	t.Run("verbatim-ids", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(seed, 2))
		for range 2000 {
			b := make([]byte, 1+rng.IntN(64))
			for i := range b {
				b[i] = verbatimChars[rng.IntN(len(verbatimChars))]
			}
			id := string(b)
			if got := encodeID(id); got != id {
				t.Fatalf("encodeID(%q) = %q, want it verbatim", id, got)
			}
			checkRoundTrip(t, id)
		}
		// Any other character forces the encoded form.
		for _, id := range []string{"a.b", "a b", "a~", "é", "*", ">", "a:b"} {
			if got := encodeID(id); !strings.HasPrefix(got, "=") {
				t.Errorf("encodeID(%q) = %q, want the encoded form", id, got)
			}
		}
	})

	t.Run("foreign-key-parts-rejected", func(t *testing.T) {
		// decodeID must accept exactly the image of encodeID over valid
		// ids, or List would report one checkpoint under two keys, or an
		// id that Load refuses.
		for _, part := range []string{
			"",        // nothing
			"=",       // the empty id
			"=YWJj",   // "abc", whose key part is "abc"
			"=YQ",     // "a", whose key part is "a"
			"=w6nDqR", // "éé" with non-zero padding bits ("éé" is "=w6nDqQ")
			"=YS9i",   // "a/b": not a valid checkpoint id
			"=YXxi",   // "a|b": not a valid checkpoint id
			"=_w",     // invalid UTF-8
			"=YQ==",   // padding is never written
			"=YS5i.x", // a dot
			"a.b",     // neither verbatim nor encoded
			"a b",     // neither verbatim nor encoded
			"a~b",     // neither verbatim nor encoded
			"=YSBi=",  // a stray "="
			"==YSBi",  // a doubled prefix
			strings.Repeat("x", engine.MaxComponentBytes+1), // verbatim but too long (found by FuzzKeyEncoding)
		} {
			if id, err := decodeID(part); err == nil {
				t.Errorf("decodeID(%q) = %q, want an error (encodeID(%q) = %q)", part, id, id, encodeID(id))
			}
		}
		if id, err := decodeID("=w6nDqQ"); err != nil || id != "éé" {
			t.Errorf("decodeID(=w6nDqQ) = %q, %v, want \"éé\"", id, err)
		}
	})

	t.Run("through-the-server", func(t *testing.T) {
		_, _, s := newServerStore(t, Config{Journal: "ck03"})
		ids := ck03IDs()
		revs := make(map[string]checkpoint.Revision)
		for i, id := range ids {
			revs[id] = mustSave(t, s, id, testRecord(uint64(i), id), 0)
		}
		for i, id := range ids {
			rec, rev := mustLoad(t, s, id)
			if rev != revs[id] || rec.Position != uint64(i) || rec.Owner != id {
				t.Errorf("load %q: position %d owner %q revision %d, want %d %q %d",
					short(id), rec.Position, short(rec.Owner), rev, i, short(id), revs[id])
			}
		}
		// Keys other tools wrote under the journal are not checkpoints.
		for _, k := range []string{"ck03.not.ours", "ck03.=YWJj", "ck03.=YS9i", "other.=YSBi"} {
			if _, err := s.kv.Put(testCtx(t), k, []byte("x")); err != nil {
				t.Fatalf("put %q: %v", k, err)
			}
		}
		listed, err := s.List(testCtx(t))
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		var got []string
		for _, l := range listed {
			if l.Err != nil {
				t.Errorf("list: %q: %v", short(l.ID), l.Err)
			}
			if l.Revision != revs[l.ID] || l.Record.Owner != l.ID {
				t.Errorf("list: %q at revision %d owner %q, want revision %d", short(l.ID), l.Revision, short(l.Record.Owner), revs[l.ID])
			}
			got = append(got, l.ID)
		}
		slices.Sort(got)
		want := slices.Clone(ids)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("list ids:\n got %q\nwant %q", got, want)
		}
	})
}

// ---- configuration and bucket checks ---------------------------------------

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name    string
		cfg     Config
		wantErr error
		fields  []string // named in the message
	}{
		{"minimal", Config{Journal: "j"}, nil, nil},
		{"all-set", Config{Journal: "orders-2024_eu", Bucket: "ckpt_B-1", Replicas: 3, History: 64, Timeout: time.Second}, nil, nil},
		{"journal-64", Config{Journal: strings.Repeat("a", 64)}, nil, nil},
		{"history-8", Config{Journal: "j", History: 8}, nil, nil},
		{"replicas-5", Config{Journal: "j", Replicas: 5}, nil, nil},
		{"journal-empty", Config{}, ErrInvalidConfig, []string{"Journal"}},
		{"journal-65", Config{Journal: strings.Repeat("a", 65)}, ErrInvalidConfig, []string{"Journal"}},
		{"journal-dot", Config{Journal: "a.b"}, ErrInvalidConfig, []string{"Journal"}},
		{"journal-space", Config{Journal: "a b"}, ErrInvalidConfig, []string{"Journal"}},
		{"journal-star", Config{Journal: "*"}, ErrInvalidConfig, []string{"Journal"}},
		{"journal-gt", Config{Journal: ">"}, ErrInvalidConfig, []string{"Journal"}},
		{"journal-equals", Config{Journal: "a=b"}, ErrInvalidConfig, []string{"Journal"}},
		{"journal-unicode", Config{Journal: "名前"}, ErrInvalidConfig, []string{"Journal"}},
		{"bucket-dot", Config{Journal: "j", Bucket: "a.b"}, ErrInvalidConfig, []string{"Bucket"}},
		{"replicas-negative", Config{Journal: "j", Replicas: -1}, ErrInvalidConfig, []string{"Replicas"}},
		{"replicas-6", Config{Journal: "j", Replicas: 6}, ErrInvalidConfig, []string{"Replicas"}},
		{"history-1", Config{Journal: "j", History: 1}, ErrInvalidConfig, []string{"History"}},
		{"history-7", Config{Journal: "j", History: 7}, ErrInvalidConfig, []string{"History"}},
		{"history-65", Config{Journal: "j", History: 65}, ErrInvalidConfig, []string{"History"}},
		{"timeout-negative", Config{Journal: "j", Timeout: -time.Millisecond}, ErrInvalidConfig, []string{"Timeout"}},
		{"every-problem-at-once", Config{Bucket: "a b", Replicas: 9, History: 2, Timeout: -1},
			ErrInvalidConfig, []string{"Journal", "Bucket", "Replicas", "History", "Timeout"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if c.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("Validate() = %v, want %v", err, c.wantErr)
			}
			for _, f := range c.fields {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("Validate() = %q does not name %s", err, f)
				}
			}
			// Open validates before it touches the server (js is nil here).
			if _, oerr := Open(context.Background(), nil, c.cfg); !errors.Is(oerr, c.wantErr) {
				t.Errorf("Open() = %v, want %v", oerr, c.wantErr)
			}
		})
	}
}

func TestOpenBucket(t *testing.T) {
	ts := startTestServer(t)
	_, js := natstest.ConnectURL(t, ts.URL())
	ctx := testCtx(t)

	t.Run("creates-default-bucket", func(t *testing.T) {
		s := openStore(t, js, Config{Journal: "j"})
		if s.Bucket() != DefaultBucket {
			t.Fatalf("bucket %q, want %q", s.Bucket(), DefaultBucket)
		}
		st, err := s.kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
		if st.History() != DefaultHistory || st.TTL() != 0 || info.Config.Storage != jetstream.FileStorage || info.Config.Replicas != 1 {
			t.Errorf("created bucket: history %d ttl %v storage %v replicas %d, want %d, 0, file, 1",
				st.History(), st.TTL(), info.Config.Storage, info.Config.Replicas, DefaultHistory)
		}
		// A second store binds the same bucket and sees the first's records.
		rev := mustSave(t, s, "c", testRecord(1, "a"), 0)
		s2 := openStore(t, js, Config{Journal: "j"})
		if _, got := mustLoad(t, s2, "c"); got != rev {
			t.Errorf("second store loads revision %d, want %d", got, rev)
		}
	})

	t.Run("binds-existing-good-bucket", func(t *testing.T) {
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "good", History: 20, Storage: jetstream.FileStorage}); err != nil {
			t.Fatal(err)
		}
		s := openStore(t, js, Config{Journal: "j", Bucket: "good", History: 8})
		st, err := s.kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.History() != 20 {
			t.Errorf("history %d: Open changed an existing bucket (want 20)", st.History())
		}
	})

	unusable := []struct {
		name    string
		cfg     jetstream.KeyValueConfig
		problem []string
	}{
		{"memory-storage", jetstream.KeyValueConfig{Bucket: "mem", History: 8, Storage: jetstream.MemoryStorage}, []string{"memory storage"}},
		{"ttl", jetstream.KeyValueConfig{Bucket: "ttl", History: 8, TTL: time.Hour}, []string{"TTL of 1h0m0s"}},
		{"history-1", jetstream.KeyValueConfig{Bucket: "h1", History: 1}, []string{"history 1"}},
		{"history-7", jetstream.KeyValueConfig{Bucket: "h7", History: 7}, []string{"history 7"}},
		{"all-three", jetstream.KeyValueConfig{Bucket: "bad", History: 1, TTL: time.Minute, Storage: jetstream.MemoryStorage},
			[]string{"memory storage", "TTL of 1m0s", "history 1"}},
	}
	for _, u := range unusable {
		t.Run("refuses-"+u.name, func(t *testing.T) {
			if _, err := js.CreateKeyValue(ctx, u.cfg); err != nil {
				t.Fatal(err)
			}
			s, err := Open(ctx, js, Config{Journal: "j", Bucket: u.cfg.Bucket})
			if !errors.Is(err, ErrBucketUnusable) {
				t.Fatalf("Open = %v, %v; want ErrBucketUnusable", s, err)
			}
			for _, p := range u.problem {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not name %q", err, p)
				}
			}
			if !strings.Contains(err.Error(), u.cfg.Bucket) {
				t.Errorf("error %q does not name the bucket %q", err, u.cfg.Bucket)
			}
		})
	}
}

// ---- deleted and purged keys -------------------------------------------------

// TestDeletedKeys: a deleted or purged key loads as not found, a create
// brings it back, and a save from a revision read before the deletion
// conflicts, before and after the re-creation (doc.go, "Deleted keys").
func TestDeletedKeys(t *testing.T) {
	_, _, s := newServerStore(t, Config{})
	ops := map[string]func(ctx context.Context, key string) error{
		"delete": func(ctx context.Context, key string) error { return s.kv.Delete(ctx, key) },
		"purge":  func(ctx context.Context, key string) error { return s.kv.Purge(ctx, key) },
	}
	for _, name := range []string{"delete", "purge"} {
		t.Run(name, func(t *testing.T) {
			id := "cursor " + name // an encoded key
			rev1 := mustSave(t, s, id, testRecord(1, "w"), 0)
			rev2 := mustSave(t, s, id, testRecord(2, "w"), rev1)
			if err := ops[name](testCtx(t), s.Key(id)); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			_, _, err := s.Load(testCtx(t), id)
			wantIs(t, err, "load after "+name, checkpoint.ErrNotFound)

			_, err = s.Save(testCtx(t), id, testRecord(3, "stale"), rev2)
			wantIs(t, err, "save from the pre-"+name+" revision", checkpoint.ErrConflict)
			_, err = s.Save(testCtx(t), id, testRecord(3, "stale"), rev1)
			wantIs(t, err, "save from an older revision", checkpoint.ErrConflict)

			listed, err := s.List(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range listed {
				if l.ID == id {
					t.Errorf("List shows the %sd key %q", name, id)
				}
			}

			rec := testRecord(0, "fresh")
			rev3 := mustSave(t, s, id, rec, 0)
			if rev3 <= rev2 {
				t.Errorf("re-created at revision %d, not after %d", rev3, rev2)
			}
			got, gotRev := mustLoad(t, s, id)
			if gotRev != rev3 || got.Owner != "fresh" {
				t.Errorf("load after re-create: owner %q revision %d, want fresh at %d", got.Owner, gotRev, rev3)
			}
			_, err = s.Save(testCtx(t), id, testRecord(9, "stale"), rev2)
			wantIs(t, err, "save from the pre-"+name+" revision after re-create", checkpoint.ErrConflict)
			_, err = s.Save(testCtx(t), id, testRecord(9, "again"), 0)
			wantIs(t, err, "second create", checkpoint.ErrConflict)
		})
	}
}

// ---- compare-and-swap under contention -------------------------------------

// TestCASContention has 8 goroutines race to advance one checkpoint: each
// loads, saves position+1 from the loaded revision, and on a conflict loads
// again. Sorted by revision, the successful saves must form one chain: each
// one's expected revision is the previous one's new revision (the first
// one's is 0) and positions go 1, 2, 3, … — so no save was lost and none
// won from a stale revision. The key's KV history must agree with the
// tail of the chain.
func TestCASContention(t *testing.T) {
	_, _, s := newServerStore(t, Config{})
	const (
		savers = 8
		id     = "contended"
	)
	target := 3000
	if testing.Short() {
		target = 500
	}
	// The race detector makes KV CAS 5-6x slower: the time budget keeps the
	// test short there, and a floor keeps it meaningful.
	const budget, floor = 12 * time.Second, 400

	type saved struct {
		expected, rev checkpoint.Revision
		pos           uint64
		saver         int
	}
	var (
		mu        sync.Mutex
		saves     []saved
		conflicts atomic.Int64
		stop      atomic.Bool
		wg        sync.WaitGroup
	)
	errc := make(chan error, savers)
	start := time.Now()
	deadline := start.Add(budget)
	for i := range savers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("saver-%d", i)
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), testOpTimeout)
				rec, rev, err := s.Load(ctx, id)
				if errors.Is(err, checkpoint.ErrNotFound) {
					rec, rev, err = checkpoint.Record{}, 0, nil
				}
				if err != nil {
					cancel()
					errc <- fmt.Errorf("%s: load: %w", owner, err)
					return
				}
				pos := rec.Position + 1
				newRev, err := s.Save(ctx, id, testRecord(pos, owner), rev)
				cancel()
				if errors.Is(err, checkpoint.ErrConflict) {
					conflicts.Add(1)
					continue
				}
				if err != nil {
					errc <- fmt.Errorf("%s: save: %w", owner, err)
					return
				}
				mu.Lock()
				saves = append(saves, saved{rev, newRev, pos, i})
				n := len(saves)
				mu.Unlock()
				if n >= target || time.Now().After(deadline) {
					stop.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	elapsed := time.Since(start)
	wins := make([]int, savers)
	for _, sv := range saves {
		wins[sv.saver]++
	}
	t.Logf("%d saves, %d conflicts in %v (%.0f saves/s); wins per saver %v",
		len(saves), conflicts.Load(), elapsed.Round(time.Millisecond), float64(len(saves))/elapsed.Seconds(), wins)
	if len(saves) < min(target, floor) {
		t.Fatalf("only %d saves within %v", len(saves), budget)
	}

	slices.SortFunc(saves, func(a, b saved) int { return cmp.Compare(a.rev, b.rev) })
	for i, sv := range saves {
		var prevRev checkpoint.Revision
		if i > 0 {
			prevRev = saves[i-1].rev
			if sv.rev == prevRev {
				t.Fatalf("two saves returned revision %d", sv.rev)
			}
			if sv.pos < saves[i-1].pos {
				t.Fatalf("position went back from %d to %d at revision %d", saves[i-1].pos, sv.pos, sv.rev)
			}
		}
		if sv.expected != prevRev {
			t.Fatalf("save %d (revision %d, position %d) expected revision %d, but the previous successful save made %d",
				i, sv.rev, sv.pos, sv.expected, prevRev)
		}
		if sv.pos != uint64(i+1) {
			t.Fatalf("save %d wrote position %d, want %d (a lost update)", i, sv.pos, i+1)
		}
	}

	last := saves[len(saves)-1]
	rec, rev := mustLoad(t, s, id)
	if rev != last.rev || rec.Position != last.pos {
		t.Errorf("stored position %d at revision %d, want the last save's %d at %d", rec.Position, rev, last.pos, last.rev)
	}
	hist, err := s.kv.History(testCtx(t), s.Key(id))
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	if len(hist) != DefaultHistory {
		t.Errorf("history holds %d revisions, want %d", len(hist), DefaultHistory)
	}
	tail := saves[len(saves)-len(hist):]
	for i, e := range hist {
		r, err := checkpoint.Decode(e.Value())
		if err != nil {
			t.Fatalf("history entry %d: %v", e.Revision(), err)
		}
		if checkpoint.Revision(e.Revision()) != tail[i].rev || r.Position != tail[i].pos {
			t.Errorf("history[%d] = position %d at revision %d, want %d at %d", i, r.Position, e.Revision(), tail[i].pos, tail[i].rev)
		}
	}
}

// ---- CKP-16: two full workers on one checkpoint ------------------------------

// TestCKP16_TwoWorkersRace starts two durable workers with the same
// checkpoint id and region, each on its own NATS connection, over one local
// journal that keeps growing. One of them must stop with a checkpoint
// conflict (ErrCheckpointWriteFailed and ErrConflict); the other
// keeps committing; no successful save ever moves the stored position back.
func TestCKP16_TwoWorkersRace(t *testing.T) {
	ts := startTestServer(t)
	_, jsA := natstest.ConnectURL(t, ts.URL())
	_, jsB := natstest.ConnectURL(t, ts.URL())
	storeA := openStore(t, jsA, Config{})
	storeB := openStore(t, jsB, Config{})
	journal := openJournal(t)
	region := engine.RegionEntity("order")
	app := startAppender(t, journal, time.Millisecond)

	for round := range 3 {
		t.Run(fmt.Sprintf("round-%d", round), func(t *testing.T) {
			id := fmt.Sprintf("race-%d", round)
			rec := newSaveRecorder(t)
			start := func(name string, store *Store) (*delivery.Worker, *deliveryLog) {
				log := &deliveryLog{}
				cfg := delivery.DefaultWorkerConfig()
				cfg.BatchSize = 8
				cfg.IdleTimeout = 5 * time.Millisecond
				cfg.CheckpointID = id
				cfg.Checkpoints = rec.wrap(store)
				cfg.WorkerID = name
				cfg.OnCheckpointFailure = func(string, error) {} // expected; Join reports it
				w, err := delivery.StartWorker(context.Background(), journal, region, cfg, log.handler(delivery.Continue))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { w.Stop(); <-w.Done() })
				return w, log
			}
			a, logA := start("worker-a", storeA)
			b, logB := start("worker-b", storeB)

			var loser, winner *delivery.Worker
			var loserName string
			select {
			case <-a.Done():
				loser, winner, loserName = a, b, "worker-a"
			case <-b.Done():
				loser, winner, loserName = b, a, "worker-b"
			case <-time.After(20 * time.Second):
				t.Fatalf("both workers still running after 20s (saves %d, %d)", a.Stats().Saves, b.Stats().Saves)
			}
			err := loser.Join()
			wantIs(t, err, loserName+" Join", delivery.ErrCheckpointWriteFailed, checkpoint.ErrConflict)
			lostAt := rec.count()

			// The winner keeps committing while the journal grows.
			before := winner.Stats().Saves
			waitFor(t, "the winner to commit three more times", 20*time.Second, func() bool {
				return winner.Stats().Saves >= before+3
			})
			select {
			case <-winner.Done():
				t.Fatalf("the winner stopped too: %v", winner.Join())
			default:
			}
			if err := winner.StopAndJoin(); err != nil {
				t.Fatalf("winner: %v", err)
			}

			saves := rec.sorted()
			for _, sv := range saves[lostAt:] {
				if sv.owner == loserName {
					t.Errorf("%s saved position %d at revision %d after it stopped", loserName, sv.pos, sv.rev)
				}
			}
			stored, _ := mustLoad(t, storeA, id)
			if last := saves[len(saves)-1]; stored.Position != last.pos || stored.Owner == loserName {
				t.Errorf("stored position %d by %s, want the winner's last save %d", stored.Position, stored.Owner, last.pos)
			}
			if c := winner.Stats().Committed; stored.Position != c {
				t.Errorf("stored position %d, winner committed %d", stored.Position, c)
			}
			t.Logf("%s lost; batches a=%d b=%d; %d saves (stored position %d)",
				loserName, logA.batches(), logB.batches(), len(saves), stored.Position)
		})
	}
	if err := app.Stop(); err != nil {
		t.Fatal(err)
	}
}

// ---- disconnected server -------------------------------------------------

// TestDisconnectedServer: with the server down, every call fails with
// ErrIO within Config.Timeout (or the caller's shorter deadline),
// never hangs, and never reports a conflict, corruption or absence.
func TestDisconnectedServer(t *testing.T) {
	const timeout = 500 * time.Millisecond
	// Generous slack for the race detector and a loaded machine.
	const slack = 1500 * time.Millisecond
	ts, nc, s := newServerStore(t, Config{Timeout: timeout})
	rev := mustSave(t, s, "cursor", testRecord(1, "w"), 0)
	ts.Stop()
	waitFor(t, "the client to notice the shutdown", 10*time.Second, func() bool { return !nc.IsConnected() })

	type call struct {
		name string
		call func(ctx context.Context) error
	}
	callsOn := func(s *Store, rev checkpoint.Revision) []call {
		return []call{
			{"load", func(ctx context.Context) error { _, _, err := s.Load(ctx, "cursor"); return err }},
			{"load-absent", func(ctx context.Context) error { _, _, err := s.Load(ctx, "absent"); return err }},
			{"update", func(ctx context.Context) error { _, err := s.Save(ctx, "cursor", testRecord(2, "w"), rev); return err }},
			{"create", func(ctx context.Context) error { _, err := s.Save(ctx, "new", testRecord(1, "w"), 0); return err }},
			{"list", func(ctx context.Context) error { _, err := s.List(ctx); return err }},
		}
	}
	check := func(t *testing.T, name string, err error, elapsed, limit time.Duration) {
		t.Helper()
		if !errors.Is(err, checkpoint.ErrIO) {
			t.Errorf("%s: %v, want ErrCheckpointIO", name, err)
		}
		for _, other := range []error{checkpoint.ErrConflict, checkpoint.ErrCorrupt, checkpoint.ErrNotFound} {
			if errors.Is(err, other) {
				t.Errorf("%s: %v also matches %v", name, err, other)
			}
		}
		if elapsed > limit+slack {
			t.Errorf("%s took %v, want about %v", name, elapsed, limit)
		}
		t.Logf("%s: %v after %v", name, err, elapsed.Round(time.Millisecond))
	}
	t.Run("config-timeout", func(t *testing.T) {
		for _, c := range callsOn(s, rev) {
			start := time.Now()
			err := c.call(context.Background())
			check(t, c.name, err, time.Since(start), timeout)
		}
	})
	t.Run("caller-deadline", func(t *testing.T) {
		for _, c := range callsOn(s, rev) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			start := time.Now()
			err := c.call(ctx)
			cancel()
			check(t, c.name, err, time.Since(start), 100*time.Millisecond)
		}
	})
	t.Run("open", func(t *testing.T) {
		_, js := natstest.ConnectURL(t, ts.URL(), nats.RetryOnFailedConnect(true))
		start := time.Now()
		_, err := Open(context.Background(), js, Config{Journal: "j", Timeout: timeout})
		elapsed := time.Since(start)
		if err == nil || errors.Is(err, ErrBucketUnusable) {
			t.Errorf("Open with the server down: %v", err)
		}
		if elapsed > timeout+slack {
			t.Errorf("Open took %v, want about %v", elapsed, timeout)
		}
	})
	t.Run("closed-connection", func(t *testing.T) {
		// A server of its own: the other subtests' failed saves wait in
		// the main client's reconnect buffer (see
		// TestSaveTimedOutWhileDisconnected).
		ts2, nc2, s2 := newServerStore(t, Config{Timeout: timeout})
		rev2 := mustSave(t, s2, "cursor", testRecord(1, "w"), 0)
		nc2.Close()
		for _, c := range callsOn(s2, rev2) {
			start := time.Now()
			err := c.call(context.Background())
			check(t, c.name, err, time.Since(start), 0)
		}
		// Nothing the failed calls did reached the bucket.
		_, js3 := natstest.ConnectURL(t, ts2.URL())
		s3 := openStore(t, js3, Config{})
		rec, got := mustLoad(t, s3, "cursor")
		if got != rev2 || rec.Position != 1 {
			t.Errorf("after the failed calls: position %d at %d, want 1 at %d", rec.Position, got, rev2)
		}
		if _, _, err := s3.Load(testCtx(t), "new"); !errors.Is(err, checkpoint.ErrNotFound) {
			t.Errorf("load of the failed create: %v, want not found", err)
		}
	})
}

// TestSaveTimedOutWhileDisconnected shows what a save that fails while the
// client is disconnected leaves behind once the server is back.
//
// With nats.go's default reconnect buffer the save's publish waits in the
// buffer; the save returns ErrIO at its deadline, but the
// publish is still sent on reconnect and applied if its revision is still
// current. The I/O error is thus ambiguous (as any timeout is), and
// compare-and-swap keeps it safe: a stale writer can never overwrite a
// newer record. Without a reconnect buffer the save fails at once and
// nothing is replayed.
func TestSaveTimedOutWhileDisconnected(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []nats.Option
	}{
		{"default-reconnect-buffer", nil},
		{"no-reconnect-buffer", []nats.Option{nats.ReconnectBufSize(-1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startTestServer(t)
			nc, js := natstest.ConnectURL(t, ts.URL(), tc.opts...)
			s := openStore(t, js, Config{Timeout: 300 * time.Millisecond})
			rev1 := mustSave(t, s, "cursor", testRecord(1, "w"), 0)

			ts.Stop()
			waitFor(t, "the client to notice the shutdown", 10*time.Second, func() bool { return !nc.IsConnected() })
			_, err := s.Save(context.Background(), "cursor", testRecord(2, "w"), rev1)
			wantIs(t, err, "save while disconnected", checkpoint.ErrIO)
			ts.Restart()
			waitBucket(t, nc, s)
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}

			rec, rev := mustLoad(t, s, "cursor")
			switch {
			case rec.Position == 1 && rev == rev1:
				t.Logf("the failed save was not applied: position 1 at revision %d", rev)
				// The revision is unused: an update from it works.
				mustSave(t, s, "cursor", testRecord(3, "w"), rev1)
			case rec.Position == 2 && rev > rev1:
				// Save refuses to publish while disconnected, so nothing can
				// sit in the reconnect buffer and land later.
				t.Errorf("a save that failed while disconnected was applied after the reconnect (revision %d)", rev)
			default:
				t.Fatalf("stored position %d at revision %d: neither the old record nor the failed save", rec.Position, rev)
			}
		})
	}
}

// ---- worker plumbing shared with restart_test.go ---------------------------

// openJournal opens a local journal that closes when the test ends (after
// the workers, whose cleanups are registered later).
func openJournal(t testing.TB) *journal.Store {
	t.Helper()
	j, err := journal.Open(t.TempDir(), journal.Config{})
	if err != nil {
		t.Fatalf("open journal: %v", err)
	}
	t.Cleanup(func() { _ = j.Close() })
	return j
}

// appender appends to a journal in the background until stopped: events
// on "order:<n>" (matching engine.RegionEntity("order")) and on
// "invoice:1" (not matching), one to three per append. It records the
// sequences of the matching events.
type appender struct {
	mu       sync.Mutex
	matching []uint64
	stop     chan struct{}
	done     chan struct{}
	err      error
	once     sync.Once

	gate   sync.Mutex // held around each append
	paused bool       // guarded by gate
}

func startAppender(t testing.TB, j *journal.Store, pace time.Duration) *appender {
	t.Helper()
	a := &appender{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		tick := time.NewTicker(pace)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-a.stop:
				return
			case <-tick.C:
			}
			a.gate.Lock()
			if a.paused {
				a.gate.Unlock()
				continue
			}
			n := 1 + i%3
			events := make([]engine.Event, n)
			for k := range events {
				entity := fmt.Sprintf("order:%d", (i+k)%5)
				if (i+k)%4 == 3 {
					entity = "invoice:1"
				}
				events[k] = engine.Event{Coordinate: engine.MustCoordinate(entity, "shop"), Kind: engine.KindData, Payload: []byte(entity)}
			}
			rs, err := j.AppendBatch(context.Background(), events)
			if err != nil {
				a.err = err
				a.gate.Unlock()
				return
			}
			a.mu.Lock()
			for k, r := range rs {
				if events[k].Coordinate.Entity() != "invoice:1" {
					a.matching = append(a.matching, r.Seq)
				}
			}
			a.mu.Unlock()
			a.gate.Unlock()
		}
	}()
	t.Cleanup(func() { _ = a.Stop() })
	return a
}

// Pause returns once no append is in flight, and none starts until Resume.
func (a *appender) Pause() {
	a.gate.Lock()
	a.paused = true
	a.gate.Unlock()
}

// Resume lets the appender go on after Pause.
func (a *appender) Resume() {
	a.gate.Lock()
	a.paused = false
	a.gate.Unlock()
}

// Stop stops the appender, waits for it, and returns its error.
func (a *appender) Stop() error {
	a.once.Do(func() { close(a.stop) })
	<-a.done
	return a.err
}

// Matching returns the sequences of the matching events appended so far.
func (a *appender) Matching() []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.matching)
}

// deliveryLog records the batches a handler was given.
type deliveryLog struct {
	mu   sync.Mutex
	seqs [][]uint64 // one slice per batch
}

func (l *deliveryLog) handler(action delivery.Action) delivery.Handler {
	return func(_ context.Context, batch []engine.Entry, _ *delivery.Delivery) delivery.Action {
		seqs := make([]uint64, len(batch))
		for i, e := range batch {
			seqs[i] = e.Seq
		}
		l.mu.Lock()
		l.seqs = append(l.seqs, seqs)
		l.mu.Unlock()
		return action
	}
}

func (l *deliveryLog) batches() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seqs)
}

// all returns every delivered sequence, in delivery order.
func (l *deliveryLog) all() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []uint64
	for _, b := range l.seqs {
		out = append(out, b...)
	}
	return out
}

// saveRecorder records the successful saves of the stores it wraps and
// fails the test when, in revision order, a stored position goes back.
type saveRecorder struct {
	t     testing.TB
	mu    sync.Mutex
	saves []recordedSave
}

type recordedSave struct {
	rev      checkpoint.Revision
	expected checkpoint.Revision
	pos      uint64
	owner    string
}

func newSaveRecorder(t testing.TB) *saveRecorder { return &saveRecorder{t: t} }

func (r *saveRecorder) wrap(s checkpoint.Store) checkpoint.Store {
	return recordingStore{Store: s, r: r}
}

func (r *saveRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.saves)
}

// sorted returns the saves by revision, checking that positions never
// decrease along it.
func (r *saveRecorder) sorted() []recordedSave {
	r.t.Helper()
	r.mu.Lock()
	saves := slices.Clone(r.saves)
	r.mu.Unlock()
	slices.SortFunc(saves, func(a, b recordedSave) int { return cmp.Compare(a.rev, b.rev) })
	for i := 1; i < len(saves); i++ {
		if saves[i].pos < saves[i-1].pos {
			r.t.Errorf("stored position went back: %d (revision %d, %s) after %d (revision %d, %s)",
				saves[i].pos, saves[i].rev, saves[i].owner, saves[i-1].pos, saves[i-1].rev, saves[i-1].owner)
		}
	}
	return saves
}

type recordingStore struct {
	checkpoint.Store
	r *saveRecorder
}

func (s recordingStore) Save(ctx context.Context, id string, rec checkpoint.Record, expected checkpoint.Revision) (checkpoint.Revision, error) {
	rev, err := s.Store.Save(ctx, id, rec, expected)
	if err == nil {
		s.r.mu.Lock()
		s.r.saves = append(s.r.saves, recordedSave{rev: rev, expected: expected, pos: rec.Position, owner: rec.Owner})
		s.r.mu.Unlock()
	}
	return rev, err
}

// TestPSN05_ParkConformance runs the parked-set store cases against the
// KV parked store.
func TestPSN05_ParkConformance(t *testing.T) {
	checkpointtest.RunParkConformance(t, func(t testing.TB) checkpointtest.ParkTarget {
		ts := startTestServer(t)
		_, js := natstest.ConnectURL(t, ts.URL())
		s := openStore(t, js, Config{Journal: "conformance", Timeout: 5 * time.Second})
		ps, err := s.OpenParked(testCtx(t), "")
		if err != nil {
			t.Fatalf("OpenParked: %v", err)
		}
		return checkpointtest.ParkTarget{
			Store: ps,
			PlantRaw: func(t testing.TB, id, entity string, data []byte) {
				t.Helper()
				if _, err := ps.kv.Put(testCtx(t), ps.key(id, entity), data); err != nil {
					t.Fatalf("plant: %v", err)
				}
			},
		}
	})
}
