package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/engine/delivery"
	"github.com/batfleet/batfleet/kvckpt"
)

// Consumer groups spread one region over any number of members, keeping
// per-entity order. The region is cut into P partitions by entity bucket
// (engine.Partition); each partition has its own checkpoint, owned by one
// member at a time:
//
//   - Membership: each member rewrites its key in the groups bucket every
//     heartbeat, listing the partitions it runs. Every member watches the
//     keys and judges liveness on its own monotonic clock: a member whose
//     key has not changed for the session timeout is dead. Wall clocks of
//     different nodes are never compared. A member that cannot heartbeat
//     stops handling before session − heartbeat has passed on its clock
//     since its last heartbeat landed (self-fencing), so it has stopped
//     before anyone may take over.
//   - Assignment: every member computes the same balanced, sticky target
//     from the same view (assign).
//   - Hand-over: an owner that must give a partition up stops its worker
//     (which finishes the batch in hand and commits), then releases the
//     partition's checkpoint (owner ""); only then does the new owner
//     claim it. A dead member's partitions are claimable once its session
//     has expired. Claiming is a compare-and-swap write of the partition's
//     checkpoint with the new owner and epoch+1, before any entry reaches
//     the new owner's handler; every later commit is a compare-and-swap on
//     the revision its owner last wrote. So a former owner (a zombie back
//     from a pause) can never commit after a takeover, and no checkpoint
//     goes back.
//   - Partitions that do not move never pause: each runs its own worker.

// GroupConfig configures a member of a consumer group. Zero values mean
// the defaults.
type GroupConfig struct {
	// Journal is the journal consumed (default "main").
	Journal string
	// Name is the group's name: 1 to 64 characters of [A-Za-z0-9_-].
	Name string
	// Region is the group's region; partitions are added per member.
	Region engine.Region
	// Partitions is P, a power of two from 1 to 1,024 (default 16). The
	// first member creates the group with its Region and P; both are
	// immutable, and a member asking for others is refused
	// (ErrGroupMismatch).
	Partitions int
	// Session is how long a member's key may stay unchanged before the
	// others take its partitions over (default 3 s); Heartbeat how often a
	// member rewrites it (default Session/3).
	Session, Heartbeat time.Duration
	// MemberID names the member (default delivery.DefaultWorkerID()). A
	// member restarted with the same id within its session gets its
	// partitions back and nothing else moves (static membership).
	MemberID string
	// Bucket and Replicas select the groups bucket (default
	// batfleet_groups, 1 replica; 3 in a cluster).
	Bucket   string
	Replicas int
	// Worker is the template of each partition's worker: BatchSize,
	// IdleTimeout, Restart, SaveTimeout, CheckpointOutage, Logger (zero
	// BatchSize or IdleTimeout take delivery's defaults, with a 30 s idle
	// timeout as fleet workers have). CheckpointID, Checkpoints,
	// WorkerID, Group and Epoch are the member's to set.
	Worker delivery.WorkerConfig
	// Logger receives the member's logs; nil means none.
	Logger hclog.Logger
}

