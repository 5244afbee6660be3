package faults

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// satoruBin is the binary built once for the whole run (TestMain).
var satoruBin string

// repoRoot is the checkout (the folder holding go.work).
var repoRoot string

// defaultParallel is how many scenarios run at once unless -parallel is
// given: they spend most of their time waiting (redelivery after a crash,
// throttled pulls), not computing, so GOMAXPROCS (2 here) would serialise
// the suite for no gain.
const defaultParallel = 12

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", fmt.Sprint(defaultParallel))
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	wd, err := os.Getwd()
	if err != nil {
		return 1, err
	}
	repoRoot, err = findRoot(wd)
	if err != nil {
		return 1, err
	}
	tmp, err := os.MkdirTemp("", "satoru-faults-bin-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)
	satoruBin = filepath.Join(tmp, "satoru")
	if err := build(satoruBin); err != nil {
		return 1, err
	}
	return m.Run(), nil
}

// findRoot walks up from dir to the folder holding go.work.
func findRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work above %s", dir)
		}
	}
}

// build compiles ./cmd/satoru with the tags `make build` uses.
func build(out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build satoru: the go tool is not on PATH: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-tags", "ferretdb_no_postgresql,ferretdb_no_mysql", "-o", out, "./cmd/satoru")
	cmd.Dir = repoRoot
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
