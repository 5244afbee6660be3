package pull

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/testkit"
)

const testSite = "0b6c3f0e-5d1e-4c51-9d3f-3f2b1d9a7e11"

// sshConfig reaches the edge host the way the puller reaches a site:
// pinned key under an alias, in the host's own known_hosts file.
func sshConfig(h *testkit.EdgeHost) remote.SSHConfig {
	return remote.SSHConfig{
		Host:           h.Host,
		Port:           h.Port,
		User:           h.User,
		KeyPath:        h.KeyPath,
		KnownHostsFile: h.KnownHostsFile,
		HostKeyAlias:   h.HostKeyAlias,
		ConnectTimeout: 5 * time.Second,
	}
}

// testConfig pulls from h into a staging root that does not exist yet
// (Directory and SQLite must create it).
func testConfig(t *testing.T, h *testkit.EdgeHost) Config {
	t.Helper()
	tmp := filepath.Join(h.Dir, "remote-tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	return Config{
		SSH:           sshConfig(h),
		StagingRoot:   filepath.Join(t.TempDir(), "backups"),
		RemoteTmpDir:  tmp,
		IOTimeout:     30 * time.Second,
		TargetTimeout: 2 * time.Minute,
		ProgressEvery: 100 * time.Millisecond,
	}
}

func dirTarget(path string, excludes ...string) domain.Target {
	return domain.Target{SiteUUID: testSite, Mode: domain.ModeDirectory, Path: path, Excludes: excludes,
		TargetHash: domain.TargetHash(domain.ModeDirectory, path)}
}

func sqliteTarget(path string) domain.Target {
	return domain.Target{SiteUUID: testSite, Mode: domain.ModeSQLiteDump, Path: path,
		TargetHash: domain.TargetHash(domain.ModeSQLiteDump, path)}
}

func writeFile(t *testing.T, path string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// treeStats counts what rsync's --stats reports for a tree: regular files,
// and the total size, in which rsync counts a symlink as its target's
// length.
func treeStats(t *testing.T, root string, skip func(rel string) bool) (files, size int64) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel != "." && skip != nil && skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			files++
			size += fi.Size()
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			size += int64(len(target))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files, size
}

// assertMirror checks that dst is a byte-identical mirror of src, minus
// what skip excludes: same entries, same types, same content and symlink
// targets, nothing extra; and that every folder in dst is 0700 and every
// file 0600.
func assertMirror(t *testing.T, src, dst string, skip func(rel string) bool) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel != "." && skip != nil && skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		seen[rel] = true
		q := filepath.Join(dst, rel)
		fi, err := os.Lstat(q)
		if err != nil {
			t.Errorf("staging lacks %q: %v", rel, err)
			return nil
		}
		if fi.Mode().Type() != d.Type() {
			t.Errorf("%q: type %v in staging, %v on the site", rel, fi.Mode().Type(), d.Type())
			return nil
		}
		switch {
		case d.IsDir():
			if fi.Mode().Perm() != 0o700 {
				t.Errorf("staging folder %q has mode %v, want 0700", rel, fi.Mode().Perm())
			}
		case d.Type().IsRegular():
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("staging file %q has mode %v, want 0600", rel, fi.Mode().Perm())
			}
			if fileSum(t, p) != fileSum(t, q) {
				t.Errorf("staging file %q differs from the site's", rel)
			}
		case d.Type()&fs.ModeSymlink != 0:
			want, _ := os.Readlink(p)
			got, _ := os.Readlink(q)
			if got != want {
				t.Errorf("symlink %q points to %q in staging, %q on the site", rel, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		if !seen[rel] {
			t.Errorf("staging has %q, which the site does not (or which is excluded)", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// assertNoDumpLeftovers waits (the remote shell removes its temp file
// when its gzip notices the closed connection) for the remote temp folder
// to hold no .satoru-dump.* file.
func assertNoDumpLeftovers(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var left []string
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".satoru-dump.") {
				left = append(left, e.Name())
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote temp folder %s still holds %v", dir, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// assertOnly checks that dir holds exactly the names given.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, "\x00") != strings.Join(names, "\x00") {
		t.Fatalf("%s holds %q, want %q", dir, got, names)
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}
