package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/apicmd"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

// cliRun is one CLI invocation's outcome.
type cliRun struct {
	code           int
	stdout, stderr string
}

func (r cliRun) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// satoruCLI runs client commands in-process with the given environment.
func satoruCLI(t *testing.T, env []string, args ...string) cliRun {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code := apicmd.Main(ctx, args, env, &out, &errb)
	r := cliRun{code, out.String(), errb.String()}
	t.Logf("satoru %s -> %s", strings.Join(args, " "), r)
	return r
}

// expect fails unless the run exited with code and its stdout holds every
// one of want.
func expect(t *testing.T, r cliRun, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("want exit %d; got %s", code, r)
	}
	for _, w := range want {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("stdout lacks %q; got %s", w, r)
		}
	}
}

// expectLine fails unless a line of the run's stdout holds parts in order
// (detail views pad their keys to a common width).
func expectLine(t *testing.T, r cliRun, parts ...string) {
	t.Helper()
	for _, line := range strings.Split(r.stdout, "\n") {
		rest, ok := line, true
		for _, p := range parts {
			i := strings.Index(rest, p)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(p):]
		}
		if ok {
			return
		}
	}
	t.Fatalf("no stdout line holds %q in order; got %s", parts, r)
}

// TestCLIAgainstNode drives the client commands against an in-process
// `satoru up` with a real sshd edge host.
func TestCLIAgainstNode(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t)
	env := []string{"SATORU_API_URL=http://" + n.APIAddr, "SATORU_API_TOKEN=" + testToken}
	cli := func(args ...string) cliRun { t.Helper(); return satoruCLI(t, env, args...) }

	src := filepath.Join(edge.Dir, "srv")
	mkdir(t, filepath.Join(src, "sub"))
	for name, body := range map[string]string{"hello.txt": "hello\n", "sub/deep.txt": "deep\n"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dirHash := domain.TargetHash(domain.ModeDirectory, src)
	port := strconv.Itoa(edge.Port)

	// sites add, list, show
	r := cli("sites", "add", "cli-edge", "--host", edge.Host, "--port", port, "--user", edge.User,
		"--ssh-key", edge.KeyPath, "--host-key", edge.HostKeyLine, "--dir", src, "--exclude", "*.tmp")
	expect(t, r, 0, "added site cli-edge", dirHash, src, "*.tmp")
	r = cli("sites", "list")
	expect(t, r, 0, "NAME", "LAST SUCCESS", "cli-edge", "unknown", "never")
	var list struct {
		Sites []domain.SiteView `json:"sites"`
	}
	r = cli("sites", "list", "--json")
	expect(t, r, 0)
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Sites) != 1 || list.Sites[0].Name != "cli-edge" {
		t.Fatalf("sites list --json: %v %+v\n%s", err, list, r)
	}
	siteUUID := list.Sites[0].UUID
	expect(t, cli("sites", "show", siteUUID), 0, "cli-edge", edge.HostKeyLine+" (pinned)", "targets (1):", dirHash)

	// run backup --wait: live progress from the stream, then the summary.
	r = cli("run", "cli-edge", "backup", "--wait", "--timeout", "2m")
	expect(t, r, 0, "queued backup job for site cli-edge", "ssh_connect", "pull", "snapshot_id", dirHash)
	expectLine(t, r, "status:", "success")
	if strings.Contains(r.stderr, "polling") {
		t.Errorf("--wait fell back to polling while the API has the event stream:\n%s", r)
	}
	jobs := c.jobs(siteUUID)
	if len(jobs) != 1 || jobs[0].Status != domain.StatusSuccess {
		t.Fatalf("jobs after the backup: %+v", jobs)
	}
	backupID := jobs[0].ID

	// jobs list / show / logs
	expect(t, cli("jobs", "list", "--site", "cli-edge"), 0, "JOB", backupID, "backup", "cli-edge", "success")
	expect(t, cli("jobs", "list", "--type", "preflight"), 0, "no jobs")
	r = cli("jobs", "show", backupID)
	expect(t, r, 0, "job:", backupID, "events (", "snapshot")
	expectLine(t, r, "site:", "cli-edge ("+siteUUID+")")
	r = cli("jobs", "show", backupID, "--json")
	var shown struct {
		Job    domain.Job `json:"job"`
		Events struct {
			Events []domain.JobEvent `json:"events"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || shown.Job.ID != backupID || len(shown.Events.Events) == 0 {
		t.Fatalf("jobs show --json: %v\n%s", err, r)
	}
	expect(t, cli("jobs", "logs", backupID), 0, "info    pull", "info    snapshot")
	r = cli("jobs", "cancel", backupID)
	if r.code != 1 || !strings.Contains(r.stderr, "conflict, HTTP 409") {
		t.Errorf("cancel a finished job: %s", r)
	}
	// --follow on an ended job prints its events and exits with its code.
	expect(t, cli("jobs", "logs", backupID, "--follow"), 0, "pull", "job "+backupID+" ended success")

	// snapshots
	r = cli("snapshots", "cli-edge")
	expect(t, r, 0, "ID", "FILES", backupID, "restore paths start at")
	var snaps struct {
		Snapshots []struct {
			ID    string   `json:"id"`
			Paths []string `json:"paths"`
		} `json:"snapshots"`
	}
	r = cli("snapshots", "cli-edge", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &snaps); err != nil || len(snaps.Snapshots) != 1 || len(snaps.Snapshots[0].Paths) == 0 {
		t.Fatalf("snapshots --json: %v\n%s", err, r)
	}

	// restore to a local folder, waiting.
	dest := filepath.Join(t.TempDir(), "restored")
	r = cli("restore", "cli-edge", "--snapshot", snaps.Snapshots[0].ID[:8], "--path", snaps.Snapshots[0].Paths[0]+"/"+dirHash,
		"--to-local", dest, "--wait", "--timeout", "2m")
	expect(t, r, 0, "queued restore job for site cli-edge")
	expectLine(t, r, "status:", "success")
	if b, err := os.ReadFile(filepath.Join(dest, dirHash, "sub", "deep.txt")); err != nil || string(b) != "deep\n" {
		t.Fatalf("restored file: %q %v\n%s", b, err, r)
	}

	// targets add / list / rm; a missing target makes the next backup a
	// warning: exit 3.
	missing := filepath.Join(edge.Dir, "gone")
	missingHash := domain.TargetHash(domain.ModeDirectory, missing)
	expect(t, cli("targets", "add", "cli-edge", "--dir", missing), 0, "added directory target "+missing, missingHash)
	expect(t, cli("targets", "list", "cli-edge"), 0, "TARGET_HASH", dirHash, missingHash, "success")
	r = cli("run", "cli-edge", "backup", "--wait", "--timeout", "2m")
	expect(t, r, apicmd.ExitWarning, missingHash)
	expectLine(t, r, "status:", "warning")
	if !strings.Contains(r.stderr, "ended warning") {
		t.Errorf("stderr does not say the job ended with a warning:\n%s", r)
	}
	expect(t, cli("targets", "rm", "cli-edge", missingHash), 0, "removed target "+missingHash)
	if r = cli("targets", "list", "cli-edge"); strings.Contains(r.stdout, missingHash) {
		t.Fatalf("removed target still listed:\n%s", r)
	}
	r = cli("targets", "rm", "cli-edge", missingHash)
	if r.code != 1 || !strings.Contains(r.stderr, "not_found") {
		t.Errorf("removing it twice: %s", r)
	}

	// Live follow of a running job over the stream.
	expect(t, cli("run", "cli-edge", "preflight"), 0, "queued preflight job for site cli-edge: job ", "follow it with: satoru jobs logs")
	var acc struct {
		JobID  string `json:"job_id"`
		Status string `json:"status"`
	}
	r = cli("run", "cli-edge", "backup", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &acc); err != nil || acc.JobID == "" || acc.Status != "queued" {
		t.Fatalf("run --json: %v\n%s", err, r)
	}
	liveID := acc.JobID
	r = cli("jobs", "logs", liveID, "--follow")
	expect(t, r, 0, "pull", "snapshot", "job "+liveID+" ended success")
	if strings.Contains(r.stderr, "polling") {
		t.Errorf("--follow fell back to polling:\n%s", r)
	}
	r = cli("jobs", "logs", liveID, "--follow", "--json")
	expect(t, r, 0)
	for i, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var ev domain.JobEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Seq != i+1 {
			t.Fatalf("jobs logs --follow --json line %d: %v %q", i, err, line)
		}
	}

	// A site on a closed port: preflight fails, --wait exits 1. Through a
	// proxy without the event stream, so the polling fallback runs.
	noStream := httptest.NewServer(withoutStream(t, n.APIAddr))
	t.Cleanup(noStream.Close)
	proxied := []string{"SATORU_API_URL=" + noStream.URL, "SATORU_API_TOKEN=" + testToken}
	expect(t, satoruCLI(t, proxied, "sites", "add", "cli-closed", "--host", edge.Host, "--port", strconv.Itoa(testkit.FreePort(t)),
		"--user", edge.User, "--ssh-key", edge.KeyPath, "--host-key", edge.HostKeyLine, "--dir", src), 0, "added site cli-closed")
	r = satoruCLI(t, proxied, "run", "cli-closed", "preflight", "--wait", "--timeout", "2m")
	expect(t, r, apicmd.ExitFailed, "ssh_connect", "refused")
	expectLine(t, r, "status:", "failed")
	if !strings.Contains(r.stderr, "live events unavailable") || !strings.Contains(r.stderr, "polling every 1s") {
		t.Errorf("no note about the polling fallback:\n%s", r)
	}

	// health: degraded by the failed site (once the API's site list
	// snapshot has caught up), so exit 1; --json parses.
	for deadline := time.Now().Add(30 * time.Second); ; {
		r = cli("health")
		if r.code != 0 || time.Now().After(deadline) {
			break
		}
		expect(t, r, 0, "status: ok")
		time.Sleep(200 * time.Millisecond)
	}
	expect(t, r, 1, "status: degraded", "cli-closed")
	var h struct {
		Status string `json:"status"`
	}
	r = cli("health", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || h.Status != "degraded" || r.code != 1 {
		t.Fatalf("health --json: %v %+v\n%s", err, h, r)
	}

	// sync: no offsite repository in this node.
	expect(t, cli("sync", "status"), 0, "not_configured")
	r = cli("sync", "now")
	if r.code != 1 || !strings.Contains(r.stderr, "offsite sync is not configured") {
		t.Errorf("sync now without an offsite repository: %s", r)
	}

	// Errors: an unknown site, a wrong token, no token, an API that is
	// not there, an unknown flag.
	r = cli("snapshots", "nope")
	if r.code != 1 || !strings.Contains(r.stderr, `site "nope" not found by name or uuid (sites: cli-closed, cli-edge)`) {
		t.Errorf("unknown site: %s", r)
	}
	const wrong = "wrong-token-must-not-be-printed"
	r = satoruCLI(t, []string{"SATORU_API_URL=http://" + n.APIAddr, "SATORU_API_TOKEN=" + wrong}, "sites", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "unauthorized: the API at http://"+n.APIAddr+" refused the token from SATORU_API_TOKEN") ||
		strings.Contains(r.stdout+r.stderr, wrong) {
		t.Errorf("wrong token: %s", r)
	}
	r = satoruCLI(t, []string{"SATORU_API_URL=http://" + n.APIAddr, "SATORU_DATA_DIR=" + t.TempDir()}, "sites", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "no API token") {
		t.Errorf("no token: %s", r)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect(t, satoruCLI(t, []string{"SATORU_DATA_DIR=/nonexistent"}, "sites", "list", "--api-url", "http://"+n.APIAddr, "--token-file", tokenFile), 0, "cli-edge")
	closed := "http://127.0.0.1:" + strconv.Itoa(testkit.FreePort(t))
	r = satoruCLI(t, []string{"SATORU_API_URL=" + closed, "SATORU_API_TOKEN=" + testToken}, "health")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach the Satoru API at "+closed) || !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("API not there: %s", r)
	}
	if r = cli("jobs", "list", "--bogus"); r.code != apicmd.ExitUsage || !strings.Contains(r.stderr, "-bogus") {
		t.Errorf("unknown flag: %s", r)
	}

	// sites rm
	expect(t, cli("sites", "rm", "cli-closed"), 0, "removed site cli-closed")
	expect(t, cli("sites", "rm", siteUUID), 0, "removed site cli-edge")
	expect(t, cli("sites", "list"), 0, "no sites registered")
	if r = cli("sites", "show", "cli-edge"); r.code != 1 || !strings.Contains(r.stderr, "no sites are registered") {
		t.Errorf("show a removed site: %s", r)
	}
}

// withoutStream proxies the API at addr but answers 404 for the event
// stream, as an API without it would.
func withoutStream(t *testing.T, addr string) http.Handler {
	t.Helper()
	u, err := url.Parse("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/events/stream") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"error":{"code":"not_found","message":"no such endpoint: GET %s"}}`, r.URL.Path)
			return
		}
		proxy.ServeHTTP(w, r)
	})
}

// jobs lists a site's jobs, newest first.
func (c *client) jobs(siteUUID string) []domain.Job {
	c.t.Helper()
	var out struct {
		Jobs []domain.Job `json:"jobs"`
	}
	if code := c.do("GET", "/api/v1/jobs?site_uuid="+siteUUID, nil, &out); code != http.StatusOK {
		c.t.Fatalf("list jobs: status %d", code)
	}
	return out.Jobs
}
