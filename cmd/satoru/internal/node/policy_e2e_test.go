package node

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

// TestSitePolicyAgainstNode sets a site's policy through the CLI and the
// API of a real node (embedded NATS and store, real sshd, rsync, restic)
// and checks what it does: validation names the field, a paused site's
// manual job runs and is marked, a job inside a maintenance window is
// refused with 409 unless forced, and retention keeps what the site's
// own policy says (keep_last 1) rather than the global policy.
func TestSitePolicyAgainstNode(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	// The global policy would keep both of the site's snapshots.
	n, c := backupNode(t, `SATORU_RESTIC_RETENTION_POLICY={"keep_last":5}`)
	env := []string{"SATORU_API_URL=http://" + n.APIAddr, "SATORU_API_TOKEN=" + testToken}
	cli := func(args ...string) cliRun { t.Helper(); return satoruCLI(t, env, args...) }

	src := filepath.Join(edge.Dir, "srv")
	mkdir(t, src)
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect(t, cli("sites", "add", "pol-edge", "--host", edge.Host, "--port", strconv.Itoa(edge.Port), "--user", edge.User,
		"--ssh-key", edge.KeyPath, "--host-key", edge.HostKeyLine, "--dir", src), 0, "added site pol-edge")
	expect(t, cli("sites", "show", "pol-edge"), 0, "policy:", "global")

	// Validation names the field, from the CLI and from the API.
	r := cli("sites", "policy", "pol-edge", "--cron", "61 * * * *")
	if r.code != 1 || !strings.Contains(r.stderr, "schedule.cron") || !strings.Contains(r.stderr, "minute field") {
		t.Fatalf("bad cron: %s", r)
	}
	var siteUUID string
	{
		var list struct {
			Sites []domain.SiteView `json:"sites"`
		}
		r = cli("sites", "list", "--json")
		if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Sites) != 1 {
			t.Fatalf("sites list: %v %s", err, r)
		}
		siteUUID = list.Sites[0].UUID
	}
	for body, field := range map[string]string{
		`{"maintenance_windows":[{"start":"25:00","end":"01:00"}]}`:   "maintenance_windows[0].start",
		`{"retention":{"keep_last":-1}}`:                              "retention.keep_last",
		`{"schedule":{"interval_minutes":60,"cron":"0 2 * * *"}}`:     "schedule: give either",
		`{"schedule":{"cron":"0 2 * * *","timezone":"Mars/Olympus"}}`: "Mars/Olympus",
		`{"schedlue":{}}`: "schedlue",
	} {
		var e apiError
		if code := c.do("PUT", "/api/v1/sites/"+siteUUID+"/policy", body, &e); code != http.StatusBadRequest || !strings.Contains(e.Error.Message, field) {
			t.Errorf("PUT policy %s: %d %+v, want 400 naming %s", body, code, e, field)
		}
	}
	var e apiError
	if code := c.do("PATCH", "/api/v1/sites/"+siteUUID, `{"policy":{"schedule":{"cron":"x"}}}`, &e); code != http.StatusBadRequest || !strings.HasPrefix(e.Error.Message, "policy.schedule.cron") {
		t.Errorf("PATCH with a bad policy: %d %+v", code, e)
	}

	// Paused, with its own cron schedule and retention.
	r = cli("sites", "policy", "pol-edge", "--pause", "--reason", "disk swap", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--keep-last", "1")
	expect(t, r, 0, "policy of site pol-edge changed", "paused (disk swap)", `cron "30 2 * * *" in Europe/Berlin`, "keep_last=1", "next run:")
	expect(t, cli("sites", "list"), 0, "pol-edge", "(paused)")
	var view struct {
		Policy       domain.SitePolicy `json:"policy"`
		NextCronRuns []time.Time       `json:"next_cron_runs"`
	}
	if code := c.do("GET", "/api/v1/sites/"+siteUUID+"/policy", nil, &view); code != http.StatusOK || !view.Policy.Paused ||
		view.Policy.Retention == nil || view.Policy.Retention.KeepLast != 1 || len(view.NextCronRuns) != 3 {
		t.Fatalf("GET policy: %d %+v", code, view)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	for _, at := range view.NextCronRuns {
		if l := at.In(berlin); l.Minute() != 30 || (l.Hour() != 2 && l.Hour() != 3) {
			t.Errorf("next cron run %s is not 02:30 Berlin", l)
		}
	}

	// A manual backup of the paused site runs, marked.
	r = cli("run", "pol-edge", "backup", "--wait", "--timeout", "2m")
	expectLine(t, r, "status:", "success")
	jobs := c.jobs(siteUUID)
	if len(jobs) != 1 || jobs[0].Trigger != domain.TriggerManual || jobs[0].PolicyNote != "started by hand while the site is paused" {
		t.Fatalf("manual job of a paused site: %+v", jobs)
	}
	expectLine(t, cli("jobs", "show", jobs[0].ID), "trigger:", "manual (started by hand while the site is paused)")

	// A window that covers the whole day (start = end): refused, then forced.
	r = cli("sites", "policy", "pol-edge", "--resume", "--window", "all day=00:00-00:00")
	expect(t, r, 0, "state:", "active", "all day: every day 00:00-00:00 UTC", "inside maintenance window")
	if code := c.do("POST", "/api/v1/sites/"+siteUUID+"/jobs", map[string]string{"type": "backup"}, &e); code != http.StatusConflict ||
		e.Error.Code != "maintenance_window" || !strings.Contains(e.Error.Message, `"all day"`) || !strings.Contains(e.Error.Message, `"force": true`) {
		t.Fatalf("job inside a window: %d %+v", code, e)
	}
	r = cli("run", "pol-edge", "backup")
	if r.code != 1 || !strings.Contains(r.stderr, "maintenance window") {
		t.Fatalf("run inside a window: %s", r)
	}
	r = cli("run", "pol-edge", "backup", "--force", "--wait", "--timeout", "2m")
	expectLine(t, r, "status:", "success")
	jobs = c.jobs(siteUUID)
	if len(jobs) != 2 || !strings.HasPrefix(jobs[0].PolicyNote, `forced inside maintenance window "all day"`) {
		t.Fatalf("forced job: %+v", jobs[0])
	}

	// Retention with the site's keep_last 1 (the node's global keep_last
	// 5 would keep both): two snapshots become one.
	expect(t, cli("sites", "policy", "pol-edge", "--no-windows"), 0, "windows:", "none")
	r = cli("run", "pol-edge", "retention", "--wait", "--timeout", "2m")
	expectLine(t, r, "status:", "success")
	var snaps struct {
		Snapshots []json.RawMessage `json:"snapshots"`
	}
	if code := c.do("GET", "/api/v1/sites/"+siteUUID+"/snapshots", nil, &snaps); code != http.StatusOK || len(snaps.Snapshots) != 1 {
		t.Fatalf("snapshots after retention: %d, %d snapshots, want 1", code, len(snaps.Snapshots))
	}
	ret := c.jobs(siteUUID)[0]
	if ret.Type != domain.JobRetention || ret.Summary["policy"] != "keep_last=1" || ret.Summary["policy_source"] != "site policy" {
		t.Fatalf("retention job: %+v", ret)
	}

	// Back to the global policy: {} clears it.
	if code := c.do("PUT", "/api/v1/sites/"+siteUUID+"/policy", `{}`, &view); code != http.StatusOK {
		t.Fatalf("clear policy: %d", code)
	}
	expect(t, cli("sites", "show", "pol-edge"), 0, "policy:", "global")

	// The other schedule and retention flags, and the usage errors.
	expect(t, cli("sites", "policy", "pol-edge", "--every", "90m", "--keep-daily", "3", "--keep-within", "30d"), 0,
		"schedule:", "every 1h30m0s", "keep_daily=3 keep_within=30d")
	expect(t, cli("sites", "policy", "pol-edge", "--default-schedule", "--default-retention"), 0,
		"global (site_scan_interval_hours)", "global (restic_retention_policy)")
	for _, args := range [][]string{
		{"--pause", "--resume"}, {"--every", "90s"}, {"--tz", "UTC"}, {"--every", "1h", "--cron", "@daily"},
		{"--keep-last", "2", "--default-retention"}, {"--window", "22:00"}, {"--reason", "x"},
	} {
		if r := cli(append([]string{"sites", "policy", "pol-edge"}, args...)...); r.code != 2 {
			t.Errorf("sites policy %v: want exit 2 (usage), got %s", args, r)
		}
	}
	expect(t, cli("sites", "policy", "--help"), 0, "--window", "--cron", "--keep-last")
}
