package syncer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/testkit"
)

var now = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)

func snap(id string, hoursAgo int, original string) restic.Snapshot {
	return restic.Snapshot{ID: id, ShortID: id[:min(8, len(id))], Time: now.Add(-time.Duration(hoursAgo) * time.Hour), Original: original}
}

func TestComputeLag(t *testing.T) {
	tests := []struct {
		name         string
		local, remot []restic.Snapshot
		wantPending  []string
		wantAgeHours int
	}{
		{"nothing anywhere", nil, nil, nil, 0},
		{"all copied", []restic.Snapshot{snap("aaaa", 5, ""), snap("bbbb", 2, "")},
			[]restic.Snapshot{snap("c1", 5, "aaaa"), snap("c2", 2, "bbbb")}, nil, 0},
		{"nothing copied yet, oldest first", []restic.Snapshot{snap("bbbb", 2, ""), snap("aaaa", 5, "")},
			nil, []string{"aaaa", "bbbb"}, 5},
		{"one new since the last copy", []restic.Snapshot{snap("aaaa", 5, ""), snap("bbbb", 1, "")},
			[]restic.Snapshot{snap("c1", 5, "aaaa")}, []string{"bbbb"}, 1},
		{"identical ids count as copied", []restic.Snapshot{snap("aaaa", 5, "")},
			[]restic.Snapshot{snap("aaaa", 5, "")}, nil, 0},
		{"a local copy counts by its original", []restic.Snapshot{snap("dddd", 3, "orig")},
			[]restic.Snapshot{snap("c9", 3, "orig")}, nil, 0},
		{"offsite-only snapshots (forgotten locally) do not matter", []restic.Snapshot{snap("aaaa", 1, "")},
			[]restic.Snapshot{snap("c0", 90, "gone"), snap("c1", 1, "aaaa")}, nil, 0},
		{"a snapshot from the future has age 0", []restic.Snapshot{snap("ffff", -1, "")}, nil, []string{"ffff"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lag := ComputeLag(tc.local, tc.remot, now)
			if !slices.Equal(lag.Pending, tc.wantPending) || lag.SnapshotsPending() != len(tc.wantPending) {
				t.Errorf("pending = %q, want %q", lag.Pending, tc.wantPending)
			}
			if lag.OldestPendingAge != time.Duration(tc.wantAgeHours)*time.Hour {
				t.Errorf("age = %v, want %dh", lag.OldestPendingAge, tc.wantAgeHours)
			}
			if (lag.OldestPendingAt == nil) != (len(tc.wantPending) == 0) {
				t.Errorf("oldest pending at = %v with %d pending", lag.OldestPendingAt, len(tc.wantPending))
			}
		})
	}
}

func TestCopiedBytes(t *testing.T) {
	local := []restic.Snapshot{
		{ID: "aaaa1111ffff", Summary: &restic.SnapshotSummary{DataAddedPacked: 100}},
		{ID: "bbbb2222ffff", Summary: &restic.SnapshotSummary{DataAddedPacked: 20}},
		{ID: "cccc3333ffff"}, // no summary (restic < 0.17)
	}
	copied := []restic.CopiedSnapshot{{Source: "aaaa1111", Target: "x"}, {Source: "cccc3333", Target: "y"}, {Source: "", Target: "z"}, {Source: "dddd4444", Target: "w"}}
	if got := copiedBytes(local, copied); got != 100 {
		t.Errorf("copiedBytes = %d, want 100", got)
	}
}

