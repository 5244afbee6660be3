package node

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/satoru/satoru/shared/testkit"
)

// TestDashboardAccessE2E: the dashboard in headless Chromium against
// `satoru up`, a real sshd edge host and a real backup, logged in with
// scoped tokens: a viewer sees sites, jobs and a snapshot's listing but
// no add-site, run, cancel, sync, download or restore control; an
// operator gets run, download and a restore to a local folder but no
// add-site and no restore to the site; an admin sees everything and the
// audit trail, which names who did what.
func TestDashboardAccessE2E(t *testing.T) {
	chromium := chromiumPath(t)
	artifacts := artifactsDir(t)
	edge := testkit.StartEdgeHost(t)
	src := filepath.Join(edge.Dir, "www")
	mkdir(t, src)
	if err := os.WriteFile(filepath.Join(src, "index.html"), []byte("<h1>edge</h1>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, c := backupNode(t)
	base := "http://" + n.APIAddr
	site := c.registerSite(edge, siteOpts{name: "edge-access", targets: []map[string]any{{"mode": "directory", "path": src}}})
	j := c.waitJob(c.startJob(site, "backup"), 2*time.Minute)
	snap, _ := j.Summary["snapshot_id"].(string)
	if j.Status != "success" || snap == "" {
		t.Fatalf("backup: %s %q %+v", j.Status, j.Error, j.Summary)
	}
	secret := func(name, role string) string {
		t.Helper()
		var out struct {
			Secret string `json:"secret"`
		}
		if code := c.do("POST", "/api/v1/tokens", map[string]string{"name": name, "role": role}, &out); code != http.StatusCreated || out.Secret == "" {
			t.Fatalf("create %s token: %d", role, code)
		}
		return out.Secret
	}
	viewer, operator := secret("watcher", "viewer"), secret("ops", "operator")

	b := startBrowser(t, chromium)
	login := func(b *session, tok, who string) {
		b.t.Helper()
		b.do(chromedp.Navigate(base + "/#/"))
		b.do(chromedp.Evaluate[chromedp.Void](`sessionStorage.clear()`), chromedp.Reload())
		b.visible("#login-form")
		b.do(chromedp.SendKeys(chromedp.CSS("#login-token"), tok), chromedp.Click(chromedp.CSS("#login-submit")))
		b.visible("#overview")
		b.waitJS(`document.getElementById('nav-me').textContent === `+jsString(who), "the nav to name "+who)
	}
	shown := func(b *session, sel string) bool {
		b.t.Helper()
		return eval[bool](b, `(() => { const e = document.querySelector(`+jsString(sel)+`); return !!e && !e.hidden && e.getClientRects().length > 0 })()`)
	}
	browse := func(b *session) {
		b.t.Helper()
		b.do(chromedp.Navigate(base + "/#/sites/" + site + "/snapshots/" + snap))
		b.visible("#browse-page")
		b.waitJS(`document.querySelectorAll('[data-testid=entry-row]').length === 1`, "the snapshot's target folder")
	}

	t.Run("viewer", func(t *testing.T) {
		b := b.with(t)
		login(b, viewer, "watcher (viewer)")
		b.waitJS(`document.querySelector('[data-testid=count-success]')`, "the overview")
		if shown(b, "#nav-add-site") || shown(b, "#nav-audit") || shown(b, "#nav-tokens") {
			t.Error("a viewer sees Add site, Audit or Tokens in the nav")
		}
		b.do(chromedp.Navigate(base + "/#/sites/" + site))
		b.visible("#site-page h1")
		b.visible("#site-jobs")
		for _, sel := range []string{"#run-backup", "#run-preflight", "#run-retention", "#pin-host-key"} {
			if shown(b, sel) {
				t.Errorf("a viewer sees %s on the site page", sel)
			}
		}
		// The policy is shown, not offered for editing.
		b.visible("#policy-view")
		if eval[bool](b, `!!document.getElementById('policy-form')`) {
			t.Error("a viewer gets the site policy form")
		}
		b.do(chromedp.Navigate(base + "/#/jobs/" + j.ID))
		b.visible("#job-page #job-status")
		if shown(b, "#job-cancel") {
			t.Error("a viewer sees Cancel job")
		}
		browse(b)
		for _, sel := range []string{"[data-testid=download]", "#restore-form", "#restore-submit", "input.select"} {
			if eval[bool](b, `!!document.querySelector(`+jsString(sel)+`)`) {
				t.Errorf("a viewer's browse page has %s", sel)
			}
		}
		b.screenshot(artifacts, "access-viewer-browse.png")
		b.do(chromedp.Navigate(base + "/#/sync"))
		b.visible("#sync-health")
		if shown(b, "#sync-now") {
			t.Error("a viewer sees Sync now")
		}
		b.do(chromedp.Navigate(base + "/#/check"))
		b.visible("#check-health")
		if shown(b, "#check-now") {
			t.Error("a viewer sees Check now")
		}
		b.do(chromedp.Navigate(base + "/#/sites/new"))
		b.waitJS(`document.getElementById('view').textContent.includes('needs the admin role')`, "the add-site page to refuse")
		if eval[bool](b, `!!document.getElementById('site-form')`) {
			t.Error("a viewer gets the add-site form")
		}
		if ex := b.exceptions(); len(ex) > 0 {
			t.Errorf("JavaScript exceptions: %q", ex)
		}
	})

	t.Run("operator", func(t *testing.T) {
		b := b.with(t)
		login(b, operator, "ops (operator)")
		if shown(b, "#nav-add-site") {
			t.Error("an operator sees Add site")
		}
		b.do(chromedp.Navigate(base + "/#/sites/" + site))
		b.visible("#run-backup")
		browse(b)
		b.visible("[data-testid=download]")
		b.visible("#restore-form")
		b.visible("#restore-dest-local")
		if eval[bool](b, `!!document.getElementById('restore-dest-site')`) {
			t.Error("an operator is offered a restore to the site")
		}
		b.click("[data-testid=download]")
		b.waitJS(`!document.querySelector('[data-testid=download]').disabled`, "the download to end")
	})

	t.Run("admin sees the audit trail", func(t *testing.T) {
		b := b.with(t)
		login(b, testToken, "startup (admin)")
		b.visible("#nav-add-site")
		browse(b)
		b.visible("#restore-dest-site")
		b.click("#nav-audit")
		b.visible("#audit-table")
		b.waitJS(`document.querySelectorAll('[data-testid=audit-row][data-action="snapshot.download"]').length === 1`, "the operator's download in the audit trail")
		text := b.text("#audit-table")
		for _, want := range []string{"token.create", "job.start", "site.create", "ops", "operator", "startup", "127.0.0.1", "name=watcher"} {
			if !strings.Contains(text, want) {
				t.Errorf("audit table lacks %q:\n%s", want, text)
			}
		}
		for _, s := range []string{viewer, operator, testToken} {
			if strings.Contains(text, s) {
				t.Error("the audit table shows a secret")
			}
		}
		b.screenshot(artifacts, "access-audit.png")
		// Filter by token from a row's link.
		b.click(`[data-testid=audit-row][data-action="snapshot.download"] td:nth-child(2) a`)
		b.waitJS(`location.hash.includes('token=ops') && document.querySelectorAll('[data-testid=audit-row]').length === 1`, "the audit filtered by token ops")
	})

	t.Run("admin makes and revokes a token", func(t *testing.T) {
		b := b.with(t)
		b.click("#nav-tokens")
		b.visible("#token-form")
		b.waitJS(`document.querySelectorAll('[data-testid=token-row]').length === 2`, "the two tokens listed")
		b.do(chromedp.SetValue(chromedp.CSS("#token-name"), "ci-read"), chromedp.SetValue(chromedp.CSS("#token-role select, select#token-role"), "viewer"))
		b.click("#token-submit")
		b.visible("#token-secret")
		secret := b.text("#token-secret")
		var me struct{ Name, Role string }
		if code := (&client{t: t, base: base, token: secret}).do("GET", "/api/v1/me", nil, &me); code != http.StatusOK || me.Name != "ci-read" || me.Role != "viewer" {
			t.Fatalf("the secret shown does not work: %d %+v", code, me)
		}
		b.waitJS(`document.querySelector('[data-testid=token-row][data-name="ci-read"]')`, "the new token listed")
		msgs := b.acceptDialogs()
		b.click(`[data-testid=token-row][data-name="ops"] [data-testid=token-revoke]`)
		b.waitJS(`!document.querySelector('[data-testid=token-row][data-name="ops"]')`, "ops revoked")
		if m := msgs(); len(m) != 1 || !strings.Contains(m[0], "ops") {
			t.Errorf("confirm dialogs %q", m)
		}
		if code := (&client{t: t, base: base, token: operator}).do("GET", "/api/v1/me", nil, nil); code != http.StatusUnauthorized {
			t.Errorf("revoked operator token: GET /me = %d, want 401", code)
		}
	})
}

func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`)
	return "'" + r.Replace(s) + "'"
}
