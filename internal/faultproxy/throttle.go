package faultproxy

import (
	"net"
	"sync"
	"time"
)

// Throttle is a TCP forwarder that can turn into a slow reader: while a
// rate is set, it reads what the server sends at most that many bytes per
// second (in small chunks), so the server's socket buffers fill and the
// server sees a client that does not keep up. Bytes from the client pass
// unthrottled. Chain it behind a Proxy (client → Proxy → Throttle →
// server) to combine its fault with the Proxy's.
//
// It owns its goroutines: Close stops them and waits.
type Throttle struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[*pair]struct{}
	rate   int // bytes per second from the server; 0: unlimited
	closed bool
}

// NewThrottle listens on 127.0.0.1 (a free port) and forwards to target.
func NewThrottle(target string) (*Throttle, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &Throttle{target: target, ln: ln, conns: map[*pair]struct{}{}}
	t.wg.Add(1)
	go t.accept()
	return t, nil
}

// Addr is the throttle's address (host:port).
func (t *Throttle) Addr() string { return t.ln.Addr().String() }

// SetReadRate makes the throttle read from the server at most
// bytesPerSecond (0 or less: as fast as it comes).
func (t *Throttle) SetReadRate(bytesPerSecond int) {
	t.mu.Lock()
	t.rate = max(bytesPerSecond, 0)
	t.mu.Unlock()
}

// Close stops accepting, closes every connection and waits for the
// throttle's goroutines.
func (t *Throttle) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	conns := t.conns
	t.conns = map[*pair]struct{}{}
	t.mu.Unlock()
	err := t.ln.Close()
	for c := range conns {
		c.close()
	}
	t.wg.Wait()
	return err
}

func (t *Throttle) accept() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return // closed
		}
		s, err := net.DialTimeout("tcp", t.target, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		pr := &pair{client: c, server: s}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			pr.close()
			return
		}
		t.conns[pr] = struct{}{}
		t.mu.Unlock()
		t.wg.Add(2)
		go t.pipe(pr, c, s, false)
		go t.pipe(pr, s, c, true)
	}
}

// throttleChunk is what a slow reader passes on at a time.
const throttleChunk = 512

// pipe copies src to dst; from the server (slow true) what it read is
// passed on at the current rate, and the next read waits for that.
func (t *Throttle) pipe(pr *pair, src, dst net.Conn, slow bool) {
	defer t.wg.Done()
	defer func() {
		t.mu.Lock()
		delete(t.conns, pr)
		t.mu.Unlock()
		pr.close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p := buf[:n]; len(p) > 0; {
			rate := 0
			if slow {
				t.mu.Lock()
				rate = t.rate
				t.mu.Unlock()
			}
			chunk := len(p)
			if rate > 0 {
				chunk = min(chunk, throttleChunk)
			}
			if _, werr := dst.Write(p[:chunk]); werr != nil {
				return
			}
			p = p[chunk:]
			if rate > 0 {
				time.Sleep(time.Duration(chunk) * time.Second / time.Duration(rate))
			}
		}
		if err != nil {
			return
		}
	}
}
