package testkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/proc"
)

// SSHDPath is the sshd binary. sshd refuses to start from a relative
// path (it re-executes itself), so this is absolute.
const SSHDPath = "/usr/sbin/sshd"

// EdgeHost is a real sshd on 127.0.0.1 (or EdgeOptions.ListenHost)
// standing in for a site. The "remote" side is this machine, so tests
// create remote data under Dir directly or with Run.
type EdgeHost struct {
	Host string // 127.0.0.1 unless EdgeOptions.ListenHost
	Port int
	User string // the current user (root in CI)
	// KeyPath is the client private key authorized on this host.
	KeyPath string
	// HostKeyLine is the host's public key, "ssh-ed25519 AAAA...".
	HostKeyLine string
	// Dir is a temp root for test data on the remote side (0700).
	Dir string
	// HostKeyAlias and KnownHostsFile pin HostKeyLine the way Satoru pins a
	// site: a known_hosts file holding "<alias> <type> <key>", used with
	// -o HostKeyAlias=<alias>.
	HostKeyAlias   string
	KnownHostsFile string

	cfg      string // sshd_config, kept for Restart
	opts     EdgeOptions
	cmd      *exec.Cmd
	log      *syncTail
	done     chan struct{} // closed when sshd has exited
	stopOnce sync.Once
}

// EdgeOptions put an edge host somewhere other than this machine's
// loopback, e.g. inside a network namespace standing in for another host.
type EdgeOptions struct {
	// ListenHost is the address sshd listens on and Host reports; ""
	// means 127.0.0.1.
	ListenHost string
	// Wrap is an argv prefix sshd runs under, e.g. `ip netns exec <ns>`;
	// it must exec sshd in place, so the pid started is sshd's.
	Wrap []string
	// Dial reaches ListenHost for the readiness check (from inside the
	// namespace, say); nil dials from here.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// StartEdgeHost starts sshd with its own ed25519 host key, a fresh client
// key pair and authorized_keys, all in t.TempDir(), on a free loopback
// port, and returns once the port answers with an SSH banner. The host is
// stopped when the test ends; several may run at once.
func StartEdgeHost(t testing.TB) *EdgeHost {
	t.Helper()
	return StartEdgeHostWith(t, EdgeOptions{})
}

// StartEdgeHostWith is StartEdgeHost placed as o says.
func StartEdgeHostWith(t testing.TB, o EdgeOptions) *EdgeHost {
	t.Helper()
	if o.ListenHost == "" {
		o.ListenHost = "127.0.0.1"
	}
	if os.Geteuid() != 0 {
		t.Fatalf("testkit: StartEdgeHost needs root: sshd must run privileged to log a user in and read its host key; run the integration tests as root (CI does)")
	}
	if _, err := os.Stat(SSHDPath); err != nil {
		t.Fatalf("testkit: %s not found (install openssh-server): %v", SSHDPath, err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("testkit: current user: %v", err)
	}
	// sshd insists on its privilege-separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("testkit: create /run/sshd: %v", err)
	}

	root := t.TempDir()
	etc := filepath.Join(root, "etc")
	data := filepath.Join(root, "data")
	for _, d := range []string{root, etc, data} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatalf("testkit: %v", err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			t.Fatalf("testkit: %v", err)
		}
	}
	hostKey := filepath.Join(etc, "ssh_host_ed25519_key")
	clientKey := filepath.Join(etc, "client_ed25519")
	keygen(t, hostKey, "satoru-test-host")
	keygen(t, clientKey, "satoru-test-client")
	clientPub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	authorized := filepath.Join(etc, "authorized_keys")
	writeFile(t, authorized, string(clientPub))
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	f := strings.Fields(string(hostPub))
	if len(f) < 2 {
		t.Fatalf("testkit: unexpected host public key %q", hostPub)
	}

	h := &EdgeHost{
		Host:        o.ListenHost,
		opts:        o,
		User:        u.Username,
		KeyPath:     clientKey,
		HostKeyLine: f[0] + " " + f[1],
		Dir:         data,
	}
	// FreePort closes its probe listener before sshd binds, so another
	// process can take the port in between: retry with a new one.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := FreePort(t)
		cfg := filepath.Join(etc, "sshd_config")
		writeFile(t, cfg, sshdConfig(o.ListenHost, port, hostKey, authorized, filepath.Join(etc, "sshd.pid"), u.Username))
		err := h.start(cfg)
		if err == nil {
			h.Port, h.cfg = port, cfg
			break
		}
		lastErr = err
		if !errors.Is(err, errBind) {
			t.Fatalf("testkit: start sshd: %v", err)
		}
	}
	if h.Port == 0 {
		t.Fatalf("testkit: start sshd: no free port after 5 attempts: %v", lastErr)
	}
	h.HostKeyAlias = fmt.Sprintf("satoru-test-edge-%d", h.Port)
	h.KnownHostsFile = filepath.Join(etc, "known_hosts")
	writeFile(t, h.KnownHostsFile, h.HostKeyAlias+" "+h.HostKeyLine+"\n")

	t.Cleanup(func() {
		h.Stop()
		if t.Failed() {
			t.Logf("testkit: sshd on port %d logged:\n%s", h.Port, h.log.String())
		}
	})
	return h
}

