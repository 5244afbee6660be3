package faults

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// resticBin is the checkout's bin/restic (`make test` installs 0.18.1
// there), else restic on PATH: the same one satoru finds.
func resticBin(t testing.TB) string {
	t.Helper()
	if p := filepath.Join(repoRoot, "bin", "restic"); fileExists(p) {
		return p
	}
	p, err := exec.LookPath("restic")
	if err != nil {
		t.Fatalf("restic not found in %s/bin or on PATH (make tools-test installs it)", repoRoot)
	}
	return p
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// restic runs restic on a repository with the suite's password and
// returns its combined output.
func restic(t testing.TB, repo string, extraEnv []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, resticBin(t), args...)
	cmd.Env = append(os.Environ(), "RESTIC_REPOSITORY="+repo, "RESTIC_PASSWORD="+resticPassword, "RESTIC_REPOSITORY_FILE=", "RESTIC_PASSWORD_FILE=")
	cmd.Env = append(cmd.Env, extraEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), fmt.Errorf("restic %s: exit %d", args[0], ee.ExitCode())
		}
		return string(out), fmt.Errorf("restic %s: %w", args[0], err)
	}
	return string(out), nil
}

// resticCheck fails the test unless `restic check` passes on repo. It
// takes the repository's exclusive lock and waits for it at most 30 s, so
// a lock a crashed restic left behind fails it (Satoru must clear those).
func resticCheck(t testing.TB, repo string, extraEnv ...string) {
	t.Helper()
	out, err := restic(t, repo, extraEnv, "check", "--no-cache", "--retry-lock", "30s")
	if err != nil {
		locks, _ := restic(t, repo, extraEnv, "list", "locks", "--no-lock")
		t.Errorf("restic check of %s failed: %v\n%s\nlocks in the repository: %q", repo, err, trimOut(out), strings.TrimSpace(locks))
		return
	}
	t.Logf("restic check of %s: passed", repo)
}

// snapshotCount is how many snapshots restic lists in repo.
func snapshotCount(t testing.TB, repo string, extraEnv ...string) int {
	t.Helper()
	out, err := restic(t, repo, extraEnv, "list", "snapshots", "--no-lock")
	if err != nil {
		t.Fatalf("restic list snapshots of %s: %v\n%s", repo, err, trimOut(out))
	}
	return len(strings.Fields(out))
}

// trimOut keeps the last 2 KiB of a tool's output.
func trimOut(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2048 {
		s = "..." + s[len(s)-2048:]
	}
	return s
}

// dirSize is the bytes of regular files under dir.
func dirSize(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("size of %s: %v", dir, err)
	}
	return n
}

// countFiles is how many entries a folder holds (0 when it is missing).
func countFiles(dir string) int {
	ents, _ := os.ReadDir(dir)
	return len(ents)
}

// writeRandom writes size bytes of incompressible data to path (restic
// and rsync can neither compress nor deduplicate it).
func writeRandom(t testing.TB, path string, size int64, seed uint64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	r := rand.NewChaCha8(key)
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		_, _ = r.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		left -= n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// seedTree writes files files of size bytes each under dir.
func seedTree(t testing.TB, dir string, files int, size int64, seed uint64) {
	t.Helper()
	for i := 0; i < files; i++ {
		writeRandom(t, filepath.Join(dir, fmt.Sprintf("d%02d", i%8), fmt.Sprintf("f%03d.bin", i)), size, seed*1000+uint64(i))
	}
}

// mountTmpfs mounts a tmpfs of sizeMB at dir (created) and unmounts it
// when the test ends. CI runs as root.
func mountTmpfs(t testing.TB, dir string, sizeMB int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0700", sizeMB), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a %d MiB tmpfs at %s (the suite runs as root): %v: %s", sizeMB, dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// resizeTmpfs grows (or shrinks) a mounted tmpfs in place.
func resizeTmpfs(t testing.TB, dir string, sizeMB int) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", fmt.Sprintf("remount,size=%dm", sizeMB), dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s with %d MiB: %v: %s", dir, sizeMB, err, out)
	}
}
