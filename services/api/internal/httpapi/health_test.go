package httpapi

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
)

func at(d time.Duration) *time.Time {
	t := testNow.Add(d)
	return &t
}

func TestSyncHealthAt(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		name       string
		st         domain.SyncState
		configured bool
		interval   time.Duration
		want       string
		wantAge    int64
	}{
		{"not configured wins", domain.SyncState{Status: domain.HealthFailed}, false, day, SyncNotConfigured, 0},
		{"fresh success", domain.SyncState{Status: domain.HealthSuccess, LastSuccessAt: at(-time.Hour)}, true, day, SyncOK, 0},
		{"exactly twice the interval is still ok", domain.SyncState{Status: domain.HealthSuccess, LastSuccessAt: at(-2 * day)}, true, day, SyncOK, 0},
		{"past twice the interval is stale", domain.SyncState{Status: domain.HealthSuccess, LastSuccessAt: at(-2*day - time.Second)}, true, day, SyncStale, 0},
		{"never synced is stale", domain.SyncState{Status: domain.HealthUnknown}, true, day, SyncStale, 0},
		{"last attempt failed", domain.SyncState{Status: domain.HealthFailed, LastSuccessAt: at(-time.Hour), Error: "refused"}, true, day, SyncFailed, 0},
		{"failed and stale reads failed", domain.SyncState{Status: domain.HealthFailed, LastSuccessAt: at(-10 * day)}, true, day, SyncFailed, 0},
		{"no interval means 24 h", domain.SyncState{Status: domain.HealthSuccess, LastSuccessAt: at(-47 * time.Hour)}, true, 0, SyncOK, 0},
		{"no interval means 24 h: stale", domain.SyncState{Status: domain.HealthSuccess, LastSuccessAt: at(-49 * time.Hour)}, true, 0, SyncStale, 0},
		{"short interval", domain.SyncState{Status: domain.HealthSuccess, LastSuccessAt: at(-3 * time.Hour)}, true, time.Hour, SyncStale, 0},
		{"pending age from the clock", domain.SyncState{Status: domain.HealthSuccess, LastSuccessAt: at(-time.Hour), SnapshotsPending: 2, OldestPendingAt: at(-90 * time.Minute)}, true, day, SyncOK, 5400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := SyncHealthAt(tc.st, tc.configured, tc.interval, testNow)
			if h.Status != tc.want {
				t.Errorf("status = %q, want %q", h.Status, tc.want)
			}
			if h.OldestPendingAgeSeconds != tc.wantAge || h.SnapshotsPending != tc.st.SnapshotsPending {
				t.Errorf("pending %d, age %d; want %d, %d", h.SnapshotsPending, h.OldestPendingAgeSeconds, tc.st.SnapshotsPending, tc.wantAge)
			}
			interval := tc.interval
			if interval == 0 {
				interval = DefaultSyncInterval
			}
			if h.IntervalSeconds != int64(interval.Seconds()) || h.LastSuccessAt != tc.st.LastSuccessAt || h.Error != tc.st.Error {
				t.Errorf("health = %+v", h)
			}
		})
	}
}

func TestSummarizeSites(t *testing.T) {
	sites := []domain.Site{{UUID: "u1", Name: "zeta"}, {UUID: "u2", Name: "alpha"}, {UUID: "u3", Name: "beta"}, {UUID: "u4", Name: "gamma"}, {UUID: "u5", Name: "delta"}}
	statuses := map[string]domain.SiteStatus{
		"u1":   {Health: domain.HealthState{Status: domain.HealthWarning, Message: "1 of 2 targets failed", UpdatedAt: testNow}},
		"u2":   {Health: domain.HealthState{Status: domain.HealthFailed, Message: "preflight failed"}},
		"u3":   {Health: domain.HealthState{Status: domain.HealthSuccess}},
		"u4":   {Health: domain.HealthState{Status: "something new"}},
		"gone": {Health: domain.HealthState{Status: domain.HealthFailed}}, // status of a deleted site
	}
	got := SummarizeSites(sites, statuses)
	wantCounts := map[domain.Health]int{domain.HealthSuccess: 1, domain.HealthWarning: 1, domain.HealthFailed: 1, domain.HealthUnknown: 2}
	if got.Total != 5 || !reflect.DeepEqual(got.ByStatus, wantCounts) {
		t.Errorf("total %d, by status %v; want 5, %v", got.Total, got.ByStatus, wantCounts)
	}
	if len(got.Failing) != 2 || got.Failing[0].SiteUUID != "u2" || got.Failing[0].Name != "alpha" ||
		got.Failing[1].SiteUUID != "u1" || got.Failing[1].Message != "1 of 2 targets failed" || got.Failing[1].UpdatedAt == nil ||
		got.Failing[0].UpdatedAt != nil {
		t.Errorf("failing = %+v", got.Failing)
	}
	empty := SummarizeSites(nil, nil)
	if empty.Total != 0 || empty.Failing == nil || len(empty.ByStatus) != 4 {
		t.Errorf("no sites = %+v", empty)
	}
}

