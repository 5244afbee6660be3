package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// procInfo is one process as /proc shows it.
type procInfo struct {
	PID   int
	PPID  int
	Comm  string
	Args  []string
	Start uint64 // start time in clock ticks since boot: tells a reused pid apart
}

func (p procInfo) String() string {
	cmd := strings.Join(p.Args, " ")
	if len(cmd) > 400 {
		cmd = cmd[:200] + " ... " + cmd[len(cmd)-200:]
	}
	return fmt.Sprintf("pid %d (%s): %s", p.PID, p.Comm, cmd)
}

// hasArg reports whether one of the process's arguments is exactly a.
func (p procInfo) hasArg(a string) bool { return slices.Contains(p.Args[min(1, len(p.Args)):], a) }

// muxMaster reports whether p is an OpenSSH ControlMaster kept in the
// background by ControlPersist ("ssh: <socket> [mux]"). Satoru keeps one
// per site on purpose; after a crash it expires on its own (60 s idle),
// so it is not an orphan of a killed job.
func (p procInfo) muxMaster() bool {
	return p.Comm == "ssh" && strings.Contains(strings.Join(p.Args, " "), "[mux]")
}

// readProc reads /proc/<pid>; ok is false when the process is gone.
func readProc(pid int) (procInfo, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, false
	}
	// "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
	s := string(stat)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return procInfo{}, false
	}
	rest := strings.Fields(s[close+1:])
	if len(rest) < 20 {
		return procInfo{}, false
	}
	ppid, _ := strconv.Atoi(rest[1])
	start, _ := strconv.ParseUint(rest[19], 10, 64)
	p := procInfo{PID: pid, PPID: ppid, Comm: s[open+1 : close], Start: start}
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		for _, a := range strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00") {
			p.Args = append(p.Args, a)
		}
	}
	return p, true
}

// allProcs is every process on the machine.
func allProcs() []procInfo {
	ents, _ := os.ReadDir("/proc")
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// descendants is every process below root (children, grandchildren...).
func descendants(root int) []procInfo {
	all := allProcs()
	kids := map[int][]procInfo{}
	for _, p := range all {
		kids[p.PPID] = append(kids[p.PPID], p)
	}
	var out []procInfo
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range kids[pid] {
			out = append(out, c)
			queue = append(queue, c.PID)
		}
	}
	return out
}

// alive reports whether p still runs (the same process, not a reused pid).
func alive(p procInfo) bool {
	q, ok := readProc(p.PID)
	return ok && q.Start == p.Start
}

// satoruProc reports whether p is a satoru process of this suite: their
// life is the harness's business, not an orphan's.
func satoruProc(p procInfo) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
	return err == nil && exe == satoruBin
}

// refersTo reports whether p names one of dirs in its argv, environment
// or working directory: a process of that installation.
func refersTo(p procInfo, dirs []string) bool {
	hit := func(s string) bool {
		for _, d := range dirs {
			if strings.Contains(s, d) {
				return true
			}
		}
		return false
	}
	if hit(strings.Join(p.Args, "\x00")) {
		return true
	}
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.PID)); err == nil && hit(string(env)) {
		return true
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", p.PID)); err == nil {
		for _, d := range dirs {
			if cwd == d || strings.HasPrefix(cwd, d+string(filepath.Separator)) {
				return true
			}
		}
	}
	return false
}

// installationProcs is every process of the installation in dirs other
// than satoru itself, the test binary and, unless withMasters, ssh
// control masters.
func installationProcs(dirs []string, withMasters bool) []procInfo {
	var out []procInfo
	for _, p := range allProcs() {
		if p.PID == os.Getpid() || satoruProc(p) || (!withMasters && p.muxMaster()) {
			continue
		}
		if refersTo(p, dirs) {
			out = append(out, p)
		}
	}
	return out
}

// checkNoOrphans fails the test when, 5 s after satoru was SIGKILLed, a
// process it had started (before: its descendants at the kill), or any
// other process naming the installation's folders, still runs: a killed
// node must not leave an rsync writing into staging or a restic holding
// the repository. ssh control masters are exempt (muxMaster).
func checkNoOrphans(t testing.TB, before []procInfo, dirs []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []procInfo
		seen := map[int]bool{}
		for _, p := range before {
			if !p.muxMaster() && alive(p) {
				left = append(left, p)
				seen[p.PID] = true
			}
		}
		for _, p := range installationProcs(dirs, false) {
			if !seen[p.PID] {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, p := range left {
				fmt.Fprintf(&b, "\n  %s", p)
			}
			t.Errorf("orphans: %d process(es) of the killed satoru still run 5s after the SIGKILL:%s", len(left), b.String())
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killLeftovers SIGKILLs, by pid, every process still naming dirs (ssh
// control masters included), so nothing of a test outlives it.
func killLeftovers(t testing.TB, dirs []string) {
	for _, p := range installationProcs(dirs, true) {
		if alive(p) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
			if !p.muxMaster() {
				t.Logf("cleanup: killed leftover %s", p)
			}
		}
	}
}

// waitChild polls satoru's descendants until one matches, at most within;
// it returns the match, or fails the test naming what it waited for.
func waitChild(t testing.TB, s *satoru, within time.Duration, what string, match func(procInfo) bool) procInfo {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		pid := s.pid()
		if pid == 0 {
			t.Fatalf("waiting for %s: %s is not running", what, s.name)
		}
		for _, p := range descendants(pid) {
			if match(p) {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s under %s (pid %d) within %s", what, s.name, pid, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// isRestic matches a restic child running subcommand sub.
func isRestic(sub string) func(procInfo) bool {
	return func(p procInfo) bool { return p.Comm == "restic" && p.hasArg(sub) }
}
