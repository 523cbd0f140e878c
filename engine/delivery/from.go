package delivery

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/batfleet/batfleet/engine"
)

// StartFrom is where a worker starts when it has no checkpoint record (a
// new durable worker, or any in-memory one): the beginning of the journal
// (the zero value), its end, a seq or a time. A stored record always wins:
// StartFrom never moves an existing checkpoint.
type StartFrom struct {
	kind fromKind
	seq  uint64
	at   time.Time
}

type fromKind uint8

const (
	fromBeginning fromKind = iota
	fromEnd
	fromSeq
	fromTime
)

// FromBeginning starts with the journal's first matching event (the
// default).
func FromBeginning() StartFrom { return StartFrom{} }

// FromEnd starts after everything visible when the worker starts: only
// events appended later are delivered.
func FromEnd() StartFrom { return StartFrom{kind: fromEnd} }

// FromSeq starts with the first matching event whose seq is >= seq.
func FromSeq(seq uint64) StartFrom { return StartFrom{kind: fromSeq, seq: seq} }

// FromTime starts with the first event appended at or after t, by the
// writer's clock (events carry the writer's wall clock; the worker finds
// the first one at or after t by bisecting the journal's order, which is
// exact as long as the writer's clock never went back).
func FromTime(t time.Time) StartFrom { return StartFrom{kind: fromTime, at: t} }

// ParseStartFrom parses the command-line form: "beginning", "end",
// "seq:N" or "time:RFC3339".
func ParseStartFrom(s string) (StartFrom, error) {
	switch {
	case s == "" || s == "beginning":
		return FromBeginning(), nil
	case s == "end":
		return FromEnd(), nil
	case strings.HasPrefix(s, "seq:"):
		n, err := strconv.ParseUint(strings.TrimPrefix(s, "seq:"), 10, 64)
		if err != nil {
			return StartFrom{}, &engine.ConfigError{Field: "from", Rule: fmt.Sprintf("%q: seq:N needs a non-negative integer", s)}
		}
		return FromSeq(n), nil
	case strings.HasPrefix(s, "time:"):
		t, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(s, "time:"))
		if err != nil {
			return StartFrom{}, &engine.ConfigError{Field: "from", Rule: fmt.Sprintf("%q: time:T needs an RFC 3339 time, e.g. time:2026-12-04T10:00:00Z", s)}
		}
		return FromTime(t), nil
	}
	return StartFrom{}, &engine.ConfigError{Field: "from", Rule: fmt.Sprintf("%q: want beginning, end, seq:N or time:RFC3339", s)}
}

// String is the command-line form.
func (f StartFrom) String() string {
	switch f.kind {
	case fromEnd:
		return "end"
	case fromSeq:
		return fmt.Sprintf("seq:%d", f.seq)
	case fromTime:
		return "time:" + f.at.UTC().Format(time.RFC3339Nano)
	}
	return "beginning"
}

// Resolve returns the cursor state f stands for against src, whose
// visible bound is visible: the position to resume after and whether it
// is started (false: from the beginning). A consumer group resolves it
// when it first claims a partition that has no record.
func (f StartFrom) Resolve(ctx context.Context, src Source, visible uint64) (pos uint64, started bool, err error) {
	p, err := f.position(ctx, src, visible)
	return p.pos, p.started, err
}

// position is the cursor state StartFrom stands for, given the source's
// visible bound (seqs below it are visible).
func (f StartFrom) position(ctx context.Context, src Source, visible uint64) (position, error) {
	switch f.kind {
	case fromEnd:
		if visible == 0 {
			return position{}, nil
		}
		return position{visible - 1, true}, nil
	case fromSeq:
		if f.seq > visible {
			return position{}, &engine.ConfigError{Field: "from", Rule: fmt.Sprintf("seq:%d is beyond the journal's visible bound %d", f.seq, visible)}
		}
		if f.seq == 0 {
			return position{}, nil
		}
		return position{f.seq - 1, true}, nil
	case fromTime:
		return f.bisect(ctx, src, visible)
	}
	return position{}, nil
}

// bisect finds the first visible entry appended at or after f.at: the
// smallest seq s whose next entry (of any region) has WallMs >= f.at.
func (f StartFrom) bisect(ctx context.Context, src Source, visible uint64) (position, error) {
	want := f.at.UnixMilli()
	// first returns the first visible entry with seq >= s.
	first := func(s uint64) (engine.Entry, bool, error) {
		var res engine.PollResult
		var err error
		if s == 0 {
			res, err = src.Poll(ctx, engine.RegionAll(), 0, false, 1)
		} else {
			res, err = src.Poll(ctx, engine.RegionAll(), s-1, true, 1)
		}
		if err != nil || len(res.Entries) == 0 {
			return engine.Entry{}, false, err
		}
		return res.Entries[0], true, nil
	}
	lo, hi := uint64(0), visible // invariant: the answer is in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		e, ok, err := first(mid)
		if err != nil {
			return position{}, err
		}
		if !ok || e.WallMs >= want {
			hi = mid
		} else {
			lo = e.Seq + 1
		}
	}
	if lo == 0 {
		return position{}, nil
	}
	return position{lo - 1, true}, nil
}
