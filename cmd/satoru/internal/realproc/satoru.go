package realproc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Layout is where one Satoru installation keeps its state.
type Layout struct {
	Data    string // data_dir: embedded NATS and store, api-token, ssh
	Staging string // staging_root
	Repo    string // restic_repo_path
}

// NewLayout puts every folder under root.
func NewLayout(root string) Layout {
	return Layout{Data: filepath.Join(root, "data"), Staging: filepath.Join(root, "staging"), Repo: filepath.Join(root, "repo")}
}

// Dirs are the folders a leftover process of this installation would name
// in its argv, environment or working directory.
func (l Layout) Dirs() []string { return []string{l.Data, l.Staging, l.Repo} }

// Env is the environment of a satoru process on l: the caller's without
// any SATORU_* of its own, restic found on PATH (root's bin/ first), the
// three folders of l, then extra. Everything else is the default config.
func Env(root string, l Layout, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SATORU_") || strings.HasPrefix(kv, "PATH=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"PATH="+filepath.Join(root, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"),
		"SATORU_DATA_DIR="+l.Data,
		"SATORU_STAGING_ROOT="+l.Staging,
		"SATORU_RESTIC_REPO_PATH="+l.Repo,
	)
	return append(env, extra...)
}

// Satoru is one satoru command (`up`, `puller`, ...) of the binary bin
// on fixed folders, started, SIGKILLed and started again as a real
// process.
type Satoru struct {
	t    testing.TB
	bin  string
	Name string
	args []string
	env  []string
	L    Layout
	dir  string // working directory
	// Wrap is an argv prefix the command runs under (e.g. `ip netns exec
	// <ns>`, to run it on a simulated host); it must exec the command in
	// place, so PID, Kill and the process tree stay the command's. Set it
	// before Start.
	Wrap []string

	mu   sync.Mutex
	runs []*proc // every process started, oldest first
	cur  *proc   // nil when not running

	// From the running process's banner and data_dir. NATSURL and
	// StoreURI are the first word after "NATS:" and "store:" (a URL when
	// the node listens; "embedded," when it serves itself only).
	APIURL   string
	NATSURL  string
	StoreURI string
	Token    string

	tokenFile string
}

// proc is one OS process of a satoru command.
type proc struct {
	cmd    *exec.Cmd
	pid    int
	stdout *tail
	stderr *tail
	done   chan struct{} // closed when it has exited
	how    string        // how it ended, for the logs
}

// New prepares a satoru command of bin (args, e.g. "up") on l with the
// environment env (see Env); Start runs it. name is how logs call it.
// When the test ends it is stopped (SIGTERM, then SIGKILL), every process
// left behind that names its folders is killed, and on failure its logs
// are printed.
func New(t testing.TB, bin, name string, l Layout, args []string, env []string) *Satoru {
	t.Helper()
	s := &Satoru{t: t, bin: bin, Name: name, args: args, env: env, L: l, dir: filepath.Dir(l.Data)}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		s.Stop()
		// Children a crash left behind, and the ssh master connections
		// satoru keeps: all are this test's, none may outlive it.
		KillLeftovers(t, bin, l.Dirs())
		if t.Failed() {
			s.LogTails()
		}
	})
	return s
}

