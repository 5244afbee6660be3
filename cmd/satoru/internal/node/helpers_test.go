package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/config"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

const testToken = "test-token-0123456789"

// testEnv is the environment a test node is configured from: fast
// heartbeats (1 s; ack wait 3 s and site lease 2 s follow) so crash
// recovery is seen within seconds.
func testEnv(dataDir string, extra ...string) []string {
	env := []string{
		"SATORU_DATA_DIR=" + dataDir,
		"SATORU_STAGING_ROOT=" + filepath.Join(dataDir, "backups"),
		"SATORU_RESTIC_REPO_PATH=" + filepath.Join(dataDir, "repo"),
		"SATORU_API_LISTEN=127.0.0.1:0",
		"SATORU_API_TOKEN=" + testToken,
		"SATORU_JOB_HEARTBEAT_SECONDS=1",
		"SATORU_SSH_CONNECT_TIMEOUT_SECONDS=3",
		"SATORU_JOB_WORKER_CONCURRENCY=4",
		"SATORU_RESTIC_BIN=" + resticBin(),
		"SATORU_LOG_LEVEL=warn",
		"SATORU_JOB_MAX_ATTEMPTS=3",
		"SATORU_JOB_RETRY_BASE_SECONDS=1",
		// The scheduler ticks once at start (no sites yet) and then not
		// again, so scheduled jobs never mix into a test's own jobs.
		"SATORU_SCHEDULER_TICK_SECONDS=86400",
	}
	return append(env, extra...)
}

// hubEnv is testEnv for a node extra workers join: its embedded servers
// listen (on random ports), so they require credentials.
func hubEnv(dataDir string, extra ...string) []string {
	return testEnv(dataDir, append([]string{"SATORU_EMBEDDED_NATS_LISTEN=127.0.0.1:0", "SATORU_EMBEDDED_STORE_LISTEN=127.0.0.1:0"}, extra...)...)
}

// joinEnv is how a worker joins hub, as the banner says: from the join
// files hub wrote (credentials never in the environment or argv).
func joinEnv(hub *Node) []string {
	dir := JoinDir(hub.Config)
	return []string{"SATORU_NATS_URL_FILE=" + filepath.Join(dir, "nats-url"), "SATORU_MONGO_URI_FILE=" + filepath.Join(dir, "mongo-uri")}
}

// resticBin is the restic `make test` installed into the repo's bin/, or
// the one on PATH.
func resticBin() string {
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "bin", "restic")
	if _, err := os.Stat(p); err == nil {
		abs, _ := filepath.Abs(p)
		return abs
	}
	return ""
}

func loadConfig(t testing.TB, env []string) config.Config {
	t.Helper()
	cfg, err := config.Load("", env)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startNode starts a node and stops it when the test ends.
func startNode(t testing.TB, cfg config.Config, roles Roles) (*Node, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n, err := Start(ctx, cfg, roles, testLogger(t))
	if err != nil {
		cancel()
		t.Fatalf("start node: %v", err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := n.Wait(); err != nil {
			t.Errorf("node stopped with error: %v", err)
		}
	}
	t.Cleanup(stop)
	return n, stop
}

// client talks to a node's REST API.
type client struct {
	t     testing.TB
	base  string
	token string
}

func newClient(t testing.TB, n *Node) *client {
	return &client{t: t, base: "http://" + n.APIAddr, token: testToken}
}

// with returns the client bound to a subtest's t.
func (c *client) with(t *testing.T) *client { return &client{t: t, base: c.base, token: c.token} }

func (c *client) do(method, path string, body any, out any) int {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			buf, err := json.Marshal(body)
			if err != nil {
				c.t.Fatal(err)
			}
			rd = bytes.NewReader(buf)
		}
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type siteOpts struct {
	name    string
	host    string
	port    int
	hostKey string
	tofu    bool
	targets []map[string]any
}

// registerSite registers an edge host as a site and returns its uuid.
func (c *client) registerSite(h *testkit.EdgeHost, o siteOpts) string {
	c.t.Helper()
	if o.host == "" {
		o.host = h.Host
	}
	if o.port == 0 {
		o.port = h.Port
	}
	if o.hostKey == "" && !o.tofu {
		o.hostKey = h.HostKeyLine
	}
	body := map[string]any{
		"name": o.name, "host": o.host, "port": o.port, "user": h.User,
		"ssh_key_path": h.KeyPath, "trust_on_first_use": o.tofu,
	}
	if o.hostKey != "" && o.hostKey != "-" {
		body["host_key"] = o.hostKey
	}
	if o.targets != nil {
		body["targets"] = o.targets
	}
	var site struct {
		UUID string `json:"site_uuid"`
	}
	var e apiError
	code := c.do("POST", "/api/v1/sites", body, &site)
	if code != http.StatusCreated {
		c.do("POST", "/api/v1/sites", body, &e)
		c.t.Fatalf("register site %s: %d %+v", o.name, code, e)
	}
	return site.UUID
}

func (c *client) startJob(siteUUID string, typ string) string {
	c.t.Helper()
	var out struct {
		JobID  string `json:"job_id"`
		Status string `json:"status"`
	}
	if code := c.do("POST", "/api/v1/sites/"+siteUUID+"/jobs", map[string]string{"type": typ}, &out); code != http.StatusAccepted {
		c.t.Fatalf("start %s job: status %d", typ, code)
	}
	if out.JobID == "" || out.Status != "queued" {
		c.t.Fatalf("start job: got %+v, want a job_id and status queued", out)
	}
	return out.JobID
}

func (c *client) job(id string) domain.Job {
	c.t.Helper()
	var j domain.Job
	if code := c.do("GET", "/api/v1/jobs/"+id, nil, &j); code != http.StatusOK {
		c.t.Fatalf("get job %s: status %d", id, code)
	}
	return j
}

// waitJob polls until the job is in a terminal status.
func (c *client) waitJob(id string, within time.Duration) domain.Job {
	c.t.Helper()
	return c.waitJobStatus(id, within, func(s domain.JobStatus) bool { return s.Terminal() })
}

func (c *client) waitJobStatus(id string, within time.Duration, ok func(domain.JobStatus) bool) domain.Job {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		j := c.job(id)
		if ok(j.Status) {
			return j
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("job %s still %s after %s (error %q)", id, j.Status, within, j.Error)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *client) events(id string) []domain.JobEvent {
	c.t.Helper()
	var out struct {
		Events []domain.JobEvent `json:"events"`
	}
	if code := c.do("GET", "/api/v1/jobs/"+id+"/events", nil, &out); code != http.StatusOK {
		c.t.Fatalf("get events of %s: status %d", id, code)
	}
	return out.Events
}

func dumpEvents(evs []domain.JobEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  #%d %s %s %s %s\n", e.Seq, e.Step, e.Level, e.TargetHash, e.Message)
	}
	return b.String()
}
