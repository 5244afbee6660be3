package faults

import (
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/realproc"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

// Bounds of a scenario after its fault: the interrupted job must end and
// nothing may still run within settleWithin; the sites' next backups then
// get nextBackupWithin.
const (
	settleWithin     = 3 * time.Minute
	nextBackupWithin = 2 * time.Minute
)

// TestFaults runs each fault against its own `satoru up`, folders, ports
// and edge hosts, all at once (see defaultParallel).
func TestFaults(t *testing.T) {
	for _, sc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"kill mid-pull", killMidPull},
		{"kill mid-snapshot", killMidSnapshot},
		{"kill mid-prune", killMidPrune},
		{"kill mid-offsite-copy", killMidOffsiteCopy},
		{"edge sshd killed mid-pull", edgeKilledMidPull},
		{"nats and store intact after kill -9", storeIntactAfterKill},
		{"full staging disk", fullStagingDisk},
		{"full repository disk", fullRepositoryDisk},
		{"concurrent first backups", concurrentFirstBackups},
		{"worker nodes, one killed mid-pull", workerNodes},
		{"puller and snapshotter on different stagings", foreignStaging},
		{"hosts_12_sites_3_nodes", hosts12Sites3Nodes},
		{"hosts_node_killed_mid_pull", hostsNodeKilledMidPull},
		{"hosts_fourth_node_joins", hostsFourthNodeJoins},
	} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t)
		})
	}
}

// scenario is one satoru installation under test and its sites.
type scenario struct {
	t     *testing.T
	L     layout
	up    *satoru
	sites []string // site uuids
}

// newScenario lays out folders under a fresh temp dir (or under l when
// given) and starts `satoru up` with extra env on top of the defaults.
// Start edge hosts first: cleanups run last-in first-out, so satoru then
// stops (and its ssh masters are killed) before the edges' sshd, which
// otherwise waits for those sessions.
func newScenario(t *testing.T, l *layout, extra ...string) *scenario {
	t.Helper()
	lay := newLayout(t.TempDir())
	if l != nil {
		lay = *l
	}
	return &scenario{t: t, L: lay, up: startUp(t, lay, extra...)}
}

// addSite registers s and remembers it for the next backups.
func (sc *scenario) addSite(s site) string {
	sc.t.Helper()
	uuid := sc.up.API().RegisterSite(s)
	sc.sites = append(sc.sites, uuid)
	return uuid
}

