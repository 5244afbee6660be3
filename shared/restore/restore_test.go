package restore

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/satoru/satoru/shared/domain"
)

const fullID = "aaaaaaaa11111111111111111111111111111111111111111111111111111111"

func TestValidate(t *testing.T) {
	ok := domain.RestoreRequest{SnapshotID: "abcdef0123", Paths: []string{"/s/x", "/s/y"}, Destination: domain.RestoreDestination{LocalPath: "/r"}}
	if err := Validate(ok); err != nil {
		t.Fatal(err)
	}
	site := ok
	site.Destination = domain.RestoreDestination{ToSite: true, Path: "/on/site"}
	if err := Validate(site); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		mut   func(*domain.RestoreRequest)
		field string
	}{
		{"id missing", func(r *domain.RestoreRequest) { r.SnapshotID = "" }, "snapshot_id: required"},
		{"id not hex", func(r *domain.RestoreRequest) { r.SnapshotID = "latest" }, "snapshot_id:"},
		{"id too short", func(r *domain.RestoreRequest) { r.SnapshotID = "abc" }, "snapshot_id:"},
		{"no paths", func(r *domain.RestoreRequest) { r.Paths = nil }, "paths: required"},
		{"root path", func(r *domain.RestoreRequest) { r.Paths = []string{"/"} }, "paths[0]:"},
		{"relative path", func(r *domain.RestoreRequest) { r.Paths = []string{"/a", "b"} }, "paths[1]:"},
		{"newline", func(r *domain.RestoreRequest) { r.Paths = []string{"/a\nb"} }, "paths[0]:"},
		{"unclean path", func(r *domain.RestoreRequest) { r.Paths = []string{"/a/../b"} }, "paths[0]: must be a clean path"},
		{"same base name", func(r *domain.RestoreRequest) { r.Paths = []string{"/a/x", "/b/x"} }, "paths[1]: has the same name"},
		{"too many", func(r *domain.RestoreRequest) { r.Paths = make([]string, MaxPaths+1) }, "paths: at most"},
		{"both kinds", func(r *domain.RestoreRequest) { r.Destination.ToSite, r.Destination.Path = true, "/x" }, "destination: give either"},
		{"none", func(r *domain.RestoreRequest) { r.Destination = domain.RestoreDestination{} }, "destination: required"},
		{"relative local", func(r *domain.RestoreRequest) { r.Destination.LocalPath = "r" }, "destination.local_path:"},
		{"unclean local", func(r *domain.RestoreRequest) { r.Destination.LocalPath = "/r/../etc" }, "destination.local_path: must be a clean path"},
		{"root local", func(r *domain.RestoreRequest) { r.Destination.LocalPath = "/" }, "destination.local_path: must not be the root"},
		{"site relative", func(r *domain.RestoreRequest) { r.Destination = domain.RestoreDestination{ToSite: true, Path: "x"} }, "destination.path:"},
		{"site without path", func(r *domain.RestoreRequest) { r.Destination = domain.RestoreDestination{ToSite: true} }, "destination.path: required"},
		{"path without to_site", func(r *domain.RestoreRequest) { r.Destination = domain.RestoreDestination{Path: "/x"} }, "destination.path: only with to_site"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			r.Paths = slices.Clone(ok.Paths)
			tc.mut(&r)
			err := Validate(r)
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), tc.field) {
				t.Errorf("err = %v, want ErrInvalid starting %q", err, tc.field)
			}
		})
	}
}

func TestCleanThenValidate(t *testing.T) {
	r := Clean(domain.RestoreRequest{SnapshotID: fullID, Paths: []string{"/s//x/", "/s/./y"}, Destination: domain.RestoreDestination{LocalPath: "/r/a/../b/"}})
	if err := Validate(r); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Paths, []string{"/s/x", "/s/y"}) || r.Destination.LocalPath != "/r/b" {
		t.Errorf("cleaned = %+v", r)
	}
}