func TestDiskHealthOf(t *testing.T) {
	const gib = int64(1) << 30
	tests := []struct {
		name    string
		check   DiskCheck
		space   DiskSpace
		err     error
		want    string
		wantPct float64
	}{
		{"plenty", DiskCheck{MinFreeBytes: gib, MinFreePercent: 5}, DiskSpace{FreeBytes: 50 * gib, TotalBytes: 100 * gib}, nil, DiskOK, 50},
		{"below bytes", DiskCheck{MinFreeBytes: 10 * gib}, DiskSpace{FreeBytes: 9 * gib, TotalBytes: 100 * gib}, nil, DiskLow, 9},
		{"below percent", DiskCheck{MinFreePercent: 5}, DiskSpace{FreeBytes: 4 * gib, TotalBytes: 100 * gib}, nil, DiskLow, 4},
		{"exactly the minimum is enough", DiskCheck{MinFreeBytes: 5 * gib, MinFreePercent: 5}, DiskSpace{FreeBytes: 5 * gib, TotalBytes: 100 * gib}, nil, DiskOK, 5},
		{"no limits", DiskCheck{}, DiskSpace{FreeBytes: 1, TotalBytes: 3 * gib}, nil, DiskOK, 0},
		{"cannot measure", DiskCheck{MinFreePercent: 5}, DiskSpace{}, errors.New("statfs: permission denied"), DiskError, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.check.Name, tc.check.Path = "staging_root", "/srv/backups"
			h := DiskHealthOf(tc.check, tc.space, tc.err)
			if h.Status != tc.want || h.FreePercent != tc.wantPct || h.Name != "staging_root" || h.Path != "/srv/backups" ||
				h.MinFreeBytes != tc.check.MinFreeBytes || h.MinFreePercent != tc.check.MinFreePercent {
				t.Errorf("DiskHealthOf = %+v, want status %s, %.1f%%", h, tc.want, tc.wantPct)
			}
			if tc.err != nil && h.Error == "" {
				t.Error("error not reported")
			}
		})
	}
}

func TestJudge(t *testing.T) {
	okSites := SitesHealth{ByStatus: map[domain.Health]int{domain.HealthSuccess: 2, domain.HealthUnknown: 1}}
	tests := []struct {
		name string
		r    HealthReport
		want []string // problem fragments, in order; none means ok
	}{
		{"all well", HealthReport{Services: []CheckResult{{Name: "store", OK: true}}, Sites: okSites, Sync: SyncHealth{Status: SyncOK},
			Disks: []DiskHealth{{Status: DiskOK}}}, nil},
		{"offsite not configured is fine", HealthReport{Sites: okSites, Sync: SyncHealth{Status: SyncNotConfigured}}, nil},
		{"everything wrong", HealthReport{
			Services: []CheckResult{{Name: "nats", OK: false, Error: "timeout"}},
			Sites:    SitesHealth{ByStatus: map[domain.Health]int{domain.HealthFailed: 2, domain.HealthWarning: 1}},
			Sync:     SyncHealth{Status: SyncFailed, Error: "offsite repository refused the credentials"},
			Disks:    []DiskHealth{{Name: "staging_root", Path: "/b", Status: DiskLow}, {Name: "restic_repo_path", Path: "/r", Status: DiskError, Error: "statfs: EIO"}},
		}, []string{"service check nats: timeout", "2 site(s) failed", "1 site(s) have warnings", "offsite sync failed: offsite repository refused", "staging_root /b", "restic_repo_path /r: free space unknown: statfs: EIO"}},
		{"never synced", HealthReport{Sites: okSites, Sync: SyncHealth{Status: SyncStale}}, []string{"offsite sync has never succeeded"}},
		{"stale", HealthReport{Sites: okSites, Sync: SyncHealth{Status: SyncStale, LastSuccessAt: at(-72 * time.Hour), IntervalSeconds: 86400}},
			[]string{"offsite sync is stale: last success 2025-12-30T03:04:05Z, more than twice the interval of 24h0m0s ago"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			Judge(&tc.r)
			want := HealthOK
			if len(tc.want) > 0 {
				want = HealthDegraded
			}
			if tc.r.Status != want || len(tc.r.Problems) != len(tc.want) {
				t.Fatalf("status %q, problems %q; want %q with %d problems", tc.r.Status, tc.r.Problems, want, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(tc.r.Problems[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, tc.r.Problems[i], w)
				}
			}
		})
	}
}

// A repository at a backend URL is reported remote, with a note and no
// figures or minimum, even when its space "measures" (it is never asked).
func TestDiskHealthOfRemote(t *testing.T) {
	d := DiskCheck{Name: "restic_repo_path", Path: "s3:http://127.0.0.1:9000/b/r", MinFreePercent: 5, Remote: true}
	h := DiskHealthOf(d, DiskSpace{FreeBytes: 1, TotalBytes: 100}, nil)
	if h.Status != DiskRemote || h.FreeBytes != 0 || h.TotalBytes != 0 || h.MinFreePercent != 0 || h.Note == "" || h.Path != d.Path {
		t.Errorf("DiskHealthOf(remote) = %+v", h)
	}
	r := HealthReport{Sites: SitesHealth{ByStatus: map[domain.Health]int{}}, Sync: SyncHealth{Status: SyncNotConfigured}, Disks: []DiskHealth{h}}
	Judge(&r)
	if r.Status != HealthOK || len(r.Problems) != 0 {
		t.Errorf("a remote repository made /health %s: %v", r.Status, r.Problems)
	}
}
