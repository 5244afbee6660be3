package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/page"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/testkit"
)

// TestDashboardE2E drives the embedded dashboard in headless Chromium
// against `satoru up` and a real sshd edge host: log in, add a site, pin
// its host key from a failed preflight, run a backup and follow it to
// success through live events, browse the snapshot, download files,
// restore one, and try an offsite sync. Screenshots go to the artifacts
// folder ($SATORU_ARTIFACTS_DIR or <repo>/artifacts/dashboard), and into
// docs/images when SATORU_UPDATE_DOCS_IMAGES=1.
func TestDashboardE2E(t *testing.T) {
	chromium := chromiumPath(t)
	artifacts := artifactsDir(t)

	edge := testkit.StartEdgeHost(t)
	src := filepath.Join(edge.Dir, "www")
	readme := []byte("hello from the edge\n")
	blob := make([]byte, 256<<10)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{
		"index.html":       []byte("<h1>edge</h1>\n"),
		"data.bin":         blob,
		"notes/readme.txt": readme,
		"notes/todo.txt":   []byte("- back up\n"),
	} {
		p := filepath.Join(src, name)
		mkdir(t, filepath.Dir(p))
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	n, c := backupNode(t)
	base := "http://" + n.APIAddr
	b := startBrowser(t, chromium)

	t.Run("log in once per session", func(t *testing.T) {
		b := b.with(t)
		b.do(chromedp.Navigate(base + "/"))
		b.visible("#login-form")
		b.do(chromedp.SendKeys(chromedp.CSS("#login-token"), "not-the-token"),
			chromedp.Click(chromedp.CSS("#login-submit")))
		b.visible("#login-error")
		if msg := b.text("#login-error"); !strings.Contains(msg, "refused") {
			t.Errorf("wrong token: login error %q, want it to say the token was refused", msg)
		}
		b.do(chromedp.Evaluate[chromedp.Void](`document.getElementById('login-token').value = ''`),
			chromedp.SendKeys(chromedp.CSS("#login-token"), testToken),
			chromedp.Click(chromedp.CSS("#login-submit")))
		b.visible("#overview")
		// Kept for the tab's session only, never in a URL.
		if got := eval[string](b, `sessionStorage.getItem('satoru.token')`); got != testToken {
			t.Errorf("sessionStorage token = %q", got)
		}
		if got := eval[int](b, `localStorage.length`); got != 0 {
			t.Errorf("localStorage holds %d items, want none", got)
		}
		if u := eval[string](b, `location.href`); strings.Contains(u, testToken) {
			t.Errorf("token in the URL %q", u)
		}
		b.do(chromedp.Reload())
		b.visible("#overview")
		if eval[bool](b, `!document.getElementById('login').hidden`) {
			t.Error("the login form is shown again after a reload")
		}
	})

	var siteUUID string
	t.Run("register a site", func(t *testing.T) {
		b := b.with(t)
		b.click("#nav-add-site")
		b.visible("#site-form")
		// No host key and no trust on first use: the preflight offers the
		// key and the site page pins it.
		b.do(
			chromedp.SetValue(chromedp.CSS("#site-name"), "edge-dashboard"),
			chromedp.SetValue(chromedp.CSS("#site-host"), edge.Host),
			chromedp.SetValue(chromedp.CSS("#site-port"), fmt.Sprint(edge.Port)),
			chromedp.SetValue(chromedp.CSS("#site-user"), edge.User),
			chromedp.SetValue(chromedp.CSS("#site-key-path"), edge.KeyPath),
			chromedp.SetValue(chromedp.CSS("#target-path"), src),
			chromedp.Click(chromedp.CSS("#site-submit")),
		)
		b.visible("#site-page")
		siteUUID = eval[string](b, `document.getElementById('site-page').dataset.siteUuid`)
		var site struct {
			Name    string          `json:"name"`
			Port    int             `json:"port"`
			HostKey string          `json:"host_key"`
			Targets []domain.Target `json:"targets"`
		}
		if code := c.do("GET", "/api/v1/sites/"+siteUUID, nil, &site); code != 200 {
			t.Fatalf("site %q from the form: GET = %d", siteUUID, code)
		}
		if site.Name != "edge-dashboard" || site.Port != edge.Port || len(site.Targets) != 1 || site.Targets[0].Path != src || site.HostKey != "" {
			t.Fatalf("site from the form = %+v", site)
		}
	})
	if siteUUID == "" {
		t.FailNow()
	}

	t.Run("pin the host key a preflight offered", func(t *testing.T) {
		b := b.with(t)
		b.click("#run-preflight")
		job := b.jobPage()
		if st := b.waitJobStatus(c, job); st != "failed" {
			t.Fatalf("preflight without a host key: %s, want failed", st)
		}
		b.click("#job-site-link")
		b.visible("#pin-host-key")
		want := sshFingerprint(t, edge.HostKeyLine)
		if got := b.text("#host-key-fingerprint"); got != want {
			t.Errorf("fingerprint shown %q, want %q", got, want)
		}
		msgs := b.acceptDialogs()
		b.click("#pin-host-key")
		b.waitJS(`!document.getElementById('pin-host-key') && document.getElementById('site-page') !== null`, "the pinned site page")
		if m := msgs(); len(m) != 1 || !strings.Contains(m[0], want) {
			t.Errorf("confirm dialogs %q, want one naming %s", m, want)
		}
		var site struct {
			HostKey string `json:"host_key"`
		}
		c.do("GET", "/api/v1/sites/"+siteUUID, nil, &site)
		if site.HostKey != edge.HostKeyLine {
			t.Fatalf("host key after pinning = %q, want %q", site.HostKey, edge.HostKeyLine)
		}
	})

	var backupJob string
	t.Run("run a backup and follow it live", func(t *testing.T) {
		b := b.with(t)
		b.visible("#run-backup")
		b.click("#run-backup")
		backupJob = b.jobPage()
		// A reload would drop this marker: the status must change in place.
		b.do(chromedp.Evaluate[chromedp.Void](`window.__dashboardMarker = 'loaded once'`))
		if st := b.waitJobStatus(c, backupJob); st != "success" {
			t.Fatalf("backup: %s\n%s", st, dumpEvents(c.events(backupJob)))
		}
		if m := eval[string](b, `window.__dashboardMarker || ''`); m != "loaded once" {
			t.Fatal("the job page was reloaded while the backup ran")
		}
		b.waitJS(`document.getElementById('job-events-table').dataset.stream === 'closed'`, "the event stream closed after the final event")
		stored := c.events(backupJob)
		last := stored[len(stored)-1]
		type row struct {
			Seq       int    `json:"seq"`
			Live      bool   `json:"live"`
			LatencyMS string `json:"latency"`
		}
		rows := eval[[]row](b, `Array.from(document.querySelectorAll('#job-events tr[data-seq]')).map(r =>
			({seq: Number(r.dataset.seq), live: r.dataset.live === 'true', latency: r.dataset.latencyMs || ''}))`)
		if len(rows) != len(stored) {
			t.Errorf("job page shows %d events, the API has %d", len(rows), len(stored))
		}
		live := 0
		for _, r := range rows {
			if r.Live {
				live++
			}
			if r.Seq == last.Seq {
				if !r.Live {
					t.Errorf("the final event #%d was not delivered live", last.Seq)
				}
				var ms int
				fmt.Sscan(r.LatencyMS, &ms)
				t.Logf("final event on screen %d ms after it was stamped (%d of %d events live)", ms, live, len(rows))
				if ms > 1000 {
					t.Errorf("final event shown %d ms after its timestamp, want within a second", ms)
				}
			}
		}
		if live == 0 {
			t.Error("no event row arrived through the live stream")
		}
		if j := c.job(backupJob); j.Status != domain.StatusSuccess {
			t.Errorf("API job status %s", j.Status)
		}
		b.waitJS(`document.querySelector('#job-fields [data-status="success"]') !== null`, "the job fields re-read as success")
		b.screenshot(artifacts, "dashboard-job.png")
	})

	t.Run("overview", func(t *testing.T) {
		b := b.with(t)
		// A worker that ran here two hours ago and stopped: its record in
		// SATORU_NODES, as its last announce left it.
		const goneNode = "deadbeefdeadbeefdeadbeefdeadbeef"
		seen := time.Now().Add(-2 * time.Hour).UTC()
		rec, _ := json.Marshal(bus.Instance{Service: domain.ServicePuller, Instance: "old-worker", Node: goneNode,
			StartedAt: seen.Add(-time.Hour), HeartbeatAt: seen, Version: "test"})
		if _, err := n.Infra.Nodes.Put(context.Background(), events.NodeKey(goneNode, domain.ServicePuller, "old-worker"), rec); err != nil {
			t.Fatal(err)
		}
		b.click("#nav-overview")
		b.waitJS(`document.querySelector('tr[data-testid="site-row"] [data-status="success"]') !== null`, "the site shown healthy")
		if n := b.text(`[data-testid="count-success"] .count-n`); n != "1" {
			t.Errorf("success count %q, want 1", n)
		}
		if got := b.text(`tr[data-testid="site-row"] .site-link`); got != "edge-dashboard" {
			t.Errorf("site row names %q", got)
		}
		// The test node's scheduler has most likely not planned the new
		// site yet ("not scheduled yet"); either way /api/v1/schedules
		// must have answered.
		if got := eval[string](b, `document.querySelector('tr[data-testid="site-row"] td:last-child').textContent`); got == "unavailable" || got == "" {
			t.Errorf("next backup column %q: the schedules were not read", got)
		}
		if eval[int](b, `document.querySelectorAll('[data-testid="disk-row"]').length`) == 0 {
			t.Error("no disk headroom rows")
		}
		// Worker nodes: this node, live, owning the site it backed up;
		// the gone one with when it was last seen.
		b.waitJS(`document.querySelectorAll('tr[data-testid="node-row"]').length === 2`, "two node rows")
		type nodeRow struct {
			Node   string   `json:"node"`
			Status string   `json:"status"`
			Cells  []string `json:"cells"`
		}
		rows := eval[[]nodeRow](b, `Array.from(document.querySelectorAll('tr[data-testid="node-row"]')).map(r =>
			({node: r.dataset.node, status: r.dataset.status, cells: Array.from(r.cells).map(c => c.textContent)}))`)
		byNode := map[string]nodeRow{}
		for _, r := range rows {
			byNode[r.Node] = r
		}
		inst := n.Config.InstanceName
		// Cells: node, status, instances, sites assigned (partitions),
		// baselines held, running jobs, last seen. The one live node takes
		// every partition.
		if r := byNode[n.StagingID]; r.Status != "live" || len(r.Cells) != 7 || r.Cells[1] != "live" ||
			r.Cells[2] != "puller "+inst+", snapshotter "+inst || r.Cells[3] != "1 (32 partitions)" || r.Cells[4] != "1" || r.Cells[6] != "now" {
			t.Errorf("this node's row = %+v", r)
		}
		if r := byNode[goneNode]; r.Status != "gone" || len(r.Cells) != 7 || r.Cells[2] != "puller old-worker" ||
			r.Cells[3] != "0 (0 partitions)" || r.Cells[4] != "0" || !strings.Contains(r.Cells[6], "2 h ago") {
			t.Errorf("the gone node's row = %+v", r)
		}
		b.screenshot(artifacts, "dashboard-overview.png")
	})

	t.Run("browse the snapshot and download", func(t *testing.T) {
		b := b.with(t)
		b.click(`tr[data-testid="site-row"] .site-link`)
		b.visible("#site-snapshots")
		b.screenshot(artifacts, "dashboard-site.png")
		b.click("#site-snapshots")
		b.visible(".snapshot-link")
		b.click(".snapshot-link")
		hash := domain.TargetHash(domain.ModeDirectory, src)
		b.visible(`#browse-page tr[data-name="` + hash + `"] .entry-link`)
		if got := b.text(`tr[data-name="` + hash + `"] .entry-link`); !strings.Contains(got, src) {
			t.Errorf("target folder labelled %q, want its path %s", got, src)
		}
		b.click(`tr[data-name="` + hash + `"] .entry-link`)
		b.visible(`#browse-page[data-path$="/` + hash + `"] tr[data-name="data.bin"]`)
		b.click(`button[data-testid="download"][data-name="data.bin"]`)
		b.waitDownload("data.bin", blob)

		b.click(`tr[data-name="notes"] .entry-link`)
		b.visible(`#browse-page[data-path$="/notes"] tr[data-name="readme.txt"]`)
		b.click(`button[data-testid="download"][data-name="readme.txt"]`)
		b.waitDownload("readme.txt", readme)
		b.screenshot(artifacts, "dashboard-browse.png")
	})

	t.Run("restore a file from the browser", func(t *testing.T) {
		b := b.with(t)
		dest := filepath.Join(t.TempDir(), "restored")
		b.visible(`tr[data-name="readme.txt"] input.select`)
		b.click(`tr[data-name="readme.txt"] input.select`)
		b.do(chromedp.SetValue(chromedp.CSS("#restore-path"), dest))
		b.click("#restore-submit")
		job := b.jobPage()
		if job == backupJob {
			t.Fatal("restore did not open its own job page")
		}
		if st := b.waitJobStatus(c, job); st != "success" {
			t.Fatalf("restore: %s\n%s", st, dumpEvents(c.events(job)))
		}
		got, err := os.ReadFile(filepath.Join(dest, "readme.txt"))
		if err != nil || !bytes.Equal(got, readme) {
			t.Fatalf("restored readme.txt = %q (%v), want %q", got, err, readme)
		}
	})

	t.Run("sync without an offsite repository", func(t *testing.T) {
		b := b.with(t)
		b.click("#nav-sync")
		b.visible("#sync-now")
		b.click("#sync-now")
		b.visible("#error")
		if msg := b.text("#error"); !strings.Contains(msg, "Offsite not configured") {
			t.Errorf("sync now without offsite: error %q", msg)
		}
		b.screenshot(artifacts, "dashboard-sync.png")
	})

	if errs := b.exceptions(); len(errs) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(errs, "\n"))
	}
	if os.Getenv("SATORU_UPDATE_DOCS_IMAGES") == "1" && !t.Failed() {
		images := filepath.Join(repoRoot(), "docs", "images")
		if err := os.MkdirAll(images, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"dashboard-overview.png", "dashboard-job.png", "dashboard-browse.png"} {
			data, err := os.ReadFile(filepath.Join(artifacts, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(images, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// chromiumPath finds the browser; a missing one fails the test (make
// test installs Debian's chromium), it never skips.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("dashboard test: chromium not found on PATH; install it (apt-get install chromium, or scripts/install-tools.sh test)")
	return ""
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	root, _ := filepath.Abs(filepath.Join(filepath.Dir(file), "..", "..", "..", ".."))
	return root
}

func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SATORU_ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot(), "artifacts", "dashboard")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts folder: %v", err)
	}
	return dir
}

// sshFingerprint is OpenSSH's SHA256 fingerprint of "type base64".
func sshFingerprint(t *testing.T, line string) string {
	t.Helper()
	f := strings.Fields(line)
	if len(f) < 2 {
		t.Fatalf("host key line %q", line)
	}
	raw, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// session is one headless Chromium tab, shared by the subtests.
type session struct {
	t        *testing.T
	ctx      context.Context
	download string
	state    *sessionState
}

type sessionState struct {
	mu     sync.Mutex
	thrown []string
}

func startBrowser(t *testing.T, chromium string) *session {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	s := &session{t: t, ctx: ctx, download: t.TempDir(), state: &sessionState{}}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
		wg.Wait()
	})
	allow := true
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: s.download, EventsEnabled: &allow,
	}); err != nil {
		t.Fatalf("start chromium %s: %v", chromium, err)
	}
	thrown := chromedp.Events(ctx, cdpruntime.ExceptionThrown)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ev, err := range thrown {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
			s.state.mu.Lock()
			s.state.thrown = append(s.state.thrown, fmt.Sprintf("%s:%d: %s", d.URL, d.LineNumber+1, msg))
			s.state.mu.Unlock()
		}
	}()
	return s
}

