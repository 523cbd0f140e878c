// Package journal is batfleet's durable journal: an append-only, globally
// sequenced event log in segment files on local disk, with the sequence
// gate (visibility watermark, epochs, fences, cancelled ranges), the
// region index that answers "entries of region R after position P, up to
// N" in time proportional to N, and idempotent appends. A *Store is a
// delivery.Source: cursors and workers pull from it directly, and
// fleet.Writer serves it over NATS.
//
// # Guarantees
//
//   - Visible implies durable: an entry becomes visible (to Poll, and so to
//     cursors and pulls) only after the fsync (fdatasync) of the frame that
//     holds it.
//     Concurrent appends share fsyncs (group commit).
//   - A batch append is atomic: all of it becomes visible at once, or none
//     of it ever does.
//   - No silent holes: a sequence that was reserved but never becomes
//     visible (failed write or fsync, torn or uncommitted batch, cancelled
//     fence) lies in a persisted cancelled range; sequences are never
//     reused.
//   - Recovery on Open truncates a torn tail and refuses to open on
//     corruption before the tail (ErrCorrupt, see IsCorruption).
//
// # Concurrency
//
// A Store is safe for concurrent use. Every write goes through one
// committer goroutine owned by the Store; Close stops it and waits for it.
// Writers hand it requests through a lock-free queue (reqqueue.go) and
// wait on their own request; the committer takes every queued request at
// once, and when it lingers for a group it is woken only when the
// appenders it waits for have all arrived. Readers (Poll, Park) never
// block the committer for longer than an index lookup.
//
// Lock order: index.mu and gate.mu are never held together (the committer
// interns a request's coordinates under index.mu, then reserves and encodes
// without it; a Poll takes its gate snapshot before the index lock). gate.mu
// (watermark) and gate.wakeMu (epoch) are never held together: a publish
// updates the watermark, releases it, then bumps the epoch and wakes
// parked readers. segMaps.mu is a leaf, held only while copying payloads.
//
// # Directory layout
//
//	LOCK                     flock(2) held by the open Store
//	journal_id               32 hex digits, made at creation
//	visibility_ranges.fbv    cancelled ranges (absent when there are none)
//	segment-NNNNNNNNNN.bfj   segment files, numbered from 0
//
// # Segment file format
//
// A segment starts with a 16-byte header, followed by frames:
//
//	offset  size  field
//	0       8     magic "BATFLSEG"
//	8       2     segment format version, u16 LE (1)
//	10      2     reserved, zero
//	12      4     CRC-32C of bytes 0-11, u32 LE
//
// Every frame is a length, a checksum and a body; all integers are little
// endian:
//
//	offset  size  field
//	0       4     body length L (2 <= L <= 2^28)
//	4       4     CRC-32C (Castagnoli) of the body
//	8       1     frame type: 1 event, 2 batch begin, 3 batch commit, 4 fence commit, 5 group
//	9       1     frame format version (1)
//	10      L-2   type-specific fields below
//
// Event body (after type and version):
//
//	offset  size  field
//	2       1     flags: bit 0 fenced, bit 1 keyed (id is the idempotency key)
//	3       1     reserved, zero
//	4       2     kind
//	6       2     entity length E (<= 1024)
//	8       2     scope length S (<= 1024)
//	10      4     clock
//	14      8     seq
//	22      8     wall_ms
//	30      16    id
//	46      4     payload length P
//	50      E     entity (UTF-8)
//	50+E    S     scope (UTF-8)
//	50+E+S  P     payload
//
// Batch begin, batch commit and fence commit bodies (after type and
// version): 2 reserved zero bytes, then two u64 values: (first seq, count)
// for the batch markers, [lo, hi) for a fence commit.
//
// Group body (after type and version): 2 reserved zero bytes, then three
// u64 values: [first, end), the seqs the group's appends reserved, and the
// length in bytes of the group's frames that follow this one.
//
// A single-event append is one event frame. An append of n >= 2 events is
// batch begin, n event frames, batch commit. Fenced appends carry the
// fenced flag and become visible only when a fence commit frame covering
// their sequences follows. The committer writes each group of appends
// with one write: a group frame, then the appends' frames (never a group
// or fence commit frame); a fence commit is a write of its own. Segments
// of earlier versions of this package hold no group frames and read the
// same.
//
// # Recovery
//
// Open checks every frame. Only the last segment can have a torn tail, and
// only the last write can be torn: every write (a group, or a fence
// commit) is synced before the next one starts. A group is checked whole
// before any of it is applied. In the last segment:
//
//   - a group that does not check (a frame does not decode, or the group
//     runs past the end of the file) with nothing but zeros after its
//     extent is the torn last write: after a power failure any subset of
//     its pages may have reached the disk, none of it was acknowledged. It
//     is cut off whole and its seqs [first, end) cancelled;
//   - a bad frame where the last write began (right after the last good
//     write, or the segment header), with only zeros from there to the
//     next 4 KiB page boundary (or, when the group frame straddles that
//     boundary, zeros in its part after it), is the same torn write with
//     its first (or second) page lost: cut off, and the seqs of the frames that survived after it
//     (followed from frame to frame, all of kinds a group holds, all new)
//     cancelled. A group frame or fence commit there means a later write:
//     corruption;
//   - otherwise, a bad frame is a torn tail when no checksum-valid frame
//     follows it and it is the last non-zero data: it runs past the end of
//     the file, it fails its checksum and its declared length covers every
//     non-zero byte after it, or what is left is a partial frame header
//     (this also covers segments without group frames, and fence commits).
//
// An all-zero rest (the preallocation of a writer that did not close) is
// kept as preallocated space. Damage inside the last group after its sync
// completed (a media error) looks like a torn write and is handled the
// same: the group is cancelled, never delivered half, and a warning is
// logged. A write that fails leaves nothing: the whole group is failed and
// cut off (none of it was acknowledged). A batch begin without its commit, and fenced events without a
// fence commit, are cancelled too. Cancelled ranges are written to the
// ranges file before the truncation, so a crash in between repeats the
// same recovery, and never become visible. Any other damage — a bad frame
// followed by data it does not explain, a bad group followed by more data,
// a bad frame in an earlier segment, a checksum-valid frame that does not
// decode, a garbage segment header — is corruption: Open fails with an
// error matching ErrCorrupt and changes nothing.
//
// # Preallocation and sync
//
// The active segment is zero-filled ahead of its written end (64 KiB at
// first, growing to 1 MiB steps; see prealloc.go) and every sync is an
// fdatasync. A group then overwrites blocks already allocated inside the
// file's durable size, so its sync flushes only those data pages, with no
// metadata commit, and costs about the same for 100 bytes or 40 KB. The
// group that needs new zeros writes them first and its sync covers them
// and the new size (fdatasync flushes a size change). A full segment is cut
// back to its frames before the next one starts; Close trims the active
// one, so the tail exists only while a writer runs or after a crash.
//
// Entity clocks are rebuilt from every event frame on disk, hidden ones
// included, so a clock value is never handed out twice for an entity's
// durable frames. Payloads are not held in the heap: polls copy them out of
// read-only memory mappings of the segment files, so the OS page cache is
// the payload cache.
package journal
