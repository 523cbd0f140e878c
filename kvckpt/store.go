package kvckpt

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults applied to zero Config fields.
const (
	DefaultBucket  = "batfleet_checkpoints"
	DefaultHistory = 8
	DefaultTimeout = 5 * time.Second
)

// Config selects and shapes the bucket. Zero values mean the defaults.
type Config struct {
	// Journal is the journal name the keys belong to (required;
	// [A-Za-z0-9_-]{1,64}).
	Journal string
	// Bucket is the KV bucket (default "batfleet_checkpoints").
	Bucket string
	// Replicas for a bucket this call creates (default 1; 3 in a cluster).
	Replicas int
	// History kept per key for a bucket this call creates (default 8,
	// 8..64); an existing bucket must keep at least 8.
	History int
	// Timeout bounds each call, or the context's deadline when sooner
	// (default 5 s).
	Timeout time.Duration
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, rule string) { errs = append(errs, fmt.Errorf("%w: %s %s", ErrInvalidConfig, field, rule)) }
	if err := engine.ValidateJournalName(c.Journal); err != nil {
		bad("Journal", "must be 1 to 64 characters of [A-Za-z0-9_-]")
	}
	if c.Bucket != "" && !regexp.MustCompile(`^[A-Za-z0-9_-]+$`).MatchString(c.Bucket) {
		bad("Bucket", "must match [A-Za-z0-9_-]+")
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		bad("Replicas", "must be between 0 (default 1) and 5")
	}
	if c.History != 0 && (c.History < DefaultHistory || c.History > 64) {
		bad("History", "must be between 8 and 64")
	}
	if c.Timeout < 0 {
		bad("Timeout", "must be >= 0 (0 means 5s)")
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.History == 0 {
		c.History = DefaultHistory
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// Store is an checkpoint.Store on a JetStream KV bucket. It is safe
// for concurrent use.
type Store struct {
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	cfg     Config
	journal string
}

var _ checkpoint.Store = (*Store)(nil)

// Open creates the bucket, or binds an existing one after checking that
// its settings can hold checkpoints safely (file storage, no TTL, at
// least 8 revisions of history): ErrBucketUnusable otherwise.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if ctx == nil {
		ctx = context.Background()
	}
	// A cluster that is starting, or electing the bucket stream's leader,
	// answers "not now" for a few seconds: ride that out, for up to
	// Config.Timeout (or ctx's deadline).
	deadline := time.Now().Add(cfg.Timeout)
	wait := 50 * time.Millisecond
	for {
		s, err := open(ctx, js, cfg, deadline)
		// A bucket another process has just created can be missing for a
		// moment on the node that answers (its stream's assignment has not
		// reached it yet): "exists" on create, then "not found" on bind or
		// status. Within the deadline that is a slow start too.
		young := errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound)
		if err == nil || !(Transient(err) || young) || ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			if err != nil && Transient(err) {
				err = fmt.Errorf("%w: %w", checkpoint.ErrUnavailable, err)
			}
			return s, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: %w", checkpoint.ErrUnavailable, err)
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}

func open(ctx context.Context, js jetstream.JetStream, cfg Config, deadline time.Time) (*Store, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      cfg.Bucket,
			Description: "batfleet durable checkpoints",
			History:     uint8(cfg.History),
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket) // another process created it first
		}
		if err != nil {
			return nil, fmt.Errorf("kvckpt: create bucket %q: %w", cfg.Bucket, err)
		}
	case err != nil:
		return nil, fmt.Errorf("kvckpt: bind bucket %q: %w", cfg.Bucket, err)
	}
	if err := checkBucket(ctx, kv); err != nil {
		return nil, err
	}
	return &Store{js: js, kv: kv, cfg: cfg, journal: cfg.Journal}, nil
}

func checkBucket(ctx context.Context, kv jetstream.KeyValue) error {
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("kvckpt: bucket %q status: %w", kv.Bucket(), err)
	}
	var problems []string
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
		if bs.StreamInfo().Config.Storage != jetstream.FileStorage {
			problems = append(problems, "memory storage (checkpoints would not survive a server restart)")
		}
	}
	if st.TTL() > 0 {
		problems = append(problems, fmt.Sprintf("a TTL of %s (checkpoints would expire and workers rewind)", st.TTL()))
	}
	if st.History() < DefaultHistory {
		problems = append(problems, fmt.Sprintf("history %d (at least %d revisions are kept as an audit trail)", st.History(), DefaultHistory))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %q has %s", ErrBucketUnusable, kv.Bucket(), strings.Join(problems, "; "))
	}
	return nil
}

// withTimeout bounds a call by d, or by ctx's deadline when that is sooner.
// A nil ctx is context.Background().
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if ctx == nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, d)
}

// Key returns the KV key of checkpoint id: "<journal>.<encoded id>".
func (s *Store) Key(id string) string { return s.journal + "." + encodeID(id) }

// Location names the bucket and key of id.
func (s *Store) Location(id string) string { return "kv:" + s.kv.Bucket() + "/" + s.Key(id) }

// Bucket returns the bucket name.
func (s *Store) Bucket() string { return s.kv.Bucket() }

