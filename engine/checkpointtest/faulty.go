package checkpointtest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/batfleet/batfleet/engine/checkpoint"
)

// Faulty wraps a checkpoint.Store for tests of its users (workers,
// cursors): it plants records and injects faults, whatever the store
// underneath. It is safe for concurrent use.
type Faulty struct {
	checkpoint.Store

	mu      sync.Mutex
	corrupt map[string][]byte      // planted bytes that do not decode
	broken  map[string]bool        // ids whose Load and Save fail with ErrIO
	fails   map[string][]injection // queued outcomes of the next saves of id
	lfails  map[string][]error     // queued outcomes of the next loads of id
}

// injection is one queued save outcome: err is returned; when landed, the
// save is applied to the wrapped store first (a reply lost after the write).
type injection struct {
	err    error
	landed bool
}

// NewFaulty wraps s.
func NewFaulty(s checkpoint.Store) *Faulty {
	return &Faulty{Store: s, corrupt: map[string][]byte{}, broken: map[string]bool{}, fails: map[string][]injection{}, lfails: map[string][]error{}}
}

// Plant makes data the current record bytes of id. Bytes that decode are
// saved through the wrapped store as a new revision (over whatever is
// stored); bytes that do not are reported by Load as a *CorruptError at
// the wrapped store's location until the next successful save.
func (f *Faulty) Plant(ctx context.Context, id string, data []byte) error {
	rec, err := checkpoint.Decode(data)
	if err != nil {
		f.mu.Lock()
		f.corrupt[id] = append([]byte(nil), data...)
		f.mu.Unlock()
		return nil
	}
	_, rev, err := f.Store.Load(ctx, id)
	if err != nil && !errors.Is(err, checkpoint.ErrNotFound) && !errors.Is(err, checkpoint.ErrCorrupt) {
		return err
	}
	if _, err := f.Store.Save(ctx, id, rec, rev); err != nil {
		return fmt.Errorf("plant %q: %w", id, err)
	}
	f.mu.Lock()
	delete(f.corrupt, id)
	f.mu.Unlock()
	return nil
}

// Break makes Load and Save of id fail with checkpoint.ErrIO (the stored
// record intact) until repair is called.
func (f *Faulty) Break(id string) (repair func()) {
	f.mu.Lock()
	f.broken[id] = true
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		delete(f.broken, id)
		f.mu.Unlock()
	}
}

// FailSaves queues err as the outcome of the next n saves of id. When
// landed is true each of those saves is first applied to the wrapped
// store, so the write lands and only its reply is lost (an ambiguous
// outcome); otherwise nothing is written.
func (f *Faulty) FailSaves(id string, n int, err error, landed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.fails[id] = append(f.fails[id], injection{err: err, landed: landed})
	}
}

// ClearSaves drops the save failures still queued for id.
func (f *Faulty) ClearSaves(id string) {
	f.mu.Lock()
	delete(f.fails, id)
	f.mu.Unlock()
}

// FailLoads queues err as the outcome of the next n loads of id.
func (f *Faulty) FailLoads(id string, n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.lfails[id] = append(f.lfails[id], err)
	}
}

// Pending returns how many injected save and load failures of id are
// still queued.
func (f *Faulty) Pending(id string) (saves, loads int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.fails[id]), len(f.lfails[id])
}

// Load returns the wrapped store's record of id, or a planted or injected
// failure.
func (f *Faulty) Load(ctx context.Context, id string) (checkpoint.Record, checkpoint.Revision, error) {
	f.mu.Lock()
	broken := f.broken[id]
	bad, corrupt := f.corrupt[id]
	var lerr error
	if q := f.lfails[id]; len(q) > 0 {
		lerr, f.lfails[id] = q[0], q[1:]
	}
	f.mu.Unlock()
	switch {
	case lerr != nil:
		return checkpoint.Record{}, 0, lerr
	case broken:
		return checkpoint.Record{}, 0, fmt.Errorf("%w: %s: injected fault", checkpoint.ErrIO, f.Location(id))
	case corrupt:
		_, err := checkpoint.Decode(bad)
		return checkpoint.Record{}, 0, &checkpoint.CorruptError{ID: id, Location: f.Location(id), Reason: err.Error()}
	}
	return f.Store.Load(ctx, id)
}

// Save saves through the wrapped store unless a failure is injected.
func (f *Faulty) Save(ctx context.Context, id string, rec checkpoint.Record, expected checkpoint.Revision) (checkpoint.Revision, error) {
	f.mu.Lock()
	broken := f.broken[id]
	var inj *injection
	if q := f.fails[id]; len(q) > 0 {
		inj = &q[0]
		f.fails[id] = q[1:]
	}
	f.mu.Unlock()
	switch {
	case broken:
		return 0, fmt.Errorf("%w: %s: injected fault", checkpoint.ErrIO, f.Location(id))
	case inj != nil && inj.landed:
		if _, err := f.Store.Save(ctx, id, rec, expected); err != nil {
			return 0, err
		}
		return 0, inj.err
	case inj != nil:
		return 0, inj.err
	}
	rev, err := f.Store.Save(ctx, id, rec, expected)
	if err == nil {
		f.mu.Lock()
		delete(f.corrupt, id)
		f.mu.Unlock()
	}
	return rev, err
}
