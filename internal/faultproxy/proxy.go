// Package faultproxy is a TCP proxy for tests that injects network faults
// between a client and a server: added latency, a blackhole (bytes are
// held, connections stay open), reset connections, and "cut after": the
// connection is reset right after the client's bytes containing a given
// pattern were forwarded, so the request reaches the server but its reply
// never reaches the client (an ambiguous outcome).
package faultproxy

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards connections from its own loopback address to a target.
// It owns its goroutines: Close stops them and waits.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu        sync.Mutex
	conns     map[*pair]struct{}
	latency   time.Duration
	blackhole bool
	resume    chan struct{} // closed when a blackhole ends
	cutAfter  []byte        // reset after forwarding client bytes holding it (once)
	cuts      int
	closed    bool
}

type pair struct {
	client, server net.Conn
	cut            atomic.Bool // set before the cut request is forwarded: nothing goes back after it
}

func (p *pair) close() {
	_ = p.client.Close()
	_ = p.server.Close()
}

// New listens on 127.0.0.1 (a free port) and forwards to target.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, conns: map[*pair]struct{}{}, resume: make(chan struct{})}
	close(p.resume)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's address as a nats:// URL.
func (p *Proxy) URL() string { return "nats://" + p.Addr() }

// SetLatency delays every forwarded chunk, both ways, by d.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// Blackhole holds every byte (both ways) while on, without closing
// connections; turning it off forwards what was held.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && !p.blackhole:
		p.resume = make(chan struct{})
	case !on && p.blackhole:
		close(p.resume)
	}
	p.blackhole = on
}

// ResetAll closes every open connection (clients see a connection reset
// and reconnect through the proxy).
func (p *Proxy) ResetAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[*pair]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		c.close()
	}
}

// CutAfter arms a one-shot fault: the next chunk of client bytes holding
// pattern is forwarded to the server, and then that connection is reset,
// so the server acts on the request but its reply is lost.
func (p *Proxy) CutAfter(pattern []byte) {
	p.mu.Lock()
	p.cutAfter = append([]byte(nil), pattern...)
	p.mu.Unlock()
}

// Cuts returns how many CutAfter faults fired.
func (p *Proxy) Cuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	if p.blackhole {
		close(p.resume)
		p.blackhole = false
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.ResetAll()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		pr := &pair{client: c, server: s}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			pr.close()
			return
		}
		p.conns[pr] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(pr, c, s, true)
		go p.pipe(pr, s, c, false)
	}
}

// pipe copies from src to dst, applying the current faults to each chunk.
func (p *Proxy) pipe(pr *pair, src, dst net.Conn, fromClient bool) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, pr)
		p.mu.Unlock()
		pr.close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			latency, resume := p.latency, p.resume
			cut := fromClient && len(p.cutAfter) > 0 && bytes.Contains(buf[:n], p.cutAfter)
			if cut {
				p.cutAfter = nil
				p.cuts++
			}
			p.mu.Unlock()
			<-resume
			if latency > 0 {
				time.Sleep(latency)
			}
			if cut {
				pr.cut.Store(true)
			}
			if !fromClient && pr.cut.Load() {
				return // the reply of a cut request, or anything after it
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if cut {
				return // the deferred close resets both sides after the forward
			}
		}
		if err != nil {
			return // EOF, or a reset: the deferred close ends the pair
		}
	}
}
