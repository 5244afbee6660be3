package node

import (
	"net"
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

// slowSite registers a site reached through a proxy that holds each new
// connection for delay, so its preflights take measurable time.
func slowSite(t *testing.T, c *client, edge *testkit.EdgeHost, name string, delay time.Duration) string {
	t.Helper()
	addr := testkit.StartSlowProxy(t, net.JoinHostPort(edge.Host, strconv.Itoa(edge.Port)), delay)
	host, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	mkdir(t, filepath.Join(edge.Dir, "data"))
	return c.registerSite(edge, siteOpts{name: name, host: host, port: port,
		targets: []map[string]any{{"mode": "directory", "path": filepath.Join(edge.Dir, "data")}}})
}

func overlap(a, b domain.Job) bool {
	return a.StartedAt.Before(*b.FinishedAt) && b.StartedAt.Before(*a.FinishedAt)
}

func TestJobsOfOneSiteNeverOverlap(t *testing.T) {
	edgeA, edgeB := testkit.StartEdgeHost(t), testkit.StartEdgeHost(t)
	n, _ := startNode(t, loadConfig(t, testEnv(t.TempDir())), All)
	c := newClient(t, n)
	siteA := slowSite(t, c, edgeA, "site-a", 1500*time.Millisecond)
	siteB := slowSite(t, c, edgeB, "site-b", 1500*time.Millisecond)

	var idsA []string
	for i := 0; i < 3; i++ {
		idsA = append(idsA, c.startJob(siteA, "preflight"))
	}
	idB := c.startJob(siteB, "preflight")

	var jobsA []domain.Job
	for _, id := range idsA {
		j := c.waitJob(id, 60*time.Second)
		if j.Status != domain.StatusSuccess {
			t.Fatalf("job %s: %s %q", id, j.Status, j.Error)
		}
		jobsA = append(jobsA, j)
	}
	jb := c.waitJob(idB, 60*time.Second)
	if jb.Status != domain.StatusSuccess {
		t.Fatalf("job %s: %s %q", idB, jb.Status, jb.Error)
	}
	for i := range jobsA {
		for k := i + 1; k < len(jobsA); k++ {
			if overlap(jobsA[i], jobsA[k]) {
				t.Errorf("jobs of one site overlap: %s [%s, %s] and %s [%s, %s]",
					jobsA[i].ID, jobsA[i].StartedAt, jobsA[i].FinishedAt, jobsA[k].ID, jobsA[k].StartedAt, jobsA[k].FinishedAt)
			}
		}
	}
	anyOverlap := false
	for _, ja := range jobsA {
		anyOverlap = anyOverlap || overlap(ja, jb)
	}
	if !anyOverlap {
		t.Errorf("the job of site b never ran beside a job of site a; sites are not concurrent")
	}
}

func TestTwoPullerProcessesSerializeASite(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	dir := t.TempDir()
	hub, _ := startNode(t, loadConfig(t, hubEnv(dir)), Roles{API: true})
	c := newClient(t, hub)
	site := slowSite(t, c, edge, "site-shared", time.Second)
	// Two puller "processes": separate nodes with their own connections.
	for i := 0; i < 2; i++ {
		cfg := loadConfig(t, testEnv(filepath.Join(dir, "worker"+strconv.Itoa(i)),
			append(joinEnv(hub), "SATORU_INSTANCE_NAME=worker"+strconv.Itoa(i))...))
		startNode(t, cfg, Roles{Puller: true})
	}
	var ids []string
	for i := 0; i < 4; i++ {
		ids = append(ids, c.startJob(site, "preflight"))
	}
	var jobs []domain.Job
	workers := map[string]bool{}
	for _, id := range ids {
		j := c.waitJob(id, 90*time.Second)
		if j.Status != domain.StatusSuccess {
			t.Fatalf("job %s: %s %q", id, j.Status, j.Error)
		}
		jobs = append(jobs, j)
		workers[j.Worker] = true
	}
	for i := range jobs {
		for k := i + 1; k < len(jobs); k++ {
			if overlap(jobs[i], jobs[k]) {
				t.Errorf("jobs %s and %s of one site overlap across processes", jobs[i].ID, jobs[k].ID)
			}
		}
	}
	t.Logf("jobs ran on workers %v", workers)
}

func TestKilledPullerJobIsRedeliveredAndFinishes(t *testing.T) {
	for _, tc := range []struct {
		name string
		// crash also cuts the worker's NATS connection first, so it can
		// neither hand the message back nor release the site lease: the
		// job must come back through AckWait and the lease's TTL.
		crash bool
	}{
		{name: "context canceled", crash: false},
		{name: "connection cut", crash: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edge := testkit.StartEdgeHost(t)
			dir := t.TempDir()
			hub, _ := startNode(t, loadConfig(t, hubEnv(dir)), Roles{API: true})
			c := newClient(t, hub)
			site := slowSite(t, c, edge, "site-crash", 2*time.Second)
			workerCfg := func(name string) []string {
				return testEnv(filepath.Join(dir, name), append(joinEnv(hub), "SATORU_INSTANCE_NAME="+name)...)
			}
			doomed, kill := startNode(t, loadConfig(t, workerCfg("doomed")), Roles{Puller: true})

			id := c.startJob(site, "preflight")
			j := c.waitJobStatus(id, 30*time.Second, func(s domain.JobStatus) bool { return s == domain.StatusRunning })
			if j.Worker != "doomed" {
				t.Fatalf("running on %q, want doomed", j.Worker)
			}
			if tc.crash {
				doomed.NC.Close()
			}
			kill() // mid-job: the ssh behind the slow proxy is still connecting
			if j := c.job(id); j.Status != domain.StatusRunning {
				t.Fatalf("after the kill the job is %s; it should still be running, waiting for redelivery", j.Status)
			}
			startNode(t, loadConfig(t, workerCfg("rescuer")), Roles{Puller: true})
			j = c.waitJob(id, 60*time.Second)
			if j.Status != domain.StatusSuccess || j.Worker != "rescuer" || j.Attempts != 2 {
				t.Fatalf("after redelivery: status %s worker %s attempts %d error %q; want success on rescuer in attempt 2",
					j.Status, j.Worker, j.Attempts, j.Error)
			}
		})
	}
}

