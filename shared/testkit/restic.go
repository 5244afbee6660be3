package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// ResticBin finds restic for a test: $SATORU_RESTIC_BIN, else the
// checkout's bin/restic (where `make test` installs 0.18.1), else PATH.
// Nothing skips: a missing restic fails the test.
func ResticBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SATORU_RESTIC_BIN"); p != "" {
		return p
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		p := filepath.Join(filepath.Dir(file), "..", "..", "bin", "restic")
		if _, err := os.Stat(p); err == nil {
			if abs, err := filepath.Abs(p); err == nil {
				return abs
			}
			return p
		}
	}
	p, err := exec.LookPath("restic")
	if err != nil {
		t.Fatal("restic not found: set SATORU_RESTIC_BIN or run `make` to install bin/restic")
	}
	return p
}
