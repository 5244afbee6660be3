package remote

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRsyncPullArgs(t *testing.T) {
	ssh := SSHConfig{Host: "edge", Port: 2222, User: "backup", KnownHostsFile: "/kh"}
	e, err := SSHCommandForRsync(ssh)
	if err != nil {
		t.Fatal(err)
	}
	head := []string{"-a", "--delete", "--delete-excluded", "--numeric-ids", "--stats", "--protect-args",
		"--delay-updates", "--delete-delay", "--partial-dir=.satoru-partial", "-e", e}
	tests := []struct {
		name    string
		p       RsyncPull
		want    []string
		wantErr string
	}{
		{
			name: "plain",
			p:    RsyncPull{SSH: ssh, RemoteDir: "/var/www", LocalDir: "/backups/s/t"},
			want: append(slices.Clone(head), "--", "edge:/var/www/", "/backups/s/t/"),
		},
		{
			name: "trailing slashes are not doubled; odd path stays one argument",
			p:    RsyncPull{SSH: ssh, RemoteDir: "/srv/it's $(x) dir//", LocalDir: "/b/"},
			want: append(slices.Clone(head), "--", "edge:/srv/it's $(x) dir/", "/b/"),
		},
		{
			name: "root directory",
			p:    RsyncPull{SSH: ssh, RemoteDir: "/", LocalDir: "/b"},
			want: append(slices.Clone(head), "--", "edge:/", "/b/"),
		},
		{
			name: "excludes, bandwidth and io timeout",
			p: RsyncPull{SSH: ssh, RemoteDir: "/d", LocalDir: "/b", Excludes: []string{"*.tmp", "cache/", "-not-an-option"},
				BWLimitKiBps: 512, IOTimeout: 90 * time.Second},
			want: append(slices.Clone(head), "--timeout=90", "--bwlimit=512", "--exclude=*.tmp", "--exclude=cache/",
				"--exclude=-not-an-option", "--", "edge:/d/", "/b/"),
		},
		{
			name: "first pull: nothing to keep in place, so no delayed updates",
			p:    RsyncPull{SSH: ssh, RemoteDir: "/d", LocalDir: "/b/s/t", First: true},
			want: []string{"-a", "--delete", "--delete-excluded", "--numeric-ids", "--stats", "--protect-args", "-e", e, "--", "edge:/d/", "/b/s/t/"},
		},
		{
			name: "temp dir outside staging",
			p:    RsyncPull{SSH: ssh, RemoteDir: "/d", LocalDir: "/b/s/t", TempDir: "/b/.pull/s/t/tmp"},
			want: append(slices.Clone(head), "--temp-dir=/b/.pull/s/t/tmp", "--", "edge:/d/", "/b/s/t/"),
		},
		{name: "relative temp dir", p: RsyncPull{SSH: ssh, RemoteDir: "/d", LocalDir: "/b", TempDir: "tmp"}, wantErr: "rsync temp dir"},
		{
			name: "IPv6 host is bracketed",
			p:    RsyncPull{SSH: SSHConfig{Host: "::1", User: "u", KnownHostsFile: "/kh"}, RemoteDir: "/d", LocalDir: "/b"},
		},
		{name: "relative remote dir", p: RsyncPull{SSH: ssh, RemoteDir: "www", LocalDir: "/b"}, wantErr: "not absolute"},
		{name: "relative staging dir", p: RsyncPull{SSH: ssh, RemoteDir: "/d", LocalDir: "backups/x:y"}, wantErr: "not absolute"},
		{name: "newline in exclude", p: RsyncPull{SSH: ssh, RemoteDir: "/d", LocalDir: "/b", Excludes: []string{"a\nb"}}, wantErr: "line break"},
		{name: "empty exclude", p: RsyncPull{SSH: ssh, RemoteDir: "/d", LocalDir: "/b", Excludes: []string{""}}, wantErr: "empty"},
		{name: "NUL in exclude", p: RsyncPull{SSH: ssh, RemoteDir: "/d", LocalDir: "/b", Excludes: []string{"a\x00b"}}, wantErr: "NUL"},
		{name: "CR in exclude", p: RsyncPull{SSH: ssh, RemoteDir: "/d", LocalDir: "/b", Excludes: []string{"a\rb"}}, wantErr: "line break"},
		{name: "negative bandwidth", p: RsyncPull{SSH: ssh, RemoteDir: "/d", LocalDir: "/b", BWLimitKiBps: -1}, wantErr: "negative"},
		{name: "bad ssh config", p: RsyncPull{SSH: SSHConfig{Host: "-x", User: "u", KnownHostsFile: "/kh"}, RemoteDir: "/d", LocalDir: "/b"}, wantErr: "starts with '-'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RsyncPullArgs(tc.p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !IsPermanent(err) {
					t.Fatalf("err = %v, want a permanent error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if src := got[len(got)-2]; src != "[::1]:/d/" {
					t.Errorf("source %q, want [::1]:/d/", src)
				}
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestParseRsyncStats(t *testing.T) {
	tests := []struct {
		file string
		want RsyncStats
	}{
		{"stats-first.txt", RsyncStats{Files: 4, RegularFiles: 2, Dirs: 2, CreatedFiles: 4, TransferredFiles: 2,
			TotalSize: 8, TransferredSize: 8, BytesSent: 218, BytesReceived: 65}},
		{"stats-delete.txt", RsyncStats{Files: 3, RegularFiles: 1, Dirs: 2, DeletedFiles: 1, TotalSize: 2}},
		{"stats-large.txt", RsyncStats{Files: 5002, RegularFiles: 5000, Dirs: 1, CreatedFiles: 5001, TransferredFiles: 5000,
			TotalSize: 165012345, TransferredSize: 165012345, BytesSent: 101345, BytesReceived: 165442100}},
		{"stats-rsync30.txt", RsyncStats{Files: 3, TransferredFiles: 2, TotalSize: 8, TransferredSize: 8, BytesSent: 203, BytesReceived: 54}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got, err := ParseRsyncStats([]byte(readTestdata(t, "rsync/"+tc.file)))
			if err != nil {
				t.Fatal(err)
			}
			// Bytes sent/received vary with rsync's protocol; the captured
			// files pin them, except the delete run's, which is not checked.
			if tc.file == "stats-delete.txt" {
				got.BytesSent, got.BytesReceived = 0, 0
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "sent 1 bytes  received 2 bytes", "Number of files: 3\n"} {
		if _, err := ParseRsyncStats([]byte(bad)); !errors.Is(err, ErrNoRsyncStats) {
			t.Errorf("ParseRsyncStats(%q) = %v, want ErrNoRsyncStats", bad, err)
		}
	}
}
