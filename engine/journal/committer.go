package journal

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/batfleet/batfleet/engine"
)

// The committer is the single goroutine that writes the journal. It takes
// requests from s.q (reqqueue.go), groups concurrent appends, writes each group with
// one write and one fsync, then indexes, publishes (epoch +1, wake) and
// answers every request of the group: group commit.

type reqKind uint8

const (
	reqAppend reqKind = iota
	reqFenceBegin
	reqFenceCommit
	reqFenceCancel
	reqClose
	reqStop
)

type request struct {
	kind   reqKind
	events []engine.Event
	keyed  bool
	fenced bool
	system bool // lifecycle events: reserved kinds allowed, fences ignored
	size   int  // encoded bytes (appends)

	done     chan struct{} // closed when receipts/err are final
	staged   chan struct{} // fenced appends: closed once durable
	receipts []engine.Receipt
	err      error

	// committer scratch
	first    uint64
	bufStart int
	itemEnds []int // end offset in the group buffer of each event frame
	undoFrom int   // index into the group's clock undo log
	metas    []entryMeta
	waiters  []*request

	next      *request    // reqQueue link
	abandoned atomic.Bool // the caller stopped waiting (its ctx ended)

	// Storage for single-event appends: one allocation per append.
	one        [1]engine.Event
	oneMeta    [1]entryMeta
	oneEnd     [1]int
	oneReceipt [1]engine.Receipt
}

func (r *request) finish(receipts []engine.Receipt, err error) {
	r.receipts, r.err = receipts, err
	close(r.done)
}

func (r *request) rng() engine.Range {
	return engine.Range{Start: r.first, End: r.first + uint64(len(r.events))}
}

type fenceState struct {
	lo, hi  uint64
	staged  bool
	pending []*request
}

type clockUndo struct {
	entity uint32
	prev   entityClock
}

func (s *Store) run() {
	defer close(s.done)
	g := &group{}
	for {
		r := s.next(true)
		if r.kind != reqAppend {
			if s.control(r) {
				return
			}
			continue
		}
		s.startGroup(g)
		s.admit(g, r)
		s.gather(g)
		s.flush(g)
	}
}

// next returns the oldest request not yet handled, from the committer's
// own backlog or the queue; when block is false it returns nil if there is
// none.
func (s *Store) next(block bool) *request {
	for {
		if s.backlogAt < len(s.backlog) {
			r := s.backlog[s.backlogAt]
			s.backlog[s.backlogAt] = nil
			s.backlogAt++
			return r
		}
		s.backlog, s.backlogAt = s.q.takeAll(s.backlog[:0]), 0
		if len(s.backlog) > 0 {
			continue
		}
		if !block {
			return nil
		}
		s.q.wait(1, nil)
	}
}

// unread puts back the request next just returned.
func (s *Store) unread(r *request) {
	s.backlogAt--
	s.backlog[s.backlogAt] = r
}

// A group is the appends written with one write and made durable with one
// sync. Requests are admitted (checked, reserved and encoded into buf) as
// they arrive, so the encoding of a group overlaps the wait for its last
// members.
type group struct {
	buf       []byte
	undo      []clockUndo
	toWrite   []*request // admitted and encoded, in buf order
	now       int64      // wall clock of the group, Unix ms
	allocated uint64     // allocation frontier after the admitted requests
	arrived   int        // requests taken from the queue, answered or not
	events    int
}

func (s *Store) startGroup(g *group) {
	clear(g.toWrite)
	// The group begins with its group frame, filled in by flush.
	*g = group{buf: grow(s.buf[:0], groupFrameLen), undo: g.undo[:0], toWrite: g.toWrite[:0]}
	g.now = s.cfg.WallClock().UnixMilli()
	g.allocated, _ = s.gate.frontiers()
}

func (g *group) full(maxEvents int) bool {
	return g.events >= maxEvents || len(g.buf) >= DefaultMaxGroupBytes
}

