package httpapi

import (
	"fmt"
	"sort"
	"time"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

// Node statuses.
const (
	// NodeLive: at least one of the node's instances has a liveness entry.
	NodeLive = "live"
	// NodeGone: the node's instances are known only from their records
	// (bucket SATORU_NODES): every one stopped or died.
	NodeGone = "gone"
	// NodeUnknown: the liveness entries could not be read.
	NodeUnknown = "unknown"
)

// NodeHealth is one worker node (a staging, shared/staging): the
// instances that ran on it within the record retention, whether any is
// alive, and the sites whose staging baseline it holds.
type NodeHealth struct {
	// Node is the staging id.
	Node      string         `json:"node"`
	Status    string         `json:"status"`
	Instances []NodeInstance `json:"instances"`
	// FirstSeen is the earliest start of a known instance; LastSeen the
	// newest heartbeat (or clean stop) of any.
	FirstSeen          time.Time `json:"first_seen"`
	LastSeen           time.Time `json:"last_seen"`
	LastSeenAgeSeconds int64     `json:"last_seen_age_seconds"`
	// RunningJobs counts the running jobs on the node: those whose pull
	// was handed off from its staging, and those without a hand-off run
	// by an instance name only this node has.
	RunningJobs int `json:"running_jobs"`
	// SitesOwned counts the sites whose last successful snapshot was
	// taken from this node's staging (site_status.last_staging_id): the
	// node holds their baseline, so their next pull is incremental only
	// there.
	SitesOwned int `json:"sites_owned"`
	// Partitions counts the job stream partitions the node's puller
	// consumer holds now (of events.JobPartitions; shared/affinity), and
	// SitesAssigned the registered sites in them: the sites whose jobs go
	// to this node.
	Partitions    int `json:"partitions"`
	SitesAssigned int `json:"sites_assigned"`
}

// NodeInstance is one service instance of a node.
type NodeInstance struct {
	Service   string    `json:"service"`
	Instance  string    `json:"instance"`
	Live      bool      `json:"live"`
	Version   string    `json:"version,omitempty"`
	StartedAt time.Time `json:"started_at"`
	LastSeen  time.Time `json:"last_seen"`
}

// NodesOf builds the node list from the live instances (liveErr: they
// could not be read), the node records (the instances' last values,
// kept after they stop), the site statuses and the running jobs; nodes
// by id, instances by service then name.
// Each node's share of the sites comes from owners, which maps a
// partition to the node whose consumer holds it (bus.PartitionOwners),
// and sites, the registered sites.
func NodesOf(live []bus.Instance, liveErr error, records []bus.Instance, statuses map[string]domain.SiteStatus, running []domain.Job,
	owners map[int]string, sites []domain.Site, now time.Time) []NodeHealth {
	type key struct{ service, instance string }
	byNode := map[string]map[key]*NodeInstance{}
	add := func(in bus.Instance, isLive bool) {
		if in.Node == "" {
			return
		}
		m := byNode[in.Node]
		if m == nil {
			m = map[key]*NodeInstance{}
			byNode[in.Node] = m
		}
		k := key{in.Service, in.Instance}
		ni := m[k]
		if ni == nil {
			ni = &NodeInstance{Service: in.Service, Instance: in.Instance}
			m[k] = ni
		}
		// The newer value wins (a record is at most a renewal behind the
		// liveness entry, or newer when written at a clean stop).
		if in.HeartbeatAt.After(ni.LastSeen) || ni.LastSeen.IsZero() {
			ni.LastSeen, ni.StartedAt, ni.Version = in.HeartbeatAt, in.StartedAt, in.Version
		}
		ni.Live = ni.Live || isLive
	}
	if liveErr == nil {
		for _, in := range live {
			add(in, true)
		}
	}
	for _, in := range records {
		add(in, false)
	}
	// Instance names held by one node only, to place jobs without a
	// hand-off (preflight, retention, a pull not yet handed off).
	nameNodes := map[string]map[string]bool{}
	for node, m := range byNode {
		for k := range m {
			if nameNodes[k.instance] == nil {
				nameNodes[k.instance] = map[string]bool{}
			}
			nameNodes[k.instance][node] = true
		}
	}
	runningOn := map[string]int{}
	for _, j := range running {
		switch {
		case j.HandOff != nil && j.HandOff.Staging != "":
			runningOn[j.HandOff.Staging]++
		case len(nameNodes[j.Worker]) == 1:
			for node := range nameNodes[j.Worker] {
				runningOn[node]++
			}
		}
	}
	owned := map[string]int{}
	for _, st := range statuses {
		if st.LastStagingID != "" {
			owned[st.LastStagingID]++
		}
	}
	parts, assigned := map[string]int{}, map[string]int{}
	for _, node := range owners {
		parts[node]++
	}
	for _, site := range sites {
		if node, ok := owners[events.JobPartition(site.UUID)]; ok {
			assigned[node]++
		}
	}
	out := make([]NodeHealth, 0, len(byNode))
	for node, m := range byNode {
		nh := NodeHealth{Node: node, Status: NodeGone, Instances: make([]NodeInstance, 0, len(m)),
			RunningJobs: runningOn[node], SitesOwned: owned[node], Partitions: parts[node], SitesAssigned: assigned[node]}
		for _, ni := range m {
			nh.Instances = append(nh.Instances, *ni)
			if ni.Live {
				nh.Status = NodeLive
			}
			if ni.LastSeen.After(nh.LastSeen) {
				nh.LastSeen = ni.LastSeen
			}
			if !ni.StartedAt.IsZero() && (nh.FirstSeen.IsZero() || ni.StartedAt.Before(nh.FirstSeen)) {
				nh.FirstSeen = ni.StartedAt
			}
		}
		if liveErr != nil {
			nh.Status = NodeUnknown
		}
		sort.Slice(nh.Instances, func(a, b int) bool {
			x, y := nh.Instances[a], nh.Instances[b]
			if x.Service != y.Service {
				return x.Service < y.Service
			}
			return x.Instance < y.Instance
		})
		if d := now.Sub(nh.LastSeen); d > 0 {
			nh.LastSeenAgeSeconds = int64(d / time.Second)
		}
		out = append(out, nh)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Node < out[b].Node })
	return out
}

// nodeProblems are the problems of the node list: a gone node that owns
// sites (their next backup elsewhere is a full pull, and the node's
// staging may hold the only recent copy), and node records that could
// not be read. A gone node that owns none is history, not a problem.
func nodeProblems(nodes []NodeHealth, recordsErr string) []string {
	var out []string
	if recordsErr != "" {
		out = append(out, "node records unknown: "+recordsErr)
	}
	for _, n := range nodes {
		if n.Status == NodeGone && n.SitesOwned > 0 {
			out = append(out, fmt.Sprintf("node %s is gone (last seen %s) and holds the baseline of %d site(s)",
				n.Node, n.LastSeen.UTC().Format(time.RFC3339), n.SitesOwned))
		}
	}
	return out
}
