package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/testkit"
)

// stepKeys are the parts of a backup job's time, as summary fields.
var stepKeys = []string{"queue", "preflight", "pull", "handoff", "snapshot", "finish"}

// TestBackupStepTimesAndPreflightReuse: a backup's summary says where its
// time went, step by step, and the histogram counts each step; the next
// backup of the unchanged site skips the remote checks (no ssh session
// beyond the pull); when a pull then fails, the checks run again and say
// why in their own words.
func TestBackupStepTimesAndPreflightReuse(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t)
	src := filepath.Join(edge.Dir, "srv")
	mkdir(t, src)
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	site := c.registerSite(edge, siteOpts{name: "edge-steps", targets: []map[string]any{{"mode": "directory", "path": src}}})
	backup := func(want domain.JobStatus) (domain.Job, []domain.JobEvent) {
		t.Helper()
		id := c.startJob(site, "backup")
		j := c.waitJob(id, 2*time.Minute)
		evs := c.events(id)
		if j.Status != want {
			t.Fatalf("backup: %s %q, want %s\n%s", j.Status, j.Error, want, dumpEvents(evs))
		}
		return j, evs
	}
	steps := func(evs []domain.JobEvent) map[string]int {
		m := map[string]int{}
		for _, ev := range evs {
			m[ev.Step]++
		}
		return m
	}

	first, evs := backup(domain.StatusSuccess)
	if steps(evs)["preflight_reused"] != 0 || steps(evs)["ssh_connect"] != 1 {
		t.Fatalf("first backup must run every check:\n%s", dumpEvents(evs))
	}
	var sum float64
	for _, k := range stepKeys {
		v, ok := first.Summary[jobrun.StepSummaryKey(k)].(float64)
		if !ok || v < 0 {
			t.Fatalf("summary %s = %v (%T), want seconds >= 0; summary %v", jobrun.StepSummaryKey(k), first.Summary[jobrun.StepSummaryKey(k)], first.Summary[jobrun.StepSummaryKey(k)], first.Summary)
		}
		sum += v
	}
	total := first.FinishedAt.Sub(first.CreatedAt).Seconds()
	// The steps cover the job end to end: nothing big is left out, and
	// nothing is counted twice (each is rounded to a millisecond).
	if sum > total+0.01 || sum < total*0.9-0.05 {
		t.Fatalf("steps add up to %.3f s, the job took %.3f s (created %s, finished %s): %v", sum, total, first.CreatedAt, first.FinishedAt, first.Summary)
	}
	if first.Summary["pull_seconds"].(float64) <= 0 || first.Summary["snapshot_seconds"].(float64) <= 0 {
		t.Fatalf("pull and snapshot took no time: %v", first.Summary)
	}

	logins := edge.Logins()
	second, evs := backup(domain.StatusSuccess)
	if steps(evs)["preflight_reused"] != 1 || steps(evs)["ssh_connect"] != 0 || steps(evs)["target"] != 0 {
		t.Fatalf("second backup of the unchanged site ran the remote checks again:\n%s", dumpEvents(evs))
	}
	if edge.Logins() != logins {
		t.Fatalf("second backup logged in %d more times: the master was not reused", edge.Logins()-logins)
	}
	if summaryInt(second, "files") != 1 {
		t.Fatalf("second backup summary %v", second.Summary)
	}

	// The target goes away: the pull fails, and the checks, run again,
	// name the problem.
	if err := os.Rename(src, src+".away"); err != nil {
		t.Fatal(err)
	}
	_, evs = backup(domain.StatusFailed)
	var said bool
	for _, ev := range evs {
		if ev.Step == "target" && ev.Level == domain.LevelError && strings.Contains(ev.Message, "path does not exist") {
			said = true
		}
	}
	if !said {
		t.Fatalf("failed pull after skipped checks: no check says the path is gone:\n%s", dumpEvents(evs))
	}
	if err := os.Rename(src+".away", src); err != nil {
		t.Fatal(err)
	}
	_, evs = backup(domain.StatusSuccess)
	if steps(evs)["preflight_reused"] != 0 || steps(evs)["ssh_connect"] != 1 {
		t.Fatalf("after a failure the next backup must check everything again:\n%s", dumpEvents(evs))
	}

	m := samples(t, scrape(t, n))
	for _, k := range stepKeys {
		series := `satoru_job_step_seconds_count{node="` + n.StagingID + `",step="` + k + `",type="backup"}`
		if m[series] < 3 {
			t.Errorf("%s = %v, want >= 3 (three backups reached it)", series, m[series])
		}
	}
}
