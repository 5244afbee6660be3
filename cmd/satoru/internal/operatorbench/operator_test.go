package operatorbench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/realproc"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/testkit"
)

var (
	operatorRounds = flag.Int("operator-rounds", 3, "BenchmarkOperator: rounds per scenario; medians are reported")
	satoruBinFlag  = flag.String("satoru-bin", "", "BenchmarkOperator: the satoru binary to run (make bench passes bin/satoru, which its build target just made); empty: go build ./cmd/satoru of this tree into a temp folder")
)

// pollEvery is how often the benchmark asks GET /api/v1/jobs/{id}, as an
// operator's script following a job would.
const pollEvery = 50 * time.Millisecond

// settleMax bounds the wait for a quiet machine before each timed run.
const settleMax = 20 * time.Second

// jobLimit bounds one timed job or by-hand run.
const jobLimit = 10 * time.Minute

// BenchmarkOperator measures what an operator gets from the shipped
// binary: `satoru up` started as a process with its default config (only
// data_dir, staging_root, restic_repo_path, the restic password file and,
// so parallel runs never collide, api_listen 127.0.0.1:0 are set), a site
// registered over the REST API with its pinned host key and one directory
// target (the benchmark tree on a real sshd), and each backup started with
// POST /api/v1/sites/{uuid}/jobs {"type":"backup"} and followed with GET
// /api/v1/jobs/{id} every 50 ms until it shows a final status. Run it
// once:
//
//	go test -tags ferretdb_no_postgresql,ferretdb_no_mysql -run '^$' \
//	  -bench Operator -benchtime 1x -timeout 30m -v ./cmd/satoru/internal/operatorbench/
//
// By hand, on the same tree from the same sshd: `rsync -a --delete -e
// "ssh <the pinned key options, no master>" user@host:path/ staging/`
// then `restic backup --json staging/` with RESTIC_PASSWORD_FILE and its
// own RESTIC_CACHE_DIR, timed together.
//
// Scenarios, each -operator-rounds times with the order of the two sides
// flipped every round and `sync` plus a wait for idle CPUs before every
// timed run:
//
//	a. first backup of a new site in a running node that already has its
//	   repository and ran one job of another site, against the first rsync
//	   into an empty folder plus restic backup into an existing repository;
//	b. the no-change rerun of that site right after, against the by-hand
//	   rerun;
//	c. the rerun once the site's ssh master connection has expired
//	   (ControlPersist; waited out like an operator's next scheduled run,
//	   or closed with `ssh -O exit` when it is over 90 s), against the
//	   by-hand rerun;
//	d. the first backup on a node started a moment before (fresh data
//	   folder, no repository yet), against restic init + rsync + restic
//	   backup into a fresh repository.
//
// The default scheduler gives a new site its first backup at the site's
// slot in the next site_scan_interval_hours (24 h), not at registration;
// the benchmark checks after each round that no job it did not post ran
// during a timed run of that round's site, and runs a disturbed round
// again.
func BenchmarkOperator(b *testing.B) {
	if b.N > 1 {
		b.Logf("b.N=%d ignored: one call measures %d rounds; run with -benchtime 1x", b.N, *operatorRounds)
	}
	rounds := *operatorRounds
	if rounds < 1 {
		b.Fatalf("-operator-rounds %d: want at least 1", rounds)
	}
	for _, tool := range []string{"ssh", "rsync"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("%s not on PATH: %v", tool, err)
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		b.Fatal(err)
	}
	root, err := realproc.FindRoot(wd)
	if err != nil {
		b.Fatal(err)
	}
	resticBin, err := realproc.ResticBin(root)
	if err != nil {
		b.Fatal(err)
	}
	bin := realproc.Binary(b, *satoruBinFlag, root)
	work := b.TempDir()

	// The edge first: cleanups run last-in first-out, so the nodes (and
	// their ssh masters) stop before its sshd.
	edge := testkit.StartEdgeHost(b)
	src := filepath.Join(edge.Dir, "site")
	genStart := time.Now()
	files, size := realproc.BenchTree(b, src)
	warm := filepath.Join(edge.Dir, "warmup")
	if err := os.MkdirAll(warm, 0o755); err != nil {
		b.Fatal(err)
	}
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(warm, fmt.Sprintf("w%d.txt", i)), []byte(strings.Repeat("warm ", 100*(i+1))), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("site: %d files, %d bytes (%.1f MB) in %s, generated in %s; satoru %s; restic %s",
		files, size, float64(size)/1e6, src, time.Since(genStart).Round(time.Millisecond), bin, resticBin)

	pw := filepath.Join(work, "restic-password")
	if err := os.WriteFile(pw, []byte("operator-bench-"+fmt.Sprint(time.Now().UnixNano())+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	env := func(l realproc.Layout) []string {
		return realproc.Env(root, l,
			"SATORU_RESTIC_PASSWORD_FILE="+pw,
			// The default 127.0.0.1:8080 may be taken on a shared machine;
			// a free port changes nothing else.
			"SATORU_API_LISTEN=127.0.0.1:0")
	}
	bench := &operatorBench{b: b, bin: bin, edge: edge, src: src, files: files}

	// The running node of scenarios a-c, with its repository and one
	// earlier job of another site.
	lay := realproc.NewLayout(filepath.Join(work, "node"))
	node := realproc.New(b, bin, "satoru up", lay, []string{"up"}, env(lay))
	node.Start()
	api := node.API()
	warmSite := api.RegisterSite(realproc.Site{Name: "warmup", Edge: edge, Path: warm})
	api.MustSucceed(api.StartJob(warmSite, "backup"), "warm-up backup", 5*time.Minute)

	byHand := newHand(b, resticBin, edge, src, pw, filepath.Join(work, "hand"))
	byHand.resticCmd(byHand.repo, byHand.cache, "init")
	handWarm := newHand(b, resticBin, edge, warm, pw, byHand.dir)
	handWarm.backup(filepath.Join(byHand.dir, "warmup"), byHand.repo, byHand.cache, false)

	persist := remote.DefaultControlPersist
	var first, rerun, cold, fresh scenario
	first.name, rerun.name, cold.name, fresh.name = "a. first backup, running node", "b. rerun soon after", "c. rerun, master expired", "d. first backup, node just started"
	for r, attempt := 0, 1; r < rounds; attempt++ {
		if attempt > 2*rounds {
			b.Fatalf("%d attempts for %d rounds: the scheduler kept running jobs into the timed runs", attempt-1, rounds)
		}
		satoruFirst := r%2 == 0
		siteUUID := api.RegisterSite(realproc.Site{Name: fmt.Sprintf("bench-%d", attempt), Edge: edge, Path: src})
		staging := filepath.Join(byHand.dir, fmt.Sprintf("staging-%d", attempt))
		var sa, sb, sc jobRun
		var ha, hb, hc handRun
		var windows [][2]time.Time
		bench.pair(satoruFirst,
			func() { sa = bench.timeJob(api, siteUUID); windows = append(windows, sa.window) },
			func() { ha = byHand.backup(staging, byHand.repo, byHand.cache, false) })
		bench.pair(satoruFirst,
			func() {
				if n := liveMasters(lay); n == 0 {
					b.Logf("round %d: the site's ssh master is already gone before the rerun (busy machine: more than %s since the first backup's pull)", attempt, persist)
				}
				sb = bench.timeJob(api, siteUUID)
				windows = append(windows, sb.window)
			},
			func() { hb = byHand.backup(staging, byHand.repo, byHand.cache, true) })
		waitMastersGone(b, lay, persist)
		bench.pair(satoruFirst,
			func() { sc = bench.timeJob(api, siteUUID); windows = append(windows, sc.window) },
			func() { hc = byHand.backup(staging, byHand.repo, byHand.cache, true) })
		if foreign := foreignJobs(api, siteUUID, windows, sa.id, sb.id, sc.id); foreign != "" {
			b.Logf("round attempt %d not kept: %s", attempt, foreign)
			continue
		}
		r++
		for _, x := range []struct {
			sc *scenario
			s  jobRun
			h  handRun
		}{{&first, sa, ha}, {&rerun, sb, hb}, {&cold, sc, hc}} {
			x.sc.add(b, attempt, satoruFirst, x.s, x.h)
		}
	}
	node.Stop()

	for r := range rounds {
		satoruFirst := r%2 == 0
		var s jobRun
		var h handRun
		bench.pair(satoruFirst,
			func() { s = bench.freshNode(filepath.Join(work, fmt.Sprintf("fresh-%d", r)), env) },
			func() {
				fh := newHand(b, resticBin, edge, src, pw, filepath.Join(work, fmt.Sprintf("hand-fresh-%d", r)))
				h = fh.freshBackup()
			})
		fresh.add(b, r+1, satoruFirst, s, h)
	}

	for _, sc := range []*scenario{&first, &rerun, &cold, &fresh} {
		sc.report(b)
	}
}

type operatorBench struct {
	b     *testing.B
	bin   string
	edge  *testkit.EdgeHost
	src   string
	files int
}

// pair runs both sides, Satoru first when satoruFirst, each after the
// machine went quiet.
func (o *operatorBench) pair(satoruFirst bool, satoru, hand func()) {
	order := []func(){satoru, hand}
	if !satoruFirst {
		order = []func(){hand, satoru}
	}
	for _, f := range order {
		realproc.Settle(o.b, settleMax)
		f()
	}
}

// jobRun is one backup through the API.
type jobRun struct {
	id      string
	visible time.Duration // POST -> GET shows a final status
	own     time.Duration // the job's created_at -> finished_at
	window  [2]time.Time  // POST, seen final
	steps   string        // summary.step_seconds, else from the events
}

// timeJob posts a backup of site and polls the job until it is final; it
// fails the benchmark unless the job succeeded with every file.
func (o *operatorBench) timeJob(api *realproc.Client, site string) jobRun {
	b := o.b
	b.Helper()
	t0 := time.Now()
	id := api.StartJob(site, "backup")
	var j domain.Job
	for {
		j = api.Job(id)
		if j.Status.Terminal() {
			break
		}
		if time.Since(t0) > jobLimit {
			b.Fatalf("backup job %s still %s after %s\nevents:\n%s", id, j.Status, jobLimit, api.DumpEvents(id))
		}
		time.Sleep(pollEvery)
	}
	seen := time.Now()
	if j.Status != domain.StatusSuccess {
		b.Fatalf("backup job %s ended %s: %q\nevents:\n%s", id, j.Status, j.Error, api.DumpEvents(id))
	}
	if n, ok := summaryNumber(j, "total_files_processed"); ok && int(n) != o.files {
		b.Fatalf("backup job %s processed %v files, want %d: %v", id, n, o.files, j.Summary)
	}
	run := jobRun{id: id, visible: seen.Sub(t0), window: [2]time.Time{t0, seen}}
	if j.FinishedAt != nil {
		run.own = j.FinishedAt.Sub(j.CreatedAt)
	}
	run.steps = stepBreakdown(j, api.Events(id))
	return run
}

// freshNode is scenario d's Satoru side: `satoru up` on empty folders,
// a site registered the moment its API answers, and its first backup.
func (o *operatorBench) freshNode(dir string, env func(realproc.Layout) []string) jobRun {
	o.b.Helper()
	l := realproc.NewLayout(dir)
	s := realproc.New(o.b, o.bin, "fresh satoru up", l, []string{"up"}, env(l))
	began := time.Now()
	s.Start()
	api := s.API()
	site := api.RegisterSite(realproc.Site{Name: "fresh", Edge: o.edge, Path: o.src})
	o.b.Logf("fresh node: banner and site registered %s after the start", time.Since(began).Round(time.Millisecond))
	run := o.timeJob(api, site)
	s.Stop()
	return run
}

// summaryNumber reads a number from the job summary.
func summaryNumber(j domain.Job, key string) (float64, bool) {
	switch v := j.Summary[key].(type) {
	case float64:
		return v, true
	case int64:
		return float64(v), true
	case int:
		return float64(v), true
	}
	return 0, false
}

// stepBreakdown is the job's time by step: the job's own step times
// (summary <step>_seconds, as an operator sees them through the API) and
// always the steps derived from its events. A step's events mostly report
// work just done (the preflight reports its checks when they are over, a
// pull its end, restic its summary), so the time between two events goes
// to the later one's step, summed per step name; progress events count
// for their step, the preflight's checks for "preflight", and the time
// after the last event up to finished_at is "finish". In the events'
// view the hand-off to the snapshotter lands in "snapshot".
// jobSteps are a backup's steps in order, as the job reports them.
var jobSteps = []string{"queue", "preflight", "pull", "handoff", "snapshot", "finish"}

func stepBreakdown(j domain.Job, evs []domain.JobEvent) string {
	var parts []string
	var kv []string
	for _, k := range jobSteps {
		if v, ok := summaryNumber(j, jobrun.StepSummaryKey(k)); ok {
			kv = append(kv, fmt.Sprintf("%s %.3f", k, v))
		}
	}
	if len(kv) > 0 {
		parts = append(parts, "job steps: "+strings.Join(kv, ", "))
	}
	if j.StartedAt == nil || j.FinishedAt == nil {
		return strings.Join(parts, "; ")
	}
	slices.SortFunc(evs, func(a, b domain.JobEvent) int { return int(a.Seq - b.Seq) })
	sums := map[string]time.Duration{"queue": j.StartedAt.Sub(j.CreatedAt)}
	order := []string{"queue"}
	add := func(step string, d time.Duration) {
		if _, seen := sums[step]; !seen {
			order = append(order, step)
		}
		sums[step] += d
	}
	prev := *j.StartedAt
	for _, e := range evs {
		add(phase(e.Step), e.TS.Sub(prev))
		prev = e.TS
	}
	add("finish", j.FinishedAt.Sub(prev))
	var ev []string
	for _, k := range order {
		ev = append(ev, fmt.Sprintf("%s %.3f", k, sums[k].Seconds()))
	}
	return strings.Join(append(parts, "from events: "+strings.Join(ev, ", ")), "; ")
}

// phase folds an event's step into the job step it belongs to.
func phase(step string) string {
	switch step {
	case "local_tool", "host_key", "ssh_connect", "remote_tool", "target", "preflight":
		return "preflight"
	}
	return strings.TrimSuffix(step, "_progress")
}

// foreignJobs names the jobs of site the benchmark did not post that ran
// during one of the timed windows ("" when none): the default scheduler
// may reach the site's slot while the benchmark runs.
func foreignJobs(api *realproc.Client, site string, windows [][2]time.Time, ours ...string) string {
	var out []string
	for _, j := range api.Jobs("site_uuid=" + site) {
		if slices.Contains(ours, j.ID) {
			continue
		}
		end := time.Now()
		if j.FinishedAt != nil {
			end = *j.FinishedAt
		}
		for _, w := range windows {
			if j.CreatedAt.Before(w[1]) && end.After(w[0]) {
				out = append(out, fmt.Sprintf("%s job %s (%s, created %s) overlapped a timed run", j.Type, j.ID, j.Status, j.CreatedAt.Format(time.RFC3339)))
				break
			}
		}
	}
	return strings.Join(out, "; ")
}

// controlSockets are the node's ssh master sockets (data_dir/ssh/cm).
func controlSockets(l realproc.Layout) []string {
	dir := filepath.Join(l.Data, "ssh", "cm")
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if e.Type()&os.ModeSocket != 0 {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

// liveMasters counts the node's ssh masters that still run, from the
// process table ("ssh: <data_dir>/ssh/cm/<name> [mux]"). It never talks
// to a master: any mux client, even `ssh -O check`, is a session that
// restarts the master's ControlPersist countdown.
func liveMasters(l realproc.Layout) int {
	prefix := filepath.Join(l.Data, "ssh", "cm") + string(filepath.Separator)
	n := 0
	for _, p := range realproc.AllProcs() {
		if p.MuxMaster() && strings.Contains(strings.Join(p.Args, " "), prefix) {
			n++
		}
	}
	return n
}

// waitMastersGone waits until the node's ssh masters have expired on
// their own (ControlPersist after their last session), as they have by an
// operator's next scheduled run; when persist is over 90 s it closes them
// with `ssh -O exit` instead, and says so.
func waitMastersGone(b *testing.B, l realproc.Layout, persist time.Duration) {
	b.Helper()
	if persist > 90*time.Second {
		for _, s := range controlSockets(l) {
			out, err := exec.Command("ssh", "-o", "ControlPath="+s, "-O", "exit", "operator-bench").CombinedOutput()
			if err != nil {
				b.Logf("ssh -O exit %s: %v: %s (already gone?)", s, err, bytes.TrimSpace(out))
			}
		}
		b.Logf("ControlPersist is %s (over 90 s): closed the node's ssh masters with ssh -O exit instead of waiting", persist)
		return
	}
	began := time.Now()
	for liveMasters(l) > 0 {
		if time.Since(began) > persist+30*time.Second {
			b.Fatalf("the node's ssh masters still run %s after ControlPersist (%s) began to count at the latest", time.Since(began).Round(time.Second), persist)
		}
		time.Sleep(time.Second)
	}
	b.Logf("waited %s for the site's ssh master to expire (ControlPersist %s)", time.Since(began).Round(time.Second), persist)
}

// hand is the operator's by-hand baseline for one source folder.
type hand struct {
	b       *testing.B
	restic  string
	dir     string   // its folders: repo, cache, staging
	repo    string   // the repository of scenarios a-c
	cache   string   // its RESTIC_CACHE_DIR
	rsyncE  string   // rsync's -e: ssh with the pinned key, no master
	remote  string   // user@host:path/
	baseEnv []string // the caller's environment without RESTIC_*
	pw      string
}

func newHand(b *testing.B, resticBin string, edge *testkit.EdgeHost, src, pw, dir string) *hand {
	b.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	// The options Satoru pins a site with (known_hosts line, alias, key,
	// BatchMode), without ControlMaster: each rsync opens its own
	// connection, as a script's would.
	e, err := remote.SSHCommandForRsync(remote.SSHConfig{Host: edge.Host, Port: edge.Port, User: edge.User, KeyPath: edge.KeyPath,
		KnownHostsFile: edge.KnownHostsFile, HostKeyAlias: edge.HostKeyAlias})
	if err != nil {
		b.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RESTIC_") {
			env = append(env, kv)
		}
	}
	return &hand{b: b, restic: resticBin, dir: dir, repo: filepath.Join(dir, "repo"), cache: filepath.Join(dir, "restic-cache"),
		rsyncE: e, remote: edge.User + "@" + edge.Host + ":" + strings.TrimSuffix(src, "/") + "/", baseEnv: env, pw: pw}
}

// handRun is one by-hand backup.
type handRun struct {
	total, init, rsync, restic time.Duration
}

// resticCmd runs restic on repo and returns its stdout; it fails the
// benchmark with restic's exit and stderr.
func (h *hand) resticCmd(repo, cache string, args ...string) []byte {
	h.b.Helper()
	cmd := exec.Command(h.restic, args...)
	cmd.Env = append(slices.Clone(h.baseEnv), "RESTIC_REPOSITORY="+repo, "RESTIC_PASSWORD_FILE="+h.pw, "RESTIC_CACHE_DIR="+cache)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		h.b.Fatalf("restic %s: %v: %s", args[0], err, lastLines(stderr.String(), 10))
	}
	return out.Bytes()
}

// backup is rsync into staging then restic backup of staging into repo,
// timed together; rerun checks that restic found every file unmodified.
func (h *hand) backup(staging, repo, cache string, rerun bool) handRun {
	h.b.Helper()
	if err := os.MkdirAll(staging, 0o700); err != nil {
		h.b.Fatal(err)
	}
	t0 := time.Now()
	rs := exec.Command("rsync", "-a", "--delete", "-e", h.rsyncE, h.remote, staging+"/")
	if out, err := rs.CombinedOutput(); err != nil {
		h.b.Fatalf("rsync %s: %v: %s", h.remote, err, lastLines(string(out), 10))
	}
	t1 := time.Now()
	out := h.resticCmd(repo, cache, "backup", "--json", staging)
	t2 := time.Now()
	var sum struct {
		FilesUnmodified     int64 `json:"files_unmodified"`
		TotalFilesProcessed int64 `json:"total_files_processed"`
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if bytes.Contains(sc.Bytes(), []byte(`"message_type":"summary"`)) {
			_ = json.Unmarshal(sc.Bytes(), &sum)
		}
	}
	if sum.TotalFilesProcessed == 0 || (rerun && sum.FilesUnmodified != sum.TotalFilesProcessed) {
		h.b.Fatalf("by-hand restic backup of %s: summary %+v (a rerun finds every file unmodified)", staging, sum)
	}
	return handRun{total: t2.Sub(t0), rsync: t1.Sub(t0), restic: t2.Sub(t1)}
}

// freshBackup is scenario d by hand: restic init of a new repository,
// then rsync into an empty folder and restic backup, all timed.
func (h *hand) freshBackup() handRun {
	h.b.Helper()
	t0 := time.Now()
	h.resticCmd(h.repo, h.cache, "init")
	init := time.Since(t0)
	r := h.backup(filepath.Join(h.dir, "staging"), h.repo, h.cache, false)
	r.init = init
	r.total += init
	return r
}

// lastLines is the end of s, at most n lines, for an error message.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// scenario collects one scenario's rounds.
type scenario struct {
	name               string
	visible, own, hand []float64
}

func (s *scenario) add(b *testing.B, round int, satoruFirst bool, j jobRun, h handRun) {
	b.Helper()
	s.visible = append(s.visible, j.visible.Seconds())
	s.own = append(s.own, j.own.Seconds())
	s.hand = append(s.hand, h.total.Seconds())
	first := "by hand"
	if satoruFirst {
		first = "satoru"
	}
	initPart := ""
	if h.init > 0 {
		initPart = fmt.Sprintf("restic init %.3f + ", h.init.Seconds())
	}
	b.Logf("%s, round %d (%s first): satoru POST->final %.3f s (job created->finished %.3f s), by hand %.3f s (%srsync %.3f + restic backup %.3f), ratio %.3f\n    job %s steps: %s",
		s.name, round, first, j.visible.Seconds(), j.own.Seconds(), h.total.Seconds(), initPart, h.rsync.Seconds(), h.restic.Seconds(),
		j.visible.Seconds()/h.total.Seconds(), j.id, j.steps)
}

func (s *scenario) report(b *testing.B) {
	b.Helper()
	v, o, h := median(s.visible), median(s.own), median(s.hand)
	b.Logf("%s: medians of %d rounds: satoru POST->final %.3f s (job created->finished %.3f s), by hand %.3f s; ratio satoru/by hand %.3f (job's own time %.3f)",
		s.name, len(s.visible), v, o, h, v/h, o/h)
	key := strings.ToLower(strings.Fields(s.name)[0])
	key = strings.TrimSuffix(key, ".")
	b.ReportMetric(v, key+"-satoru-s")
	b.ReportMetric(h, key+"-hand-s")
	b.ReportMetric(v/h, key+"-ratio")
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