func TestValidateJob(t *testing.T) {
	ok := domain.RestoreRequest{SnapshotID: fullID, Paths: []string{"/s/x"}, Destination: domain.RestoreDestination{LocalPath: "/r"}}
	if err := ValidateJob("5f0c6d3e-8c1b-4a55-9d7e-0123456789ab", ok); err != nil {
		t.Fatal(err)
	}
	short := ok
	short.SnapshotID = fullID[:8]
	for name, tc := range map[string]struct {
		id string
		r  domain.RestoreRequest
	}{
		"prefix id":            {"job-1", short},
		"job id walks up":      {"../../etc", ok},
		"job id with a slash":  {"a/b", ok},
		"empty job id":         {"", ok},
		"request rules repeat": {"job-1", domain.RestoreRequest{SnapshotID: fullID, Paths: []string{"/s/x"}, Destination: domain.RestoreDestination{LocalPath: "rel"}}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := ValidateJob(tc.id, tc.r); !errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

// world is a folder with Satoru's areas and symlinks into them, as a
// hostile or careless restore request would use them.
type world struct {
	root, data, staging, repo, secret, outside string
	guard                                      Guard
}

func newWorld(t *testing.T) world {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := world{root: root, data: filepath.Join(root, "data"), staging: filepath.Join(root, "backups"),
		repo: filepath.Join(root, "repo"), secret: filepath.Join(root, "etc", "restic-password"), outside: filepath.Join(root, "out")}
	for _, d := range []string{filepath.Join(w.data, "store"), w.staging, w.repo, w.outside, filepath.Dir(w.secret)} {
		mkdir(t, d)
	}
	write(t, filepath.Join(w.repo, "config"), "repository config")
	write(t, w.secret, "s3cret")
	link(t, w.repo, filepath.Join(w.outside, "to-repo"))
	link(t, w.data, filepath.Join(w.outside, "to-data"))
	link(t, filepath.Join(root, "etc"), filepath.Join(w.outside, "to-etc"))
	link(t, root, filepath.Join(w.outside, "to-root"))
	link(t, "../data/store", filepath.Join(w.outside, "relative-to-store"))
	link(t, filepath.Join(root, "nowhere"), filepath.Join(w.outside, "dangling"))
	write(t, filepath.Join(w.outside, "file"), "x")
	w.guard = Guard{Areas: []Area{
		{Key: "data_dir", Path: w.data}, {Key: "staging_root", Path: w.staging},
		{Key: "restic_repo_path", Path: w.repo}, {Key: "restic_password_file", Path: w.secret},
	}}
	return w
}

func TestGuardCheckFollowsSymlinks(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		name    string
		dest    string
		wantKey string // "" = allowed
		want    string // the resolved path, when allowed
	}{
		{"a new folder outside", filepath.Join(w.outside, "new", "deeper"), "", filepath.Join(w.outside, "new", "deeper")},
		{"inside the repository as a string", filepath.Join(w.repo, "x"), "restic_repo_path", ""},
		{"through a symlink to the repository", filepath.Join(w.outside, "to-repo"), "restic_repo_path", ""},
		{"through a symlink to the repository, new subfolder", filepath.Join(w.outside, "to-repo", "data", "new"), "restic_repo_path", ""},
		{"through a symlink to data_dir", filepath.Join(w.outside, "to-data", "store"), "data_dir", ""},
		{"through a relative symlink into data_dir", filepath.Join(w.outside, "relative-to-store", "x"), "data_dir", ""},
		{"a folder holding a secret file", filepath.Join(w.outside, "to-etc"), "restic_password_file", ""},
		{"a folder containing every area", filepath.Join(w.outside, "to-root"), "data_dir", ""},
		{"staging as a string", w.staging + "/../backups/site", "staging_root", ""},
		{"a symlink leading nowhere", filepath.Join(w.outside, "dangling", "x"), "does not exist", ""},
		{"a file on the way", filepath.Join(w.outside, "file", "x"), "not a directory", ""},
		{"a symlink to a folder outside", filepath.Join(w.outside, "to-root", "out", "new"), "", filepath.Join(w.outside, "new")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := w.guard.Check(tc.dest)
			if tc.wantKey == "" {
				if err != nil || got != tc.want {
					t.Fatalf("Check = %q, %v; want %q allowed", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "destination.local_path: ") || !strings.Contains(err.Error(), tc.wantKey) {
				t.Fatalf("Check = %q, %v; want refused naming %q", got, err, tc.wantKey)
			}
		})
	}
}

// An area given through a symlink (data_dir: /srv/satoru -> /mnt/x) is
// protected where it really is, too.
func TestGuardAreaBehindASymlink(t *testing.T) {
	root, _ := filepath.EvalSymlinks(t.TempDir())
	real := filepath.Join(root, "mnt", "satoru-data")
	mkdir(t, real)
	link(t, real, filepath.Join(root, "data-link"))
	g := Guard{Areas: []Area{{Key: "data_dir", Path: filepath.Join(root, "data-link")}}}
	if _, err := g.Check(filepath.Join(real, "store")); err == nil || !strings.Contains(err.Error(), "data_dir") {
		t.Errorf("restore into the real data folder: %v, want refused", err)
	}
	if _, err := g.Check(filepath.Join(root, "mnt")); err == nil {
		t.Error("restore over the real data folder's parent was allowed")
	}
}

func TestGuardLocal(t *testing.T) {
	w := newWorld(t)
	empty := filepath.Join(w.outside, "empty")
	mkdir(t, empty)
	full := filepath.Join(w.outside, "full")
	mkdir(t, full)
	write(t, filepath.Join(full, ".x"), "")
	link(t, full, filepath.Join(w.outside, "to-full"))
	tests := []struct {
		name       string
		dest       string
		overwrite  bool
		want       Local
		wantErr    string
		wantPrefix bool
	}{
		{name: "missing is created", dest: filepath.Join(w.outside, "new"), want: Local{Path: filepath.Join(w.outside, "new")}},
		{name: "an existing empty folder needs overwrite", dest: empty, wantErr: "already exists (an empty folder this restore did not create)"},
		{name: "an existing empty folder with overwrite", dest: empty, overwrite: true, want: Local{Path: empty, Exists: true}},
		{name: "non-empty is refused", dest: full, wantErr: `is not empty; nothing restored. Restore into a new folder, or set "overwrite": true`},
		{name: "non-empty with overwrite", dest: full, overwrite: true, want: Local{Path: full, Exists: true}},
		{name: "through a symlink, resolved", dest: filepath.Join(w.outside, "to-full"), overwrite: true, want: Local{Path: full, Exists: true}},
		{name: "a file is refused", dest: filepath.Join(w.outside, "file"), overwrite: true, wantErr: "not a folder"},
		{name: "protected first", dest: filepath.Join(w.outside, "to-repo"), overwrite: true, wantErr: "restic_repo_path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := w.guard.Local(tc.dest, tc.overwrite)
			if tc.wantErr == "" {
				if err != nil || got != tc.want {
					t.Fatalf("Local = %+v, %v; want %+v", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "destination.local_path: ") {
				t.Fatalf("Local = %+v, %v; want refused with %q", got, err, tc.wantErr)
			}
		})
	}
}

func TestMoveNewNeverReplaces(t *testing.T) {
	root := t.TempDir()
	src := func() string {
		d, err := os.MkdirTemp(root, "src")
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(d, "f"), "restored")
		return d
	}
	to := filepath.Join(root, "dest")
	if err := MoveNew(src(), to); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(to, "f")); string(b) != "restored" {
		t.Errorf("moved folder holds %q", b)
	}

	emptyDir := filepath.Join(root, "empty")
	mkdir(t, emptyDir)
	target := filepath.Join(root, "target")
	mkdir(t, target)
	symlink := filepath.Join(root, "symlink")
	link(t, target, symlink)
	for _, existing := range []string{emptyDir, symlink} {
		if err := MoveNew(src(), existing); err == nil || !strings.Contains(err.Error(), "appeared while restoring") {
			t.Errorf("MoveNew onto %s: %v, want refused", existing, err)
		}
	}
	if fi, err := os.Lstat(symlink); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v %v", fi, err)
	}
	if names, _ := os.ReadDir(target); len(names) != 0 {
		t.Errorf("MoveNew wrote through the symlink: %v", names)
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func link(t *testing.T, target, at string) {
	t.Helper()
	if err := os.Symlink(target, at); err != nil {
		t.Fatal(err)
	}
}

// The error names the innermost area holding the destination: a
// repository inside data_dir is named as the repository.
func TestGuardNamesTheInnermostArea(t *testing.T) {
	root, _ := filepath.EvalSymlinks(t.TempDir())
	data := filepath.Join(root, "data")
	repo := filepath.Join(data, "repo")
	mkdir(t, repo)
	link(t, repo, filepath.Join(root, "to-repo"))
	g := Guard{Areas: []Area{{Key: "data_dir", Path: data}, {Key: "restic_repo_path", Path: repo}}}
	for dest, want := range map[string]string{
		filepath.Join(root, "to-repo", "x"): "restic_repo_path",
		filepath.Join(data, "x"):            "data_dir",
		root:                                "data_dir",
	} {
		if _, err := g.Check(dest); err == nil || !strings.Contains(err.Error(), "overlaps "+want+" ") {
			t.Errorf("Check(%s) = %v, want it to name %s", dest, err, want)
		}
	}
}

func TestDestination(t *testing.T) {
	str := func(s string) *string { return &s }
	yes, no := true, false
	tests := []struct {
		name      string
		local     *string
		toSite    *bool
		path      *string
		want      domain.RestoreDestination
		wantField string
	}{
		{name: "local", local: str("/r"), want: domain.RestoreDestination{LocalPath: "/r"}},
		{name: "site", toSite: &yes, path: str("/on/site"), want: domain.RestoreDestination{ToSite: true, Path: "/on/site"}},
		{name: "local with to_site false", local: str("/r"), toSite: &no, want: domain.RestoreDestination{LocalPath: "/r"}},
		{name: "path without to_site is left to Validate", path: str("/x"), want: domain.RestoreDestination{Path: "/x"}},
		{name: "to_site without path is left to Validate", toSite: &yes, want: domain.RestoreDestination{ToSite: true}},
		{name: "both kinds", local: str("/r"), toSite: &yes, path: str("/x"), wantField: "destination: give either"},
		{name: "local with an empty path", local: str("/r"), path: str(""), wantField: "destination: give either"},
		{name: "local given empty", local: str(""), wantField: "destination.local_path: must not be empty"},
		{name: "nothing given", wantField: `destination: give {"local_path"`},
		{name: "only to_site false", toSite: &no, wantField: `destination: give {"local_path"`},
		{name: "site with an empty path", toSite: &yes, path: str(""), wantField: "destination.path: required with to_site"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Destination(tc.local, tc.toSite, tc.path)
			if tc.wantField != "" {
				if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), tc.wantField) {
					t.Fatalf("err = %v, want ErrInvalid starting %q", err, tc.wantField)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestInSnapshot(t *testing.T) {
	roots := []string{"/b/site/t1", "/b/site/t2/"}
	tests := []struct {
		name    string
		paths   []string
		wantErr string
	}{
		{name: "a root itself", paths: []string{"/b/site/t1"}},
		{name: "below a root, either form", paths: []string{"/b/site/t1/x", "/b/site/t2/y/z"}},
		{name: "a sibling with the root as prefix", paths: []string{"/b/site/t1x"}, wantErr: `paths[0]: "/b/site/t1x" is not inside the snapshot, whose root is /b/site/t1, /b/site/t2/`},
		{name: "the second path outside", paths: []string{"/b/site/t1/a", "/etc"}, wantErr: "paths[1]:"},
		{name: "above the roots", paths: []string{"/b/site"}, wantErr: "paths[0]:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := InSnapshot(tc.paths, roots)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want ErrInvalid starting %q", err, tc.wantErr)
			}
		})
	}
}
