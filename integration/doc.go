// Package integration holds black-box tests of batfleet's packages working
// together over NATS: a writer (engine journal served by fleet.Writer),
// remote workers (fleet.Client as the engine source, kvckpt checkpoints)
// and producers, all against embedded nats-servers on loopback TCP.
//
// What lives here:
//
//   - the shared worker scenarios of the test catalogue
//     (deliverytest.RunWorkerScenarios) run on a fleet backend, so the
//     † cases hold over the network with the KV checkpoint store
//     (env_test.go), plus the fleet-only † cases VIS-15, WRK-16, WRK-18
//     and the new-incarnation re-checks of §9.7 (fleet_cases_test.go);
//   - end-to-end runs (e2e_test.go): many entities, scopes and kinds
//     appended through fleet.Client while three remote workers on
//     different regions consume them; WRK-17, a scripted handler run by a
//     local and a remote worker with identical outcomes; every region
//     shape pulled locally and remotely with identical results;
//   - pull replies that must fit the max payload next to the cancelled
//     ranges they cross (payload_test.go);
//   - crash tests with child processes (the test binary re-executed in a
//     helper role): a durable remote worker and a writer, each killed
//     with SIGKILL and restarted;
//   - the fleet benchmarks (pull throughput, append throughput, wake
//     latency over loopback TCP);
//   - h2h/, a program (not a test) that runs batfleet head to head with
//     JetStream pull consumers on the same events, handler and server and
//     writes BENCHMARKS.md; its quick mode runs as a test.
//
// Every test starts its own embedded server(s), never skips, and cleans up
// everything it starts: child processes are killed, clients close before
// their server shuts down. Volumes shrink under the race detector (see
// raceEnabled), never to zero.
package integration
