package pull

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/satoru/satoru/shared/units"
)

// ErrLowDiskSpace means a filesystem has less free space than the
// configured headroom. Retrying cannot help until an operator frees space.
var ErrLowDiskSpace = errors.New("not enough free disk space")

// CheckHeadroom refuses (with an error wrapping ErrLowDiskSpace) when the
// filesystem of any of paths has less than minFreeBytes available, or
// less than minFreePercent of its size; a zero limit is not checked.
// "Available" is what an unprivileged user can still write (statfs
// f_bavail), not counting the blocks reserved for root. A path that does
// not exist yet (a staging root before the first pull) is checked at its
// nearest existing parent, where it will be created.
func CheckHeadroom(paths []string, minFreeBytes int64, minFreePercent int) error {
	if minFreeBytes < 0 || minFreePercent < 0 || minFreePercent > 100 {
		return fmt.Errorf("headroom limits out of range: %d bytes, %d%%", minFreeBytes, minFreePercent)
	}
	for _, p := range paths {
		at, exists, err := existingAncestor(p)
		if err != nil {
			return fmt.Errorf("disk space of %s: %w", p, err)
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(at, &st); err != nil {
			return fmt.Errorf("disk space of %s: statfs %s: %w", p, at, err)
		}
		free := int64(st.Bavail) * int64(st.Bsize)
		total := int64(st.Blocks) * int64(st.Bsize)
		where := p
		if !exists {
			where = fmt.Sprintf("%s (not created yet; checked at %s)", p, at)
		}
		if minFreeBytes > 0 && free < minFreeBytes {
			return fmt.Errorf("%w: %s has %s (%d bytes) free, below the minimum of %s (%d bytes)",
				ErrLowDiskSpace, where, units.Bytes(free), free, units.Bytes(minFreeBytes), minFreeBytes)
		}
		if minFreePercent > 0 && total > 0 {
			// Floats: free*100 could overflow int64 on exabyte volumes.
			pct := float64(free) / float64(total) * 100
			if pct < float64(minFreePercent) {
				return fmt.Errorf("%w: %s has %s (%d bytes) free, %.1f%% of %s, below the minimum of %d%%",
					ErrLowDiskSpace, where, units.Bytes(free), free, pct, units.Bytes(total), minFreePercent)
			}
		}
	}
	return nil
}

// existingAncestor returns p made absolute if it exists, else its nearest
// parent that does (exists false).
func existingAncestor(p string) (at string, exists bool, err error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", false, err
	}
	for at = abs; ; {
		_, err := os.Stat(at)
		if err == nil {
			return at, at == abs, nil
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return "", false, err
		}
		parent := filepath.Dir(at)
		if parent == at {
			return "", false, err
		}
		at = parent
	}
}
