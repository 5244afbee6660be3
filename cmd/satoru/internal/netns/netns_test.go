package netns

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/testkit"
)

// TestTwoHosts: two hosts on one LAN reach each other by their LAN
// addresses, the root namespace reaches neither (and got no address or
// route of theirs), Command runs inside a host, a Forwarder lets the
// root namespace in, and Close leaves no namespace behind.
func TestTwoHosts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("network namespaces need root; run the integration tests as root (CI does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rootAddrs := interfaceAddrs(t)

	lan, err := New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = lan.Close()
		}
	})
	a, err := lan.AddHost(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lan.AddHost(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if a.Addr == b.Addr {
		t.Fatalf("both hosts have address %s", a.Addr)
	}

	// A line server inside a, on its LAN address.
	ln, err := a.Listen("tcp", net.JoinHostPort(a.Addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "a got %s", line)
			}()
		}
	}()
	target := ln.Addr().String()

	c, err := b.DialContext(ctx, "tcp", target)
	if err != nil {
		t.Fatalf("b cannot reach a: %v", err)
	}
	if got := roundTrip(t, c, "hello from b"); got != "a got hello from b\n" {
		t.Errorf("b <-> a: %q", got)
	}

	// The root namespace has no route to the LAN: the dial must fail
	// (unreachable, or no answer within 2 s).
	d := net.Dialer{Timeout: 2 * time.Second}
	if c, err := d.DialContext(ctx, "tcp", target); err == nil {
		c.Close()
		t.Errorf("the root namespace reached %s, which must exist only inside the LAN", target)
	}
	after := interfaceAddrs(t)
	for addr := range after {
		if !rootAddrs[addr] {
			t.Errorf("the root namespace gained address %s", addr)
		}
	}
	for addr := range after {
		if strings.HasPrefix(addr, a.Addr+"/") || strings.HasPrefix(addr, b.Addr+"/") {
			t.Errorf("the root namespace holds LAN address %s", addr)
		}
	}

	// Command runs inside a: its eth0 holds a's address.
	out, err := a.Command(ctx, "ip", "-o", "-4", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr inside %s: %v: %s", a.NS, err, out)
	}
	if !strings.Contains(string(out), " "+a.Addr+"/24 ") {
		t.Errorf("eth0 inside %s: %q, want %s/24", a.NS, out, a.Addr)
	}

	// The Forwarder: from the root namespace's loopback into a.
	f, err := b.Forward(target)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := net.DialTimeout("tcp", f.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, fc, "via the forwarder"); got != "a got via the forwarder\n" {
		t.Errorf("forwarded: %q", got)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close forwarder: %v", err)
	}

	names := []string{lan.name, a.NS, b.NS}
	closed = true
	if err := lan.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if Exists(n) {
			t.Errorf("namespace %s still exists after Close", n)
		}
	}
}

// TestSweep: a namespace named for a process that no longer exists is
// deleted; one of this (live) process is kept.
func TestSweep(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("network namespaces need root; run the integration tests as root (CI does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dead := fmt.Sprintf("%s%d-1-lan", Prefix, deadPID(t))
	mine := fmt.Sprintf("%s%d-999-lan", Prefix, os.Getpid())
	for _, n := range []string{dead, mine} {
		if err := ip(ctx, "netns", "add", n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = remove(context.Background(), n) })
	}
	if err := Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if Exists(dead) {
		t.Errorf("Sweep kept %s, whose process is gone", dead)
	}
	if !Exists(mine) {
		t.Errorf("Sweep deleted %s, whose process (this one) lives", mine)
	}
}

// deadPID is a pid no process has: above the kernel's pid_max.
func deadPID(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	var max int
	if _, err := fmt.Sscan(string(b), &max); err != nil {
		t.Fatal(err)
	}
	return max + 1
}

func roundTrip(t *testing.T, c net.Conn, line string) string {
	t.Helper()
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(c, line); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(got)
}

func interfaceAddrs(t *testing.T) map[string]bool {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, a := range addrs {
		out[a.String()] = true
	}
	return out
}

// TestEdgeHostInside: a testkit edge host (real sshd) runs inside one
// host namespace on its LAN address; another host logs in to it over
// ssh, the root namespace cannot reach it, and Crash and Restart work on
// the sshd inside.
func TestEdgeHostInside(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("network namespaces need root; run the integration tests as root (CI does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lan := ForTest(t)
	edgeNS, err := lan.AddHost(ctx, "edge")
	if err != nil {
		t.Fatal(err)
	}
	client, err := lan.AddHost(ctx, "cli")
	if err != nil {
		t.Fatal(err)
	}
	e := testkit.StartEdgeHostWith(t, testkit.EdgeOptions{ListenHost: edgeNS.Addr, Wrap: edgeNS.Wrap(), Dial: edgeNS.DialContext})
	if e.Host != edgeNS.Addr {
		t.Fatalf("edge host on %s, want %s", e.Host, edgeNS.Addr)
	}
	login := func() (string, error) {
		out, err := client.Command(ctx, "ssh", e.SSHArgs("", "echo inside $SSH_CONNECTION")...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	out, err := login()
	if err != nil {
		t.Fatalf("ssh from %s to the edge at %s:%d: %v: %s", client.NS, e.Host, e.Port, err, out)
	}
	// SSH_CONNECTION: client address, client port, server address, port.
	if f := strings.Fields(out); len(f) != 5 || f[1] != client.Addr || f[3] != edgeNS.Addr {
		t.Errorf("ssh session says %q, want a connection from %s to %s", out, client.Addr, edgeNS.Addr)
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	if c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(e.Host, fmt.Sprint(e.Port))); err == nil {
		c.Close()
		t.Errorf("the root namespace reached the edge's sshd at %s:%d", e.Host, e.Port)
	}
	e.Crash(t)
	if out, err := login(); err == nil {
		t.Errorf("ssh succeeded while the edge's sshd was crashed: %s", out)
	}
	e.Restart(t)
	if out, err := login(); err != nil {
		t.Errorf("ssh after Restart: %v: %s", err, out)
	}
}

// TestEnteringAHostKillsNoChild: a child process started with
// Pdeathsig (as realproc starts satoru) survives many dials into a
// host. Pdeathsig fires when the thread that started the child ends,
// and a goroutine that exits locked to its thread ends that thread: in
// must hand its thread back, not let it die.
func TestEnteringAHostKillsNoChild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("network namespaces need root; run the integration tests as root (CI does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lan := ForTest(t)
	h, err := lan.AddHost(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := h.Listen("tcp", h.Addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	// Children started from many goroutines, so from many threads, and
	// dials from many goroutines at once, so the threads entering the
	// host are the ones that started the children.
	children := make([]*exec.Cmd, 16)
	var wg sync.WaitGroup
	for i := range children {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := exec.Command("sleep", "60")
			c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := c.Start(); err != nil {
				t.Error(err)
				return
			}
			children[i] = c
		}()
	}
	wg.Wait()
	for _, c := range children {
		if c != nil {
			t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for range 50 {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := h.DialContext(ctx, "tcp", ln.Addr().String())
				if err != nil {
					t.Error(err)
					return
				}
				_ = c.Close()
			}()
		}
		wg.Wait()
	}
	time.Sleep(200 * time.Millisecond)
	for _, c := range children {
		// A killed child is a zombie until waited for: read its state.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		if i := strings.LastIndexByte(string(b), ')'); err != nil || i < 0 || i+2 >= len(b) || b[i+2] == 'Z' {
			t.Fatalf("child %d died while the test entered the host (stat %q, %v)", c.Process.Pid, b, err)
		}
	}
}
