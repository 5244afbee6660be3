package node

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/satoru/satoru/cmd/satoru/internal/realproc"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/testkit"
)

var (
	benchRounds = flag.Int("rounds", 6, "BenchmarkBackupVsTools: measured rounds (each a fresh node and repository; even, so each side goes first equally often); medians are reported")
	benchTrace  = flag.Bool("trace-steps", true, "BenchmarkBackupVsTools: after the measured rounds, one extra unmeasured round with every ssh, rsync, restic and gzip traced")
)

// retryBudget is how long rounds that had company are run again.
const retryBudget = 15 * time.Minute

// prodKnobs undo testEnv's fast heartbeats and leases: the benchmark
// measures the timings a deployed node runs with (config defaults).
var prodKnobs = []string{
	"SATORU_JOB_HEARTBEAT_SECONDS=10",
	"SATORU_SSH_CONNECT_TIMEOUT_SECONDS=10",
}

// BenchmarkBackupVsTools times one site backup through Satoru's API
// against the same rsync and restic backup run by hand, on a first run and
// on a no-change rerun. Run it once:
//
//	go test -tags ferretdb_no_postgresql,ferretdb_no_mysql -run '^$' \
//	  -bench BackupVsTools -benchtime 1x -timeout 30m ./cmd/satoru/internal/node/
//
// b.N is ignored: one call measures -rounds rounds (default 6) and
// reports medians. Each round starts a fresh node and a fresh by-hand
// repository, both initialised and warmed with one tiny backup of another
// folder before anything is timed, then times, interleaved (the order
// flips every round):
//
//   - satoru: POST /sites/{uuid}/jobs {"type":"backup"} until the job's
//     finished_at (the figure compared), and until GET /jobs/{id} shows it
//     terminal (reported as well);
//   - tools: rsync then restic backup, with Satoru's flags, ssh options,
//     staging layout, restic environment, --host and tags.
//
// This machine is shared: before each run the benchmark waits for the
// CPUs to go quiet, and a round in which other processes took a
// noticeable share of the CPU (see cpuMeter, maxForeign) is logged and run
// again, at most -rounds extra times.
//
// The custom metrics are the medians in seconds and the ratios
// satoru/tools; the log has every round and Satoru's time by step, and
// (-trace-steps) one more round with every subprocess timed.
func BenchmarkBackupVsTools(b *testing.B) {
	if b.N > 1 {
		b.Logf("b.N=%d ignored: one call measures %d rounds; run with -benchtime 1x", b.N, *benchRounds)
	}
	for _, tool := range []string{"ssh", "rsync", "gzip", "sqlite3"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("%s not on PATH: %v", tool, err)
		}
	}
	if resticBin() == "" {
		b.Fatal("no restic in bin/: run `make tools-test` first")
	}
	edge := testkit.StartEdgeHost(b)
	src := filepath.Join(edge.Dir, "site")
	genStart := time.Now()
	files, size := realproc.BenchTree(b, src)
	warm := filepath.Join(edge.Dir, "warmup")
	mkdirB(b, warm)
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(warm, fmt.Sprintf("w%d.txt", i)), []byte(strings.Repeat("warm ", 100*(i+1))), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("site: %d files, %d bytes (%.1f MB) in %s, generated in %s", files, size, float64(size)/1e6, src, time.Since(genStart).Round(time.Millisecond))

	var sFirst, sRerun, sCold, tFirst, tRerun []sample
	rounds, rejected := *benchRounds, 0
	benchStart := time.Now()
	for attempt := 1; len(sFirst) < rounds; attempt++ {
		satoruFirstOrder := len(sFirst)%2 == 0 // balanced among the kept rounds
		rs := runRound(b, edge, src, warm, files, size, satoruFirstOrder, "")
		b.Logf("round %d (%s first), seconds [machine CPU s / foreign CPU s]: satoru %.3f [%.1f/%.1f] rerun %.3f [%.1f/%.1f] cold rerun %.3f [%.1f/%.1f]; tools %.3f [%.1f/%.1f] rerun %.3f [%.1f/%.1f]",
			attempt, map[bool]string{true: "satoru", false: "tools"}[satoruFirstOrder],
			rs.satoru[0].total.Seconds(), rs.satoru[0].cpu, rs.satoru[0].foreign,
			rs.satoru[1].total.Seconds(), rs.satoru[1].cpu, rs.satoru[1].foreign,
			rs.cold.total.Seconds(), rs.cold.cpu, rs.cold.foreign,
			rs.tools[0].total.Seconds(), rs.tools[0].cpu, rs.tools[0].foreign,
			rs.tools[1].total.Seconds(), rs.tools[1].cpu, rs.tools[1].foreign)
		for i, name := range []string{"first", "rerun"} {
			p := rs.satoru[i].phases
			b.Logf("  satoru %s: queue %.3f, preflight %.3f, rsync %.3f, hand-off %.3f, snapshot %.3f, finish %.3f | tools rsync %.3f, restic %.3f",
				name, p["queue (created->started)"].Seconds(), p["preflight (load, local tools, ssh master, remote checks)"].Seconds(),
				p["rsync (puller event)"].Seconds(), p["hand-off to snapshotter"].Seconds(),
				p["snapshot (restic cat config + backup)"].Seconds(), p["finish (site status, stamp finished_at)"].Seconds(),
				rs.tools[i].phases["rsync"].Seconds(), rs.tools[i].phases["restic backup"].Seconds())
		}
		cp := rs.cold.phases
		b.Logf("  satoru cold rerun: preflight %.3f, rsync %.3f, hand-off %.3f, snapshot %.3f",
			cp["preflight (load, local tools, ssh master, remote checks)"].Seconds(), cp["rsync (puller event)"].Seconds(),
			cp["hand-off to snapshotter"].Seconds(), cp["snapshot (restic cat config + backup)"].Seconds())
		// A round where other work took a noticeable share of the CPU is
		// run again, up to as many extra rounds as were asked for and
		// while the retry budget lasts (go test's -timeout 30m); after
		// that, rounds are kept whatever their company.
		if busy := rs.busy(); busy != "" && rejected < rounds && time.Since(benchStart) < retryBudget {
			rejected++
			b.Logf("  round %d not kept: %s", attempt, busy)
			continue
		}
		sFirst, sRerun, sCold = append(sFirst, rs.satoru[0]), append(sRerun, rs.satoru[1]), append(sCold, rs.cold)
		tFirst, tRerun = append(tFirst, rs.tools[0]), append(tRerun, rs.tools[1])
	}
	b.Logf("kept %d rounds, ran %d more that had company", len(sFirst), rejected)
	if len(sFirst) > 0 {
		reportMedians(b, sFirst, sRerun, sCold, tFirst, tRerun)
	}
	if *benchTrace {
		b.Logf("traced round (not in the medians): every subprocess, seconds after the POST")
		rs := runRound(b, edge, src, warm, files, size, true, b.TempDir())
		for i, name := range []string{"first run", "rerun"} {
			b.Logf("%s: POST->finished_at %.3f s\n%s", name, rs.satoru[i].total.Seconds(), rs.satoru[i].trace)
		}
		b.Logf("cold rerun: POST->finished_at %.3f s\n%s", rs.cold.total.Seconds(), rs.cold.trace)
		b.Logf("ssh on this machine, medians of 5 unless said (seconds):\n%s", sshFloor(b, edge, src))
	}
}

