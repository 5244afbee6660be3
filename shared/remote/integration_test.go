package remote_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/testkit"
)

// These tests run against real sshd edge hosts (testkit), so the texts
// and exit codes classified and parsed here are the real ones.

func sshConfig(h *testkit.EdgeHost) remote.SSHConfig {
	return remote.SSHConfig{
		Host:           h.Host,
		Port:           h.Port,
		User:           h.User,
		KeyPath:        h.KeyPath,
		KnownHostsFile: h.KnownHostsFile,
		HostKeyAlias:   h.HostKeyAlias,
		ConnectTimeout: 5 * time.Second,
	}
}

func TestPreflightOnEdgeHost(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	ctx := context.Background()

	marker := filepath.Join(os.TempDir(), "satoru-preflight-marker-"+strconv.Itoa(h.Port))
	os.Remove(marker)
	t.Cleanup(func() { os.Remove(marker) })
	www := filepath.Join(h.Dir, "www")
	odd := filepath.Join(h.Dir, `odd 'single' "double" ; $(touch `+marker+`) `+"`touch "+marker+"`"+` & end`)
	oddMissing := odd + " $(touch " + marker + ")-missing"
	db := filepath.Join(h.Dir, "app.db")
	tmp := filepath.Join(h.Dir, "tmp")
	for _, d := range []string{www, odd, tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := proc.Run(ctx, proc.Cmd{Path: "sqlite3", Args: []string{db, "CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('a');"}}); err != nil {
		t.Fatal(err)
	}

	targets := []remote.PreflightTarget{
		{Index: 0, Mode: domain.ModeDirectory, Path: www},
		{Index: 1, Mode: domain.ModeSQLiteDump, Path: db},
		{Index: 2, Mode: domain.ModeDirectory, Path: filepath.Join(h.Dir, "no-such-dir")},
		{Index: 3, Mode: domain.ModeDirectory, Path: odd},
		{Index: 4, Mode: domain.ModeDirectory, Path: oddMissing},
		{Index: 5, Mode: domain.ModeSQLiteDump, Path: www},
	}
	start := time.Now()
	rep, err := runPreflight(ctx, sshConfig(h), targets, tmp)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("preflight round trip: %v", time.Since(start))

	want := map[int]string{0: "", 1: "", 2: remote.ProblemMissing, 3: "", 4: remote.ProblemMissing, 5: remote.ProblemNotAFile}
	for i, problem := range want {
		tc, ok := rep.Target(i)
		if !ok {
			t.Errorf("no result for target %d", i)
			continue
		}
		if tc.OK != (problem == "") || tc.Problem != problem {
			t.Errorf("target %d (%s): %+v, want problem %q", i, targets[i].Path, tc, problem)
		}
	}
	names := map[string]string{"rsync": "rsync", "sqlite3": "3.", "gzip": "gzip", "mktemp": ""}
	if len(rep.Tools) != len(names) {
		t.Errorf("tools %+v", rep.Tools)
	}
	for _, tool := range rep.Tools {
		if !tool.OK || !strings.Contains(tool.Version, names[tool.Name]) {
			t.Errorf("tool %+v", tool)
		}
	}
	if rep.TmpDirOK == nil || !*rep.TmpDirOK {
		t.Errorf("temp folder: %v %q", rep.TmpDirOK, rep.TmpDirDetail)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a target path ran as shell code on the edge host: the marker file exists")
	}

	// The same odd path through CommandLine, as other remote commands use it.
	res, err := remote.RunSSH(ctx, sshConfig(h), "ls", remote.CommandLine("ls", "-d", "--", odd), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSuffix(string(res.Stdout), "\n"); got != odd {
		t.Errorf("ls printed %q, want %q", got, odd)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("CommandLine let a path run as shell code")
	}
}

func TestSSHFailuresFromRealSSHD(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	other := testkit.StartEdgeHost(t) // its host key and client key are the wrong ones
	emptyKnownHosts := filepath.Join(t.TempDir(), "empty_known_hosts")
	if err := os.WriteFile(emptyKnownHosts, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wrongPin := filepath.Join(t.TempDir(), "wrong_known_hosts")
	if err := os.WriteFile(wrongPin, []byte(h.HostKeyAlias+" "+other.HostKeyLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	silent := silentListener(t)

	tests := []struct {
		name      string
		mutate    func(*remote.SSHConfig)
		want      error
		permanent bool
	}{
		{"wrong pinned host key", func(c *remote.SSHConfig) { c.KnownHostsFile = wrongPin }, remote.ErrHostKeyMismatch, true},
		{"no pinned host key", func(c *remote.SSHConfig) { c.KnownHostsFile = emptyKnownHosts }, remote.ErrHostKeyUnknown, true},
		{"client key not authorized", func(c *remote.SSHConfig) { c.KeyPath = other.KeyPath }, remote.ErrAuthRefused, true},
		{"closed port", func(c *remote.SSHConfig) { c.Port = testkit.FreePort(t) }, remote.ErrConnRefused, false},
		{"server never speaks", func(c *remote.SSHConfig) { c.Port = silent; c.ConnectTimeout = time.Second }, remote.ErrConnTimeout, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := sshConfig(h)
			tc.mutate(&cfg)
			_, err := remote.RunSSH(context.Background(), cfg, "probe", "echo should-not-run", 30*time.Second)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var ee *proc.ExitError
			if !errors.As(err, &ee) || ee.Code != 255 {
				t.Fatalf("err %v does not carry ssh's exit 255", err)
			}
			if got := remote.ClassifySSHError(ee.Code, ee.Stderr); got != tc.want {
				t.Errorf("ClassifySSHError(255, %q) = %v, want %v", ee.Stderr, got, tc.want)
			}
			if remote.IsPermanent(err) != tc.permanent {
				t.Errorf("IsPermanent = %v, want %v", !tc.permanent, tc.permanent)
			}
		})
	}

	t.Run("remote command failure is not an ssh failure", func(t *testing.T) {
		_, err := remote.RunSSH(context.Background(), sshConfig(h), "probe", "echo 'Permission denied' >&2; exit 3", 30*time.Second)
		var ee *proc.ExitError
		if !errors.As(err, &ee) || ee.Code != 3 {
			t.Fatalf("err = %v, want exit 3", err)
		}
		if remote.ClassifySSHError(ee.Code, ee.Stderr) != nil || remote.IsPermanent(err) {
			t.Errorf("remote exit 3 classified as an ssh failure: %v", err)
		}
	})
}

// silentListener accepts connections and never answers, like a host whose
// sshd hangs: ssh must give up at its connect timeout.
func silentListener(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

func TestScanHostKeys(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	ctx := context.Background()
	keys, err := remote.ScanHostKeys(ctx, h.Host, h.Port, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 || keys[0].String() != h.HostKeyLine {
		t.Fatalf("scanned %+v, want first %q", keys, h.HostKeyLine)
	}
	// The fingerprint an operator compares must be ssh-keygen's.
	pub := filepath.Join(t.TempDir(), "host.pub")
	if err := os.WriteFile(pub, []byte(h.HostKeyLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := proc.Run(ctx, proc.Cmd{Path: "ssh-keygen", Args: []string{"-lf", pub}})
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(res.Stdout)); len(f) < 2 || f[1] != keys[0].Fingerprint() {
		t.Errorf("ssh-keygen says %q, Fingerprint() %q", res.Stdout, keys[0].Fingerprint())
	}
	// A key learned by scanning pins the host for real ssh.
	kh := filepath.Join(t.TempDir(), "kh")
	if err := os.WriteFile(kh, []byte(keys[0].KnownHostsLine("scanned-alias")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := sshConfig(h)
	cfg.KnownHostsFile, cfg.HostKeyAlias = kh, "scanned-alias"
	if _, err := remote.RunSSH(ctx, cfg, "probe", "true", 30*time.Second); err != nil {
		t.Fatal(err)
	}

	_, err = remote.ScanHostKeys(ctx, "127.0.0.1", testkit.FreePort(t), 2*time.Second)
	if !errors.Is(err, remote.ErrNoHostKeys) {
		t.Errorf("closed port: %v, want ErrNoHostKeys", err)
	}
	if _, err := remote.ScanHostKeys(ctx, "-oProxyCommand=x", 22, time.Second); !errors.Is(err, remote.ErrInvalidConfig) {
		t.Errorf("dash host: %v, want ErrInvalidConfig", err)
	}
}

func TestRsyncWithSSHCommand(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	ctx := context.Background()
	src := filepath.Join(h.Dir, "src")
	files := map[string]string{
		"a.txt":                        "alpha",
		"sub/b.txt":                    "beta",
		"it's $(odd) `name` ; & x.txt": "gamma",
	}
	for name, content := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e, err := remote.SSHCommandForRsync(sshConfig(h))
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if _, err := proc.Run(ctx, proc.Cmd{Step: "pull", Path: "rsync",
		Args: []string{"-a", "-e", e, "--", h.Host + ":" + src + "/", dst + "/"}, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		b, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || string(b) != content {
			t.Errorf("%s: %q %v", name, b, err)
		}
	}

	// ssh's failures reach rsync's stderr and classify the same way.
	other := testkit.StartEdgeHost(t)
	wrongPin := filepath.Join(t.TempDir(), "kh")
	if err := os.WriteFile(wrongPin, []byte(h.HostKeyAlias+" "+other.HostKeyLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := sshConfig(h)
	cfg.KnownHostsFile = wrongPin
	e, err = remote.SSHCommandForRsync(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = proc.Run(ctx, proc.Cmd{Step: "pull", Path: "rsync",
		Args: []string{"-a", "-e", e, "--", h.Host + ":" + src + "/", t.TempDir() + "/"}, Timeout: time.Minute})
	if err = remote.ClassifyRunError(err); !errors.Is(err, remote.ErrHostKeyMismatch) {
		t.Errorf("rsync with a wrong pin: %v, want ErrHostKeyMismatch", err)
	}
}

func TestControlMasterSharesOneConnection(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	ctx := context.Background()
	// Unix socket paths are short (108 bytes): t.TempDir() can be too long.
	dir, err := os.MkdirTemp("", "scm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := sshConfig(h)
	cfg.ControlPath = filepath.Join(dir, "%C")
	cfg.ControlPersist = 30 * time.Second
	exit, err := remote.SSHControlArgs(cfg, "exit")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = proc.Run(context.Background(), proc.Cmd{Path: "ssh", Args: exit, Timeout: 10 * time.Second})
	})

	start := time.Now()
	res, err := remote.RunSSH(ctx, cfg, "first", "echo $PPID", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	// The backgrounded master must not hold the first command's output
	// open, or every first command of a job would wait out proc's grace.
	if first >= proc.KillGrace {
		t.Errorf("first command over a new master took %v", first)
	}
	start = time.Now()
	res2, err := remote.RunSSH(ctx, cfg, "second", "echo $PPID", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first command %v, second over the master %v", first, time.Since(start))

	check, err := remote.SSHControlArgs(cfg, "check")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proc.Run(ctx, proc.Cmd{Path: "ssh", Args: check, Timeout: 10 * time.Second}); err != nil {
		t.Fatalf("master not running: %v", err)
	}
	if string(res.Stdout) == "" || string(res2.Stdout) == "" {
		t.Errorf("outputs %q %q", res.Stdout, res2.Stdout)
	}

	// rsync rides the same master.
	e, err := remote.SSHCommandForRsync(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.Dir, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := proc.Run(ctx, proc.Cmd{Path: "rsync", Args: []string{"-a", "-e", e, "--", h.Host + ":" + h.Dir + "/f", t.TempDir() + "/"}, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, err := proc.Run(ctx, proc.Cmd{Path: "ssh", Args: exit, Timeout: 10 * time.Second}); err != nil {
		t.Fatalf("closing the master: %v", err)
	}
	if _, err := proc.Run(ctx, proc.Cmd{Path: "ssh", Args: check, Timeout: 10 * time.Second}); err == nil {
		t.Error("master still answers after exit")
	}
}

func TestLocalToolVersion(t *testing.T) {
	tests := []struct{ name, prefix string }{
		{"ssh", "OpenSSH_"},
		{"rsync", "rsync  version"},
		{"gzip", "gzip "},
		{"sqlite3", "3."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := remote.LocalToolVersion(context.Background(), tc.name, "")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(v, tc.prefix) || strings.Contains(v, "\n") {
				t.Errorf("version %q, want one line starting %q", v, tc.prefix)
			}
		})
	}
	if _, err := remote.LocalToolVersion(context.Background(), "restic", "/nonexistent/restic"); !errors.Is(err, proc.ErrNotFound) {
		t.Errorf("missing tool: %v, want proc.ErrNotFound", err)
	}
}

func TestRsyncPullFromEdgeHost(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	ctx := context.Background()
	src := filepath.Join(h.Dir, "site data 'quoted' $(x)")
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a.txt", "alpha")
	write("sub/b.txt", "beta")
	write("cache/skip.bin", "excluded")
	staging := t.TempDir()

	pull := func() remote.RsyncStats {
		t.Helper()
		args, err := remote.RsyncPullArgs(remote.RsyncPull{SSH: sshConfig(h), RemoteDir: src, LocalDir: staging,
			Excludes: []string{"cache/"}, IOTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		res, err := proc.Run(ctx, proc.Cmd{Step: "pull", Path: "rsync", Args: args, Timeout: time.Minute})
		if err != nil {
			t.Fatal(remote.ClassifyRunError(err))
		}
		st, err := remote.ParseRsyncStats(res.Stdout)
		if err != nil {
			t.Fatalf("%v in %q", err, res.Stdout)
		}
		return st
	}

	st := pull()
	if st.RegularFiles != 2 || st.TransferredFiles != 2 || st.TotalSize != int64(len("alpha")+len("beta")) {
		t.Errorf("first pull stats %+v", st)
	}
	if _, err := os.Stat(filepath.Join(staging, "cache")); err == nil {
		t.Error("excluded folder was pulled")
	}
	if b, err := os.ReadFile(filepath.Join(staging, "sub", "b.txt")); err != nil || string(b) != "beta" {
		t.Errorf("sub/b.txt: %q %v", b, err)
	}

	// Nothing changed: nothing moves.
	if st := pull(); st.TransferredFiles != 0 {
		t.Errorf("unchanged re-pull transferred %d files", st.TransferredFiles)
	}
	// A deletion on the site reaches staging.
	if err := os.Remove(filepath.Join(src, "a.txt")); err != nil {
		t.Fatal(err)
	}
	if st := pull(); st.DeletedFiles != 1 {
		t.Errorf("deleted %d files, want 1", st.DeletedFiles)
	}
	if _, err := os.Stat(filepath.Join(staging, "a.txt")); err == nil {
		t.Error("a.txt still in staging after the site deleted it")
	}
}

func TestSQLiteDumpOverSSH(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	ctx := context.Background()
	db := filepath.Join(h.Dir, "app.db")
	tmp := filepath.Join(h.Dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := proc.Run(ctx, proc.Cmd{Path: "sqlite3", Args: []string{db, "PRAGMA journal_mode=WAL; CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('from-the-edge');"}}); err != nil {
		t.Fatal(err)
	}
	cmdline, err := remote.SQLiteDumpCommand(db, tmp)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := remote.SSHCmd(sshConfig(h), "dump", cmdline)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "app.db.gz")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = f
	cmd.Timeout = time.Minute
	_, err = proc.Run(ctx, cmd)
	f.Close()
	if err != nil {
		t.Fatal(remote.ClassifyRunError(err))
	}
	restored := filepath.Join(t.TempDir(), "restored.db")
	if _, err := proc.Run(ctx, proc.Cmd{Path: "sh", Args: []string{"-c", `gzip -dc "$1" > "$2"`, "sh", out, restored}}); err != nil {
		t.Fatal(err)
	}
	res, err := proc.Run(ctx, proc.Cmd{Path: "sqlite3", Args: []string{restored, "SELECT v FROM t"}})
	if err != nil || string(res.Stdout) != "from-the-edge\n" {
		t.Fatalf("restored dump: %q %v", res.Stdout, err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("remote temp folder not cleaned: %v", left)
	}

	// A missing database fails with the backup code and leaves nothing.
	cmdline, _ = remote.SQLiteDumpCommand(filepath.Join(h.Dir, "missing.db"), tmp)
	_, err = remote.RunSSH(ctx, sshConfig(h), "dump", cmdline, time.Minute)
	var ee *proc.ExitError
	if !errors.As(err, &ee) || ee.Code != remote.DumpExitBackup || !strings.Contains(ee.Stderr, "missing.db") {
		t.Errorf("missing database: %v, want exit %d naming the file", err, remote.DumpExitBackup)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("remote temp folder not cleaned after failure: %v", left)
	}
	if _, err := os.Stat(filepath.Join(h.Dir, "missing.db")); err == nil {
		t.Error("the dump created the missing database on the site")
	}
}

// runPreflight runs PreflightCommand over ssh and parses its report, as
// the puller's preflight does over its master connection.
func runPreflight(ctx context.Context, c remote.SSHConfig, targets []remote.PreflightTarget, tmpDir string) (remote.PreflightReport, error) {
	cmdline, err := remote.PreflightCommand(targets, tmpDir)
	if err != nil {
		return remote.PreflightReport{}, err
	}
	res, err := remote.RunSSH(ctx, c, "preflight", cmdline, time.Minute)
	if err != nil {
		return remote.PreflightReport{}, err
	}
	return remote.ParsePreflight(res.Stdout)
}
