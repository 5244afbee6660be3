package apicmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/client"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/units"
)

// runTypes are the job types `satoru run` queues.
var runTypes = []string{string(domain.JobPreflight), string(domain.JobBackup), string(domain.JobRetention), string(domain.JobVerify)}

// waitFlags are --wait and --timeout.
type waitFlags struct {
	wait    bool
	timeout time.Duration
}

func (w *waitFlags) register(fs interface {
	BoolVar(*bool, string, bool, string)
	DurationVar(*time.Duration, string, time.Duration, string)
}) {
	fs.BoolVar(&w.wait, "wait", false, "follow the job until it ends; exit with its code")
	fs.DurationVar(&w.timeout, "timeout", 0, "with --wait: stop waiting after this long (e.g. 30m)")
}

func (w waitFlags) check(help, cmd string) error {
	switch {
	case w.timeout < 0:
		return usagef(help, "%s: --timeout must not be negative", cmd)
	case w.timeout > 0 && !w.wait:
		return usagef(help, "%s: --timeout needs --wait", cmd)
	}
	return nil
}

func (r *runner) runJob(args []string) error {
	var wf waitFlags
	var force bool
	fs := r.newFlags()
	wf.register(fs)
	fs.BoolVar(&force, "force", false, "start the job even inside a maintenance window of the site")
	pos, err := parse(fs, runHelp, args, "SITE", "TYPE")
	if err != nil {
		return err
	}
	if !slices.Contains(runTypes, pos[1]) {
		return usagef(runHelp, "%s: unknown job type %q (want %s)", r.cmd, pos[1], strings.Join(runTypes, ", "))
	}
	if err := wf.check(runHelp, r.cmd); err != nil {
		return err
	}
	sv, err := r.connectSite(pos[0])
	if err != nil {
		return err
	}
	create := r.api.CreateJob
	if force {
		create = r.api.CreateJobForced
	}
	acc, err := create(r.ctx, sv.UUID, domain.JobType(pos[1]))
	if err != nil {
		return fmt.Errorf("queue %s job for site %s: %w", pos[1], clean(sv.Name), err)
	}
	return r.queued(acc, fmt.Sprintf("%s job for site %s", pos[1], clean(sv.Name)), wf, map[string]string{sv.UUID: sv.Name})
}

// queued reports a queued job and, with --wait, follows it to its end.
func (r *runner) queued(acc client.Accepted, what string, wf waitFlags, names map[string]string) error {
	if !wf.wait {
		if r.flags.json {
			return printJSON(r.stdout, acc.Raw())
		}
		fmt.Fprintf(r.stdout, "queued %s: job %s\n", what, acc.JobID)
		fmt.Fprintf(r.stdout, "follow it with: satoru jobs logs %s --follow\n", acc.JobID)
		return nil
	}
	fmt.Fprintf(r.progress(), "queued %s: job %s\n", what, acc.JobID)
	return r.wait(acc.JobID, wf.timeout, names)
}

// wait follows a job, printing its events as progress, then prints the
// ended job and returns its exit code as an error (nil for success).
func (r *runner) wait(id string, timeout time.Duration, names map[string]string) error {
	ctx := r.ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	out := r.progress()
	f := &follower{api: r.api, poll: r.poll, check: r.check, note: r.stderr,
		emit: func(ev domain.JobEvent) { writeEvent(out, ev) }}
	job, err := f.follow(ctx, id)
	switch {
	case err == nil:
	case r.ctx.Err() != nil:
		return &exitError{ExitInterrupted, fmt.Sprintf("stopped waiting; job %s keeps running (satoru jobs logs %s --follow)", id, id)}
	case errors.Is(err, context.DeadlineExceeded) && timeout > 0:
		return &exitError{ExitTimeout, fmt.Sprintf("job %s still not finished after --timeout %s; it keeps running (satoru jobs logs %s --follow)", id, timeout, id)}
	default:
		return err
	}
	if r.flags.json {
		if err := printJSON(r.stdout, job.Raw()); err != nil {
			return err
		}
	} else if err := writeJob(r.stdout, job.Job, names, r.now()); err != nil {
		return err
	}
	if code := ExitCode(job.Status); code != ExitOK {
		return &exitError{code: code, msg: fmt.Sprintf("job %s ended %s", id, job.Status)}
	}
	return nil
}

