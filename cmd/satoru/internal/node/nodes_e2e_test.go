package node

import (
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/apicmd"
	"github.com/satoru/satoru/shared/affinity"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/testkit"
)

// nodesHealth is the part of GET /api/v1/health about worker nodes.
type nodesHealth struct {
	Status   string   `json:"status"`
	Problems []string `json:"problems"`
	Nodes    []struct {
		Node      string `json:"node"`
		Status    string `json:"status"`
		Instances []struct {
			Service  string `json:"service"`
			Instance string `json:"instance"`
			Live     bool   `json:"live"`
		} `json:"instances"`
		LastSeen    time.Time `json:"last_seen"`
		RunningJobs int       `json:"running_jobs"`
		SitesOwned  int       `json:"sites_owned"`
		// The node's share of the sites (site affinity).
		Partitions    int `json:"partitions"`
		SitesAssigned int `json:"sites_assigned"`
	} `json:"nodes"`
}

// shares is each node's "partitions/sites_assigned".
func (h nodesHealth) shares() map[string]string {
	out := map[string]string{}
	for _, n := range h.Nodes {
		out[n.Node] = itoa(n.Partitions) + "/" + itoa(n.SitesAssigned)
	}
	return out
}

// nodeState is one node of a health report as "status/sites_owned".
func (h nodesHealth) nodeState(id string) string {
	for _, n := range h.Nodes {
		if n.Node == id {
			return n.Status + "/" + itoa(n.SitesOwned)
		}
	}
	return "absent"
}

func itoa(i int) string { return strconv.Itoa(i) }

