package apicmd

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/client"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/units"
)

func (r *runner) targetsAdd(args []string) error {
	var dir, db string
	var excludes stringList
	fs := r.newFlags()
	fs.StringVar(&dir, "dir", "", "directory to back up")
	fs.StringVar(&db, "sqlite", "", "SQLite database to dump")
	fs.Var(&excludes, "exclude", "rsync exclude pattern (repeatable, --dir only)")
	pos, err := parse(fs, targetsHelp, args, "SITE")
	if err != nil {
		return err
	}
	var in client.TargetInput
	switch {
	case dir != "" && db != "":
		return usagef(targetsHelp, "%s: give either --dir or --sqlite, not both", r.cmd)
	case dir != "":
		in = client.TargetInput{Mode: domain.ModeDirectory, Path: dir, Excludes: excludes}
	case db != "":
		if len(excludes) > 0 {
			return usagef(targetsHelp, "%s: --exclude is only for --dir targets", r.cmd)
		}
		in = client.TargetInput{Mode: domain.ModeSQLiteDump, Path: db}
	default:
		return usagef(targetsHelp, "%s: missing --dir or --sqlite", r.cmd)
	}
	sv, err := r.connectSite(pos[0])
	if err != nil {
		return err
	}
	t, err := r.api.AddTarget(r.ctx, sv.UUID, in)
	if err != nil {
		return fmt.Errorf("add %s target %q to site %s: %w", in.Mode, clean(in.Path), clean(sv.Name), err)
	}
	if r.flags.json {
		return printJSON(r.stdout, t.Raw())
	}
	fmt.Fprintf(r.stdout, "added %s target %s to site %s (target_hash %s)\n", t.Mode, clean(t.Path), clean(sv.Name), t.TargetHash)
	return nil
}

func (r *runner) targetsList(args []string) error {
	sv, _, err := r.siteArgs(r.newFlags(), targetsHelp, args)
	if err != nil {
		return err
	}
	list, err := r.api.ListTargets(r.ctx, sv.UUID)
	if err != nil {
		return fmt.Errorf("list targets of site %s: %w", clean(sv.Name), err)
	}
	if r.flags.json {
		return printJSON(r.stdout, list.Raw())
	}
	if len(list.Targets) == 0 {
		fmt.Fprintf(r.stdout, "site %s has no targets (add one with: satoru targets add)\n", clean(sv.Name))
		return nil
	}
	return writeTargets(r.stdout, list.Targets, r.now())
}

// writeTargets is the targets table.
func writeTargets(w io.Writer, targets []domain.Target, now time.Time) error {
	t := newTable(w, "TARGET_HASH", "MODE", "PATH", "EXCLUDES", "LAST SCAN", "FILES", "SIZE")
	for _, tg := range targets {
		scan, files, bytes := "never", "-", "-"
		if s := tg.LastScan; s != nil {
			scan = string(s.Status) + " " + ago(s.At, now)
			if s.Error != "" {
				scan += ": " + clip(s.Error, 60)
			}
			files, bytes = strconv.FormatInt(s.Files, 10), units.Bytes(s.Bytes)
		}
		t.row(tg.TargetHash, string(tg.Mode), tg.Path, orDash(strings.Join(tg.Excludes, " ")), scan, files, bytes)
	}
	return t.flush()
}

func (r *runner) targetsRm(args []string) error {
	sv, rest, err := r.siteArgs(r.newFlags(), targetsHelp, args, "TARGET_HASH")
	if err != nil {
		return err
	}
	hash := rest[0]
	if err := r.api.DeleteTarget(r.ctx, sv.UUID, hash); err != nil {
		return fmt.Errorf("remove target %s of site %s: %w", clean(hash), clean(sv.Name), err)
	}
	if r.flags.json {
		return printValue(r.stdout, map[string]any{"removed": true, "site_uuid": sv.UUID, "target_hash": hash})
	}
	fmt.Fprintf(r.stdout, "removed target %s from site %s\n", clean(hash), clean(sv.Name))
	return nil
}