// gather admits queued appends without blocking, then, when fewer have
// arrived than the appenders the previous group answered (plus those that
// were already waiting), lingers briefly for them to come back (adaptive
// group commit): it sleeps until the missing ones have all been queued or
// the linger ends. The target is set after each group, from what the group
// answered rather than from what gather collected, so one short linger
// cannot split the appenders into two alternating groups for good. A fence
// or close request ends the group and stays first in line.
func (s *Store) gather(g *group) {
	linger := s.cfg.GroupCommitLinger
	if linger == 0 {
		linger = min(s.syncAvg/4, 500*time.Microsecond)
	}
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		if s.admitQueued(g) || linger <= 0 || g.arrived >= s.lastGroup || g.full(s.cfg.MaxBatchEvents) {
			return
		}
		if t == nil {
			t = time.NewTimer(linger)
		}
		if !s.q.wait(int64(s.lastGroup-g.arrived), t) {
			s.admitQueued(g) // the linger ended: take what came and go
			return
		}
	}
}

// admitQueued admits queued appends until the group is full or the queue
// is empty. It reports true when a fence or close request ended the group
// (it stays first in line).
func (s *Store) admitQueued(g *group) bool {
	for !g.full(s.cfg.MaxBatchEvents) {
		r := s.next(false)
		if r == nil {
			return false
		}
		if r.kind != reqAppend {
			s.unread(r)
			return true
		}
		s.admit(g, r)
	}
	return false
}

// control runs a fence or close request; it reports whether the committer
// must exit.
func (s *Store) control(r *request) bool {
	if r.abandoned.Load() && r.kind != reqClose && r.kind != reqStop {
		r.finish(nil, errAbandoned) // a fence operation whose caller gave up
		return false
	}
	switch r.kind {
	case reqFenceBegin:
		switch {
		case s.failed:
			r.finish(nil, ErrWriterFailed)
		case s.fence != nil:
			r.finish(nil, ErrFenceActive)
		default:
			s.fence = &fenceState{}
			r.finish(nil, nil)
		}
	case reqFenceCommit:
		if s.fence == nil {
			r.finish(nil, ErrFenceNotActive)
			return false
		}
		r.finish(nil, s.commitFence())
	case reqFenceCancel:
		if s.fence == nil {
			r.finish(nil, ErrFenceNotActive)
			return false
		}
		r.finish(nil, s.cancelFence())
	case reqClose:
		var err error
		if s.fence != nil {
			err = s.cancelFence()
		}
		if !s.failed {
			closeEv := &request{kind: reqAppend, system: true, done: make(chan struct{}),
				events: []engine.Event{{Coordinate: engine.LifecycleCoordinate(), Kind: engine.KindCloseCompleted}}}
			s.commitOne(closeEv)
			if closeEv.err != nil && err == nil {
				err = fmt.Errorf("journal: append close event: %w", closeEv.err)
			}
		}
		if terr := s.trimActive(); terr != nil {
			// Harmless: recovery keeps a zero tail as preallocated space.
			s.log.Warn("could not trim the preallocated tail on close", "error", terr)
		}
		r.finish(nil, err)
		return true
	case reqStop:
		r.finish(nil, nil)
		return true
	}
	return false
}

// admit checks r against the writer's state (failed, fence, idempotency
// keys), interns its coordinates, reserves its sequences and encodes it
// into the group's buffer; a request that cannot be written is answered at
// once.
func (s *Store) admit(g *group, r *request) {
	g.arrived++
	g.events += len(r.events)
	switch {
	case r.abandoned.Load():
		r.finish(nil, errAbandoned)
		return
	case s.failed:
		r.finish(nil, ErrWriterFailed)
		return
	case r.fenced && s.fence == nil:
		r.finish(nil, ErrFenceNotActive)
		return
	case !r.fenced && !r.system && s.fence != nil:
		r.finish(nil, ErrFenceActive)
		return
	}
	if r.keyed && s.resolveKeys(r, g.allocated) {
		return
	}
	// Interning changes the maps readers use: it takes the index lock.
	// Encoding reads them without it (only the committer writes them).
	if len(r.events) == 1 {
		r.metas = r.oneMeta[:]
	} else {
		r.metas = make([]entryMeta, len(r.events))
	}
	s.ix.mu.Lock()
	for i := range r.events {
		r.metas[i].coord = s.ix.internCoord(r.events[i].Coordinate)
	}
	s.ix.mu.Unlock()
	r.undoFrom = len(g.undo)
	var err error
	g.buf, g.undo, err = s.encode(r, g.buf, g.undo, g.now)
	if err != nil {
		s.rollbackClocks(g.undo[r.undoFrom:])
		g.undo = g.undo[:r.undoFrom]
		s.releaseKeys(r)
		r.finish(nil, err)
		return
	}
	g.allocated = r.first + uint64(len(r.events))
	g.toWrite = append(g.toWrite, r)
}

