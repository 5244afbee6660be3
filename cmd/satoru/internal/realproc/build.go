package realproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Tags are the build tags `make build` uses.
const Tags = "ferretdb_no_postgresql,ferretdb_no_mysql"

// FindRoot walks up from dir to the checkout: the folder holding go.work.
func FindRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work above %s", dir)
		}
	}
}

// Build compiles root's ./cmd/satoru into out with the tags `make build`
// uses, so a test runs the code of the tree it belongs to.
func Build(ctx context.Context, root, out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build satoru: the go tool is not on PATH: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-tags", Tags, "-o", out, "./cmd/satoru")
	cmd.Dir = root
	outp, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("go build ./cmd/satoru: exit %d: %s", ee.ExitCode(), strings.TrimSpace(string(outp)))
		}
		return fmt.Errorf("go build ./cmd/satoru: %w", err)
	}
	return nil
}

// ResticBin is root's bin/restic (`make tools-test` installs 0.18.1
// there), else restic on PATH: the one satoru finds with Env's PATH.
func ResticBin(root string) (string, error) {
	if p := filepath.Join(root, "bin", "restic"); fileExists(p) {
		return p, nil
	}
	p, err := exec.LookPath("restic")
	if err != nil {
		return "", fmt.Errorf("restic not found in %s/bin or on PATH (make tools-test installs it)", root)
	}
	return p, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Binary is the satoru binary a benchmark runs: given (its -satoru-bin
// flag, made absolute and checked), or root's ./cmd/satoru built into a
// temporary folder of tb.
func Binary(tb testing.TB, given, root string) string {
	tb.Helper()
	if given != "" {
		p, err := filepath.Abs(given)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("-satoru-bin: %v (make build makes bin/satoru)", err)
		}
		return p
	}
	out := filepath.Join(tb.TempDir(), "satoru")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	if err := Build(ctx, root, out); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("built %s in %s", out, time.Since(began).Round(time.Millisecond))
	return out
}
