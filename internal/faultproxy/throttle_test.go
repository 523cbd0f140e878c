package faultproxy

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

func TestThrottleSlowReader(t *testing.T) {
	addr, _ := echoServer(t)
	th, err := NewThrottle(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = th.Close() })
	c, err := net.Dial("tcp", th.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := bufio.NewReader(c)
	line := strings.Repeat("x", 2000) + "\n"
	roundTrip := func() time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != "ok "+line {
			t.Fatalf("got %d bytes, %v", len(got), err)
		}
		return time.Since(start)
	}
	if d := roundTrip(); d > time.Second {
		t.Errorf("unthrottled round trip took %v", d)
	}
	th.SetReadRate(4000) // 2003 bytes back in 512-byte steps: the last one after about 0.38 s
	if d := roundTrip(); d < 300*time.Millisecond {
		t.Errorf("throttled to 4000 B/s, a 2003-byte reply took only %v", d)
	}
	th.SetReadRate(0)
	if d := roundTrip(); d > time.Second {
		t.Errorf("after the throttle was lifted, a round trip took %v", d)
	}
}
