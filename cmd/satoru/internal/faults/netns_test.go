package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/netns"
	"github.com/satoru/satoru/cmd/satoru/internal/realproc"
	"github.com/satoru/satoru/shared/affinity"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/staging"
	"github.com/satoru/satoru/shared/testkit"
)

// hostNet is a scenario's simulated machines, each a network namespace
// on one LAN (netns): a control host running `satoru control` (embedded
// NATS, store, API), worker hosts each running `satoru worker` on a
// staging root of its own, and edge hosts running sshd. They share the
// filesystem (the repository is one folder: a "shared mount") but no
// addresses: a worker reaches the control host and the edges only by
// their LAN addresses, and the test reaches the API through a forwarder.
type hostNet struct {
	t       *testing.T
	root    string
	lan     *netns.LAN
	ctl     *satoru
	ctlHost *netns.Host
	api     *api
	repo    string
	joinDir string
	nodes   []*hostNode
	// targets maps a site uuid to its one target's hash: its folder in
	// staging is <staging_root>/<site_uuid>/<target_hash>/.
	targets map[string]string
}

// hostNode is one worker host and its `satoru worker`.
type hostNode struct {
	name    string
	host    *netns.Host
	proc    *satoru
	staging string // staging id
	root    string // staging_root
	dead    bool   // SIGKILLed by the test
}

// hostSite is a site's folder on its edge host.
type hostSite struct {
	nodeSite
	edge *testkit.EdgeHost
}

// newHostNet creates the LAN. Call it before anything that runs on it:
// cleanups run last in, first out, so the processes stop before their
// namespaces go.
func newHostNet(t *testing.T) *hostNet {
	t.Helper()
	root := t.TempDir()
	return &hostNet{t: t, root: root, lan: netns.ForTest(t), repo: filepath.Join(root, "repo"), targets: map[string]string{}}
}

// addHost puts a new host on the LAN.
func (hn *hostNet) addHost(role string) *netns.Host {
	hn.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := hn.lan.AddHost(ctx, role)
	if err != nil {
		hn.t.Fatal(err)
	}
	return h
}

// edges starts nEdges edge hosts with nSites site folders between them,
// each seeded with files×size bytes of random data and a round.txt.
// Start them before satoru (see newScenario).
func (hn *hostNet) edges(nEdges, nSites, files int, size int64, prefix string) []hostSite {
	hn.t.Helper()
	var edges []*testkit.EdgeHost
	for i := 0; i < nEdges; i++ {
		h := hn.addHost(fmt.Sprintf("e%d", i+1))
		edges = append(edges, testkit.StartEdgeHostWith(hn.t, testkit.EdgeOptions{ListenHost: h.Addr, Wrap: h.Wrap(), Dial: h.DialContext}))
	}
	var sites []hostSite
	for i := 0; i < nSites; i++ {
		e := edges[i%nEdges]
		s := hostSite{nodeSite: nodeSite{name: fmt.Sprintf("%s-%d", prefix, i), dir: filepath.Join(e.Dir, fmt.Sprintf("site%d", i))}, edge: e}
		h := fnv.New64a()
		h.Write([]byte(s.name))
		seedTree(hn.t, s.dir, files, size, h.Sum64()%1e9)
		sites = append(sites, s)
	}
	return sites
}

// control starts `satoru control` on its own host, listening (API, NATS,
// store) on that host's LAN address, and checks that the join files it
// writes name that address: the one workers can reach.
func (hn *hostNet) control() {
	t := hn.t
	t.Helper()
	hn.ctlHost = hn.addHost("ctl")
	addr := hn.ctlHost.Addr
	l := newLayout(filepath.Join(hn.root, "control"))
	l.Repo = hn.repo
	env := append([]string{"SATORU_INSTANCE_NAME=control",
		"SATORU_API_LISTEN=" + addr + ":0",
		"SATORU_EMBEDDED_NATS_LISTEN=" + addr + ":0",
		"SATORU_EMBEDDED_STORE_LISTEN=" + addr + ":0"}, nodeEnv...)
	hn.ctl = newSatoru(t, "satoru control ("+hn.ctlHost.NS+")", l, []string{"control"}, satoruEnv(l, env...))
	hn.ctl.Wrap = hn.ctlHost.Wrap()
	hn.ctl.Start()

	u, err := url.Parse(hn.ctl.APIURL)
	if err != nil || u.Hostname() != addr {
		t.Fatalf("satoru control's API is at %q, want on %s (%v)", hn.ctl.APIURL, addr, err)
	}
	fwd, err := hn.ctlHost.Forward(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fwd.Close() })
	hn.api = realproc.NewClient(t, "http://"+fwd.Addr(), hn.ctl.Token)

	hn.joinDir = filepath.Join(l.Data, "join")
	for _, name := range []string{"nats-url", "mongo-uri"} {
		b, err := os.ReadFile(filepath.Join(hn.joinDir, name))
		if err != nil {
			t.Fatalf("join file: %v", err)
		}
		// Read, not printed: nats-url holds the password.
		if !strings.Contains(string(b), "@"+addr+":") && !strings.Contains(string(b), "//"+addr+":") {
			t.Fatalf("join file %s does not name the control host's address %s: workers on other hosts could not join", name, addr)
		}
	}
}

