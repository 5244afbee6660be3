package restic

import (
	"os/exec"
	"path/filepath"
)

// FindBin is the restic binary a Satoru process runs: configured when set
// (restic_bin), else the project's bin/restic (where `make` installs a new
// enough restic when the system one is older than --retry-lock needs),
// else a restic beside the satoru executable on PATH, else restic on PATH.
// It returns "" when there is none; preflight then reports restic missing.
func FindBin(configured string) string {
	if configured != "" {
		return configured
	}
	cands := []string{filepath.Join("bin", "restic")}
	if exe, err := exec.LookPath("satoru"); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(exe), "restic"))
	}
	cands = append(cands, "restic")
	for _, c := range cands {
		p, err := exec.LookPath(c)
		if err != nil {
			continue
		}
		// Absolute, so a later change of working directory cannot
		// change which restic runs.
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
		return p
	}
	return ""
}
