package proc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		name       string
		script     string
		wantCode   int
		wantErr    bool
		wantStdout string
		wantStderr string
		wantText   string // substring of err.Error()
	}{
		{name: "success", script: "echo hello", wantCode: 0, wantStdout: "hello\n"},
		{name: "exit 1", script: "exit 1", wantCode: 1, wantErr: true, wantText: "copy: sh: exit 1"},
		{name: "rsync partial transfer code", script: "echo 'some files vanished' >&2; exit 23", wantCode: 23, wantErr: true,
			wantStderr: "some files vanished", wantText: "copy: sh: exit 23: some files vanished"},
		{name: "stderr on success is kept", script: "echo warn >&2", wantCode: 0, wantStderr: "warn"},
		{name: "exit 255 like ssh", script: "printf 'Permission denied (publickey).\\r\\n' >&2; exit 255", wantCode: 255, wantErr: true,
			wantStderr: "Permission denied (publickey)."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Run(context.Background(), Cmd{Step: "copy", Path: "sh", Args: []string{"-c", tc.script}})
			if res.ExitCode != tc.wantCode {
				t.Errorf("ExitCode = %d, want %d", res.ExitCode, tc.wantCode)
			}
			if string(res.Stdout) != tc.wantStdout {
				t.Errorf("Stdout = %q, want %q", res.Stdout, tc.wantStdout)
			}
			if res.Stderr != tc.wantStderr {
				t.Errorf("Stderr = %q, want %q", res.Stderr, tc.wantStderr)
			}
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			var ee *ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("err = %v (%T), want *ExitError", err, err)
			}
			if ee.Code != tc.wantCode || ee.Command != "sh" || ee.Step != "copy" {
				t.Errorf("ExitError = %+v", ee)
			}
			if tc.wantText != "" && err.Error() != tc.wantText {
				t.Errorf("err = %q, want %q", err.Error(), tc.wantText)
			}
			if strings.Contains(err.Error(), "-c") {
				t.Errorf("error text carries argv: %q", err)
			}
		})
	}
}

