package puller

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/satoru/satoru/services/puller/internal/preflight"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/tick"
)

// A site's pinned host key lives in <ssh_known_hosts_dir>/<site>.known_hosts,
// written by each preflight. When the site is deleted the file goes too:
// at once where the API shares this host's files (RemoveKnownHosts, wired
// by satoru up), and on every other worker by a sweep at start and then
// every knownHostsSweep, which removes the files of sites the store no
// longer has. A file removed while its site still exists costs nothing:
// the next preflight writes it again from the site's key.

// knownHostsSweep is how often a puller removes known_hosts files of
// deleted sites.
const knownHostsSweep = time.Hour

const knownHostsExt = ".known_hosts"

// RemoveKnownHosts removes a site's known_hosts file (and a leftover
// temporary one) from dir; a missing file is fine.
func RemoveKnownHosts(dir, siteUUID string) error {
	if dir == "" || siteUUID == "" || filepath.Base(siteUUID) != siteUUID || strings.HasPrefix(siteUUID, ".") {
		return fmt.Errorf("remove known_hosts: %q is not a site id", siteUUID)
	}
	path := preflight.KnownHostsPath(dir, siteUUID)
	var errs []error
	for _, p := range []string{path, path + ".tmp"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove known_hosts of site %s: %w", siteUUID, err))
		}
	}
	return errors.Join(errs...)
}

// SiteLister lists every site (store.Store has it).
type SiteLister interface {
	ListSites(ctx context.Context) ([]domain.Site, error)
}

// SweepKnownHosts removes the known_hosts files in dir of sites that
// sites no longer lists, and returns of how many sites it removed files. The folder is
// read before the sites are listed, so a site created meanwhile is listed.
func SweepKnownHosts(ctx context.Context, dir string, sites SiteLister) (int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sweep known_hosts: %w", err)
	}
	list, err := sites.ListSites(ctx)
	if err != nil {
		return 0, fmt.Errorf("sweep known_hosts: list sites: %w", err)
	}
	live := make(map[string]bool, len(list))
	for _, s := range list {
		live[s.UUID] = true
	}
	removed := 0
	var errs []error
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".tmp")
		site, ok := strings.CutSuffix(name, knownHostsExt)
		if !ok || site == "" || live[site] || !e.Type().IsRegular() {
			continue
		}
		live[site] = true // its .tmp and its file are removed together
		if err := RemoveKnownHosts(dir, site); err != nil {
			errs = append(errs, err)
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}

// sweepKnownHosts sweeps now and then every knownHostsSweep until ctx ends.
func sweepKnownHosts(ctx context.Context, dir string, sites SiteLister, log *slog.Logger) {
	sweep := func() {
		n, err := SweepKnownHosts(ctx, dir, sites)
		if err != nil && ctx.Err() == nil {
			log.Warn("removing known_hosts files of deleted sites failed; the next sweep tries again", "dir", dir, "err", err)
		}
		if n > 0 {
			log.Info("removed known_hosts files of deleted sites", "dir", dir, "files", n)
		}
	}
	sweep()
	tick.Every(ctx, knownHostsSweep, func() bool { sweep(); return true })
}