// staged is how many bytes of a site are in staging so far, rsync's
// temporary files included.
func (sc *scenario) staged(siteUUID string) int64 {
	var n int64
	_ = filepath.WalkDir(filepath.Join(sc.L.Staging, siteUUID), func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// killWhen polls every 10 ms until cond holds and the job has not ended,
// then SIGKILLs satoru and checks it left no orphan. It fails the test if
// the job ends first (the fault point was missed: the data is too small
// for this machine) or cond does not hold within 2 minutes.
func (sc *scenario) killWhen(jobID, what string, cond func() bool) {
	sc.t.Helper()
	a := sc.up.API()
	deadline := time.Now().Add(2 * time.Minute)
	lastJobPoll := time.Time{}
	for !cond() {
		if time.Since(lastJobPoll) > time.Second {
			lastJobPoll = time.Now()
			if j := a.Job(jobID); j.Status.Terminal() {
				sc.t.Fatalf("job %s ended %s (%q) before the kill point %q was reached\nevents:\n%s", jobID, j.Status, j.Error, what, a.DumpEvents(jobID))
			}
		}
		if time.Now().After(deadline) {
			sc.t.Fatalf("the kill point %q was not reached within 2 minutes (job %s)\nevents:\n%s", what, jobID, a.DumpEvents(jobID))
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := sc.up.Kill()
	sc.t.Logf("killed %s", what)
	checkNoOrphans(sc.t, before, sc.L.Dirs())
}

// recover restarts satoru on the same folders and asserts what the issue
// asks after every crash: the interrupted job completes on redelivery,
// no job is left running, every site's next backup succeeds and `restic
// check` passes. checks (the scenario's own) run once things settled,
// before the next backups. It returns the interrupted job as
// it ended.
func (sc *scenario) recover(jobID, what string, checks ...func(domain.Job)) domain.Job {
	sc.t.Helper()
	sc.up.Start()
	return sc.settle(jobID, what, checks...)
}

// settle is recover without the restart (a fault that did not kill
// satoru).
func (sc *scenario) settle(jobID, what string, checks ...func(domain.Job)) domain.Job {
	sc.t.Helper()
	a := sc.up.API()
	deadline := time.Now().Add(settleWithin)
	j, ended := a.WaitJob(jobID, settleWithin)
	switch {
	case !ended:
		sc.t.Errorf("%s: job %s still %s %s after the fault (attempts %d, worker %q, error %q)\nevents:\n%s",
			what, jobID, j.Status, settleWithin, j.Attempts, j.Worker, j.Error, a.DumpEvents(jobID))
	case j.Status != domain.StatusSuccess:
		sc.t.Errorf("%s: job %s ended %s after %d attempt(s), want success on redelivery; error %q\nevents:\n%s",
			what, jobID, j.Status, j.Attempts, j.Error, a.DumpEvents(jobID))
	default:
		sc.t.Logf("%s: job %s succeeded in attempt %d", what, jobID, j.Attempts)
	}
	a.WaitNoRunning(deadline)
	for _, check := range checks {
		check(j)
	}
	sc.nextBackups()
	// Last, as the issue has it: each scenario ends with the repository
	// passing `restic check` (run after the next backups, so a repository
	// the interrupted job never got to create exists by then).
	resticCheck(sc.t, sc.L.Repo)
	return j
}

// nextBackups runs one backup of every site at once; each must succeed,
// and nothing may be left running after them.
func (sc *scenario) nextBackups() {
	sc.t.Helper()
	a := sc.up.API()
	ids := map[string]string{}
	for _, s := range sc.sites {
		ids[s] = a.StartJob(s, "backup")
	}
	deadline := time.Now().Add(nextBackupWithin)
	for s, id := range ids {
		j, ended := a.WaitJob(id, time.Until(deadline))
		if !ended || j.Status != domain.StatusSuccess {
			sc.t.Errorf("next backup of site %s after the fault: job %s %s (attempts %d, error %q), want success\nevents:\n%s",
				s, id, j.Status, j.Attempts, j.Error, a.DumpEvents(id))
		}
	}
	a.WaitNoRunning(time.Now().Add(30 * time.Second))
}

// summaryInt reads a number from a job's summary (-1 when missing).
func summaryInt(j domain.Job, key string) int64 {
	switch v := j.Summary[key].(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	}
	return -1
}

// wantFiles fails unless the backup's snapshot processed exactly n files:
// a redelivered backup must snapshot the whole target, not what the
// killed pull had managed to copy.
func wantFiles(t *testing.T, j domain.Job, n int64) {
	t.Helper()
	if j.Status != domain.StatusSuccess {
		return // already reported
	}
	if got := summaryInt(j, "total_files_processed"); got != n {
		t.Errorf("job %s snapshot processed %d files, want the %d of the target (summary %v)", j.ID, got, n, j.Summary)
	}
}

// slowEdge is an edge host holding files×size bytes of random data in one
// directory target, and the site for it, throttled to bwKiBps.
func slowEdge(t *testing.T, name string, files int, size int64, bwKiBps int) site {
	t.Helper()
	edge := testkit.StartEdgeHost(t)
	dir := filepath.Join(edge.Dir, "data")
	h := fnv.New64a()
	h.Write([]byte(name))
	seedTree(t, dir, files, size, h.Sum64())
	return site{Name: name, Edge: edge, Path: dir, BWLimit: bwKiBps}
}

// isRsyncInto matches the local rsync pulling into a site's staging.
func isRsyncInto(staging string) func(procInfo) bool {
	return func(p procInfo) bool {
		return p.Comm == "rsync" && strings.Contains(strings.Join(p.Args, " "), staging)
	}
}

// hasChild reports whether satoru has a descendant matching m right now.
func hasChild(s *satoru, m func(procInfo) bool) bool {
	pid := s.PID()
	if pid == 0 {
		return false
	}
	for _, p := range realproc.Descendants(pid) {
		if m(p) {
			return true
		}
	}
	return false
}

// killMidPull: SIGKILL while rsync copies a throttled target into
// staging; the redelivered backup completes with the whole target.
func killMidPull(t *testing.T) {
	const files, size = 24, 1 << 20
	s := slowEdge(t, "pull", files, size, 2048) // ~12 s for 24 MiB
	sc := newScenario(t, nil)
	uuid := sc.addSite(s)
	id := sc.up.API().StartJob(uuid, "backup")
	rsyncInto := isRsyncInto(filepath.Join(sc.L.Staging, uuid))
	sc.killWhen(id, "mid-pull (rsync running, >= 4 MiB staged)", func() bool {
		return hasChild(sc.up, rsyncInto) && sc.staged(uuid) >= 4<<20
	})
	j := sc.recover(id, "backup killed mid-pull")
	wantFiles(t, j, files)
}

// killMidSnapshot: SIGKILL while `restic backup` writes packs into a fresh
// repository; the redelivered backup completes.
func killMidSnapshot(t *testing.T) {
	const files, size = 64, 4 << 20 // 256 MiB, so restic runs for a while
	s := slowEdge(t, "snap", files, size, 0)
	sc := newScenario(t, nil)
	uuid := sc.addSite(s)
	id := sc.up.API().StartJob(uuid, "backup")
	sc.killWhen(id, "mid-snapshot (restic backup running, >= 32 MiB of packs written)", func() bool {
		return hasChild(sc.up, isRestic("backup")) && realproc.TreeBytes(filepath.Join(sc.L.Repo, "data")) >= 32<<20
	})
	j := sc.recover(id, "backup killed mid-snapshot")
	wantFiles(t, j, files)
}

// killMidPrune: three backups of a site whose large file changes each
// time, then a retention with keep_last 1; SIGKILL once forget has
// removed the old snapshots and restic prunes. The redelivered retention
// completes: one snapshot left and the forgotten data gone.
func killMidPrune(t *testing.T) {
	const gen = 48 << 20
	edge := testkit.StartEdgeHost(t)
	dir := filepath.Join(edge.Dir, "data")
	seedTree(t, dir, 8, 1<<20, 7)
	sc := newScenario(t, nil, `SATORU_RESTIC_RETENTION_POLICY={"keep_last":1}`)
	uuid := sc.addSite(site{Name: "prune", Edge: edge, Path: dir})
	a := sc.up.API()
	for i := 0; i < 3; i++ {
		writeRandom(t, filepath.Join(dir, "generation.bin"), gen, uint64(100+i))
		a.MustSucceed(a.StartJob(uuid, "backup"), fmt.Sprintf("backup %d before the retention", i+1), 2*time.Minute)
	}
	snaps := countFiles(filepath.Join(sc.L.Repo, "snapshots"))
	if snaps != 3 {
		t.Fatalf("%d snapshots before the retention, want 3", snaps)
	}
	dataBefore := realproc.TreeBytes(filepath.Join(sc.L.Repo, "data"))
	id := a.StartJob(uuid, "retention")
	isPrune := func(p procInfo) bool {
		return p.Comm == "restic" && (p.HasArg("prune") || p.HasArg("--prune"))
	}
	sc.killWhen(id, "mid-prune (restic pruning after forget removed the old snapshots)", func() bool {
		return countFiles(filepath.Join(sc.L.Repo, "snapshots")) < snaps && hasChild(sc.up, isPrune)
	})
	t.Logf("at the kill: %d snapshot files, %d of %d bytes of packs left", countFiles(filepath.Join(sc.L.Repo, "snapshots")),
		realproc.TreeBytes(filepath.Join(sc.L.Repo, "data")), dataBefore)
	sc.recover(id, "retention killed mid-prune", func(j domain.Job) {
		if j.Status != domain.StatusSuccess {
			return // reported
		}
		if n := snapshotCount(t, sc.L.Repo); n != 1 {
			t.Errorf("%d snapshots after the retention, want 1 (keep_last 1)", n)
		}
		// One generation and the small files stay; two generations were
		// forgotten and must be pruned, not left behind by the crash.
		if left := realproc.TreeBytes(filepath.Join(sc.L.Repo, "data")); left > dataBefore-gen-gen/2 {
			t.Errorf("the repository still holds %d bytes of packs (%d before the retention): the forgotten snapshots' data was not pruned", left, dataBefore)
		}
	})
}

// killMidOffsiteCopy: a backup, then an offsite sync to the S3 stand-in;
// SIGKILL once `restic copy` has uploaded packs. The redelivered sync
// completes and both repositories pass `restic check`.
func killMidOffsiteCopy(t *testing.T) {
	const access, secret = "AKIAFAULTSUITE", "faults-s3-secret-key"
	s := slowEdge(t, "offsite", 24, 4<<20, 0) // 96 MiB: several packs to copy
	s3 := testkit.StartS3(t, access, secret)
	s3.Bucket(t, "offsite")
	offsite := s3.Repository("offsite", "satoru")
	sc := newScenario(t, nil,
		"SATORU_RESTIC_B2_REPOSITORY="+offsite,
		"SATORU_RESTIC_B2_ACCOUNT_ID="+access,
		"SATORU_RESTIC_B2_ACCOUNT_KEY="+secret)
	uuid := sc.addSite(s)
	a := sc.up.API()
	a.MustSucceed(a.StartJob(uuid, "backup"), "backup before the sync", 2*time.Minute)
	id := a.StartSync()
	sc.killWhen(id, "mid-offsite-copy (restic copy running, packs uploaded)", func() bool {
		n, _ := s3.Objects(t, "offsite", "satoru/data/")
		return n >= 1 && hasChild(sc.up, isRestic("copy"))
	})
	n, b := s3.Objects(t, "offsite", "satoru/data/")
	t.Logf("at the kill: %d packs (%d bytes) offsite", n, b)
	sc.recover(id, "offsite sync killed mid-copy", func(domain.Job) {
		resticCheck(t, offsite, s3.Env()...)
		if local, remote := snapshotCount(t, sc.L.Repo), snapshotCount(t, offsite, s3.Env()...); remote != local {
			t.Errorf("offsite holds %d snapshots, local %d: the redelivered sync did not copy everything", remote, local)
		}
	})
}

// edgeKilledMidPull: the edge's sshd and its sessions are SIGKILLed while
// rsync pulls, and come back on the same port 3 s later; the job retries
// and succeeds.
func edgeKilledMidPull(t *testing.T) {
	const files, size = 24, 1 << 20
	s := slowEdge(t, "edge-crash", files, size, 2048)
	sc := newScenario(t, nil)
	uuid := sc.addSite(s)
	id := sc.up.API().StartJob(uuid, "backup")
	rsyncInto := isRsyncInto(filepath.Join(sc.L.Staging, uuid))
	waitChild(t, sc.up, 2*time.Minute, "rsync into staging", rsyncInto)
	for deadline := time.Now().Add(time.Minute); sc.staged(uuid) < 4<<20; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("less than 4 MiB staged a minute into the pull")
		}
	}
	s.Edge.Crash(t)
	t.Logf("edge sshd killed with %d bytes staged", sc.staged(uuid))
	time.Sleep(3 * time.Second)
	s.Edge.Restart(t)
	j := sc.settle(id, "backup whose edge sshd was killed mid-pull")
	wantFiles(t, j, files)
}

// fullStagingDisk: staging_root on a 16 MiB tmpfs, a 40 MiB target. The
// backup fails cleanly, naming the disk; after the tmpfs grows the next
// backup succeeds and `restic check` passes.
func fullStagingDisk(t *testing.T) {
	root := t.TempDir()
	l := newLayout(root)
	mnt := filepath.Join(root, "stagingfs")
	mountTmpfs(t, mnt, 16)
	l.Staging = filepath.Join(mnt, "staging")
	s := slowEdge(t, "staging-full", 10, 4<<20, 0)
	sc := newScenario(t, &l)
	uuid := sc.addSite(s)
	a := sc.up.API()
	id := a.StartJob(uuid, "backup")
	j, ended := a.WaitJob(id, 2*time.Minute)
	wantDiskFailure(t, a, j, ended, "staging_root", l.Staging)
	resizeTmpfs(t, mnt, 256)
	a.WaitNoRunning(time.Now().Add(30 * time.Second))
	sc.nextBackups()
	resticCheck(t, l.Repo)
}

// fullRepositoryDisk: the restic repository on a 24 MiB tmpfs, a 48 MiB
// target. The backup fails cleanly, naming the disk; after the tmpfs
// grows the next backup succeeds and `restic check` passes.
func fullRepositoryDisk(t *testing.T) {
	root := t.TempDir()
	l := newLayout(root)
	mnt := filepath.Join(root, "repofs")
	mountTmpfs(t, mnt, 24)
	l.Repo = filepath.Join(mnt, "repo")
	s := slowEdge(t, "repo-full", 12, 4<<20, 0)
	sc := newScenario(t, &l)
	uuid := sc.addSite(s)
	a := sc.up.API()
	id := a.StartJob(uuid, "backup")
	j, ended := a.WaitJob(id, 2*time.Minute)
	wantDiskFailure(t, a, j, ended, "restic_repo_path", l.Repo)
	resizeTmpfs(t, mnt, 512)
	a.WaitNoRunning(time.Now().Add(30 * time.Second))
	sc.nextBackups()
	resticCheck(t, l.Repo)
}

// wantDiskFailure asserts a clean failure that names the full disk: the
// job ended failed (not stuck, not retried forever) and its error, or a
// target's error in it, says space ran out and on which disk (the config
// key or its path).
func wantDiskFailure(t *testing.T, a *api, j domain.Job, ended bool, key, path string) {
	t.Helper()
	if !ended {
		t.Fatalf("backup onto a full %s: job %s still %s after 2 minutes (attempts %d, error %q)\nevents:\n%s", key, j.ID, j.Status, j.Attempts, j.Error, a.DumpEvents(j.ID))
	}
	// The job as GET /jobs/{id} returns it: its error, and for a pull its
	// per-target errors.
	msgs := []string{j.Error}
	for _, tr := range j.Targets {
		msgs = append(msgs, tr.Error)
	}
	named := false
	for _, m := range msgs {
		named = named || (strings.Contains(strings.ToLower(m), "space") && (strings.Contains(m, key) || strings.Contains(m, path)))
	}
	if j.Status != domain.StatusFailed || !named {
		t.Errorf("backup onto a full %s: job %s ended %s with error %q (target errors %q); want failed, saying space ran out on %s (%s)\nevents:\n%s",
			key, j.ID, j.Status, j.Error, msgs[1:], key, path, a.DumpEvents(j.ID))
		return
	}
	t.Logf("backup onto a full %s failed cleanly: %q", key, msgs)
}

// parallelDo runs fn(i) for i in [0, n) at once and returns the errors.
func parallelDo(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i)
		}()
	}
	wg.Wait()
	return errs
}
