package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/batfleet/batfleet/internal/msgpackutil"
	"github.com/vmihailenco/msgpack/v5"
)

// Parked is the parked set's record of one entity of one checkpoint: an
// entry of the entity failed its handler more often than the retry policy
// allows, and that entry and every later entry of the entity in the
// checkpoint's region are parked: the worker commits past them without
// calling its handler, while all other entities go on.
//
// The parked entries are not copied: they are exactly the region's entries
// of Entity with FirstSeq <= seq <= LastSeq (an entity stays parked until
// it is replayed or dropped, so every one of its entries in that interval
// was parked), read back from the journal on replay.
type Parked struct {
	Entity   string `msgpack:"entity"`
	FirstSeq uint64 `msgpack:"first_seq"` // the entry that exhausted its attempts
	LastSeq  uint64 `msgpack:"last_seq"`  // the newest parked entry of the entity
	Count    uint64 `msgpack:"count"`     // parked entries
	Attempts int    `msgpack:"attempts"`  // handler attempts of the first entry
	Error    string `msgpack:"error"`     // the last failure's text
	ParkedMs uint64 `msgpack:"parked_ms"` // unix ms when the entity was parked
	// Replay asks the worker holding the checkpoint to hand the parked
	// entries back to its handler, in seq order, and then unpark the
	// entity (set by `worker parked replay`).
	Replay bool `msgpack:"replay,omitempty"`
}

// ParkedRevision is a parked record with its compare-and-swap revision.
type ParkedRevision struct {
	Parked
	Revision Revision
}

// ParkStore persists the parked sets of checkpoints, one record per
// (checkpoint id, entity), with compare-and-swap. Implementations are
// safe for concurrent use.
type ParkStore interface {
	// ListParked returns the parked set of checkpoint id, by entity. A
	// record that does not decode is ErrCorrupt naming its location.
	ListParked(ctx context.Context, id string) ([]ParkedRevision, error)
	// PutParked stores p if its stored revision equals expected (0: only if
	// the entity is not parked) and returns the new revision. Errors:
	// ErrConflict (nothing was written), ErrIO (outcome unknown).
	PutParked(ctx context.Context, id string, p Parked, expected Revision) (Revision, error)
	// DeleteParked unparks entity if its record is still at expected.
	// Errors: ErrNotFound, ErrConflict, ErrIO.
	DeleteParked(ctx context.Context, id, entity string, expected Revision) error
	// ParkedLocation names where the record of (id, entity) is stored.
	ParkedLocation(id, entity string) string
}

// EncodeParked encodes p as a MessagePack map.
func EncodeParked(p Parked) []byte {
	b, err := msgpack.Marshal(&p)
	if err != nil { // a struct of strings and integers always encodes
		panic(fmt.Sprintf("checkpoint: encoding a parked record: %v", err))
	}
	return b
}

// DecodeParked decodes and checks a parked record: a non-empty entity,
// FirstSeq <= LastSeq, Count >= 1, no trailing bytes.
func DecodeParked(data []byte) (Parked, error) {
	var p Parked
	if len(data) == 0 {
		return p, errors.New("empty record")
	}
	// CheckBounded first: msgpack/v5 skips unknown fields by recursion
	// without a limit.
	if err := msgpackutil.CheckBounded(data); err != nil {
		return p, err
	}
	r := bytes.NewReader(data)
	if err := msgpack.NewDecoder(r).Decode(&p); err != nil {
		return p, err
	}
	switch {
	case r.Len() != 0:
		return p, fmt.Errorf("%d trailing bytes", r.Len())
	case p.Entity == "":
		return p, errors.New("entity is empty")
	case p.FirstSeq > p.LastSeq:
		return p, fmt.Errorf("first_seq %d is after last_seq %d", p.FirstSeq, p.LastSeq)
	case p.Count == 0:
		return p, errors.New("count is 0")
	}
	return p, nil
}

// ListParked returns the parked set of id, sorted by entity.
func (m *MemoryStore) ListParked(ctx context.Context, id string) ([]ParkedRevision, error) {
	if err := m.parkedCheck(ctx, id); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ParkedRevision
	for entity, r := range m.parked[id] {
		p, err := DecodeParked(r.data)
		if err != nil {
			return nil, &CorruptError{ID: id, Location: m.ParkedLocation(id, entity), Reason: err.Error()}
		}
		out = append(out, ParkedRevision{Parked: p, Revision: r.rev})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Entity < out[j].Entity })
	return out, nil
}

// PutParked stores p under (id, p.Entity) with compare-and-swap.
func (m *MemoryStore) PutParked(ctx context.Context, id string, p Parked, expected Revision) (Revision, error) {
	if err := m.parkedCheck(ctx, id); err != nil {
		return 0, err
	}
	if p.Entity == "" {
		return 0, errors.New("checkpoint: parked record: entity is empty")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.parked[id][p.Entity]
	if err := m.parkedCAS(id, p.Entity, cur, ok, expected); err != nil {
		return 0, err
	}
	if m.parked == nil {
		m.parked = make(map[string]map[string]memRecord)
	}
	if m.parked[id] == nil {
		m.parked[id] = make(map[string]memRecord)
	}
	m.rev++
	m.parked[id][p.Entity] = memRecord{data: EncodeParked(p), rev: m.rev}
	return m.rev, nil
}

// DeleteParked removes the record of (id, entity) if it is at expected.
func (m *MemoryStore) DeleteParked(ctx context.Context, id, entity string, expected Revision) error {
	if err := m.parkedCheck(ctx, id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.parked[id][entity]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, m.ParkedLocation(id, entity))
	}
	if err := m.parkedCAS(id, entity, cur, ok, expected); err != nil {
		return err
	}
	delete(m.parked[id], entity)
	return nil
}

// ParkedLocation names the record of (id, entity).
func (m *MemoryStore) ParkedLocation(id, entity string) string {
	return fmt.Sprintf("memory:parked:%q:%q", id, entity)
}

func (m *MemoryStore) parkedCheck(ctx context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrIO, err)
	}
	m.mu.Lock()
	broken := m.broken[id]
	m.mu.Unlock()
	if broken {
		return fmt.Errorf("%w: %s: injected fault", ErrIO, m.Location(id))
	}
	return nil
}

// parkedCAS checks expected against the stored record; m.mu is held.
func (m *MemoryStore) parkedCAS(id, entity string, cur memRecord, ok bool, expected Revision) error {
	switch {
	case expected == 0 && ok:
		return fmt.Errorf("%w: %s exists (revision %d)", ErrConflict, m.ParkedLocation(id, entity), cur.rev)
	case expected != 0 && (!ok || cur.rev != expected):
		return fmt.Errorf("%w: %s is at revision %d, expected %d", ErrConflict, m.ParkedLocation(id, entity), cur.rev, expected)
	}
	return nil
}

var _ ParkStore = (*MemoryStore)(nil)