// sshdConfig is a minimal, locked-down sshd configuration: key login for
// one user only, nothing read from /etc/ssh.
func sshdConfig(host string, port int, hostKey, authorized, pidFile, userName string) string {
	return strings.Join([]string{
		"ListenAddress " + net.JoinHostPort(host, strconv.Itoa(port)),
		"HostKey " + hostKey,
		"AuthorizedKeysFile " + authorized,
		"PidFile " + pidFile,
		"UsePAM no",
		// The temp dirs belong to the test, not to a hardened home.
		"StrictModes no",
		"PermitRootLogin prohibit-password",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"AllowUsers " + userName,
		"UseDNS no",
		"PrintMotd no",
		"PrintLastLog no",
		// Parallel tests and multiplexed (ControlMaster) sessions.
		"MaxStartups 100",
		"MaxSessions 50",
		"LogLevel INFO",
		"",
	}, "\n")
}

var errBind = errors.New("port in use")

// start runs sshd with cfg and waits for its banner.
func (h *EdgeHost) start(cfg string) error {
	log := h.log // a restarted daemon logs on after the first one
	if log == nil {
		log = &syncTail{max: 64 << 10, count: "Accepted publickey for "}
	}
	argv := append(append([]string(nil), h.opts.Wrap...), SSHDPath, "-D", "-e", "-f", cfg)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = log
	cmd.Stderr = log
	// Own process group: a Ctrl-C of `go test` is not the daemon's to see,
	// and Stop ends it explicitly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()

	port := portOf(cfg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			out := log.String()
			if strings.Contains(out, "Address already in use") || strings.Contains(out, "Cannot bind any address") {
				return fmt.Errorf("%w: %s", errBind, strings.TrimSpace(out))
			}
			return fmt.Errorf("sshd exited: %s", strings.TrimSpace(out))
		default:
		}
		if banner(h.opts, port) {
			h.cmd, h.log, h.done = cmd, log, done
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("sshd gave no banner on %s:%d within 10s: %s", h.opts.ListenHost, port, strings.TrimSpace(log.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func portOf(cfg string) int {
	b, _ := os.ReadFile(cfg)
	for _, line := range strings.Split(string(b), "\n") {
		if addr, ok := strings.CutPrefix(line, "ListenAddress "); ok {
			_, p, _ := net.SplitHostPort(addr)
			n, _ := strconv.Atoi(p)
			return n
		}
	}
	return 0
}

// banner reports whether an SSH server answers on the port: accepting TCP
// is not enough, sshd must have got as far as speaking.
func banner(o EdgeOptions, port int) bool {
	dial := o.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := dial(ctx, "tcp", net.JoinHostPort(o.ListenHost, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-")
}

// Logins is how many ssh connections have logged in so far (sessions
// multiplexed over a master connection are not logins).
func (h *EdgeHost) Logins() int {
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	return h.log.seen
}

// Stop ends sshd: SIGTERM, then SIGKILL if it lingers. Sessions already
// open are separate processes and end when their clients disconnect; new
// connections are refused. Safe to call more than once.
func (h *EdgeHost) Stop() {
	h.stopOnce.Do(func() {
		if h.cmd == nil || h.cmd.Process == nil {
			return
		}
		_ = h.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.done:
		case <-time.After(5 * time.Second):
			_ = h.cmd.Process.Kill()
			<-h.done
		}
	})
}

// Crash ends the host the hard way: SIGKILL to sshd and to every process
// below it (the per-connection sessions and what they run), so open
// connections drop at once instead of finishing. Restart brings it back.
func (h *EdgeHost) Crash(t testing.TB) {
	t.Helper()
	if h.cmd == nil || h.cmd.Process == nil {
		t.Fatalf("testkit: crash sshd on port %d: not running", h.Port)
	}
	// Collected first: once the daemon is gone its sessions are
	// reparented and no longer found under it.
	pids := append([]int{h.cmd.Process.Pid}, descendantPIDs(h.cmd.Process.Pid)...)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("testkit: sshd on port %d still running 10s after SIGKILL", h.Port)
	}
}

// Restart starts sshd again on the same port with the same keys, after
// Crash or Stop. It fails the test if the port was taken meanwhile.
func (h *EdgeHost) Restart(t testing.TB) {
	t.Helper()
	select {
	case <-h.done:
	default:
		t.Fatalf("testkit: restart sshd on port %d: still running (Crash or Stop it first)", h.Port)
	}
	if err := h.start(h.cfg); err != nil {
		t.Fatalf("testkit: restart sshd on port %d: %v", h.Port, err)
	}
	h.stopOnce = sync.Once{}
}

// descendantPIDs lists the processes below pid, from /proc.
func descendantPIDs(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	kids := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		kids[ppid] = append(kids[ppid], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		for _, c := range kids[queue[0]] {
			out = append(out, c)
			queue = append(queue, c)
		}
		queue = queue[1:]
	}
	return out
}

// SSHArgs is the argv after "ssh" that runs remoteCmd on the host with the
// pinned key, the same options Satoru uses. Callers that need another
// address (a proxy) pass it as addrPort ("127.0.0.1:NNNN"), or "" for the
// host itself.
func (h *EdgeHost) SSHArgs(addrPort, remoteCmd string) []string {
	host, port := h.Host, strconv.Itoa(h.Port)
	if addrPort != "" {
		var err error
		if host, port, err = net.SplitHostPort(addrPort); err != nil {
			host, port = addrPort, "22"
		}
	}
	return []string{
		"-F", "/dev/null",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + h.KnownHostsFile,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "HostKeyAlias=" + h.HostKeyAlias,
		"-o", "ConnectTimeout=10",
		"-o", "IdentitiesOnly=yes",
		"-i", h.KeyPath,
		"-p", port,
		"-l", h.User,
		"--", host, remoteCmd,
	}
}

// Run runs remoteCmd on the host over ssh (for test setup) and returns its
// stdout; any failure fails the test.
func (h *EdgeHost) Run(t testing.TB, remoteCmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := proc.Run(ctx, proc.Cmd{Step: "testkit", Path: "ssh", Args: h.SSHArgs("", remoteCmd)})
	if err != nil {
		t.Fatalf("testkit: ssh %s@%s:%d %q: %v", h.User, h.Host, h.Port, remoteCmd, err)
	}
	return string(res.Stdout)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testkit: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func keygen(t testing.TB, path, comment string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := proc.Run(ctx, proc.Cmd{Step: "testkit", Path: "ssh-keygen",
		Args: []string{"-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path}}); err != nil {
		t.Fatalf("testkit: %v", err)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("testkit: %v", err)
	}
}

// syncTail keeps the last max bytes of a daemon's log for failure reports,
// and counts the lines holding count (if set) over the whole log.
type syncTail struct {
	mu    sync.Mutex
	buf   []byte
	max   int
	count string
	seen  int
}

func (s *syncTail) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.count != "" {
		// sshd -e writes each log line in one write.
		s.seen += strings.Count(string(p), s.count)
	}
	s.buf = append(s.buf, p...)
	if len(s.buf) > 2*s.max {
		s.buf = append(s.buf[:0], s.buf[len(s.buf)-s.max:]...)
	}
	return len(p), nil
}

func (s *syncTail) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.buf)
}
