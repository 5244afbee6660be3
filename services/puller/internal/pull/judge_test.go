package pull

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/remote"
)

// Captured rsync 3.5.0 stderr (paths rewritten to the test's folders).
const (
	stderrDenied = `rsync: [sender] opendir "/srv/site/locked" failed: Permission denied (13)
rsync: [sender] send_files failed to open "/srv/site/secret": Permission denied (13)
rsync: [sender] readlink_stat("/srv/site/l") failed: Permission denied (13)
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]`
	stderrRename = `rsync: [receiver] rename "/backups/s/t/sub/.stuck.txt.BbW23W" -> "sub/stuck.txt": Operation not permitted (1)
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1956) [generator=3.5.0]`
	stderrVanished = `file has vanished: "/srv/site/z_session"
rsync warning: some files vanished before they could be transferred (code 24) at main.c(1394) [sender=3.5.0]`
	stderrMissing = `rsync: [sender] change_dir "/srv/site" failed: No such file or directory (2)
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1956) [Receiver=3.5.0]
rsync: [Receiver] write error: Broken pipe (32)`
	stderrRootDenied = `rsync: [sender] opendir "/srv/site/." failed: Permission denied (13)
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]`
	stderrHostKey = `@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
Host key verification failed.
rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]
rsync error: unexplained error (code 255) at io.c(232) [Receiver=3.2.7]`
	stderrRefused = `ssh: connect to host 10.0.0.9 port 22: Connection refused
rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]
rsync error: error in rsync protocol data stream (code 12) at io.c(285) [Receiver=3.5.0]`
)

func rsyncExit(code int, stderr string) error {
	return &proc.ExitError{Step: StepRsync, Command: "rsync", Code: code, Stderr: stderr}
}

