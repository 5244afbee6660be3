package node

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/testkit"
)

// TestDashboardVerifyE2E drives the restore test from the dashboard in
// headless Chromium: "Run verify" on the site page verifies a good
// snapshot (shown on the site page and in the overview's sites list);
// a snapshot with a damaged SQLite database fails it, and the site page
// shows the failed health and the reason naming the target.
func TestDashboardVerifyE2E(t *testing.T) {
	chromium := chromiumPath(t)
	edge := testkit.StartEdgeHost(t)
	src := filepath.Join(edge.Dir, "srv")
	edgeTree(t, src)
	db := filepath.Join(edge.Dir, "app.db")
	makeBigSQLite(t, db)
	n, c := backupNode(t)
	site := c.registerSite(edge, siteOpts{name: "edge-dash-verify", targets: []map[string]any{
		{"mode": "directory", "path": src},
		{"mode": "sqlite_dump", "path": db},
	}})
	dbHash := domain.TargetHash(domain.ModeSQLiteDump, db)
	if j := c.runJob(site, "backup"); j.Status != domain.StatusSuccess {
		t.Fatalf("backup: %s %q\n%s", j.Status, j.Error, j.Summary["_events"])
	}

	base := "http://" + n.APIAddr
	b := startBrowser(t, chromium)
	b.do(chromedp.Navigate(base + "/"))
	b.visible("#login-form")
	b.do(chromedp.SendKeys(chromedp.CSS("#login-token"), testToken), chromedp.Click(chromedp.CSS("#login-submit")))
	b.visible("#overview")
	b.waitJS(`document.querySelector('[data-testid=site-verified]')`, "the sites list's verified column")
	if got := b.text("[data-testid=site-verified]"); got != "never" {
		t.Errorf("verified column before any verify = %q, want never", got)
	}

	runVerify := func(t *testing.T, want string) string {
		b := b.with(t)
		b.do(chromedp.Navigate(base + "/#/sites/" + site))
		b.visible("#run-verify")
		b.click("#run-verify")
		job := b.jobPage()
		if st := b.waitJobStatus(c, job); st != want {
			t.Fatalf("verify from the dashboard: %s, want %s\n%s", st, want, dumpEvents(c.events(job)))
		}
		b.click("#job-site-link")
		b.visible("#site-verify")
		return job
	}

	t.Run("a good snapshot verifies", func(t *testing.T) {
		runVerify(t, "success")
		b := b.with(t)
		b.waitJS(`document.getElementById('site-verify').dataset.status === 'success'`, "the restore test card to show success")
		if got := b.text("#verify-status"); got != "success" {
			t.Errorf("verify status shown %q", got)
		}
		b.do(chromedp.Navigate(base + "/#/"))
		b.visible("#overview")
		verifiedCell(b, func(text string) bool { return text != "" && text != "never" }, "the verified column to show the verify")
	})

	// Rot in the staging copy after the pull checked it, then a snapshot.
	corruptPages(t, filepath.Join(n.Config.StagingRoot, site, dbHash, "app.db"))
	repo, err := ResticRepo(n.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Backup(context.Background(), restic.BackupOptions{
		Paths: []string{filepath.Join(n.Config.StagingRoot, site)},
		Host:  domain.ResticHost(site), Tags: domain.SnapshotTags(site, "rotted-staging"),
	}, nil); err != nil {
		t.Fatal(err)
	}

	t.Run("a damaged database fails the site", func(t *testing.T) {
		runVerify(t, "failed")
		b := b.with(t)
		b.waitJS(`document.getElementById('site-verify').dataset.status === 'failed'`, "the restore test card to show failed")
		if got := b.text("#verify-error"); !strings.Contains(got, dbHash) || !strings.Contains(got, "integrity_check") {
			t.Errorf("verify error shown %q, want it to name target %s and integrity_check", got, dbHash)
		}
		if got := b.text("#site-health"); got != "failed" {
			t.Errorf("site health badge %q, want failed", got)
		}
		if got := b.text(".health-message"); !strings.Contains(got, "verification failed") {
			t.Errorf("health message %q", got)
		}
		b.do(chromedp.Navigate(base + "/#/"))
		b.visible("#overview")
		verifiedCell(b, func(text string) bool { return strings.HasPrefix(text, "failed") }, "the verified column to show the failure")
	})
	if ex := b.exceptions(); len(ex) > 0 {
		t.Errorf("JavaScript exceptions: %q", ex)
	}
}

// verifiedCell waits until the overview's verified cell satisfies ok.
// The site list is served from a snapshot that may be a few seconds old
// (httpapi/sitecache.go), so the page is reloaded while waiting.
func verifiedCell(b *session, ok func(string) bool, what string) {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	reload := time.Now().Add(time.Second)
	for {
		if time.Now().After(reload) {
			b.do(chromedp.Reload())
			b.visible("#overview")
			reload = time.Now().Add(time.Second)
		}
		text := eval[string](b, `((document.querySelector('[data-testid=site-verified]') || {}).textContent || '')`)
		if ok(text) {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("waiting for %s: cell %q, page %s, table %s%s", what, text, eval[string](b, `location.hash`),
				eval[string](b, `((document.getElementById('sites-table') || {}).outerHTML || '').slice(0, 2000)`), b.pageError())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
