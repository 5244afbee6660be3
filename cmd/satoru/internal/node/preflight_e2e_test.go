package node

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

// makeSQLite creates a small database with the sqlite3 CLI.
func makeSQLite(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command("sqlite3", path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a'),('b');").CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3: %v: %s", err, out)
	}
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func hasEvent(evs []domain.JobEvent, step, level, contains string) bool {
	for _, e := range evs {
		if e.Step == step && (level == "" || e.Level == level) && strings.Contains(e.Message, contains) {
			return true
		}
	}
	return false
}

func TestPreflightThroughAPI(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	other := testkit.StartEdgeHost(t) // its host key is the "wrong" one
	n, _ := startNode(t, loadConfig(t, testEnv(t.TempDir())), All)
	c := newClient(t, n)

	dir := filepath.Join(edge.Dir, "www")
	mkdir(t, filepath.Join(dir, "sub"))
	db := filepath.Join(edge.Dir, "app.db")
	makeSQLite(t, db)

	t.Run("success with a directory and a sqlite target", func(t *testing.T) {
		c := c.with(t)
		site := c.registerSite(edge, siteOpts{name: "edge-ok", targets: []map[string]any{
			{"mode": "directory", "path": dir},
			{"mode": "sqlite_dump", "path": db},
		}})
		id := c.startJob(site, "preflight")
		j := c.waitJob(id, 30*time.Second)
		evs := c.events(id)
		if j.Status != domain.StatusSuccess {
			t.Fatalf("preflight %s: %s (%s)\n%s", id, j.Status, j.Error, dumpEvents(evs))
		}
		if j.StartedAt == nil || j.FinishedAt == nil || j.Attempts != 1 {
			t.Errorf("job times/attempts not recorded: %+v", j)
		}
		for _, want := range []struct{ step, contains string }{
			{"local_tool", "ssh"}, {"local_tool", "rsync"}, {"local_tool", "restic"}, {"local_tool", "gzip"},
			{"host_key", "ssh-ed25519"}, {"ssh_connect", "connected"},
			{"remote_tool", "rsync"}, {"remote_tool", "sqlite3"}, {"remote_tool", "gzip"},
			{"remote_tmp_dir", "writable"}, {"target", dir}, {"target", db},
		} {
			if !hasEvent(evs, want.step, domain.LevelInfo, want.contains) {
				t.Errorf("no ok %s event mentioning %q:\n%s", want.step, want.contains, dumpEvents(evs))
			}
		}
		var view struct {
			Status domain.SiteStatus `json:"status"`
		}
		c.do("GET", "/api/v1/sites/"+site, nil, &view)
		if view.Status.Health.Status != domain.HealthSuccess || view.Status.LastPreflightAt == nil || view.Status.LastJobID != id {
			t.Errorf("site status after preflight: %+v", view.Status)
		}
	})

	t.Run("wrong pinned host key fails", func(t *testing.T) {
		c := c.with(t)
		site := c.registerSite(edge, siteOpts{name: "edge-wrong-key", hostKey: other.HostKeyLine,
			targets: []map[string]any{{"mode": "directory", "path": dir}}})
		j := c.waitJob(c.startJob(site, "preflight"), 30*time.Second)
		if j.Status != domain.StatusFailed || !strings.Contains(j.Error, "host key does not match") {
			t.Fatalf("got %s %q, want failed saying the host key does not match", j.Status, j.Error)
		}
		if j.Attempts != 1 {
			t.Errorf("a host key mismatch is permanent: %d attempts, want 1", j.Attempts)
		}
		var view struct {
			Status domain.SiteStatus `json:"status"`
		}
		c.do("GET", "/api/v1/sites/"+site, nil, &view)
		if view.Status.Health.Status != domain.HealthFailed {
			t.Errorf("site health %q, want failed", view.Status.Health.Status)
		}
	})

	t.Run("closed port is retried with backoff, each attempt within the connect timeout", func(t *testing.T) {
		c := c.with(t)
		port := testkit.FreePort(t)
		site := c.registerSite(edge, siteOpts{name: "edge-closed", port: port})
		id := c.startJob(site, "preflight")
		j := c.waitJob(id, 60*time.Second)
		if j.Status != domain.StatusFailed || j.Attempts != 3 {
			t.Fatalf("got %s after %d attempts, want failed after job_max_attempts (3)", j.Status, j.Attempts)
		}
		if took := j.FinishedAt.Sub(*j.StartedAt); took > 3*time.Second+2*time.Second {
			t.Errorf("the last attempt took %s, longer than the 3s connect timeout", took)
		}
		if !strings.Contains(strings.ToLower(j.Error), "refused") {
			t.Errorf("error %q does not say the connection was refused", j.Error)
		}
		retries := 0
		for _, e := range c.events(id) {
			if e.Step == "retry" && strings.Contains(e.Message, "next attempt at") {
				retries++
			}
		}
		if retries != 2 {
			t.Errorf("%d retry events, want 2 (after attempts 1 and 2):\n%s", retries, dumpEvents(c.events(id)))
		}
	})

	t.Run("missing remote path names the target", func(t *testing.T) {
		c := c.with(t)
		missing := filepath.Join(edge.Dir, "no-such-dir")
		site := c.registerSite(edge, siteOpts{name: "edge-missing", targets: []map[string]any{
			{"mode": "directory", "path": dir},
			{"mode": "directory", "path": missing},
		}})
		id := c.startJob(site, "preflight")
		j := c.waitJob(id, 30*time.Second)
		hash := domain.TargetHash(domain.ModeDirectory, missing)
		if j.Status != domain.StatusFailed || !strings.Contains(j.Error, missing) || !strings.Contains(j.Error, hash) {
			t.Fatalf("got %s %q, want failed naming %s (%s)", j.Status, j.Error, missing, hash)
		}
		evs := c.events(id)
		if !hasEvent(evs, "target", domain.LevelError, "does not exist") || !hasEvent(evs, "target", domain.LevelInfo, dir) {
			t.Errorf("want one failed and one ok target event:\n%s", dumpEvents(evs))
		}
	})

	t.Run("no pinned key shows the fingerprint; trust on first use records it", func(t *testing.T) {
		c := c.with(t)
		site := c.registerSite(edge, siteOpts{name: "edge-unpinned", hostKey: "-"})
		j := c.waitJob(c.startJob(site, "preflight"), 30*time.Second)
		if j.Status != domain.StatusFailed || !strings.Contains(j.Error, "SHA256:") || !strings.Contains(j.Error, "pin") {
			t.Fatalf("got %s %q, want failed with the scanned fingerprint and how to pin it", j.Status, j.Error)
		}
		tofu := c.registerSite(edge, siteOpts{name: "edge-tofu", tofu: true})
		j = c.waitJob(c.startJob(tofu, "preflight"), 30*time.Second)
		if j.Status != domain.StatusSuccess {
			t.Fatalf("trust on first use: %s %q", j.Status, j.Error)
		}
		var view struct {
			Status domain.SiteStatus `json:"status"`
		}
		c.do("GET", "/api/v1/sites/"+tofu, nil, &view)
		if view.Status.LearnedHostKey == "" || !strings.Contains(edge.HostKeyLine, strings.Fields(view.Status.LearnedHostKey)[1]) {
			t.Fatalf("learned key %q is not the edge host's %q", view.Status.LearnedHostKey, edge.HostKeyLine)
		}
	})

	t.Run("hostile target paths are refused or handled as data", func(t *testing.T) {
		c := c.with(t)
		marker := filepath.Join(edge.Dir, "pwned")
		var e apiError
		code := c.do("POST", "/api/v1/sites", map[string]any{
			"name": "edge-newline", "host": edge.Host, "port": edge.Port, "user": edge.User, "host_key": edge.HostKeyLine,
			"targets": []map[string]any{{"mode": "directory", "path": dir + "\n; touch " + marker}},
		}, &e)
		if code != http.StatusBadRequest || !strings.Contains(e.Error.Message, "path") {
			t.Fatalf("newline in path: %d %+v, want 400 naming path", code, e)
		}
		odd := filepath.Join(edge.Dir, `we ird 'quo"te; $(touch `+marker+`) `+"`touch "+marker+"`")
		mkdir(t, odd)
		site := c.registerSite(edge, siteOpts{name: "edge-odd", targets: []map[string]any{{"mode": "directory", "path": odd}}})
		id := c.startJob(site, "preflight")
		j := c.waitJob(id, 30*time.Second)
		if j.Status != domain.StatusSuccess {
			t.Fatalf("odd path: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(id)))
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatal("the remote ran a command injected through a target path")
		}
	})
}
