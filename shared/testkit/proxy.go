package testkit

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// StartSlowProxy listens on 127.0.0.1:0 and forwards each connection to
// target after holding it for delay, so a job that connects through it
// takes a known minimum time (for progress, heartbeat and cancel tests).
// It returns the listen address and stops, closing every connection, when
// the test ends.
func StartSlowProxy(t testing.TB, target string, delay time.Duration) (addr string) {
	t.Helper()
	return startProxy(t, target, delay).addr
}

// Proxy forwards TCP connections to a target and can cut them, standing
// in for a network that drops a connection mid-transfer.
type Proxy struct {
	// Addr is the listen address, "127.0.0.1:port".
	Addr string
	// Port is Addr's port.
	Port int
	p    *proxy
}

// StartProxy listens on 127.0.0.1:0 and forwards each connection to
// target at once. It stops, closing every connection, when the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p := startProxy(t, target, 0)
	return &Proxy{Addr: p.addr, Port: p.port, p: p}
}

// Cut closes every connection open through the proxy now, both sides, as
// a dropped link would, and returns how many client connections it cut.
// Connections made afterwards are forwarded as before.
func (x *Proxy) Cut() int {
	x.p.mu.Lock()
	defer x.p.mu.Unlock()
	n := 0
	for c := range x.p.conns {
		if x.p.down[c] {
			n++
		}
		_ = c.Close()
	}
	return n
}

func startProxy(t testing.TB, target string, delay time.Duration) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testkit: slow proxy listen: %v", err)
	}
	p := &proxy{conns: map[net.Conn]struct{}{}, down: map[net.Conn]bool{}, addr: ln.Addr().String(),
		port: ln.Addr().(*net.TCPAddr).Port}
	ctx, cancel := context.WithCancel(context.Background())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // listener closed
			}
			if !p.track(c, true) {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(ctx, c, target, delay)
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return p
}

type proxy struct {
	addr   string
	port   int
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	down   map[net.Conn]bool // client side of a forwarded connection
	closed bool
}

// track records c so cleanup can close it; after cleanup it closes c and
// reports false. client marks the accepted side.
func (p *proxy) track(c net.Conn, client bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	if client {
		p.down[c] = true
	}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.down, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *proxy) serve(ctx context.Context, down net.Conn, target string, delay time.Duration) {
	defer p.untrack(down)
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return
		}
	}
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return // the client sees the connection close, as with a dead host
	}
	if !p.track(up, false) {
		return
	}
	defer p.untrack(up)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(up, down) }()
	go func() { defer wg.Done(); pipe(down, up) }()
	wg.Wait()
}

// pipe copies src to dst and passes on the end of stream as a half close,
// so protocols that close one direction first (ssh does) still finish.
func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		_ = dst.Close()
	}
}
