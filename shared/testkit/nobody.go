package testkit

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NobodyUID and NobodyGID are the unprivileged user a local attacker is
// played by (nobody/nogroup on Debian).
const (
	NobodyUID = 65534
	NobodyGID = 65534
)

// AsNobodyEnv is set in the environment of a test re-run by RunAsNobody,
// so the test function knows it is the child.
const AsNobodyEnv = "SATORU_TEST_AS_NOBODY"

// RunAsNobody runs the test named name of the current test binary again,
// in a child process as uid/gid 65534, with AsNobodyEnv=1 and env added,
// and returns its combined output and error. The test must run as root
// (CI does); without root it fails, since the point is a real uid switch.
// The binary is copied into a folder nobody can read, since go test's
// build folder is root's alone.
func RunAsNobody(t *testing.T, name string, env ...string) (string, error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("RunAsNobody needs root to switch to uid %d (CI runs as root)", NobodyUID)
	}
	dir, err := os.MkdirTemp("", "satoru-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "test.bin")
	if err := copyFile(os.Args[0], bin, 0o755); err != nil {
		t.Fatalf("copy the test binary: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append([]string{AsNobodyEnv + "=1", "PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: NobodyUID, Gid: NobodyGID}}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// AsNobody reports whether this process is the child RunAsNobody started.
func AsNobody() bool { return os.Getenv(AsNobodyEnv) == "1" }

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