// TestJudgeRsync is the exit-code mapping on captured stderr: 0 and 24
// succeed (24 with a note), 23 warns with the failed paths unless the
// folder itself could not be read, everything else fails with the code,
// ssh's reason and stderr.
func TestJudgeRsync(t *testing.T) {
	const root, staging = "/srv/site", "/backups/s/t"
	many := ""
	for i := range 30 {
		many += fmt.Sprintf("rsync: [sender] send_files failed to open \"/srv/site/f%02d\": Permission denied (13)\n", i)
	}
	tests := []struct {
		name       string
		err        error
		stderr     string
		status     domain.Health
		note, errs []string // substrings the Note / Error must hold
		paths      []string
	}{
		{name: "ok", status: domain.HealthSuccess},
		{
			name: "24 vanished is a success with a note", err: rsyncExit(24, stderrVanished), stderr: stderrVanished,
			status: domain.HealthSuccess, note: []string{"some files vanished during transfer (rsync exit 24): z_session"},
		},
		{
			name: "23 sender cannot read some files", err: rsyncExit(23, stderrDenied), stderr: stderrDenied,
			status: domain.HealthWarning, errs: []string{"rsync exit 23: 3 paths were not transferred", "Permission denied"},
			paths: []string{"locked", "secret", "l"},
		},
		{
			name: "23 receiver cannot replace a file", err: rsyncExit(23, stderrRename), stderr: stderrRename,
			status: domain.HealthWarning, errs: []string{"rsync exit 23: 1 path was not transferred"},
			paths: []string{"sub/stuck.txt"},
		},
		{
			name: "23 list is trimmed, the count is not", err: rsyncExit(23, "..."), stderr: many,
			status: domain.HealthWarning, errs: []string{"30 paths were not transferred"},
			paths: func() []string {
				var p []string
				for i := range MaxFailedPaths {
					p = append(p, fmt.Sprintf("f%02d", i))
				}
				return p
			}(),
		},
		{
			name: "23 for a missing folder is a failure", err: rsyncExit(23, stderrMissing), stderr: stderrMissing,
			status: domain.HealthFailed, errs: []string{"rsync exit 23: cannot read the remote folder /srv/site/", "No such file or directory"},
		},
		{
			name: "23 for an unreadable folder is a failure", err: rsyncExit(23, stderrRootDenied), stderr: stderrRootDenied,
			status: domain.HealthFailed, errs: []string{"cannot read the remote folder", "Permission denied"},
		},
		{
			name: "255 host key mismatch", err: rsyncExit(255, stderrHostKey), stderr: stderrHostKey,
			status: domain.HealthFailed, errs: []string{"rsync exit 255: host key does not match the pinned key", "REMOTE HOST IDENTIFICATION HAS CHANGED"},
		},
		{
			name: "12 connection refused", err: rsyncExit(12, stderrRefused), stderr: stderrRefused,
			status: domain.HealthFailed, errs: []string{"rsync exit 12: connection refused: ssh: connect to host"},
		},
		{
			name: "11 file I/O", err: rsyncExit(11, "rsync: [receiver] write failed on \"/backups/s/t/x\": No space left on device (28)"),
			status: domain.HealthFailed, errs: []string{"rsync exit 11: error in file I/O (is the staging disk full?): rsync: [receiver] write failed"},
		},
		{
			name: "unknown code", err: rsyncExit(99, "odd"),
			status: domain.HealthFailed, errs: []string{"rsync exit 99: odd"},
		},
		{
			name: "canceled", err: fmt.Errorf("rsync: %w", context.Canceled),
			status: domain.HealthFailed, errs: []string{"rsync: context canceled"},
		},
		{
			name: "timed out", err: fmt.Errorf("rsync %w after %s", proc.ErrTimeout, time.Minute),
			status: domain.HealthFailed, errs: []string{"rsync timed out after 1m0s"},
		},
		{
			name: "not installed", err: fmt.Errorf("rsync: %w: rsync", proc.ErrNotFound),
			status: domain.HealthFailed, errs: []string{"executable not found: rsync"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := judgeRsync(tc.err, tc.stderr, root+"/", staging)
			if o.status != tc.status {
				t.Errorf("status = %s, want %s (error %q)", o.status, tc.status, o.err)
			}
			for _, s := range tc.note {
				if !strings.Contains(o.note, s) {
					t.Errorf("note %q lacks %q", o.note, s)
				}
			}
			for _, s := range tc.errs {
				if !strings.Contains(o.err, s) {
					t.Errorf("error %q lacks %q", o.err, s)
				}
			}
			if tc.status == domain.HealthSuccess && o.err != "" {
				t.Errorf("success with error %q", o.err)
			}
			if !slices.Equal(o.failedPaths, tc.paths) {
				t.Errorf("failed paths = %q, want %q", o.failedPaths, tc.paths)
			}
		})
	}
}

func TestThrottle(t *testing.T) {
	now := time.Unix(1000, 0)
	var got []time.Time
	th := newThrottle(2*time.Second, func(Progress) { got = append(got, now) })
	th.now = func() time.Time { return now }
	made := 0
	offer := func() {
		th.offer(func() Progress { made++; return Progress{} })
	}
	// Updates every 300 ms for 10 s: the first passes, then one each time
	// 2 s have gone by since the last one passed.
	for i := 0; i < 34; i++ {
		offer()
		now = now.Add(300 * time.Millisecond)
	}
	if len(got) != 5 || made != len(got) {
		t.Fatalf("%d callbacks (%d built), want 5", len(got), made)
	}
	for i := 1; i < len(got); i++ {
		if d := got[i].Sub(got[i-1]); d < 2*time.Second {
			t.Errorf("callbacks %v apart", d)
		}
	}
	// A nil callback is fine.
	newThrottle(time.Second, nil).offer(func() Progress { t.Fatal("built for nobody"); return Progress{} })
}