// Load returns the record of id and its KV revision. A missing, deleted or
// purged key is checkpoint.ErrNotFound; a value that does not decode
// is checkpoint.ErrCorrupt (fail closed: never a rewind); anything
// else is checkpoint.ErrIO.
func (s *Store) Load(ctx context.Context, id string) (checkpoint.Record, checkpoint.Revision, error) {
	if err := checkpoint.ValidateID(id); err != nil {
		return checkpoint.Record{}, 0, err
	}
	ctx, cancel := withTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	e, err := s.kv.Get(ctx, s.Key(id))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return checkpoint.Record{}, 0, checkpoint.ErrNotFound
	case err != nil:
		return checkpoint.Record{}, 0, ioError(s.Location(id), err)
	}
	rec, err := s.decodeValue(id, e.Value())
	if err != nil {
		return checkpoint.Record{}, 0, err
	}
	return rec, checkpoint.Revision(e.Revision()), nil
}

// decodeValue decodes the value stored under id's key; a value that does
// not decode is a *checkpoint.CorruptError (ErrCorrupt).
func (s *Store) decodeValue(id string, value []byte) (checkpoint.Record, error) {
	rec, err := checkpoint.Decode(value)
	if err != nil {
		return checkpoint.Record{}, &checkpoint.CorruptError{ID: id, Location: s.Location(id), Reason: err.Error()}
	}
	return rec, nil
}

// Save stores rec under id: a create when expected is 0, else an update
// against expected. A lost compare-and-swap is checkpoint.ErrConflict
// (wrapping the KV error); other failures are checkpoint.ErrIO.
func (s *Store) Save(ctx context.Context, id string, rec checkpoint.Record, expected checkpoint.Revision) (checkpoint.Revision, error) {
	if err := checkpoint.ValidateID(id); err != nil {
		return 0, err
	}
	ctx, cancel := withTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.awaitConnected(ctx); err != nil {
		return 0, ioError(s.Location(id), err)
	}
	value := checkpoint.Encode(rec)
	var rev uint64
	var err error
	if expected == 0 {
		rev, err = s.kv.Create(ctx, s.Key(id), value)
	} else {
		rev, err = s.kv.Update(ctx, s.Key(id), value, uint64(expected))
	}
	switch {
	case err == nil:
		return checkpoint.Revision(rev), nil
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return 0, fmt.Errorf("%w: %s (expected revision %d): %w", checkpoint.ErrConflict, s.Location(id), expected, err)
	default:
		return 0, ioError(s.Location(id), err)
	}
}

// awaitConnected waits until the client is connected, or ctx ends. Saves
// are sent only while connected, never handed to nats.go's reconnect
// buffer, where one could fail at its deadline and still be applied after
// the reconnect: an I/O error from a save that was never sent leaves the
// stored record intact, and a short outage is ridden out.
func (s *Store) awaitConnected(ctx context.Context) error {
	nc := s.js.Conn()
	if nc == nil || nc.IsConnected() {
		return nil
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !nc.IsConnected() {
		if nc.IsClosed() {
			return nats.ErrConnectionClosed
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not connected to NATS: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Listed is one checkpoint of a journal.
type Listed struct {
	ID       string
	Record   checkpoint.Record
	Revision checkpoint.Revision
	Created  time.Time // when this revision was written
	Err      error     // set when the value does not decode (the other fields but ID are zero)
}

// List returns every checkpoint of the store's journal, in key order.
func (s *Store) List(ctx context.Context) ([]Listed, error) {
	ctx, cancel := withTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	lister, err := s.kv.ListKeysFiltered(ctx, s.journal+".>")
	if err != nil {
		return nil, fmt.Errorf("%w: list %s: %w", checkpoint.ErrIO, s.kv.Bucket(), err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	// The lister closes Keys and stops its watcher itself, once every key
	// is listed or when ctx ends (lister.Stop would then only report the
	// stopped subscription). A list cut short by ctx is incomplete.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: list %s: %w", checkpoint.ErrIO, s.kv.Bucket(), err)
	}
	var out []Listed
	for _, k := range keys {
		id, err := decodeID(strings.TrimPrefix(k, s.journal+"."))
		if err != nil {
			continue // not ours: a key some other tool wrote
		}
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // deleted since it was listed
		}
		if err != nil {
			return nil, ioError(s.Location(id), err)
		}
		rec, derr := s.decodeValue(id, e.Value())
		if derr != nil {
			out = append(out, Listed{ID: id, Err: derr})
			continue
		}
		out = append(out, Listed{ID: id, Record: rec, Revision: checkpoint.Revision(e.Revision()), Created: e.Created()})
	}
	return out, nil
}

// Watch signals changes of id's record on the returned channel, which
// holds at most one pending signal (a reader that falls behind sees one
// signal for many changes, and then reads the record). It is a plain
// subscription to the key's subject, so it costs the server nothing
// beyond routing, and it signals a write as soon as it is published: a
// reader must read the record to know what landed. Nothing is signalled
// for the record's state before the call. The subscription ends, and the
// channel closes, when ctx ends.
func (s *Store) Watch(ctx context.Context, id string) (<-chan struct{}, error) {
	if err := checkpoint.ValidateID(id); err != nil {
		return nil, err
	}
	nc := s.js.Conn()
	if nc == nil {
		return nil, fmt.Errorf("%w: %s: no connection", checkpoint.ErrIO, s.Location(id))
	}
	out := make(chan struct{}, 1)
	var mu sync.Mutex // orders callbacks before the close
	closed := false
	sub, err := nc.Subscribe("$KV."+s.kv.Bucket()+"."+s.Key(id), func(*nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		select {
		case out <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return nil, ioError(s.Location(id), err)
	}
	go func() {
		<-ctx.Done()
		_ = sub.Unsubscribe()
		mu.Lock()
		closed = true
		close(out)
		mu.Unlock()
	}()
	return out, nil
}
