package restic

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBackupArgs(t *testing.T) {
	tests := []struct {
		name string
		o    BackupOptions
		want []string
	}{
		{"paths only", BackupOptions{Paths: []string{"data"}},
			[]string{"backup", "--json", "--", "data"}},
		{"host tags excludes", BackupOptions{Paths: []string{"a", "/abs/b"}, Host: "edge-1", Tags: []string{"site:x", "target:y"}, Excludes: []string{"*.tmp", "/cache"}},
			[]string{"backup", "--json", "--host", "edge-1", "--tag", "site:x", "--tag", "target:y", "--exclude", "*.tmp", "--exclude", "/cache", "--", "a", "/abs/b"}},
		{"empty tags and excludes dropped", BackupOptions{Paths: []string{"."}, Tags: []string{"", "t"}, Excludes: []string{""}},
			[]string{"backup", "--json", "--tag", "t", "--", "."}},
		{"path that looks like a flag stays a path", BackupOptions{Paths: []string{"--dry-run"}},
			[]string{"backup", "--json", "--", "--dry-run"}},
		{"Dir is not an argument", BackupOptions{Paths: []string{"x"}, Dir: "/staging"},
			[]string{"backup", "--json", "--", "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := BackupArgs(tc.o); !slices.Equal(got, tc.want) {
				t.Errorf("BackupArgs = %q\nwant         %q", got, tc.want)
			}
		})
	}
}

func TestSnapshotsAndRestoreArgs(t *testing.T) {
	tests := []struct {
		name      string
		got, want []string
	}{
		{"snapshots, no tags", SnapshotsArgs(), []string{"snapshots", "--json"}},
		{"snapshots, all of two tags", SnapshotsArgs("a", "", "b"), []string{"snapshots", "--json", "--tag", "a,b"}},
		{"restore all", RestoreArgs("abc123", "/t"), []string{"restore", "--json", "--target", "/t", "--", "abc123"}},
		{"restore includes", RestoreArgs("latest", "/t", "/x", "-y"), []string{"restore", "--json", "--target", "/t", "--include", "/x", "--include", "-y", "--", "latest"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !slices.Equal(tc.got, tc.want) {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	sentinels := []error{ErrIncomplete, ErrNoRepository, ErrLocked, ErrWrongPassword, ErrCanceled}
	tests := []struct {
		code int
		want error
	}{
		{0, nil}, {1, nil}, {2, nil}, {3, ErrIncomplete}, {10, ErrNoRepository},
		{11, ErrLocked}, {12, ErrWrongPassword}, {130, ErrCanceled}, {-1, nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint("exit ", tc.code), func(t *testing.T) {
			if got := classify(tc.code); got != tc.want {
				t.Errorf("classify(%d) = %v, want %v", tc.code, got, tc.want)
			}
			err := fmt.Errorf("wrapped: %w", &Error{Op: "backup", Code: tc.code})
			for _, s := range sentinels {
				if errors.Is(err, s) != (s == tc.want) {
					t.Errorf("errors.Is(exit %d, %v) = %v", tc.code, s, !(s == tc.want))
				}
			}
			if errors.Is(err, ErrNoSummary) {
				t.Errorf("exit %d matches ErrNoSummary", tc.code)
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{Op: "backup", Code: 11, Stderr: "locked by PID 7"}, "restic backup: exit 11 (repository is locked): locked by PID 7"},
		{Error{Op: "init", Code: 1}, "restic init: exit 1"},
		{Error{Op: "backup", Code: -1}, "restic backup: killed by a signal"},
	}
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestEnv(t *testing.T) {
	tests := []struct {
		name    string
		r       Repo
		want    []string // entries that must be present, in this order
		wantErr string
	}{
		{"password", Repo{Repository: "/r", Password: "pw", CacheDir: "/c", Env: []string{"AWS_ACCESS_KEY_ID=k"}},
			[]string{"RESTIC_REPOSITORY=/r", "RESTIC_PASSWORD=pw", "RESTIC_PASSWORD_FILE=", "RESTIC_CACHE_DIR=/c", "AWS_ACCESS_KEY_ID=k"}, ""},
		{"password file clears an inherited password", Repo{Repository: "/r", PasswordFile: "/pw"},
			[]string{"RESTIC_PASSWORD_FILE=/pw", "RESTIC_PASSWORD="}, ""},
		{"no repository", Repo{Password: "pw"}, nil, "no repository"},
		{"no password", Repo{Repository: "/r"}, nil, "no password"},
		{"both passwords", Repo{Repository: "/r", Password: "a", PasswordFile: "/b"}, nil, "not both"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := tc.r.env()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			last := -1
			for _, w := range tc.want {
				i := slices.Index(env, w)
				if i <= last {
					t.Errorf("env %q: %q missing or out of order", env, w)
				}
				last = i
			}
			for _, must := range []string{"RESTIC_PASSWORD_COMMAND=", "RESTIC_REPOSITORY_FILE=", "RESTIC_PROGRESS_FPS=" + progressFPS} {
				if !slices.Contains(env, must) {
					t.Errorf("env lacks %q", must)
				}
			}
		})
	}
}

func TestRetryLockFlag(t *testing.T) {
	// The flag is global, so it goes before the subcommand; commands that
	// take no lock do not get it.
	bin := fakeRestic(t, `printf '%s\n' "$@" > "$FAKE_OUT"`)
	tests := []struct {
		name string
		run  func(r Repo) error
		want string
	}{
		{"backup", func(r Repo) error {
			_, err := r.Backup(t.Context(), BackupOptions{Paths: []string{"x"}}, nil)
			return err
		},
			"--retry-lock\n2m0s\nbackup\n"},
		{"unlock", func(r Repo) error { return r.Unlock(t.Context()) }, "unlock\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir() + "/argv"
			r := Repo{Bin: bin, Repository: "/r", Password: "pw", RetryLock: 2 * time.Minute, Env: []string{"FAKE_OUT=" + out}}
			_ = tc.run(r)
			if got := readFile(t, out); !strings.HasPrefix(got, tc.want) {
				t.Errorf("argv = %q, want prefix %q", got, tc.want)
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	tests := []struct {
		out, want string
		ok        bool
	}{
		{"restic 0.18.1 compiled with go1.26.8 on linux/amd64\n", "0.18.1", true},
		{"restic 0.14.0 (v0.14.0-0-g...) compiled with go1.19 on linux/amd64", "0.14.0", true},
		{"command not found", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		got, err := parseVersion(tc.out)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseVersion(%q) = %q, %v", tc.out, got, err)
		}
	}
}