// Start runs the command and waits for its banner (at most 90 s).
func (s *Satoru) Start() {
	s.t.Helper()
	p := &proc{stdout: newTail(64 << 10), stderr: newTail(1 << 20), done: make(chan struct{})}
	argv := append(append(append([]string(nil), s.Wrap...), s.bin), s.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = s.dir
	cmd.Env = s.env
	cmd.Stderr = p.stderr
	// If the test binary itself dies (a -timeout panic), satoru goes too.
	// This is the harness's own hygiene; what satoru does with its
	// children when it is killed is what the fault scenarios test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatalf("%s: %v", s.Name, err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("%s: start %s: %v", s.Name, s.bin, err)
	}
	p.cmd, p.pid = cmd, cmd.Process.Pid
	banner := make(chan []string, 1)
	go func() {
		// The banner ends with the "Stop with" line; the rest of stdout
		// is kept for the logs.
		sc := bufio.NewScanner(out)
		var lines []string
		sent := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.stdout, line)
			if !sent {
				lines = append(lines, line)
				if strings.HasPrefix(line, "Stop with") {
					banner <- lines
					sent = true
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() {
		err := cmd.Wait()
		if p.how == "" {
			p.how = fmt.Sprintf("exited: %v", err)
		}
		close(p.done)
	}()
	s.mu.Lock()
	s.runs = append(s.runs, p)
	s.cur = p
	s.mu.Unlock()

	select {
	case lines := <-banner:
		s.parseBanner(lines)
	case <-p.done:
		s.t.Fatalf("%s (pid %d) exited before its banner: %s\nstderr:\n%s", s.Name, p.pid, p.how, p.stderr.last(8<<10))
	case <-time.After(90 * time.Second):
		s.t.Fatalf("%s (pid %d) printed no banner within 90s\nstderr:\n%s", s.Name, p.pid, p.stderr.last(8<<10))
	}
	if s.tokenFile != "" {
		tok, err := os.ReadFile(s.tokenFile)
		if err != nil {
			s.t.Fatalf("%s: API token: %v", s.Name, err)
		}
		s.Token = strings.TrimSpace(string(tok))
	}
}

func (s *Satoru) parseBanner(lines []string) {
	field := func(line, key string) (string, bool) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), key)
		if !ok {
			return "", false
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return "", false
		}
		return f[0], true
	}
	for _, line := range lines {
		if v, ok := field(line, "API:"); ok {
			s.APIURL = v
		}
		if v, ok := field(line, "NATS:"); ok {
			s.NATSURL = v
		}
		if v, ok := field(line, "store:"); ok {
			s.StoreURI = v
		}
		// "token:  in <data_dir>/api-token (send it as ...)": satoru up
		// generated it, since Env sets no SATORU_API_TOKEN.
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "token:"); ok {
			if f := strings.Fields(v); len(f) >= 2 && f[0] == "in" {
				s.tokenFile = f[1]
			}
		}
	}
	if s.NATSURL == "" {
		s.t.Fatalf("%s: no NATS line in the banner:\n%s", s.Name, strings.Join(lines, "\n"))
	}
}

// PID is the running process's id (0 when none runs).
func (s *Satoru) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return 0
	}
	return s.cur.pid
}

// Kill SIGKILLs the running process, the way a crash or the OOM killer
// ends it: nothing runs in it after this. It returns the descendants the
// process had just before, for the orphan check.
func (s *Satoru) Kill() []ProcInfo {
	s.t.Helper()
	s.mu.Lock()
	p := s.cur
	s.cur = nil
	s.mu.Unlock()
	if p == nil {
		s.t.Fatalf("%s: kill: not running", s.Name)
	}
	before := Descendants(p.pid)
	p.how = "SIGKILLed by the test"
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil {
		s.t.Fatalf("%s: kill -9 %d: %v", s.Name, p.pid, err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		s.t.Fatalf("%s: pid %d still there 15s after SIGKILL", s.Name, p.pid)
	}
	s.t.Logf("%s: pid %d killed with SIGKILL (%d descendants at the time)", s.Name, p.pid, len(before))
	return before
}

// Stop ends the running process gracefully (SIGTERM), or with SIGKILL
// after 30 s.
func (s *Satoru) Stop() {
	s.mu.Lock()
	p := s.cur
	s.cur = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	began := time.Now()
	_ = syscall.Kill(p.pid, syscall.SIGTERM)
	select {
	case <-p.done:
		if took := time.Since(began); took > 5*time.Second {
			s.t.Logf("%s (pid %d) took %s to stop after SIGTERM", s.Name, p.pid, took.Round(time.Millisecond))
		}
	case <-time.After(30 * time.Second):
		p.how = "SIGKILLed: no exit 30s after SIGTERM"
		s.t.Errorf("%s (pid %d) did not stop within 30s of SIGTERM", s.Name, p.pid)
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
		<-p.done
	}
}

// LogTails prints the end of every process's output.
func (s *Satoru) LogTails() {
	s.mu.Lock()
	runs := append([]*proc(nil), s.runs...)
	s.mu.Unlock()
	for i, p := range runs {
		s.t.Logf("--- %s run %d (pid %d, %s): stdout\n%s\n--- stderr (last 16 KiB, API request lines left out)\n%s", s.Name, i+1, p.pid, p.how,
			p.stdout.last(4<<10), lastBytes(withoutAPIRequests(p.stderr.last(1<<20)), 16<<10))
	}
}

// withoutAPIRequests drops the API's per-request log lines: the test's
// own polling, which would fill the tail.
func withoutAPIRequests(log string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(log, "\n") {
		if !strings.Contains(line, `msg="api request"`) {
			b.WriteString(line)
		}
	}
	return b.String()
}

// lastBytes is the end of s, at most n bytes, from a line start.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// API is a REST client of the running process.
func (s *Satoru) API() *Client {
	s.t.Helper()
	if s.APIURL == "" || s.Token == "" {
		s.t.Fatalf("%s serves no API", s.Name)
	}
	return &Client{t: s.t, Base: s.APIURL, Token: s.Token}
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// last is the final n bytes, from a line start where possible.
func (t *tail) last(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return lastBytes(string(t.buf), n)
}