// addNode starts `satoru worker` on a new host, joined through the
// control's join files, with its own data_dir and staging_root and the
// one repository.
func (hn *hostNet) addNode() *hostNode {
	t := hn.t
	t.Helper()
	i := len(hn.nodes) + 1
	n := &hostNode{name: fmt.Sprintf("node-%d", i), host: hn.addHost(fmt.Sprintf("w%d", i))}
	l := newLayout(filepath.Join(hn.root, n.name))
	l.Repo = hn.repo
	env := append([]string{"SATORU_NATS_URL_FILE=" + filepath.Join(hn.joinDir, "nats-url"),
		"SATORU_MONGO_URI_FILE=" + filepath.Join(hn.joinDir, "mongo-uri"), "SATORU_INSTANCE_NAME=" + n.name}, nodeEnv...)
	n.proc = newSatoru(t, "satoru worker ("+n.name+", "+n.host.NS+")", l, []string{"worker"}, satoruEnv(l, env...))
	n.proc.Wrap = n.host.Wrap()
	n.proc.Start()
	n.root = l.Staging
	b, err := os.ReadFile(filepath.Join(l.Staging, staging.IDFile))
	if err != nil {
		t.Fatalf("staging id of %s: %v", n.name, err)
	}
	n.staging = strings.TrimSpace(string(b))
	if !staging.ValidID(n.staging) {
		t.Fatalf("staging id of %s: %q", n.name, n.staging)
	}
	for _, o := range hn.nodes {
		if o.staging == n.staging {
			t.Fatalf("%s and %s have one staging id %s", o.name, n.name, n.staging)
		}
	}
	hn.nodes = append(hn.nodes, n)
	t.Logf("%s: %s on %s, staging %s", n.name, n.host.NS, n.host.Addr, n.staging)
	return n
}

// nodeOf is the node whose staging id is id (nil for none of ours).
func (hn *hostNet) nodeOf(id string) *hostNode {
	for _, n := range hn.nodes {
		if n.staging == id {
			return n
		}
	}
	return nil
}

// register registers every site on its edge's LAN address.
func (hn *hostNet) register(sites []hostSite, bwLimit int) []nodeSite {
	hn.t.Helper()
	var out []nodeSite
	for i := range sites {
		sites[i].uuid = hn.api.RegisterSite(site{Name: sites[i].name, Edge: sites[i].edge, Path: sites[i].dir, BWLimit: bwLimit})
		ts := hn.api.Targets(sites[i].uuid)
		if len(ts) != 1 || ts[0].TargetHash == "" {
			hn.t.Fatalf("site %s: targets %+v, want the one registered", sites[i].name, ts)
		}
		hn.targets[sites[i].uuid] = ts[0].TargetHash
		out = append(out, sites[i].nodeSite)
	}
	return out
}