// waitNodes polls GET /health until ok accepts it.
func waitNodes(t *testing.T, c *client, what string, ok func(nodesHealth) bool) nodesHealth {
	t.Helper()
	var h nodesHealth
	for deadline := time.Now().Add(15 * time.Second); ; {
		h = nodesHealth{}
		if code := c.do("GET", "/api/v1/health", nil, &h); code != http.StatusOK {
			t.Fatalf("GET /health: %d", code)
		}
		if ok(h) {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never showed %s: %+v", what, h)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestHealthListsWorkerNodes: a hub (API, scheduler, syncer) and two
// worker nodes with their own staging roots. Health lists both nodes
// with the sites each owns (its staging holds their last backup); a
// stopped node shows as gone with when it was last seen, and health is
// degraded while it owns sites; a node restarted on its staging is the
// same node again. A worker's metrics carry its node.
func TestHealthListsWorkerNodes(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	dir := t.TempDir()
	hub, _ := startNode(t, loadConfig(t, hubEnv(dir)), Roles{API: true, Scheduler: true, Syncer: true})
	c := newClient(t, hub)
	workerCfg := func(name string) []string {
		return testEnv(filepath.Join(dir, name), append(joinEnv(hub), "SATORU_INSTANCE_NAME="+name,
			"SATORU_RESTIC_REPO_PATH="+hub.Config.ResticRepoPath,
			"SATORU_RESTIC_PASSWORD_FILE="+ResticPasswordFile(hub.Config))...)
	}
	var sites []string
	for _, name := range []string{"one", "two", "three"} {
		src := filepath.Join(edge.Dir, name)
		mkdir(t, src)
		if err := os.WriteFile(filepath.Join(src, "f.txt"), []byte(name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		sites = append(sites, c.registerSite(edge, siteOpts{name: "edge-node-" + name,
			targets: []map[string]any{{"mode": "directory", "path": src}}}))
	}
	backup := func(site, wantNode string) {
		t.Helper()
		j := c.waitJob(c.startJob(site, "backup"), 120*time.Second)
		if j.Status != domain.StatusSuccess {
			t.Fatalf("backup of %s: %s %q", site, j.Status, j.Error)
		}
		if j.HandOff == nil || j.HandOff.Staging != wantNode {
			t.Fatalf("backup of %s handed off %+v, want staging %s", site, j.HandOff, wantNode)
		}
	}

	// Node A alone backs up two sites; node B, alone, the third.
	a, stopA := startNode(t, loadConfig(t, workerCfg("wa")), Worker)
	idA := a.StagingID
	backup(sites[0], idA)
	backup(sites[1], idA)
	// The job document is final a moment before the counter moves.
	want := `satoru_jobs_finished_total{node="` + idA + `",status="success",type="backup"} 2`
	body := scrape(t, a)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(string(body), want+"\n") && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		body = scrape(t, a)
	}
	if !strings.Contains(string(body), want+"\n") {
		t.Errorf("worker A's metrics lack %s:\n%s", want, grepLines(string(body), "satoru_jobs_finished_total"))
	}
	stopA()
	b, stopB := startNode(t, loadConfig(t, workerCfg("wb")), Worker)
	idB := b.StagingID
	if idA == "" || idB == "" || idA == idB {
		t.Fatalf("staging ids %q and %q", idA, idB)
	}
	h := waitNodes(t, c, "A gone owning 2, B live owning 0", func(h nodesHealth) bool {
		return h.nodeState(idA) == "gone/2" && h.nodeState(idB) == "live/0"
	})
	problem := "node " + idA + " is gone (last seen "
	if h.Status != "degraded" || !hasPrefix(h.Problems, problem) {
		t.Errorf("health with node A gone: %s %q, want degraded with %q", h.Status, h.Problems, problem)
	}
	for _, n := range h.Nodes {
		if n.Node == idA && (n.LastSeen.IsZero() || time.Since(n.LastSeen) > time.Minute || len(n.Instances) != 2 || n.Instances[0].Live) {
			t.Errorf("gone node A: %+v", n)
		}
	}
	backup(sites[2], idB)

	// A again on its staging: the same node, live, both own their sites.
	startNode(t, loadConfig(t, workerCfg("wa")), Worker)
	h = waitNodes(t, c, "A live owning 2, B live owning 1", func(h nodesHealth) bool {
		return h.nodeState(idA) == "live/2" && h.nodeState(idB) == "live/1"
	})
	if h.Status != "ok" || len(h.Nodes) != 2 {
		t.Errorf("health with both nodes live: %s %q, %d nodes", h.Status, h.Problems, len(h.Nodes))
	}
	// Both live: the partitions split between them as rendezvous hashing
	// says, and so do the three sites.
	live := []string{idA, idB}
	wantShares := map[string]string{}
	for _, id := range live {
		assigned := 0
		for _, s := range sites {
			if affinity.Owner(events.JobPartition(s), live) == id {
				assigned++
			}
		}
		wantShares[id] = itoa(len(affinity.Owned(id, live))) + "/" + itoa(assigned)
	}
	waitNodes(t, c, "the partitions split "+fmt.Sprint(wantShares), func(h nodesHealth) bool {
		return maps.Equal(h.shares(), wantShares)
	})
	for _, n := range h.Nodes {
		for _, in := range n.Instances {
			if !in.Live || (in.Service != domain.ServicePuller && in.Service != domain.ServiceSnapshotter) {
				t.Errorf("node %s instance %+v", n.Node, in)
			}
		}
	}

	// B stops: gone with its one site.
	stopB()
	h = waitNodes(t, c, "B gone owning 1", func(h nodesHealth) bool { return h.nodeState(idB) == "gone/1" })
	if h.Status != "degraded" || !hasPrefix(h.Problems, "node "+idB+" is gone (last seen ") || h.nodeState(idA) != "live/2" {
		t.Errorf("health with node B gone: %s %q %+v", h.Status, h.Problems, h.Nodes)
	}
	// `satoru health` says the same, and fails.
	r := satoruCLI(t, []string{"SATORU_API_URL=http://" + hub.APIAddr, "SATORU_API_TOKEN=" + testToken}, "health")
	expect(t, r, apicmd.ExitFailed, "status: degraded", "problem: node "+idB+" is gone")
	expectLine(t, r, "node "+idA+":", "live, takes ", "holds the baseline of 2 site(s)", "puller wa, snapshotter wa")
	expectLine(t, r, "node "+idB+":", "gone, takes 0 site(s) (0 partition(s)), holds the baseline of 1 site(s)", "last seen", "puller wb, snapshotter wb")
}

func hasPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// grepLines is the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