// commitOne writes and syncs a single append on its own (the close event).
func (s *Store) commitOne(r *request) {
	g := &group{}
	s.startGroup(g)
	s.admit(g, r)
	s.flush(g)
}

// flush writes, syncs, indexes and publishes the admitted requests of g,
// then answers them.
func (s *Store) flush(g *group) {
	buf, undo, toWrite := g.buf, g.undo, g.toWrite
	s.buf = buf[:0]
	if len(toWrite) == 0 {
		return
	}

	// One write for the whole group, into preallocated space, led by the
	// group frame recovery uses to recognise a torn last write.
	last := toWrite[len(toWrite)-1]
	putGroupFrame(buf, toWrite[0].first, last.first+uint64(len(last.events)), uint64(len(buf)-groupFrameLen))
	off := s.activeSize
	s.ensureZeroed(off + int64(len(buf)))
	n, werr := s.writeAt(buf, off)
	if werr != nil {
		// Nothing of the group is acknowledged yet: fail all of it, so no
		// half-written group (with a group frame to rewrite) is ever kept.
		for _, r := range toWrite {
			item := 0
			for item < len(r.itemEnds) && r.itemEnds[item] <= n {
				item++
			}
			r.err = &BatchFailedError{ItemIndex: min(item, len(r.events)-1), Cause: werr}
		}
		s.failRequests(toWrite, undo, off)
		return
	}

	// One fsync for the whole group: visible implies durable.
	t0 := time.Now()
	serr := s.syncActive()
	s.observeSync(time.Since(t0))
	if serr != nil {
		for _, r := range toWrite {
			r.err = &BatchSyncFailedError{ItemCount: len(r.events), Cause: serr}
		}
		s.failRequests(toWrite, undo, off)
		return
	}
	s.activeSize = off + int64(len(buf))

	// Index, then publish, then answer.
	s.ix.mu.Lock()
	for _, r := range toWrite {
		s.indexRequest(r, off)
	}
	s.ix.mu.Unlock()

	var publishTo uint64
	unfenced := false
	for _, r := range toWrite {
		if r.fenced {
			s.stageFenced(r)
			continue
		}
		unfenced = true
		publishTo = r.first + uint64(len(r.events))
	}
	if unfenced {
		if err := s.gate.publish(publishTo); err != nil {
			// Only a bug can get here: the committer is the only publisher.
			s.log.Error("publish refused", "error", err)
		}
	}
	for _, r := range toWrite {
		if !r.fenced {
			s.resolve(r)
		}
	}
	if unfenced {
		s.evictKeys(publishTo)
	}
	s.maybeRotate()
	s.lastGroup = g.arrived + s.q.len() + len(s.backlog) - s.backlogAt
}

// encode assigns clocks and wall times, reserves r's sequences and appends
// its frames to buf. r.metas holds the interned coordinates. Only the
// committer writes the index, so it reads ix.coords without the lock.
func (s *Store) encode(r *request, buf []byte, undo []clockUndo, now int64) ([]byte, []clockUndo, error) {
	n := len(r.events)
	for i := range r.events {
		ev := &r.events[i]
		coord := r.metas[i].coord // interned by commitGroup
		ent := s.ix.coords[coord].entity
		for int(ent) >= len(s.clocks) {
			s.clocks = append(s.clocks, entityClock{})
		}
		ck := &s.clocks[ent]
		if ck.next > maxClock {
			s.rollbackClocks(undo[r.undoFrom:])
			return buf, undo[:r.undoFrom], fmt.Errorf("%w: entity %q, event %d", ErrEntityClockOverflow, ev.Coordinate.Entity(), i)
		}
		undo = append(undo, clockUndo{entity: ent, prev: *ck})
		wall := max(now, ck.lastWall)
		r.metas[i] = entryMeta{coord: coord, clock: uint32(ck.next), wallMs: wall, kind: ev.Kind, plen: uint32(len(ev.Payload))}
		ck.next++
		ck.lastWall = wall
	}

	r.first = s.gate.reserve(uint64(n))
	r.bufStart = len(buf)
	if n == 1 {
		r.itemEnds, r.receipts = r.oneEnd[:], r.oneReceipt[:]
	} else {
		r.itemEnds = make([]int, n)
		r.receipts = make([]engine.Receipt, n)
	}
	if n > 1 {
		buf = appendMarkerFrame(buf, frameBatchBegin, r.first, uint64(n))
	}
	for i := range r.events {
		ev := &r.events[i]
		m := &r.metas[i]
		rec := eventRecord{kind: ev.Kind, clock: m.clock, seq: r.first + uint64(i), wallMs: m.wallMs, payload: ev.Payload}
		if r.keyed {
			rec.flags |= eventFlagKeyed
			rec.id = ev.Key
			m.flags |= metaKeyed
		} else {
			rec.id = s.uuids.next(m.wallMs)
		}
		if r.fenced {
			rec.flags |= eventFlagFenced
		}
		m.id = rec.id
		var poff int
		buf, poff = appendEventFrame(buf, &rec, ev.Coordinate.Entity(), ev.Coordinate.Scope())
		m.off = uint32(poff) // relative to the group buffer until indexed
		r.itemEnds[i] = len(buf)
		r.receipts[i] = engine.Receipt{Seq: rec.seq, ID: rec.id}
	}
	if n > 1 {
		buf = appendMarkerFrame(buf, frameBatchCommit, r.first, uint64(n))
		r.itemEnds[n-1] = len(buf)
	}
	return buf, undo, nil
}

