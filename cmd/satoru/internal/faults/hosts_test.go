package faults

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/realproc"
	"github.com/satoru/satoru/shared/domain"
)

// The multi-host scenarios (issue #12) run on simulated hosts: network
// namespaces made by netns (see hostNet). Site data is small (8 files of
// 128 KiB) except where a pull must be caught mid-way.
const (
	hostFiles    = 8
	hostFileSize = 128 << 10
)

// hosts12Sites3Nodes: `satoru control`, 3 worker hosts and 3 edge hosts;
// 12 sites. Every backup succeeds, every snapshot holds exactly its
// site's files, and each site's staging folder is on exactly one node.
// A second round with changed data succeeds the same way, with every
// site on the node it was on (site affinity).
func hosts12Sites3Nodes(t *testing.T) {
	hn := newHostNet(t)
	hs := hn.edges(3, 12, hostFiles, hostFileSize, "h12")
	hn.control()
	for i := 0; i < 3; i++ {
		hn.addNode()
	}
	hn.waitSettled(time.Minute)
	sites := hn.register(hs, 0)

	writeRound(t, sites, 1)
	on1 := hn.checkRound(sites, backupAll(t, hn.api, sites), 1, 3*time.Minute)
	hn.checkOneStaging(sites, on1, "round 1")

	changeData(t, sites, 2, hostFileSize)
	on2 := hn.checkRound(sites, backupAll(t, hn.api, sites), 2, 3*time.Minute)
	hn.checkOneStaging(sites, on2, "round 2")
	for _, s := range sites {
		if on1[s.uuid] != on2[s.uuid] {
			t.Errorf("site %s moved from %s to %s between rounds with all nodes alive: a site must stay on its node", s.name, on1[s.uuid].name, on2[s.uuid].name)
		}
	}
}

// hostsNodeKilledMidPull: 3 worker hosts, 6 sites with 6 MiB of new
// 128 KiB files each pulled at 1 MiB/s; one worker SIGKILLed while its
// rsync pulls. Every backup still succeeds (the killed node's jobs are
// redelivered to a survivor), no site is ever pulled on two nodes at
// once (the process tables, sampled, and the jobs' attempt events), the
// cut job goes on on a survivor within failoverWithin, the next round
// succeeds; the killed node restarts and takes back only its own sites;
// and `restic check` passes.
func hostsNodeKilledMidPull(t *testing.T) {
	hn := newHostNet(t)
	hs := hn.edges(2, 6, hostFiles, hostFileSize, "hkill")
	hn.control()
	for i := 0; i < 3; i++ {
		hn.addNode()
	}
	hn.waitSettled(time.Minute)
	sites := hn.register(hs, nodeBWLimit)
	writeRound(t, sites, 1)
	for i, s := range sites {
		// Many small files, as in workerNodes: a SIGKILLed rsync's
		// receiver finishes the file in flight before it goes.
		seedTree(t, filepath.Join(s.dir, "new"), nodeKillBytes/(128<<10), 128<<10, uint64(19000+i))
	}

	w := hn.watchPulls(sites)
	ids := backupAll(t, hn.api, sites)
	victim, killedSite, killedAt, before := hn.killNodeMidPull(ids)
	hn.victimLeftNothing(victim, before)
	hn.checkRound(sites, ids, 1, settleWithin)
	hn.api.WaitNoRunning(time.Now().Add(30 * time.Second))
	w.stop()

	redone := 0
	for _, s := range sites {
		id := ids[s.uuid]
		j := hn.api.Job(id)
		atts := attemptsOf(hn.api.Events(id))
		if len(atts) == 0 {
			t.Errorf("%s: job %s has no \"started by\" event", s.name, id)
			continue
		}
		handedOn := false
		for k := 1; k < len(atts); k++ {
			handedOn = handedOn || (atts[k-1].worker == victim.name && atts[k].worker != victim.name)
		}
		if s.uuid == killedSite && !handedOn {
			t.Errorf("%s: job %s, whose pull was cut by the kill of %s, has attempts %+v: want one on %s, then one on a survivor",
				s.name, id, victim.name, atts, victim.name)
		}
		if s.uuid == killedSite {
			// The site moves once the node's liveness expires (at least
			// 10 s) and a survivor's keeper takes its partition; generous
			// for a loaded machine, but far below the minutes of an
			// ack-wait-only redelivery with a stuck consumer.
			for k := 1; k < len(atts); k++ {
				if atts[k-1].worker == victim.name && atts[k].worker != victim.name {
					moved := atts[k].start.Sub(killedAt)
					t.Logf("%s: the cut job went on on %s %s after the kill", s.name, atts[k].worker, moved.Round(100*time.Millisecond))
					if moved > failoverWithin {
						t.Errorf("%s: job %s went on on a survivor %s after the kill of %s, want within %s", s.name, id, moved, victim.name, failoverWithin)
					}
				}
			}
		}
		for k := 1; k < len(atts); k++ {
			prev, next := atts[k-1], atts[k]
			if prev.worker == victim.name {
				redone++
				// The killed node's attempt ended at the kill at the
				// latest; a survivor may start only after it.
				if next.start.Before(killedAt) {
					t.Errorf("%s: job %s attempt %d started on %s at %s, before %s (attempt %d) was killed at %s: two nodes at once",
						s.name, id, next.n, next.worker, next.start.Format("15:04:05.000"), prev.worker, prev.n, killedAt.Format("15:04:05.000"))
				}
			} else if next.start.Before(prev.last) {
				t.Errorf("%s: job %s attempt %d started on %s at %s while attempt %d on %s still wrote events until %s",
					s.name, id, next.n, next.worker, next.start.Format("15:04:05.000"), prev.n, prev.worker, prev.last.Format("15:04:05.000"))
			}
		}
		if j.Worker == victim.name {
			t.Errorf("%s: job %s finished by %s, which was killed", s.name, id, victim.name)
		}
	}
	if redone == 0 {
		t.Errorf("no job of %s was redelivered to a survivor after its kill", victim.name)
	}
	for _, o := range w.overlaps() {
		t.Error(o)
	}
	t.Logf("%d job(s) of %s redelivered; %d process samples without overlap", redone, victim.name, w.samples())

	changeData(t, sites, 2, hostFileSize)
	on2 := hn.checkRound(sites, backupAll(t, hn.api, sites), 2, 3*time.Minute)
	hn.api.WaitNoRunning(time.Now().Add(30 * time.Second))

	// The killed node comes back on its staging: it wins back its own
	// partitions and no others, so each site stays where it was or
	// returns to it; none moves between the survivors.
	victim.proc.Start()
	victim.dead = false
	hn.waitSettled(time.Minute)
	changeData(t, sites, 3, hostFileSize)
	on3 := hn.checkRound(sites, backupAll(t, hn.api, sites), 3, 3*time.Minute)
	back := 0
	for _, s := range sites {
		switch on3[s.uuid] {
		case on2[s.uuid]:
		case victim:
			back++
		default:
			t.Errorf("site %s moved from %s to %s, another survivor, when %s came back", s.name, on2[s.uuid].name, on3[s.uuid].name, victim.name)
		}
	}
	t.Logf("%d of %d sites went back to %s", back, len(sites), victim.name)
	hn.api.WaitNoRunning(time.Now().Add(30 * time.Second))
	hn.stopAll()
	resticCheck(t, hn.repo)
}