func (r *runner) jobsList(args []string) error {
	var site string
	var q client.JobQuery
	fs := r.newFlags()
	fs.StringVar(&site, "site", "", "only this site's jobs (name or uuid)")
	fs.StringVar(&q.Type, "type", "", "only jobs of this type")
	fs.StringVar(&q.Status, "status", "", "only jobs in this status")
	fs.IntVar(&q.Limit, "limit", 0, "at most this many (API default 50, at most 500)")
	if _, err := parse(fs, jobsHelp, args); err != nil {
		return err
	}
	if q.Limit < 0 {
		return usagef(jobsHelp, "%s: --limit must not be negative", r.cmd)
	}
	if err := r.connect(); err != nil {
		return err
	}
	sites, err := r.api.ListSites(r.ctx)
	if err != nil {
		return fmt.Errorf("list sites: %w", err)
	}
	if site != "" {
		sv, err := resolveSite(sites.Sites, site)
		if err != nil {
			return err
		}
		q.SiteUUID = sv.UUID
	}
	list, err := r.api.ListJobs(r.ctx, q)
	if err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	if r.flags.json {
		return printJSON(r.stdout, list.Raw())
	}
	return writeJobs(r.stdout, list.Jobs, siteNames(sites.Sites), r.now())
}

// writeJobs is the jobs table.
func writeJobs(w io.Writer, jobs []domain.Job, names map[string]string, now time.Time) error {
	if len(jobs) == 0 {
		_, err := fmt.Fprintln(w, "no jobs")
		return err
	}
	t := newTable(w, "JOB", "TYPE", "SITE", "STATUS", "CREATED", "TOOK", "ERROR")
	for _, j := range jobs {
		t.row(j.ID, string(j.Type), siteLabel(j.SiteUUID, names), string(j.Status),
			ago(j.CreatedAt, now), took(j.StartedAt, j.FinishedAt), orDash(clip(j.Error, 80)))
	}
	return t.flush()
}

// siteLabel is a site's name, its uuid if unknown (removed), or
// "(repository)" for repository-level jobs.
func siteLabel(uuid string, names map[string]string) string {
	switch {
	case uuid == "":
		return "(repository)"
	case names[uuid] != "":
		return names[uuid]
	}
	return uuid
}

func (r *runner) jobsShow(args []string) error {
	pos, err := r.connectArgs(r.newFlags(), jobsHelp, args, "JOB")
	if err != nil {
		return err
	}
	id := pos[0]
	job, err := r.api.GetJob(r.ctx, id)
	if err != nil {
		return fmt.Errorf("get job %s: %w", clean(id), err)
	}
	evs, err := r.api.JobEvents(r.ctx, id)
	if err != nil {
		return fmt.Errorf("get events of job %s: %w", clean(id), err)
	}
	if r.flags.json {
		return printJSON(r.stdout, mustJoin(job.Raw(), evs.Raw()))
	}
	names := map[string]string{}
	if job.SiteUUID != "" {
		if sites, err := r.api.ListSites(r.ctx); err == nil {
			names = siteNames(sites.Sites)
		}
	}
	if err := writeJob(r.stdout, job.Job, names, r.now()); err != nil {
		return err
	}
	fmt.Fprintf(r.stdout, "events (%d):\n", len(evs.Events))
	for _, ev := range evs.Events {
		writeEvent(r.stdout, ev)
	}
	return nil
}

// mustJoin is {"job": job, "events": events} from two raw answers.
func mustJoin(job, evs json.RawMessage) json.RawMessage {
	b, _ := json.Marshal(struct {
		Job    json.RawMessage `json:"job"`
		Events json.RawMessage `json:"events"`
	}{job, evs})
	return b
}

func (r *runner) jobsLogs(args []string) error {
	var follow bool
	fs := r.newFlags()
	fs.BoolVar(&follow, "follow", false, "stream the events live until the job ends; exit with its code")
	fs.BoolVar(&follow, "f", false, "short for --follow")
	pos, err := r.connectArgs(fs, jobsHelp, args, "JOB")
	if err != nil {
		return err
	}
	id := pos[0]
	if !follow {
		evs, err := r.api.JobEvents(r.ctx, id)
		if err != nil {
			return fmt.Errorf("get events of job %s: %w", clean(id), err)
		}
		if r.flags.json {
			return printJSON(r.stdout, evs.Raw())
		}
		for _, ev := range evs.Events {
			writeEvent(r.stdout, ev)
		}
		return nil
	}
	emit := func(ev domain.JobEvent) { writeEvent(r.stdout, ev) }
	if r.flags.json {
		// One JSON object per line, as they come.
		emit = func(ev domain.JobEvent) {
			b, _ := json.Marshal(ev)
			fmt.Fprintf(r.stdout, "%s\n", b)
		}
	}
	f := &follower{api: r.api, poll: r.poll, check: r.check, note: r.stderr, emit: emit}
	job, err := f.follow(r.ctx, id)
	switch {
	case err == nil:
	case r.ctx.Err() != nil:
		return &exitError{ExitInterrupted, ""}
	default:
		return err
	}
	if !r.flags.json {
		fmt.Fprintf(r.stdout, "job %s ended %s%s\n", id, job.Status, errSuffix(job.Error))
	}
	if code := ExitCode(job.Status); code != ExitOK {
		return &exitError{code: code}
	}
	return nil
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return ": " + clean(e)
}