// checkRound waits for every backup of round r and checks each: it
// succeeded, was pulled and snapshotted in one process on a node of the
// scenario (hand_off.staging, hand_off.local), the site's newest snapshot
// is the job's, taken from that node's staging, and holds exactly the
// site's files on its edge (names and sizes, as `restic ls` lists them)
// with round r's round.txt. It returns the node of each site's backup.
func (hn *hostNet) checkRound(sites []nodeSite, ids map[string]string, r int, within time.Duration) map[string]*hostNode {
	t := hn.t
	t.Helper()
	a := hn.api
	deadline := time.Now().Add(within)
	jobs := map[string]domain.Job{}
	on := map[string]*hostNode{}
	bad := false // this round's, not an earlier assertion's
	for _, s := range sites {
		id := ids[s.uuid]
		j, ended := a.WaitJob(id, time.Until(deadline))
		jobs[s.uuid] = j
		if !ended || j.Status != domain.StatusSuccess {
			t.Errorf("round %d: backup of %s: job %s %s (attempts %d, worker %q, error %q), want success\nevents:\n%s",
				r, s.name, id, j.Status, j.Attempts, j.Worker, j.Error, a.DumpEvents(id))
			bad = true
			continue
		}
		if j.HandOff == nil || !j.HandOff.Local || j.HandOff.Worker != j.Worker {
			t.Errorf("round %d: %s: hand-off %+v by worker %s, want in process on the worker that finished it", r, s.name, j.HandOff, j.Worker)
			bad = true
			continue
		}
		n := hn.nodeOf(j.HandOff.Staging)
		if n == nil || n.name != j.Worker {
			t.Errorf("round %d: %s: pulled on staging %s by %s, which is no node of this scenario (or another's staging)", r, s.name, j.HandOff.Staging, j.Worker)
			bad = true
			continue
		}
		on[s.uuid] = n
	}
	if bad {
		t.FailNow()
	}
	for _, err := range parallelDo(len(sites), func(i int) error {
		s := sites[i]
		return hn.checkSnapshot(s, jobs[s.uuid], on[s.uuid], r)
	}) {
		if err != nil {
			t.Error(err)
		}
	}
	by := map[string]int{}
	for _, n := range on {
		by[n.name]++
	}
	var dist []string
	for n, k := range by {
		dist = append(dist, fmt.Sprintf("%s:%d", n, k))
	}
	sort.Strings(dist)
	t.Logf("round %d: %d backups checked, by %s", r, len(sites), strings.Join(dist, " "))
	return on
}

// checkSnapshot compares the site's newest snapshot with its folder on
// the edge.
func (hn *hostNet) checkSnapshot(s nodeSite, j domain.Job, n *hostNode, r int) error {
	snap, mark, err := newestRoundMark(hn.t, hn.repo, s.uuid)
	if err != nil {
		return fmt.Errorf("round %d: %s: %w", r, s.name, err)
	}
	if id, _ := j.Summary["snapshot_id"].(string); snap.ID != id {
		return fmt.Errorf("round %d: %s: newest snapshot %s, want job %s's %q", r, s.name, snap.ID, j.ID, id)
	}
	if len(snap.Paths) != 1 || snap.Paths[0] != filepath.Join(n.root, s.uuid) {
		return fmt.Errorf("round %d: %s: snapshot of %q, want the site's folder in %s's staging %s", r, s.name, snap.Paths, n.name, n.root)
	}
	if want := roundMark(s, r); mark != want {
		return fmt.Errorf("round %d: %s: snapshot %s holds round.txt %q, want %q", r, s.name, snap.ID[:8], mark, want)
	}
	got, err := snapshotFiles(hn.t, hn.repo, snap.ID, filepath.Join(snap.Paths[0], hn.targets[s.uuid]))
	if err != nil {
		return fmt.Errorf("round %d: %s: %w", r, s.name, err)
	}
	want, err := treeFiles(s.dir)
	if err != nil {
		return fmt.Errorf("round %d: %s: files on the edge: %w", r, s.name, err)
	}
	var diff []string
	for p, size := range want {
		if g, ok := got[p]; !ok {
			diff = append(diff, "missing "+p)
		} else if g != size {
			diff = append(diff, fmt.Sprintf("%s: %d bytes, want %d", p, g, size))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diff = append(diff, "foreign "+p)
		}
	}
	if len(diff) > 0 {
		sort.Strings(diff)
		if len(diff) > 10 {
			diff = append(diff[:10], fmt.Sprintf("... %d more", len(diff)-10))
		}
		return fmt.Errorf("round %d: %s: snapshot %s (%d files) differs from the site's %d files on its edge: %s",
			r, s.name, snap.ID[:8], len(got), len(want), strings.Join(diff, "; "))
	}
	return nil
}

// snapshotFiles lists a snapshot's regular files below base: relative
// path -> size.
func snapshotFiles(t *testing.T, repo, snapID, base string) (map[string]int64, error) {
	out, err := restic(t, repo, nil, "ls", "--json", "--no-lock", snapID)
	if err != nil {
		return nil, fmt.Errorf("restic ls %s: %w: %s", snapID, err, trimOut(out))
	}
	files := map[string]int64{}
	for _, line := range strings.Split(out, "\n") {
		var node struct {
			StructType string `json:"struct_type"`
			Type       string `json:"type"`
			Path       string `json:"path"`
			Size       int64  `json:"size"`
		}
		if json.Unmarshal([]byte(line), &node) != nil || node.StructType != "node" || node.Type != "file" {
			continue
		}
		rel, ok := strings.CutPrefix(node.Path, base+"/")
		if !ok {
			return nil, fmt.Errorf("snapshot %s holds %s, outside its path %s", snapID, node.Path, base)
		}
		files[rel] = node.Size
	}
	return files, nil
}

