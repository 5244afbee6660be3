package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

// Concurrent first backups: how many rounds (each ~9 s here) and sites.
const (
	firstBackupRounds = 20
	firstBackupSites  = 8
)

// concurrentFirstBackups: a fresh repository, 8 sites, 8 backups posted at
// once, run by two worker nodes (`satoru up` and a `satoru worker` joined
// to it, each with its own staging, one repository), repeated up to 20
// times within the budget, each time on a
// fresh data folder. Every round every backup succeeds, `restic check`
// passes and keys/ holds exactly one key (several `restic init` racing
// used to leave several keys and a corrupt repository).
func concurrentFirstBackups(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	var paths []string
	for i := 0; i < firstBackupSites; i++ {
		dir := filepath.Join(edge.Dir, fmt.Sprintf("site%d", i))
		seedTree(t, dir, 4, 64<<10, uint64(1000+i))
		paths = append(paths, dir)
	}
	start := time.Now()
	var longest time.Duration
	rounds := 0
	for rounds < firstBackupRounds {
		began := time.Now()
		firstBackupRound(t, edge, paths, rounds+1)
		longest = max(longest, time.Since(began))
		rounds++
	}
	t.Logf("concurrent first backups: %d rounds in %s (longest round %s)",
		rounds, time.Since(start).Round(time.Second), longest.Round(time.Second))
}

// firstBackupRound is one round on a fresh data folder and repository.
func firstBackupRound(t *testing.T, edge *testkit.EdgeHost, paths []string, round int) {
	t.Helper()
	root, err := os.MkdirTemp(t.TempDir(), fmt.Sprintf("round%02d-", round))
	if err != nil {
		t.Fatal(err)
	}
	shared := newLayout(root)
	up := startUp(t, shared)
	// Joined the way the banner says: the credentials come from the files
	// satoru up wrote into <data_dir>/join.
	joinDir := filepath.Join(shared.Data, "join")
	join := []string{"SATORU_NATS_URL_FILE=" + filepath.Join(joinDir, "nats-url"),
		"SATORU_MONGO_URI_FILE=" + filepath.Join(joinDir, "mongo-uri")}
	// The second node: `satoru worker` with its own data_dir and staging,
	// the repository shared. Each node snapshots what it pulled, so the
	// two write the repository at once.
	l := shared
	l.Data, l.Staging = filepath.Join(root, "worker"), filepath.Join(root, "worker-staging")
	w := newSatoru(t, "satoru worker", l, []string{"worker"}, satoruEnv(l, join...))
	w.Start()
	workers := []*satoru{w}
	a := up.API()
	var sites []string
	for i, p := range paths {
		sites = append(sites, a.RegisterSite(site{Name: fmt.Sprintf("first-%d", i), Edge: edge, Path: p}))
	}
	// Posted at once: the two nodes pull and snapshot them together.
	ids := make([]string, len(sites))
	errs := parallelDo(len(sites), func(i int) error {
		var err error
		ids[i], err = a.TryStartJob(sites[i], "backup")
		return err
	})
	for _, err := range errs {
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	byWorker := map[string]int{}
	failed := false
	for i, id := range ids {
		j, ended := a.WaitJob(id, time.Until(deadline))
		byWorker[j.Worker]++
		if !ended || j.Status != domain.StatusSuccess {
			failed = true
			t.Errorf("round %d: first backup of site %d: job %s %s (attempts %d, error %q), want success\nevents:\n%s",
				round, i, id, j.Status, j.Attempts, j.Error, a.DumpEvents(id))
		}
	}
	// Stopped before the check, so nothing holds the repository.
	for i := len(workers) - 1; i >= 0; i-- {
		workers[i].Stop()
	}
	up.Stop()
	resticCheck(t, shared.Repo)
	keys, _ := os.ReadDir(filepath.Join(shared.Repo, "keys"))
	if len(keys) != 1 {
		var names []string
		for _, k := range keys {
			names = append(names, k.Name())
		}
		t.Errorf("round %d: keys/ of the fresh repository holds %d keys %v, want exactly 1: restic init ran more than once", round, len(keys), names)
	}
	var dist []string
	for w, n := range byWorker {
		dist = append(dist, fmt.Sprintf("%s:%d", w, n))
	}
	sort.Strings(dist)
	t.Logf("round %d: snapshots by worker %s", round, strings.Join(dist, " "))
	if failed || t.Failed() {
		t.FailNow() // the logs of this round are the ones to read
	}
	_ = os.RemoveAll(root)
}
