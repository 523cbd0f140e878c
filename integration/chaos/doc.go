// Command chaos runs the whole fleet as real processes and checks what
// it did (make chaos; a short run is TestCHAOS01_Short in make test).
//
//	go run ./integration/chaos --faults 200 --seed 42      # 2.2 s per fault
//	go run ./integration/chaos --faults 24 --minutes 0.7   # a random seed, printed
//
// The fleet (fleet.go): an external nats-server (built from the
// nats-server module the project already depends on), the writer binary
// (`writer serve`), three plain checkpoint workers on different regions
// (`worker run --checkpoint ... --out FILE`), three members of a consumer
// group (`worker run --group g --partitions 8 --session 2s --out FILE`)
// and three producers (this program re-executed as `chaos produce`,
// producer.go). Every process but the server reaches NATS through a fault
// proxy of its own (internal/faultproxy: a Proxy chained to a Throttle).
// A supervisor per process (procs.go) starts it again whenever it ends,
// as systemd or Kubernetes would; a process that ends by itself (a writer
// on a full disk, a worker that cannot reach NATS at start) is reported,
// not counted as a violation.
//
// The faults (schedule.go, run.go) come from a plan drawn from the seed:
// kinds, targets, durations and times (scaled to --minutes), so a seed
// replays the same plan. Kinds: SIGKILL of the writer, a worker, a
// member, a producer; SIGSTOP/SIGCONT of the writer (2-6 s, past the
// clients' request timeouts), a worker, a member (past its 2 s session:
// a zombie); a restart of the nats-server (SIGTERM, or SIGKILL for a
// third, down 0.2-2.5 s); on one process's link: latency, a reset of
// every connection, a blackhole for a few seconds, a slow reader (the
// server's bytes passed on at 2-32 KiB/s); a full disk under the writer
// (disk.go: a tmpfs of its own filled by a file for 2-6 s, the writer
// killed meanwhile half the time so that it restarts on the full disk,
// then space returns). Faults on one process are serialised; different
// processes overlap.
//
// After the plan: every fault undone, the producers stopped, the fleet
// drained (fleet.WaitFor and WaitForGroup through the writer's visible
// bound, each bounded at 2 minutes), then workers, writer and server
// stopped gracefully, and the checker (checker.go) reads the journal
// offline, every delivery log, every producer's receipt log and the
// complete history of every checkpoint key (history.go: the bucket is
// created before the fleet with its stream keeping every revision).
//
// Decisions:
//   - Duplicates must be 0: every event's idempotency key is derived from
//     its unique payload id, so every resend — the client's, the
//     producer's loop, a restarted producer's resend of its last
//     unacknowledged batch — is replayed by the writer (SPEC §5).
//   - An append is "acknowledged" once the producer has fsynced its
//     receipt; a lost one is an acknowledged payload id not at its seq.
//   - A full disk needs a mountable tmpfs (root or CAP_SYS_ADMIN); without
//     one the plan has no disk faults and the summary says disk=none. No
//     test hook was added to the writer.
//
// Output: the seed first, one line per fault with -v, the examples behind
// any nonzero count (and, when the drain did not finish, what `worker
// status` and `worker group describe` say), and the summary line last.
// Exit 0: every count 0; 1: a loss or violation; 2: the run itself
// failed. A failed run keeps its work directory (logs of every process,
// delivery and receipt logs, the server's store); `chaos history --nats
// URL [--id CHECKPOINT]` prints every checkpoint revision of a server
// started on its store (nats-server -js -sd DIR/nats -p PORT).
package main
