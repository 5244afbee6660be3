package apicmd

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/client"
	"github.com/satoru/satoru/shared/units"
)

func (r *runner) checkNow(args []string) error {
	return r.queueRepoJob(args, checkHelp, "repository check", func() (client.Accepted, error) { return r.api.CreateCheck(r.ctx) })
}

func (r *runner) checkStatus(args []string) error {
	if _, err := r.connectArgs(r.newFlags(), checkHelp, args); err != nil {
		return err
	}
	v, err := r.api.GetCheck(r.ctx)
	if err != nil {
		return fmt.Errorf("get repository check status: %w", err)
	}
	if r.flags.json {
		return printJSON(r.stdout, v.Raw())
	}
	return writeCheck(r.stdout, v, r.now())
}

// writeCheck is the repository check's detail view, one line per
// repository checked.
func writeCheck(w io.Writer, v client.CheckView, now time.Time) error {
	kv := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	interval := "never scheduled (restic_check_interval_hours 0)"
	if v.IntervalSeconds > 0 {
		interval = (time.Duration(v.IntervalSeconds) * time.Second).String()
	}
	for _, p := range [][2]string{
		{"health", v.Health},
		{"last status", string(v.Status)},
		{"last attempt", stampPtr(v.LastAttemptAt)},
		{"last success", stampPtr(v.LastSuccessAt)},
		{"read data subset", v.Subset},
		{"interval", interval},
	} {
		fmt.Fprintf(kv, "%s:\t%s\n", p[0], clean(orDash(p[1])))
	}
	if v.ActiveJob != nil {
		fmt.Fprintf(kv, "running:\tjob %s (%s)\n", clean(v.ActiveJob.ID), clean(string(v.ActiveJob.Status)))
	}
	for _, rp := range v.Repositories {
		line := fmt.Sprintf("%s %s", rp.Status, rp.Repository)
		if rp.CheckedAt != nil {
			line += ", " + ago(*rp.CheckedAt, now)
		}
		if rp.Error != "" {
			line += ": " + rp.Error
		}
		fmt.Fprintf(kv, "%s:\t%s\n", clean(rp.Name), clean(line))
	}
	return kv.Flush()
}

// snapshotsDiff is `satoru snapshots diff <id> <against>`.
func (r *runner) snapshotsDiff(args []string) error {
	pos, err := r.connectArgs(r.newFlags(), snapshotsHelp, args, "ID", "AGAINST")
	if err != nil {
		return err
	}
	d, err := r.api.SnapshotDiff(r.ctx, pos[0], pos[1])
	if err != nil {
		return fmt.Errorf("diff snapshot %s against %s: %w", clean(pos[0]), clean(pos[1]), err)
	}
	if r.flags.json {
		return printJSON(r.stdout, d.Raw())
	}
	return writeDiff(r.stdout, d)
}

// writeDiff lists the paths that differ, one per line with restic's
// marker (+ added, - removed, M changed) and the size, then the totals.
func writeDiff(w io.Writer, d client.SnapshotDiff) error {
	fmt.Fprintf(w, "snapshot %s against %s\n", shortID(d.SnapshotID), shortID(d.Against))
	for _, l := range []struct {
		mark    string
		entries []client.DiffEntry
	}{{"+", d.Added}, {"-", d.Removed}, {"M", d.Changed}} {
		for _, e := range l.entries {
			size := units.Bytes(e.Size)
			if strings.HasSuffix(e.Path, "/") {
				size = "dir"
			} else if l.mark == "M" {
				size = units.Bytes(e.OldSize) + " -> " + units.Bytes(e.Size)
			}
			fmt.Fprintf(w, "%s %s  (%s)\n", l.mark, clean(e.Path), size)
		}
	}
	t := d.Totals
	fmt.Fprintf(w, "added %d (%s), removed %d (%s), changed %d (%+d bytes)\n",
		t.Added, units.Bytes(t.AddedBytes), t.Removed, units.Bytes(t.RemovedBytes), t.Changed, t.ChangedBytes)
	if d.Truncated {
		fmt.Fprintln(w, "(lists truncated; --json has the same lists, the totals count every path)")
	}
	return nil
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
