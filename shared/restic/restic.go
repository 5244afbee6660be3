// Package restic runs the restic CLI for Satoru. It knows only restic:
// argv builders, the environment that carries the repository and its
// secrets, streaming parsers for --json output, and restic's stable exit
// codes mapped to typed errors. Policy (which repository, which tags, when
// to retry) belongs to the callers.
//
// Every call goes through shared/proc and each one opens the repository,
// which costs ~0.6 s, so the API never adds an invocation the caller did
// not ask for (Backup returns the snapshot id from the summary instead of
// listing snapshots afterwards).
package restic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/satoru/satoru/shared/proc"
)

// Exit codes restic documents as stable (restic >= 0.17).
const (
	codeIncomplete   = 3
	codeNoRepository = 10
	codeLocked       = 11
	codeWrongPass    = 12
	codeCanceled     = 130
)

var (
	// ErrIncomplete (exit 3): the snapshot was written, but some source
	// files could not be read. Backup returns the Summary with it.
	ErrIncomplete = errors.New("snapshot incomplete: some source files could not be read")
	// ErrNoRepository (exit 10): there is no repository at the location.
	ErrNoRepository = errors.New("repository does not exist")
	// ErrLocked (exit 11): another process holds a conflicting lock, or a
	// killed one left a stale lock (see Unlock).
	ErrLocked = errors.New("repository is locked")
	// ErrWrongPassword (exit 12): no key matches the password.
	ErrWrongPassword = errors.New("wrong password or no key found")
	// ErrCanceled (exit 130): restic was interrupted. A canceled ctx is
	// reported with it too, so callers need one check.
	ErrCanceled = errors.New("canceled")
	// ErrNoSpace: restic could not write to the repository because its
	// disk is full; it was stopped rather than left retrying.
	ErrNoSpace = errors.New("no space left on the repository's disk")
	// ErrNoSummary: backup exited 0 but printed no summary, so there is
	// no snapshot id to record.
	ErrNoSummary = errors.New("backup printed no summary")
	// ErrBackendUnreachable: restic kept retrying a failing backend for
	// longer than Repo.BackendRetryLimit and was stopped.
	ErrBackendUnreachable = errors.New("repository backend unreachable")
)

// classify maps a restic exit code to its sentinel, or nil when the code
// carries no specific meaning (1 is "fatal", anything).
func classify(code int) error {
	switch code {
	case codeIncomplete:
		return ErrIncomplete
	case codeNoRepository:
		return ErrNoRepository
	case codeLocked:
		return ErrLocked
	case codeWrongPass:
		return ErrWrongPassword
	case codeCanceled:
		return ErrCanceled
	}
	return nil
}

// errorTextCap bounds Error.Stderr: error texts end up in job events and
// API responses.
const errorTextCap = 1 << 10

