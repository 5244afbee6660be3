package snapshotter

import (
	"errors"
	"reflect"
	"testing"

	"github.com/satoru/satoru/shared/disk"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/restic"
)

// TestVerifyCheckSpace: the restore's size counts against the headroom.
// The margins are a quarter of the disk, so other processes' use of it
// cannot change the answers.
func TestVerifyCheckSpace(t *testing.T) {
	root := t.TempDir()
	sp, err := disk.Stat(root)
	if err != nil {
		t.Fatal(err)
	}
	q := sp.FreeBytes / 4
	s := &Snapshotter{VerifyRoot: root, VerifyHeadroom: disk.Headroom{MinFreeBytes: sp.FreeBytes - q}}
	if err := s.checkSpace(0); err != nil {
		t.Errorf("nothing to restore refused: %v", err)
	}
	if err := s.checkSpace(2 * q); !errors.Is(err, disk.ErrLowDiskSpace) || !noVerdict(err) {
		t.Errorf("a restore of half the free space: %v, want ErrLowDiskSpace (no verdict)", err)
	}
}

func TestNoVerdict(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"locked", &restic.Error{Op: "restore", Code: 11}, true},
		{"wrong password", &restic.Error{Op: "ls", Code: 12}, true},
		{"sqlite3 missing", proc.ErrNotFound, true},
		{"backend unreachable", restic.ErrBackendUnreachable, true},
		{"restore failed", &restic.Error{Op: "restore", Code: 1, Stderr: "pack not found"}, false},
		{"plain error", errors.New("boom"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := noVerdict(tc.err); got != tc.want {
				t.Errorf("noVerdict(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestIntegrityArgs(t *testing.T) {
	got := IntegrityArgs("/data/verify/job-1-x/staging/s/h/app.db")
	want := []string{"-batch", "-bail", "-init", "/dev/null", "/data/verify/job-1-x/staging/s/h/app.db", "PRAGMA integrity_check;"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("argv = %q, want %q", got, want)
	}
}
