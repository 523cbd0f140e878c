package fleet

// Test hooks, compiled into this package's tests only.

// DropEpochs makes the client ignore epoch messages (drop true) or heed
// them again: for tests of the idle-timeout safety net.
func (c *Client) DropEpochs(drop bool) {
	c.mu.Lock()
	c.dropped = drop
	c.mu.Unlock()
}
