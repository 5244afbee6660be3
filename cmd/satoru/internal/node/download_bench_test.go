package node

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/restic"
)

// BenchmarkDownload1GB streams a 1 GiB file out of a snapshot through
// GET /api/v1/snapshots/{id}/download and samples the process heap while
// it flows: the download must stream, so the heap's growth stays a tiny
// fraction of the file. Run with -benchtime 1x (make bench does).
func BenchmarkDownload1GB(b *testing.B) {
	const size = 1 << 30
	n, _ := startNode(b, loadConfig(b, testEnv(b.TempDir())), All)
	c := newClient(b, n)
	repo, err := ResticRepo(n.Config)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := repo.EnsureInit(ctx); err != nil {
		b.Fatal(err)
	}
	// A sparse file of zeros: restic stores it in a few KiB, but dump
	// still streams every byte, which is what is measured.
	site := "bench-download"
	dir := filepath.Join(n.Config.StagingRoot, site)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	big := filepath.Join(dir, "big.bin")
	f, err := os.Create(big)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	sum, err := repo.Backup(ctx, restic.BackupOptions{Paths: []string{dir}, Host: domain.ResticHost(site), Tags: []string{domain.SiteTag(site)}}, nil)
	if err != nil {
		b.Fatal(err)
	}

	for i := 0; i < b.N; i++ {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapAlloc
		var peak atomic.Uint64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					var m runtime.MemStats
					runtime.ReadMemStats(&m)
					if m.HeapAlloc > peak.Load() {
						peak.Store(m.HeapAlloc)
					}
				}
			}
		}()
		start := time.Now()
		req, _ := http.NewRequest("GET", c.base+"/api/v1/snapshots/"+sum.SnapshotID+"/download?path="+big, nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		got, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		close(stop)
		wg.Wait()
		if err != nil || resp.StatusCode != http.StatusOK || got != size {
			b.Fatalf("download: status %d, %d bytes, err %v", resp.StatusCode, got, err)
		}
		growth := float64(0)
		if p := peak.Load(); p > base {
			growth = float64(p - base)
		}
		b.ReportMetric(growth/(1<<20), "heap_growth_MiB")
		b.ReportMetric(growth/size, "heap_growth_per_byte")
		b.ReportMetric(float64(size)/(1<<20)/took.Seconds(), "MiB/s")
		b.Logf("1 GiB in %s; heap grew %.1f MiB at most (%.5f of the file)", took, growth/(1<<20), growth/size)
	}
}
