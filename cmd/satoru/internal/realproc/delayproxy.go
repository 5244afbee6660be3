package realproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// delayQueue bounds the chunks in flight in one direction of one
// connection. With 32 KiB reads that is 8 MiB: at 25 ms of delay it caps a
// connection at ~320 MiB/s, well above what ssh carries here, so the delay
// adds latency and not a bandwidth limit.
const (
	delayChunk = 32 << 10
	delayQueue = 256
)

// DelayProxy is a TCP proxy on 127.0.0.1 that holds every chunk it reads
// for Delay before writing it on, in each direction: a round trip through
// it costs 2 x Delay more, as over a long-distance link, while data keeps
// streaming (a reader goroutine stamps each chunk, a writer goroutine
// releases it when its time has come), so throughput stays high. The
// kernel here has no netem; this stands in for it.
type DelayProxy struct {
	Addr  string // host:port to connect to instead of the target
	Port  int
	Delay time.Duration

	target string
	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	accepted int
	once     sync.Once
}

// StartDelayProxy listens on 127.0.0.1:0 and forwards every connection to
// target (host:port) with delay each way. It is closed when the test ends.
func StartDelayProxy(tb testing.TB, target string, delay time.Duration) *DelayProxy {
	tb.Helper()
	p, err := NewDelayProxy(target, delay)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// NewDelayProxy is StartDelayProxy without a test: the caller Closes it.
func NewDelayProxy(target string, delay time.Duration) (*DelayProxy, error) {
	if delay < 0 {
		return nil, fmt.Errorf("delay proxy to %s: negative delay %s", target, delay)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("delay proxy to %s: listen: %w", target, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &DelayProxy{Addr: ln.Addr().String(), Port: ln.Addr().(*net.TCPAddr).Port, Delay: delay,
		target: target, ln: ln, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Accepted is how many connections the proxy has taken so far.
func (p *DelayProxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops listening, cuts every connection and returns once every
// goroutine of the proxy has ended. It may be called more than once.
func (p *DelayProxy) Close() {
	p.once.Do(func() {
		p.cancel()
		_ = p.ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
	})
	p.wg.Wait()
}

// track registers c so Close can cut it; false once the proxy is closing.
func (p *DelayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *DelayProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *DelayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if !p.track(c) {
			_ = c.Close()
			return
		}
		p.mu.Lock()
		p.accepted++
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve connects one client to the target and relays both directions
// until both have ended, or the proxy closes.
func (p *DelayProxy) serve(down net.Conn) {
	defer p.wg.Done()
	var d net.Dialer
	up, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		p.untrack(down)
		_ = down.Close()
		return
	}
	if !p.track(up) {
		p.untrack(down)
		_ = down.Close()
		_ = up.Close()
		return
	}
	var dirs sync.WaitGroup
	failed := make(chan struct{})
	var failOnce sync.Once
	fail := func() { failOnce.Do(func() { close(failed) }) }
	dirs.Add(2)
	go func() { defer dirs.Done(); p.relay(up, down, fail, failed) }()
	go func() { defer dirs.Done(); p.relay(down, up, fail, failed) }()
	// Either side's error ends the connection at once; a clean EOF in one
	// direction only half-closes, so the other can finish.
	go func() {
		select {
		case <-failed:
		case <-p.ctx.Done():
		}
		_ = down.Close()
		_ = up.Close()
	}()
	dirs.Wait()
	fail()
	p.untrack(down, up)
}

// chunk is data read at a time; nil data with eof set marks the end.
type chunk struct {
	data []byte
	due  time.Time
	eof  bool
}

// relay copies src to dst, each chunk Delay after it was read. On EOF it
// half-closes dst (also after Delay); on an error it calls fail.
func (p *DelayProxy) relay(dst, src net.Conn, fail func(), failed <-chan struct{}) {
	q := make(chan chunk, delayQueue)
	done := make(chan struct{})
	go func() {
		defer close(done)
		timer := time.NewTimer(time.Hour)
		defer timer.Stop()
		for c := range q {
			if wait := time.Until(c.due); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-failed:
					return
				case <-p.ctx.Done():
					return
				}
			}
			if c.eof {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				return
			}
			if _, err := dst.Write(c.data); err != nil {
				fail()
				return
			}
		}
	}()
	defer func() { close(q); <-done }()
	for {
		buf := make([]byte, delayChunk)
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case q <- chunk{data: buf[:n], due: time.Now().Add(p.Delay)}:
			case <-done: // the writer gave up
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				fail()
				return
			}
			select {
			case q <- chunk{eof: true, due: time.Now().Add(p.Delay)}:
			case <-done:
			}
			return
		}
	}
}
