//go:build !race

package integration

// raceEnabled reports that the race detector is on: byte-heavy NATS
// traffic runs 8–11× slower under it, so bulk volumes shrink.
const raceEnabled = false