func (c GroupConfig) withDefaults() GroupConfig {
	if c.Journal == "" {
		c.Journal = "main"
	}
	if c.Partitions == 0 {
		c.Partitions = 16
	}
	if c.Session == 0 {
		c.Session = 3 * time.Second
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = c.Session / 3
	}
	if c.MemberID == "" {
		c.MemberID = delivery.DefaultWorkerID()
	}
	if c.Bucket == "" {
		c.Bucket = DefaultGroupBucket
	}
	if c.Worker.BatchSize == 0 {
		c.Worker.BatchSize = 64
	}
	if c.Worker.IdleTimeout == 0 {
		c.Worker.IdleTimeout = DefaultIdleTimeout
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// Validate reports every problem of c at once, naming the field; zero
// values take their defaults first.
func (c GroupConfig) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(field, rule string) { errs = append(errs, &engine.ConfigError{Field: field, Rule: rule}) }
	if err := engine.ValidateJournalName(c.Journal); err != nil {
		bad("Journal", "must be 1 to 64 characters of [A-Za-z0-9_-]")
	}
	if err := engine.ValidateJournalName(c.Name); err != nil {
		bad("Name", "must be 1 to 64 characters of [A-Za-z0-9_-]")
	}
	if err := c.Region.Validate(); err != nil {
		bad("Region", err.Error())
	}
	if _, ok := c.Region.Partition(); ok {
		bad("Region", "must not name a partition (members add their own)")
	}
	if c.Partitions < 1 || c.Partitions > engine.Buckets || bits.OnesCount(uint(c.Partitions)) != 1 {
		bad("Partitions", fmt.Sprintf("must be a power of two from 1 to %d (got %d)", engine.Buckets, c.Partitions))
	}
	if c.Session <= 0 {
		bad("Session", "must be > 0")
	}
	if c.Heartbeat <= 0 || c.Heartbeat*2 > c.Session {
		bad("Heartbeat", "must be > 0 and at most half the session")
	}
	if err := checkpoint.ValidateID(c.MemberID); err != nil {
		bad("MemberID", "must be a valid checkpoint id: "+err.Error())
	}
	if err := engine.ValidateJournalName(c.Bucket); err != nil {
		bad("Bucket", "must be 1 to 64 characters of [A-Za-z0-9_-]")
	}
	return errors.Join(errs...)
}

// MemberStats are a member's counters and state.
type MemberStats struct {
	Owned          []uint16  // partitions running now
	Claims         uint64    // partitions claimed
	Releases       uint64    // partitions released to another member
	Rebalances     uint64    // changes of the target assignment seen
	RefusedCommits uint64    // commits refused because another member had claimed the partition
	Fenced         bool      // stopped handling: heartbeats are not landing
	FencedSince    time.Time // when it fenced itself; zero while not fenced
	Fences         uint64    // times it fenced itself
	Unowned        int       // partitions no live member runs, in this member's view
}

// Member is one running member of a consumer group. It owns its
// goroutines: Stop leaves the group gracefully (every partition's batch in
// hand is handled and committed, then released to the others) and Join
// waits for it.
type Member struct {
	cfg         GroupConfig
	client      *Client
	ckpts       checkpoint.Store
	kv          jetstream.KeyValue
	handler     delivery.Handler
	log         hclog.Logger
	incarnation string
	prefix      string

	baseCtx context.Context
	stopCtx context.Context
	stop    context.CancelFunc
	done    chan struct{}
	err     error
	errOnce sync.Once

	events chan func()    // results of claims and releases, run by the coordinator
	wg     sync.WaitGroup // claims, releases, checks and partition watchers
	bg     sync.WaitGroup // the heartbeat and the watch
	// crashed makes the member leave as a killed process would: no
	// release, no key deletion (tests: export_test.go).
	crashed atomic.Bool
	// frozen, while it holds an open channel, stands for a paused process
	// (tests: export_test.go): the coordinator, the heartbeat and the
	// partitions' handlers wait at their next step until it is closed.
	frozen atomic.Pointer[chan struct{}]

	mu    sync.Mutex // guards the fields below (read by Stats)
	parts map[uint16]*partWorker
	stats MemberStats
	// coordinator-only state
	view    map[string]*memberView
	retryAt map[uint16]time.Time
	// unknownSince is when a claim first found a partition owned by a
	// member whose key this member has never seen (see ownerLive).
	unknownSince map[string]time.Time
	// verifyAt throttles the checks of partitions another live member
	// announces too (see verify).
	verifyAt map[uint16]time.Time
	// announced is what the member's key lists (written by the
	// coordinator, read by the heartbeat goroutine, under mu); lastBeat
	// when the last heartbeat that landed was sent (under mu).
	announced []uint16
	lastBeat  time.Time
	// lapsed is set when a heartbeat lands session − heartbeat or more
	// after the previous one (the member was paused, or could not reach
	// KV): others may have taken its partitions over meanwhile, so it
	// fences itself before handling anything more, even if no evaluation
	// ran during the gap (under mu).
	lapsed bool
	// unseen are the member's own heartbeats that landed but that its
	// watch has not shown yet (under mu); while the oldest is more than a
	// heartbeat old, the view is stale (see viewStale).
	unseen  []landedBeat
	beatNow chan struct{}
	rewatch chan struct{} // asks the watch to start over (a stale view)
	// staleSince is when the coordinator first found the view stale (zero
	// while it is fresh).
	staleSince time.Time
	// serverNow is the newest server timestamp of a member key this
	// member has seen (coordinator only).
	serverNow time.Time
	target    []string
	claiming  map[uint16]bool
	// inherited are the partitions a previous run of this member id
	// announced (static membership): announced as this member's until it
	// has claimed them back, for at most one session.
	inherited      map[uint16]bool
	inheritedUntil time.Time
	// fencedParts are the partitions the member stopped when it fenced
	// itself (coordinator only): on unfencing they are inherited, as
	// after a restart, for their checkpoints may still name it, and the
	// others, judging it live again, would never take them over.
	fencedParts []uint16
	refused     atomic.Uint64
}

type partWorker struct {
	w         *delivery.Worker
	epoch     uint64
	releasing bool
	// fenced is set when the member stops the worker without a release
	// (self-fencing, or another member's claim seen): its handler is given
	// nothing more.
	fenced atomic.Bool
}

// landedBeat is a heartbeat of this member that landed at revision rev,
// when on this member's clock.
type landedBeat struct {
	rev uint64
	at  time.Time
}

type memberView struct {
	rec     memberRecord
	rev     uint64
	changed time.Time // on this member's monotonic clock
	purging bool      // its key is being deleted (purgeDead)
	// created is the server's timestamp of the key's write; once is set
	// while this member has seen only that one write of the key (see
	// live).
	created time.Time
	once    bool
}

// JoinGroup starts a member of the group cfg names, pulling through client
// and committing partition checkpoints to ckpts (a kvckpt store on the
// same NATS); js reaches the groups bucket. It creates the bucket and the
// group's config when missing, or refuses a mismatching member
// (ErrGroupMismatch), before anything starts. Cancelling ctx is Stop.
func JoinGroup(ctx context.Context, client *Client, ckpts checkpoint.Store, js jetstream.JetStream, cfg GroupConfig, h delivery.Handler) (*Member, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, &engine.ConfigError{Field: "handler", Rule: "must not be nil"}
	}
	if ckpts == nil {
		return nil, &engine.ConfigError{Field: "checkpoints", Rule: "must not be nil"}
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	kv, err := openGroupBucket(octx, js, cfg.Bucket, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	if err := ensureGroupConfig(octx, kv, cfg.Journal, cfg.Name, cfg.Region, cfg.Partitions); err != nil {
		return nil, err
	}
	var inc [8]byte
	_, _ = rand.Read(inc[:])
	m := &Member{
		cfg: cfg, client: client, ckpts: ckpts, kv: kv, handler: h,
		log:          cfg.Logger.Named("group").With("group", cfg.Name, "member", cfg.MemberID),
		incarnation:  hex.EncodeToString(inc[:]),
		prefix:       groupPrefix(cfg.Journal, cfg.Name),
		baseCtx:      context.WithoutCancel(ctx),
		done:         make(chan struct{}),
		events:       make(chan func(), 64),
		parts:        map[uint16]*partWorker{},
		view:         map[string]*memberView{},
		claiming:     map[uint16]bool{},
		retryAt:      map[uint16]time.Time{},
		unknownSince: map[string]time.Time{},
		verifyAt:     map[uint16]time.Time{},
		rewatch:      make(chan struct{}, 1),
		beatNow:      make(chan struct{}, 1),
	}
	m.stopCtx, m.stop = context.WithCancel(ctx)
	go m.run()
	return m, nil
}

// Stop leaves the group: each partition's batch in hand is handled and
// committed, the partitions are released and the member's key deleted,
// so the others take over at once. Idempotent, non-blocking.
func (m *Member) Stop() { m.stop() }

// Join waits for the member to leave and returns why it stopped (nil after
// Stop).
func (m *Member) Join() error {
	<-m.done
	return m.err
}

// StopAndJoin is Stop then Join.
func (m *Member) StopAndJoin() error {
	m.Stop()
	return m.Join()
}

// Done is closed when the member has left.
func (m *Member) Done() <-chan struct{} { return m.done }

// ID returns the member's id.
func (m *Member) ID() string { return m.cfg.MemberID }

// Stats returns a snapshot of the member's counters and state.
func (m *Member) Stats() MemberStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.stats
	st.Owned = m.ownedLocked()
	st.RefusedCommits = m.refused.Load()
	return st
}

// PartitionStats are one running partition's state.
type PartitionStats struct {
	Index  uint16
	Epoch  uint64 // the owner epoch this member claimed it at
	Worker delivery.WorkerStats
}

// Partitions returns the partitions the member runs now, in order.
func (m *Member) Partitions() []PartitionStats {
	m.mu.Lock()
	var out []PartitionStats
	ws := map[uint16]*delivery.Worker{}
	for p, pw := range m.parts {
		if !pw.releasing {
			out = append(out, PartitionStats{Index: p, Epoch: pw.epoch})
			ws[p] = pw.w
		}
	}
	m.mu.Unlock()
	for i := range out {
		out[i].Worker = ws[out[i].Index].Stats()
	}
	slices.SortFunc(out, func(a, b PartitionStats) int { return int(a.Index) - int(b.Index) })
	return out
}

// PartitionCount returns the group's partition count, P.
func (m *Member) PartitionCount() int { return m.cfg.Partitions }

func (m *Member) ownedLocked() []uint16 {
	// A partition being released is still announced until its release
	// is written: the member it moves to waits for that (it would find
	// the checkpoint held), and the key changes once more when it is.
	owned := map[uint16]bool{}
	for p := range m.parts {
		owned[p] = true
	}
	return sortedOwned(owned)
}

func (m *Member) fail(err error) {
	m.errOnce.Do(func() { m.err = err })
}

// partRegion is the region of partition i.
func (m *Member) partRegion(i uint16) engine.Region {
	return m.cfg.Region.WithPartition(engine.Partition{Index: i, Count: uint16(m.cfg.Partitions)})
}

func (m *Member) run() {
	defer close(m.done)
	defer m.wg.Wait()
	defer m.leave()
	m.inherit()
	m.announce()
	// The heartbeat and the watch run on goroutines of their own: a call
	// blocked on a lost connection must never hold up self-fencing.
	updates := make(chan jetstream.KeyValueEntry)
	m.bg.Add(2)
	go m.beater()
	go m.watch(updates)
	// The view is complete once the watch has sent every current key
	// (then a nil entry); only then does the member judge and claim.
	ready := false
	tick := time.NewTicker(max(m.cfg.Heartbeat/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case e := <-updates:
			if e == nil {
				ready = true
			} else {
				m.observe(e)
			}
		case <-tick.C:
		case f := <-m.events:
			f()
		case <-m.stopCtx.Done():
			return
		}
		m.pausePoint()
		if m.err != nil {
			return
		}
		if ready {
			m.evaluate()
		}
		m.announce()
	}
}

// watch follows the member keys of the group into updates (a nil entry
// after each watch's current keys), starting another watch whenever one
// ends, until the member stops.
func (m *Member) watch(updates chan<- jetstream.KeyValueEntry) {
	defer m.bg.Done()
	warned := false
	for m.stopCtx.Err() == nil {
		w, err := m.kv.Watch(m.stopCtx, m.prefix+"m.*")
		if err != nil {
			if !warned {
				m.log.Warn("cannot watch the group's members; retrying", "error", err)
				warned = true
			}
			select {
			case <-time.After(m.cfg.Heartbeat):
			case <-m.stopCtx.Done():
			}
			continue
		}
		warned = false
	follow:
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					break follow
				}
				select {
				case updates <- e:
				case <-m.stopCtx.Done():
				}
			case <-m.rewatch:
				m.log.Warn("the watch of the group's members shows nothing new; starting it over")
				break follow
			case <-m.stopCtx.Done():
				break follow
			}
		}
		_ = w.Stop()
	}
}

