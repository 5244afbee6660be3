package restic

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/testkit"
)

// These tests run the real restic against temporary repositories. Nothing
// skips: a missing restic fails the run.

const testPassword = "correct-horse-battery-staple-7e1"

func testRepo(t *testing.T, path string) Repo {
	t.Helper()
	return Repo{Bin: testkit.ResticBin(t), Repository: path, Password: testPassword, CacheDir: t.TempDir()}
}

// writeTree writes files with random content under dir and returns them
// by path relative to dir.
func writeTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for i, name := range []string{"sub/deeper/empty", "a.txt", "sub/b.bin", "sub/deeper/c.bin", "d with space.txt"} {
		b := make([]byte, i*40000)
		rand.Read(b)
		files[name] = b
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func TestIntegrationRepoLifecycle(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	base := t.TempDir()
	// restic creates missing parents too: all must come out 0700.
	r := testRepo(t, filepath.Join(base, "repos", "site", "repo"))

	t.Run("version", func(t *testing.T) {
		v, err := r.Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f := strings.SplitN(v, ".", 3)
		minor, _ := strconv.Atoi(f[min(1, len(f)-1)])
		if len(f) < 2 || (f[0] == "0" && minor < 16) {
			t.Fatalf("restic %s: need 0.16 or newer for --retry-lock", v)
		}
	})

	t.Run("missing repository", func(t *testing.T) {
		if err := r.Open(ctx); !errors.Is(err, ErrNoRepository) {
			t.Fatalf("cat config: err = %v, want ErrNoRepository", err)
		}
		if _, err := r.Snapshots(ctx); !errors.Is(err, ErrNoRepository) {
			t.Fatalf("snapshots: err = %v, want ErrNoRepository", err)
		}
	})

	t.Run("EnsureInit twice", func(t *testing.T) {
		created, err := r.EnsureInit(ctx)
		if err != nil || !created {
			t.Fatalf("first EnsureInit = %v, %v; want true, nil", created, err)
		}
		created, err = r.EnsureInit(ctx)
		if err != nil || created {
			t.Fatalf("second EnsureInit = %v, %v; want false, nil", created, err)
		}
	})

	src := filepath.Join(base, "staging")
	files := writeTree(t, filepath.Join(src, "data"))
	if err := os.WriteFile(filepath.Join(src, "data", "scratch.tmp"), []byte("excluded"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := BackupOptions{Paths: []string{"data"}, Dir: src, Host: "edge-1", Tags: []string{"site:s1", "target:t1"}, Excludes: []string{"*.tmp"}}
	var first Summary

	t.Run("backup", func(t *testing.T) {
		var err error
		first, err = r.Backup(ctx, opts, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(first.SnapshotID) != 64 || first.FilesNew != int64(len(files)) || first.TotalFilesProcessed != int64(len(files)) || first.DataAdded == 0 {
			t.Errorf("summary = %+v, want a 64-hex id and %d new files", first, len(files))
		}
		if len(first.Warnings) != 0 {
			t.Errorf("warnings = %q", first.Warnings)
		}
	})

	t.Run("repository permissions", func(t *testing.T) {
		// restic's local backend makes directories 0700 and files 0400
		// (read-only, so nothing rewrites a pack by accident).
		root := filepath.Join(base, "repos")
		var dirs, files int
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			m := fi.Mode().Perm()
			switch {
			case d.IsDir():
				dirs++
				if m != 0o700 {
					t.Errorf("dir %s is %o, want 700", p, m)
				}
			case m&0o077 != 0:
				t.Errorf("file %s is %o: group or others can access it", p, m)
			default:
				files++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if files == 0 {
			t.Fatal("walked no files")
		}
		t.Logf("%d dirs, %d files checked", dirs, files)
	})

	t.Run("snapshots by tag", func(t *testing.T) {
		snaps, err := r.Snapshots(ctx, "site:s1", "target:t1")
		if err != nil {
			t.Fatal(err)
		}
		if len(snaps) != 1 {
			t.Fatalf("got %d snapshots, want 1", len(snaps))
		}
		s := snaps[0]
		if s.ID != first.SnapshotID || s.ShortID != first.SnapshotID[:8] || s.Host != "edge-1" || s.Time.IsZero() {
			t.Errorf("snapshot = %+v", s)
		}
		if !slices.Equal(s.Tags, []string{"site:s1", "target:t1"}) || !slices.Equal(s.Paths, []string{filepath.Join(src, "data")}) {
			t.Errorf("tags %q, paths %q", s.Tags, s.Paths)
		}
		if s.Summary == nil || s.Summary.FilesNew != first.FilesNew || s.Summary.DataAdded != first.DataAdded {
			t.Errorf("snapshot summary = %+v, backup said %+v", s.Summary, first)
		}
		for _, tags := range [][]string{{"site:s1", "target:other"}, {"site:s2"}} {
			if snaps, err := r.Snapshots(ctx, tags...); err != nil || len(snaps) != 0 {
				t.Errorf("Snapshots(%q) = %d, %v; want none", tags, len(snaps), err)
			}
		}
	})

	t.Run("restore", func(t *testing.T) {
		target := t.TempDir()
		if err := r.Restore(ctx, first.SnapshotID, target); err != nil {
			t.Fatal(err)
		}
		// The tree mirrors the paths as given: relative "data" is stored
		// as /data, although the snapshot lists the absolute path.
		root := filepath.Join(target, "data")
		for name, want := range files {
			got, err := os.ReadFile(filepath.Join(root, name))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: restored %d bytes (err %v), want %d identical bytes", name, len(got), err, len(want))
			}
		}
		if _, err := os.Stat(filepath.Join(root, "scratch.tmp")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("excluded file was backed up: %v", err)
		}

		one := t.TempDir()
		if err := r.Restore(ctx, first.SnapshotID, one, "/data/sub/b.bin"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(one, "data", "a.txt")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("--include restored a.txt too: %v", err)
		}
		if got, _ := os.ReadFile(filepath.Join(one, "data", "sub", "b.bin")); !bytes.Equal(got, files["sub/b.bin"]) {
			t.Error("--include did not restore sub/b.bin")
		}
	})

	t.Run("unchanged rerun", func(t *testing.T) {
		s, err := r.Backup(ctx, opts, nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.SnapshotID == first.SnapshotID || s.FilesUnmodified != int64(len(files)) || s.FilesNew != 0 || s.FilesChanged != 0 {
			t.Errorf("rerun summary = %+v", s)
		}
		// Only tree metadata may be new; no file data.
		if s.DataAdded > 4096 {
			t.Errorf("rerun added %d bytes", s.DataAdded)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		bad := r
		bad.Password = "not-the-password-31337"
		if _, err := bad.EnsureInit(ctx); !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("EnsureInit: err = %v, want ErrWrongPassword", err)
		}
		_, err := bad.Backup(ctx, opts, nil)
		if !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("Backup: err = %v, want ErrWrongPassword", err)
		}
		if strings.Contains(err.Error(), bad.Password) || strings.Contains(err.Error(), testPassword) {
			t.Errorf("error leaks a password: %q", err)
		}
	})

	t.Run("exit 3: unreadable file", func(t *testing.T) {
		dir := filepath.Join(base, "partial")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for name, mode := range map[string]os.FileMode{"ok": 0o600, "unreadable": 0} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(name), mode); err != nil {
				t.Fatal(err)
			}
		}
		pr := r
		pr.Bin = withoutDACOverride(t, r.Bin)
		s, err := pr.Backup(ctx, BackupOptions{Paths: []string{dir}, Tags: []string{"partial"}}, nil)
		if !errors.Is(err, ErrIncomplete) {
			t.Fatalf("err = %v, want ErrIncomplete", err)
		}
		if len(s.SnapshotID) != 64 || s.FilesNew != 1 {
			t.Errorf("summary = %+v, want the snapshot with the readable file", s)
		}
		if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "unreadable") || !strings.Contains(s.Warnings[0], "permission denied") {
			t.Errorf("warnings = %q", s.Warnings)
		}
		if !strings.Contains(err.Error(), "unreadable: permission denied") {
			t.Errorf("error text = %q", err)
		}
	})
}

// withoutDACOverride returns a restic that cannot read a mode-000 file:
// root reads anything through CAP_DAC_OVERRIDE, so as root the binary is
// wrapped in setpriv with those capabilities dropped.
func withoutDACOverride(t *testing.T, bin string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return bin
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed to make a file unreadable to root")
	}
	return fakeRestic(t, "exec "+setpriv+" --bounding-set=-dac_override,-dac_read_search '"+bin+"' \"$@\"")
}

