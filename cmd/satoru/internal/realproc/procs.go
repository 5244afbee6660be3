package realproc

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// ProcInfo is one process as /proc shows it.
type ProcInfo struct {
	PID   int
	PPID  int
	Comm  string
	Args  []string
	Start uint64 // start time in clock ticks since boot: tells a reused pid apart
}

func (p ProcInfo) String() string {
	cmd := strings.Join(p.Args, " ")
	if len(cmd) > 400 {
		cmd = cmd[:200] + " ... " + cmd[len(cmd)-200:]
	}
	return fmt.Sprintf("pid %d (%s): %s", p.PID, p.Comm, cmd)
}

// HasArg reports whether one of the process's arguments is exactly a.
func (p ProcInfo) HasArg(a string) bool { return slices.Contains(p.Args[min(1, len(p.Args)):], a) }

// MuxMaster reports whether p is an OpenSSH ControlMaster kept in the
// background by ControlPersist ("ssh: <socket> [mux]"). Satoru keeps one
// per site on purpose; after a crash it expires on its own (60 s idle),
// so it is not an orphan of a killed job.
func (p ProcInfo) MuxMaster() bool {
	return p.Comm == "ssh" && strings.Contains(strings.Join(p.Args, " "), "[mux]")
}

// ReadProc reads /proc/<pid>; ok is false when the process is gone.
func ReadProc(pid int) (ProcInfo, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcInfo{}, false
	}
	// "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
	s := string(stat)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return ProcInfo{}, false
	}
	rest := strings.Fields(s[close+1:])
	if len(rest) < 20 {
		return ProcInfo{}, false
	}
	ppid, _ := strconv.Atoi(rest[1])
	start, _ := strconv.ParseUint(rest[19], 10, 64)
	p := ProcInfo{PID: pid, PPID: ppid, Comm: s[open+1 : close], Start: start}
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		for _, a := range strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00") {
			p.Args = append(p.Args, a)
		}
	}
	return p, true
}

// AllProcs is every process on the machine.
func AllProcs() []ProcInfo {
	ents, _ := os.ReadDir("/proc")
	var out []ProcInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := ReadProc(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// Descendants is every process below root (children, grandchildren...).
func Descendants(root int) []ProcInfo {
	all := AllProcs()
	kids := map[int][]ProcInfo{}
	for _, p := range all {
		kids[p.PPID] = append(kids[p.PPID], p)
	}
	var out []ProcInfo
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

// Alive reports whether p still runs (the same process, not a reused pid).
func Alive(p ProcInfo) bool {
	q, ok := ReadProc(p.PID)
	return ok && q.Start == p.Start
}

// runs reports whether p runs the executable bin: a satoru process the
// harness started, whose life is its business, not an orphan's.
func runs(p ProcInfo, bin string) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
	return err == nil && exe == bin
}

// refersTo reports whether p names one of dirs in its argv, environment
// or working directory: a process of that installation.
func refersTo(p ProcInfo, dirs []string) bool {
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

// InstallationProcs is every process of the installation in dirs other
// than the satoru processes of bin, the test binary and, unless
// withMasters, ssh control masters.
func InstallationProcs(bin string, dirs []string, withMasters bool) []ProcInfo {
	var out []ProcInfo
	for _, p := range AllProcs() {
		if p.PID == os.Getpid() || runs(p, bin) || (!withMasters && p.MuxMaster()) {
			continue
		}
		if refersTo(p, dirs) {
			out = append(out, p)
		}
	}
	return out
}

// KillLeftovers SIGKILLs, by pid, every process still naming dirs (ssh
// control masters included), so nothing of a test outlives it.
func KillLeftovers(t testing.TB, bin string, dirs []string) {
	for _, p := range InstallationProcs(bin, dirs, true) {
		if Alive(p) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
			if !p.MuxMaster() {
				t.Logf("cleanup: killed leftover %s", p)
			}
		}
	}
}
