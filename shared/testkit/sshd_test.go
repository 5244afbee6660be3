package testkit

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/proc"
)

func TestTwoEdgeHostsAtOnce(t *testing.T) {
	hosts := make([]*EdgeHost, 2)
	// Start both concurrently: that is how parallel tests will use them. A
	// failed start calls t.Fatalf, which ends only its goroutine; the nil
	// check below then stops the test.
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hosts[i] = StartEdgeHost(t)
		}()
	}
	wg.Wait()
	if hosts[0] == nil || hosts[1] == nil {
		t.Fatal("an edge host did not start")
	}
	if hosts[0].Port == hosts[1].Port {
		t.Fatalf("both hosts on port %d", hosts[0].Port)
	}
	if hosts[0].HostKeyLine == hosts[1].HostKeyLine {
		t.Fatal("both hosts share a host key")
	}
	for i, h := range hosts {
		out := h.Run(t, "echo edge-"+strconv.Itoa(i)+" $(id -un)")
		if want := "edge-" + strconv.Itoa(i) + " " + h.User + "\n"; out != want {
			t.Errorf("host %d: output %q, want %q", i, out, want)
		}
		if !strings.HasPrefix(h.HostKeyLine, "ssh-ed25519 AAAA") {
			t.Errorf("host %d: HostKeyLine %q", i, h.HostKeyLine)
		}
		fi, err := os.Stat(h.Dir)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("host %d: Dir %s: %v %v", i, h.Dir, fi.Mode(), err)
		}
	}
	// Host 0's key must not open host 1: each host pins its own key.
	args := hosts[0].SSHArgs(net.JoinHostPort(hosts[1].Host, strconv.Itoa(hosts[1].Port)), "true")
	_, err := proc.Run(context.Background(), proc.Cmd{Path: "ssh", Args: args, Timeout: 30 * time.Second})
	var ee *proc.ExitError
	if !errors.As(err, &ee) || ee.Code != 255 || !strings.Contains(ee.Stderr, "REMOTE HOST IDENTIFICATION HAS CHANGED") {
		t.Errorf("host 0's pin against host 1: %v, want a host key mismatch", err)
	}
}

func TestEdgeHostStop(t *testing.T) {
	h := StartEdgeHost(t)
	h.Run(t, "true")
	h.Stop()
	h.Stop() // idempotent
	c, err := net.DialTimeout("tcp", net.JoinHostPort(h.Host, strconv.Itoa(h.Port)), time.Second)
	if err == nil {
		c.Close()
		t.Fatal("port still accepts connections after Stop")
	}
}

func TestEdgeHostCrashAndRestart(t *testing.T) {
	h := StartEdgeHost(t)
	hostKey, port := h.HostKeyLine, h.Port
	// A session in progress when the host crashes must drop, not finish.
	done := make(chan error, 1)
	go func() {
		_, err := proc.Run(context.Background(), proc.Cmd{Path: "ssh", Args: h.SSHArgs("", "echo started; sleep 30"), Timeout: time.Minute})
		done <- err
	}()
	deadline := time.Now().Add(20 * time.Second)
	for h.Logins() == 0 || len(descendantPIDs(h.cmd.Process.Pid)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no session logged in")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	h.Crash(t)
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the session survived the crash")
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("the session dropped only after %s", took)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the session still runs 20s after the crash")
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(h.Host, strconv.Itoa(port)), time.Second)
	if err == nil {
		c.Close()
		t.Fatal("port still accepts connections after Crash")
	}
	h.Restart(t)
	if h.Port != port || h.HostKeyLine != hostKey {
		t.Fatalf("restarted on port %d with key %q, want port %d and the same key", h.Port, h.HostKeyLine, port)
	}
	if out := h.Run(t, "echo back"); out != "back\n" {
		t.Fatalf("after restart: %q", out)
	}
	if h.Logins() < 2 {
		t.Errorf("Logins = %d after a login before and after the restart", h.Logins())
	}
	h.Stop() // the restarted daemon stops too
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(h.Host, strconv.Itoa(port)), time.Second); err == nil {
		c.Close()
		t.Fatal("port still accepts connections after Stop of the restarted host")
	}
}

func TestSlowProxyDelaysSSH(t *testing.T) {
	h := StartEdgeHost(t)
	const delay = 400 * time.Millisecond
	addr := StartSlowProxy(t, net.JoinHostPort(h.Host, strconv.Itoa(h.Port)), delay)
	start := time.Now()
	res, err := proc.Run(context.Background(), proc.Cmd{Path: "ssh", Args: h.SSHArgs(addr, "echo through-proxy"), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(res.Stdout); got != "through-proxy\n" {
		t.Errorf("output %q", got)
	}
	if elapsed := time.Since(start); elapsed < delay {
		t.Errorf("ssh through the proxy took %v, less than the %v delay", elapsed, delay)
	}
}

func TestSlowProxyPipesBothWaysWithHalfClose(t *testing.T) {
	// An echo server that answers only after the client's half close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				_, _ = c.Write(append([]byte("echo:"), b...))
			}()
		}
	}()
	addr := StartSlowProxy(t, ln.Addr().String(), 100*time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "echo:ping" {
		t.Errorf("got %q", got)
	}
}

func TestFreePort(t *testing.T) {
	p := FreePort(t)
	if p <= 0 || p > 65535 {
		t.Fatalf("port %d", p)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("port %d not bindable: %v", p, err)
	}
	l.Close()
}
