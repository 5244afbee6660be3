package realproc

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Settle writes back dirty pages (the previous run's staging and repo)
// and waits, up to maxWait, for the machine to go quiet (the CPUs at least
// 90% idle for a second): other work on a shared machine would otherwise
// land inside a measurement. It measures anyway after maxWait, and says
// so in the log.
func Settle(tb testing.TB, maxWait time.Duration) {
	tb.Helper()
	syscall.Sync()
	start := time.Now()
	quiet := 0
	for quiet < 4 && time.Since(start) < maxWait {
		busy, all := CPUJiffies()
		time.Sleep(250 * time.Millisecond)
		busy2, all2 := CPUJiffies()
		if all2 > all && float64(busy2-busy)/float64(all2-all) <= 0.10 {
			quiet++
		} else {
			quiet = 0
		}
	}
	if quiet < 4 {
		tb.Logf("machine still busy after %s of waiting; measuring anyway", time.Since(start).Round(time.Second))
	}
}

// CPUJiffies reads the machine's busy and total CPU time from /proc/stat
// (iowait counts as idle).
func CPUJiffies() (busy, total uint64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}
