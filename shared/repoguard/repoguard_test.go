package repoguard

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/embedded"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/testkit"
)

const testPassword = "repoguard-test-password-5b1c"

// The child process of TestEnsureInitOnceAcrossProcesses: it joins the
// test's NATS server and races its own goroutines (and the other child)
// to initialise one repository, then prints how many inits it did.
func TestMain(m *testing.M) {
	switch os.Getenv("REPOGUARD_CHILD") {
	case "1":
		os.Exit(child())
	case "maintenance":
		os.Exit(maintenanceChild())
	}
	os.Exit(m.Run())
}

// childGuard joins the test's NATS server as its own process.
func childGuard(ctx context.Context, name string) (*Guard, func(), error) {
	nc, err := bus.Connect(os.Getenv("REPOGUARD_NATS"), name)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	infra, err := bus.Ensure(ctx, js, bus.Settings{LeaseTTL: 30 * time.Second, AckWait: 30 * time.Second})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	g, err := New(infra, name, slog.New(slog.DiscardHandler))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	g.Poll = 20 * time.Millisecond
	return g, nc.Close, nil
}

// maintenanceChild takes the maintenance lease REPOGUARD_ROUNDS times,
// holding it 150 ms each, and prints each holding's start and end (Unix
// nanoseconds) for TestMaintenanceLeaseAcrossProcesses.
func maintenanceChild() int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, closeNC, err := childGuard(ctx, "maint-"+strconv.Itoa(os.Getpid()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer closeNC()
	rounds, _ := strconv.Atoi(os.Getenv("REPOGUARD_ROUNDS"))
	for range rounds {
		held, err := g.Maintenance(ctx, "child", nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "maintenance:", err)
			return 1
		}
		start := time.Now().UnixNano()
		time.Sleep(150 * time.Millisecond)
		end := time.Now().UnixNano()
		g.Release(held)
		fmt.Printf("held %d %d\n", start, end)
	}
	return 0
}