func TestIntegrationLocks(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	r := testRepo(t, filepath.Join(t.TempDir(), "repo"))
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	writeTree(t, src)
	opts := BackupOptions{Paths: []string{src}}

	t.Run("live lock, no retry", func(t *testing.T) {
		release, _ := holdExclusiveLock(t, r)
		defer release()
		_, err := r.Backup(ctx, opts, nil)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("err = %v, want ErrLocked", err)
		}
		if !strings.Contains(err.Error(), "locked exclusively") {
			t.Errorf("error text = %q", err)
		}
	})

	t.Run("live lock, RetryLock waits for it", func(t *testing.T) {
		release, _ := holdExclusiveLock(t, r)
		go func() {
			time.Sleep(time.Second)
			release()
		}()
		waiting := r
		waiting.RetryLock = 3 * time.Second
		start := time.Now()
		if _, err := waiting.Backup(ctx, opts, nil); err != nil {
			t.Fatalf("err = %v, want the backup to get the lock", err)
		}
		if d := time.Since(start); d < time.Second {
			t.Errorf("backup took %v, before the lock was released", d)
		}
	})

	t.Run("stale lock of a killed restic, then Unlock", func(t *testing.T) {
		_, kill := holdExclusiveLock(t, r)
		kill()
		if _, err := r.Backup(ctx, opts, nil); !errors.Is(err, ErrLocked) {
			t.Fatalf("err = %v, want ErrLocked: a stale lock still blocks", err)
		}
		// EnsureInit reads the config without a lock, so it still works.
		if created, err := r.EnsureInit(ctx); err != nil || created {
			t.Errorf("EnsureInit with a stale lock = %v, %v", created, err)
		}
		if err := r.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if n := lockCount(t, r); n != 0 {
			t.Errorf("%d locks left after Unlock", n)
		}
		if _, err := r.Backup(ctx, opts, nil); err != nil {
			t.Fatalf("backup after Unlock: %v", err)
		}
	})
}

// holdExclusiveLock starts `restic key passwd`, which takes the exclusive
// lock and then waits for the new password on stdin. release closes stdin
// (restic fails on the empty password and removes its lock); kill sends
// SIGKILL, which leaves a stale lock behind. Both wait for the exit.
func holdExclusiveLock(t *testing.T, r Repo) (release, kill func()) {
	t.Helper()
	env, err := r.env()
	if err != nil {
		t.Fatal(err)
	}
	stdin, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(r.Bin, "key", "passwd")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited; w.Close() })

	deadline := time.Now().Add(15 * time.Second)
	for lockCount(t, r) == 0 {
		select {
		case <-exited:
			t.Fatal("restic key passwd exited before taking the lock")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("restic key passwd took no lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	release = func() { w.Close(); <-exited }
	kill = func() { _ = cmd.Process.Kill(); <-exited }
	return release, kill
}

// lockCount counts the lock files in a local repository. Only names that
// are ids count: the local backend writes a lock to a temporary file first
// and renames it, and restic ignores a half-written one.
func lockCount(t *testing.T, r Repo) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(r.Repository, "locks"))
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
