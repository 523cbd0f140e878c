package checkpointtest

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/batfleet/batfleet/engine/checkpoint"
)

// ParkTarget is one parked-set store under test.
type ParkTarget struct {
	// Store is the store under test, fresh and empty.
	Store checkpoint.ParkStore
	// PlantRaw stores data as the record bytes of (id, entity). Required.
	PlantRaw func(t testing.TB, id, entity string, data []byte)
}

// RunParkConformance runs the parked-set cases (PSN-05's storage rules)
// against stores made by newStore: compare-and-swap on create, update and
// delete; sets kept apart per checkpoint id; entities of any spelling;
// a record that does not decode fails closed naming where it is.
func RunParkConformance(t *testing.T, newStore func(t testing.TB) ParkTarget) {
	entities := []string{"order-17", "a.b", "a b", "名前", "x:y@z", "*", ">", strings.Repeat("é", 300)}
	t.Run("CreateUpdateDeleteCAS", func(t *testing.T) {
		tg := newStore(t)
		s := tg.Store
		ctx := ckptCtx(t)
		const id = "park-cas"
		p := checkpoint.Parked{Entity: "order-1", FirstSeq: 7, LastSeq: 7, Count: 1, Attempts: 3, Error: "boom", ParkedMs: 1}
		rev, err := s.PutParked(ctx, id, p, 0)
		if err != nil || rev == 0 {
			t.Fatalf("create: rev %d, %v", rev, err)
		}
		if _, err := s.PutParked(ctx, id, p, 0); !errors.Is(err, checkpoint.ErrConflict) {
			t.Fatalf("second create: %v, want ErrConflict", err)
		}
		q := p
		q.LastSeq, q.Count = 9, 2
		rev2, err := s.PutParked(ctx, id, q, rev)
		if err != nil || rev2 <= rev {
			t.Fatalf("update: rev %d (was %d), %v", rev2, rev, err)
		}
		if _, err := s.PutParked(ctx, id, q, rev); !errors.Is(err, checkpoint.ErrConflict) {
			t.Fatalf("stale update: %v, want ErrConflict", err)
		}
		got := parkList(t, s, id)
		if len(got) != 1 || !reflect.DeepEqual(got[0].Parked, q) || got[0].Revision != rev2 {
			t.Fatalf("list = %+v, want %+v at revision %d", got, q, rev2)
		}
		if err := s.DeleteParked(ctx, id, "order-1", rev); !errors.Is(err, checkpoint.ErrConflict) {
			t.Fatalf("stale delete: %v, want ErrConflict", err)
		}
		if err := s.DeleteParked(ctx, id, "order-1", rev2); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if err := s.DeleteParked(ctx, id, "order-1", rev2); !errors.Is(err, checkpoint.ErrNotFound) {
			t.Fatalf("delete of a deleted record: %v, want ErrNotFound", err)
		}
		if got := parkList(t, s, id); len(got) != 0 {
			t.Fatalf("list after delete = %+v, want empty", got)
		}
		if _, err := s.PutParked(ctx, id, p, 0); err != nil {
			t.Fatalf("park again after delete: %v", err)
		}
	})
	t.Run("SetsPerCheckpointAndEntitySpellings", func(t *testing.T) {
		tg := newStore(t)
		s := tg.Store
		ctx := ckptCtx(t)
		for i, e := range entities {
			for _, id := range []string{"park-a", "park-a.b", "group:g:3"} {
				p := checkpoint.Parked{Entity: e, FirstSeq: uint64(i + 1), LastSeq: uint64(i + 1), Count: 1, Attempts: 1, Error: id}
				if _, err := s.PutParked(ctx, id, p, 0); err != nil {
					t.Fatalf("park %q in %q: %v", e, id, err)
				}
			}
		}
		for _, id := range []string{"park-a", "park-a.b", "group:g:3"} {
			got := parkList(t, s, id)
			if len(got) != len(entities) {
				t.Fatalf("%q holds %d records, want %d: %+v", id, len(got), len(entities), got)
			}
			for i := range got {
				if i > 0 && got[i-1].Entity >= got[i].Entity {
					t.Fatalf("%q: list not sorted by entity: %q before %q", id, got[i-1].Entity, got[i].Entity)
				}
				if got[i].Error != id {
					t.Fatalf("%q lists a record of %q", id, got[i].Error)
				}
			}
		}
		if got := parkList(t, s, "park-b"); len(got) != 0 {
			t.Fatalf("an empty set lists %+v", got)
		}
	})
	t.Run("CorruptFailsClosed", func(t *testing.T) {
		tg := newStore(t)
		const id = "park-corrupt"
		tg.PlantRaw(t, id, "order-9", []byte{0xc1, 0x00})
		_, err := tg.Store.ListParked(ckptCtx(t), id)
		var ce *checkpoint.CorruptError
		if !errors.As(err, &ce) || !strings.Contains(ce.Location, tg.Store.ParkedLocation(id, "order-9")[:len(tg.Store.ParkedLocation(id, "order-9"))-len("order-9")]) {
			t.Fatalf("list of a corrupt record: %v, want a *CorruptError naming its location", err)
		}
	})
	t.Run("InvalidID", func(t *testing.T) {
		tg := newStore(t)
		if _, err := tg.Store.ListParked(ckptCtx(t), ""); !errors.Is(err, checkpoint.ErrInvalidID) {
			t.Fatalf("list of id \"\": %v, want ErrInvalidID", err)
		}
	})
}

func parkList(t testing.TB, s checkpoint.ParkStore, id string) []checkpoint.ParkedRevision {
	t.Helper()
	got, err := s.ListParked(context.Background(), id)
	if err != nil {
		t.Fatalf("list %q: %v", id, err)
	}
	return got
}