// Error is a restic command that exited non-zero. errors.Is matches it
// against the sentinel for its exit code (ErrLocked for 11, ...).
type Error struct {
	// Op is the restic subcommand, e.g. "backup".
	Op string
	// Code is the exit status, -1 when restic was killed by a signal.
	Code int
	// Stderr is what restic said: the messages of its JSON error lines,
	// then other output; trimmed to its last ~1 KiB, secrets redacted.
	Stderr string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("restic " + e.Op)
	if e.Code < 0 {
		b.WriteString(": killed by a signal")
	} else {
		fmt.Fprintf(&b, ": exit %d", e.Code)
	}
	if s := classify(e.Code); s != nil {
		b.WriteString(" (" + s.Error() + ")")
	}
	if e.Stderr != "" {
		b.WriteString(": " + e.Stderr)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrLocked) and friends work by exit code.
func (e *Error) Is(target error) bool {
	s := classify(e.Code)
	return s != nil && s == target
}

// Repo is one restic repository and how to reach it. The zero RetryLock
// fails at once on a lock conflict.
type Repo struct {
	// Bin is the restic binary; "" means "restic" on PATH.
	Bin string
	// Repository is a local path or a backend URL (s3:..., b2:...). It is
	// passed as RESTIC_REPOSITORY, since URLs may carry credentials.
	Repository string
	// Password is passed only as RESTIC_PASSWORD: never in argv (visible
	// in ps), logs or errors. Set it or PasswordFile, not both.
	Password string
	// PasswordFile is passed as RESTIC_PASSWORD_FILE.
	PasswordFile string
	// Env holds extra KEY=VALUE entries (AWS_ACCESS_KEY_ID=...,
	// RESTIC_FROM_PASSWORD=...). They win over the ones Repo sets, and
	// their values are redacted from errors like the password.
	Env []string
	// CacheDir is RESTIC_CACHE_DIR; "" leaves restic's default.
	CacheDir string
	// RetryLock makes commands that lock the repository wait up to this
	// long for a conflicting lock (--retry-lock, restic >= 0.16).
	RetryLock time.Duration
	// BackendRetryLimit stops a command once its backend has kept failing
	// for this long (restic reports each retry on stderr, and retries one
	// operation for up to 15 minutes, which 0.18 cannot change); the error
	// wraps ErrBackendUnreachable and carries restic's last retry reason.
	// A successful retry starts the count again. 0 leaves restic's own.
	BackendRetryLimit time.Duration
	// OnStart, when set, is told of every restic process started for
	// this repository (its subcommand and pid) and returns what to call
	// when it ended: the caller's record of the processes that may hold
	// a restic lock (see shared/repoguard).
	OnStart func(op string, pid int) (ended func())
}

// progressFPS is the rate of restic's --json status lines. Without it
// restic prints 60 a second when stdout is not a terminal; one a second is
// plenty for job progress and keeps the stream small.
const progressFPS = "1"

// env is the environment of every repository command. Variables Satoru
// does not use are set empty: restic reads them from the inherited
// environment, and a stray RESTIC_PASSWORD_FILE would beat our password.
func (r Repo) env() ([]string, error) {
	if r.Repository == "" {
		return nil, errors.New("no repository given")
	}
	env := []string{
		"RESTIC_REPOSITORY=" + r.Repository,
		"RESTIC_REPOSITORY_FILE=",
		"RESTIC_PASSWORD_COMMAND=",
		"RESTIC_PROGRESS_FPS=" + progressFPS,
	}
	switch {
	case r.Password != "" && r.PasswordFile != "":
		return nil, errors.New("set Password or PasswordFile, not both")
	case r.Password != "":
		env = append(env, "RESTIC_PASSWORD="+r.Password, "RESTIC_PASSWORD_FILE=")
	case r.PasswordFile != "":
		env = append(env, "RESTIC_PASSWORD_FILE="+r.PasswordFile, "RESTIC_PASSWORD=")
	default:
		// restic would try to read a password from stdin.
		return nil, errors.New("no password given")
	}
	if r.CacheDir != "" {
		env = append(env, "RESTIC_CACHE_DIR="+r.CacheDir)
	}
	return append(env, r.Env...), nil
}

func (r Repo) bin() string {
	if r.Bin == "" {
		return "restic"
	}
	return r.Bin
}

// splitPublic splits env into what may be named in errors (the
// repository's location when it carries no password, the cache folder, the
// password file's path, settings) and the rest, which proc redacts.
func (r Repo) splitPublic(env []string) (public, secret []string) {
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case v == "", k == "RESTIC_PROGRESS_FPS", k == "RESTIC_CACHE_DIR", k == "RESTIC_PASSWORD_FILE",
			k == "RESTIC_REPOSITORY" && RedactLocation(v) == v && !slices.Contains(r.secrets(), v):
			public = append(public, kv)
		default:
			secret = append(secret, kv)
		}
	}
	return public, secret
}

// secrets are the values that must never appear in errors.
func (r Repo) secrets() []string {
	out := []string{r.Password}
	for _, kv := range r.Env {
		_, v, _ := strings.Cut(kv, "=")
		out = append(out, v)
	}
	return out
}

// run runs one repository command: c.Step names the subcommand, c.Args is
// its argv after the global flags. lock says the command takes a lock, so
// RetryLock applies. stdout is discarded unless c.Stdout is set. A
// non-zero exit comes back as *Error.
func (r Repo) run(ctx context.Context, c proc.Cmd, lock bool) (proc.Result, error) {
	res, err := r.runRaw(ctx, c, lock)
	return res, r.wrap(c.Step, res, err)
}

