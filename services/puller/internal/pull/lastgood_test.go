package pull

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/testkit"
)

// helperEnv makes the test binary a stand-in Satoru process that runs one
// Directory pull (config in the variable's JSON) and prints its progress,
// so a test can SIGKILL it mid-pull.
const helperEnv = "SATORU_PULL_TEST_HELPER"

type helperJob struct {
	C Config
	T domain.Target
}

func TestMain(m *testing.M) {
	if js := os.Getenv(helperEnv); js != "" {
		var job helperJob
		if err := json.Unmarshal([]byte(js), &job); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(2)
		}
		res := Directory(context.Background(), job.C, testSite, job.T, func(p Progress) {
			fmt.Printf("progress %d\n", p.BytesDone)
		})
		fmt.Fprintf(os.Stderr, "helper: pull ended before it was killed: %+v\n", res)
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// lastGoodSite is a site folder big enough that a throttled pull of its
// changes takes seconds, pulled once into staging; v1 is a copy of what
// that first pull saw.
type lastGoodSite struct {
	h       *testkit.EdgeHost
	proxy   *testkit.Proxy
	c       Config // through the proxy
	target  domain.Target
	src, v1 string
	staging string
}

func newLastGoodSite(t *testing.T) *lastGoodSite {
	t.Helper()
	h := testkit.StartEdgeHost(t)
	s := &lastGoodSite{h: h, proxy: testkit.StartProxy(t, net.JoinHostPort(h.Host, strconv.Itoa(h.Port)))}
	s.src = filepath.Join(h.Dir, "www")
	for i := range 30 {
		writeFile(t, filepath.Join(s.src, fmt.Sprintf("d%d", i%3), fmt.Sprintf("f%02d.bin", i)), randomBytes(t, 256<<10), 0o644)
	}
	writeFile(t, filepath.Join(s.src, "notes.txt"), []byte("v1\n"), 0o644)
	if err := os.Symlink("notes.txt", filepath.Join(s.src, "notes link")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.src, "kind"), []byte("a file, a folder later\n"), 0o644)
	s.c = testConfig(t, h)
	s.c.SSH.Port = s.proxy.Port
	s.target = dirTarget(s.src)
	res := Directory(context.Background(), s.c, testSite, s.target, nil)
	if res.Status != domain.HealthSuccess {
		t.Fatalf("first pull: %+v", res)
	}
	s.staging = res.StagingPath
	assertMirror(t, s.src, s.staging, nil)
	s.v1 = filepath.Join(t.TempDir(), "v1")
	if out, err := exec.Command("cp", "-a", s.src, s.v1).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	return s
}