func TestExitErrorText(t *testing.T) {
	tests := []struct {
		name string
		err  ExitError
		want string
	}{
		{"step equals command", ExitError{Step: "rsync", Command: "rsync", Code: 23, Stderr: "vanished"}, "rsync: exit 23: vanished"},
		{"no step", ExitError{Command: "rsync", Code: 12}, "rsync: exit 12"},
		{"step differs", ExitError{Step: "pull", Command: "rsync", Code: 23, Stderr: "x"}, "pull: rsync: exit 23: x"},
		{"signal", ExitError{Command: "restic", Code: -1, Signal: 9}, "restic: killed by signal 9 (killed)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTrimStderr(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"empty", "", 10, ""},
		{"spaces only", " \n\t ", 10, ""},
		{"short trimmed", "  oops\n", 10, "oops"},
		{"crlf normalised", "a\r\nb\r\n", 10, "a\nb"},
		{"exact fit", "0123456789", 10, "0123456789"},
		{"keeps the tail", "0123456789abcdef", 10, "...9abcdef"},
		{"no limit", strings.Repeat("x", 100), 0, strings.Repeat("x", 100)},
		{"tiny max", "abcdef", 2, "ef"},
		{"does not split a rune", "aaaa" + "ééé", 8, "...éé"},
		{"drops leading space of tail", "first line\n  second", 10, "...second"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := TrimStderr(tc.in, tc.max)
			if got != tc.want {
				t.Errorf("TrimStderr(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
			if tc.max > 0 && len(got) > tc.max {
				t.Errorf("len = %d > max %d", len(got), tc.max)
			}
		})
	}
}

func TestRunStderrCap(t *testing.T) {
	// 40 KiB of noise, then the line that explains the failure.
	script := `i=0; while [ $i -lt 1024 ]; do echo "noise line $i padding padding padding"; i=$((i+1)); done >&2; echo "FATAL: the real reason" >&2; exit 2`
	res, err := Run(context.Background(), Cmd{Step: "noisy", Path: "sh", Args: []string{"-c", script}})
	var ee *ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("err = %v, want *ExitError", err)
	}
	if len(res.Stderr) > StderrCap {
		t.Errorf("Result.Stderr is %d bytes, cap %d", len(res.Stderr), StderrCap)
	}
	if len(ee.Stderr) > ErrorStderrCap {
		t.Errorf("ExitError.Stderr is %d bytes, cap %d", len(ee.Stderr), ErrorStderrCap)
	}
	for name, s := range map[string]string{"Result.Stderr": res.Stderr, "ExitError.Stderr": ee.Stderr} {
		if !strings.HasSuffix(s, "FATAL: the real reason") {
			t.Errorf("%s lost the tail: ...%q", name, s[max(0, len(s)-60):])
		}
		if !strings.HasPrefix(s, "...") {
			t.Errorf("%s does not mark the cut: %q", name, s[:20])
		}
		if strings.Contains(s, "noise line 0 ") {
			t.Errorf("%s kept the head", name)
		}
	}
}

func TestRunStdoutCapAndStreaming(t *testing.T) {
	// head -c is in coreutils and busybox; 2 MiB of zeros.
	script := "head -c 2097152 /dev/zero"
	res, err := Run(context.Background(), Cmd{Path: "sh", Args: []string{"-c", script}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stdout) != StdoutCap || !res.StdoutTruncated {
		t.Errorf("captured %d bytes, truncated=%v; want %d, true", len(res.Stdout), res.StdoutTruncated, StdoutCap)
	}

	var sink bytes.Buffer
	res, err = Run(context.Background(), Cmd{Path: "sh", Args: []string{"-c", script}, Stdout: &sink})
	if err != nil {
		t.Fatal(err)
	}
	if sink.Len() != 2<<20 || res.Stdout != nil {
		t.Errorf("streamed %d bytes, Result.Stdout %d bytes; want all 2 MiB streamed and nothing captured", sink.Len(), len(res.Stdout))
	}
}

func TestRunEnvAndStdin(t *testing.T) {
	t.Setenv("LANG", "from-parent")
	res, err := Run(context.Background(), Cmd{
		Path:  "sh",
		Args:  []string{"-c", `printf '%s %s %s ' "$LANG" "$A" "$B"; cat`},
		Env:   []string{"A=first", "B=b", "A=last"},
		Stdin: strings.NewReader("piped"),
		Dir:   t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(res.Stdout), "from-parent last b piped"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
}

// TestRunChildEnvAllowList checks what a child can read in
// /proc/self/environ: the allow-listed variables and its Cmd's own Env,
// never Satoru's secrets or the operator's ssh agent.
func TestRunChildEnvAllowList(t *testing.T) {
	parent := map[string]string{
		"SATORU_API_TOKEN":             "token-secret-1234",
		"SATORU_RESTIC_B2_ACCOUNT_KEY": "b2-key-secret-5678",
		"SATORU_RESTIC_PASSWORD":       "restic-secret-9012",
		"AWS_SECRET_ACCESS_KEY":        "aws-secret-3456",
		"SSH_AUTH_SOCK":                "/tmp/agent.sock",
		"RESTIC_PASSWORD_FILE":         "/etc/stray-password",
		"PATH":                         os.Getenv("PATH"),
		"HOME":                         "/home/satoru-test",
		"LANG":                         "C.UTF-8",
		"LC_ALL":                       "C",
		"TMPDIR":                       t.TempDir(),
	}
	for k, v := range parent {
		t.Setenv(k, v)
	}
	res, err := Run(context.Background(), Cmd{Path: "cat", Args: []string{"/proc/self/environ"},
		Env: []string{"RESTIC_PASSWORD=the-one-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range strings.Split(strings.TrimRight(string(res.Stdout), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	want := map[string]string{
		"PATH": parent["PATH"], "HOME": parent["HOME"], "LANG": parent["LANG"],
		"LC_ALL": parent["LC_ALL"], "TMPDIR": parent["TMPDIR"], "RESTIC_PASSWORD": "the-one-secret",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("child environment = %v\nwant %v", got, want)
	}
}

// Cmd.Stderr sees stderr as it comes, and Result.Stderr still has it.
func TestRunStderrTee(t *testing.T) {
	var seen bytes.Buffer
	res, err := Run(context.Background(), Cmd{Path: "sh", Args: []string{"-c", `echo one >&2; echo two >&2`}, Stderr: &seen})
	if err != nil {
		t.Fatal(err)
	}
	if seen.String() != "one\ntwo\n" || res.Stderr != "one\ntwo" {
		t.Errorf("tee saw %q, result %q", seen.String(), res.Stderr)
	}
}

func TestBaseEnvUnsetStaysUnset(t *testing.T) {
	got := BaseEnv([]string{"PATH=/bin", "SATORU_API_TOKEN=x", "TMPDIRX=1", "HOME=/root", "=odd", "LANGUAGE=de"})
	if want := []string{"PATH=/bin", "HOME=/root"}; !reflect.DeepEqual(got, want) {
		t.Errorf("BaseEnv = %q, want %q", got, want)
	}
}

func TestRunSecretNeverInError(t *testing.T) {
	const secret = "hunter2-correct-horse"
	tests := []struct {
		name  string
		cmd   Cmd
		isErr func(error) bool
	}{
		{
			name: "exit error with secret echoed to stderr",
			cmd: Cmd{Step: "backup", Path: "sh", Args: []string{"-c", `echo "password was $RESTIC_PASSWORD" >&2; exit 12`},
				Env: []string{"RESTIC_PASSWORD=" + secret}},
			isErr: func(err error) bool { var ee *ExitError; return errors.As(err, &ee) && ee.Code == 12 },
		},
		{
			name: "timeout with secret echoed to stderr",
			cmd: Cmd{Step: "backup", Path: "sh", Args: []string{"-c", `echo "$RESTIC_PASSWORD" >&2; sleep 5`},
				Env: []string{"RESTIC_PASSWORD=" + secret}, Timeout: 200 * time.Millisecond},
			isErr: func(err error) bool { return errors.Is(err, ErrTimeout) },
		},
		{
			name:  "missing binary",
			cmd:   Cmd{Step: "backup", Path: "/nonexistent/restic", Env: []string{"RESTIC_PASSWORD=" + secret}},
			isErr: func(err error) bool { return errors.Is(err, ErrNotFound) },
		},
		{
			name:  "malformed env entry names only its position",
			cmd:   Cmd{Step: "backup", Path: "sh", Env: []string{secret}},
			isErr: func(err error) bool { return err != nil && strings.Contains(err.Error(), "env entry 0") },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Run(context.Background(), tc.cmd)
			if !tc.isErr(err) {
				t.Fatalf("unexpected err %v", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error leaks the secret: %q", err)
			}
			if strings.Contains(res.Stderr, secret) {
				t.Errorf("Result.Stderr leaks the secret: %q", res.Stderr)
			}
		})
	}
}

func TestRunMissingBinary(t *testing.T) {
	tests := []struct {
		name, path, want string
	}{
		{"name on PATH", "satoru-no-such-tool", "pull: executable not found: satoru-no-such-tool"},
		{"absolute path", "/nonexistent/bin/rsync", "pull: executable not found: rsync"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Run(context.Background(), Cmd{Step: "pull", Path: tc.path, Args: []string{"--secret-flag"}})
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
			if err.Error() != tc.want {
				t.Errorf("err = %q, want %q", err, tc.want)
			}
			if res.ExitCode != -1 {
				t.Errorf("ExitCode = %d, want -1", res.ExitCode)
			}
		})
	}
}

func TestRunMissingDir(t *testing.T) {
	_, err := Run(context.Background(), Cmd{Step: "x", Path: "sh", Args: []string{"-c", "true"}, Dir: "/nonexistent/dir"})
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "working directory") {
		t.Fatalf("err = %v, want a working directory error that is not ErrNotFound", err)
	}
}

// TestRunTimeoutKillsProcessGroup runs a shell with a background and a
// foreground child: a plain kill of sh would orphan both sleeps.
func TestRunTimeoutKillsProcessGroup(t *testing.T) {
	pr, pw := io.Pipe()
	pgidc := make(chan int, 1)
	go func() {
		line, _ := bufio.NewReader(pr).ReadString('\n')
		n, _ := strconv.Atoi(strings.TrimSpace(line))
		pgidc <- n
		_, _ = io.Copy(io.Discard, pr)
	}()
	done := make(chan struct{})
	var (
		err error
		res Result
	)
	start := time.Now()
	go func() {
		defer close(done)
		res, err = Run(context.Background(), Cmd{
			Step:    "sleepy",
			Path:    "sh",
			Args:    []string{"-c", "echo $$; sleep 30 & sleep 30"},
			Stdout:  pw,
			Timeout: 500 * time.Millisecond,
		})
		pw.Close()
	}()
	pgid := <-pgidc
	if pgid <= 0 {
		t.Fatal("did not learn the shell's pid")
	}
	// Both sleeps must be running before the timeout, or the test proves
	// nothing.
	waitFor(t, 400*time.Millisecond, func() bool { return len(groupMembers(t, pgid)) >= 3 })
	<-done
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if want := "sleepy: sh timed out after 500ms"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %q, want prefix %q", err, want)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Run took %v after a 500ms timeout", elapsed)
	}
	if res.ExitCode != -1 {
		t.Errorf("ExitCode = %d, want -1", res.ExitCode)
	}
	waitFor(t, KillGrace+2*time.Second, func() bool { return len(groupMembers(t, pgid)) == 0 })
}

func TestRunCancelKillsProcessGroupAndWrapsCtxErr(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	pgidc := make(chan int, 1)
	go func() {
		line, _ := bufio.NewReader(pr).ReadString('\n')
		n, _ := strconv.Atoi(strings.TrimSpace(line))
		pgidc <- n
		_, _ = io.Copy(io.Discard, pr)
	}()
	errc := make(chan error, 1)
	go func() {
		// The trap makes sh ignore SIGTERM, so only SIGKILL ends it.
		_, err := Run(ctx, Cmd{Path: "sh", Args: []string{"-c", "trap '' TERM; echo $$; sleep 30 & sleep 30 & wait"}, Stdout: pw})
		pw.Close()
		errc <- err
	}()
	pgid := <-pgidc
	waitFor(t, 2*time.Second, func() bool { return len(groupMembers(t, pgid)) >= 3 })
	cancel()
	err := <-errc
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want context.Canceled and not ErrTimeout", err)
	}
	waitFor(t, KillGrace+2*time.Second, func() bool { return len(groupMembers(t, pgid)) == 0 })
}

func TestRunCanceledBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, Cmd{Path: "sh", Args: []string{"-c", "true"}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestRunOrphanHoldingStdoutDoesNotHang(t *testing.T) {
	// The shell exits at once but leaves a child holding stdout; Run
	// returns after WaitDelay instead of waiting 30 s, and the orphan is
	// killed with its group.
	start := time.Now()
	res, err := Run(context.Background(), Cmd{Path: "sh", Args: []string{"-c", "echo $$; sleep 30 &"}})
	if err != nil {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > KillGrace+2*time.Second {
		t.Errorf("Run took %v", time.Since(start))
	}
	pgid, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
	if err != nil {
		t.Fatalf("stdout = %q", res.Stdout)
	}
	waitFor(t, KillGrace+2*time.Second, func() bool { return len(groupMembers(t, pgid)) == 0 })
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupMembers lists live (non-zombie) processes in process group pgid. A
// zombie is dead: only its exit status waits for a reaper (in containers
// PID 1 may never reap it).
func groupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state ppid pgrp ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// helperEnv makes the test binary act as a Satoru process that runs a
// long child through Run (see TestMain).
const helperEnv = "SATORU_PROC_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "sleep" {
		// The child prints its pid on our stdout, where the test reads it.
		_, err := Run(context.Background(), Cmd{Step: "helper", Path: "sh", Args: []string{"-c", "echo $$; exec sleep 60"}, Stdout: os.Stdout})
		fmt.Fprintln(os.Stderr, "helper: Run returned:", err)
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// TestRunChildDiesWithParent SIGKILLs a process that is inside Run (no
// cancel, no cleanup runs) and checks its child does not live on.
func TestRunChildDiesWithParent(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(exe, "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"=sleep")
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	child, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil || child <= 0 {
		t.Fatalf("did not learn the child's pid: %q %v %v", line, err, perr)
	}
	// Should the test fail, the sleep must not outlive it either.
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	// exec replaced sh with sleep; wait until it is sleep, or a dying sh
	// could pass for the child that died.
	waitFor(t, 2*time.Second, func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", child))
		return strings.TrimSpace(string(b)) == "sleep"
	})
	if ppid := parentOf(child); ppid != helper.Process.Pid {
		t.Fatalf("child %d has parent %d, want the helper %d", child, ppid, helper.Process.Pid)
	}
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	waitFor(t, 2*time.Second, func() bool { return !alive(child) })
}

// alive reports whether pid is a live (non-zombie) process.
func alive(pid int) bool {
	state, _ := procStat(pid)
	return state != "" && state != "Z" && state != "X"
}

func parentOf(pid int) int {
	_, ppid := procStat(pid)
	return ppid
}

// procStat reads a process's state and parent pid from /proc; "" when it
// is gone.
func procStat(pid int) (state string, ppid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return "", 0
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0], ppid
}
