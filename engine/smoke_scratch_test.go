package engine

import (
	"context"
	"testing"
)

func TestScratchSmoke(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := MustCoordinate("a:b", "s")
	for i := 0; i < 5; i++ {
		r, err := s.Append(ctx, Event{Coordinate: c, Kind: KindData, Payload: []byte("hello")})
		if err != nil {
			t.Fatal(err)
		}
		t.Log(r.Seq)
	}
	rs, err := s.AppendBatch(ctx, []Event{{Coordinate: c, Kind: KindData, Payload: []byte("x")}, {Coordinate: c, Kind: KindData, Payload: []byte("y")}})
	t.Log(rs, err)
	res, err := s.Poll(ctx, RegionEntity("a"), 0, false, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range res.Entries {
		t.Logf("%d %s %d %q", e.Seq, e.Coordinate, e.Clock, e.Payload)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Config{})
	if err != nil {
		t.Fatal(err)
	}
	res, err = s.Poll(ctx, RegionAll(), 0, false, 100)
	for _, e := range res.Entries {
		t.Logf("%d %s %d %q", e.Seq, e.Coordinate, e.Clock, e.Payload)
	}
	t.Log(s.Stats())
	s.Close()
}