// announce records the partitions the member's key lists: those it runs,
// is claiming, or inherited from a previous run; a change is written at
// once.
func (m *Member) announce() {
	m.mu.Lock()
	list := m.ownedLocked()
	m.mu.Unlock()
	for p := range m.claiming {
		list = append(list, p)
	}
	if time.Now().Before(m.inheritedUntil) {
		for p := range m.inherited {
			list = append(list, p)
		}
	}
	slices.Sort(list)
	list = slices.Compact(list)
	m.mu.Lock()
	changed := !slices.Equal(list, m.announced)
	m.announced = list
	m.mu.Unlock()
	if changed {
		select {
		case m.beatNow <- struct{}{}:
		default:
		}
	}
}

// beater rewrites the member's key every heartbeat, and at once when what
// it announces changes.
func (m *Member) beater() {
	defer m.bg.Done()
	t := time.NewTicker(m.cfg.Heartbeat)
	defer t.Stop()
	fails := 0
	for {
		m.pausePoint()
		m.heartbeat(&fails)
		select {
		case <-t.C:
		case <-m.beatNow:
		case <-m.stopCtx.Done():
			return
		}
	}
}

// inherit reads the key a previous run of this member id left (a
// restart within its session): its partitions are announced as this
// member's until it has claimed them back, so nothing else moves.
func (m *Member) inherit() {
	ctx, cancel := context.WithTimeout(m.baseCtx, m.cfg.Session)
	defer cancel()
	e, err := m.kv.Get(ctx, memberKey(m.cfg.Journal, m.cfg.Name, m.cfg.MemberID))
	if err != nil {
		return
	}
	rec, err := decodeMember(e.Value())
	if err != nil || rec.Incarnation == m.incarnation {
		return
	}
	m.inherited = map[uint16]bool{}
	for _, p := range rec.Owned {
		if int(p) < m.cfg.Partitions {
			m.inherited[p] = true
		}
	}
	// The key lists what the previous run announced; it may have claimed
	// more after its last heartbeat landed. Every partition whose
	// checkpoint still names this member is its own too: the others judge
	// this member live again and would never take those over.
	for i := 0; i < m.cfg.Partitions; i++ {
		p := uint16(i)
		if m.inherited[p] {
			continue
		}
		cp, _, err := m.ckpts.Load(ctx, partitionCheckpointID(m.cfg.Name, p))
		if err == nil && cp.Owner == m.cfg.MemberID {
			m.inherited[p] = true
		}
	}
	if len(m.inherited) == 0 {
		return
	}
	m.inheritedUntil = time.Now().Add(m.cfg.Session)
	owned := make([]uint16, 0, len(m.inherited))
	for p := range m.inherited {
		owned = append(owned, p)
	}
	slices.Sort(owned)
	m.log.Info("restarted within the session: reclaiming the previous run's partitions", "partitions", owned)
}

