package remote

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRsyncPushArgs(t *testing.T) {
	ssh := SSHConfig{Host: "edge", Port: 2222, User: "backup", KnownHostsFile: "/kh"}
	e, err := SSHCommandForRsync(ssh)
	if err != nil {
		t.Fatal(err)
	}
	head := []string{"-a", "--numeric-ids", "--itemize-changes", "--protect-args", "-e", e}
	tests := []struct {
		name    string
		p       RsyncPush
		want    []string
		wantErr string
	}{
		{
			name: "one folder and one file",
			p:    RsyncPush{SSH: ssh, LocalPaths: []string{"/tmp/r/s/t1/", "/tmp/r/s/db.sqlite"}, RemoteDir: "/srv/restore"},
			want: append(slices.Clone(head), "--", "/tmp/r/s/t1", "/tmp/r/s/db.sqlite", "edge:/srv/restore/"),
		},
		{
			name: "dry run, limits, odd remote path stays one argument",
			p: RsyncPush{SSH: ssh, LocalPaths: []string{"/x"}, RemoteDir: "/srv/it's $(x)/", DryRun: true,
				BWLimitKiBps: 100, IOTimeout: 90 * time.Second},
			want: append(slices.Clone(head), "--dry-run", "--timeout=90", "--bwlimit=100", "--", "/x", "edge:/srv/it's $(x)/"),
		},
		{
			name: "ipv6 host is bracketed",
			p:    RsyncPush{SSH: SSHConfig{Host: "::1", User: "u", KnownHostsFile: "/kh"}, LocalPaths: []string{"/x"}, RemoteDir: "/d"},
		},
		{name: "relative remote", p: RsyncPush{SSH: ssh, LocalPaths: []string{"/x"}, RemoteDir: "srv"}, wantErr: "not absolute"},
		{name: "newline in remote", p: RsyncPush{SSH: ssh, LocalPaths: []string{"/x"}, RemoteDir: "/a\nb"}, wantErr: "line break"},
		{name: "relative source", p: RsyncPush{SSH: ssh, LocalPaths: []string{"host:x"}, RemoteDir: "/d"}, wantErr: "not absolute"},
		{name: "local root", p: RsyncPush{SSH: ssh, LocalPaths: []string{"/"}, RemoteDir: "/d"}, wantErr: "local root"},
		{name: "nothing", p: RsyncPush{SSH: ssh, RemoteDir: "/d"}, wantErr: "nothing to push"},
		{name: "no known hosts", p: RsyncPush{SSH: SSHConfig{Host: "edge", User: "u"}, LocalPaths: []string{"/x"}, RemoteDir: "/d"}, wantErr: "known"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RsyncPushArgs(tc.p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if last := got[len(got)-1]; last != "[::1]:/d/" {
					t.Errorf("destination = %q", last)
				}
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("args = %q\nwant   %q", got, tc.want)
			}
		})
	}
}

// TestRestoreDirCommand runs the script with the local sh: the quoting
// and the checks are the same on the site.
func TestRestoreDirCommand(t *testing.T) {
	base := t.TempDir()
	full := filepath.Join(base, "full")
	if err := os.MkdirAll(full, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, ".hidden"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(base, "empty")
	if err := os.MkdirAll(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		dir            string
		overwrite, dry bool
		code           int
		created        bool
	}{
		{name: "new folder is created", dir: filepath.Join(base, "new 'q' $(x)", "deep"), code: 0, created: true},
		{name: "dry run creates nothing", dir: filepath.Join(base, "dry"), dry: true, code: 0},
		{name: "empty folder is fine", dir: empty, code: 0, created: true},
		{name: "non-empty folder is refused", dir: full, code: RestoreDirNotEmpty, created: true},
		{name: "non-empty folder with overwrite", dir: full, overwrite: true, code: 0, created: true},
		{name: "a file is refused", dir: file, overwrite: true, code: RestoreDirNotDir},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			line, err := RestoreDirCommand(tc.dir, tc.overwrite, tc.dry)
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("sh", "-c", line).CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Fatalf("exit %d, want %d (%s)", code, tc.code, out)
			}
			fi, err := os.Stat(tc.dir)
			if got := err == nil && fi.IsDir(); got != tc.created {
				t.Errorf("folder exists = %v, want %v", got, tc.created)
			}
		})
	}
	if _, err := RestoreDirCommand("rel", false, false); err == nil {
		t.Error("relative folder accepted")
	}
}

func TestRsyncLocalArgs(t *testing.T) {
	head := []string{"-rlt", "--chmod=D0700,F0600", "--itemize-changes"}
	tests := []struct {
		name    string
		p       RsyncLocal
		want    []string
		wantErr string
	}{
		{
			name: "entries keep their names under dest",
			p:    RsyncLocal{Sources: []string{"/s/.restore/j/a/t1/", "/s/.restore/j/a/db.sqlite"}, Dest: "/srv/r"},
			want: append(slices.Clone(head), "--", "/s/.restore/j/a/t1", "/s/.restore/j/a/db.sqlite", "/srv/r/"),
		},
		{
			name: "dry run",
			p:    RsyncLocal{Sources: []string{"/x"}, Dest: "/srv/r/", DryRun: true},
			want: append(slices.Clone(head), "--dry-run", "--", "/x", "/srv/r/"),
		},
		{
			name: "odd names stay one argument each",
			p:    RsyncLocal{Sources: []string{"/t/it's $(x) -v"}, Dest: "/srv/a b:c"},
			want: append(slices.Clone(head), "--", "/t/it's $(x) -v", "/srv/a b:c/"),
		},
		{name: "relative dest", p: RsyncLocal{Sources: []string{"/x"}, Dest: "srv"}, wantErr: "not absolute"},
		{name: "relative source read as a remote spec", p: RsyncLocal{Sources: []string{"host:x"}, Dest: "/d"}, wantErr: "not absolute"},
		{name: "newline in source", p: RsyncLocal{Sources: []string{"/a\nb"}, Dest: "/d"}, wantErr: "line break"},
		{name: "root source", p: RsyncLocal{Sources: []string{"/"}, Dest: "/d"}, wantErr: "root folder"},
		{name: "nothing", p: RsyncLocal{Dest: "/d"}, wantErr: "nothing to restore"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RsyncLocalArgs(tc.p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("args = %q\nwant   %q", got, tc.want)
			}
		})
	}
}