// TestRsyncOutput feeds progress2 and --stats output in awkward pieces:
// records split across writes, '\r' and '\n' mixed.
func TestRsyncOutput(t *testing.T) {
	stream := "\r         32,768   0%    0.00kB/s    0:00:00  \r      2,000,000  39%  234.51MB/s    0:00:00 (xfr#1, to-chk=6/8)" +
		"\r      5,000,012  99%  364.39MB/s    0:00:00 (xfr#4, to-chk=0/8)\n\nNumber of files: 8 (reg: 4, dir: 3, link: 1)\n" +
		"Number of regular files transferred: 4\nTotal file size: 5,000,017 bytes\nTotal transferred file size: 5,000,012 bytes\n" +
		"Total bytes sent: 110\nTotal bytes received: 5,001,625\n\nsent 110 bytes  received 5,001,625 bytes  10,003,470.00 bytes/sec\n" +
		"total size is 5,000,017  speedup is 1.00"
	for _, size := range []int{1, 3, 7, 64, len(stream)} {
		t.Run(fmt.Sprint("chunks of ", size), func(t *testing.T) {
			var ticks []Progress
			o := &rsyncOutput{hash: "h", tick: newThrottle(time.Nanosecond, func(p Progress) { ticks = append(ticks, p) })}
			for s := stream; len(s) > 0; {
				n := min(size, len(s))
				if k, err := o.Write([]byte(s[:n])); k != n || err != nil {
					t.Fatalf("Write = %d, %v", k, err)
				}
				s = s[n:]
			}
			out := string(o.output())
			if len(ticks) != 3 || ticks[2] != (Progress{TargetHash: "h", BytesDone: 5000012, Percent: 99, Rate: "364.39MB/s"}) {
				t.Errorf("ticks = %+v", ticks)
			}
			if strings.Contains(out, "%") || !strings.Contains(out, "Total file size: 5,000,017 bytes\n") || !strings.HasSuffix(out, "speedup is 1.00\n") {
				t.Errorf("kept output %q", out)
			}
		})
	}
}

// TestRsyncOutputItemized mixes --itemize-changes lines into the stream:
// created folders, symlinks and specials reach the journal callback as
// rsync printed them, other itemized lines are dropped, and a record past
// maxRecord is dropped whole rather than cut into records.
func TestRsyncOutputItemized(t *testing.T) {
	long := "cd+++++++++ " + strings.Repeat("x/", maxRecord) + "\n"
	stream := "cd+++++++++ ./\ncd+++++++++ new dir/\n>f+++++++++ new dir/a.bin\r      1,000  50%  1.00MB/s    0:00:00\n" +
		"cL+++++++++ link -> new dir/a.bin\ncLc.T...... old link -> elsewhere\n.d..t...... keep/\n*deleting   gone.txt\n" +
		"cS+++++++++ fifo\nhf+++++++++ hard => a\n" + long + "cd+++++++++ caf\\#303\\#251/\n" +
		"created directory /x\nNumber of files: 3 (reg: 1, dir: 2)\nTotal file size: 9 bytes\n"
	for _, size := range []int{1, 5, 4096, len(stream)} {
		t.Run(fmt.Sprint("chunks of ", size), func(t *testing.T) {
			var got []string
			o := &rsyncOutput{hash: "h", tick: newThrottle(time.Hour, nil), created: func(kind byte, name []byte) {
				got = append(got, string(kind)+" "+string(name))
			}}
			for s := stream; len(s) > 0; {
				n := min(size, len(s))
				_, _ = o.Write([]byte(s[:n]))
				s = s[n:]
			}
			want := []string{"d ./", "d new dir/", "L link -> new dir/a.bin", "S fifo", "d caf\\#303\\#251/"}
			if !slices.Equal(got, want) {
				t.Errorf("created %q\nwant    %q", got, want)
			}
			if out := string(o.output()); out != "created directory /x\nNumber of files: 3 (reg: 1, dir: 2)\nTotal file size: 9 bytes\n" {
				t.Errorf("kept output %q", out)
			}
		})
	}
}

