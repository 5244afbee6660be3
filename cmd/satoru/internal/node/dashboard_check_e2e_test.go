package node

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/satoru/satoru/shared/testkit"
)

// TestDashboardCheckAndDiffE2E drives the dashboard in headless Chromium
// against `satoru up`: compare a snapshot with the previous one of its
// site from the snapshots page, then run a repository check from the
// Check page and see its state there and on the overview.
func TestDashboardCheckAndDiffE2E(t *testing.T) {
	chromium := chromiumPath(t)
	artifacts := artifactsDir(t)
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t)
	site, root, ids := twoSnapshots(t, c, n, edge, "edge-dash-check")
	base := "http://" + n.APIAddr
	b := startBrowser(t, chromium)

	b.do(chromedp.Navigate(base + "/"))
	b.visible("#login-form")
	b.do(chromedp.SendKeys(chromedp.CSS("#login-token"), testToken), chromedp.Click(chromedp.CSS("#login-submit")))
	b.visible("#overview")

	t.Run("diff a snapshot against the previous one", func(t *testing.T) {
		b := b.with(t)
		b.do(chromedp.Navigate(base + "/#/sites/" + site + "/snapshots"))
		b.visible("#snapshots-table")
		// Newest first: the newest row links to its diff with the older one.
		b.click(`tr[data-snapshot-id="` + ids[1] + `"] .diff-link`)
		b.waitJS(`document.getElementById('diff-page') && document.getElementById('diff-page').dataset.loaded === '1'`, "the diff page")
		if got := eval[string](b, `document.getElementById('diff-page').dataset.against`); got != ids[0] {
			t.Errorf("diff against %q, want the previous snapshot %q", got, ids[0])
		}
		if got := eval[string](b, `document.getElementById('diff-against').value`); got != ids[0] {
			t.Errorf("compare-with select = %q, want %q", got, ids[0])
		}
		paths := func(kind string) string {
			return eval[string](b, `Array.from(document.querySelectorAll('[data-testid="diff-`+kind+`"]')).map((r) => r.dataset.path).join(',')`)
		}
		if got := paths("added"); got != root+"/new/,"+root+"/new/added.txt" {
			t.Errorf("added rows = %s", got)
		}
		if got := paths("removed"); got != root+"/gone.txt" {
			t.Errorf("removed rows = %s", got)
		}
		if got := paths("changed"); got != root+"/grow.txt" {
			t.Errorf("changed rows = %s", got)
		}
		if got := b.text(`[data-testid="diff-changed"]`); !strings.Contains(got, "2 B → 8 B") {
			t.Errorf("changed row %q lacks the sizes", got)
		}
		if got := b.text("#diff-totals"); !strings.Contains(got, "2 (10 B)") || !strings.Contains(got, "1 (5 B)") || !strings.Contains(got, "+6 B") {
			t.Errorf("totals %q", got)
		}
		b.screenshot(artifacts, "snapshot-diff.png")
	})

	t.Run("run a repository check from the check page", func(t *testing.T) {
		b := b.with(t)
		b.click("#nav-check")
		b.visible("#check-page #check-health")
		if got := b.text("#check-health"); got != "never" {
			t.Errorf("check health before any check = %q", got)
		}
		b.click("#check-now")
		job := b.jobPage()
		if st := b.waitJobStatus(c, job); st != "success" {
			t.Fatalf("check job from the dashboard: %s", st)
		}
		b.click("#nav-check")
		b.waitJS(`document.getElementById('check-health') && document.getElementById('check-health').textContent.trim() === 'ok'`, "check health ok")
		if got := eval[string](b, `(document.querySelector('[data-testid="check-repo"][data-name="local"]') || {dataset: {}}).dataset.status || ''`); got != "success" {
			t.Errorf("local repository row status = %q", got)
		}
		b.screenshot(artifacts, "repository-check.png")
		b.click("#nav-overview")
		b.waitJS(`document.querySelector('[data-testid="check-status"]') && document.querySelector('[data-testid="check-status"]').textContent.trim() === 'ok'`, "the overview's check status")
	})
	if ex := b.exceptions(); len(ex) > 0 {
		t.Errorf("JavaScript exceptions: %q", ex)
	}
}