// releaseInherited gives up the inherited partitions that the assignment
// gives to others: their checkpoints still name this member, which the
// others judge live, so only this member can let them go.
func (m *Member) releaseInherited(target []string) {
	for p := range m.inherited {
		if target[p] == m.cfg.MemberID {
			continue
		}
		delete(m.inherited, p)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			id := partitionCheckpointID(m.cfg.Name, p)
			ctx, cancel := context.WithTimeout(m.baseCtx, m.cfg.Session)
			defer cancel()
			rec, rev, err := m.ckpts.Load(ctx, id)
			if err != nil || rec.Owner != m.cfg.MemberID {
				return
			}
			m.releaseRecord(p, rec.Epoch)
			m.log.Info("released a partition inherited from a previous run", "partition", p, "epoch", rec.Epoch, "revision", uint64(rev))
			m.send(m.announce)
		}()
	}
}

// observe folds a member key's change into the view, stamped with this
// member's clock.
func (m *Member) observe(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		if id, err := kvckpt.ParseKeyToken(e.Key()[len(m.prefix)+len("m."):]); err == nil {
			delete(m.view, id)
		}
		return
	}
	rec, err := decodeMember(e.Value())
	if err != nil {
		m.log.Warn("ignoring a member key that does not decode", "key", e.Key(), "error", err)
		return
	}
	if rec.Member == m.cfg.MemberID {
		m.mu.Lock()
		n := 0
		for n < len(m.unseen) && m.unseen[n].rev <= e.Revision() {
			n++
		}
		m.unseen = m.unseen[n:]
		m.mu.Unlock()
	}
	if e.Created().After(m.serverNow) {
		m.serverNow = e.Created()
	}
	v := m.view[rec.Member]
	if v != nil && v.rev == e.Revision() {
		return // the same write again, from a new watch: not a heartbeat
	}
	m.view[rec.Member] = &memberView{rec: rec, rev: e.Revision(), changed: time.Now(), created: e.Created(), once: v == nil}
}

// heartbeat rewrites the member's key with what it announces. The time
// it was sent is what self-fencing counts from: the others see the write
// no earlier.
func (m *Member) heartbeat(fails *int) {
	m.mu.Lock()
	owned := m.announced
	m.mu.Unlock()
	rec := memberRecord{V: 1, Member: m.cfg.MemberID, Incarnation: m.incarnation, Owned: owned,
		SessionMs: m.cfg.Session.Milliseconds(), UpdatedMs: time.Now().UnixMilli()}
	value, err := encodeRecord(rec)
	if err != nil {
		m.log.Error("cannot encode the member's key", "error", err)
		return
	}
	sent := time.Now()
	ctx, cancel := context.WithTimeout(m.stopCtx, m.cfg.Heartbeat)
	defer cancel()
	rev, err := m.kv.Put(ctx, memberKey(m.cfg.Journal, m.cfg.Name, m.cfg.MemberID), value)
	if err != nil {
		if m.stopCtx.Err() == nil {
			if *fails++; *fails == 1 {
				m.log.Warn("heartbeat failed; handling goes on until the self-fencing deadline", "error", err)
			}
		}
		return
	}
	if *fails > 0 {
		m.log.Info("heartbeats land again", "failed", *fails)
	}
	*fails = 0
	m.mu.Lock()
	if !m.lastBeat.IsZero() && sent.Sub(m.lastBeat) >= m.cfg.Session-m.cfg.Heartbeat {
		m.lapsed = true
	}
	m.lastBeat = sent
	if len(m.unseen) < 1024 {
		m.unseen = append(m.unseen, landedBeat{rev: rev, at: time.Now()})
	}
	m.mu.Unlock()
}

