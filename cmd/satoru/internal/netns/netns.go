// Package netns builds simulated hosts for tests out of Linux network
// namespaces: one "lan" namespace holds a bridge, every host namespace
// hangs off it by a veth pair and has one IPv4 address of the LAN's
// 10.<n>.0.0/24. The addresses exist only inside these namespaces: the
// root namespace's interfaces, addresses and routes are never touched,
// so it cannot reach the hosts (Forward opens a way in for a test's own
// client). Processes run inside a host with `ip netns exec` (Wrap,
// Command); the filesystem stays shared, as on hosts with a shared mount.
//
// Everything needs root (CI runs the integration tests as root). Every
// namespace is named Prefix<pid>-<lan>-<role>, so Sweep can tell a dead
// test run's leftovers from a live one's.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace this package creates.
const Prefix = "stn"

// runDir is where `ip netns` keeps its named namespaces.
const runDir = "/run/netns"

// lanSeq numbers the LANs of this process: the n of 10.<n>.0.0/24 and
// part of the namespace names, so parallel tests never share either.
var lanSeq atomic.Int32

// LAN is a bridge in a namespace of its own and the hosts attached to it.
type LAN struct {
	name   string // the bridge's namespace
	base   string // Prefix<pid>-<n>: names of the LAN's namespaces start with it
	subnet string // "10.<n>.0"

	mu     sync.Mutex
	hosts  []*Host
	closed bool
}

// Host is one simulated machine: a namespace with loopback up and eth0 on
// the LAN.
type Host struct {
	NS   string // the namespace's name (for `ip netns exec`)
	Addr string // its IPv4 address on the LAN
	Role string
}

// New creates a LAN: the namespace holding bridge br0, both up. Close (or
// the test cleanup of ForTest) deletes it and every host added.
func New(ctx context.Context) (*LAN, error) {
	n := int(lanSeq.Add(1))
	if n > 250 {
		return nil, fmt.Errorf("netns: more than 250 LANs in one process")
	}
	sweepOnce.Do(func() { sweepErr = Sweep(ctx) })
	if sweepErr != nil {
		return nil, sweepErr
	}
	base := fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), n)
	l := &LAN{name: base + "-lan", base: base, subnet: fmt.Sprintf("10.%d.0", n)}
	if err := ip(ctx, "netns", "add", l.name); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"-n", l.name, "link", "set", "lo", "up"},
		{"-n", l.name, "link", "add", "br0", "type", "bridge"},
		{"-n", l.name, "link", "set", "br0", "up"},
	} {
		if err := ip(ctx, args...); err != nil {
			return nil, errors.Join(err, l.Close())
		}
	}
	return l, nil
}

// ForTest is New for a test: it fails the test on error and deletes the
// LAN when the test ends, failed or not. Create the LAN before the
// processes that run in it, so their cleanups (last in, first out) stop
// them before it goes.
func ForTest(t testing.TB) *LAN {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := New(ctx)
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("netns: %v", err)
		}
	})
	return l
}

// Subnet is the LAN's network, "10.<n>.0.0/24".
func (l *LAN) Subnet() string { return l.subnet + ".0/24" }

// AddHost creates a host namespace named after role, with loopback up
// (services inside listen on 127.0.0.1 too) and eth0 on the bridge with
// the next address of the LAN.
func (l *LAN) AddHost(ctx context.Context, role string) (*Host, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("netns: add host %s: the LAN is closed", role)
	}
	i := len(l.hosts) + 1
	if i > 250 {
		l.mu.Unlock()
		return nil, fmt.Errorf("netns: add host %s: the LAN is full", role)
	}
	h := &Host{NS: fmt.Sprintf("%s-%d%s", l.base, i, role), Addr: fmt.Sprintf("%s.%d", l.subnet, i), Role: role}
	// Listed before it exists: Close deletes whatever part was made.
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()

	port := fmt.Sprintf("p%d", i) // the bridge's end, named inside the lan namespace only
	steps := [][]string{
		{"netns", "add", h.NS},
		{"-n", h.NS, "link", "set", "lo", "up"},
		{"-n", l.name, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		{"-n", l.name, "link", "set", port, "master", "br0"},
		{"-n", l.name, "link", "set", port, "up"},
		{"-n", h.NS, "addr", "add", h.Addr + "/24", "dev", "eth0"},
		{"-n", h.NS, "link", "set", "eth0", "up"},
	}
	for _, args := range steps {
		if err := ip(ctx, args...); err != nil {
			return nil, fmt.Errorf("netns: add host %s: %w", role, err)
		}
	}
	return h, nil
}