func child() int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := bus.Connect(os.Getenv("REPOGUARD_NATS"), "repoguard-child")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	infra, err := bus.Ensure(ctx, js, bus.Settings{LeaseTTL: 30 * time.Second, AckWait: 30 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	g, err := New(infra, "child-"+strconv.Itoa(os.Getpid()), slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	repo := restic.Repo{Bin: os.Getenv("REPOGUARD_RESTIC"), Repository: os.Getenv("REPOGUARD_REPO"),
		Password: testPassword, CacheDir: os.Getenv("REPOGUARD_CACHE")}
	workers, _ := strconv.Atoi(os.Getenv("REPOGUARD_WORKERS"))
	var created atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := g.EnsureInit(ctx, repo)
			if err != nil {
				errs <- err
				return
			}
			if c {
				created.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fmt.Fprintln(os.Stderr, "ensure init:", err)
		return 1
	}
	fmt.Printf("created=%d\n", created.Load())
	return 0
}

func startNATS(t *testing.T) *embedded.NATS {
	t.Helper()
	n, err := embedded.StartNATS(embedded.NATSOptions{Dir: filepath.Join(t.TempDir(), "nats"), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

func testGuard(t *testing.T, n *embedded.NATS) *Guard {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := bus.Connect(n.ClientURL(), "repoguard-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	infra, err := bus.Ensure(ctx, js, bus.Settings{LeaseTTL: 30 * time.Second, AckWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(infra, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// Two processes with four goroutines each race to initialise a new
// repository, five times over (the fault suite repeats it through whole satoru processes): exactly one init happens each time, the
// repository holds one key and restic check passes. Without the init
// lease, concurrent inits write several keys and configs and check fails.
func TestEnsureInitOnceAcrossProcesses(t *testing.T) {
	n := startNATS(t)
	bin := testkit.ResticBin(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const rounds, procs, workers = 5, 2, 4
	for round := range rounds {
		repoDir := filepath.Join(t.TempDir(), "repo")
		cmds := make([]*exec.Cmd, procs)
		outs := make([]*strings.Builder, procs)
		for i := range cmds {
			outs[i] = &strings.Builder{}
			c := exec.Command(self, "-test.run", "^$")
			c.Env = append(os.Environ(), "REPOGUARD_CHILD=1", "REPOGUARD_NATS="+n.ClientURL(), "REPOGUARD_RESTIC="+bin,
				"REPOGUARD_REPO="+repoDir, "REPOGUARD_CACHE="+t.TempDir(), "REPOGUARD_WORKERS="+strconv.Itoa(workers))
			c.Stdout, c.Stderr = outs[i], outs[i]
			cmds[i] = c
		}
		for _, c := range cmds {
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
		}
		created := 0
		for i, c := range cmds {
			if err := c.Wait(); err != nil {
				t.Fatalf("round %d: child %d: %v\n%s", round, i, err, outs[i])
			}
			var k int
			if _, err := fmt.Sscanf(strings.TrimSpace(outs[i].String()), "created=%d", &k); err != nil {
				t.Fatalf("round %d: child %d printed %q", round, i, outs[i])
			}
			created += k
		}
		if created != 1 {
			t.Fatalf("round %d: %d inits, want exactly 1", round, created)
		}
		keys, err := os.ReadDir(filepath.Join(repoDir, "keys"))
		if err != nil || len(keys) != 1 {
			t.Fatalf("round %d: keys/ holds %d keys (%v), want 1", round, len(keys), err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		repo := restic.Repo{Bin: bin, Repository: repoDir, Password: testPassword, CacheDir: t.TempDir()}
		if err := repo.Check(ctx, ""); err != nil {
			t.Fatalf("round %d: restic check: %v", round, err)
		}
		cancel()
	}
}

// An init killed between its key and its config leaves a key that cannot
// open the repository; the next EnsureInit clears it and initialises.
func TestEnsureInitClearsAnUnfinishedInit(t *testing.T) {
	g := testGuard(t, startNATS(t))
	repoDir := filepath.Join(t.TempDir(), "repo")
	repo := restic.Repo{Bin: testkit.ResticBin(t), Repository: repoDir, Password: testPassword, CacheDir: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := repo.Init(ctx); err != nil {
		t.Fatal(err)
	}
	// What a killed init leaves: its key, no config.
	if err := os.Remove(filepath.Join(repoDir, "config")); err != nil {
		t.Fatal(err)
	}
	created, err := g.EnsureInit(ctx, repo)
	if err != nil || !created {
		t.Fatalf("EnsureInit = %v, %v; want a new init", created, err)
	}
	keys, _ := os.ReadDir(filepath.Join(repoDir, "keys"))
	if len(keys) != 1 {
		t.Fatalf("keys/ holds %d keys, want 1", len(keys))
	}
	if err := repo.Check(ctx, ""); err != nil {
		t.Fatalf("restic check: %v", err)
	}
	// A second call finds it there.
	if created, err := g.EnsureInit(ctx, repo); err != nil || created {
		t.Fatalf("second EnsureInit = %v, %v; want no init", created, err)
	}
}

// A restic process that Satoru recorded and that died holding the
// exclusive lock: ClearStale finds it dead, removes its lock and its
// record at once; a live holder's lock is left alone.
func TestClearStaleRemovesTheLockOfADeadProcess(t *testing.T) {
	g := testGuard(t, startNATS(t))
	repoDir := filepath.Join(t.TempDir(), "repo")
	repo := restic.Repo{Bin: testkit.ResticBin(t), Repository: repoDir, Password: testPassword, CacheDir: t.TempDir(), RetryLock: 0}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := g.EnsureInit(ctx, repo); err != nil {
		t.Fatal(err)
	}

	// `restic key passwd` takes the exclusive lock, then waits for a
	// password on stdin: a process holding the lock for as long as we want.
	holder := exec.Command(repo.Bin, "key", "passwd")
	holder.Env = append(os.Environ(), "RESTIC_REPOSITORY="+repoDir, "RESTIC_PASSWORD="+testPassword, "RESTIC_CACHE_DIR="+t.TempDir())
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = holder.Wait(); close(exited) }()
	t.Cleanup(func() { _ = holder.Process.Kill(); <-exited; stdin.Close() })
	ended := g.Record("key", holder.Process.Pid, repoDir)
	if ended == nil {
		t.Fatal("the process was not recorded")
	}
	waitFor(t, func() bool { return locks(t, repoDir) == 1 }, "the holder's lock")

	// Alive: nothing to clear, and its lock stays.
	if dead, err := g.ClearStale(ctx, repo); err != nil || len(dead) != 0 {
		t.Fatalf("ClearStale with a live holder = %v, %v; want nothing", dead, err)
	}
	if locks(t, repoDir) != 1 {
		t.Fatal("a live process's lock was removed")
	}
	if err := repo.Check(ctx, ""); err == nil {
		t.Fatal("restic check passed while the exclusive lock is held; the test cannot tell a cleared lock")
	}

	// kill -9: its lock stays behind until ClearStale.
	_ = holder.Process.Kill()
	<-exited
	if locks(t, repoDir) != 1 {
		t.Fatal("the killed holder left no lock; the test proves nothing")
	}
	dead, err := g.ClearStale(ctx, repo)
	if err != nil || len(dead) != 1 || dead[0].PID != holder.Process.Pid || dead[0].Op != "key" {
		t.Fatalf("ClearStale = %+v, %v; want the dead holder", dead, err)
	}
	if n := locks(t, repoDir); n != 0 {
		t.Fatalf("%d lock(s) left after ClearStale", n)
	}
	if err := repo.Check(ctx, ""); err != nil {
		t.Fatalf("restic check after ClearStale: %v", err)
	}
	if again, err := g.Dead(ctx); err != nil || len(again) != 0 {
		t.Fatalf("records left after ClearStale: %+v, %v", again, err)
	}
	ended() // the owner's own removal of a record already gone is harmless
}

// Track records a restic run while it runs and removes the record after.
func TestTrackRecordsWhileRunning(t *testing.T) {
	g := testGuard(t, startNATS(t))
	repo := restic.Repo{Bin: testkit.ResticBin(t), Repository: filepath.Join(t.TempDir(), "repo"), Password: testPassword, CacheDir: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := g.EnsureInit(ctx, repo); err != nil {
		t.Fatal(err)
	}
	var seen atomic.Int32
	tracked := g.Track(repo)
	inner := tracked.OnStart
	tracked.OnStart = func(op string, pid int) func() {
		ended := inner(op, pid)
		keys, _ := g.Infra.ResticProcs.ListKeys(ctx)
		for range keys.Keys() {
			seen.Add(1)
		}
		return ended
	}
	if err := tracked.Check(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if seen.Load() != 1 {
		t.Fatalf("%d records while restic check ran, want 1", seen.Load())
	}
	keys, _ := g.Infra.ResticProcs.ListKeys(ctx)
	n := 0
	for range keys.Keys() {
		n++
	}
	if n != 0 {
		t.Fatalf("%d records after restic check ended, want 0", n)
	}
}

func locks(t *testing.T, repoDir string) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(repoDir, "locks"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if len(e.Name()) == 64 && strings.Trim(e.Name(), "0123456789abcdef") == "" {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two processes each take the maintenance lease three times (as a
// retention's prune and an offsite copy would): no two holdings overlap.
// Without the lease the children's 150 ms holdings run side by side.
func TestMaintenanceLeaseAcrossProcesses(t *testing.T) {
	n := startNATS(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const procs, rounds = 2, 3
	outs := make([]*strings.Builder, procs)
	cmds := make([]*exec.Cmd, procs)
	for i := range cmds {
		outs[i] = &strings.Builder{}
		c := exec.Command(self, "-test.run", "^$")
		c.Env = append(os.Environ(), "REPOGUARD_CHILD=maintenance", "REPOGUARD_NATS="+n.ClientURL(), "REPOGUARD_ROUNDS="+strconv.Itoa(rounds))
		c.Stdout, c.Stderr = outs[i], outs[i]
		cmds[i] = c
	}
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	type span struct{ start, end int64 }
	var spans []span
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("child %d: %v\n%s", i, err, outs[i])
		}
		for _, line := range strings.Split(strings.TrimSpace(outs[i].String()), "\n") {
			var sp span
			if _, err := fmt.Sscanf(line, "held %d %d", &sp.start, &sp.end); err != nil {
				t.Fatalf("child %d printed %q", i, line)
			}
			spans = append(spans, sp)
		}
	}
	if len(spans) != procs*rounds {
		t.Fatalf("%d holdings, want %d", len(spans), procs*rounds)
	}
	for i, a := range spans {
		for _, b := range spans[i+1:] {
			if a.start < b.end && b.start < a.end {
				t.Fatalf("two maintenance holdings overlap: %v and %v", a, b)
			}
		}
	}
}

// While one process holds the maintenance lease, another process's
// TryMaintenance is refused naming the holder, its Maintenance waits
// (told once who holds it) until the lease is released, and a restic
// backup of the repository runs at once: backups never wait for it.
func TestMaintenanceLeaseWaitsButNeverBlocksABackup(t *testing.T) {
	n := startNATS(t)
	g1, g2 := testGuard(t, n), testGuard(t, n)
	g1.Instance, g2.Instance = "worker-one", "worker-two"
	g2.Poll = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	held, err := g1.Maintenance(ctx, "retention-job1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if h, holder, err := g2.TryMaintenance(ctx, "cleanup"); err != nil || h != nil || !strings.Contains(holder, "worker-one") {
		t.Fatalf("TryMaintenance while held = %v, %q, %v; want refused naming worker-one", h, holder, err)
	}

	var waits atomic.Int32
	var waitedFor atomic.Value
	got := make(chan *Held, 1)
	go func() {
		h, err := g2.Maintenance(ctx, "sync-job2", func(holder string) { waits.Add(1); waitedFor.Store(holder) })
		if err != nil {
			t.Error(err)
		}
		got <- h
	}()

	// A backup meanwhile: restic's own locks, not the lease, guard it.
	repoDir := filepath.Join(t.TempDir(), "repo")
	repo := restic.Repo{Bin: testkit.ResticBin(t), Repository: repoDir, Password: testPassword, CacheDir: t.TempDir()}
	if _, err := g1.EnsureInit(ctx, repo); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "f"), []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := g2.Track(repo).Backup(ctx, restic.BackupOptions{Paths: []string{data}}, nil); err != nil {
		t.Fatalf("backup while the maintenance lease is held: %v", err)
	}

	select {
	case <-got:
		t.Fatal("a second maintenance got the lease while the first held it")
	case <-time.After(300 * time.Millisecond):
	}
	if waits.Load() != 1 || !strings.Contains(fmt.Sprint(waitedFor.Load()), "worker-one") {
		t.Fatalf("waiting told %d time(s), holder %v; want once, naming worker-one", waits.Load(), waitedFor.Load())
	}
	g1.Release(held)
	select {
	case h := <-got:
		if h == nil {
			t.Fatal("no lease")
		}
		g2.Release(h)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting maintenance did not get the released lease")
	}
	if waits.Load() != 1 {
		t.Fatalf("waiting told %d times, want once", waits.Load())
	}
}

// EnsureInit works on a repository at an s3: URL (the in-process S3
// server): two guards racing initialise it once, and it opens.
func TestEnsureInitS3(t *testing.T) {
	n := startNATS(t)
	s3 := testkit.StartS3(t, "repoguard-id", "repoguard-secret")
	s3.Bucket(t, "shared")
	bin := testkit.ResticBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	repo := restic.Repo{Bin: bin, Repository: s3.Repository("shared", "satoru"), Password: testPassword, Env: s3.Env()}
	var created atomic.Int32
	var wg sync.WaitGroup
	for range 2 {
		g := testGuard(t, n)
		r := repo
		r.CacheDir = t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := g.EnsureInit(ctx, r)
			if err != nil {
				t.Error(err)
			}
			if c {
				created.Add(1)
			}
		}()
	}
	wg.Wait()
	if created.Load() != 1 {
		t.Fatalf("%d inits, want 1", created.Load())
	}
	if keys, _ := s3.Objects(t, "shared", "satoru/keys/"); keys != 1 {
		t.Fatalf("%d keys in the bucket, want 1", keys)
	}
	repo.CacheDir = t.TempDir()
	if err := repo.Open(ctx); err != nil {
		t.Fatalf("open after init: %v", err)
	}
}
