// Package proc is Satoru's one subprocess runner. Every local command goes
// through Run: argv only (never a shell), an allow-listed environment
// (PATH, HOME, LANG, LC_ALL, TMPDIR) plus the one secret the tool needs,
// stdout and stderr capped, the whole process group killed on cancel or
// timeout, the child killed if Satoru itself dies, and failures returned
// as typed errors whose text never carries the argv or the environment.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// Output limits. Stdout is kept from the start (parsers read it from the
// top); stderr is kept from the end, where tools print the reason they
// failed.
const (
	StdoutCap = 1 << 20
	StderrCap = 8 << 10
	// ErrorStderrCap bounds the stderr an ExitError carries, since error
	// texts end up in job events and API responses.
	ErrorStderrCap = 2 << 10
)

// KillGrace is how long a canceled process group has between SIGTERM and
// SIGKILL: long enough for rsync or restic to clean up, short enough that
// a cancel is felt.
const KillGrace = 3 * time.Second

// redactMin is the shortest Env value that is redacted from stderr: shorter
// values cannot be meaningful secrets and would shred ordinary text.
const redactMin = 4

var (
	// ErrTimeout means the command ran longer than its Cmd.Timeout.
	ErrTimeout = errors.New("timed out")
	// ErrNotFound means the program is not installed (or not executable).
	ErrNotFound = errors.New("executable not found")
)

// Cmd describes one subprocess.
type Cmd struct {
	// Step names the work in errors and logs, e.g. "pull" or "preflight".
	Step string
	// Path is the program: an absolute path, or a name looked up in PATH.
	Path string
	Args []string
	// Env holds the KEY=VALUE entries this program needs on top of the
	// allow-listed part of Satoru's environment (see BaseEnv; later entries
	// win). Secrets go here, never in Args: argv is visible to every user of
	// the host in ps. Env values are redacted from captured stderr.
	Env []string
	// PublicEnv holds KEY=VALUE entries that are no secret (a path, a
	// setting): passed like Env, before it, but not redacted, so errors
	// can name them (a full disk names the repository's folder).
	PublicEnv []string
	Dir       string
	Stdin     io.Reader
	// Stdout, when set, receives stdout as it is produced (for streaming
	// parsers); Result.Stdout is then empty. When nil, stdout is captured
	// up to StdoutCap.
	Stdout io.Writer
	// Stderr, when set, also receives stderr as it is produced, for a
	// caller that watches it (restic's retry and disk-full messages); it
	// is not redacted, so it must not be logged as is. Result.Stderr still
	// keeps the tail.
	Stderr io.Writer
	// Timeout bounds the run; zero means only ctx bounds it.
	Timeout time.Duration
	// OnStart, when set, is called with the process id right after the
	// process started and before Run waits for it, so a caller can record
	// which processes it owns (restic's locks name their pid). The
	// function it returns, if any, is called once the process has ended.
	OnStart func(pid int) (ended func())
}

// Result is what a finished command left behind. Run returns it also on
// failure, so callers can inspect partial output.
type Result struct {
	// ExitCode is the exit status, or -1 when the process was killed by a
	// signal or never started.
	ExitCode int
	// Stdout is the captured stdout (nil when Cmd.Stdout was set).
	Stdout []byte
	// StdoutTruncated reports that stdout went past StdoutCap and the rest
	// was discarded.
	StdoutTruncated bool
	// Stderr is the tail of stderr, trimmed, at most StderrCap bytes, with
	// Env values redacted.
	Stderr   string
	Duration time.Duration
}

// ExitError is a command that ran and failed.
type ExitError struct {
	Step string
	// Command is the program's base name only: the full argv may carry
	// paths or options that do not belong in an error text.
	Command string
	// Code is the exit status, or -1 when killed by a signal.
	Code int
	// Signal is set when the process died of a signal it was not sent by
	// Run (Run's own kills are reported as ErrTimeout or ctx errors).
	Signal syscall.Signal
	// Stderr is the trimmed tail of stderr, at most ErrorStderrCap bytes.
	Stderr string
}

func (e *ExitError) Error() string {
	var b strings.Builder
	b.WriteString(label(e.Step, e.Command))
	if e.Signal != 0 {
		fmt.Fprintf(&b, ": killed by signal %d (%s)", int(e.Signal), e.Signal)
	} else {
		fmt.Fprintf(&b, ": exit %d", e.Code)
	}
	if e.Stderr != "" {
		b.WriteString(": ")
		b.WriteString(e.Stderr)
	}
	return b.String()
}

// label names a command in errors: "pull: rsync", or just "rsync" when the
// step says nothing more than the program name.
func label(step, name string) string {
	if step == "" || step == name {
		return name
	}
	return step + ": " + name
}

