package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/journal"
	"github.com/batfleet/batfleet/fleet"
)

// The checker: after the fleet has drained and stopped, it reads the
// journal (journal.Open on the writer's directory), every worker's and
// member's delivery log (--out), every producer's receipt log and the
// whole history of every checkpoint key, and counts:
//
//   - lost: a payload id acknowledged (its receipt fsynced by the
//     producer) that is not in the journal at the acknowledged seq;
//   - duplicated: a payload id at two seqs of the journal (appends carry
//     idempotency keys derived from the payload id, so even a batch
//     resent after a lost reply, or by the producer's next incarnation,
//     must not duplicate);
//   - delivery misses: an event of a checkpoint's region (a partition's,
//     for the group) at or below its final position that no delivery
//     log holds, or a delivered line that differs from the journal;
//   - order violations: within one process's log, an entity's seq not
//     above its previous one, unless the process claimed the entity's
//     partition again in between (a group member); a seq at or below the
//     position the process started from (for a plain checkpoint: what was
//     committed before the process started; for a member: its claim);
//     a member handling a partition it never claimed;
//   - checkpoint regressions: a key's position going back, or the key
//     deleted (the run makes no operator resets);
//   - commits by a non-owner: a partition checkpoint written under an
//     epoch older than the current one, or by another owner than the one
//     that claimed the epoch, or after the owner released it.

// violations collects one count and its first examples.
type violations struct {
	n     int
	first []string
}

func (v *violations) add(format string, args ...any) {
	v.n++
	if len(v.first) < 10 {
		v.first = append(v.first, fmt.Sprintf(format, args...))
	}
}

// summary is a run's verdict.
type summary struct {
	seed       uint64
	injected   map[string]int
	diskMode   string
	acked      int
	events     int // user events in the journal
	delivered  int // delivery log lines
	revisions  int
	diskErrors int // writer log lines reporting a full disk (ENOSPC or EFBIG)
	writerRuns int // writer processes started
	lost       violations
	duplicated violations
	misses     violations
	order      violations
	regress    violations
	nonOwner   violations
	undrained  map[string][]string // checkpoint id → why it is not at the end
	unexpected []string
	notes      []string
}

// failed reports whether any count is nonzero.
func (s *summary) failed() bool {
	return s.lost.n+s.duplicated.n+s.misses.n+s.order.n+s.regress.n+s.nonOwner.n+len(s.undrained) > 0
}

func (s *summary) faults() int {
	n := 0
	for _, c := range s.injected {
		n += c
	}
	return n
}

// line is the one-line summary.
func (s *summary) line() string {
	var kinds []string
	for _, k := range faultKinds {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k.kind, s.injected[k.kind]))
	}
	return fmt.Sprintf("chaos seed=%d faults=%d [%s] disk=%s acknowledged=%d lost=%d duplicated=%d delivery-misses=%d order-violations=%d checkpoint-regressions=%d non-owner-commits=%d undrained=%d",
		s.seed, s.faults(), strings.Join(kinds, " "), s.diskMode, s.acked, s.lost.n, s.duplicated.n, s.misses.n, s.order.n, s.regress.n, s.nonOwner.n, len(s.undrained))
}