// treeFiles lists dir's regular files: relative path -> size.
func treeFiles(dir string) (map[string]int64, error) {
	files := map[string]int64{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[rel] = fi.Size()
		return nil
	})
	return files, err
}

// checkOneStaging fails unless each site's folder is in exactly one
// node's staging_root (<staging_root>/<site_uuid>/, where the puller
// keeps it between pulls), the one its backup ran on. It returns the
// node holding each site.
func (hn *hostNet) checkOneStaging(sites []nodeSite, on map[string]*hostNode, what string) {
	t := hn.t
	t.Helper()
	for _, s := range sites {
		var holders []string
		for _, n := range hn.nodes {
			if _, err := os.Stat(filepath.Join(n.root, s.uuid)); err == nil {
				holders = append(holders, n.name)
			}
		}
		if len(holders) != 1 || (on[s.uuid] != nil && holders[0] != on[s.uuid].name) {
			ran := "?"
			if on[s.uuid] != nil {
				ran = on[s.uuid].name
			}
			t.Errorf("%s: site %s's staging folder is on %d node(s) %v, want exactly one: %s, where its backup ran", what, s.name, len(holders), holders, ran)
		}
	}
}

// changeData gives every site round r: a new round.txt, one file
// rewritten and one added, so the next pull has work and the snapshot
// differs.
func changeData(t *testing.T, sites []nodeSite, r int, size int64) {
	t.Helper()
	writeRound(t, sites, r)
	for i, s := range sites {
		writeRandom(t, filepath.Join(s.dir, "d00", "f000.bin"), size, uint64(50000+100*r+i))
		writeRandom(t, filepath.Join(s.dir, fmt.Sprintf("added-%d.bin", r)), size, uint64(60000+100*r+i))
	}
}

// nodeHealth is what a node entry of GET /api/v1/health tells about
// partitions (site affinity).
type nodeHealth struct {
	Node   string `json:"node"`
	Status string `json:"status"`
	// Pointers: a health without the fields (no site affinity) is told
	// apart from one whose node holds nothing.
	Partitions    *int `json:"partitions"`
	SitesAssigned *int `json:"sites_assigned"`
}

func (n nodeHealth) String() string {
	show := func(p *int) string {
		if p == nil {
			return "absent"
		}
		return fmt.Sprint(*p)
	}
	return fmt.Sprintf("%s %s partitions %s sites_assigned %s", n.Node, n.Status, show(n.Partitions), show(n.SitesAssigned))
}

func (hn *hostNet) healthNodes() []nodeHealth { return healthNodes(hn.t, hn.api) }

// healthNodes is the nodes of GET /api/v1/health.
func healthNodes(t *testing.T, a *api) []nodeHealth {
	t.Helper()
	var out struct {
		Nodes []nodeHealth `json:"nodes"`
	}
	if code := a.Do("GET", "/api/v1/health", nil, &out); code != 200 {
		t.Fatalf("GET /api/v1/health: status %d", code)
	}
	return out.Nodes
}

// waitSettled polls the health's nodes until every one of hn's live
// workers holds exactly its rendezvous share of the 32 partitions among
// them (affinity.Owned) and no other node holds any: the split the
// sites will keep while these nodes live. Backups posted before that
// may land on a node that is about to hand their partition on.
func (hn *hostNet) waitSettled(within time.Duration) {
	hn.t.Helper()
	var ids []string
	for _, n := range hn.nodes {
		if !n.dead {
			ids = append(ids, n.staging)
		}
	}
	waitSettled(hn.t, hn.api, ids, within)
}

// waitSettled polls GET /api/v1/health until the puller nodes ids (staging
// ids) hold exactly their rendezvous shares of the partitions among them
// and no other node holds any.
func waitSettled(t *testing.T, a *api, ids []string, within time.Duration) {
	t.Helper()
	want := map[string]int{}
	for _, id := range ids {
		want[id] = len(affinity.Owned(id, ids))
	}
	deadline := time.Now().Add(within)
	var last []nodeHealth
	for time.Now().Before(deadline) {
		last = healthNodes(t, a)
		got := map[string]int{}
		for _, e := range last {
			if e.Partitions != nil && *e.Partitions > 0 {
				got[e.Node] = *e.Partitions
			}
		}
		if maps.Equal(got, want) {
			t.Logf("partitions settled: %v", got)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("the partitions did not settle to %v within %s: health nodes %v", want, within, last)
}

// stopAll stops the workers and the control, so nothing holds the
// repository during a final `restic check`.
func (hn *hostNet) stopAll() {
	for _, n := range hn.nodes {
		n.proc.Stop()
	}
	hn.ctl.Stop()
}
