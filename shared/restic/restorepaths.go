package restic

import (
	"context"
	"fmt"
	"strings"
)

// IncludePattern turns a literal snapshot path into a restore --include
// pattern that matches only that path: restic reads --include as a glob,
// so the glob characters * ? [ and the escape \ are escaped.
func IncludePattern(p string) string {
	var b strings.Builder
	for _, r := range p {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// RestorePaths restores the literal paths (absolute, as stored in the
// snapshot) of snapshot snapshotID under target: each one lands at
// target + path, with whatever it holds.
func (r Repo) RestorePaths(ctx context.Context, snapshotID, target string, paths []string) error {
	if err := checkSnapshotID(snapshotID); err != nil {
		return fmt.Errorf("restic restore: %w", err)
	}
	inc := make([]string, 0, len(paths))
	for _, p := range paths {
		c, err := cleanPath(p)
		if err != nil {
			return fmt.Errorf("restic restore: %w", err)
		}
		inc = append(inc, IncludePattern(c))
	}
	return notFound(r.Restore(ctx, snapshotID, target, inc...))
}
