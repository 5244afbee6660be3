package fleetbench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/satoru/satoru/cmd/satoru/internal/realproc"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times (100 on
// every Linux build that matters).
const clockTicks = 100

// procCPU is a process's CPU seconds from /proc/<pid>/stat: its own
// (utime + stime), and with reaped also what its waited-for descendants
// used (cutime + cstime, which include their own reaped descendants).
func procCPU(pid int, reaped bool) (float64, bool) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, false
	}
	var ticks uint64
	last := 12 // utime, stime
	if reaped {
		last = 14 // cutime, cstime
	}
	for _, v := range f[11 : last+1] {
		n, _ := strconv.ParseUint(v, 10, 64)
		ticks += n
	}
	return float64(ticks) / clockTicks, true
}

// cpuMeter samples the CPU time of the benchmark's own processes, so a
// round's figure can be told apart from what other work on the machine
// took. A process tree's CPU is the sum, over its live processes, of
// their own time and what their reaped children used: every process that
// ended was reaped by one live member (its parent), so each is counted
// once, and the sum only grows. Trees: the satoru processes (with rsync,
// restic and the ssh clients they run), the ssh masters they keep in the
// background (ControlPersist forks them away from satoru), the edge sshd
// listeners (sessions, rsync senders), and the benchmark process's own
// time (the delay proxies, the API polling). Not counted: a master that
// ends between two samples loses what it used since the first.
type cpuMeter struct {
	satoru   []int    // pids of control and workers
	dataDirs []string // their data_dirs: the masters' control sockets live there
	sshd     []int    // edge sshd listeners
}

// cpuSnap is one sample.
type cpuSnap struct {
	satoru, edges, bench float64
	masters              map[[2]uint64]float64 // (pid, start) -> CPU seconds
}

func (m cpuMeter) sample() cpuSnap {
	s := cpuSnap{masters: map[[2]uint64]float64{}}
	procs := realproc.AllProcs()
	kids := map[int][]int{}
	for _, p := range procs {
		kids[p.PPID] = append(kids[p.PPID], p.PID)
	}
	seen := map[int]bool{}
	var tree func(pid int) float64
	tree = func(pid int) float64 {
		if seen[pid] {
			return 0
		}
		seen[pid] = true
		v, _ := procCPU(pid, true)
		for _, k := range kids[pid] {
			v += tree(k)
		}
		return v
	}
	for _, pid := range m.satoru {
		s.satoru += tree(pid)
	}
	for _, pid := range m.sshd {
		s.edges += tree(pid)
	}
	s.bench, _ = procCPU(os.Getpid(), false)
	for _, p := range procs {
		if !p.MuxMaster() || seen[p.PID] {
			continue
		}
		args := strings.Join(p.Args, " ")
		for _, d := range m.dataDirs {
			if strings.Contains(args, d+string(filepath.Separator)) {
				s.masters[[2]uint64{uint64(p.PID), p.Start}] = tree(p.PID)
				break
			}
		}
	}
	return s
}

// cpuUse is the CPU seconds between two samples.
type cpuUse struct{ satoru, edges, bench float64 }

func (c cpuUse) total() float64 { return c.satoru + c.edges + c.bench }

func cpuBetween(a, b cpuSnap) cpuUse {
	u := cpuUse{satoru: b.satoru - a.satoru, edges: b.edges - a.edges, bench: b.bench - a.bench}
	for k, v := range b.masters {
		u.satoru += v - a.masters[k] // a master born in between started at 0
	}
	return u
}

// sshdListeners are the pids of the edges' sshd listeners: the sshd
// processes started with a config under one of the edges' folders.
func sshdListeners(edgeRoots []string) []int {
	var out []int
	for _, p := range realproc.AllProcs() {
		if p.Comm != "sshd" {
			continue
		}
		args := strings.Join(p.Args, " ")
		for _, r := range edgeRoots {
			if strings.Contains(args, r+string(filepath.Separator)) {
				out = append(out, p.PID)
				break
			}
		}
	}
	return out
}
