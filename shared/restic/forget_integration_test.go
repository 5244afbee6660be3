package restic

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestIntegrationForget runs forget --prune with the real restic on a
// repository shared by two sites, scoped to one of them the way the
// snapshotter scopes it: --host and --tag of the site, grouped by host.
func TestIntegrationForget(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	r := testRepo(t, filepath.Join(t.TempDir(), "repo"))
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	const fileSize = 200_000
	staging := t.TempDir()
	ids := map[string][]string{} // site -> snapshot ids, oldest first
	first := map[string][]byte{} // site -> content of its first snapshot
	for _, site := range []string{"a", "b"} {
		dir := filepath.Join(staging, site)
		for i := range 4 {
			// Each snapshot holds only new data, so forgetting one frees
			// its file.
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			data := make([]byte, fileSize)
			rand.Read(data)
			if i == 0 {
				first[site] = data
			}
			if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := r.Backup(ctx, BackupOptions{Paths: []string{dir}, Host: "satoru-" + site,
				Tags: []string{"site:" + site, "job:" + site + string(rune('0'+i))}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ids[site] = append(ids[site], s.SnapshotID)
		}
	}
	siteA := ForgetOptions{Tags: []string{"site:a"}, Host: "satoru-a", GroupBy: "host", Policy: []string{"--keep-last", "2"}, Prune: true}

	sizeBefore := dirSize(t, r.Repository)
	start := time.Now()
	res, err := r.Forget(ctx, siteA)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("forget --prune took %v: %+v", time.Since(start), res)
	freedOnDisk := sizeBefore - dirSize(t, r.Repository)

	if res.Groups != 1 || res.Kept != 2 || res.Removed != 2 {
		t.Fatalf("result = %+v, want 1 group, 2 kept, 2 removed", res)
	}
	if !sameSet(res.RemovedIDs, ids["a"][:2]) || !sameSet(res.KeptIDs, ids["a"][2:]) {
		t.Errorf("removed %q kept %q; want the two oldest removed", res.RemovedIDs, res.KeptIDs)
	}
	// Two files of incompressible data plus their trees; restic rounds to
	// four digits.
	if !res.Pruned || res.BlobsFreed < 2 || res.BytesFreed < 2*fileSize || res.BytesFreed > 2*fileSize+fileSize/5 {
		t.Errorf("prune stats = %+v, want about %d bytes freed", res, 2*fileSize)
	}
	if res.BytesRemaining < 6*fileSize {
		t.Errorf("bytes remaining = %d, want at least %d", res.BytesRemaining, 6*fileSize)
	}
	// What prune reports matches what left the disk, up to pack headers
	// and index files.
	if d := float64(freedOnDisk-res.BytesFreed) / float64(res.BytesFreed); d < -0.05 || d > 0.05 {
		t.Errorf("prune reported %d bytes freed, the repository shrank by %d", res.BytesFreed, freedOnDisk)
	}

	left := func(site string) []string {
		t.Helper()
		snaps, err := r.Snapshots(ctx, "site:"+site)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range snaps {
			out = append(out, s.ID)
		}
		return out
	}
	if got := left("a"); !slices.Equal(got, ids["a"][2:]) {
		t.Errorf("site a has %q, want %q", got, ids["a"][2:])
	}
	if got := left("b"); !slices.Equal(got, ids["b"]) {
		t.Errorf("site b has %q, want all four %q", got, ids["b"])
	}
	// Site b's oldest snapshot still restores: prune kept its data.
	target := t.TempDir()
	if err := r.Restore(ctx, ids["b"][0], target); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(target, staging, "b", "f")); !bytes.Equal(got, first["b"]) {
		t.Error("site b's oldest snapshot does not restore its data")
	}

	t.Run("nothing more to remove: no prune", func(t *testing.T) {
		res, err := r.Forget(ctx, siteA)
		if err != nil {
			t.Fatal(err)
		}
		if res.Kept != 2 || res.Removed != 0 || res.Pruned || res.BytesFreed != 0 {
			t.Errorf("result = %+v", res)
		}
	})

	t.Run("no snapshot matches", func(t *testing.T) {
		o := siteA
		o.Tags, o.Host = []string{"site:none"}, "satoru-none"
		res, err := r.Forget(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if res.Groups != 0 || res.Kept != 0 || res.Removed != 0 {
			t.Errorf("result = %+v", res)
		}
	})

	t.Run("stale lock: ErrLocked after the retry window, UnlockStale, then it runs", func(t *testing.T) {
		_, kill := holdExclusiveLock(t, r)
		kill()
		waiting := r
		waiting.RetryLock = time.Second
		if _, err := waiting.Forget(ctx, siteA); !errors.Is(err, ErrLocked) {
			t.Fatalf("err = %v, want ErrLocked", err)
		}
		n, err := r.UnlockStale(ctx)
		if err != nil || n != 1 {
			t.Fatalf("UnlockStale = %d, %v; want 1", n, err)
		}
		if _, err := waiting.Forget(ctx, siteA); err != nil {
			t.Fatalf("forget after UnlockStale: %v", err)
		}
	})

	t.Run("live lock: UnlockStale leaves it", func(t *testing.T) {
		release, _ := holdExclusiveLock(t, r)
		defer release()
		n, err := r.UnlockStale(ctx)
		if err != nil || n != 0 {
			t.Fatalf("UnlockStale = %d, %v; want 0", n, err)
		}
		if c := lockCount(t, r); c != 1 {
			t.Errorf("%d locks, want the live one", c)
		}
	})
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
