package faults

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/realproc"
)

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
			if !p.MuxMaster() && realproc.Alive(p) {
				left = append(left, p)
				seen[p.PID] = true
			}
		}
		for _, p := range realproc.InstallationProcs(satoruBin, dirs, false) {
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

// waitChild polls satoru's descendants until one matches, at most within;
// it returns the match, or fails the test naming what it waited for.
func waitChild(t testing.TB, s *satoru, within time.Duration, what string, match func(procInfo) bool) procInfo {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		pid := s.PID()
		if pid == 0 {
			t.Fatalf("waiting for %s: %s is not running", what, s.Name)
		}
		for _, p := range realproc.Descendants(pid) {
			if match(p) {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s under %s (pid %d) within %s", what, s.Name, pid, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// isRestic matches a restic child running subcommand sub.
func isRestic(sub string) func(procInfo) bool {
	return func(p procInfo) bool { return p.Comm == "restic" && p.HasArg(sub) }
}
