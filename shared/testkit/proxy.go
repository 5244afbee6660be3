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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testkit: slow proxy listen: %v", err)
	}
	p := &proxy{conns: map[net.Conn]struct{}{}}
	ctx, cancel := context.WithCancel(context.Background())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // listener closed
			}
			if !p.track(c) {
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
	return ln.Addr().String()
}

type proxy struct {
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// track records c so cleanup can close it; after cleanup it closes c and
// reports false.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
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
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		return
	}
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return // the client sees the connection close, as with a dead host
	}
	if !p.track(up) {
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