// details are the examples behind nonzero counts, and what else to know.
func (s *summary) details() []string {
	var out []string
	for _, v := range []struct {
		what string
		v    *violations
	}{{"lost", &s.lost}, {"duplicated", &s.duplicated}, {"delivery miss", &s.misses}, {"order violation", &s.order},
		{"checkpoint regression", &s.regress}, {"commit by a non-owner", &s.nonOwner}} {
		for _, m := range v.v.first {
			out = append(out, v.what+": "+m)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(s.undrained)) {
		out = append(out, "undrained: "+id+": "+strings.Join(s.undrained[id], "; "))
	}
	for _, u := range s.unexpected {
		out = append(out, "process exit not caused by a fault (informational): "+u)
	}
	for _, n := range s.notes {
		out = append(out, "note: "+n)
	}
	out = append(out, fmt.Sprintf("journal: %d user events; %d delivery lines; %d checkpoint revisions; %d writer processes, whose logs report a full disk %d times",
		s.events, s.delivered, s.revisions, s.writerRuns, s.diskErrors))
	return out
}

// jEntry is one journal entry, as the checker needs it.
type jEntry struct {
	entity, scope, payload string
	kind                   engine.Kind
	clock                  uint32
}

// readJournal opens the writer's journal offline and reads every entry.
func readJournal(dir string) (map[uint64]jEntry, []uint64, error) {
	s, err := journal.Open(dir, journal.Config{MaxEntryBytes: fleet.MaxEntryBytes(1 << 20)})
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	entries := map[uint64]jEntry{}
	var seqs []uint64
	pos, started := uint64(0), false
	for {
		res, err := s.Poll(context.Background(), engine.RegionAll(), pos, started, 4096)
		if err != nil {
			return nil, nil, err
		}
		if len(res.Entries) == 0 {
			return entries, seqs, nil
		}
		for _, e := range res.Entries {
			entries[e.Seq] = jEntry{entity: e.Coordinate.Entity(), scope: e.Coordinate.Scope(), payload: string(e.Payload), kind: e.Kind, clock: e.Clock}
			seqs = append(seqs, e.Seq)
		}
		pos, started = res.Entries[len(res.Entries)-1].Seq, true
	}
}

// delivery is one line of a --out log.
type delivery struct {
	Seq     uint64  `json:"seq"`
	Entity  string  `json:"entity"`
	Scope   string  `json:"scope"`
	Payload *string `json:"payload"`
}

// readDeliveries parses a --out file; a last line cut by a kill is
// dropped (it was never synced, so never committed).
func readDeliveries(path string) ([]delivery, []string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var out []delivery
	var bad []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var d delivery
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			bad = append(bad, sc.Text())
			continue
		}
		out = append(out, d)
	}
	if len(bad) == 1 && len(out) > 0 {
		bad = nil // the cut last line
	}
	return out, bad, sc.Err()
}

// ack is one acknowledged event.
type ack struct {
	seq    uint64
	entity string
}

// readAcks parses a producer's log: acknowledged payload id → receipt.
func readAcks(path string, acked map[string]ack, dup *violations) error {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "a" {
			continue // cut by a kill before its sync: not acknowledged
		}
		seq, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			continue
		}
		if prev, ok := acked[f[1]]; ok && prev.seq != seq {
			dup.add("payload %s acknowledged at seq %d and at seq %d", f[1], prev.seq, seq)
		}
		acked[f[1]] = ack{seq, f[3]}
	}
	return nil
}

func groupCheckpoint(part int) string { return fmt.Sprintf("group:%s:%d", groupName, part) }

func partitionOf(entity string) int {
	b := engine.Bucket(entity)
	for i := range groupParts {
		if (engine.Partition{Index: uint16(i), Count: groupParts}).Holds(b) {
			return i
		}
	}
	return -1
}