// viewStale reports whether the watch has not shown a heartbeat of this
// member that landed more than a heartbeat ago. The watch delivers the
// member keys in the order they landed, so while it shows this member's
// own heartbeats it shows everyone's; when it does not (its consumer was
// lost with a node, say), every other key looks unchanged and must not be
// taken for a death.
func (m *Member) viewStale(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.unseen) > 0 && now.Sub(m.unseen[0].at) > m.cfg.Heartbeat
}

// holds reports whether the member may hand pw's next batch to its
// handler: pw has not been stopped, and the member holds its lease (its
// last heartbeat landed less than session − heartbeat ago on its own
// clock, with no lapse since).
func (m *Member) holds(pw *partWorker, now time.Time) bool {
	if pw.fenced.Load() {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.lastBeat.IsZero() && !m.lapsed && now.Sub(m.lastBeat) < m.cfg.Session-m.cfg.Heartbeat
}

// guard is the handler of partition workers: the member's handler, called
// only while the member holds pw (see holds). Otherwise the batch is not
// handled and the worker stops without committing: another member may own
// the partition by now, and the coordinator fences or re-claims it.
func (m *Member) guard(pw *partWorker) delivery.Handler {
	return func(ctx context.Context, b []engine.Entry, d *delivery.Delivery) delivery.Action {
		m.pausePoint()
		if !m.holds(pw, time.Now()) {
			return delivery.StopWithRollback
		}
		return m.handler(ctx, b, d)
	}
}

// pausePoint waits while the member is frozen (tests only).
func (m *Member) pausePoint() {
	if ch := m.frozen.Load(); ch != nil {
		select {
		case <-*ch:
		case <-m.stopCtx.Done():
		}
	}
}

// live returns the members this one judges alive: itself, and every member whose key changed within that member's session
// (each key carries its member's session: the one it fences itself by);
// every member in the view while the view is stale.
func (m *Member) live(now time.Time, stale bool) map[string]bool {
	live := map[string]bool{}
	for id, v := range m.view {
		session := m.cfg.Session
		if v.rec.SessionMs > 0 {
			session = time.Duration(v.rec.SessionMs) * time.Millisecond
		}
		// A key seen once only (in the snapshot a new member's watch
		// starts with) has an unknown age on this member's clock; its
		// age on the server's clock (the newest write's stamp against
		// its own, both the server's) tells a member that died before
		// this one joined, whose key stays for describe.
		if v.once && id != m.cfg.MemberID && m.serverNow.Sub(v.created) >= session {
			continue
		}
		if stale || now.Sub(v.changed) < session {
			live[id] = true
		}
	}
	live[m.cfg.MemberID] = true
	return live
}

// evaluate judges the view and acts: self-fencing, releases and claims.
func (m *Member) evaluate() {
	now := time.Now()
	if m.stopCtx.Err() != nil {
		return
	}
	m.mu.Lock()
	last, fenced, lapsed := m.lastBeat, m.stats.Fenced, m.lapsed
	m.mu.Unlock()
	if last.IsZero() {
		return // not in the group yet: the first heartbeat has not landed
	}
	if lapsed || now.Sub(last) >= m.cfg.Session-m.cfg.Heartbeat {
		m.selfFence(last)
		return
	}
	if fenced {
		m.mu.Lock()
		behind := len(m.unseen) > 0
		m.mu.Unlock()
		if behind {
			// Stay fenced until the watch shows this member's latest
			// heartbeat: the keys others wrote while it was cut off or
			// paused come before it, and judging without them would take
			// live members for dead (and claim their partitions).
			if m.staleSince.IsZero() {
				m.staleSince = now
			} else if now.Sub(m.staleSince) >= m.cfg.Session {
				m.staleSince = now
				select {
				case m.rewatch <- struct{}{}:
				default:
				}
			}
			return
		}
		m.mu.Lock()
		m.stats.Fenced, m.stats.FencedSince = false, time.Time{}
		m.mu.Unlock()
		// The partitions it stopped are its own again until it claims
		// them back, or releases those the assignment gives to others
		// (releaseInherited): a checkpoint that still names this member
		// is never taken over by the others while it is live.
		if len(m.fencedParts) > 0 {
			if m.inherited == nil {
				m.inherited = map[uint16]bool{}
			}
			for _, p := range m.fencedParts {
				m.inherited[p] = true
			}
			m.inheritedUntil = now.Add(m.cfg.Session)
		}
		m.log.Info("unfenced: heartbeats land again; rejoining", "partitions-to-reclaim-or-release", m.fencedParts)
		m.fencedParts = nil
	}
	stale := m.viewStale(now)
	switch {
	case stale && m.staleSince.IsZero():
		m.staleSince = now
		m.log.Warn("the watch does not show this member's own heartbeats; judging no member dead until it does")
	case stale && now.Sub(m.staleSince) >= m.cfg.Session:
		m.staleSince = now
		select {
		case m.rewatch <- struct{}{}:
		default:
		}
	case !stale && !m.staleSince.IsZero():
		m.staleSince = time.Time{}
		m.log.Info("the watch shows this member's heartbeats again")
	}
	live := m.live(now, stale)
	current := make([]string, m.cfg.Partitions)
	var ids []string
	for id := range live {
		ids = append(ids, id)
	}
	for _, id := range ids {
		v := m.view[id]
		if id == m.cfg.MemberID || v == nil {
			continue
		}
		for _, p := range v.rec.Owned {
			if int(p) < len(current) && (current[p] == "" || id < current[p]) {
				current[p] = id
			}
		}
	}
	m.mu.Lock()
	for p, pw := range m.parts {
		if !pw.releasing {
			current[p] = m.cfg.MemberID
		}
	}
	m.mu.Unlock()
	for p := range m.claiming {
		current[p] = m.cfg.MemberID
	}
	if now.Before(m.inheritedUntil) {
		for p := range m.inherited {
			current[p] = m.cfg.MemberID
		}
	}
	target := assign(m.cfg.Partitions, ids, current)
	unowned := 0
	for _, o := range current {
		if o == "" {
			unowned++
		}
	}
	m.mu.Lock()
	if m.target != nil && !equalStrings(m.target, target) {
		m.stats.Rebalances++
	}
	m.stats.Unowned = unowned
	toRelease := []uint16{}
	for p, pw := range m.parts {
		if target[p] != m.cfg.MemberID && !pw.releasing {
			pw.releasing = true
			toRelease = append(toRelease, p)
		}
	}
	m.mu.Unlock()
	m.target = target
	for _, p := range toRelease {
		m.release(p)
	}
	m.releaseInherited(target)
	m.verifyContested(now, ids)
	if !stale {
		m.purgeDead(now)
	}
	for i, o := range target {
		p := uint16(i)
		m.mu.Lock()
		_, running := m.parts[p]
		m.mu.Unlock()
		if o != m.cfg.MemberID || running || m.claiming[p] {
			continue
		}
		if holder := current[p]; holder != "" && holder != m.cfg.MemberID {
			continue // cooperative: wait until its owner releases it
		}
		if now.Before(m.retryAt[p]) {
			continue
		}
		m.claim(p, m.ownerLive(now, live, stale))
	}
}

// deadKeyAge is how many of its sessions a dead member's key stays (for
// `worker group describe`) before the others delete it (a variable for
// tests).
var deadKeyAge = 10

// purgeDead deletes the keys of members dead for deadKeyAge sessions, so
// that killed members with generated ids do not pile up. The delete is
// conditional on the revision seen: a member back from a pause that has
// written its key since keeps it.
func (m *Member) purgeDead(now time.Time) {
	for id, v := range m.view {
		session := m.cfg.Session
		if v.rec.SessionMs > 0 {
			session = time.Duration(v.rec.SessionMs) * time.Millisecond
		}
		if id == m.cfg.MemberID || v.purging || now.Sub(v.changed) < time.Duration(deadKeyAge)*session {
			continue
		}
		v.purging = true
		key, rev := memberKey(m.cfg.Journal, m.cfg.Name, id), v.rev
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			ctx, cancel := context.WithTimeout(m.stopCtx, m.cfg.Session)
			defer cancel()
			if err := m.kv.Delete(ctx, key, jetstream.LastRevision(rev)); err == nil {
				m.log.Info("deleted a dead member's key", "dead-member", id)
			}
		}()
	}
}