const maxClock = 0xFFFFFFFF

// maxSegmentBytes bounds a segment so that payload offsets (32-bit) cannot
// wrap: beyond it, with no new segment possible, the writer fails.
const maxSegmentBytes = 3 << 30

func (s *Store) rollbackClocks(undo []clockUndo) {
	for i := len(undo) - 1; i >= 0; i-- {
		s.clocks[undo[i].entity] = undo[i].prev
	}
}

// observeClock folds a recovered event into its entity's clock state.
func (s *Store) observeClock(entity uint32, clock uint32, wall int64) {
	for int(entity) >= len(s.clocks) {
		s.clocks = append(s.clocks, entityClock{})
	}
	ck := &s.clocks[entity]
	if uint64(clock)+1 > ck.next {
		ck.next = uint64(clock) + 1
	}
	if wall > ck.lastWall {
		ck.lastWall = wall
	}
}

// indexRequest inserts r's entries into the index. Caller holds ix.mu.
func (s *Store) indexRequest(r *request, groupOff int64) {
	for i := range r.metas {
		m := r.metas[i]
		m.seg = s.activeNum
		m.off += uint32(groupOff)
		s.ix.insert(r.first+uint64(i), m)
	}
}

// writeAt writes the group at off in the active segment.
// Written bytes are never zero-filled again: zeroEnd stays at or past
// them (a zero-fill that stopped short must not be resumed over them).
func (s *Store) writeAt(p []byte, off int64) (int, error) {
	var n int
	var err error
	if s.cfg.faults != nil && s.cfg.faults.write != nil {
		n, err = s.cfg.faults.write(s.segs[s.activeNum], p, off)
	} else {
		n, err = s.segs[s.activeNum].WriteAt(p, off)
	}
	s.zeroEnd = max(s.zeroEnd, off+int64(n))
	return n, err
}

func (s *Store) syncActive() error {
	if s.cfg.faults != nil && s.cfg.faults.sync != nil {
		if err := s.cfg.faults.sync(); err != nil {
			return err
		}
	}
	return syncData(s.segs[s.activeNum])
}

// observeSync keeps a moving average of fsync time for the linger.
func (s *Store) observeSync(d time.Duration) {
	if s.cfg.ObserveSync != nil {
		s.cfg.ObserveSync(d)
	}
	s.syncCount.Add(1)
	s.syncNanos.Add(int64(d))
	if s.syncAvg == 0 {
		s.syncAvg = d
		return
	}
	s.syncAvg = (7*s.syncAvg + d) / 8
}