func (r *runner) jobsCancel(args []string) error {
	pos, err := r.connectArgs(r.newFlags(), jobsHelp, args, "JOB")
	if err != nil {
		return err
	}
	acc, err := r.api.CancelJob(r.ctx, pos[0])
	if err != nil {
		return fmt.Errorf("cancel job %s: %w", clean(pos[0]), err)
	}
	if r.flags.json {
		return printJSON(r.stdout, acc.Raw())
	}
	fmt.Fprintf(r.stdout, "cancel requested for job %s; the worker holding it stops it\n", acc.JobID)
	return nil
}

// writeEvent is one event as a log line (and a dry run's change list).
func writeEvent(w io.Writer, ev domain.JobEvent) {
	target := ""
	if ev.TargetHash != "" {
		target = "[" + ev.TargetHash + "] "
	}
	fmt.Fprintf(w, "%s %-7s %-12s %s%s\n", stamp(ev.TS), clean(ev.Level), clean(ev.Step), target, clean(ev.Message))
	if ev.Step != "restore_dry_run" {
		return
	}
	changes, _ := ev.Data["changes"].([]any)
	for _, c := range changes {
		fmt.Fprintf(w, "    %s\n", clean(fmt.Sprint(c)))
	}
	if total, ok := ev.Data["changes_total"].(float64); ok && int(total) > len(changes) {
		fmt.Fprintf(w, "    ... %d more\n", int(total)-len(changes))
	}
}

// writeJob is a job's detail view.
func writeJob(w io.Writer, j domain.Job, names map[string]string, now time.Time) error {
	site := "(repository)"
	if j.SiteUUID != "" {
		site = j.SiteUUID
		if n := names[j.SiteUUID]; n != "" {
			site = n + " (" + j.SiteUUID + ")"
		}
	}
	kv := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	pairs := [][2]string{
		{"job", j.ID},
		{"type", string(j.Type)},
		{"site", site},
		{"status", string(j.Status)},
	}
	if j.Trigger != "" {
		trig := j.Trigger
		if j.PolicyNote != "" {
			trig += " (" + j.PolicyNote + ")"
		}
		pairs = append(pairs, [2]string{"trigger", trig})
	}
	if j.Error != "" {
		pairs = append(pairs, [2]string{"error", j.Error})
	}
	pairs = append(pairs,
		[2]string{"attempts", strconv.Itoa(j.Attempts)},
		[2]string{"worker", orDash(j.Worker)},
		[2]string{"created", stamp(j.CreatedAt) + " (" + ago(j.CreatedAt, now) + ")"},
		[2]string{"started", stampPtr(j.StartedAt)},
		[2]string{"finished", stampPtr(j.FinishedAt)},
		[2]string{"took", took(j.StartedAt, j.FinishedAt)},
	)
	if rs := j.Restore; rs != nil {
		dest := "local folder " + rs.Destination.LocalPath
		if rs.Destination.ToSite {
			dest = "edge host folder " + rs.Destination.Path
		}
		opts := ""
		if rs.Overwrite {
			opts += ", overwrite"
		}
		if rs.DryRun {
			opts += ", dry run"
		}
		pairs = append(pairs, [2]string{"restore", fmt.Sprintf("snapshot %s, %s into %s%s", rs.SnapshotID, strings.Join(rs.Paths, " "), dest, opts)})
	}
	for _, p := range pairs {
		fmt.Fprintf(kv, "%s:\t%s\n", p[0], clean(p[1]))
	}
	if err := kv.Flush(); err != nil {
		return err
	}
	if len(j.Summary) > 0 {
		// Its own block, so long keys do not widen the view above.
		fmt.Fprintln(w, "summary:")
		sum := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		keys := make([]string, 0, len(j.Summary))
		for k := range j.Summary {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(sum, "  %s:\t%s\n", clean(k), clean(summaryValue(j.Summary[k])))
		}
		if err := sum.Flush(); err != nil {
			return err
		}
	}
	if len(j.Targets) > 0 {
		fmt.Fprintln(w, "targets:")
		t := newTable(w, "TARGET_HASH", "MODE", "PATH", "STATUS", "FILES", "SIZE", "SENT", "TOOK", "NOTE")
		for _, tr := range j.Targets {
			note := tr.Note
			if tr.Error != "" {
				note = tr.Error
			}
			t.row(tr.TargetHash, string(tr.Mode), tr.Path, string(tr.Status), strconv.FormatInt(tr.Files, 10),
				units.Bytes(tr.Bytes), units.Bytes(tr.Transferred), (time.Duration(tr.DurationMS) * time.Millisecond).String(), orDash(clip(note, 100)))
		}
		return t.flush()
	}
	return nil
}

// summaryValue prints strings as they are and anything else as JSON
// (so 12000000 is not 1.2e+07).
func summaryValue(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
