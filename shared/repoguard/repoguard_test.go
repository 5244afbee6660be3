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
	if os.Getenv("REPOGUARD_CHILD") == "1" {
		os.Exit(child())
	}
	os.Exit(m.Run())
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