// failoverWithin bounds how long after a node's SIGKILL its cut job goes
// on on a survivor (liveness TTL 10 s, keeper rounds, lease retries).
const failoverWithin = 60 * time.Second

// hostsFourthNodeJoins: a round on 3 worker hosts, then a 4th joins;
// once it holds partitions (and the live nodes hold all 32) the next
// round's sites are each on the node they were on or on the new one:
// none moves between two old nodes.
func hostsFourthNodeJoins(t *testing.T) {
	hn := newHostNet(t)
	hs := hn.edges(2, 12, hostFiles, hostFileSize, "hjoin")
	hn.control()
	for i := 0; i < 3; i++ {
		hn.addNode()
	}
	hn.waitSettled(time.Minute)
	sites := hn.register(hs, 0)
	writeRound(t, sites, 1)
	on1 := hn.checkRound(sites, backupAll(t, hn.api, sites), 1, 3*time.Minute)

	fourth := hn.addNode()
	hn.waitSettled(time.Minute)
	changeData(t, sites, 2, hostFileSize)
	on2 := hn.checkRound(sites, backupAll(t, hn.api, sites), 2, 3*time.Minute)
	moved := 0
	for _, s := range sites {
		switch on2[s.uuid] {
		case on1[s.uuid]:
		case fourth:
			moved++
		default:
			t.Errorf("site %s moved from %s to %s, another old node, when %s joined: only sites won by the new node may move",
				s.name, on1[s.uuid].name, on2[s.uuid].name, fourth.name)
		}
	}
	t.Logf("%d of %d sites moved to %s", moved, len(sites), fourth.name)
}