// verifyContested checks the partitions this member runs that another
// live member announces too. Claims are compare-and-swap writes, so only
// one of them owns the checkpoint; but the other's worker learns it only
// at its next commit, and an idle partition may not commit for long. The
// member that finds another owner in the checkpoint stops its worker.
func (m *Member) verifyContested(now time.Time, ids []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p, pw := range m.parts {
		if pw.releasing || now.Before(m.verifyAt[p]) {
			continue
		}
		for _, id := range ids {
			if v := m.view[id]; id != m.cfg.MemberID && v != nil && slices.Contains(v.rec.Owned, p) {
				m.verifyAt[p] = now.Add(m.cfg.Heartbeat)
				m.verify(p, pw)
				break
			}
		}
	}
}

// verify loads partition p's checkpoint and, when it names another owner
// or epoch than pw's, stops pw: its commits would be refused.
func (m *Member) verify(p uint16, pw *partWorker) {
	id := partitionCheckpointID(m.cfg.Name, p)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(m.baseCtx, m.cfg.Session)
		defer cancel()
		rec, _, err := m.ckpts.Load(ctx, id)
		if err != nil || (rec.Owner == m.cfg.MemberID && rec.Epoch == pw.epoch) {
			return
		}
		m.send(func() {
			m.mu.Lock()
			if m.parts[p] != pw || pw.releasing {
				m.mu.Unlock()
				return
			}
			pw.fenced.Store(true)
			delete(m.parts, p)
			m.mu.Unlock()
			m.log.Warn("partition claimed by another member; stopped handling it", "partition", p, "owner", rec.Owner, "epoch", rec.Epoch, "own-epoch", pw.epoch)
			pw.w.Stop()
			m.announce()
		})
	}()
}

