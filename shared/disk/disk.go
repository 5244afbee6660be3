// Package disk measures free space and judges it against the configured
// headroom (staging_min_free_bytes / staging_min_free_percent). The
// puller refuses work by it, GET /api/v1/health reports by it and the
// metrics export its floor, so all three give one answer for one disk.
package disk

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

// Space is what statfs says about the filesystem holding a path.
type Space struct {
	// FreeBytes is what an unprivileged user can still write (statfs
	// f_bavail), not counting the blocks reserved for root.
	FreeBytes  int64
	TotalBytes int64
	// CheckedAt is the path that was measured: the path itself, or its
	// nearest existing parent when it does not exist yet.
	CheckedAt string
	// Exists is false when the path does not exist yet (a staging root
	// before the first pull): it will be created where it was measured.
	Exists bool
}

// FreePercent is FreeBytes as a percentage of TotalBytes (0 when the
// size is unknown).
func (s Space) FreePercent() float64 {
	if s.TotalBytes <= 0 {
		return 0
	}
	// Floats: free*100 could overflow int64 on exabyte volumes.
	return float64(s.FreeBytes) / float64(s.TotalBytes) * 100
}

// Stat measures the filesystem holding path. A path that does not exist
// yet is measured at its nearest existing parent, where it will be
// created.
func Stat(path string) (Space, error) {
	at, exists, err := existingAncestor(path)
	if err != nil {
		return Space{}, err
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(at, &st); err != nil {
		return Space{}, fmt.Errorf("statfs %s: %w", at, err)
	}
	return Space{FreeBytes: int64(st.Bavail) * int64(st.Bsize), TotalBytes: int64(st.Blocks) * int64(st.Bsize),
		CheckedAt: at, Exists: exists}, nil
}

// Headroom is the free space a filesystem must keep: at least
// MinFreeBytes and at least MinFreePercent of its size. A zero limit is
// not checked.
type Headroom struct {
	MinFreeBytes   int64
	MinFreePercent int
}

// Validate reports limits out of range.
func (h Headroom) Validate() error {
	if h.MinFreeBytes < 0 || h.MinFreePercent < 0 || h.MinFreePercent > 100 {
		return fmt.Errorf("headroom limits out of range: %d bytes, %d%%", h.MinFreeBytes, h.MinFreePercent)
	}
	return nil
}

// MinBytes is the free space a filesystem of totalBytes must keep: the
// larger of the two limits.
func (h Headroom) MinBytes(totalBytes int64) int64 {
	floor := h.MinFreeBytes
	if pct := int64(float64(totalBytes) * float64(h.MinFreePercent) / 100); pct > floor {
		floor = pct
	}
	return floor
}

// Judge returns nil when s keeps the headroom, else an error wrapping
// ErrLowDiskSpace that names path (the path asked about, which s
// measured) and the limit it is below.
func (h Headroom) Judge(path string, s Space) error {
	where := path
	if !s.Exists {
		where = fmt.Sprintf("%s (not created yet; checked at %s)", path, s.CheckedAt)
	}
	free := s.FreeBytes
	if h.MinFreeBytes > 0 && free < h.MinFreeBytes {
		return fmt.Errorf("%w: %s has %s (%d bytes) free, below the minimum of %s (%d bytes)",
			ErrLowDiskSpace, where, units.Bytes(free), free, units.Bytes(h.MinFreeBytes), h.MinFreeBytes)
	}
	if h.MinFreePercent > 0 && s.TotalBytes > 0 {
		if pct := s.FreePercent(); pct < float64(h.MinFreePercent) {
			return fmt.Errorf("%w: %s has %s (%d bytes) free, %.1f%% of %s, below the minimum of %d%%",
				ErrLowDiskSpace, where, units.Bytes(free), free, pct, units.Bytes(s.TotalBytes), h.MinFreePercent)
		}
	}
	return nil
}

// Check refuses (with an error wrapping ErrLowDiskSpace) when the
// filesystem of any of paths keeps less than the headroom; an error that
// does not wrap it means the space could not be measured.
func (h Headroom) Check(paths ...string) error {
	if err := h.Validate(); err != nil {
		return err
	}
	for _, p := range paths {
		s, err := Stat(p)
		if err != nil {
			return fmt.Errorf("disk space of %s: %w", p, err)
		}
		if err := h.Judge(p, s); err != nil {
			return err
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