// check runs the checker over a stopped fleet.
func (r *run) check(hist []ckptRev) (*summary, error) {
	sum := &summary{seed: r.cfg.seed, revisions: len(hist), undrained: map[string][]string{}}
	for _, inc := range r.writer.incarnations() {
		sum.writerRuns++
		data, _ := os.ReadFile(filepath.Join(r.writer.dir, fmt.Sprintf("%s.%d.log", r.writer.name, inc.n)))
		sum.diskErrors += strings.Count(string(data), "no space left on device") + strings.Count(string(data), "file too large")
	}
	entries, seqs, err := readJournal(filepath.Join(r.disk.dir, "journals", journalName))
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}

	// Appends: lost and duplicated.
	where := map[string][]uint64{} // payload id → seqs
	for _, s := range seqs {
		e := entries[s]
		if e.kind == engine.KindData {
			sum.events++
			where[e.payload] = append(where[e.payload], s)
		}
	}
	for p, ss := range where {
		if len(ss) > 1 {
			sum.duplicated.add("payload %s at seqs %v", p, ss)
		}
	}
	acked := map[string]ack{}
	for _, s := range r.prods {
		if err := readAcks(filepath.Join(r.cfg.dir, "out", s.name+".log"), acked, &sum.duplicated); err != nil {
			return nil, err
		}
	}
	sum.acked = len(acked)
	for p, a := range acked {
		if e, ok := entries[a.seq]; !ok || e.payload != p || e.entity != a.entity {
			sum.lost.add("payload %s of %s acknowledged at seq %d: the journal has %q of %q there (payload found at %v)", p, a.entity, a.seq, e.payload, e.entity, where[p])
		}
	}

	// The history of every key: regressions, non-owner commits; each
	// key's revisions, in order.
	byID := map[string][]ckptRev{}
	for _, h := range hist {
		byID[h.id] = append(byID[h.id], h)
	}
	type claim struct {
		owner   string
		pos     uint64
		started bool
	}
	claims := map[int][]claim{} // partition → claims, in order
	for id, revs := range byID {
		part := -1
		if rest, ok := strings.CutPrefix(id, "group:"+groupName+":"); ok {
			part, _ = strconv.Atoi(rest)
		}
		var prev *ckptRev
		released := false
		for i := range revs {
			h := &revs[i]
			if h.deleted || h.err != nil {
				sum.regress.add("%s revision %d: deleted or undecodable (%v)", id, h.rev, h.err)
				continue
			}
			if prev != nil && ord(h.rec.Position, h.rec.Started) < ord(prev.rec.Position, prev.rec.Started) {
				sum.regress.add("%s revision %d: position %d/%v after %d/%v (owner %q after %q)", id, h.rev,
					h.rec.Position, h.rec.Started, prev.rec.Position, prev.rec.Started, h.rec.Owner, prev.rec.Owner)
			}
			if part >= 0 {
				switch {
				case prev == nil || h.rec.Epoch > prev.rec.Epoch:
					claims[part] = append(claims[part], claim{h.rec.Owner, h.rec.Position, h.rec.Started})
					released = false
					if prev != nil && ord(h.rec.Position, h.rec.Started) != ord(prev.rec.Position, prev.rec.Started) {
						sum.nonOwner.add("%s revision %d: claim of epoch %d by %q moved the position from %d/%v to %d/%v", id, h.rev,
							h.rec.Epoch, h.rec.Owner, prev.rec.Position, prev.rec.Started, h.rec.Position, h.rec.Started)
					}
				case h.rec.Epoch < prev.rec.Epoch:
					sum.nonOwner.add("%s revision %d: %q writes epoch %d after epoch %d", id, h.rev, h.rec.Owner, h.rec.Epoch, prev.rec.Epoch)
				case released:
					sum.nonOwner.add("%s revision %d: %q writes epoch %d after its release", id, h.rev, h.rec.Owner, h.rec.Epoch)
				case h.rec.Owner == "":
					released = true
				case h.rec.Owner != claims[part][len(claims[part])-1].owner:
					sum.nonOwner.add("%s revision %d: %q commits under epoch %d, claimed by %q", id, h.rev, h.rec.Owner, h.rec.Epoch, claims[part][len(claims[part])-1].owner)
				}
			}
			prev = h
		}
	}
	final := func(id string) (uint64, bool, bool) {
		revs := byID[id]
		for i := len(revs) - 1; i >= 0; i-- {
			if !revs[i].deleted && revs[i].err == nil {
				return revs[i].rec.Position, revs[i].rec.Started, true
			}
		}
		return 0, false, false
	}

	// Plain workers.
	for i, w := range plainWorkers {
		slot := r.workers[i]
		got := map[uint64]bool{}
		for _, inc := range slot.incarnations() {
			ds, bad, err := readDeliveries(inc.out)
			if err != nil {
				return nil, err
			}
			for _, b := range bad {
				sum.misses.add("%s: unparsable delivery line %q", inc.id, b)
			}
			// The position committed before the process started: it
			// loads that or a later one.
			from, fromStarted := uint64(0), false
			for _, h := range byID[w.checkpoint] {
				if !h.deleted && h.err == nil && h.at.Before(inc.started) {
					from, fromStarted = h.rec.Position, h.rec.Started
				}
			}
			last := map[string]uint64{}
			for _, d := range ds {
				sum.delivered++
				got[d.Seq] = true
				r.checkLine(sum, inc.id, d, entries, w.region)
				if ord(d.Seq, true) <= ord(from, fromStarted) {
					sum.order.add("%s: seq %d delivered, at or below position %d committed before the process started", inc.id, d.Seq, from)
				}
				if p, ok := last[d.Entity]; ok && d.Seq <= p {
					sum.order.add("%s: entity %s: seq %d after %d", inc.id, d.Entity, d.Seq, p)
				}
				last[d.Entity] = d.Seq
			}
		}
		pos, started, ok := final(w.checkpoint)
		r.missesBelow(sum, w.checkpoint, pos, started, ok, seqs, entries, got, func(e jEntry) bool {
			return w.region.Matches(e.entity, e.scope, e.kind, e.clock)
		})
	}

	// The group.
	got := make([]map[uint64]bool, groupParts)
	for p := range got {
		got[p] = map[uint64]bool{}
	}
	for _, slot := range r.members {
		for _, inc := range slot.incarnations() {
			ds, bad, err := readDeliveries(inc.out)
			if err != nil {
				return nil, err
			}
			for _, b := range bad {
				sum.misses.add("%s: unparsable delivery line %q", inc.id, b)
			}
			// This process's claims of each partition.
			mine := map[int][]claim{}
			for p, cs := range claims {
				for _, c := range cs {
					if c.owner == inc.id {
						mine[p] = append(mine[p], c)
					}
				}
			}
			last := map[string]uint64{}
			for _, d := range ds {
				sum.delivered++
				p := partitionOf(d.Entity)
				if p < 0 {
					sum.order.add("%s: seq %d: entity %q in no partition", inc.id, d.Seq, d.Entity)
					continue
				}
				got[p][d.Seq] = true
				r.checkLine(sum, inc.id, d, entries, groupRegion)
				cs := mine[p]
				if len(cs) == 0 {
					sum.order.add("%s: seq %d of partition %d, which it never claimed", inc.id, d.Seq, p)
					continue
				}
				if ord(d.Seq, true) <= ord(cs[0].pos, cs[0].started) {
					sum.order.add("%s: seq %d of partition %d, at or below its first claim's position %d", inc.id, d.Seq, p, cs[0].pos)
				}
				if prev, ok := last[d.Entity]; ok && d.Seq <= prev {
					// Allowed only as the redelivery after a later claim
					// of the partition by this process.
					allowed := false
					for _, c := range cs[1:] {
						if ord(d.Seq, true) > ord(c.pos, c.started) && c.pos < prev {
							allowed = true
						}
					}
					if !allowed {
						sum.order.add("%s: entity %s (partition %d): seq %d after %d, claims %v", inc.id, d.Entity, p, d.Seq, prev, cs)
					}
				}
				last[d.Entity] = d.Seq
			}
		}
	}
	for p := range groupParts {
		id := groupCheckpoint(p)
		pos, started, ok := final(id)
		r.missesBelow(sum, id, pos, started, ok, seqs, entries, got[p], func(e jEntry) bool {
			return groupRegion.Matches(e.entity, e.scope, e.kind, e.clock) && partitionOf(e.entity) == p
		})
	}
	return sum, nil
}

