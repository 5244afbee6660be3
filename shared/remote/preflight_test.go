package remote

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/proc"
)

func TestPreflightCommandRejects(t *testing.T) {
	dir := domain.ModeDirectory
	db := domain.ModeSQLiteDump
	tests := []struct {
		name    string
		targets []PreflightTarget
		tmp     string
		wantErr string
	}{
		{"relative path", []PreflightTarget{{0, dir, "data"}}, "", "not absolute"},
		{"newline in path", []PreflightTarget{{0, dir, "/a\nb"}}, "", "line break"},
		{"unknown mode", []PreflightTarget{{0, "tarball", "/a"}}, "", "unknown mode"},
		{"duplicate index", []PreflightTarget{{1, dir, "/a"}, {1, dir, "/b"}}, "", "given twice"},
		{"negative index", []PreflightTarget{{-1, dir, "/a"}}, "", "negative"},
		{"sqlite without tmp", []PreflightTarget{{0, db, "/a.db"}}, "", "temp folder"},
		{"sqlite with relative tmp", []PreflightTarget{{0, db, "/a.db"}}, "tmp", "temp folder"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := PreflightCommand(tc.targets, tc.tmp)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestPreflightCommandShape(t *testing.T) {
	cmd, err := PreflightCommand([]PreflightTarget{
		{Index: 0, Mode: domain.ModeDirectory, Path: "/srv/it's here"},
		{Index: 3, Mode: domain.ModeSQLiteDump, Path: "/srv/app.db"},
	}, "/var/tmp")
	if err != nil {
		t.Fatal(err)
	}
	want := " 'satoru-preflight' '1' '0,3' 'rsync,sqlite3,gzip,mktemp' '1' 'tool' 'rsync' 'tool' 'sqlite3' 'tool' 'gzip' 'tool' 'mktemp'" +
		` 'tmp' '/var/tmp' 'dir' '0' '/srv/it'\''s here' 'file' '3' '/srv/app.db'`
	if !strings.HasPrefix(cmd, "sh -c '") || !strings.HasSuffix(cmd, want) {
		t.Errorf("command:\n%s\nwant suffix\n%s", cmd, want)
	}
	if strings.Contains(cmd, "\n") {
		t.Error("command has a newline")
	}
	// Only directory targets: no sqlite tools, no temp folder needed.
	cmd, err = PreflightCommand([]PreflightTarget{{Index: 0, Mode: domain.ModeDirectory, Path: "/srv"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(cmd, " 'satoru-preflight' '1' '0' 'rsync' '0' 'tool' 'rsync' 'dir' '0' '/srv'") {
		t.Errorf("directory-only command: %s", cmd)
	}
}

func TestParsePreflight(t *testing.T) {
	const (
		head = "satoru-preflight\t1\t0,1\trsync,sqlite3\t1\n"
		body = "tool\trsync\tok\trsync  version 3.2.7  protocol version 31\n" +
			"tool\tsqlite3\tfail\tmissing\n" +
			"tmp\t-\tfail\tmktemp: failed to create file via template '/nope/.satoru-preflight.XXXXXX': No such file or directory\n" +
			"target\t0\tok\t\n" +
			"target\t1\tfail\ttmp_not_writable\n"
	)
	f := false
	full := PreflightReport{
		Tools: []ToolCheck{
			{Name: "rsync", OK: true, Version: "rsync  version 3.2.7  protocol version 31"},
			{Name: "sqlite3", Detail: "not found in PATH on the remote host"},
		},
		Targets: []TargetCheck{
			{Index: 0, OK: true},
			{Index: 1, Problem: ProblemTmpNotWritable, Detail: "remote temp folder is not writable: mktemp: failed to create file via template '/nope/.satoru-preflight.XXXXXX': No such file or directory"},
		},
		TmpDirOK:     &f,
		TmpDirDetail: "mktemp: failed to create file via template '/nope/.satoru-preflight.XXXXXX': No such file or directory",
	}
	tests := []struct {
		name    string
		out     string
		want    *PreflightReport
		wantErr string
	}{
		{name: "full report", out: head + body + "end\n", want: &full},
		{name: "login noise before and after", out: "Welcome to edge!\n\tfortune\n" + head + body + "end\nbye\n", want: &full},
		{name: "crlf line ends", out: strings.ReplaceAll(head+body+"end\n", "\n", "\r\n"), want: &full},
		{name: "no targets", out: "satoru-preflight\t1\t\t\t0\nend\n", want: &PreflightReport{}},
		{name: "empty output", out: "", wantErr: "no report header"},
		{name: "cut off", out: head + body, wantErr: "cut off"},
		{name: "missing target line", out: head + strings.Replace(body, "target\t1\tfail\ttmp_not_writable\n", "", 1) + "end\n", wantErr: "no result for target 1"},
		{name: "missing tool line", out: head + strings.Replace(body, "tool\tsqlite3\tfail\tmissing\n", "", 1) + "end\n", wantErr: "no result for tool sqlite3"},
		{name: "missing tmp line", out: head + strings.Replace(body, body[strings.Index(body, "tmp\t"):strings.Index(body, "target\t0")], "", 1) + "end\n", wantErr: "temp folder"},
		{name: "unrequested target", out: head + body + "target\t7\tok\t\nend\n", wantErr: "unexpected or repeated target"},
		{name: "repeated target", out: head + body + "target\t0\tok\t\nend\n", wantErr: "unexpected or repeated target"},
		{name: "extra field (a tab smuggled into data)", out: head + "tool\trsync\tok\tv\tx\n" + "end\n", wantErr: "5 fields"},
		{name: "bad status", out: head + "tool\trsync\tmaybe\tv\nend\n", wantErr: "status"},
		{name: "unknown kind", out: head + "shell\tx\tok\t\nend\n", wantErr: "unknown kind"},
		{name: "script error", out: head + "error\t-\tfail\tbogus\nend\n", wantErr: "rejected argument"},
		{name: "wrong version", out: "satoru-preflight\t2\t\t\t0\nend\n", wantErr: "version"},
		{name: "short header", out: "satoru-preflight\t1\nend\n", wantErr: "header has 2 fields"},
		{name: "bad index in header", out: "satoru-preflight\t1\tx\t\t0\nend\n", wantErr: "not a number"},
		{name: "unknown target problem", out: "satoru-preflight\t1\t0\t\t0\ntarget\t0\tfail\ton_fire\nend\n", wantErr: "unknown problem"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePreflight([]byte(tc.out))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrPreflightOutput) {
					t.Fatalf("err = %v, want ErrPreflightOutput containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			assertReport(t, got, *tc.want)
		})
	}
}

func assertReport(t *testing.T, got, want PreflightReport) {
	t.Helper()
	if len(got.Tools) != len(want.Tools) || len(got.Targets) != len(want.Targets) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for i := range want.Tools {
		if got.Tools[i] != want.Tools[i] {
			t.Errorf("tool %d: got %+v, want %+v", i, got.Tools[i], want.Tools[i])
		}
	}
	for i := range want.Targets {
		if got.Targets[i] != want.Targets[i] {
			t.Errorf("target %d: got %+v, want %+v", i, got.Targets[i], want.Targets[i])
		}
	}
	if (got.TmpDirOK == nil) != (want.TmpDirOK == nil) || got.TmpDirOK != nil && *got.TmpDirOK != *want.TmpDirOK {
		t.Errorf("TmpDirOK: got %v, want %v", got.TmpDirOK, want.TmpDirOK)
	}
	if got.TmpDirDetail != want.TmpDirDetail {
		t.Errorf("TmpDirDetail: got %q, want %q", got.TmpDirDetail, want.TmpDirDetail)
	}
}

// TestPreflightScriptLocally runs the preflight command under each local
// shell exactly as sshd would ($SHELL -c <command>), against real files:
// the script's logic is tested without ssh; the ssh path is covered by the
// integration tests.
func TestPreflightScriptLocally(t *testing.T) {
	root := t.TempDir()
	marker := filepath.Join(root, "pwned")
	odd := filepath.Join(root, `odd 'single' "double" ; $(touch `+marker+`) `+"`touch "+marker+"`"+` & | > end`)
	mkdirs(t, filepath.Join(root, "www"), odd, filepath.Join(root, "tmp"))
	writeFile(t, filepath.Join(root, "app.db"), "SQLite format 3\x00")
	writeFile(t, filepath.Join(root, "plain-file"), "x")
	locked := filepath.Join(root, "locked")
	mkdirs(t, locked)

	targets := []PreflightTarget{
		{Index: 0, Mode: domain.ModeDirectory, Path: filepath.Join(root, "www")},
		{Index: 1, Mode: domain.ModeDirectory, Path: odd},
		{Index: 2, Mode: domain.ModeDirectory, Path: filepath.Join(root, "missing")},
		{Index: 3, Mode: domain.ModeDirectory, Path: filepath.Join(root, "plain-file")},
		{Index: 4, Mode: domain.ModeSQLiteDump, Path: filepath.Join(root, "app.db")},
		{Index: 5, Mode: domain.ModeSQLiteDump, Path: filepath.Join(root, "www")},
		{Index: 6, Mode: domain.ModeSQLiteDump, Path: filepath.Join(root, "no.db")},
	}
	want := map[int]string{0: "", 1: "", 2: ProblemMissing, 3: ProblemNotADirectory, 4: "", 5: ProblemNotAFile, 6: ProblemMissing}

	for _, shell := range []string{"sh", "bash", "dash"} {
		if _, err := exec.LookPath(shell); err != nil {
			continue
		}
		t.Run(shell, func(t *testing.T) {
			cmd, err := PreflightCommand(targets, filepath.Join(root, "tmp"))
			if err != nil {
				t.Fatal(err)
			}
			res, err := proc.Run(context.Background(), proc.Cmd{Path: shell, Args: []string{"-c", cmd}})
			if err != nil {
				t.Fatalf("%v\n%s", err, res.Stdout)
			}
			rep, err := ParsePreflight(res.Stdout)
			if err != nil {
				t.Fatalf("%v\n%s", err, res.Stdout)
			}
			checkTargets(t, rep, want)
			if rep.TmpDirOK == nil || !*rep.TmpDirOK {
				t.Errorf("temp folder not ok: %+v", rep)
			}
			for _, tool := range rep.Tools {
				if !tool.OK || tool.Version == "" {
					t.Errorf("tool %+v", tool)
				}
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("a path was executed as shell code: marker file exists")
			}
			left, _ := filepath.Glob(filepath.Join(root, "tmp", "*"))
			hidden, _ := filepath.Glob(filepath.Join(root, "tmp", ".satoru-preflight.*"))
			if len(left)+len(hidden) != 0 {
				t.Errorf("temp probe left files behind: %v %v", left, hidden)
			}
		})
	}

	t.Run("unwritable temp folder fails the sqlite targets only", func(t *testing.T) {
		cmd, err := PreflightCommand(targets, filepath.Join(root, "no-such-tmp"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := proc.Run(context.Background(), proc.Cmd{Path: "sh", Args: []string{"-c", cmd}})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := ParsePreflight(res.Stdout)
		if err != nil {
			t.Fatal(err)
		}
		w := map[int]string{}
		for k, v := range want {
			w[k] = v
		}
		w[4] = ProblemTmpNotWritable
		checkTargets(t, rep, w)
		if rep.TmpDirOK == nil || *rep.TmpDirOK || !strings.Contains(rep.TmpDirDetail, "no-such-tmp") {
			t.Errorf("temp folder: %v %q", rep.TmpDirOK, rep.TmpDirDetail)
		}
		tc, _ := rep.Target(4)
		if !strings.Contains(tc.Detail, "not writable: ") {
			t.Errorf("target 4 detail %q does not carry mktemp's reason", tc.Detail)
		}
		if rep.OK() {
			t.Error("report OK with failures")
		}
	})

	t.Run("missing tools are reported, not fatal", func(t *testing.T) {
		cmd, err := PreflightCommand(targets[:1], "")
		if err != nil {
			t.Fatal(err)
		}
		// A PATH with the script's helpers but without rsync.
		bin := t.TempDir()
		for _, tool := range []string{"sh", "tr", "cut", "head", "mktemp", "rm"} {
			p, err := exec.LookPath(tool)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
				t.Fatal(err)
			}
		}
		res, err := proc.Run(context.Background(), proc.Cmd{Path: filepath.Join(bin, "sh"), Args: []string{"-c", cmd}, Env: []string{"PATH=" + bin}})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := ParsePreflight(res.Stdout)
		if err != nil {
			t.Fatalf("%v\n%s", err, res.Stdout)
		}
		if len(rep.Tools) != 1 || rep.Tools[0].OK || rep.Tools[0].Name != "rsync" {
			t.Errorf("tools %+v", rep.Tools)
		}
		if rep.TmpDirOK != nil {
			t.Error("temp folder checked without sqlite targets")
		}
	})
}

func checkTargets(t *testing.T, rep PreflightReport, want map[int]string) {
	t.Helper()
	if len(rep.Targets) != len(want) {
		t.Fatalf("got %d targets, want %d: %+v", len(rep.Targets), len(want), rep.Targets)
	}
	for i, problem := range want {
		tc, ok := rep.Target(i)
		if !ok {
			t.Errorf("target %d missing", i)
			continue
		}
		if tc.OK != (problem == "") || tc.Problem != problem {
			t.Errorf("target %d: %+v, want problem %q", i, tc, problem)
		}
		if !tc.OK && tc.Detail == "" {
			t.Errorf("target %d has no detail", i)
		}
	}
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPreflightScriptAsUnprivilegedUser checks the permission problems,
// which root never has: the script runs as nobody through setpriv.
func TestPreflightScriptAsUnprivilegedUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test switches to user nobody and must run as root (CI does)")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed: %v", err)
	}
	// t.TempDir's parents are 0700; nobody needs a path it can walk.
	root, err := os.MkdirTemp("", "satoru-preflight-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	mkdirs(t, filepath.Join(root, "open"), filepath.Join(root, "closed"), filepath.Join(root, "hidden", "inner"), filepath.Join(root, "tmp"))
	writeFile(t, filepath.Join(root, "open.db"), "x")
	writeFile(t, filepath.Join(root, "closed.db"), "x")
	for path, mode := range map[string]os.FileMode{
		root: 0o755, filepath.Join(root, "open"): 0o755, filepath.Join(root, "closed"): 0o700,
		filepath.Join(root, "hidden"): 0o700, filepath.Join(root, "tmp"): 0o755,
		filepath.Join(root, "open.db"): 0o644, filepath.Join(root, "closed.db"): 0o600,
	} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	targets := []PreflightTarget{
		{Index: 0, Mode: domain.ModeDirectory, Path: filepath.Join(root, "open")},
		{Index: 1, Mode: domain.ModeDirectory, Path: filepath.Join(root, "closed")},
		{Index: 2, Mode: domain.ModeDirectory, Path: filepath.Join(root, "hidden", "inner")},
		{Index: 3, Mode: domain.ModeDirectory, Path: filepath.Join(root, "nothing", "here")},
		{Index: 4, Mode: domain.ModeSQLiteDump, Path: filepath.Join(root, "closed.db")},
		{Index: 5, Mode: domain.ModeSQLiteDump, Path: filepath.Join(root, "open.db")},
		{Index: 6, Mode: domain.ModeSQLiteDump, Path: filepath.Join(root, "hidden", "x.db")},
	}
	cmd, err := PreflightCommand(targets, filepath.Join(root, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := proc.Run(context.Background(), proc.Cmd{Path: setpriv,
		Args: []string{"--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", cmd}})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ParsePreflight(res.Stdout)
	if err != nil {
		t.Fatalf("%v\n%s", err, res.Stdout)
	}
	checkTargets(t, rep, map[int]string{
		0: "",
		1: ProblemNotReadable,
		2: ProblemNotReadable, // exists or not, nobody cannot enter hidden/
		3: ProblemMissing,
		4: ProblemNotReadable,
		5: ProblemTmpNotWritable, // root's 0755 tmp is not nobody's to write
		6: ProblemNotReadable,
	})
	if rep.TmpDirOK == nil || *rep.TmpDirOK {
		t.Errorf("temp folder reported writable for nobody")
	}
}
