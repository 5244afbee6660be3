package faults

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/realproc"
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
	repoRoot, err = realproc.FindRoot(wd)
	if err != nil {
		return 1, err
	}
	tmp, err := os.MkdirTemp("", "satoru-faults-bin-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)
	satoruBin = filepath.Join(tmp, "satoru")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := realproc.Build(ctx, repoRoot, satoruBin); err != nil {
		return 1, err
	}
	return m.Run(), nil
}