// checkLine compares a delivered line with the journal.
func (r *run) checkLine(sum *summary, who string, d delivery, entries map[uint64]jEntry, region engine.Region) {
	e, ok := entries[d.Seq]
	switch {
	case !ok:
		sum.misses.add("%s: delivered seq %d, which the journal does not hold", who, d.Seq)
	case e.entity != d.Entity || e.scope != d.Scope || d.Payload == nil || *d.Payload != e.payload:
		sum.misses.add("%s: delivered seq %d as %s@%s, the journal has %s@%s %q", who, d.Seq, d.Entity, d.Scope, e.entity, e.scope, e.payload)
	case !region.Matches(e.entity, e.scope, e.kind, e.clock):
		sum.misses.add("%s: delivered seq %d (%s@%s), outside its region", who, d.Seq, e.entity, e.scope)
	}
}

// missesBelow counts the region's events at or below a checkpoint's final
// position that no log holds, and whether the checkpoint reached the end.
func (r *run) missesBelow(sum *summary, id string, pos uint64, started, ok bool, seqs []uint64, entries map[uint64]jEntry, got map[uint64]bool, match func(jEntry) bool) {
	var lastMatch uint64
	for _, s := range seqs {
		e := entries[s]
		if !match(e) {
			continue
		}
		lastMatch = s
		if ok && ord(s, true) <= ord(pos, started) && !got[s] {
			sum.misses.add("%s: seq %d (%s@%s %s) below the final position %d, in no delivery log", id, s, e.entity, e.scope, e.payload, pos)
		}
	}
	if lastMatch > 0 && (!ok || ord(lastMatch, true) > ord(pos, started)) {
		sum.undrained[id] = append(sum.undrained[id], fmt.Sprintf("final position %d/%v (record %v) below its region's last event %d", pos, started, ok, lastMatch))
	}
}
