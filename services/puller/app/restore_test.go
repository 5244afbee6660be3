package app

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/satoru/satoru/shared/domain"
)

func TestLocalRestoreArgs(t *testing.T) {
	tests := []struct {
		name    string
		sources []string
		dest    string
		dry     bool
		want    []string
	}{
		{"entries keep their names under dest", []string{"/s/.restore/j/a/t1/", "/s/.restore/j/a/db.sqlite"}, "/srv/r", false,
			[]string{"-rlt", "--chmod=D0700,F0600", "--itemize-changes", "--", "/s/.restore/j/a/t1", "/s/.restore/j/a/db.sqlite", "/srv/r/"}},
		{"dry run", []string{"/x"}, "/srv/r/", true,
			[]string{"-rlt", "--chmod=D0700,F0600", "--itemize-changes", "--dry-run", "--", "/x", "/srv/r/"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := LocalRestoreArgs(tc.sources, tc.dest, tc.dry); !slices.Equal(got, tc.want) {
				t.Errorf("args = %q\nwant   %q", got, tc.want)
			}
		})
	}
}

func TestCheckLocalDest(t *testing.T) {
	base := t.TempDir()
	full := filepath.Join(base, "full")
	if err := os.MkdirAll(full, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, ".x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(base, "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		dest      string
		overwrite bool
		wantErr   string
	}{
		{"missing is fine", filepath.Join(base, "new"), false, ""},
		{"empty is fine", filepath.Join(base, "empty"), false, ""},
		{"non-empty is refused", full, false, "is not empty"},
		{"non-empty with overwrite", full, true, ""},
		{"a file is refused", file, true, "not a folder"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkLocalDest(tc.dest, tc.overwrite)
			if (err == nil) != (tc.wantErr == "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestCheckRestoreRequest(t *testing.T) {
	ok := domain.RestoreRequest{SnapshotID: "abcdef0123", Paths: []string{"/s/x"}, Destination: domain.RestoreDestination{LocalPath: "/r"}}
	if err := checkRestoreRequest(ok); err != nil {
		t.Fatal(err)
	}
	bad := map[string]func(*domain.RestoreRequest){
		"id not hex":  func(r *domain.RestoreRequest) { r.SnapshotID = "latest" },
		"no paths":    func(r *domain.RestoreRequest) { r.Paths = nil },
		"root path":   func(r *domain.RestoreRequest) { r.Paths = []string{"/"} },
		"newline":     func(r *domain.RestoreRequest) { r.Paths = []string{"/a\nb"} },
		"both kinds":  func(r *domain.RestoreRequest) { r.Destination.ToSite, r.Destination.Path = true, "/x" },
		"none":        func(r *domain.RestoreRequest) { r.Destination = domain.RestoreDestination{} },
		"relative":    func(r *domain.RestoreRequest) { r.Destination.LocalPath = "r" },
		"site no abs": func(r *domain.RestoreRequest) { r.Destination = domain.RestoreDestination{ToSite: true, Path: "x"} },
	}
	for name, mut := range bad {
		t.Run(name, func(t *testing.T) {
			r := ok
			r.Paths = slices.Clone(ok.Paths)
			mut(&r)
			if err := checkRestoreRequest(r); err == nil {
				t.Errorf("accepted %+v", r)
			}
		})
	}
}

func TestItemListKeepsTheHeadAndCountsAll(t *testing.T) {
	l := &itemList{max: 3}
	var in strings.Builder
	for i := range 10 {
		fmt.Fprintf(&in, ">f+++++++++ file-%d\n", i)
	}
	b := []byte(in.String())
	// Written in awkward pieces, as a pipe delivers it.
	for len(b) > 0 {
		n := min(7, len(b))
		_, _ = l.Write(b[:n])
		b = b[n:]
	}
	if l.total != 10 || len(l.lines) != 3 || l.lines[2] != ">f+++++++++ file-2" {
		t.Errorf("total %d, lines %q", l.total, l.lines)
	}
}
