package realproc

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

const testDelay = 25 * time.Millisecond

// startEcho is a TCP server on 127.0.0.1 that writes back what it reads;
// when the client half-closes, it sends the SHA-256 of everything it got
// and closes. It stops when the test ends.
func startEcho(t *testing.T, echo bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				h := sha256.New()
				var w io.Writer = h
				if echo {
					w = io.MultiWriter(h, c)
				}
				if _, err := io.Copy(w, c); err != nil {
					return
				}
				_, _ = c.Write(h.Sum(nil))
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip is the time of one small write-and-read-back over c.
func roundTrip(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	msg := []byte("ping")
	got := make([]byte, len(msg))
	t0 := time.Now()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo: got %q, want %q", got, msg)
	}
	return time.Since(t0)
}

func TestDelayProxyRoundTrip(t *testing.T) {
	echo := startEcho(t, true)
	p := StartDelayProxy(t, echo, testDelay)
	direct, err := net.Dial("tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	via, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer via.Close()
	for i := range 5 {
		d, v := roundTrip(t, direct), roundTrip(t, via)
		t.Logf("round trip %d: direct %s, through the proxy %s", i, d, v)
		if v < 2*testDelay {
			t.Errorf("round trip %d through the proxy took %s, want at least 2 x %s", i, v, testDelay)
		}
		// Generous: a busy shared machine may add scheduling delay, but
		// not a third delay.
		if v > 3*testDelay+d+100*time.Millisecond {
			t.Errorf("round trip %d through the proxy took %s (direct %s), want about 2 x %s", i, v, d, testDelay)
		}
	}
	if p.Accepted() != 1 {
		t.Errorf("Accepted = %d, want 1", p.Accepted())
	}
}

// send writes n random bytes to addr, half-closes, and returns the time
// until the server's digest arrived, checking it.
func send(t *testing.T, addr string, data []byte) time.Duration {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t0 := time.Now()
	if _, err := c.Write(data); err != nil {
		t.Fatalf("write %d bytes to %s: %v", len(data), addr, err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read digest from %s: %v", addr, err)
	}
	took := time.Since(t0)
	if want := sha256.Sum256(data); !bytes.Equal(got, want[:]) {
		t.Fatalf("digest through %s: got %x, want %x: data lost or reordered", addr, got, want)
	}
	return took
}

// The delay is latency, not a bandwidth limit: 20 MB through the proxy
// take about as long as directly, plus the delay (a proxy that slept
// before each chunk's write would take 640 x 25 ms = 16 s).
func TestDelayProxyBulkTransfer(t *testing.T) {
	sink := startEcho(t, false)
	p := StartDelayProxy(t, sink, testDelay)
	data := make([]byte, 20<<20)
	r := rand.NewChaCha8([32]byte{1, 2, 3})
	_, _ = r.Read(data)
	direct := send(t, sink, data)
	via := send(t, p.Addr, data)
	t.Logf("20 MiB one way: direct %s, through the proxy %s", direct, via)
	if via < 2*testDelay {
		t.Errorf("20 MiB through the proxy took %s: less than its round trip of 2 x %s", via, testDelay)
	}
	if via > direct+time.Second {
		t.Errorf("20 MiB through the proxy took %s, directly %s: the delay must not throttle throughput", via, direct)
	}
}

// Close cuts open connections and ends every goroutine of the proxy.
func TestDelayProxyCloseStopsEverything(t *testing.T) {
	echo := startEcho(t, true)
	before := runtime.NumGoroutine()
	p, err := NewDelayProxy(echo, testDelay)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(t, c)
		conns = append(conns, c)
	}
	// One write left in flight inside the proxy.
	if _, err := conns[0].Write([]byte("in flight")); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5 s")
	}
	p.Close() // twice is fine
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		for {
			_, err := c.Read(buf)
			if err == nil {
				continue // the echo of the in-flight write may still come
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("connection %d still open 5 s after Close", i)
			}
			break
		}
	}
	if _, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
		t.Error("the proxy still accepts connections after Close")
	}
	// The echo server's own handlers end once their clients close.
	for _, c := range conns {
		_ = c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after Close, %d before it started:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
