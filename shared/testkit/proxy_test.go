package testkit

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// TestProxyCut checks that Cut ends an open connection on both sides and
// that the proxy forwards new connections afterwards.
func TestProxyCut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	serverDone := make(chan error, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// A line echo server; its read ends when the proxy cuts.
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						serverDone <- err
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						serverDone <- err
						return
					}
				}
			}()
		}
	}()
	p := StartProxy(t, ln.Addr().String())
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	echo := func(c net.Conn, r *bufio.Reader, msg string) error {
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			return err
		}
		got, err := r.ReadString('\n')
		if err == nil && got != msg+"\n" {
			t.Fatalf("echo %q, got %q", msg, got)
		}
		return err
	}

	c, r := dial()
	if err := echo(c, r, "before"); err != nil {
		t.Fatal(err)
	}
	if n := p.Cut(); n != 1 {
		t.Errorf("Cut() = %d, want 1 connection", n)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("client read succeeded after the cut")
	}
	select {
	case <-serverDone:
	case <-time.After(5 * time.Second):
		t.Error("server side still open after the cut")
	}
	c2, r2 := dial()
	if err := echo(c2, r2, "after"); err != nil {
		t.Fatalf("new connection after the cut: %v", err)
	}
}
