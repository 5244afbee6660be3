package apicmd

import (
	"fmt"

	"github.com/satoru/satoru/cmd/satoru/internal/client"
	"github.com/satoru/satoru/shared/domain"
)

func (r *runner) restore(args []string) error {
	var in client.RestoreInput
	var paths stringList
	var toLocal, toSite string
	var wf waitFlags
	fs := r.newFlags()
	fs.StringVar(&in.SnapshotID, "snapshot", "", "snapshot id (or its short id)")
	fs.Var(&paths, "path", "path inside the snapshot (repeatable)")
	fs.StringVar(&toLocal, "to-local", "", "restore into this folder on the Satoru host")
	fs.StringVar(&toSite, "to-site", "", "restore into this folder on the site's edge host")
	fs.BoolVar(&in.Overwrite, "overwrite", false, "restore into a folder that is not empty")
	fs.BoolVar(&in.DryRun, "dry-run", false, "only report what would change")
	wf.register(fs)
	pos, err := parse(fs, restoreHelp, args, "SITE")
	if err != nil {
		return err
	}
	switch {
	case in.SnapshotID == "":
		return usagef(restoreHelp, "%s: missing --snapshot", r.cmd)
	case len(paths) == 0:
		return usagef(restoreHelp, "%s: missing --path", r.cmd)
	case toLocal != "" && toSite != "":
		return usagef(restoreHelp, "%s: give either --to-local or --to-site, not both", r.cmd)
	case toLocal != "":
		in.Destination = domain.RestoreDestination{LocalPath: toLocal}
	case toSite != "":
		in.Destination = domain.RestoreDestination{ToSite: true, Path: toSite}
	default:
		return usagef(restoreHelp, "%s: missing --to-local DIR or --to-site DIR", r.cmd)
	}
	if err := wf.check(restoreHelp, r.cmd); err != nil {
		return err
	}
	in.Paths = paths
	sv, err := r.connectSite(pos[0])
	if err != nil {
		return err
	}
	acc, err := r.api.CreateRestore(r.ctx, sv.UUID, in)
	if err != nil {
		return fmt.Errorf("queue restore for site %s: %w", clean(sv.Name), err)
	}
	what := "restore job for site " + clean(sv.Name)
	if in.DryRun {
		what = "dry-run " + what
	}
	return r.queued(acc, what, wf, map[string]string{sv.UUID: sv.Name})
}
