package node

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

// scrape returns the node's /metrics (no token needed).
func scrape(t *testing.T, n *Node) []byte {
	t.Helper()
	resp, err := http.Get("http://" + n.APIAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, body)
	}
	return body
}

// samples maps each sample line's series (as exposed: name{labels}) to
// its value.
func samples(t *testing.T, body []byte) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsAfterBackups(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run `make test` (scripts/install-tools.sh test installs the Debian prometheus package)")
	}
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t)
	src := filepath.Join(edge.Dir, "srv")
	mkdir(t, filepath.Join(src, "sub"))
	for name, body := range map[string]string{"a.txt": "alpha\n", "sub/b.txt": "beta\n"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	good := c.registerSite(edge, siteOpts{name: "edge-metrics-ok", targets: []map[string]any{
		{"mode": "directory", "path": src},
	}})
	// Its only target is missing: every target fails, no snapshot.
	bad := c.registerSite(edge, siteOpts{name: "edge-metrics-bad", targets: []map[string]any{
		{"mode": "directory", "path": filepath.Join(edge.Dir, "missing")},
	}})

	before := float64(time.Now().Unix())
	if j := c.waitJob(c.startJob(good, "backup"), 120*time.Second); j.Status != domain.StatusSuccess {
		t.Fatalf("backup of the good site: %s %q", j.Status, j.Error)
	}
	if j := c.waitJob(c.startJob(bad, "backup"), 120*time.Second); j.Status != domain.StatusFailed {
		t.Fatalf("backup of the bad site: %s %q, want failed", j.Status, j.Error)
	}

	// The job document is written just before the gauges: poll briefly.
	var body []byte
	var got map[string]float64
	// Every service metric of a process with a staging carries the node
	// (its staging id); the exposition sorts labels by name.
	if n.StagingID == "" {
		t.Fatal("the node has no staging id")
	}
	ser := func(name string, labels ...string) string {
		labels = append(labels, `node="`+n.StagingID+`"`)
		sort.Strings(labels)
		return name + "{" + strings.Join(labels, ",") + "}"
	}
	okStatus := ser("satoru_site_last_status", `site="`+good+`"`)
	badStatus := ser("satoru_site_last_status", `site="`+bad+`"`)
	for deadline := time.Now().Add(5 * time.Second); ; {
		body = scrape(t, n)
		got = samples(t, body)
		_, a := got[okStatus]
		_, b := got[badStatus]
		if a && b {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no site status series after the backups:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	site := func(name, s string, extra ...string) string {
		return ser(name, append([]string{`site="` + s + `"`}, extra...)...)
	}
	check := func(series string, ok func(float64) bool, want string) {
		t.Helper()
		v, found := got[series]
		if !found {
			t.Errorf("%s missing", series)
			return
		}
		if !ok(v) {
			t.Errorf("%s = %v, want %s", series, v, want)
		}
	}
	is := func(w float64) func(float64) bool { return func(v float64) bool { return v == w } }
	positive := func(v float64) bool { return v > 0 }
	recent := func(v float64) bool { return v >= before-1 && v <= float64(time.Now().Unix())+1 }

	check(site("satoru_site_last_success_timestamp_seconds", good), recent, "the backup's finish time")
	check(site("satoru_site_last_run_timestamp_seconds", good), recent, "the backup's finish time")
	check(okStatus, is(1), "1")
	check(site("satoru_site_health", good, `status="success"`), is(1), "1")
	check(site("satoru_site_health", good, `status="failed"`), is(0), "0")
	check(badStatus, is(0), "0 (failed)")
	check(site("satoru_site_health", bad, `status="failed"`), is(1), "1")
	check(site("satoru_site_last_run_timestamp_seconds", bad), recent, "the failed backup's finish time")
	if _, found := got[site("satoru_site_last_success_timestamp_seconds", bad)]; found {
		t.Errorf("a site that never succeeded has a last success timestamp")
	}

	check(site("satoru_puller_transferred_bytes_total", good), positive, "> 0")
	check(site("satoru_puller_files_total", good), is(2), "2")
	check(site("satoru_puller_targets_total", good, `status="success"`), is(1), "1")
	check(site("satoru_puller_targets_total", bad, `status="failed"`), is(1), "1")
	check(site("satoru_snapshotter_data_added_bytes_total", good), positive, "> 0")
	check(ser("satoru_jobs_finished_total", `status="success"`, `type="backup"`), is(1), "1")
	check(ser("satoru_jobs_finished_total", `status="failed"`, `type="backup"`), is(1), "1")
	check(ser("satoru_disk_free_bytes", `path="`+n.Config.StagingRoot+`"`), positive, "> 0")
	check(ser("satoru_disk_free_bytes", `path="`+n.Config.ResticRepoPath+`"`), positive, "> 0")
	check(ser("satoru_disk_size_bytes", `path="`+n.Config.StagingRoot+`"`), positive, "> 0")
	check(ser("satoru_disk_min_free_bytes", `path="`+n.Config.StagingRoot+`"`), positive, "> 0 (5 % of the disk by default)")
	// The history pass runs a minute after the scheduler leads; its
	// counters are there from the start, and nothing is 90 days old.
	check(ser("satoru_history_deleted_total", `kind="jobs"`), is(0), "0")
	check(ser("satoru_history_deleted_total", `kind="events"`), is(0), "0")
	if !bytes.Contains(body, []byte("\nsatoru_build_info{")) {
		t.Error("satoru_build_info missing")
	}
}