// ownerLive returns how this member judges the owner named in a
// partition's checkpoint, from a snapshot of the view taken now (the claim
// runs on another goroutine): live when its key changed within the
// session; and also when its key has never been seen, until a session has
// passed since a claim first found it owning something. A member writes
// its key before it claims anything, but the key reaches the watchers of
// the others on another stream than the claim; the grace keeps a member
// from taking over from one whose key is still on its way, and still lets
// it take over from one whose key is gone (deleted, yet its checkpoints
// never released).
func (m *Member) ownerLive(now time.Time, live map[string]bool, stale bool) func(string) bool {
	seen := make(map[string]bool, len(m.view))
	for id := range m.view {
		seen[id] = true
	}
	unknown := make(map[string]time.Time, len(m.unknownSince))
	for id, at := range m.unknownSince {
		if seen[id] {
			delete(m.unknownSince, id) // seen now: judged by its key
			continue
		}
		unknown[id] = at
	}
	return func(owner string) bool {
		if live[owner] || stale {
			return true
		}
		if seen[owner] {
			return false
		}
		at, noted := unknown[owner]
		return !noted || now.Sub(at) < m.cfg.Session
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// selfFence stops handling every partition: heartbeats have not landed for
// session − heartbeat, so another member may soon take them over.
func (m *Member) selfFence(last time.Time) {
	m.mu.Lock()
	m.lapsed = false // fenced now: the next evaluation may rejoin
	if m.stats.Fenced {
		m.mu.Unlock()
		return
	}
	m.stats.Fenced, m.stats.FencedSince = true, time.Now()
	m.stats.Fences++
	var stopping []*partWorker
	for p, pw := range m.parts {
		pw.fenced.Store(true)
		stopping = append(stopping, pw)
		delete(m.parts, p)
		m.fencedParts = append(m.fencedParts, p)
	}
	m.mu.Unlock()
	m.log.Warn("self-fenced: heartbeats are not landing; stopped handling", "partitions", len(stopping), "since-last-heartbeat", time.Since(last).Round(time.Millisecond))
	for _, pw := range stopping {
		pw.w.Stop() // a commit that cannot land is abandoned: the batch is redelivered
	}
}

// claim writes partition p's checkpoint with this member as owner and the
// next epoch, in the background; on success the partition's worker starts.
func (m *Member) claim(p uint16, live func(string) bool) {
	m.claiming[p] = true
	id := partitionCheckpointID(m.cfg.Name, p)
	region := m.partRegion(p)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		epoch, err := m.claimRecord(id, region, live)
		m.send(func() {
			delete(m.claiming, p)
			var held *heldError
			if errors.As(err, &held) {
				if _, seen := m.view[held.owner]; !seen {
					if _, noted := m.unknownSince[held.owner]; !noted {
						m.unknownSince[held.owner] = time.Now()
					}
				}
			}
			switch {
			case held != nil, errors.Is(err, checkpoint.ErrConflict), errors.Is(err, checkpoint.ErrUnavailable):
				m.log.Debug("partition not claimed now", "partition", p, "reason", err)
				m.retryAt[p] = time.Now().Add(m.cfg.Heartbeat / 2)
			case err != nil:
				m.log.Error("cannot claim a partition; leaving the group", "partition", p, "error", err)
				m.fail(err)
			default:
				m.startPartition(p, epoch)
			}
		})
	}()
}

// heldError is a claim refused because the partition's checkpoint names
// an owner this member judges live.
type heldError struct{ id, owner string }

func (e *heldError) Error() string {
	return fmt.Sprintf("fleet: %s is held by member %q, judged live", e.id, e.owner)
}

// claimRecord claims a partition's checkpoint: a compare-and-swap write of
// the record at its position with this member as owner and epoch + 1. A
// record that does not decode fails closed (ErrCorrupt names it).
func (m *Member) claimRecord(id string, region engine.Region, live func(string) bool) (uint64, error) {
	ctx, cancel := context.WithTimeout(m.baseCtx, m.cfg.Session)
	defer cancel()
	ident := region.Identity()
	rec, rev, err := m.ckpts.Load(ctx, id)
	switch {
	case errors.Is(err, checkpoint.ErrNotFound):
		rec, rev = checkpoint.Record{RegionIdentity: &ident}, 0
		if from := m.cfg.Worker.From; from != (delivery.StartFrom{}) {
			// The partition's first claim: it starts where From says,
			// resolved now (Kafka's auto.offset.reset). Its record keeps
			// that start for every later claimer.
			if rec, err = m.startRecord(ctx, rec, from); err != nil {
				return 0, err
			}
		}
	case err != nil:
		return 0, err
	case rec.RegionIdentity == nil || *rec.RegionIdentity != ident:
		return 0, &checkpoint.RegionMismatchError{Location: m.ckpts.Location(id), Stored: rec.RegionIdentity, Expected: ident}
	case rec.Owner != "" && rec.Owner != m.cfg.MemberID && live(rec.Owner):
		return 0, &heldError{id: id, owner: rec.Owner}
	}
	rec.Owner, rec.Epoch, rec.UpdatedMs = m.cfg.MemberID, rec.Epoch+1, uint64(time.Now().UnixMilli())
	if _, err := m.ckpts.Save(ctx, id, rec, rev); err != nil {
		return 0, err
	}
	return rec.Epoch, nil
}

// startRecord sets a new partition record's position to where from
// points now. A writer that does not answer is the store being
// unavailable for the claim: it is retried.
func (m *Member) startRecord(ctx context.Context, rec checkpoint.Record, from delivery.StartFrom) (checkpoint.Record, error) {
	info, err := m.client.Info(ctx)
	if err == nil {
		rec.Position, rec.Started, err = from.Resolve(ctx, m.client, info.Visible)
	}
	if err != nil {
		if errors.Is(err, delivery.ErrTransient) || errors.Is(err, context.DeadlineExceeded) {
			return rec, fmt.Errorf("%w: resolve the start %s: %w", checkpoint.ErrUnavailable, from, err)
		}
		return rec, fmt.Errorf("fleet: resolve the start %s of group %s: %w", from, m.cfg.Name, err)
	}
	rec.JournalID = info.JournalID.String()
	return rec, nil
}

// send hands f to the coordinator (unless the member is leaving).
func (m *Member) send(f func()) {
	select {
	case m.events <- f:
	case <-m.stopCtx.Done():
	}
}

// startPartition starts the worker of a claimed partition.
func (m *Member) startPartition(p uint16, epoch uint64) {
	if m.stopCtx.Err() != nil {
		return
	}
	cfg := m.cfg.Worker
	cfg.CheckpointID, cfg.Checkpoints = partitionCheckpointID(m.cfg.Name, p), m.ckpts
	cfg.WorkerID, cfg.Group, cfg.Epoch = m.cfg.MemberID, m.cfg.Name, epoch
	if cfg.Logger == nil {
		cfg.Logger = m.cfg.Logger
	}
	pw := &partWorker{epoch: epoch}
	w, err := delivery.StartWorker(m.baseCtx, m.client, m.partRegion(p), cfg, m.guard(pw))
	if err != nil {
		m.fail(err)
		return
	}
	pw.w = w
	delete(m.inherited, p)
	m.mu.Lock()
	m.parts[p] = pw
	m.stats.Claims++
	m.mu.Unlock()
	m.log.Info("partition claimed", "partition", p, "epoch", epoch)
	m.announce()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		<-w.Done()
		err := w.Join()
		m.send(func() { m.partitionEnded(p, pw, err) })
	}()
}