// runRaw is run with proc's error left for the caller to wrap, for
// callers that add what they parsed from stdout to the error.
func (r Repo) runRaw(ctx context.Context, c proc.Cmd, lock bool) (proc.Result, error) {
	env, err := r.env()
	if err != nil {
		return proc.Result{}, fmt.Errorf("restic %s: %w", c.Step, err)
	}
	if lock && r.RetryLock > 0 {
		c.Args = append([]string{"--retry-lock", r.RetryLock.String()}, c.Args...)
	}
	c.Path = r.bin()
	c.PublicEnv, c.Env = r.splitPublic(env)
	// restic 0.18 retries a failing write for 15 minutes. A full disk
	// stops it at the first "no space left" instead, and a backend that
	// keeps failing after BackendRetryLimit; both say why.
	rctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	full := &lineWriter{max: 4 << 10, fn: func(b []byte, _ bool) {
		if bytes.Contains(b, []byte("no space left on device")) {
			stop(ErrNoSpace)
		}
	}}
	c.Stderr = full
	var watch *retryWatch
	if r.BackendRetryLimit > 0 {
		watch = &retryWatch{limit: r.BackendRetryLimit, trip: func() { stop(errRetryLimit) }}
		defer watch.close()
		c.Stderr = io.MultiWriter(full, watch)
	}
	if r.OnStart != nil {
		op := c.Step
		c.OnStart = func(pid int) func() { return r.OnStart(op, pid) }
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	res, err := proc.Run(rctx, c)
	full.Flush()
	if nerr := r.noSpace(rctx, c.Step, res); nerr != nil {
		return res, nerr
	}
	if err != nil && ctx.Err() == nil && context.Cause(rctx) == errRetryLimit {
		return res, fmt.Errorf("restic %s: %w: its backend kept failing for more than %s; last: %s",
			c.Step, ErrBackendUnreachable, r.BackendRetryLimit, proc.TrimStderr(r.redact(watch.lastRetry()), 512))
	}
	return res, err
}

// errRetryLimit is the cause a retryWatch cancels its command with.
var errRetryLimit = errors.New("backend retry limit")

// retryWatch reads restic's stderr as it comes and calls trip once the
// backend has been failing for limit: from the first "... returned error,
// retrying after ..." line, unless an "... operation successful after N
// retries" line came since.
type retryWatch struct {
	limit time.Duration
	trip  func()

	mu     sync.Mutex
	timer  *time.Timer
	last   string
	lines  *lineWriter
	closed bool
}

// Write takes restic's stderr as it comes, cut into lines by the same
// lineWriter the output parsers use.
func (w *retryWatch) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lines == nil {
		w.lines = &lineWriter{max: 4 << 10, fn: func(l []byte, overlong bool) {
			if !overlong {
				w.line(strings.TrimSpace(string(l)))
			}
		}}
	}
	return w.lines.Write(b)
}

func (w *retryWatch) line(l string) {
	switch {
	case strings.Contains(l, " returned error, retrying after "):
		w.last = l
		if w.timer == nil && !w.closed {
			w.timer = time.AfterFunc(w.limit, w.trip)
		}
	case strings.Contains(l, " operation successful after "):
		if w.timer != nil {
			w.timer.Stop()
			w.timer = nil
		}
	}
}

func (w *retryWatch) lastRetry() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

func (w *retryWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.timer != nil {
		w.timer.Stop()
	}
}

// wrap turns proc's error into ours. Timeouts and a missing binary keep
// proc's typed errors.
func (r Repo) wrap(op string, res proc.Result, err error, extra ...string) error {
	if err == nil {
		return nil
	}
	var xe *proc.ExitError
	if errors.As(err, &xe) {
		return &Error{Op: op, Code: xe.Code, Stderr: r.errorText(res.Stderr, extra...)}
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("restic %s %w: %w", op, ErrCanceled, err)
	}
	return err
}

// noSpace is the error of a command stopped on a full disk, or nil.
func (r Repo) noSpace(ctx context.Context, op string, res proc.Result) error {
	if !errors.Is(context.Cause(ctx), ErrNoSpace) {
		return nil
	}
	where := "restic repository " + RedactLocation(r.Repository)
	if r.CacheDir != "" {
		where += " (or its cache " + r.CacheDir + ")"
	}
	return fmt.Errorf("restic %s: %w: the disk holding %s is full; free space there: %s",
		op, ErrNoSpace, where, r.errorText(res.Stderr))
}

// errorText is the Error.Stderr for a failed command: the messages of
// restic's stderr (JSON lines decoded) after extra, redacted, trimmed.
func (r Repo) errorText(stderr string, extra ...string) string {
	msgs, exit := stderrMessages(stderr)
	lines := append(append(append([]string(nil), extra...), msgs...), exit...)
	return proc.TrimStderr(r.redact(strings.Join(lines, "\n")), errorTextCap)
}

// stderrMessages splits restic's stderr into messages. With --json restic
// writes errors there as {"message_type":"error"} lines and its final
// reason as {"message_type":"exit_error"}; other lines are plain text.
// The exit message comes back separately so it can be put last, where
// trimming keeps it.
func stderrMessages(stderr string) (msgs, exit []string) {
	for line := range strings.Lines(stderr) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var m struct {
			MessageType string `json:"message_type"`
			Message     string `json:"message"`
			Error       struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if line[0] != '{' || json.Unmarshal([]byte(line), &m) != nil || m.MessageType == "" {
			msgs = append(msgs, line)
			continue
		}
		switch m.MessageType {
		case "exit_error":
			exit = append(exit, m.Message)
		case "error":
			// backup nests the text under "error"; check puts it at the top.
			msg := m.Error.Message
			if msg == "" {
				msg = m.Message
			}
			msgs = append(msgs, msg)
		default:
			msgs = append(msgs, line)
		}
	}
	return msgs, exit
}