// killNodeMidPull waits until a worker runs rsync into its staging with
// at least 1 MiB of a site there, then SIGKILLs it; it returns the node,
// the site, the time just before the kill and the node's descendants at
// the kill.
func (hn *hostNet) killNodeMidPull(ids map[string]string) (*hostNode, string, time.Time, []procInfo) {
	t := hn.t
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var lastJobPoll time.Time
	for time.Now().Before(deadline) {
		for _, n := range hn.nodes {
			for siteUUID := range ids {
				dir := filepath.Join(n.root, siteUUID)
				staged := realproc.TreeBytes(dir) + realproc.TreeBytes(filepath.Join(n.root, ".pull", siteUUID))
				if staged >= 1<<20 && hasChild(n.proc, isRsyncInto(dir)) {
					at := time.Now()
					before := n.proc.Kill()
					n.dead = true
					t.Logf("killed %s mid-pull of site %s (%d bytes staged)", n.name, siteUUID, staged)
					return n, siteUUID, at, before
				}
			}
		}
		// The jobs once a second only: the store scans on every lookup.
		if time.Since(lastJobPoll) > time.Second {
			lastJobPoll = time.Now()
			ended := 0
			for _, id := range ids {
				if hn.api.Job(id).Status.Terminal() {
					ended++
				}
			}
			if ended == len(ids) {
				t.Fatal("every backup ended before a node was caught mid-pull")
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no node was seen pulling within 2 minutes")
	return nil, "", time.Time{}, nil
}

// victimLeftNothing fails the test unless, within 30 s of the kill,
// nothing the killed node had started (before, ssh control masters
// aside) and no process naming its folders still runs. Not the 5 s of
// checkNoOrphans: under the load of parallel scenarios the killed node's
// ssh sessions were seen to take longer to notice their rsync is gone
// (the limit docs/faults.md describes); what matters here is that they
// end by themselves, so no pull of the dead node outlives it for long.
func (hn *hostNet) victimLeftNothing(victim *hostNode, before []procInfo) {
	t := hn.t
	t.Helper()
	dirs := []string{victim.proc.L.Data, victim.proc.L.Staging}
	began := time.Now()
	for {
		var left []string
		for _, p := range before {
			if !p.MuxMaster() && realproc.Alive(p) {
				left = append(left, p.String())
			}
		}
		for _, p := range realproc.InstallationProcs(satoruBin, dirs, false) {
			left = append(left, p.String())
		}
		if len(left) == 0 {
			t.Logf("the killed %s left no process after %s", victim.name, time.Since(began).Round(100*time.Millisecond))
			return
		}
		if time.Since(began) > 30*time.Second {
			t.Errorf("%d process(es) of the killed %s still run 30s after the SIGKILL:\n  %s", len(left), victim.name, strings.Join(left, "\n  "))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// attempt is one start of a job, from its events.
type attempt struct {
	n      int
	worker string
	start  time.Time
	last   time.Time // the newest event before the next attempt started
}

// attemptsOf reads a job's attempts from its "started by <worker>
// (attempt <n>)" events.
func attemptsOf(evs []domain.JobEvent) []attempt {
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Seq < evs[j].Seq })
	var out []attempt
	for _, e := range evs {
		var a attempt
		if e.Step == "job" {
			if _, err := fmt.Sscanf(e.Message, "started by %s (attempt %d)", &a.worker, &a.n); err == nil {
				a.start, a.last = e.TS, e.TS
				out = append(out, a)
				continue
			}
		}
		if len(out) > 0 && e.TS.After(out[len(out)-1].last) {
			out[len(out)-1].last = e.TS
		}
	}
	return out
}

// pullWatch samples every node's process tree every 250 ms (a pull
// lasts seconds; denser sampling would load a busy machine) and records
// each time one site has an rsync pulling into its staging folder on two
// nodes at once.
type pullWatch struct {
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	bad  []string
	n    int
}

func (hn *hostNet) watchPulls(sites []nodeSite) *pullWatch {
	w := &pullWatch{done: make(chan struct{})}
	nodes := append([]*hostNode(nil), hn.nodes...)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tick.C:
			}
			pulling := map[string][]string{}
			// One read of /proc per sample, for every node.
			children := map[int][]procInfo{}
			for _, p := range realproc.AllProcs() {
				children[p.PPID] = append(children[p.PPID], p)
			}
			for _, n := range nodes {
				pid := n.proc.PID()
				if pid == 0 {
					continue
				}
				kids := below(children, pid)
				for _, s := range sites {
					match := isRsyncInto(filepath.Join(n.root, s.uuid))
					for _, p := range kids {
						if match(p) && alive(p) {
							pulling[s.name] = append(pulling[s.name], n.name)
							break
						}
					}
				}
			}
			w.mu.Lock()
			w.n++
			for s, on := range pulling {
				if len(on) > 1 {
					w.bad = append(w.bad, fmt.Sprintf("%s: site %s pulled on %s at once", time.Now().Format("15:04:05.000"), s, strings.Join(on, " and ")))
				}
			}
			w.mu.Unlock()
		}
	}()
	hn.t.Cleanup(w.stop)
	return w
}

// below is every process under pid in a parent -> children table.
func below(children map[int][]procInfo, pid int) []procInfo {
	var out []procInfo
	queue := []int{pid}
	for len(queue) > 0 {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.PID)
		}
		queue = queue[1:]
	}
	return out
}

// alive excludes a zombie: a killed node's rsync that has exited but
// not yet been reaped holds no staging.
func alive(p procInfo) bool {
	q, ok := realproc.ReadProc(p.PID)
	return ok && q.Start == p.Start && syscall.Kill(p.PID, 0) == nil && len(q.Args) > 0 && q.Args[0] != ""
}

func (w *pullWatch) stop() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.wg.Wait()
}

func (w *pullWatch) overlaps() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.bad...)
}

func (w *pullWatch) samples() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}