func TestRemoteRepo(t *testing.T) {
	local := restic.Repo{Bin: "/bin/restic", Repository: "/srv/repo", PasswordFile: "/etc/pw", CacheDir: "/c", RetryLock: time.Minute}
	tests := []struct {
		name, repo, id, key string
		wantEnv             []string
		wantErr             string
	}{
		{"b2", "b2:bucket:satoru", "0041", "K004secret", []string{"B2_ACCOUNT_ID=0041", "B2_ACCOUNT_KEY=K004secret"}, ""},
		{"b2 over s3", "s3:https://s3.us-west-004.backblazeb2.com/bucket/satoru", "0041", "K004secret",
			[]string{"AWS_ACCESS_KEY_ID=0041", "AWS_SECRET_ACCESS_KEY=K004secret", "AWS_SESSION_TOKEN="}, ""},
		{"not configured", "", "", "", nil, "restic_b2_repository is not set"},
		{"b2 without keys", "b2:bucket:satoru", "", "", nil, "restic_b2_account_id"},
		{"keys for a backend that takes none", "sftp:backup@h:/srv/offsite", "0041", "K004secret", nil, "sftp:backup@h:/srv/offsite with"},
		{"rest", "rest:https://h:8000/satoru/", "satoru", "K004secret",
			[]string{"RESTIC_REST_USERNAME=satoru", "RESTIC_REST_PASSWORD=K004secret"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := RemoteRepo(local, tc.repo, tc.id, tc.key)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "K004secret") || strings.Contains(err.Error(), ":pw@") {
					t.Errorf("error %q shows a secret", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Repository != tc.repo || !slices.Equal(r.Env, tc.wantEnv) || r.PasswordFile != local.PasswordFile ||
				r.Bin != local.Bin || r.CacheDir != local.CacheDir || r.RetryLock != local.RetryLock {
				t.Errorf("RemoteRepo = %+v", r)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	const repo = "s3:https://s3.example/bucket/repo"
	denied := &restic.Error{Op: "cat", Code: 1, Stderr: "Stat(<config/>) failed: Stat: Access Denied.\nFatal: unable to open config file: Stat: Access Denied."}
	tests := []struct {
		name, op string
		err      error
		want     string
	}{
		{"credentials refused", "open", denied, "offsite repository refused the credentials (check restic_b2_account_id and restic_b2_account_key): " + repo + ": restic cat: exit 1: Stat(<config/>) failed: Stat: Access Denied.; Fatal: unable to open config file"},
		{"credentials refused during copy", "copy", fmt.Errorf("x: %w", &restic.Error{Op: "copy", Code: 1, Stderr: "InvalidAccessKeyId"}), "offsite repository refused the credentials"},
		{"wrong password opening offsite", "open", &restic.Error{Op: "cat", Code: 12}, "the restic password does not open the offsite repository " + repo},
		{"wrong password copying", "copy", &restic.Error{Op: "copy", Code: 12}, "does not open the local or the offsite repository"},
		{"locked", "copy", &restic.Error{Op: "copy", Code: 11, Stderr: "locked by PID 1"}, "locked by another restic process"},
		{"limit", "copy", fmt.Errorf("restic copy: %w: Load(<lock/1>) returned error, retrying after 3s: dial tcp: connection refused", context.DeadlineExceeded),
			"did not finish within its limit of 1h0m0s (job_timeout_sync_seconds): restic kept retrying: Load(<lock/1>) returned error, retrying after 3s: dial tcp: connection refused"},
		{"limit without retries", "copy", fmt.Errorf("restic copy: %w", context.DeadlineExceeded), "did not finish within its limit of 1h0m0s (job_timeout_sync_seconds): restic copy: context deadline exceeded"},
		{"unreachable", "copy", fmt.Errorf("restic copy: %w: its backend kept failing for more than 2m0s; last: Stat(<config/>) returned error, retrying after 4s: connection refused", restic.ErrBackendUnreachable),
			"offsite repository " + repo + " is unreachable (restic_b2_retry_seconds): restic copy: repository backend unreachable: its backend kept failing for more than 2m0s; last: Stat(<config/>) returned error, retrying after 4s: connection refused"},
		{"no restic", "open", fmt.Errorf("cat: restic: %w", proc.ErrNotFound), "restic is not installed"},
		{"repository gone", "copy", &restic.Error{Op: "copy", Code: 10}, "a repository disappeared during the sync"},
		{"other open failure", "open", errors.New("dial tcp: connection refused"), "cannot open offsite repository " + repo + ": dial tcp"},
		{"other copy failure", "copy", &restic.Error{Op: "copy", Code: 1, Stderr: "Fatal: boom"}, "restic copy to offsite repository " + repo + " failed: restic copy: exit 1: Fatal: boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Describe(tc.op, tc.err, repo, time.Hour)
			if !strings.Contains(got, tc.want) {
				t.Errorf("Describe = %q\nwant it to contain %q", got, tc.want)
			}
			if strings.Contains(got, "\n") {
				t.Errorf("Describe = %q spans lines", got)
			}
		})
	}
}

func TestPick(t *testing.T) {
	configured := &Syncer{Remote: restic.Repo{Repository: "b2:bucket:repo"}}
	tests := []struct {
		name    string
		s       *Syncer
		job     domain.Job
		wantErr string
	}{
		{"restic_sync", configured, domain.Job{ID: "j", Type: domain.JobResticSync}, ""},
		{"other type", configured, domain.Job{ID: "j", Type: domain.JobBackup}, "not supported"},
		{"sync for a site", configured, domain.Job{ID: "j", Type: domain.JobResticSync, SiteUUID: "s1"}, "repository-level job"},
		{"no offsite repository", &Syncer{}, domain.Job{ID: "j", Type: domain.JobResticSync}, "offsite sync is not configured: set restic_b2_repository"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := tc.s.Pick(tc.job)
			if tc.wantErr == "" {
				if err != nil || w == nil {
					t.Errorf("Pick = %v, %v", w, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Pick err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestSyncStateReadFailureLeavesStateAlone(t *testing.T) {
	st := &memStore{getErr: errors.New("store down")}
	job := runWork(t, &Syncer{Store: st, Local: restic.Repo{Repository: "/x", Password: "p"}, Remote: restic.Repo{Repository: "/y", Password: "p"}})
	if job.Status != domain.StatusFailed || !strings.Contains(job.Error, "read sync state") || st.hasSt {
		t.Errorf("job %s %q; state written: %v", job.Status, job.Error, st.hasSt)
	}
}

func TestSyncWrongOffsitePassword(t *testing.T) {
	// Local repositories on both sides: the offsite one was made with
	// another password.
	ctx := t.Context()
	dir := t.TempDir()
	local := restic.Repo{Bin: testkit.ResticBin(t), Repository: dir + "/local", Password: testPassword, CacheDir: dir + "/c"}
	if err := local.Init(ctx); err != nil {
		t.Fatal(err)
	}
	remote := local
	remote.Repository, remote.Password = dir+"/offsite", "some-other-password-77"
	if err := remote.Init(ctx); err != nil {
		t.Fatal(err)
	}
	remote.Password = testPassword
	when := now.Add(-time.Hour)
	st := &memStore{st: domain.SyncState{ID: domain.OffsiteSyncStateID, Status: domain.HealthSuccess, LastSuccessAt: &when, SnapshotsPending: 3}, hasSt: true}
	job := runWork(t, &Syncer{Store: st, Local: local, Remote: remote, Now: func() time.Time { return now }})
	if job.Status != domain.StatusFailed || !strings.Contains(job.Error, "the restic password does not open the offsite repository") {
		t.Fatalf("job = %s %q", job.Status, job.Error)
	}
	got := st.st
	if got.Status != domain.HealthFailed || got.Error != job.Error || !got.LastSuccessAt.Equal(when) ||
		!got.LastAttemptAt.Equal(now) || got.SnapshotsPending != 3 || got.Repository != remote.Repository {
		t.Errorf("state = %+v", got)
	}
	if strings.Contains(job.Error, testPassword) {
		t.Errorf("error %q shows the password", job.Error)
	}
}
