package apicmd

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/client"
	"github.com/satoru/satoru/shared/domain"
)

const policyHelp = `usage:
  satoru sites policy <site>                 show the site's policy
  satoru sites policy <site> [changes ...]   change it (the rest is kept)
      --pause [--reason TEXT] | --resume
                  paused: no scheduled jobs; jobs started by hand still run
                  and are marked
      --every D   back up every D (e.g. 6h, 90m) instead of
                  site_scan_interval_hours
      --cron "M H DOM MON DOW" [--tz ZONE]
                  back up on a 5-field cron schedule in an IANA zone (UTC)
      --default-schedule   follow site_scan_interval_hours again
      --keep-last N --keep-hourly N --keep-daily N --keep-weekly N
      --keep-monthly N --keep-yearly N --keep-within D
                  the site's own retention (replaces restic_retention_policy
                  for its snapshots; the keep flags given form the policy)
      --default-retention  follow restic_retention_policy again
      --window "[NAME=][DAYS ]HH:MM-HH:MM[ ZONE]"   (repeatable)
                  a maintenance window: no job starts in it; DAYS is e.g.
                  mon,tue (default every day); an end at or before the start
                  crosses midnight. Replaces the site's windows.
      --no-windows         remove every maintenance window

` + commonHelp

func (r *runner) sitesPolicy(args []string) error {
	var (
		pause, resume, defSched, defRet, noWin bool
		reason, cron, tz, within               string
		every                                  time.Duration
		windows                                stringList
		keep                                   [6]int
	)
	fs := r.newFlags()
	fs.BoolVar(&pause, "pause", false, "pause the site's scheduled jobs")
	fs.StringVar(&reason, "reason", "", "with --pause: why (shown beside paused)")
	fs.BoolVar(&resume, "resume", false, "resume the site's scheduled jobs")
	fs.DurationVar(&every, "every", 0, "backup interval")
	fs.StringVar(&cron, "cron", "", "5-field cron expression")
	fs.StringVar(&tz, "tz", "", "IANA zone of --cron")
	fs.BoolVar(&defSched, "default-schedule", false, "follow site_scan_interval_hours")
	names := []string{"keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly"}
	for i, n := range names {
		fs.IntVar(&keep[i], n, 0, "retention: "+n)
	}
	fs.StringVar(&within, "keep-within", "", "retention: keep-within duration (e.g. 30d)")
	fs.BoolVar(&defRet, "default-retention", false, "follow restic_retention_policy")
	fs.Var(&windows, "window", "maintenance window (repeatable)")
	fs.BoolVar(&noWin, "no-windows", false, "remove every maintenance window")
	sv, _, err := r.siteArgs(fs, policyHelp, args)
	if err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	switch {
	case pause && resume:
		return usagef(policyHelp, "%s: --pause and --resume exclude each other", r.cmd)
	case given["reason"] && !pause:
		return usagef(policyHelp, "%s: --reason needs --pause", r.cmd)
	case boolCount(given["every"], given["cron"], defSched) > 1:
		return usagef(policyHelp, "%s: give one of --every, --cron, --default-schedule", r.cmd)
	case given["tz"] && !given["cron"]:
		return usagef(policyHelp, "%s: --tz needs --cron", r.cmd)
	case given["every"] && (every < time.Minute || every%time.Minute != 0):
		return usagef(policyHelp, "%s: --every must be whole minutes, at least 1m, got %s", r.cmd, every)
	case len(windows) > 0 && noWin:
		return usagef(policyHelp, "%s: --window and --no-windows exclude each other", r.cmd)
	}
	keepGiven := given["keep-within"]
	for _, n := range names {
		keepGiven = keepGiven || given[n]
	}
	if keepGiven && defRet {
		return usagef(policyHelp, "%s: --keep-* and --default-retention exclude each other", r.cmd)
	}
	cur, err := r.api.GetPolicy(r.ctx, sv.UUID)
	if err != nil {
		return fmt.Errorf("read the policy of site %s: %w", clean(sv.Name), err)
	}
	p := cur.Policy
	changed := false
	if pause || resume {
		p.Paused, p.PausedReason, changed = pause, reason, true
	}
	switch {
	case given["every"]:
		p.Schedule, changed = &domain.BackupSchedule{IntervalMinutes: int(every / time.Minute)}, true
	case given["cron"]:
		p.Schedule, changed = &domain.BackupSchedule{Cron: cron, Timezone: tz}, true
	case defSched:
		p.Schedule, changed = nil, true
	}
	switch {
	case keepGiven:
		p.Retention = &domain.RetentionKeep{KeepLast: keep[0], KeepHourly: keep[1], KeepDaily: keep[2],
			KeepWeekly: keep[3], KeepMonthly: keep[4], KeepYearly: keep[5], KeepWithin: within}
		changed = true
	case defRet:
		p.Retention, changed = nil, true
	}
	switch {
	case len(windows) > 0:
		p.MaintenanceWindows = nil
		for _, w := range windows {
			mw, err := parseWindowFlag(w)
			if err != nil {
				return usagef(policyHelp, "%s: --window %q: %v", r.cmd, w, err)
			}
			p.MaintenanceWindows = append(p.MaintenanceWindows, mw)
		}
		changed = true
	case noWin:
		p.MaintenanceWindows, changed = nil, true
	}
	out := cur
	if changed {
		if out, err = r.api.PutPolicy(r.ctx, sv.UUID, p); err != nil {
			return fmt.Errorf("change the policy of site %s: %w", clean(sv.Name), err)
		}
	}
	if r.flags.json {
		return printJSON(r.stdout, out.Raw())
	}
	if changed {
		fmt.Fprintf(r.stdout, "policy of site %s changed\n", clean(sv.Name))
	}
	return writePolicy(r.stdout, out)
}

