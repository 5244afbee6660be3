package apicmd

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/client"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/units"
)

func (r *runner) syncNow(args []string) error {
	return r.queueRepoJob(args, syncHelp, "offsite sync", func() (client.Accepted, error) { return r.api.CreateSync(r.ctx) })
}

// queueRepoJob queues a repository-level job (what, e.g. "offsite
// sync") with create and, with --wait, follows it.
func (r *runner) queueRepoJob(args []string, help, what string, create func() (client.Accepted, error)) error {
	var wf waitFlags
	fs := r.newFlags()
	wf.register(fs)
	if _, err := parse(fs, help, args); err != nil {
		return err
	}
	if err := wf.check(help, r.cmd); err != nil {
		return err
	}
	if err := r.connect(); err != nil {
		return err
	}
	acc, err := create()
	if err != nil {
		return fmt.Errorf("queue %s: %w", what, err)
	}
	return r.queued(acc, what+" job", wf, nil)
}

func (r *runner) syncStatus(args []string) error {
	if _, err := r.connectArgs(r.newFlags(), syncHelp, args); err != nil {
		return err
	}
	v, err := r.api.GetSync(r.ctx)
	if err != nil {
		return fmt.Errorf("get offsite sync status: %w", err)
	}
	if r.flags.json {
		return printJSON(r.stdout, v.Raw())
	}
	return writeSync(r.stdout, v, r.now())
}

// writeSync is the offsite copy's detail view.
func writeSync(w io.Writer, v client.SyncView, now time.Time) error {
	kv := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if !v.Configured {
		fmt.Fprintf(kv, "health:\t%s (set restic_b2_repository to copy snapshots offsite)\n", clean(v.Health))
		return kv.Flush()
	}
	pending := fmt.Sprintf("%d snapshot(s)", v.SnapshotsPending)
	if v.OldestPendingAt != nil {
		pending += ", oldest " + ago(*v.OldestPendingAt, now)
	}
	for _, p := range [][2]string{
		{"health", v.Health},
		{"repository", v.Repository},
		{"last status", string(v.Status)},
		{"last attempt", stampPtr(v.LastAttemptAt)},
		{"last success", stampPtr(v.LastSuccessAt)},
		{"last copied", fmt.Sprintf("%d snapshot(s), %s", v.SnapshotsCopied, units.Bytes(v.Bytes))},
		{"pending", pending},
		{"interval", (time.Duration(v.IntervalSeconds) * time.Second).String()},
	} {
		fmt.Fprintf(kv, "%s:\t%s\n", p[0], clean(orDash(p[1])))
	}
	if v.Error != "" {
		fmt.Fprintf(kv, "error:\t%s\n", clean(v.Error))
	}
	return kv.Flush()
}

func (r *runner) health(args []string) error {
	if _, err := r.connectArgs(r.newFlags(), healthHelp, args); err != nil {
		return err
	}
	h, err := r.api.Health(r.ctx)
	if err != nil {
		return fmt.Errorf("get health: %w", err)
	}
	if r.flags.json {
		err = printJSON(r.stdout, h.Raw())
	} else {
		err = writeHealth(r.stdout, h, r.now())
	}
	if err != nil {
		return err
	}
	// A monitoring script checks the exit code: anything but ok fails.
	if h.Status != "ok" {
		return &exitError{code: ExitFailed}
	}
	return nil
}

// writeHealth is the aggregate health report.
func writeHealth(w io.Writer, h client.HealthReport, now time.Time) error {
	fmt.Fprintf(w, "status: %s\n", clean(h.Status))
	for _, p := range h.Problems {
		fmt.Fprintf(w, "  problem: %s\n", clean(p))
	}
	kv := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var checks []string
	for _, s := range h.Services {
		st := "ok"
		if !s.OK {
			st = "FAILED"
			if s.Error != "" {
				st += " (" + s.Error + ")"
			}
		}
		checks = append(checks, s.Name+" "+st)
	}
	fmt.Fprintf(kv, "checks:\t%s\n", clean(orDash(strings.Join(checks, ", "))))
	if l := h.Liveness; l != nil {
		var svcs []string
		for _, s := range l.Services {
			svcs = append(svcs, fmt.Sprintf("%s %s (%d)", s.Service, s.Status, len(s.Instances)))
		}
		line := strings.Join(svcs, ", ")
		if l.Error != "" {
			line += "; error: " + l.Error
		}
		fmt.Fprintf(kv, "services:\t%s\n", clean(orDash(line)))
	}
	// Worker nodes (stagings): what runs there now, or when it went away.
	for _, n := range h.Nodes {
		var live, all []string
		for _, in := range n.Instances {
			all = append(all, in.Service+" "+in.Instance)
			if in.Live {
				live = append(live, in.Service+" "+in.Instance)
			}
		}
		line := fmt.Sprintf("%s, takes %d site(s) (%d partition(s)), holds the baseline of %d site(s), %d running job(s)",
			n.Status, n.SitesAssigned, n.Partitions, n.SitesOwned, n.RunningJobs)
		if n.Status == "live" {
			line += ": " + strings.Join(live, ", ")
		} else {
			line += ", last seen " + ago(n.LastSeen, now) + " (" + n.LastSeen.UTC().Format(time.RFC3339) + "): " + strings.Join(all, ", ")
		}
		fmt.Fprintf(kv, "node %s:\t%s\n", clean(n.Node), clean(line))
	}
	if h.NodesError != "" {
		fmt.Fprintf(kv, "nodes:\terror: %s\n", clean(h.NodesError))
	}
	by := h.Sites.ByStatus
	fmt.Fprintf(kv, "sites:\t%d: %d success, %d warning, %d failed, %d unknown\n", h.Sites.Total,
		by[domain.HealthSuccess], by[domain.HealthWarning], by[domain.HealthFailed], by[domain.HealthUnknown])
	for _, f := range h.Sites.Failing {
		fmt.Fprintf(kv, "  %s:\t%s %s\n", clean(f.Name), f.Status, clean(f.Message))
	}
	sync := h.Sync.Status
	if h.Sync.LastSuccessAt != nil {
		sync += ", last success " + ago(*h.Sync.LastSuccessAt, now)
	}
	if h.Sync.SnapshotsPending > 0 {
		sync += fmt.Sprintf(", %d pending", h.Sync.SnapshotsPending)
	}
	if h.Sync.Error != "" {
		sync += ": " + h.Sync.Error
	}
	fmt.Fprintf(kv, "offsite:\t%s\n", clean(sync))
	check := orDash(h.Check.Status)
	if h.Check.LastSuccessAt != nil {
		check += ", last success " + ago(*h.Check.LastSuccessAt, now)
	}
	if h.Check.Error != "" {
		check += ": " + h.Check.Error
	}
	fmt.Fprintf(kv, "check:\t%s\n", clean(check))
	for _, d := range h.Disks {
		line := fmt.Sprintf("%s %s free of %s (%.1f%%) at %s", d.Status, units.Bytes(d.FreeBytes), units.Bytes(d.TotalBytes), d.FreePercent, d.Path)
		switch {
		case d.Error != "":
			line = d.Status + ": " + d.Error
		case d.Status == "remote":
			// A backend URL has no local free space: no figures to show.
			line = "remote at " + d.Path + ": " + d.Note
		}
		fmt.Fprintf(kv, "disk %s:\t%s\n", clean(d.Name), clean(line))
	}
	return kv.Flush()
}
