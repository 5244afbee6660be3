package pull

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/testkit"
)

// TestDirectoryMirror pulls an awkward tree twice over a real sshd: the
// first pull is a byte-identical 0700/0600 mirror with progress at a
// bounded rate; the second moves only the change, deletes what the site
// deleted and drops what is now excluded.
func TestDirectoryMirror(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	src := filepath.Join(h.Dir, "site www")
	writeFile(t, filepath.Join(src, "a dir", "nested", "deeper", "file.txt"), []byte("deep\n"), 0o644)
	writeFile(t, filepath.Join(src, "café ☕", "notes.md"), []byte("v1\n"), 0o664)
	writeFile(t, filepath.Join(src, "it's", `"double" and 'single'.txt`), []byte("quotes\n"), 0o640)
	writeFile(t, filepath.Join(src, "bin", "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	writeFile(t, filepath.Join(src, "app.log"), []byte("log line\n"), 0o644)
	writeFile(t, filepath.Join(src, "cache", "x.tmp"), []byte("cached\n"), 0o644)
	writeFile(t, filepath.Join(src, "big.bin"), randomBytes(t, 20<<20), 0o644)
	if err := os.MkdirAll(filepath.Join(src, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a dir/nested/deeper/file.txt", filepath.Join(src, "link to file")); err != nil {
		t.Fatal(err)
	}

	c := testConfig(t, h)
	// 8 MiB/s: the 20 MiB file takes 2.5 s, long enough to see the
	// progress rate. rsync itself updates progress2 about once a second.
	c.BandwidthLimitKbps = 8 << 10
	c.ProgressEvery = 300 * time.Millisecond
	target := dirTarget(src)

	var (
		mu    sync.Mutex
		times []time.Time
		ticks []Progress
	)
	res := Directory(context.Background(), c, testSite, target, func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		ticks = append(ticks, p)
	})
	t.Logf("first pull: %+v", res)
	if res.Status != domain.HealthSuccess || res.Error != "" {
		t.Fatalf("first pull: status %s, error %q", res.Status, res.Error)
	}
	want := StagingPath(c.StagingRoot, testSite, target.TargetHash)
	if res.StagingPath != want {
		t.Errorf("StagingPath = %q, want %q", res.StagingPath, want)
	}
	assertMirror(t, src, res.StagingPath, nil)
	files, size := treeStats(t, src, nil)
	if res.Files != files || res.Bytes != size {
		t.Errorf("Files, Bytes = %d, %d; the site has %d files, %d bytes", res.Files, res.Bytes, files, size)
	}
	if res.Transferred < 20<<20 {
		t.Errorf("Transferred = %d, want at least the 20 MiB file", res.Transferred)
	}
	for _, d := range []string{c.StagingRoot, filepath.Dir(res.StagingPath), res.StagingPath} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("staging folder %s: %v %v, want 0700", d, fi.Mode().Perm(), err)
		}
	}

	t.Run("progress at a bounded rate", func(t *testing.T) {
		mu.Lock()
		defer mu.Unlock()
		if len(ticks) < 2 {
			t.Fatalf("%d progress callbacks during a %v pull, want several", len(ticks), res.Duration)
		}
		for i, p := range ticks {
			if p.TargetHash != target.TargetHash || p.Percent < 0 || p.Percent > 100 || p.Rate == "" {
				t.Errorf("callback %d: %+v", i, p)
			}
			if i > 0 {
				if p.BytesDone < ticks[i-1].BytesDone {
					t.Errorf("callback %d went backwards: %d after %d", i, p.BytesDone, ticks[i-1].BytesDone)
				}
				// The throttle takes its time just before calling; allow
				// the scheduling noise between that and our time.Now().
				if gap := times[i].Sub(times[i-1]); gap < c.ProgressEvery-5*time.Millisecond {
					t.Errorf("callbacks %d and %d only %v apart, interval is %v", i-1, i, gap, c.ProgressEvery)
				}
			}
		}
		if max := int(res.Duration/c.ProgressEvery) + 1; len(ticks) > max {
			t.Errorf("%d callbacks in %v, at most %d possible", len(ticks), res.Duration, max)
		}
		t.Logf("%d callbacks, last %+v", len(ticks), ticks[len(ticks)-1])
	})

	t.Run("second pull moves only the change", func(t *testing.T) {
		writeFile(t, filepath.Join(src, "café ☕", "notes.md"), []byte("version two\n"), 0o664)
		if err := os.Remove(filepath.Join(src, "it's", `"double" and 'single'.txt`)); err != nil {
			t.Fatal(err)
		}
		excluded := func(rel string) bool {
			return strings.HasSuffix(rel, ".log") || rel == "cache"
		}
		c2 := c
		c2.BandwidthLimitKbps = 0
		res := Directory(context.Background(), c2, testSite, dirTarget(src, "*.log", "cache/"), nil)
		t.Logf("second pull: %+v", res)
		if res.Status != domain.HealthSuccess {
			t.Fatalf("second pull: status %s, error %q", res.Status, res.Error)
		}
		if res.Transferred >= 1<<20 {
			t.Errorf("Transferred = %d bytes for a one-line change, want well under 1 MiB", res.Transferred)
		}
		assertMirror(t, src, res.StagingPath, excluded)
		got, err := os.ReadFile(filepath.Join(res.StagingPath, "café ☕", "notes.md"))
		if err != nil || string(got) != "version two\n" {
			t.Errorf("changed file in staging: %q %v", got, err)
		}
		for _, gone := range []string{filepath.Join("it's", `"double" and 'single'.txt`), "app.log", "cache"} {
			if _, err := os.Lstat(filepath.Join(res.StagingPath, gone)); !os.IsNotExist(err) {
				t.Errorf("%q is still in staging (err %v)", gone, err)
			}
		}
		files, size := treeStats(t, src, excluded)
		if res.Files != files || res.Bytes != size {
			t.Errorf("Files, Bytes = %d, %d; want %d, %d", res.Files, res.Bytes, files, size)
		}
	})
}