func boolCount(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// parseWindowFlag reads "[NAME=][DAYS ]HH:MM-HH:MM[ ZONE]"; the API
// checks the parts.
func parseWindowFlag(s string) (domain.MaintenanceWindow, error) {
	var w domain.MaintenanceWindow
	if name, rest, ok := strings.Cut(s, "="); ok {
		w.Name, s = strings.TrimSpace(name), rest
	}
	f := strings.Fields(s)
	i := 0
	for ; i < len(f) && !strings.Contains(f[i], ":"); i++ {
		for _, d := range strings.Split(f[i], ",") {
			if d != "" {
				w.Days = append(w.Days, d)
			}
		}
	}
	if i == len(f) {
		return w, fmt.Errorf("want HH:MM-HH:MM")
	}
	var ok bool
	if w.Start, w.End, ok = strings.Cut(f[i], "-"); !ok {
		return w, fmt.Errorf("want HH:MM-HH:MM, got %q", f[i])
	}
	switch rest := f[i+1:]; len(rest) {
	case 0:
	case 1:
		w.Timezone = rest[0]
	default:
		return w, fmt.Errorf("unexpected %q after the zone", rest[1])
	}
	return w, nil
}

// writePolicy is a site's policy as a detail view.
func writePolicy(w io.Writer, v client.PolicyView) error {
	p := v.Policy
	state := "active"
	if p.Paused {
		state = "paused"
		if p.PausedReason != "" {
			state += " (" + p.PausedReason + ")"
		}
	}
	sched := "global (site_scan_interval_hours)"
	if s := p.Schedule; s != nil {
		switch {
		case s.Cron != "":
			zone := s.Timezone
			if zone == "" {
				zone = "UTC"
			}
			sched = fmt.Sprintf("cron %q in %s", s.Cron, zone)
		case s.IntervalMinutes > 0:
			sched = "every " + (time.Duration(s.IntervalMinutes) * time.Minute).String()
		}
	}
	ret := "global (restic_retention_policy)"
	if r := p.Retention; r != nil {
		ret = retentionText(*r)
	}
	kv := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	rows := [][2]string{{"state", state}, {"schedule", sched}, {"retention", ret}}
	for _, at := range v.NextCronRuns {
		rows = append(rows, [2]string{"next run", stamp(at)})
	}
	if len(p.MaintenanceWindows) == 0 {
		rows = append(rows, [2]string{"windows", "none"})
	}
	for _, mw := range p.MaintenanceWindows {
		rows = append(rows, [2]string{"window", windowText(mw)})
	}
	if v.InWindow != "" {
		until := ""
		if v.WindowEndsAt != nil {
			until = " until " + stamp(*v.WindowEndsAt)
		}
		rows = append(rows, [2]string{"now", "inside maintenance window " + v.InWindow + until})
	}
	for _, r := range rows {
		fmt.Fprintf(kv, "%s:\t%s\n", r[0], clean(r[1]))
	}
	return kv.Flush()
}

func retentionText(r domain.RetentionKeep) string {
	var parts []string
	for _, kv := range []struct {
		k string
		v int
	}{{"keep_last", r.KeepLast}, {"keep_hourly", r.KeepHourly}, {"keep_daily", r.KeepDaily},
		{"keep_weekly", r.KeepWeekly}, {"keep_monthly", r.KeepMonthly}, {"keep_yearly", r.KeepYearly}} {
		if kv.v > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", kv.k, kv.v))
		}
	}
	if r.KeepWithin != "" {
		parts = append(parts, "keep_within="+r.KeepWithin)
	}
	return strings.Join(parts, " ")
}

func windowText(mw domain.MaintenanceWindow) string {
	days := "every day"
	if len(mw.Days) > 0 {
		days = strings.Join(mw.Days, ",")
	}
	zone := mw.Timezone
	if zone == "" {
		zone = "UTC"
	}
	s := fmt.Sprintf("%s %s-%s %s", days, mw.Start, mw.End, zone)
	if mw.Name != "" {
		s = mw.Name + ": " + s
	}
	return s
}

// policySummary is a site's policy in one line, for sites show.
func policySummary(p *domain.SitePolicy) string {
	if p.IsZero() {
		return "global (satoru sites policy <site> to change)"
	}
	var parts []string
	if p.Paused {
		parts = append(parts, "paused")
	}
	if s := p.Schedule; s != nil && s.Cron != "" {
		parts = append(parts, "cron "+s.Cron)
	} else if s != nil && s.IntervalMinutes > 0 {
		parts = append(parts, "every "+(time.Duration(s.IntervalMinutes)*time.Minute).String())
	}
	if p.Retention != nil {
		parts = append(parts, "retention "+retentionText(*p.Retention))
	}
	if n := len(p.MaintenanceWindows); n > 0 {
		parts = append(parts, fmt.Sprintf("%d maintenance window(s)", n))
	}
	return strings.Join(parts, ", ")
}