// reportMedians reports the custom metrics and logs the table of medians.
func reportMedians(b *testing.B, sFirst, sRerun, sCold, tFirst, tRerun []sample) {
	b.ReportMetric(0, "ns/op") // one call, many minutes: meaningless

	sf, sr, tf, tr := medianOf(sFirst, total), medianOf(sRerun, total), medianOf(tFirst, total), medianOf(tRerun, total)
	b.ReportMetric(sf, "satoru_first_s")
	b.ReportMetric(tf, "tools_first_s")
	b.ReportMetric(sr, "satoru_rerun_s")
	b.ReportMetric(tr, "tools_rerun_s")
	b.ReportMetric(sf/tf, "first_ratio")
	b.ReportMetric(sr/tr, "rerun_ratio")
	sc := medianOf(sCold, total)
	b.ReportMetric(sc, "satoru_cold_rerun_s")
	b.ReportMetric(sc/tr, "cold_rerun_ratio")

	var tab strings.Builder
	fmt.Fprintf(&tab, "medians of %d rounds (seconds)\n", len(sFirst))
	fmt.Fprintf(&tab, "%-58s %9s %9s\n", "", "first", "rerun")
	row := func(name string, f, r float64) { fmt.Fprintf(&tab, "%-58s %9.3f %9.3f\n", name, f, r) }
	row("satoru POST->finished_at", sf, sr)
	row("satoru POST->API terminal", medianOf(sFirst, visible), medianOf(sRerun, visible))
	row("tools rsync+restic", tf, tr)
	row("  tools rsync", medianOf(tFirst, phaseDur("rsync")), medianOf(tRerun, phaseDur("rsync")))
	row("  tools restic backup", medianOf(tFirst, phaseDur("restic backup")), medianOf(tRerun, phaseDur("restic backup")))
	row("ratio satoru finished_at / tools", sf/tf, sr/tr)
	row("ratio satoru API terminal / tools", medianOf(sFirst, visible)/tf, medianOf(sRerun, visible)/tr)
	row("median of the per-round ratios (finished_at)", medianRatio(sFirst, tFirst), medianRatio(sRerun, tRerun))
	row("fastest satoru", fastest(sFirst), fastest(sRerun))
	row("fastest tools", fastest(tFirst), fastest(tRerun))
	fmt.Fprintf(&tab, "%-58s %9.3f\n", "satoru cold rerun (ssh master closed first)", sc)
	fmt.Fprintf(&tab, "%-58s %9.3f\n", "ratio satoru cold rerun / tools rerun", sc/tr)
	fmt.Fprintf(&tab, "%-58s %9.3f\n", "median of the per-round cold rerun ratios", medianRatio(sCold, tRerun))
	fmt.Fprintf(&tab, "satoru by step (medians; from job times and event timestamps)\n")
	fmt.Fprintf(&tab, "%-58s %9s %9s %9s\n", "", "first", "rerun", "cold")
	for _, name := range satoruPhaseNames {
		fmt.Fprintf(&tab, "%-58s %9.3f %9.3f %9.3f\n", "  "+name, medianOf(sFirst, phaseDur(name)), medianOf(sRerun, phaseDur(name)), medianOf(sCold, phaseDur(name)))
	}
	b.Logf("\n%s", tab.String())
}