// Run runs c and waits for it. It returns an *ExitError for a non-zero
// exit, an error wrapping ErrTimeout when c.Timeout elapsed, one wrapping
// ErrNotFound when the program is missing, and one wrapping ctx.Err() when
// ctx ended first. In every kill case the whole process group gets SIGTERM,
// then SIGKILL after KillGrace, so grandchildren (ssh under rsync, sleep
// under sh) do not outlive the step.
func Run(ctx context.Context, c Cmd) (Result, error) {
	res := Result{ExitCode: -1}
	name := filepath.Base(c.Path)
	lbl := label(c.Step, name)
	if c.Path == "" {
		return res, fmt.Errorf("%s: no program given", stepOr(c.Step))
	}
	for i, kv := range append(slices.Clip(c.PublicEnv), c.Env...) {
		// Only the key is named: the value may be a secret.
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return res, fmt.Errorf("%s: env entry %d is not KEY=VALUE", lbl, i)
		}
	}
	path, err := exec.LookPath(c.Path)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return res, notFound(c.Step, name)
		}
		return res, fmt.Errorf("%s: %w", lbl, err)
	}
	if c.Dir != "" {
		// Checked here because a missing Dir fails exec with the same
		// ENOENT as a missing program.
		if fi, err := os.Stat(c.Dir); err != nil {
			return res, fmt.Errorf("%s: working directory: %w", lbl, err)
		} else if !fi.IsDir() {
			return res, fmt.Errorf("%s: working directory %s is not a directory", lbl, c.Dir)
		}
	}

	runCtx, cancel := context.WithCancel(ctx)
	if c.Timeout > 0 {
		runCtx, cancel = context.WithTimeoutCause(ctx, c.Timeout, errStepTimeout)
	}
	defer cancel()

	cmd := exec.CommandContext(runCtx, path, c.Args...)
	cmd.Env = append(append(BaseEnv(os.Environ()), c.PublicEnv...), c.Env...)
	cmd.Dir = c.Dir
	cmd.Stdin = c.Stdin
	var stdout headBuffer
	if c.Stdout != nil {
		cmd.Stdout = c.Stdout
	} else {
		stdout.max = StdoutCap
		cmd.Stdout = &stdout
	}
	// Keep more than StderrCap so a secret cut at the buffer's start is
	// still whole when redacted, then trim.
	stderr := tailBuffer{max: StderrCap * 2}
	cmd.Stderr = &stderr
	if c.Stderr != nil {
		cmd.Stderr = io.MultiWriter(&stderr, c.Stderr)
	}
	// Own process group, so a kill reaches every descendant at once.
	//
	// Pdeathsig covers the case where nobody is left to send that kill:
	// Satoru itself SIGKILLed or crashed. The kernel then SIGKILLs the
	// child, and its own children (ssh under rsync, rsync's receiver) see
	// their pipes close and exit. The signal fires when the OS thread
	// that forked the child exits, not the process: Go ends a thread only
	// when a goroutine returns still locked to it (runtime.LockOSThread),
	// and that can be any thread, one that forked a child earlier too (a
	// test in cmd/satoru/internal/netns shows it). Satoru never leaves a
	// goroutine locked, so its threads live as long as the process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var (
		mu        sync.Mutex
		killTimer *time.Timer
	)
	// killGroup sends SIGTERM to the group now and SIGKILL after KillGrace.
	killGroup := func() {
		pgid := cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		mu.Lock()
		if killTimer == nil {
			killTimer = time.AfterFunc(KillGrace, func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
		}
		mu.Unlock()
	}
	cmd.Cancel = func() error { killGroup(); return nil }
	// WaitDelay stops Wait from hanging on pipes that an orphaned
	// grandchild still holds open.
	cmd.WaitDelay = KillGrace

	start := time.Now()
	if err := cmd.Start(); err != nil {
		res.Duration = time.Since(start)
		if ctx.Err() != nil {
			return res, fmt.Errorf("%s: %w", lbl, ctx.Err())
		}
		if errors.Is(err, fs.ErrNotExist) {
			return res, notFound(c.Step, name)
		}
		return res, fmt.Errorf("%s: start: %w", lbl, err)
	}
	var ended func()
	if c.OnStart != nil {
		ended = c.OnStart(cmd.Process.Pid)
	}
	waitErr := cmd.Wait()
	if ended != nil {
		ended()
	}
	res.Duration = time.Since(start)
	if errors.Is(waitErr, exec.ErrWaitDelay) {
		// A descendant outlived the program and held its output open:
		// it is ours, so it goes too.
		killGroup()
	}

	mu.Lock()
	if killTimer != nil && syscall.Kill(-cmd.Process.Pid, 0) == syscall.ESRCH {
		// The group is gone already; do not signal a pgid that could be
		// reused later.
		killTimer.Stop()
	}
	mu.Unlock()

	if c.Stdout == nil {
		res.Stdout = stdout.buf.Bytes()
		res.StdoutTruncated = stdout.truncated
	}
	errText := redact(stderr.String(), c.Env)
	res.Stderr = TrimStderr(errText, StderrCap)
	if stderr.dropped && res.Stderr != "" && !strings.HasPrefix(res.Stderr, ellipsis) {
		res.Stderr = ellipsis + res.Stderr
	}
	errStderr := TrimStderr(errText, ErrorStderrCap)
	if ps := cmd.ProcessState; ps != nil {
		res.ExitCode = ps.ExitCode()
	}

	if waitErr == nil {
		return res, nil
	}
	if runCtx.Err() != nil {
		// Run killed it (or it failed while being killed).
		if ctx.Err() == nil && context.Cause(runCtx) == errStepTimeout {
			return res, withStderr(fmt.Errorf("%s %w after %s", lbl, ErrTimeout, c.Timeout), errStderr)
		}
		if ctx.Err() != nil {
			return res, withStderr(fmt.Errorf("%s: %w", lbl, ctx.Err()), errStderr)
		}
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		xe := &ExitError{Step: c.Step, Command: name, Code: ee.ExitCode(), Stderr: errStderr}
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			xe.Signal = ws.Signal()
		}
		return res, xe
	}
	if errors.Is(waitErr, exec.ErrWaitDelay) && res.ExitCode == 0 {
		// The program itself succeeded; only a leftover descendant kept
		// its output open. Its output after the exit is not ours to wait for.
		return res, nil
	}
	return res, fmt.Errorf("%s: %w", lbl, waitErr)
}

