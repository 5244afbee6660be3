package node

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

// TestDashboardPolicyE2E edits a site's policy on the dashboard's site
// page in headless Chromium against a real node: a field error from the
// API is shown, a saved policy shows as "paused" on the site page and the
// overview, and a job started inside a maintenance window asks first and
// then runs forced, its trigger shown on the job page.
func TestDashboardPolicyE2E(t *testing.T) {
	chromium := chromiumPath(t)
	edge := testkit.StartEdgeHost(t)
	src := filepath.Join(edge.Dir, "www")
	mkdir(t, src)
	if err := os.WriteFile(filepath.Join(src, "index.html"), []byte("<h1>edge</h1>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, c := backupNode(t)
	siteUUID := c.registerSite(edge, siteOpts{name: "edge-policy", targets: []map[string]any{{"mode": "directory", "path": src}}})
	base := "http://" + n.APIAddr
	b := startBrowser(t, chromium)
	b.do(chromedp.Navigate(base + "/"))
	b.visible("#login-form")
	b.do(chromedp.SendKeys(chromedp.CSS("#login-token"), testToken), chromedp.Click(chromedp.CSS("#login-submit")))
	b.visible("#overview")

	b.do(chromedp.Navigate(base + "/#/sites/" + siteUUID))
	b.visible("#policy-form")

	t.Run("a bad cron is refused with the field named", func(t *testing.T) {
		b := b.with(t)
		b.do(chromedp.SetValue(chromedp.CSS("#policy-schedule"), "cron"),
			chromedp.SetValue(chromedp.CSS("#policy-cron"), "61 * * * *"))
		b.click("#policy-save")
		b.waitJS(`!document.getElementById('error').hidden`, "the error banner")
		if msg := b.text("#error"); !strings.Contains(msg, "schedule.cron") {
			t.Fatalf("error %q, want it to name schedule.cron", msg)
		}
	})

	t.Run("save pause, cron, retention and a window", func(t *testing.T) {
		b := b.with(t)
		b.do(chromedp.SetValue(chromedp.CSS("#policy-schedule"), "cron"),
			chromedp.SetValue(chromedp.CSS("#policy-cron"), "30 2 * * *"),
			chromedp.SetValue(chromedp.CSS("#policy-tz"), "Europe/Berlin"),
			chromedp.SetValue(chromedp.CSS("#policy-keep_last"), "1"),
			chromedp.SetValue(chromedp.CSS("#policy-reason"), "disk swap"),
			chromedp.SetValue(chromedp.CSS("#policy-windows"), "all day=00:00-00:00"))
		b.click("#policy-paused")
		b.click("#policy-save")
		b.waitJS(`document.querySelector('#site-page h1 [data-testid=paused]')`, "the paused badge on the site page")
		var view struct {
			Policy domain.SitePolicy `json:"policy"`
		}
		if code := c.do("GET", "/api/v1/sites/"+siteUUID+"/policy", nil, &view); code != http.StatusOK {
			t.Fatalf("GET policy: %d", code)
		}
		p := view.Policy
		if !p.Paused || p.PausedReason != "disk swap" || p.Schedule == nil || p.Schedule.Cron != "30 2 * * *" || p.Schedule.Timezone != "Europe/Berlin" ||
			p.Retention == nil || p.Retention.KeepLast != 1 || len(p.MaintenanceWindows) != 1 || p.MaintenanceWindows[0].Name != "all day" {
			t.Fatalf("saved policy = %+v", p)
		}
		// The form shows what was saved.
		if got := eval[string](b, `document.getElementById('policy-windows').value`); got != "all day=00:00-00:00" {
			t.Errorf("windows field after saving = %q", got)
		}
	})

	t.Run("a job inside the window asks, then runs forced", func(t *testing.T) {
		b := b.with(t)
		dialogs := b.acceptDialogs()
		b.click("#run-preflight")
		id := b.jobPage()
		if msgs := dialogs(); len(msgs) != 1 || !strings.Contains(msgs[0], `maintenance window "all day"`) {
			t.Fatalf("dialogs = %q", msgs)
		}
		b.visible("#job-trigger")
		if got := b.text("#job-trigger"); !strings.Contains(got, "manual") || !strings.Contains(got, "paused") ||
			!strings.Contains(got, `forced inside maintenance window "all day"`) {
			t.Errorf("job trigger shown as %q", got)
		}
		if j := c.waitJob(id, 2*time.Minute); j.Status != domain.StatusSuccess || j.Trigger != domain.TriggerManual {
			t.Errorf("forced preflight: %s %q (%s)", j.Status, j.Trigger, j.Error)
		}
	})

	t.Run("the overview shows the site paused", func(t *testing.T) {
		b := b.with(t)
		b.do(chromedp.Navigate(base + "/#/"))
		b.visible("#sites-table")
		b.waitJS(`document.querySelector('#sites-table tr[data-site-uuid="`+siteUUID+`"] [data-testid=paused]')`, "the paused badge in the sites table")
	})
	if ex := b.exceptions(); len(ex) > 0 {
		t.Errorf("JavaScript exceptions: %q", ex)
	}
}