// sshFloor times, by hand, what Satoru's preflight costs on this
// machine: a fresh connection running `true`, a fresh connection running
// the preflight's remote checks, opening a master (ControlPersist) and a
// command over an open master; then whether rsync moves the whole site
// slower over a master than over its own connection.
func sshFloor(b *testing.B, edge *testkit.EdgeHost, src string) string {
	b.Helper()
	cfg := remote.SSHConfig{Host: edge.Host, Port: edge.Port, User: edge.User, KeyPath: edge.KeyPath,
		KnownHostsFile: edge.KnownHostsFile, HostKeyAlias: edge.HostKeyAlias, ConnectTimeout: 10 * time.Second}
	checks, err := remote.PreflightCommand([]remote.PreflightTarget{{Index: 0, Mode: domain.ModeDirectory, Path: src}}, "/tmp")
	if err != nil {
		b.Fatal(err)
	}
	run := func(c remote.SSHConfig, cmd string) time.Duration {
		args, err := remote.SSHArgs(c, cmd)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if out, err := exec.Command("ssh", args...).CombinedOutput(); err != nil {
			b.Fatalf("ssh %s: %v: %s", cmd, err, out)
		}
		return time.Since(start)
	}
	med := func(f func() time.Duration) float64 {
		var v []float64
		for range 5 {
			realproc.Settle(b, 5*time.Second)
			v = append(v, f().Seconds())
		}
		slices.Sort(v)
		return v[2]
	}
	master := cfg
	master.ControlPath = filepath.Join(b.TempDir(), "cm")
	closeMaster := func() {
		if args, err := remote.SSHControlArgs(master, "exit"); err == nil {
			_ = exec.Command("ssh", args...).Run()
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "  fresh connection, true            %.3f\n", med(func() time.Duration { return run(cfg, "true") }))
	fmt.Fprintf(&out, "  fresh connection, preflight checks %.3f\n", med(func() time.Duration { return run(cfg, checks) }))
	fmt.Fprintf(&out, "  open master, preflight checks     %.3f\n", med(func() time.Duration {
		closeMaster()
		return run(master, checks)
	}))
	fmt.Fprintf(&out, "  over an open master, true         %.3f\n", med(func() time.Duration { return run(master, "true") }))

	// The whole site into an empty folder, over rsync's own connection
	// (by hand) and over an open master (Satoru), alternating.
	pull := func(c remote.SSHConfig) time.Duration {
		dst, err := os.MkdirTemp("", "sbpull")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dst)
		args, err := remote.RsyncPullArgs(remote.RsyncPull{SSH: c, RemoteDir: src, LocalDir: dst, IOTimeout: 5 * time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		n := len(args)
		args = slices.Concat(args[:n-3], []string{"--chmod=D0700,F0600", "--info=progress2"}, args[n-3:])
		realproc.Settle(b, 10*time.Second)
		start := time.Now()
		if out, err := exec.Command("rsync", args...).CombinedOutput(); err != nil {
			b.Fatalf("rsync: %v: %s", err, out)
		}
		return time.Since(start)
	}
	var own, mux []float64
	for i := range 3 {
		if i%2 == 0 {
			own = append(own, pull(cfg).Seconds())
			mux = append(mux, pull(master).Seconds())
		} else {
			mux = append(mux, pull(master).Seconds())
			own = append(own, pull(cfg).Seconds())
		}
	}
	closeMaster()
	slices.Sort(own)
	slices.Sort(mux)
	fmt.Fprintf(&out, "  rsync of the site into an empty folder, own connection %.3f (runs %.2f %.2f %.2f)\n", own[1], own[0], own[1], own[2])
	fmt.Fprintf(&out, "  rsync of the site into an empty folder, over a master  %.3f (runs %.2f %.2f %.2f)\n", mux[1], mux[0], mux[1], mux[2])
	return out.String()
}

// sample is one timed backup.
type sample struct {
	total time.Duration // satoru: POST -> finished_at; tools: rsync + restic
	// visible is, for satoru, POST -> GET /jobs/{id} answering a terminal
	// status.
	visible time.Duration
	phases  map[string]time.Duration
	trace   string // the subprocess timeline of a traced run
	// cpu is the CPU time the whole machine used during the run, foreign
	// the part of it not ours (see cpuMeter).
	cpu, foreign float64
}

func visible(s sample) float64 { return s.visible.Seconds() }

func phaseDur(name string) func(sample) float64 {
	return func(s sample) float64 { return s.phases[name].Seconds() }
}

func total(s sample) float64 { return s.total.Seconds() }

// medianRatio is the median of satoru/tools within each round: the two
// ran minutes apart on the same machine, so each pair shares its noise.
func medianRatio(s, t []sample) float64 {
	r := make([]float64, len(s))
	for i := range s {
		r[i] = s[i].total.Seconds() / t[i].total.Seconds()
	}
	return medianFloat(r)
}

func fastest(s []sample) float64 {
	return slices.MinFunc(s, func(a, b sample) int { return cmp.Compare(a.total, b.total) }).total.Seconds()
}

func medianOf(s []sample, f func(sample) float64) float64 {
	v := make([]float64, len(s))
	for i := range s {
		v[i] = f(s[i])
	}
	return medianFloat(v)
}

// medianFloat sorts v and returns its median (the mean of the middle two
// for an even count).
func medianFloat(v []float64) float64 {
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

type roundResult struct {
	satoru, tools [2]sample // first run, rerun
	// cold is one more Satoru no-change rerun after its ssh master was
	// closed: the first job of a site after ControlPersist, which pays
	// the handshake as the tools do.
	cold sample
}

// maxForeign is how much foreign CPU a run may see and still count as
// alone: a quarter second plus 10% of the run's wall time.
func maxForeign(s sample) float64 { return 0.25 + 0.1*s.total.Seconds() }

// busy says which runs of the round had company, or "".
func (r roundResult) busy() string {
	type run struct {
		who string
		s   sample
	}
	runs := []run{
		{"satoru first run", r.satoru[0]}, {"tools first run", r.tools[0]},
		{"satoru rerun", r.satoru[1]}, {"tools rerun", r.tools[1]},
		{"satoru cold rerun", r.cold},
	}
	var out []string
	for _, v := range runs {
		if v.s.foreign > maxForeign(v.s) {
			out = append(out, fmt.Sprintf("%s saw %.1f CPU s of other work (allowed %.1f)", v.who, v.s.foreign, maxForeign(v.s)))
		}
	}
	return strings.Join(out, "; ")
}

// runRound sets up a fresh node and a fresh by-hand repository, warms
// both, and times a first run and a rerun of each, interleaved. With
// traceDir set, ssh, rsync, restic and gzip are wrapped to log every
// invocation there (adding a few ms each), for the step breakdown.
func runRound(b *testing.B, edge *testkit.EdgeHost, src, warm string, files int, size int64, satoruFirst bool, traceDir string) roundResult {
	b.Helper()
	ctx := context.Background()
	// A short root: the node's ssh control sockets then live under its
	// data folder (a long one falls back to a shared temp folder), which
	// tags its ssh master for cpuMeter.
	root, err := os.MkdirTemp("", "sb")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(root)

	var trace *tracer
	extra := slices.Clone(prodKnobs)
	if traceDir != "" {
		trace = newTracer(b, traceDir)
		extra = append(extra, "SATORU_RESTIC_BIN="+trace.wrapped["restic"])
		oldPath := os.Getenv("PATH")
		os.Setenv("PATH", trace.binDir+string(os.PathListSeparator)+oldPath)
		defer os.Setenv("PATH", oldPath)
	}

	// Satoru: a fresh node whose repository exists before anything is
	// timed, warmed by one tiny backup of another site.
	n, stop := startNode(b, loadConfig(b, testEnv(filepath.Join(root, "satoru"), extra...)), All)
	defer stop()
	c := newClient(b, n)
	repo, err := ResticRepo(n.Config)
	if err != nil {
		b.Fatal(err)
	}
	if err := repo.Init(ctx); err != nil {
		b.Fatalf("init satoru's repository: %v", err)
	}
	warmSite := c.registerSite(edge, siteOpts{name: "bench-warmup", targets: []map[string]any{{"mode": "directory", "path": warm}}})
	if j := c.waitJob(c.startJob(warmSite, "backup"), 2*time.Minute); j.Status != domain.StatusSuccess {
		b.Fatalf("warm-up backup: %s %q", j.Status, j.Error)
	}
	site := c.registerSite(edge, siteOpts{name: "bench-site", targets: []map[string]any{{"mode": "directory", "path": src}}})
	w := newJobWatcher(b, n, site)
	defer w.close()

	// Tools: the same commands by hand into their own staging and repo.
	tl := newHandRun(b, edge, filepath.Join(root, "tools"), src)
	tl.init(b)
	tl.warm(b, warm)

	meter := newCPUMeter(edge, n.Config.DataDir)
	if meter.sshdPid == 0 {
		b.Logf("no sshd pid file: the edge host's CPU counts as foreign")
	}
	var out roundResult
	for i := range 2 {
		steps := []func(){
			func() { out.satoru[i] = timeSatoru(b, c, w, meter, site, files, size, i == 1, trace) },
			func() { out.tools[i] = tl.backup(b, meter, files, i == 1) },
		}
		if !satoruFirst {
			slices.Reverse(steps)
		}
		for _, step := range steps {
			realproc.Settle(b, 20*time.Second)
			step()
		}
	}
	realproc.Settle(b, 20*time.Second)
	closeMasters(b, n)
	out.cold = timeSatoru(b, c, w, meter, site, files, size, true, trace)
	return out
}

// closeMasters ends the node's ssh masters (`ssh -O exit` on each control
// socket), as if ControlPersist had run out since the site's last job.
func closeMasters(b *testing.B, n *Node) {
	b.Helper()
	dir := filepath.Join(n.Config.DataDir, "ssh", "cm")
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatalf("ssh control folder: %v", err)
	}
	for _, e := range ents {
		if e.Type()&os.ModeSocket == 0 {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if out, err := exec.Command("ssh", "-o", "ControlPath="+path, "-O", "exit", "satoru-bench").CombinedOutput(); err != nil {
			b.Fatalf("close ssh master %s: %v: %s", path, err, out)
		}
	}
}

// cpuMeter measures the CPU time the machine spent during a run, and how
// much of it was not ours. Ours: the benchmark process and what it waited
// for (rsync, restic, ssh; Satoru runs in-process), the edge host's sshd
// with its sessions, live or finished, and Satoru's ssh master, a detached daemon
// that is polled while it lives (it is found by tag, the node's data
// folder, in its "ssh: <control path> [mux]" title). A run with much
// foreign CPU had company on this shared machine.
type cpuMeter struct {
	sshdPid            int
	tag                string
	machine0, machine1 uint64
	own0, own1         uint64
	masters            chan uint64 // CPU of the masters seen during the run
	stopPoll           chan struct{}
}

func newCPUMeter(edge *testkit.EdgeHost, tag string) *cpuMeter {
	m := &cpuMeter{tag: tag}
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(edge.Dir), "etc", "sshd.pid")); err == nil {
		m.sshdPid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	return m
}

func (m *cpuMeter) start() {
	m.masters, m.stopPoll = make(chan uint64, 1), make(chan struct{})
	go m.pollMasters()
	m.machine0, _ = realproc.CPUJiffies()
	m.own0 = m.own()
}

func (m *cpuMeter) stop() {
	m.machine1, _ = realproc.CPUJiffies()
	m.own1 = m.own()
	close(m.stopPoll)
	m.own1 += <-m.masters
}

// pollMasters follows the ssh masters carrying the tag: every 20 ms it
// looks for new ones and notes the CPU time of those it knows (the last
// reading before a master exits misses at most 20 ms of its time). The
// same polling runs during the by-hand runs, which have no master.
func (m *cpuMeter) pollMasters() {
	// A master kept from an earlier job counts from its reading at the
	// start; one born during the run counts from zero.
	last, base := map[int]uint64{}, map[int]uint64{}
	for _, pid := range m.findMasters() {
		base[pid] = procCPU(strconv.Itoa(pid))
		last[pid] = base[pid]
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		for _, pid := range m.findMasters() {
			if _, ok := last[pid]; !ok {
				last[pid] = 0
			}
		}
		for pid := range last {
			if c := procCPU(strconv.Itoa(pid)); c > 0 {
				last[pid] = c
			}
		}
		select {
		case <-m.stopPoll:
			var sum uint64
			for pid, c := range last {
				sum += c - min(c, base[pid])
			}
			m.masters <- sum
			return
		case <-t.C:
		}
	}
}

func (m *cpuMeter) findMasters() []int {
	if m.tag == "" {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "ssh" {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.HasPrefix(cmd, []byte("ssh: ")) && bytes.Contains(cmd, []byte(m.tag)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// machine and foreign are in CPU seconds (USER_HZ is 100 on Linux).
func (m *cpuMeter) machine() float64 { return float64(m.machine1-m.machine0) / 100 }
func (m *cpuMeter) foreign() float64 {
	return m.machine() - float64(m.own1-m.own0)/100
}

// own is the CPU so far of the benchmark process (with the children it
// reaped) and of the edge sshd with every live process below it. The
// connections under a kept ssh master stay alive across runs, so their
// CPU shows only in their own counters, not yet in sshd's reaped total;
// summing the whole live tree at both ends of a run counts each process
// once: one that exits is in its parent's reaped total at the end, and
// its reading at the start is subtracted.
func (m *cpuMeter) own() uint64 {
	t := procCPU("self")
	if m.sshdPid > 0 {
		for _, pid := range descendants(m.sshdPid) {
			t += procCPU(strconv.Itoa(pid))
		}
	}
	return t
}

// descendants is root and every live process below it.
func descendants(root int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{root}
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// After the command name: state, then ppid.
		f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
		if len(f) > 1 {
			if ppid, err := strconv.Atoi(f[1]); err == nil {
				children[ppid] = append(children[ppid], pid)
			}
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// procCPU is a process's utime+stime+cutime+cstime in clock ticks.
func procCPU(pid string) uint64 {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, which ends with the last ')'.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	var t uint64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		if i < len(f) {
			n, _ := strconv.ParseUint(f[i], 10, 64)
			t += n
		}
	}
	return t
}

// satoruPhaseNames are Satoru's steps, in order, as timeSatoru derives them
// from the job's times and events (timestamps are whole milliseconds).
var satoruPhaseNames = []string{
	"POST->created_at",
	"queue (created->started)",
	"start (lease, job doc, event seq)",
	"preflight (load, local tools, ssh master, remote checks)",
	"headroom + event flush",
	"rsync (puller event)",
	"  rsync process (duration_ms)",
	"hand-off to snapshotter",
	"snapshot (restic cat config + backup)",
	"finish (site status, stamp finished_at)",
	"finished_at->API terminal",
}

// timeSatoru starts a backup of site through the API and waits for it.
func timeSatoru(b *testing.B, c *client, w *jobWatcher, meter *cpuMeter, site string, files int, size int64, rerun bool, trace *tracer) sample {
	b.Helper()
	if trace != nil {
		trace.reset(b)
	}
	w.drain()
	meter.start()
	t0 := time.Now()
	id := c.startJob(site, "backup")
	j, seen := w.wait(b, c, id, 5*time.Minute)
	meter.stop()
	if j.Status != domain.StatusSuccess {
		b.Fatalf("satoru backup: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(id)))
	}
	if got := summaryInt(j, "total_files_processed"); got != int64(files) {
		b.Fatalf("satoru backed up %d files, want %d: %v", got, files, j.Summary)
	}
	if got := summaryInt(j, "total_bytes_processed"); got != size {
		b.Fatalf("satoru backed up %d bytes, want %d", got, size)
	}
	if rerun && summaryInt(j, "bytes_transferred") > 1<<20 {
		b.Fatalf("no-change rerun transferred %d bytes", summaryInt(j, "bytes_transferred"))
	}
	s := sample{total: j.FinishedAt.Sub(t0), visible: seen.Sub(t0), cpu: meter.machine(), foreign: meter.foreign()}
	s.phases = satoruPhases(b, t0, seen, j, c.events(id))
	if trace != nil {
		s.trace = trace.timeline(b, t0, *j.FinishedAt)
	}
	return s
}

// satoruPhases splits a job's wall time at the job's own times and at the
// events that open and close each step.
func satoruPhases(b *testing.B, t0, seen time.Time, j domain.Job, evs []domain.JobEvent) map[string]time.Duration {
	b.Helper()
	find := func(what string, ok func(domain.JobEvent) bool) domain.JobEvent {
		for _, e := range evs {
			if ok(e) {
				return e
			}
		}
		b.Fatalf("no %s event:\n%s", what, dumpEvents(evs))
		return domain.JobEvent{}
	}
	started := find("job started", func(e domain.JobEvent) bool { return e.Step == "job" && strings.HasPrefix(e.Message, "started by") })
	preflight := find("preflight", func(e domain.JobEvent) bool { return e.Seq == started.Seq+1 })
	pulling := find("pull start", func(e domain.JobEvent) bool { return e.Step == "pull" && strings.HasPrefix(e.Message, "pulling ") })
	pulled := find("pull end", func(e domain.JobEvent) bool { return e.Step == "pull" && e.Data["duration_ms"] != nil })
	taken := find("snapshot take-over", func(e domain.JobEvent) bool {
		return e.Step == "snapshot" && strings.Contains(e.Message, "taken over")
	})
	snap := find("snapshot", func(e domain.JobEvent) bool { return e.Step == "snapshot" && e.Data["snapshot_id"] != nil })
	ms, _ := pulled.Data["duration_ms"].(float64)
	return map[string]time.Duration{
		"POST->created_at":                                         j.CreatedAt.Sub(t0),
		"queue (created->started)":                                 j.StartedAt.Sub(j.CreatedAt),
		"start (lease, job doc, event seq)":                        started.TS.Sub(*j.StartedAt),
		"preflight (load, local tools, ssh master, remote checks)": preflight.TS.Sub(started.TS),
		"headroom + event flush":                                   pulling.TS.Sub(preflight.TS),
		"rsync (puller event)":                                     pulled.TS.Sub(pulling.TS),
		"  rsync process (duration_ms)":                            time.Duration(ms) * time.Millisecond,
		"hand-off to snapshotter":                                  taken.TS.Sub(pulled.TS),
		"snapshot (restic cat config + backup)":                    snap.TS.Sub(taken.TS),
		"finish (site status, stamp finished_at)":                  j.FinishedAt.Sub(snap.TS),
		"finished_at->API terminal":                                seen.Sub(*j.FinishedAt),
	}
}

// jobWatcher waits for a job's end without loading the store: it follows
// the job's step events on NATS and starts polling GET /jobs/{id} (every
// 5 ms) only once the "finished" event is out. A slow poll every 500 ms
// is the fallback.
type jobWatcher struct {
	sub      *nats.Subscription
	finished chan string // job ids whose "finished" event was published
}

func newJobWatcher(b *testing.B, n *Node, site string) *jobWatcher {
	b.Helper()
	w := &jobWatcher{finished: make(chan string, 16)}
	sub, err := n.NC.Subscribe(events.EventsPrefix+"."+site+".>", func(m *nats.Msg) {
		var e events.StepEvent
		if json.Unmarshal(m.Data, &e) == nil && e.Event.Step == "job" && strings.HasPrefix(e.Event.Message, "finished") {
			select {
			case w.finished <- e.JobID:
			default:
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	w.sub = sub
	return w
}

func (w *jobWatcher) close() { _ = w.sub.Unsubscribe() }

func (w *jobWatcher) drain() {
	for {
		select {
		case <-w.finished:
		default:
			return
		}
	}
}

// wait returns the job once GET shows it terminal, and when it saw that.
func (w *jobWatcher) wait(b *testing.B, c *client, id string, within time.Duration) (domain.Job, time.Time) {
	b.Helper()
	deadline := time.After(within)
	slow := time.NewTicker(500 * time.Millisecond)
	defer slow.Stop()
	for {
		select {
		case got := <-w.finished:
			if got != id {
				continue
			}
			for range 2000 { // up to 10 s
				if j := c.job(id); j.Status.Terminal() {
					return j, time.Now()
				}
				time.Sleep(5 * time.Millisecond)
			}
		case <-slow.C:
			if j := c.job(id); j.Status.Terminal() {
				return j, time.Now()
			}
		case <-deadline:
			b.Fatalf("job %s not finished after %s", id, within)
		}
	}
}

// handRun is the by-hand baseline: rsync and restic backup with the
// flags, ssh options, layout and environment Satoru uses.
type handRun struct {
	rsync      []string // argv after "rsync"
	restic     string
	env        []string
	siteDir    string // what restic backs up: staging/<site>
	site       string
	stagingDir string
}

func newHandRun(b *testing.B, edge *testkit.EdgeHost, root, src string) *handRun {
	b.Helper()
	site := "hand-" + randHex(b, 8)
	siteDir := filepath.Join(root, "backups", site)
	staging := filepath.Join(siteDir, domain.TargetHash(domain.ModeDirectory, src))
	if err := os.MkdirAll(staging, 0o700); err != nil {
		b.Fatal(err)
	}
	args, err := remote.RsyncPullArgs(remote.RsyncPull{
		SSH: remote.SSHConfig{Host: edge.Host, Port: edge.Port, User: edge.User, KeyPath: edge.KeyPath,
			KnownHostsFile: edge.KnownHostsFile, HostKeyAlias: edge.HostKeyAlias, ConnectTimeout: 10 * time.Second},
		RemoteDir: src,
		LocalDir:  staging,
		IOTimeout: 5 * time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}
	// As the puller's rsyncArgs: staging modes and one progress line,
	// before the "--" that ends the options.
	n := len(args)
	args = slices.Concat(args[:n-3], []string{"--chmod=D0700,F0600", "--info=progress2"}, args[n-3:])
	pw := filepath.Join(root, "restic-password")
	if err := os.WriteFile(pw, []byte(randHex(b, 32)+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	return &handRun{
		rsync:  args,
		restic: resticBin(),
		env: append(os.Environ(),
			"RESTIC_REPOSITORY="+filepath.Join(root, "repo"),
			"RESTIC_REPOSITORY_FILE=", "RESTIC_PASSWORD_COMMAND=", "RESTIC_PROGRESS_FPS=1",
			"RESTIC_PASSWORD_FILE="+pw, "RESTIC_PASSWORD=",
			"RESTIC_CACHE_DIR="+filepath.Join(root, "restic-cache")),
		siteDir:    siteDir,
		site:       site,
		stagingDir: staging,
	}
}

func (h *handRun) init(b *testing.B) {
	b.Helper()
	if out, err := h.cmd(h.restic, "init").CombinedOutput(); err != nil {
		b.Fatalf("restic init: %v: %s", err, out)
	}
}

// warm backs up a tiny folder once, as Satoru's warm-up job does.
func (h *handRun) warm(b *testing.B, dir string) {
	b.Helper()
	args := append([]string{"--retry-lock", "5m0s"}, restic.BackupArgs(restic.BackupOptions{
		Paths: []string{dir}, Host: "hand-warmup", Tags: []string{domain.SiteTag("warmup")}})...)
	if out, err := h.cmd(h.restic, args...).CombinedOutput(); err != nil {
		b.Fatalf("restic warm-up backup: %v: %s", err, out)
	}
}

func (h *handRun) cmd(path string, args ...string) *exec.Cmd {
	c := exec.Command(path, args...)
	c.Env = h.env
	return c
}

// backup times rsync then restic backup, as a shell would run them.
func (h *handRun) backup(b *testing.B, meter *cpuMeter, files int, rerun bool) sample {
	b.Helper()
	// Satoru's restic argv: Repo.RetryLock (5m) and BackupArgs, with the
	// --host and tags the snapshotter gives a site's snapshot.
	resticArgs := append([]string{"--retry-lock", "5m0s"}, restic.BackupArgs(restic.BackupOptions{
		Paths: []string{h.siteDir}, Host: domain.ResticHost(h.site),
		Tags: domain.SnapshotTags(h.site, "job-"+randHex(b, 8))})...)
	var stderr bytes.Buffer
	rs := exec.Command("rsync", h.rsync...)
	rs.Stdout, rs.Stderr = io.Discard, &stderr
	var out bytes.Buffer
	rc := h.cmd(h.restic, resticArgs...)
	rc.Stdout, rc.Stderr = &out, &stderr

	meter.start()
	t0 := time.Now()
	if err := rs.Run(); err != nil {
		b.Fatalf("rsync %s: %v: %s", strings.Join(h.rsync, " "), err, stderr.String())
	}
	t1 := time.Now()
	if err := rc.Run(); err != nil {
		b.Fatalf("restic backup: %v: %s", err, stderr.String())
	}
	t2 := time.Now()
	meter.stop()

	var sum restic.Summary
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if bytes.Contains(sc.Bytes(), []byte(`"message_type":"summary"`)) {
			_ = json.Unmarshal(sc.Bytes(), &sum)
		}
	}
	if sum.TotalFilesProcessed != int64(files) || (rerun && sum.FilesUnmodified != int64(files)) {
		b.Fatalf("by-hand restic summary %+v: want %d files (all unmodified on the rerun)", sum, files)
	}
	return sample{total: t2.Sub(t0), cpu: meter.machine(), foreign: meter.foreign(),
		phases: map[string]time.Duration{"rsync": t1.Sub(t0), "restic backup": t2.Sub(t1)}}
}

func randHex(b *testing.B, n int) string {
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = byte(rand.IntN(256))
	}
	return hex.EncodeToString(buf)
}

// mkdirB is mkdir for a benchmark.
func mkdirB(b *testing.B, path string) {
	b.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		b.Fatal(err)
	}
}

// tracer wraps ssh, rsync, restic and gzip in scripts that log each
// invocation's start, end and argv.
type tracer struct {
	binDir  string
	log     string
	wrapped map[string]string
}

func newTracer(b *testing.B, dir string) *tracer {
	b.Helper()
	t := &tracer{binDir: filepath.Join(dir, "bin"), log: filepath.Join(dir, "trace.log"), wrapped: map[string]string{}}
	mkdirB(b, t.binDir)
	for _, name := range []string{"ssh", "rsync", "restic", "gzip"} {
		real := resticBin()
		if name != "restic" {
			p, err := exec.LookPath(name)
			if err != nil {
				b.Fatal(err)
			}
			real = p
		}
		script := fmt.Sprintf("#!/bin/sh\ns=$(date +%%s%%N)\n%s \"$@\"\nrc=$?\ne=$(date +%%s%%N)\n"+
			"printf '%%s %%s %%s %s %%s\\n' \"$s\" \"$e\" \"$rc\" \"$*\" >> %s\nexit $rc\n",
			strconv.Quote(real), name, strconv.Quote(t.log))
		p := filepath.Join(t.binDir, name)
		if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
			b.Fatal(err)
		}
		t.wrapped[name] = p
	}
	return t
}

func (t *tracer) reset(b *testing.B) {
	b.Helper()
	if err := os.WriteFile(t.log, nil, 0o644); err != nil {
		b.Fatal(err)
	}
}

// timeline lists the logged invocations, in seconds after t0, and the
// time between t0 and end spent outside any of them.
func (t *tracer) timeline(b *testing.B, t0, end time.Time) string {
	b.Helper()
	data, err := os.ReadFile(t.log)
	if err != nil {
		b.Fatal(err)
	}
	type span struct {
		s, e time.Time
		what string
	}
	var spans []span
	for line := range strings.Lines(string(data)) {
		f := strings.SplitN(strings.TrimSpace(line), " ", 5)
		if len(f) < 4 {
			continue
		}
		s, _ := strconv.ParseInt(f[0], 10, 64)
		e, _ := strconv.ParseInt(f[1], 10, 64)
		args := ""
		if len(f) == 5 {
			args = f[4]
		}
		spans = append(spans, span{time.Unix(0, s), time.Unix(0, e), describe(f[3], args)})
	}
	slices.SortFunc(spans, func(a, b span) int { return a.s.Compare(b.s) })
	var out strings.Builder
	var busy time.Duration
	var cursor time.Time = t0
	for _, sp := range spans {
		fmt.Fprintf(&out, "  %7.3f .. %7.3f  %6.3f s  %s\n", sp.s.Sub(t0).Seconds(), sp.e.Sub(t0).Seconds(), sp.e.Sub(sp.s).Seconds(), sp.what)
		// Count time covered by some subprocess once (rsync's ssh runs
		// inside rsync).
		s := sp.s
		if s.Before(cursor) {
			s = cursor
		}
		if sp.e.After(s) {
			busy += sp.e.Sub(s)
			cursor = sp.e
		}
	}
	fmt.Fprintf(&out, "  in subprocesses %.3f s; outside them (Go, store, NATS) %.3f s of %.3f s to finished_at\n",
		busy.Seconds(), (end.Sub(t0) - busy).Seconds(), end.Sub(t0).Seconds())
	return out.String()
}

// describe names an invocation by what it is for.
func describe(name, args string) string {
	switch {
	case name == "ssh" && strings.Contains(args, "-V"):
		return "ssh -V (preflight local tool)"
	case name == "ssh" && strings.Contains(args, "-O exit"):
		return "ssh -O exit (close master)"
	case name == "ssh" && strings.Contains(args, "rsync --server"):
		return "  ssh under rsync (over the master)"
	case name == "ssh":
		return "ssh preflight (opens the master, or rides a kept one)"
	case name == "rsync" && strings.Contains(args, "--version"):
		return "rsync --version (preflight local tool)"
	case name == "rsync":
		return "rsync pull"
	case name == "gzip":
		return "gzip --version (preflight local tool)"
	case name == "restic":
		for _, w := range []string{"version", "cat", "backup", "init", "snapshots"} {
			if slices.Contains(strings.Fields(args), w) {
				return "restic " + w
			}
		}
	}
	return name + " " + args
}
