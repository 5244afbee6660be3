package httpapi_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/services/api/internal/httpapi"
	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
)

func TestNodesOf(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	const a, b, c = "aaaa", "bbbb", "cccc"
	inst := func(node, service, name string, start, beat time.Duration) bus.Instance {
		return bus.Instance{Node: node, Service: service, Instance: name, StartedAt: now.Add(-start), HeartbeatAt: now.Add(-beat)}
	}
	live := []bus.Instance{
		inst(a, "puller", "w1", time.Hour, 5*time.Second),
		inst(a, "snapshotter", "w1", time.Hour, 5*time.Second),
		inst("", "api", "hub", time.Hour, time.Second), // no staging: no node
	}
	records := []bus.Instance{
		inst(a, "puller", "w1", time.Hour, 10*time.Second), // older than its liveness entry
		inst(a, "snapshotter", "w1", time.Hour, 10*time.Second),
		inst(a, "puller", "old", 3*time.Hour, 2*time.Hour), // an earlier process on node a
		inst(b, "puller", "w2", 2*time.Hour, 90*time.Second),
		inst(b, "snapshotter", "w2", 2*time.Hour, 90*time.Second),
		inst(c, "puller", "w3", 2*time.Hour, time.Hour),
	}
	statuses := map[string]domain.SiteStatus{
		"s1": {LastStagingID: a}, "s2": {LastStagingID: b}, "s3": {LastStagingID: b}, "s4": {},
	}
	running := []domain.Job{
		{ID: "j1", Worker: "w1", HandOff: &domain.HandOff{Staging: a, Worker: "w1"}},
		{ID: "j2", Worker: "w1"},   // a preflight: the name is node a's only
		{ID: "j3", Worker: "hub"},  // a sync on the hub: no node
		{ID: "j4", Worker: "gone"}, // an unknown worker
	}
	got := httpapi.NodesOf(live, nil, records, statuses, running, nil, nil, now)
	if len(got) != 3 {
		t.Fatalf("nodes = %+v", got)
	}
	na, nb, nc := got[0], got[1], got[2]
	if na.Node != a || na.Status != httpapi.NodeLive || na.SitesOwned != 1 || na.RunningJobs != 2 ||
		!na.LastSeen.Equal(now.Add(-5*time.Second)) || na.LastSeenAgeSeconds != 5 || !na.FirstSeen.Equal(now.Add(-3*time.Hour)) {
		t.Errorf("node a = %+v", na)
	}
	if len(na.Instances) != 3 || na.Instances[0].Instance != "old" || na.Instances[0].Live ||
		na.Instances[1].Instance != "w1" || !na.Instances[1].Live || na.Instances[2].Service != "snapshotter" {
		t.Errorf("node a instances = %+v", na.Instances)
	}
	if nb.Node != b || nb.Status != httpapi.NodeGone || nb.SitesOwned != 2 || nb.RunningJobs != 0 || nb.LastSeenAgeSeconds != 90 {
		t.Errorf("node b = %+v", nb)
	}
	if nc.Status != httpapi.NodeGone || nc.SitesOwned != 0 {
		t.Errorf("node c = %+v", nc)
	}

	// Judge: the gone node that owns sites is a problem; the one owning
	// none is history.
	r := httpapi.HealthReport{Nodes: got, Sync: httpapi.SyncHealth{Status: httpapi.SyncNotConfigured}}
	httpapi.Judge(&r)
	if r.Status != httpapi.HealthDegraded || len(r.Problems) != 1 ||
		!strings.HasPrefix(r.Problems[0], "node bbbb is gone (last seen 2026-05-01T11:58:30Z) and holds the baseline of 2 site(s)") {
		t.Errorf("judged %s %q", r.Status, r.Problems)
	}
	r = httpapi.HealthReport{Nodes: got[:1], Sync: httpapi.SyncHealth{Status: httpapi.SyncNotConfigured}}
	httpapi.Judge(&r)
	if r.Status != httpapi.HealthOK {
		t.Errorf("live node judged %s %q", r.Status, r.Problems)
	}

	// Liveness unreadable: nothing can be called gone.
	for _, n := range httpapi.NodesOf(live, errors.New("nats down"), records, statuses, nil, nil, nil, now) {
		if n.Status != httpapi.NodeUnknown {
			t.Errorf("node %s = %s with liveness unreadable", n.Node, n.Status)
		}
	}
}