// inherited lists the variables a child gets from Satoru's environment.
// Everything else stays behind: Satoru's own environment carries the API
// token and the offsite keys, which /proc/<pid>/environ would show to the
// child and whatever it runs. SSH_AUTH_SOCK stays behind too: ssh uses the
// site's key file, never the operator's agent.
var inherited = map[string]bool{
	"PATH":   true,
	"HOME":   true,
	"LANG":   true,
	"LC_ALL": true,
	"TMPDIR": true,
}

// BaseEnv returns the entries of environ that every child inherits: PATH,
// HOME, LANG, LC_ALL and TMPDIR, in their order in environ.
func BaseEnv(environ []string) []string {
	out := make([]string, 0, len(inherited))
	for _, kv := range environ {
		if k, _, ok := strings.Cut(kv, "="); ok && inherited[k] {
			out = append(out, kv)
		}
	}
	return out
}

// errStepTimeout marks the run context's own deadline, so a Timeout is
// told apart from the caller's ctx ending.
var errStepTimeout = errors.New("step timeout")

func stepOr(step string) string {
	if step == "" {
		return "proc"
	}
	return step
}

func notFound(step, name string) error {
	if step == "" {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return fmt.Errorf("%s: %w: %s", step, ErrNotFound, name)
}

func withStderr(err error, stderr string) error {
	if stderr == "" {
		return err
	}
	return fmt.Errorf("%w: %s", err, stderr)
}

const ellipsis = "..."

// TrimStderr makes tool output fit an error message: it normalises line
// ends, trims surrounding space and, when longer than max bytes, keeps the
// tail (where tools print why they failed) behind a "..." marker. The
// result is at most max bytes and valid UTF-8 where the input was. A max
// of zero or less means no limit.
func TrimStderr(s string, max int) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	s = strings.TrimSpace(s)
	if max <= 0 || len(s) <= max {
		return s
	}
	if max <= len(ellipsis) {
		return s[len(s)-max:]
	}
	tail := s[len(s)-(max-len(ellipsis)):]
	// Do not start in the middle of a multi-byte character.
	for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
		tail = tail[1:]
	}
	return ellipsis + strings.TrimLeft(tail, " \t\n")
}

// redact replaces every Env value in s with a marker, so a program that
// echoes its environment (or a password prompt quoting it) cannot leak a
// secret into an error.
func redact(s string, env []string) string {
	for _, kv := range env {
		_, v, _ := strings.Cut(kv, "=")
		if len(v) >= redactMin && strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
	}
	return s
}

// headBuffer keeps the first max bytes written and discards the rest,
// still reporting every write as complete so the program never blocks.
type headBuffer struct {
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.max - h.buf.Len(); room > 0 {
		if len(p) > room {
			h.buf.Write(p[:room])
			h.truncated = true
		} else {
			h.buf.Write(p)
		}
	} else if len(p) > 0 {
		h.truncated = true
	}
	return len(p), nil
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	buf     []byte
	max     int
	dropped bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	// Compact only when twice over, so long outputs cost amortised O(n).
	if len(t.buf) > 2*t.max {
		n := copy(t.buf, t.buf[len(t.buf)-t.max:])
		t.buf = t.buf[:n]
		t.dropped = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	if len(t.buf) > t.max {
		t.dropped = true
		return string(t.buf[len(t.buf)-t.max:])
	}
	return string(t.buf)
}