func TestDirectoryMissingRemoteFolder(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	c := testConfig(t, h)
	missing := filepath.Join(h.Dir, "no such dir")
	res := Directory(context.Background(), c, testSite, dirTarget(missing), nil)
	t.Logf("result: %+v", res)
	if res.Status != domain.HealthFailed {
		t.Fatalf("status %s, want failed", res.Status)
	}
	for _, want := range []string{"rsync exit 23", missing, "No such file or directory"} {
		if !strings.Contains(res.Error, want) {
			t.Errorf("Error %q does not mention %q", res.Error, want)
		}
	}
}

// TestDirectorySSHFailures checks that ssh's own failures reach the
// Error in the operator's words.
func TestDirectorySSHFailures(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	src := filepath.Join(h.Dir, "www")
	writeFile(t, filepath.Join(src, "f"), []byte("x"), 0o644)

	t.Run("host key mismatch", func(t *testing.T) {
		c := testConfig(t, h)
		// Pin another key (the client's own) under the host's alias.
		pub, err := os.ReadFile(h.KeyPath + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(pub))
		kh := filepath.Join(t.TempDir(), "known_hosts")
		writeFile(t, kh, []byte(h.HostKeyAlias+" "+f[0]+" "+f[1]+"\n"), 0o600)
		c.SSH.KnownHostsFile = kh
		res := Directory(context.Background(), c, testSite, dirTarget(src), nil)
		// rsync exits 255 or 12 depending on which side notices first.
		if res.Status != domain.HealthFailed || !regexp.MustCompile(`^rsync exit (255|12): `).MatchString(res.Error) ||
			!strings.Contains(res.Error, "host key does not match the pinned key") {
			t.Fatalf("result %+v", res)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		c := testConfig(t, h)
		c.SSH.Port = testkit.FreePort(t)
		res := Directory(context.Background(), c, testSite, dirTarget(src), nil)
		// rsync exits 255 or 12 depending on which side notices first.
		if res.Status != domain.HealthFailed || !regexp.MustCompile(`^rsync exit (255|12): connection refused: `).MatchString(res.Error) {
			t.Fatalf("result %+v", res)
		}
	})
}

// TestDirectoryVanishedFile provokes a real rsync exit 24: a file listed
// at the start is deleted on the site while a big file ahead of it is
// still being sent.
func TestDirectoryVanishedFile(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	src := filepath.Join(h.Dir, "www")
	writeFile(t, filepath.Join(src, "a_big.bin"), randomBytes(t, 8<<20), 0o644)
	writeFile(t, filepath.Join(src, "z_session"), []byte("short-lived\n"), 0o644)
	c := testConfig(t, h)
	c.BandwidthLimitKbps = 4 << 10 // two seconds for the big file
	var once sync.Once
	res := Directory(context.Background(), c, testSite, dirTarget(src), func(Progress) {
		once.Do(func() {
			if err := os.Remove(filepath.Join(src, "z_session")); err != nil {
				t.Error(err)
			}
		})
	})
	t.Logf("result: %+v", res)
	if res.Status != domain.HealthSuccess || res.Error != "" {
		t.Fatalf("status %s, error %q; want success", res.Status, res.Error)
	}
	if !strings.Contains(res.Note, "some files vanished during transfer (rsync exit 24)") || !strings.Contains(res.Note, "z_session") {
		t.Errorf("Note = %q", res.Note)
	}
	if !sameFile(t, filepath.Join(src, "a_big.bin"), filepath.Join(res.StagingPath, "a_big.bin")) {
		t.Error("the big file was not pulled whole")
	}
}

// TestDirectoryPartialTransfer provokes a real rsync exit 23 as root: an
// immutable file in staging cannot be replaced, so that one file fails
// and the rest is pulled.
func TestDirectoryPartialTransfer(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	src := filepath.Join(h.Dir, "www")
	writeFile(t, filepath.Join(src, "sub", "stuck.txt"), []byte("v1\n"), 0o644)
	writeFile(t, filepath.Join(src, "other.txt"), []byte("v1\n"), 0o644)
	c := testConfig(t, h)
	target := dirTarget(src)
	if res := Directory(context.Background(), c, testSite, target, nil); res.Status != domain.HealthSuccess {
		t.Fatalf("first pull: %+v", res)
	}
	stuck := filepath.Join(StagingPath(c.StagingRoot, testSite, target.TargetHash), "sub", "stuck.txt")
	if out, err := exec.Command("chattr", "+i", stuck).CombinedOutput(); err != nil {
		t.Fatalf("chattr +i (needs a filesystem with immutable files, e.g. ext4): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", stuck).Run() })

	writeFile(t, filepath.Join(src, "sub", "stuck.txt"), []byte("version two\n"), 0o644)
	writeFile(t, filepath.Join(src, "other.txt"), []byte("version two\n"), 0o644)
	res := Directory(context.Background(), c, testSite, target, nil)
	t.Logf("result: %+v", res)
	if res.Status != domain.HealthWarning {
		t.Fatalf("status %s, want warning", res.Status)
	}
	if !slices.Equal(res.FailedPaths, []string{"sub/stuck.txt"}) {
		t.Errorf("FailedPaths = %q, want [sub/stuck.txt]", res.FailedPaths)
	}
	if !strings.HasPrefix(res.Error, "rsync exit 23: 1 path was not transferred") || !strings.Contains(res.Error, "Operation not permitted") {
		t.Errorf("Error = %q", res.Error)
	}
	if got, _ := os.ReadFile(filepath.Join(res.StagingPath, "other.txt")); string(got) != "version two\n" {
		t.Errorf("the other file was not pulled: %q", got)
	}
	if res.Files != 2 {
		t.Errorf("Files = %d, want 2", res.Files)
	}
	// The new version rsync could not rename over the immutable file
	// waited in a partial folder: removed, and said so.
	if _, err := os.Lstat(filepath.Join(res.StagingPath, "sub", remote.RsyncPartialDir)); !os.IsNotExist(err) {
		t.Errorf("partial folder left in staging (%v)", err)
	}
	if len(res.Cleanups) != 1 || res.Cleanups[0].Failed || !strings.Contains(res.Cleanups[0].Message, "holding 1 received file") {
		t.Errorf("Cleanups = %+v", res.Cleanups)
	}
	if got, _ := os.ReadFile(stuck); string(got) != "v1\n" {
		t.Errorf("stuck file %q, want the previous copy", got)
	}
}

func TestDirectoryRejects(t *testing.T) {
	c := Config{StagingRoot: t.TempDir(), SSH: remote.SSHConfig{Host: "edge", User: "u", KnownHostsFile: "/kh"}}
	tests := []struct {
		name, site string
		target     domain.Target
		want       string
	}{
		{"wrong mode", testSite, sqliteTarget("/x.db"), `rsync: target mode is "sqlite_dump"`},
		{"site escapes staging", "..", dirTarget("/srv"), `staging: site uuid ".."`},
		{"hash escapes staging", testSite, domain.Target{Mode: domain.ModeDirectory, Path: "/srv", TargetHash: "a/b"}, `staging: target hash "a/b"`},
		{"relative path", testSite, dirTarget("srv"), "rsync: rsync remote dir: invalid remote path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Directory(context.Background(), c, tc.site, tc.target, nil)
			if res.Status != domain.HealthFailed || !strings.HasPrefix(res.Error, tc.want) {
				t.Fatalf("result %+v, want failed with %q", res, tc.want)
			}
		})
	}
}
