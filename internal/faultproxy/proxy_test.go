package faultproxy

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// echoServer answers each line with "ok <line>".
func echoServer(t *testing.T) (addr string, got chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got = make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					got <- strings.TrimSpace(line)
					if _, err := c.Write([]byte("ok " + line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), got
}

func dial(t *testing.T, p *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func TestProxyForwardsAndCuts(t *testing.T) {
	addr, got := echoServer(t)
	p, err := New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, r := dial(t, p)
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "ok hello\n" {
		t.Fatalf("reply %q, %v", line, err)
	}
	<-got

	// The cut request reaches the server; its reply does not come back.
	p.CutAfter([]byte("commit"))
	if _, err := c.Write([]byte("commit 1\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case line := <-got:
		if line != "commit 1" {
			t.Fatalf("server got %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cut request did not reach the server")
	}
	if line, err := r.ReadString('\n'); err == nil {
		t.Fatalf("a reply %q came back through a cut connection", line)
	}
	if p.Cuts() != 1 {
		t.Fatalf("Cuts = %d", p.Cuts())
	}
}

func TestProxyBlackholeHoldsBytes(t *testing.T) {
	addr, got := echoServer(t)
	p, err := New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, r := dial(t, p)
	p.Blackhole(true)
	if _, err := c.Write([]byte("held\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case line := <-got:
		t.Fatalf("server got %q through a blackhole", line)
	case <-time.After(100 * time.Millisecond): // a negative check: nothing may arrive
	}
	p.Blackhole(false)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "ok held\n" {
		t.Fatalf("after the blackhole: %q, %v", line, err)
	}
	p.ResetAll()
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("read from a reset connection succeeded")
	}
}
