// Package benchkit is what the benchmark harnesses under integration/
// (h2h, fanout, groupbench) share: child processes that answer in lines,
// CPU figures read from /proc, a nats-server built from the module and
// started as a process, and the description of the machine and the marked
// section each harness writes into BENCHMARKS.md.
//
// It is test tooling: it favours clear errors over generality, and
// nothing in the product imports it.
package benchkit