// Hosts are the LAN's hosts, in the order they were added.
func (l *LAN) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// Close kills what still runs inside the LAN's namespaces and deletes
// them (a namespace's veth end goes with it). It keeps going past an
// error and returns them all; a second call does nothing.
func (l *LAN) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	names := []string{l.name}
	for _, h := range l.hosts {
		names = append(names, h.NS)
	}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	for _, name := range names {
		if err := remove(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// remove SIGKILLs every process still inside the namespace (a test's
// process that outlived its own cleanup would keep the namespace alive
// after its name is gone) and deletes it; a namespace that does not
// exist is not an error.
func remove(ctx context.Context, name string) error {
	if _, err := os.Stat(filepath.Join(runDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, pid := range pidsIn(name) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return ip(ctx, "netns", "del", name)
}

// pidsIn lists the processes whose network namespace is the named one:
// the same device and inode as its bind mount under /run/netns.
func pidsIn(name string) []int {
	var want syscall.Stat_t
	if err := syscall.Stat(filepath.Join(runDir, name), &want); err != nil {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", e.Name(), "ns", "net"), &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
			out = append(out, pid)
		}
	}
	return out
}

var (
	sweepOnce sync.Once
	sweepErr  error
)

// Sweep deletes the namespaces a dead process of this package left
// behind (a test binary killed before its cleanups ran), with whatever
// still runs in them. Those of live processes, this one's included, are
// left alone: parallel test runs may own them. New sweeps once per
// process.
func Sweep(ctx context.Context) error {
	ents, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netns: sweep %s: %w", runDir, err)
	}
	var errs []error
	for _, e := range ents {
		pid, ok := ownerPID(e.Name())
		if !ok || pid == os.Getpid() || alive(pid) {
			continue
		}
		if err := remove(ctx, e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("netns: sweep: %w", err))
		}
	}
	return errors.Join(errs...)
}

// ownerPID reads the pid out of a namespace name this package made.
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return 0, false
	}
	digits, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	return pid, err == nil && pid > 0
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Exists reports whether a namespace of that name is there.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(runDir, name))
	return err == nil
}

// Wrap is the argv prefix that runs a command inside the host.
func (h *Host) Wrap() []string { return []string{"ip", "netns", "exec", h.NS} }

// Command is exec.CommandContext of name and args run inside the host.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	w := h.Wrap()
	return exec.CommandContext(ctx, w[0], append(append(w[1:], name), args...)...)
}

// in runs fn on an OS thread switched into the host's namespace. Sockets
// fn creates belong to the namespace for good, whichever thread uses them
// later. The thread is switched back before it serves other goroutines.
func (h *Host) in(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread goes back to its own namespace and is unlocked: a
		// locked goroutine that exits terminates its thread, and a child
		// process started from that thread earlier (realproc sets
		// Pdeathsig) would be SIGKILLed with it. Only a thread that could
		// not go back stays locked and dies with the goroutine.
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: enter %s: own namespace: %w", h.NS, err)
			return
		}
		defer home.Close()
		f, err := os.Open(filepath.Join(runDir, h.NS))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: enter %s: %w", h.NS, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: enter %s: setns: %w", h.NS, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// DialContext connects from inside the host.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.in(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns: dial %s from %s: %w", addr, h.NS, err)
	}
	return c, nil
}

// Listen listens inside the host.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := h.in(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns: listen on %s in %s: %w", addr, h.NS, err)
	}
	return l, nil
}

// Forwarder accepts TCP connections on 127.0.0.1 of the root namespace
// and connects each to one address inside a host: a test's way in to a
// service on the LAN, which the root namespace has no route to.
type Forwarder struct {
	ln     net.Listener
	host   *Host
	target string

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
	wg    sync.WaitGroup
}

// Forward starts a Forwarder to target (host:port inside h).
func (h *Host) Forward(target string) (*Forwarder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("netns: forward to %s in %s: %w", target, h.NS, err)
	}
	f := &Forwarder{ln: ln, host: h, target: target, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

// Addr is where the Forwarder listens ("127.0.0.1:port").
func (f *Forwarder) Addr() string { return f.ln.Addr().String() }

func (f *Forwarder) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return // closed
		}
		if !f.track(c) {
			return
		}
		f.wg.Add(1)
		go f.serve(c)
	}
}

// track remembers c for Close; false (c closed) once Close ran.
func (f *Forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *Forwarder) serve(c net.Conn) {
	defer f.wg.Done()
	defer f.untrack(c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	up, err := f.host.DialContext(ctx, "tcp", f.target)
	cancel()
	if err != nil {
		return // the client sees the connection close
	}
	if !f.track(up) {
		return
	}
	defer f.untrack(up)
	copied := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Half-close, so the other side sees EOF and its copy ends too.
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		copied <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-copied
	<-copied
}

// Close stops listening, drops every open connection and waits for the
// Forwarder's goroutines.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	f.done = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	err := f.ln.Close()
	f.wg.Wait()
	return err
}

// ip runs the ip tool; a failure names the arguments, the exit code and
// ip's trimmed stderr.
func ip(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 500 {
			msg = msg[:500] + "..."
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("ip %s: exit %d: %s", strings.Join(args, " "), ee.ExitCode(), msg)
		}
		return fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
	}
	return nil
}