// change adds, modifies and deletes files on the site: 7.5 MiB to pull,
// new folders (one empty), a new symlink, two deletions; and, at the top
// (which rsync handles before any file data moves), a symlink retargeted,
// a file that becomes a folder and a new empty folder. Modified files
// change size: rsync compares times to the second, and the first pull may
// have been within the same second.
func (s *lastGoodSite) change(t *testing.T) {
	t.Helper()
	for i := range 10 {
		writeFile(t, filepath.Join(s.src, fmt.Sprintf("d%d", i%3), fmt.Sprintf("f%02d.bin", i)), randomBytes(t, 384<<10), 0o644)
	}
	for i := range 10 {
		writeFile(t, filepath.Join(s.src, "added", "deeper", fmt.Sprintf("n%02d.bin", i)), randomBytes(t, 384<<10), 0o644)
	}
	writeFile(t, filepath.Join(s.src, "notes.txt"), []byte("version two\n"), 0o644)
	for _, gone := range []string{"d0/f27.bin", "d2/f29.bin"} {
		if err := os.Remove(filepath.Join(s.src, gone)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(s.src, "added", "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("added/deeper/n00.bin", filepath.Join(s.src, "new link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(s.src, "notes link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d0/f00.bin", filepath.Join(s.src, "notes link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(s.src, "kind")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.src, "kind", "inside.txt"), []byte("now a folder\n"), 0o644)
	// rsync makes it early but names it last: only its birth time tells
	// it was this pull's.
	if err := os.Mkdir(filepath.Join(s.src, "zz new"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// assertLastGood checks staging after a pull that stopped mid-transfer
// of change's changes: every file, folder and symlink as the first pull
// left it, but for what rsync does not delay and no rollback can undo,
// since the old entry is gone before rsync names the new one: the
// retargeted symlink and the entry whose type changed are missing (the
// old ones replaced, the new ones removed as the pull's own). Harmless:
// the failed target is left out of the snapshot, and the next good pull
// brings both.
func (s *lastGoodSite) assertLastGood(t *testing.T) {
	t.Helper()
	changed := func(rel string) bool { return rel == "notes link" || rel == "kind" }
	assertMirror(t, s.v1, s.staging, changed)
	for _, rel := range []string{"notes link", "kind"} {
		if _, err := os.Lstat(filepath.Join(s.staging, rel)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want it missing", rel, err)
		}
	}
}

// work is the target's work folder.
func (s *lastGoodSite) work() string {
	return workPath(s.c.StagingRoot, testSite, s.target.TargetHash)
}

// assertNoDebris fails if staging holds a partial folder or anything that
// looks like an rsync temp file, or if the work folder is still there.
func (s *lastGoodSite) assertNoDebris(t *testing.T) {
	t.Helper()
	tmpName := regexp.MustCompile(`^\..+\.[A-Za-z0-9]{6}$`)
	_ = filepath.WalkDir(s.staging, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		if n := d.Name(); n == remote.RsyncPartialDir || n == ".~tmp~" || tmpName.MatchString(n) {
			t.Errorf("debris in staging: %s", p)
		}
		return nil
	})
	if _, err := os.Lstat(s.work()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("work folder %s is still there (%v)", s.work(), err)
	}
}

// countPartial counts the files waiting in partial folders in staging.
func countPartial(t *testing.T, staging string) (files int) {
	t.Helper()
	_ = filepath.WalkDir(staging, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.Contains(p, "/"+remote.RsyncPartialDir+"/") {
			files++
		}
		return nil
	})
	return files
}

// TestDirectoryFailedPullKeepsLastGoodCopy changes the site after a first
// pull and stops the second pull mid-transfer three ways: the connection
// cut (transient), the job canceled, the target timeout. Each time staging
// must hold exactly the first pull's files, with no debris, and the
// cleanup must be reported; then a pull over a working connection brings
// staging to the new state.
func TestDirectoryFailedPullKeepsLastGoodCopy(t *testing.T) {
	s := newLastGoodSite(t)
	s.change(t)
	slow := s.c
	// 7.5 MiB changed at 2 MiB/s: nearly 4 s of transfer.
	slow.BandwidthLimitKbps = 2 << 10

	// stopAfter runs the throttled pull and calls stop once the first
	// changed files wait in partial folders, i.e. mid-transfer.
	stopAfter := func(t *testing.T, ctx context.Context, c Config, stop func()) Result {
		t.Helper()
		var once sync.Once
		pending := 0
		res := Directory(ctx, c, testSite, s.target, func(p Progress) {
			if p.BytesDone < 512<<10 {
				return
			}
			once.Do(func() {
				pending = countPartial(t, s.staging)
				stop()
			})
		})
		t.Logf("result: %+v", res)
		if pending == 0 {
			t.Errorf("no received file was waiting in a %s folder when the pull was stopped", remote.RsyncPartialDir)
		}
		return res
	}
	check := func(t *testing.T, res Result) {
		t.Helper()

		if res.Status != domain.HealthFailed {
			t.Fatalf("status %s, want failed", res.Status)
		}
		s.assertLastGood(t)
		s.assertNoDebris(t)
		if len(res.Cleanups) != 1 || res.Cleanups[0].Failed || res.Cleanups[0].TargetHash != s.target.TargetHash ||
			!strings.Contains(res.Cleanups[0].Message, "received file") ||
			!strings.Contains(res.Cleanups[0].Message, "folders and links the pull had created") ||
			!strings.Contains(res.Cleanups[0].Message, "staging holds the last complete pull") {
			t.Errorf("Cleanups = %+v", res.Cleanups)
		}
	}

	t.Run("connection cut is transient", func(t *testing.T) {
		res := stopAfter(t, context.Background(), slow, func() {
			if n := s.proxy.Cut(); n == 0 {
				t.Error("no connection to cut")
			}
		})
		check(t, res)
		if !res.Transient || !regexp.MustCompile(`^rsync exit (255|12): connection lost: `).MatchString(res.Error) {
			t.Errorf("Transient %v, Error %q; want a transient lost connection", res.Transient, res.Error)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		res := stopAfter(t, ctx, slow, cancel)
		check(t, res)
		if res.Transient || !strings.Contains(res.Error, "context canceled") {
			t.Errorf("Transient %v, Error %q; want a canceled pull, not transient", res.Transient, res.Error)
		}
	})
	t.Run("target timeout", func(t *testing.T) {
		// 1 MiB/s: the timeout falls mid-transfer even on a slow start.
		c := slow
		c.BandwidthLimitKbps = 1 << 10
		c.TargetTimeout = 3 * time.Second
		res := stopAfter(t, context.Background(), c, func() {})
		check(t, res)
		if res.Transient || !strings.Contains(res.Error, "timed out after 3s") {
			t.Errorf("Transient %v, Error %q; want a timed out pull, not transient", res.Transient, res.Error)
		}
	})
	t.Run("next pull succeeds", func(t *testing.T) {
		res := Directory(context.Background(), s.c, testSite, s.target, nil)
		if res.Status != domain.HealthSuccess || len(res.Cleanups) != 0 {
			t.Fatalf("pull over a working connection: %+v", res)
		}
		assertMirror(t, s.src, s.staging, nil)
		s.assertNoDebris(t)
	})
}

// TestDirectoryRecoversFromKilledPuller SIGKILLs a process in the middle
// of a pull, as kill -9 of Satoru would: rsync and ssh must die with it,
// and the leftovers, for which no cleanup ran, are removed before the
// next pull (here by RecoverInterrupted, as a backup does before its
// headroom check), leaving the first pull's copy.
func TestDirectoryRecoversFromKilledPuller(t *testing.T) {
	s := newLastGoodSite(t)
	s.change(t)
	c := s.c
	c.BandwidthLimitKbps = 2 << 10
	helper, sc := startPullHelper(t, c, s.target, 512<<10)
	if sc.Err() != nil {
		t.Fatal(sc.Err())
	}
	rsyncs := processesWith(t, s.staging)
	if len(rsyncs) == 0 {
		t.Fatal("no rsync with the staging path in its argv is running")
	}
	if countPartial(t, s.staging) == 0 {
		t.Errorf("no received file was waiting in a %s folder", remote.RsyncPartialDir)
	}
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()

	// rsync and everything in its process group (ssh, rsync's receiver)
	// must be gone within 2 s: no orphan goes on writing to staging.
	deadline := time.Now().Add(2 * time.Second)
	for {
		var live []string
		for pid, pgid := range rsyncs {
			for _, p := range groupMembers(t, pgid) {
				live = append(live, fmt.Sprintf("%d (group of %d)", p, pid))
			}
		}
		if len(live) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, pgid := range rsyncs {
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
			}
			t.Fatalf("still running 2 s after the puller was killed: %v", live)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(s.work(), workJournal)); err != nil {
		t.Fatalf("the killed pull left no journal: %v", err)
	}

	cl := RecoverInterrupted(context.Background(), s.c.StagingRoot, testSite, []domain.Target{s.target})
	t.Logf("cleanups: %+v", cl)
	if len(cl) != 1 || cl[0].Failed || cl[0].TargetHash != s.target.TargetHash ||
		!strings.Contains(cl[0].Message, "stopped without cleaning up") || !strings.Contains(cl[0].Message, "received file") ||
		!strings.Contains(cl[0].Message, "folders and links the pull had created") {
		t.Errorf("RecoverInterrupted = %+v", cl)
	}
	s.assertLastGood(t)
	s.assertNoDebris(t)

	res := Directory(context.Background(), s.c, testSite, s.target, nil)
	if res.Status != domain.HealthSuccess || len(res.Cleanups) != 0 {
		t.Fatalf("pull after recovery: %+v", res)
	}
	assertMirror(t, s.src, s.staging, nil)
	s.assertNoDebris(t)
}

// TestDirectoryPullRecoversFirst plants the leftovers a killed pull
// leaves and starts the next pull directly: it must clean up first,
// report it, and end with the new state.
func TestDirectoryPullRecoversFirst(t *testing.T) {
	s := newLastGoodSite(t)
	// Leftovers as a crash leaves them: a journal naming a folder the
	// pull created, that folder, a partial folder and a temp file.
	work := s.work()
	writeFile(t, filepath.Join(work, workTmp, ".f00.bin.Ab12Cd"), []byte("half a file"), 0o600)
	writeFile(t, filepath.Join(s.staging, "d0", remote.RsyncPartialDir, "f00.bin"), []byte("new f00"), 0o600)
	writeFile(t, filepath.Join(s.staging, "fresh", remote.RsyncPartialDir, "x"), []byte("x"), 0o600)
	writeFile(t, filepath.Join(work, workJournal), []byte("d fresh/\nL fresh -> gone\n"), 0o600)
	s.change(t)
	res := Directory(context.Background(), s.c, testSite, s.target, nil)
	t.Logf("result: %+v", res)
	if res.Status != domain.HealthSuccess {
		t.Fatalf("status %s", res.Status)
	}
	if len(res.Cleanups) != 1 || res.Cleanups[0].Failed ||
		!strings.Contains(res.Cleanups[0].Message, "removed 2 "+remote.RsyncPartialDir+" folders holding 2 received files (8 bytes), 1 rsync temp file (11 bytes), 1 folder or link the pull had created") {
		t.Errorf("Cleanups = %+v", res.Cleanups)
	}
	assertMirror(t, s.src, s.staging, nil)
	s.assertNoDebris(t)
}

// TestUndoCreated checks that only what the journal names, and only as
// rsync created it, is removed, never anything outside staging.
func TestUndoCreated(t *testing.T) {
	base := t.TempDir()
	staging := filepath.Join(base, "staging")
	outside := filepath.Join(base, "outside")
	writeFile(t, filepath.Join(outside, "keep"), []byte("x"), 0o600)
	writeFile(t, filepath.Join(staging, "new dir", "sub", "f"), []byte("x"), 0o600)
	writeFile(t, filepath.Join(staging, "café", "f"), []byte("x"), 0o600)
	writeFile(t, filepath.Join(staging, "old", "f"), []byte("x"), 0o600)
	for name, target := range map[string]string{"new link": "old/f", "a -> b": "c", "retargeted": "other", "escape": outside} {
		if err := os.Symlink(target, filepath.Join(staging, name)); err != nil {
			t.Fatal(err)
		}
	}
	journal := filepath.Join(base, "created")
	entries := []string{
		"d new dir/",
		"d new dir/sub/",        // gone with its parent
		`d caf\#303\#251/`,      // escaped by rsync
		"L new link -> old/f",   // still as created
		"L a -> b -> c",         // " -> " in the name
		"L retargeted -> old/f", // points elsewhere now: not ours
		"d escape/",             // a symlink now, not the folder rsync made
		"d ../outside/",         // leaves staging
		"d ./",                  // staging itself
		"L old -> x",            // a folder now
		"d missing/",            // never there
		"x",                     // cut short by a crash
	}
	writeFile(t, journal, []byte(strings.Join(entries, "\n")+"\n"), 0o600)
	root, err := os.OpenRoot(staging)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var n removed
	if err := undoCreated(context.Background(), root, journal, &n); err != nil {
		t.Fatal(err)
	}
	if n.created != 4 {
		t.Errorf("removed %d entries, want 4", n.created)
	}
	assertOnly(t, staging, "escape", "old", "retargeted")
	assertOnly(t, outside, "keep")
}

// processesWith maps the pid of every live process whose argv contains s
// to its process group.
func processesWith(t *testing.T, s string) map[int]int {
	t.Helper()
	out := map[int]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		argv, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.Contains(string(argv), s) {
			continue
		}
		if state, pgid := procStat(pid); state != "" && state != "Z" && state != "X" {
			out[pid] = pgid
		}
	}
	return out
}

// groupMembers lists the live (non-zombie) processes in group pgid.
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
		if state, g := procStat(pid); g == pgid && state != "" && state != "Z" && state != "X" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStat reads a process's state and process group from /proc; state
// is "" when it is gone.
func procStat(pid int) (state string, pgid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0
	}
	// After the command: state ppid pgrp ...
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return "", 0
	}
	pgid, _ = strconv.Atoi(f[2])
	return f[0], pgid
}

// TestRecoverInterruptedDumpTemps checks that a SQLite pull's temp files
// left by a killed Satoru are removed and reported, and that files of the
// same names in a directory target, which are the site's, stay.
func TestRecoverInterruptedDumpTemps(t *testing.T) {
	root := t.TempDir()
	db := sqliteTarget("/srv/app.db")
	dir := dirTarget("/srv")
	dbStaging := StagingPath(root, testSite, db.TargetHash)
	dirStaging := StagingPath(root, testSite, dir.TargetHash)
	for _, p := range []string{filepath.Join(dbStaging, ".app.db.gz.tmp"), filepath.Join(dbStaging, "app.db.tmp"),
		filepath.Join(dirStaging, ".app.db.gz.tmp"), filepath.Join(dirStaging, "app.db.tmp")} {
		writeFile(t, p, []byte("12345"), 0o600)
	}
	writeFile(t, filepath.Join(dbStaging, "app.db"), []byte("the good copy"), 0o600)

	got := RecoverInterrupted(context.Background(), root, testSite, []domain.Target{dir, db})
	want := []Cleanup{{TargetHash: db.TargetHash, Message: "an earlier pull of this database stopped without cleaning up (Satoru was stopped or killed mid-pull): removed 2 temp files (10 bytes)"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("RecoverInterrupted = %+v\nwant %+v", got, want)
	}
	assertOnly(t, dbStaging, "app.db")
	assertOnly(t, dirStaging, ".app.db.gz.tmp", "app.db.tmp")
	if got := RecoverInterrupted(context.Background(), root, testSite, []domain.Target{dir, db}); len(got) != 0 {
		t.Errorf("second run found %+v", got)
	}
}

// TestRemoveBornAfter checks the birth-time sweep: after the start
// marker, new folders, symlinks and named pipes go, regular files and
// everything older stay.
func TestRemoveBornAfter(t *testing.T) {
	base := t.TempDir()
	staging := filepath.Join(base, "staging")
	writeFile(t, filepath.Join(staging, "old", "f"), []byte("x"), 0o600)
	if err := os.Symlink("old/f", filepath.Join(staging, "old link")); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(base, workStarted)
	if err := markStart(marker); err != nil {
		t.Fatal(err)
	}
	since, ok, err := birthTime(marker)
	if err != nil || !ok {
		t.Fatalf("the test folder's filesystem records no birth time (%v): the sweep cannot be tested here", err)
	}
	// rsync needs far longer than one step of the file clock before it
	// creates anything; the test waits for that step.
	probe := filepath.Join(base, "probe")
	waitFor(t, time.Second, func() bool {
		_ = os.Remove(probe)
		writeFile(t, probe, nil, 0o600)
		born, _, err := birthTime(probe)
		return err == nil && born.After(since)
	})
	writeFile(t, filepath.Join(staging, "new dir", "sub", "f"), []byte("x"), 0o600)
	writeFile(t, filepath.Join(staging, "old", "new file"), []byte("x"), 0o600)
	if err := os.Mkdir(filepath.Join(staging, "old", "new empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", filepath.Join(staging, "old", "new link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(staging, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(staging)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var n removed
	if err := removeBornAfter(context.Background(), root, since, &n); err != nil {
		t.Fatal(err)
	}
	if n.created != 4 {
		t.Errorf("removed %d entries, want 4", n.created)
	}
	assertOnly(t, staging, "old", "old link")
	assertOnly(t, filepath.Join(staging, "old"), "f", "new file")
}

// waitFor polls cond until it holds or within has passed.
func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", within)
		}
	}
}

// TestDirectoryFirstPullKilledLeavesNothing: a first pull writes straight
// into its empty folder (no delayed updates: nothing to keep in place).
// Killed mid-transfer with its puller, it leaves received files and an
// rsync temp file in staging; the recovery empties the folder again, as
// it was, and the next pull brings everything.
func TestDirectoryFirstPullKilledLeavesNothing(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	proxy := testkit.StartProxy(t, net.JoinHostPort(h.Host, strconv.Itoa(h.Port)))
	src := filepath.Join(h.Dir, "www")
	for i := range 12 {
		writeFile(t, filepath.Join(src, fmt.Sprintf("d%d", i%3), fmt.Sprintf("f%02d.bin", i)), randomBytes(t, 384<<10), 0o644)
	}
	c := testConfig(t, h)
	c.SSH.Port = proxy.Port
	c.BandwidthLimitKbps = 1 << 10
	target := dirTarget(src)
	helper, _ := startPullHelper(t, c, target, 1<<20)
	staging := filepath.Join(c.StagingRoot, testSite, target.TargetHash)
	rsyncs := processesWith(t, staging)
	if len(rsyncs) == 0 {
		t.Fatal("no rsync with the staging path in its argv is running")
	}
	for pid := range rsyncs {
		if args, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(args), "--delay-updates") {
			t.Errorf("a first pull runs rsync with --delay-updates: %q", strings.ReplaceAll(string(args), "\x00", " "))
		}
	}
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	waitFor(t, 5*time.Second, func() bool {
		for _, pgid := range rsyncs {
			if len(groupMembers(t, pgid)) > 0 {
				return false
			}
		}
		return true
	})
	var received int
	_ = filepath.WalkDir(staging, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			received++
		}
		return nil
	})
	if received == 0 {
		t.Fatal("the killed first pull left nothing in staging: the test did not kill it mid-transfer")
	}

	cl := RecoverInterrupted(context.Background(), c.StagingRoot, testSite, []domain.Target{target})
	t.Logf("cleanups: %+v", cl)
	if len(cl) != 1 || cl[0].Failed || !strings.Contains(cl[0].Message, "of an unfinished first pull") ||
		!strings.Contains(cl[0].Message, "staging is empty again") {
		t.Errorf("RecoverInterrupted = %+v", cl)
	}
	if empty, err := emptyDir(staging); err != nil || !empty {
		entries, _ := os.ReadDir(staging)
		t.Fatalf("staging after the recovery: empty %v (%v), entries %v", empty, err, entries)
	}
	if _, err := os.Lstat(workPath(c.StagingRoot, testSite, target.TargetHash)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("work folder still there: %v", err)
	}
	c.BandwidthLimitKbps = 0
	res := Directory(context.Background(), c, testSite, target, nil)
	if res.Status != domain.HealthSuccess {
		t.Fatalf("pull after recovery: %+v", res)
	}
	assertMirror(t, src, staging, nil)
}

// startPullHelper runs a pull of target in a child process (TestMain's
// helper mode) and returns once it reports at least minBytes received;
// the child is killed at the test's end if still running.
func startPullHelper(t *testing.T, c Config, target domain.Target, minBytes int64) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	js, err := json.Marshal(helperJob{C: c, T: target})
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(exe, "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"="+string(js))
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if n, err := strconv.ParseInt(strings.TrimPrefix(sc.Text(), "progress "), 10, 64); err == nil && n >= minBytes {
			break
		}
	}
	return helper, sc
}