func TestUnescapeRsync(t *testing.T) {
	tests := map[string]string{
		"plain name/":   "plain name/",
		`caf\#303\#251`: "café",
		`nl\#012x`:      "nl\nx",
		`a\#134#101`:    `a\#101`, // rsync escapes a backslash before '#'
		`back\slash`:    `back\slash`,
		`cut\#30`:       `cut\#30`,
		`bad\#9zz`:      `bad\#9zz`,
	}
	for in, want := range tests {
		if got := unescapeRsync(in); got != want {
			t.Errorf("unescapeRsync(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRsyncArgs(t *testing.T) {
	c := Config{SSH: sshConfigFor("edge"), BandwidthLimitKbps: 100}
	args, err := rsyncArgs(c, dirTarget("/srv/www"), "/backups/s/t", "/backups/.pull/s/t/tmp", false)
	if err != nil {
		t.Fatal(err)
	}
	n := len(args)
	if !slices.Equal(args[n-6:], []string{stagingChmod, "--info=progress2", "--itemize-changes", "--", "edge:/srv/www/", "/backups/s/t/"}) {
		t.Errorf("tail of argv: %q", args[n-6:])
	}
	for _, want := range []string{"--bwlimit=100", "--temp-dir=/backups/.pull/s/t/tmp", "--delay-updates", "--delete-delay"} {
		if !slices.Contains(args, want) {
			t.Errorf("no %s in %q", want, args)
		}
	}
	c.SSHPath = "/opt/ssh/bin/ssh"
	args, err = rsyncArgs(c, dirTarget("/srv/www"), "/backups/s/t", "/tmp", false)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.Index(args, "-e")
	if i < 0 || !strings.HasPrefix(args[i+1], "/opt/ssh/bin/ssh -F /dev/null ") {
		t.Errorf("-e value: %q", args)
	}
	c.SSHPath = "/opt/my ssh"
	if _, err := rsyncArgs(c, dirTarget("/srv/www"), "/b", "/tmp", false); err == nil {
		t.Error("an ssh path with a space was accepted")
	}
	if _, err := insertOptions([]string{"-a", "x", "y"}, "--z"); err == nil {
		t.Error("argv without -- accepted")
	}
}

func TestRelativize(t *testing.T) {
	got := relativize([]string{"/srv/site/a/b", "/backups/s/t/sub/x", "/backups/s/t/.", "sub/y", "/elsewhere/z", "/srv/site"}, "/srv/site", "/backups/s/t")
	want := []string{"a/b", "sub/x", ".", "sub/y", "/elsewhere/z", "/srv/site"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := relativize([]string{"/etc/x", "/backups/s/t/y"}, "/", "/backups/s/t"); !slices.Equal(got, []string{"etc/x", "y"}) {
		t.Errorf("root folder: %q", got)
	}
}

func TestPrepareStaging(t *testing.T) {
	root := t.TempDir()
	// An existing target folder with a loose mode is tightened.
	loose := StagingPath(root, "site", "hash")
	if err := os.MkdirAll(loose, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := prepareStaging(root, "site", "hash")
	if err != nil || dir != loose {
		t.Fatalf("prepareStaging = %q, %v", dir, err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v, want 0700", fi.Mode().Perm())
	}
	// A symlink in place of a staging folder is refused.
	if err := os.Symlink(t.TempDir(), filepath.Join(root, "site", "linked")); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareStaging(root, "site", "linked"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("symlink: %v", err)
	}
	for _, bad := range [][2]string{{"", "h"}, {"s", ""}, {"..", "h"}, {"s", "a/b"}, {"s", "."}} {
		if _, err := prepareStaging(root, bad[0], bad[1]); err == nil {
			t.Errorf("prepareStaging(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if _, err := prepareStaging("", "s", "h"); err == nil {
		t.Error("empty root accepted")
	}
}

func sshConfigFor(host string) remote.SSHConfig {
	return remote.SSHConfig{Host: host, User: "backup", KnownHostsFile: "/kh"}
}