// failRequests handles appends that were reserved but will never become
// visible: it cuts their bytes off the segment, restores clocks, cancels
// and persists their ranges (before any later publish can cover them),
// and answers them (and any retries waiting on them) with r.err.
func (s *Store) failRequests(failed []*request, undo []clockUndo, truncateAt int64) {
	if err := s.truncateActive(truncateAt); err != nil {
		// The next group would be written over stale bytes and could leave
		// a partial frame behind it: stop writing until a reopen recovers.
		s.log.Error("could not truncate a failed append; writer failed until reopened", "error", err)
		s.failed = true
	}
	s.rollbackClocks(undo[failed[0].undoFrom:])
	ranges := make([]engine.Range, len(failed))
	for i, r := range failed {
		ranges[i] = r.rng()
	}
	s.cancelRanges(ranges...)
	for _, r := range failed {
		s.log.Warn("append failed; range cancelled", "range", r.rng().String(), "error", r.err)
		s.releaseKeys(r)
		s.finishWithWaiters(r, nil, r.err)
	}
}

// cancelRanges records ranges as cancelled and persists the ranges file. A
// failure to persist puts the writer in the failed state.
func (s *Store) cancelRanges(rs ...engine.Range) {
	if err := s.gate.cancel(rs...); err != nil {
		s.log.Error("cancel ranges refused", "error", err)
		s.failed = true
		return
	}
	_, all := s.gate.snapshot()
	err := error(nil)
	if s.cfg.faults != nil && s.cfg.faults.persistRanges != nil {
		err = s.cfg.faults.persistRanges()
	}
	if err == nil {
		err = saveRanges(s.dir, all)
	}
	if err != nil {
		s.log.Error("could not persist cancelled ranges; writer failed until reopened", "error", err)
		s.failed = true
	}
}

// resolve answers a durable, visible append and the retries waiting on it.
func (s *Store) resolve(r *request) {
	if r.keyed {
		for i, ev := range r.events {
			s.keys[ev.Key] = r.receipts[i].Seq
			delete(s.inflight, ev.Key)
		}
	}
	s.finishWithWaiters(r, r.receipts, nil)
}

func (s *Store) finishWithWaiters(r *request, receipts []engine.Receipt, err error) {
	r.finish(receipts, err)
	for _, w := range r.waiters {
		if err != nil {
			w.finish(nil, err)
			continue
		}
		out := make([]engine.Receipt, len(w.events))
		for i, ev := range w.events {
			out[i] = engine.Receipt{Seq: s.keys[ev.Key], ID: ev.Key, Replayed: true}
		}
		w.finish(out, nil)
	}
	r.waiters = nil
}

// resolveKeys handles a keyed append whose keys are known or in flight. It
// reports whether r was answered (or parked as a waiter); otherwise it
// registers r's keys as in flight and r proceeds to be written.
func (s *Store) resolveKeys(r *request, allocated uint64) bool {
	known := 0
	var orig *request
	inflight := 0
	for _, ev := range r.events {
		if seq, ok := s.keys[ev.Key]; ok {
			if seq+s.cfg.IdempotencyWindow >= allocated {
				known++
				continue
			}
			delete(s.keys, ev.Key) // out of the retention window
		}
		if o, ok := s.inflight[ev.Key]; ok {
			if orig != nil && o != orig {
				r.finish(nil, fmt.Errorf("%w: keys belong to different in-flight appends", ErrIdempotencyConflict))
				return true
			}
			orig = o
			inflight++
		}
	}
	switch {
	case known == len(r.events):
		out := make([]engine.Receipt, len(r.events))
		for i, ev := range r.events {
			out[i] = engine.Receipt{Seq: s.keys[ev.Key], ID: ev.Key, Replayed: true}
		}
		r.finish(out, nil)
		return true
	case inflight == len(r.events):
		orig.waiters = append(orig.waiters, r)
		return true
	case known > 0 || inflight > 0:
		r.finish(nil, fmt.Errorf("%w: %d of %d keys already appended", ErrIdempotencyConflict, known+inflight, len(r.events)))
		return true
	}
	for _, ev := range r.events {
		s.inflight[ev.Key] = r
	}
	return false
}

func (s *Store) releaseKeys(r *request) {
	if !r.keyed {
		return
	}
	for _, ev := range r.events {
		if s.inflight[ev.Key] == r {
			delete(s.inflight, ev.Key)
		}
	}
}

// evictKeys forgets keys that left the retention window or exceed the key
// cap, oldest first. It walks the sequence array, so it needs no queue.
func (s *Store) evictKeys(allocated uint64) {
	if len(s.keys) == 0 {
		s.evictNext = max(s.evictNext, allocated) // nothing to forget below here
		return
	}
	for s.evictNext < allocated &&
		(s.evictNext+s.cfg.IdempotencyWindow < allocated || len(s.keys) > s.cfg.IdempotencyMaxKeys) {
		if m := s.ix.get(s.evictNext); m != nil && m.flags&metaKeyed != 0 {
			k := engine.IdempotencyKey(m.id)
			if s.keys[k] == s.evictNext {
				delete(s.keys, k)
			}
		}
		s.evictNext++
	}
}