// with binds the session to a subtest, for its failures.
func (s *session) with(t *testing.T) *session {
	return &session{t: t, ctx: s.ctx, download: s.download, state: s.state}
}

func (s *session) exceptions() []string {
	s.state.mu.Lock()
	defer s.state.mu.Unlock()
	return append([]string(nil), s.state.thrown...)
}

func (s *session) do(actions ...chromedp.Action[chromedp.Void]) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		s.t.Fatalf("browser: %v%s", err, s.pageError())
	}
}

// pageError is the dashboard's visible error, for failure messages.
func (s *session) pageError() string {
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
	defer cancel()
	msg, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById('error') || {}).textContent || ''`))
	if err != nil || msg == "" {
		return ""
	}
	return " (page error: " + msg + ")"
}

func (s *session) visible(sel string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		s.t.Fatalf("waiting for %s: %v%s", sel, err, s.pageError())
	}
}

func (s *session) text(sel string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		s.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(v)
}

func eval[T any](s *session, expr string) T {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		s.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// click clicks the element sel selects once it is on the page and shown.
// It clicks from JavaScript, retried until it lands: the dashboard
// re-renders a section when a live event arrives, so an element found a
// moment ago may be gone (chromedp's own Click then fails with "Could not
// find node with given id").
func (s *session) click(sel string) {
	s.t.Helper()
	q, _ := json.Marshal(sel)
	js := `(() => { const e = document.querySelector(` + string(q) + `);
		if (!e || e.disabled || !e.getClientRects().length) return false;
		e.click(); return true })()`
	deadline := time.Now().Add(20 * time.Second)
	for !eval[bool](s, js) {
		if time.Now().After(deadline) {
			s.t.Fatalf("waiting to click %s: not on the page after 20 s%s", sel, s.pageError())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitJS polls a JavaScript condition until it holds.
func (s *session) waitJS(cond, what string) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !eval[bool](s, "!!("+cond+")") {
		if time.Now().After(deadline) {
			s.t.Fatalf("waiting for %s: still not so after 20 s%s", what, s.pageError())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jobPage waits for the job page a button led to and returns its job id.
func (s *session) jobPage() string {
	s.t.Helper()
	s.visible("#job-page #job-status")
	id := eval[string](s, `document.getElementById('job-page').dataset.jobId`)
	if id == "" {
		s.t.Fatal("job page without a job id")
	}
	return id
}

// waitJobStatus waits until the job page's status badge shows a terminal
// status, which only live events (or the page's slow safety poll) set.
func (s *session) waitJobStatus(c *client, id string) string {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := eval[string](s, `(document.getElementById('job-status') || {dataset: {}}).dataset.status || ''`)
		if domain.JobStatus(st).Terminal() {
			return st
		}
		if time.Now().After(deadline) {
			j := c.job(id)
			s.t.Fatalf("job %s: page shows %q after 60 s, API says %s%s\n%s", id, st, j.Status, s.pageError(), dumpEvents(c.events(id)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitDownload waits for the browser to save name with the given bytes.
func (s *session) waitDownload(name string, want []byte) {
	s.t.Helper()
	p := filepath.Join(s.download, name)
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := os.ReadFile(p)
		if err == nil && bytes.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			entries, _ := os.ReadDir(s.download)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if errors.Is(err, os.ErrNotExist) {
				s.t.Fatalf("download %s: not saved after 20 s (folder holds %q)%s", name, names, s.pageError())
			}
			s.t.Fatalf("download %s: %d bytes (%v), want %d identical", name, len(got), err, len(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// acceptDialogs accepts the page's next confirm() dialogs until the
// subtest ends and returns a func giving their messages.
func (s *session) acceptDialogs() func() []string {
	ctx, cancel := context.WithCancel(s.ctx)
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	var mu sync.Mutex
	var msgs []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, ev.Message)
			mu.Unlock()
			if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				return
			}
		}
	}()
	s.t.Cleanup(func() {
		cancel()
		<-done
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), msgs...)
	}
}

// screenshot saves the page as name, after checking that no missing
// value leaked onto it as text.
func (s *session) screenshot(dir, name string) {
	s.t.Helper()
	if bad := eval[string](s, `(document.getElementById('view').innerText.match(/\b(null|undefined|NaN)\b|\[object Object\]/) || [''])[0]`); bad != "" {
		s.t.Errorf("%s: the page shows %q", name, bad)
	}
	ctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		s.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		s.t.Fatal(err)
	}
}
