package kvckpt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/internal/natstest"
)

// ---- call deadlines: the caller's context against Config.Timeout -----------

// deadlineKV is the store's bucket, recording the deadline of the context
// each call hands to it.
type deadlineKV struct {
	jetstream.KeyValue
	mu        sync.Mutex
	deadlines []deadlineSeen
}

// deadlineSeen is the deadline of one call's context; ok is false when it
// had none.
type deadlineSeen struct {
	at time.Time
	ok bool
}

func (d *deadlineKV) note(ctx context.Context) {
	at, ok := ctx.Deadline()
	d.mu.Lock()
	d.deadlines = append(d.deadlines, deadlineSeen{at, ok})
	d.mu.Unlock()
}

// take returns the deadlines seen since the last take.
func (d *deadlineKV) take() []deadlineSeen {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.deadlines
	d.deadlines = nil
	return out
}

func (d *deadlineKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	d.note(ctx)
	return d.KeyValue.Get(ctx, key)
}

func (d *deadlineKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	d.note(ctx)
	return d.KeyValue.Create(ctx, key, value, opts...)
}

func (d *deadlineKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	d.note(ctx)
	return d.KeyValue.Update(ctx, key, value, revision)
}

func (d *deadlineKV) ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error) {
	d.note(ctx)
	return d.KeyValue.ListKeysFiltered(ctx, filters...)
}

// deadlineJS is a JetStream context recording the deadline Open binds the
// bucket with.
type deadlineJS struct {
	jetstream.JetStream
	seen *deadlineKV
}

func (j deadlineJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	j.seen.note(ctx)
	return j.JetStream.KeyValue(ctx, bucket)
}

// TestCallDeadline pins how each call bounds its KV request: by
// Config.Timeout from the call's start, or by the caller's deadline when
// that is sooner (the caller's deadline is then the request's, exactly);
// a caller's later deadline never extends Config.Timeout; a nil context is
// context.Background() with Config.Timeout (no panic). The deadlines are
// read from the contexts the bucket receives, so nothing depends on the
// speed of the machine.
func TestCallDeadline(t *testing.T) {
	// Config.Timeout is far from every caller deadline below, so the two
	// cannot be confused.
	const cfgTimeout = time.Hour
	_, js := natstest.ConnectURL(t, startTestServer(t).URL())
	s := openStore(t, js, Config{Timeout: cfgTimeout})
	kv := &deadlineKV{KeyValue: s.kv}
	s.kv = kv
	rev := mustSave(t, s, "cursor", testRecord(1, "w"), 0)
	kv.take()

	// The calls, each making exactly one request of the bucket that
	// carries the call's deadline (List also reads each key: those
	// requests share the deadline).
	type call struct {
		name string
		run  func(ctx context.Context) error
	}
	var pos uint64 = 1
	created := 0
	calls := []call{
		{"load", func(ctx context.Context) error { _, _, err := s.Load(ctx, "cursor"); return err }},
		{"load-absent", func(ctx context.Context) error {
			_, _, err := s.Load(ctx, "absent")
			if errors.Is(err, checkpoint.ErrNotFound) {
				return nil
			}
			return err
		}},
		{"update", func(ctx context.Context) error {
			pos++
			r, err := s.Save(ctx, "cursor", testRecord(pos, "w"), rev)
			if err == nil {
				rev = r
			}
			return err
		}},
		{"create", func(ctx context.Context) error {
			created++
			_, err := s.Save(ctx, fmt.Sprintf("new-%d", created), testRecord(1, "w"), 0)
			return err
		}},
		{"list", func(ctx context.Context) error { _, err := s.List(ctx); return err }},
	}

	// A caller deadline that lies well ahead, so that no call runs into it.
	const callerShort = 10 * time.Minute
	const callerLong = 3 * time.Hour
	cases := []struct {
		name string
		ctx  func(t *testing.T) context.Context // nil: a nil context
		// want is the deadline the request must carry, given the times
		// just before and after the call: exactly the caller's
		// (callerWins), else Config.Timeout after the call's start.
		callerWins bool
	}{
		{"caller-deadline-sooner", func(t *testing.T) context.Context {
			ctx, cancel := context.WithTimeout(context.Background(), callerShort)
			t.Cleanup(cancel)
			return ctx
		}, true},
		{"caller-deadline-later", func(t *testing.T) context.Context {
			ctx, cancel := context.WithTimeout(context.Background(), callerLong)
			t.Cleanup(cancel)
			return ctx
		}, false},
		{"no-caller-deadline", func(t *testing.T) context.Context { return context.Background() }, false},
		{"nil-context", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, cl := range calls {
				var ctx context.Context // nil unless the case makes one
				if c.ctx != nil {
					ctx = c.ctx(t)
				}
				before := time.Now()
				err := cl.run(ctx)
				after := time.Now()
				if err != nil {
					t.Fatalf("%s: %v", cl.name, err)
				}
				seen := kv.take()
				if len(seen) == 0 {
					t.Fatalf("%s made no request of the bucket", cl.name)
				}
				for _, d := range seen {
					if !d.ok {
						t.Fatalf("%s: a request without a deadline", cl.name)
					}
					if c.callerWins {
						want, _ := ctx.Deadline()
						if !d.at.Equal(want) {
							t.Fatalf("%s: request deadline %v, want the caller's %v", cl.name, d.at, want)
						}
						continue
					}
					lo, hi := before.Add(cfgTimeout), after.Add(cfgTimeout)
					if d.at.Before(lo) || d.at.After(hi) {
						t.Fatalf("%s: request deadline %v after the call's start, want Config.Timeout %v",
							cl.name, d.at.Sub(before), cfgTimeout)
					}
					if ctx != nil {
						if caller, ok := ctx.Deadline(); ok && !d.at.Before(caller) {
							t.Fatalf("%s: request deadline %v is not before the caller's %v", cl.name, d.at, caller)
						}
					}
				}
			}
		})
	}

	t.Run("open", func(t *testing.T) {
		seen := &deadlineKV{}
		djs := deadlineJS{JetStream: js, seen: seen}
		ctx, cancel := context.WithTimeout(context.Background(), callerShort)
		defer cancel()
		if _, err := Open(ctx, djs, Config{Journal: "j", Timeout: cfgTimeout}); err != nil {
			t.Fatal(err)
		}
		want, _ := ctx.Deadline()
		before := time.Now()
		var nilCtx context.Context
		if _, err := Open(nilCtx, djs, Config{Journal: "j", Timeout: cfgTimeout}); err != nil {
			t.Fatalf("Open with a nil context: %v", err)
		}
		after := time.Now()
		got := seen.take()
		if len(got) != 2 || !got[0].ok || !got[0].at.Equal(want) {
			t.Fatalf("Open with a caller deadline: bucket bound with %+v, want the caller's %v", got, want)
		}
		if !got[1].ok || got[1].at.Before(before.Add(cfgTimeout)) || got[1].at.After(after.Add(cfgTimeout)) {
			t.Fatalf("Open with a nil context: bucket bound with %+v, want Config.Timeout", got[1])
		}
	})
}