// partitionEnded handles a partition worker that stopped by itself (not
// by a release): another member's claim fenced it, or it failed.
func (m *Member) partitionEnded(p uint16, pw *partWorker, err error) {
	if errors.Is(err, checkpoint.ErrConflict) {
		m.refused.Add(1) // a commit after another member's claim: refused
	}
	m.mu.Lock()
	if m.parts[p] != pw || pw.releasing {
		m.mu.Unlock()
		return // released, or already replaced
	}
	delete(m.parts, p)
	m.mu.Unlock()
	switch {
	case err == nil:
		m.log.Info("partition worker stopped", "partition", p)
	case errors.Is(err, checkpoint.ErrConflict):
		m.log.Warn("partition taken over by another member; this member's commit was refused", "partition", p, "error", err)
	default:
		m.log.Error("partition worker failed; leaving the group", "partition", p, "error", err)
		m.fail(err)
	}
	m.announce()
}

// release stops partition p's worker (the batch in hand is handled and
// committed) and writes its checkpoint with no owner, so the member the
// assignment gives it to may claim it at once.
func (m *Member) release(p uint16) {
	m.mu.Lock()
	pw := m.parts[p]
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		_ = pw.w.StopAndJoin()
		m.releaseRecord(p, pw.epoch)
		m.send(func() {
			m.mu.Lock()
			if m.parts[p] == pw {
				delete(m.parts, p)
				m.stats.Releases++
			}
			m.mu.Unlock()
			m.log.Info("partition released", "partition", p)
			m.announce()
		})
	}()
}

// releaseRecord clears the owner of partition p's checkpoint if this
// member still holds it at epoch.
func (m *Member) releaseRecord(p uint16, epoch uint64) {
	id := partitionCheckpointID(m.cfg.Name, p)
	ctx, cancel := context.WithTimeout(m.baseCtx, m.cfg.Session)
	defer cancel()
	rec, rev, err := m.ckpts.Load(ctx, id)
	if err != nil || rec.Owner != m.cfg.MemberID || rec.Epoch != epoch {
		return
	}
	rec.Owner, rec.UpdatedMs = "", uint64(time.Now().UnixMilli())
	if _, err := m.ckpts.Save(ctx, id, rec, rev); err != nil {
		m.log.Warn("could not release a partition (the others take it after this member's session)", "partition", p, "error", err)
	}
}

// leave stops every partition (committing its batch in hand), releases
// them and deletes the member's key.
func (m *Member) leave() {
	m.stop() // the member may leave on an error: stop the heartbeat too
	m.bg.Wait()
	if m.crashed.Load() {
		m.mu.Lock()
		parts := m.parts
		m.parts = map[uint16]*partWorker{}
		m.mu.Unlock()
		for _, pw := range parts {
			pw.w.Stop()
			<-pw.w.Done()
		}
		return
	}
	m.mu.Lock()
	var all []uint16
	for p := range m.parts {
		all = append(all, p)
	}
	parts := m.parts
	m.parts = map[uint16]*partWorker{}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		pw := parts[p]
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = pw.w.StopAndJoin()
			m.releaseRecord(p, pw.epoch)
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(m.baseCtx, m.cfg.Session)
	defer cancel()
	if err := m.kv.Delete(ctx, memberKey(m.cfg.Journal, m.cfg.Name, m.cfg.MemberID)); err != nil {
		m.log.Warn("could not delete the member's key (the others take over after its session)", "error", err)
	}
	m.log.Info("left the group", "partitions", len(all))
}
