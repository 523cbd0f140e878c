package fleet

import "sync"

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

// Freeze stands for a paused process (SIGSTOP): until thaw is called, the
// member's coordinator and heartbeat stop at their next step and its
// partitions' handlers before their next batch, while its clock runs on.
// What is in flight (a KV request, a pull) completes meanwhile.
func (m *Member) Freeze() (thaw func()) {
	ch := make(chan struct{})
	m.frozen.Store(&ch)
	var once sync.Once
	return func() {
		once.Do(func() {
			m.frozen.Store(nil)
			close(ch)
		})
	}
}