// stageFenced records a durable fenced append in the active fence.
func (s *Store) stageFenced(r *request) {
	f := s.fence
	rg := r.rng()
	if !f.staged || rg.Start < f.lo {
		f.lo = rg.Start
	}
	if !f.staged || rg.End > f.hi {
		f.hi = rg.End
	}
	f.staged = true
	f.pending = append(f.pending, r)
	close(r.staged)
}

// commitFence records the fence commit durably, then publishes its writes.
func (s *Store) commitFence() error {
	f := s.fence
	if !f.staged {
		s.fence = nil
		return nil
	}
	off := s.activeSize
	frame := appendMarkerFrame(nil, frameFenceCommit, f.lo, f.hi)
	s.ensureZeroed(off + int64(len(frame)))
	if _, err := s.writeAt(frame, off); err != nil {
		return s.abortFence(fmt.Errorf("journal: write fence commit: %w", err))
	}
	if err := s.syncActive(); err != nil {
		return s.abortFence(fmt.Errorf("journal: sync fence commit: %w", err))
	}
	s.activeSize = off + int64(len(frame))
	s.fence = nil
	if err := s.gate.publish(f.hi); err != nil {
		s.log.Error("publish refused", "error", err)
	}
	for _, r := range f.pending {
		s.resolve(r)
	}
	s.evictKeys(f.hi)
	return nil
}

// abortFence cancels a fence whose commit could not be recorded.
func (s *Store) abortFence(cause error) error {
	if err := s.truncateActive(s.activeSize); err != nil {
		// Like a failed append: the next write could leave the partial
		// fence commit behind it. Stop writing until a reopen recovers.
		s.log.Error("could not truncate a failed fence commit; writer failed until reopened", "error", err)
		s.failed = true
	}
	_ = s.cancelFenceWith(cause)
	return cause
}

func (s *Store) cancelFence() error { return s.cancelFenceWith(ErrFenceCancelled) }

// cancelFenceWith cancels the active fence: its range is hidden, recorded
// and persisted; the epoch does not move.
func (s *Store) cancelFenceWith(cause error) error {
	f := s.fence
	s.fence = nil
	if f.staged {
		rg := engine.Range{Start: f.lo, End: f.hi}
		s.ix.mu.Lock()
		s.ix.hide(rg)
		s.ix.mu.Unlock()
		s.cancelRanges(rg)
		s.log.Info("fence cancelled", "range", rg.String())
	}
	for _, r := range f.pending {
		s.releaseKeys(r)
		s.finishWithWaiters(r, nil, cause)
	}
	if s.failed {
		return ErrWriterFailed
	}
	return nil
}

// maybeRotate starts a new segment once the active one is full. The full
// one is first cut back to its written end (sealed segments hold frames
// only); if that or creating the next fails, writing goes on in the
// current segment.
func (s *Store) maybeRotate() {
	if s.activeSize < s.cfg.SegmentBytes {
		return
	}
	next := filepath.Join(s.dir, segmentName(s.activeNum+1))
	err := s.trimActive()
	var f *os.File
	if err == nil {
		f, err = createSegment(s.dir, s.activeNum+1)
	}
	if err != nil {
		if s.activeSize >= maxSegmentBytes {
			// Payload offsets are 32-bit: stop before they could wrap.
			s.log.Error("could not start a new segment and the current one is full; writer failed until reopened",
				"error", err, "path", next)
			s.failed = true
			return
		}
		s.log.Warn("could not start a new segment; continuing in the current one", "error", err, "path", next)
		return
	}
	b, err := mapSegment(f, s.cfg.SegmentBytes+mapSlack)
	if err != nil {
		s.log.Warn("reading payloads with pread: segment not mapped", "error", err)
	}
	s.ix.mu.Lock()
	s.segs = append(s.segs, f)
	s.ix.mu.Unlock()
	s.maps.add(b)
	s.activeNum++
	s.activeSize = segmentHeaderLen
	s.zeroEnd = segmentHeaderLen
}
