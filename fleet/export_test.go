package fleet

// Test hooks, compiled into this package's tests only.

// DropEpochs makes the client ignore epoch messages (drop true) or heed
// them again: for tests of the idle-timeout safety net.
func (c *Client) DropEpochs(drop bool) {
	c.mu.Lock()
	c.dropped = drop
	c.mu.Unlock()
}

// Crash stops the member as a killed process would end: its partitions
// are neither released nor its key deleted, so the others take over only
// after its session.
func (m *Member) Crash() {
	m.crashed.Store(true)
	m.Stop()
	<-m.Done()
}

// shortDeadKeyAge makes dead members' keys go after 2 sessions, for the
// test's duration.
func shortDeadKeyAge(t interface{ Cleanup(func()) }) {
	old := deadKeyAge
	deadKeyAge = 2
	t.Cleanup(func() { deadKeyAge = old })
}