func TestCancelQueuedAndRunningJobs(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	dir := t.TempDir()
	hub, _ := startNode(t, loadConfig(t, hubEnv(dir)), Roles{API: true})
	c := newClient(t, hub)
	site := slowSite(t, c, edge, "site-cancel", 2500*time.Millisecond)

	queued := c.startJob(site, "preflight")
	var resp map[string]any
	if code := c.do("POST", "/api/v1/jobs/"+queued+"/cancel", nil, &resp); code != http.StatusAccepted {
		t.Fatalf("cancel queued: %d %v", code, resp)
	}
	cfg := loadConfig(t, testEnv(filepath.Join(dir, "w"), joinEnv(hub)...))
	startNode(t, cfg, Roles{Puller: true})
	if j := c.waitJob(queued, 30*time.Second); j.Status != domain.StatusCanceled {
		t.Fatalf("queued job canceled before start: got %s", j.Status)
	}

	running := c.startJob(site, "preflight")
	c.waitJobStatus(running, 30*time.Second, func(s domain.JobStatus) bool { return s == domain.StatusRunning })
	c.do("POST", "/api/v1/jobs/"+running+"/cancel", nil, nil)
	j := c.waitJob(running, 10*time.Second)
	if j.Status != domain.StatusCanceled {
		t.Fatalf("running job after cancel: %s %q", j.Status, j.Error)
	}
	if took := j.FinishedAt.Sub(*j.StartedAt); took >= 2*time.Second {
		t.Errorf("cancel took effect only after %s; the slow connection was not interrupted", took)
	}
	if code := c.do("POST", "/api/v1/jobs/"+running+"/cancel", nil, nil); code != http.StatusConflict {
		t.Errorf("cancel of a finished job: %d, want 409", code)
	}
}

func TestRestartKeepsSitesTargetsAndJobs(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	dir := t.TempDir()
	var env []string // no SATORU_API_TOKEN: a token is generated and reused after restart
	for _, kv := range testEnv(dir) {
		if !strings.HasPrefix(kv, "SATORU_API_TOKEN=") {
			env = append(env, kv)
		}
	}
	n, stop := startNode(t, loadConfig(t, env), All)
	tokenFile := filepath.Join(dir, "api-token")
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatalf("generated token: %v", err)
	}
	if fi, _ := os.Stat(tokenFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	c := &client{t: t, base: "http://" + n.APIAddr, token: string(token[:len(token)-1])}
	mkdir(t, filepath.Join(edge.Dir, "keep"))
	site := c.registerSite(edge, siteOpts{name: "site-keep", targets: []map[string]any{{"mode": "directory", "path": filepath.Join(edge.Dir, "keep")}}})
	id := c.startJob(site, "preflight")
	before := c.waitJob(id, 30*time.Second)
	stop()

	n2, _ := startNode(t, loadConfig(t, env), All)
	c2 := &client{t: t, base: "http://" + n2.APIAddr, token: c.token}
	var targets struct {
		Targets []domain.Target `json:"targets"`
	}
	if code := c2.do("GET", "/api/v1/sites/"+site+"/targets", nil, &targets); code != http.StatusOK || len(targets.Targets) != 1 {
		t.Fatalf("targets after restart: %d %+v", code, targets)
	}
	after := c2.job(id)
	if after.Status != before.Status || after.Status != domain.StatusSuccess {
		t.Fatalf("job after restart: %s, before %s", after.Status, before.Status)
	}
	if len(c2.events(id)) == 0 {
		t.Fatal("job events lost in restart")
	}
	// The restarted node still runs jobs.
	if j := c2.waitJob(c2.startJob(site, "preflight"), 30*time.Second); j.Status != domain.StatusSuccess {
		t.Fatalf("preflight after restart: %s %q", j.Status, j.Error)
	}
}