// TestCallDeadlineDefaultTimeout: a Config without a Timeout bounds every
// request by DefaultTimeout.
func TestCallDeadlineDefaultTimeout(t *testing.T) {
	_, js := natstest.ConnectURL(t, startTestServer(t).URL())
	s := openStore(t, js, Config{})
	kv := &deadlineKV{KeyValue: s.kv}
	s.kv = kv
	before := time.Now()
	if _, err := s.Save(context.Background(), "cursor", testRecord(1, "w"), 0); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	got := kv.take()
	if len(got) != 1 || !got[0].ok || got[0].at.Before(before.Add(DefaultTimeout)) || got[0].at.After(after.Add(DefaultTimeout)) {
		t.Fatalf("save deadline %+v, want %v after the call's start", got, DefaultTimeout)
	}
}

// TestNilContext: Load, Save and List take a nil context as
// context.Background() bounded by Config.Timeout: they work against a live
// server, and fail with ErrCheckpointIO (never a panic, never a hang) when
// the server is gone.
func TestNilContext(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ts, nc, s := newServerStore(t, Config{Timeout: timeout})
	var nilCtx context.Context

	rev, err := s.Save(nilCtx, "cursor", testRecord(1, "w"), 0)
	if err != nil {
		t.Fatalf("create with a nil context: %v", err)
	}
	if rev, err = s.Save(nilCtx, "cursor", testRecord(2, "w"), rev); err != nil {
		t.Fatalf("update with a nil context: %v", err)
	}
	rec, got, err := s.Load(nilCtx, "cursor")
	if err != nil || got != rev || rec.Position != 2 {
		t.Fatalf("load with a nil context: position %d at %d, %v; want 2 at %d", rec.Position, got, err, rev)
	}
	if _, _, err := s.Load(nilCtx, "absent"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("load of an absent id with a nil context: %v, want ErrNotFound", err)
	}
	if l, err := s.List(nilCtx); err != nil || len(l) != 1 || l[0].ID != "cursor" {
		t.Fatalf("list with a nil context: %+v, %v", l, err)
	}
	// A conflict is still a conflict.
	if _, err := s.Save(nilCtx, "cursor", testRecord(3, "w"), rev-1); !errors.Is(err, checkpoint.ErrConflict) {
		t.Fatalf("stale update with a nil context: %v, want ErrConflict", err)
	}

	ts.Stop()
	waitFor(t, "the client to notice the shutdown", 10*time.Second, func() bool { return !nc.IsConnected() })
	for _, c := range []struct {
		name string
		call func() error
	}{
		{"load", func() error { _, _, err := s.Load(nilCtx, "cursor"); return err }},
		{"update", func() error { _, err := s.Save(nilCtx, "cursor", testRecord(3, "w"), rev); return err }},
		{"list", func() error { _, err := s.List(nilCtx); return err }},
	} {
		if err := c.call(); !errors.Is(err, checkpoint.ErrIO) || errors.Is(err, checkpoint.ErrConflict) {
			t.Errorf("%s with a nil context, server down: %v, want ErrCheckpointIO", c.name, err)
		}
	}
	// Nothing the failed calls did reached the bucket.
	ts.Restart()
	_, js2 := natstest.ConnectURL(t, ts.URL(), nats.ReconnectBufSize(-1))
	s2 := openStore(t, js2, Config{})
	if rec, got := mustLoad(t, s2, "cursor"); rec.Position != 2 || got != rev {
		t.Fatalf("after the failed calls: position %d at %d, want 2 at %d", rec.Position, got, rev)
	}
}