// redactMin matches proc: shorter values cannot be meaningful secrets and
// would shred ordinary text.
const redactMin = 4

// redact removes the password and Env values from s. proc already redacts
// raw stderr; this also covers text decoded from JSON (where a secret with
// '"' or '<' was escaped) and stdout, which proc does not see.
func (r Repo) redact(s string) string {
	for _, v := range r.secrets() {
		if len(v) >= redactMin {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
	}
	return s
}

// Init creates the repository. extraArgs go after "init", e.g.
// "--copy-chunker-params", "--from-repo", url for an offsite copy target;
// pass the source's secrets in Env (RESTIC_FROM_PASSWORD), never in argv.
// A local repository's directories are created 0700 and its files 0400 by
// restic itself.
func (r Repo) Init(ctx context.Context, extraArgs ...string) error {
	_, err := r.run(ctx, proc.Cmd{Step: "init", Args: append([]string{"init", "--json"}, extraArgs...)}, false)
	return err
}

// EnsureInit initialises the repository unless it exists; created reports
// whether it did. It reads the config (which also checks the password)
// without taking a lock, so a stale lock does not stop it.
//
// It is not safe against a second EnsureInit at the same time elsewhere:
// two inits both write a key and a config, and the repository is damaged.
// Callers serialise it across processes (shared/repoguard).
func (r Repo) EnsureInit(ctx context.Context) (created bool, err error) {
	err = r.Open(ctx)
	if !errors.Is(err, ErrNoRepository) {
		return false, err
	}
	if err := r.Init(ctx); err != nil {
		// Another worker may have initialised it in between: then it is
		// there, which is all the caller asked for.
		if r.Open(ctx) == nil {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// Open reads the repository's config without a lock: it fails with
// ErrNoRepository when there is none, and with ErrWrongPassword when no key
// opens it, so a nil error means the repository is there and usable.
func (r Repo) Open(ctx context.Context) error {
	_, err := r.run(ctx, proc.Cmd{Step: "cat", Args: []string{"--no-lock", "cat", "config", "--json"}}, false)
	return err
}

// Unlock removes stale locks: those of processes that died on this host,
// or older than 30 minutes. Live locks stay.
func (r Repo) Unlock(ctx context.Context) error {
	_, err := r.run(ctx, proc.Cmd{Step: "unlock", Args: []string{"unlock", "--json"}}, false)
	return err
}

// Version returns restic's version, e.g. "0.18.1". It needs no repository.
func (r Repo) Version(ctx context.Context) (string, error) {
	// Plain "restic version", since older releases cannot print it as JSON
	// and this is how a too-old binary is recognised.
	res, err := proc.Run(ctx, proc.Cmd{Step: "version", Path: r.bin(), Args: []string{"version"}})
	if err != nil {
		return "", r.wrap("version", res, err)
	}
	return parseVersion(string(res.Stdout))
}

// parseVersion reads "restic 0.18.1 compiled with go1.26 on linux/amd64".
func parseVersion(out string) (string, error) {
	f := strings.Fields(out)
	if len(f) < 2 || f[0] != "restic" {
		return "", fmt.Errorf("restic version: unexpected output %q", proc.TrimStderr(out, 200))
	}
	return f[1], nil
}

// Restore restores snapshotID ("latest", an id, or "id:subfolder") into
// target. include limits it to these paths or patterns (--include); none
// restores everything.
func (r Repo) Restore(ctx context.Context, snapshotID, target string, include ...string) error {
	if snapshotID == "" || target == "" {
		return errors.New("restic restore: snapshot id and target are required")
	}
	_, err := r.run(ctx, proc.Cmd{Step: "restore", Args: RestoreArgs(snapshotID, target, include...)}, true)
	return err
}

// RestoreArgs is the argv of Restore. The snapshot id comes after "--" so
// a value starting with "-" cannot become an option.
func RestoreArgs(snapshotID, target string, include ...string) []string {
	args := []string{"restore", "--json", "--target", target}
	for _, p := range include {
		args = append(args, "--include", p)
	}
	return append(args, "--", snapshotID)
}

// Check runs `restic check`, which reads the repository's structure;
// readDataSubset ("5%", "1/10", "" for none) also reads that part of the
// data. A damaged repository comes back as an *Error whose text is what
// check reported.
func (r Repo) Check(ctx context.Context, readDataSubset string) error {
	args := []string{"check"}
	if readDataSubset != "" {
		args = append(args, "--read-data-subset", readDataSubset)
	}
	_, err := r.run(ctx, proc.Cmd{Step: "check", Args: args}, true)
	return err
}
