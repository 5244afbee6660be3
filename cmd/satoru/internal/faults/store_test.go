package faults

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	_ "modernc.org/sqlite"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

// natsState is what the embedded NATS holds that must survive a kill -9.
type natsState struct {
	streams   map[string]jetstream.StreamState
	consumers []string // of SATORU_JOBS
	buckets   []string
}

// readNATS reads the streams, the job queue's consumers and the KV
// buckets through a plain client of the node's NATS listener.
// joinedNATSURL is the URL, with its password, that the running satoru up
// wrote for workers into <data_dir>/join (rewritten at every start).
func joinedNATSURL(t *testing.T, s *satoru) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.L.Data, "join", "nats-url"))
	if err != nil {
		t.Fatalf("read the join file: %v", err)
	}
	return strings.TrimSpace(string(b))
}

func readNATS(t *testing.T, url string) natsState {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("faults-test"))
	if err != nil {
		t.Fatalf("connect to the embedded NATS at %s: %v", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := natsState{streams: map[string]jetstream.StreamState{}}
	for _, name := range []string{events.StreamJobs, events.StreamEvents} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatalf("stream %s info: %v", name, err)
		}
		st.streams[name] = info.State
		if name == events.StreamJobs {
			for c := range s.ConsumerNames(ctx).Name() {
				st.consumers = append(st.consumers, c)
			}
		}
	}
	names := js.KeyValueStoreNames(ctx)
	for b := range names.Name() {
		st.buckets = append(st.buckets, b)
	}
	if err := names.Error(); err != nil {
		t.Fatalf("KV buckets: %v", err)
	}
	slices.Sort(st.consumers)
	slices.Sort(st.buckets)
	return st
}

// sqliteIntact runs PRAGMA integrity_check on every SQLite file of the
// embedded store while no process has it open.
func sqliteIntact(t *testing.T, storeDir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(storeDir, "*.sqlite"))
	if len(files) == 0 {
		t.Fatalf("no SQLite file in the embedded store folder %s", storeDir)
	}
	for _, f := range files {
		db, err := sql.Open("sqlite", "file:"+f)
		if err != nil {
			t.Fatalf("open %s: %v", f, err)
		}
		var res string
		err = db.QueryRow("PRAGMA integrity_check").Scan(&res)
		db.Close()
		if err != nil || res != "ok" {
			t.Errorf("embedded store file %s after kill -9: integrity_check %q, %v", f, res, err)
		}
	}
}

// storeIntactAfterKill: sites, targets, finished jobs and their events,
// the NATS streams, consumers and KV buckets are all there after a kill
// -9 of the node taken while a backup pulls (so NATS and the store are
// being written), the SQLite files pass integrity_check, and the
// interrupted backup completes.
func storeIntactAfterKill(t *testing.T) {
	quick := slowEdge(t, "intact-a", 4, 256<<10, 0)
	slow := slowEdge(t, "intact-b", 12, 1<<20, 1024) // ~12 s pull
	sc := newScenario(t, nil)
	a := sc.up.API()
	siteA, siteB := sc.addSite(quick), sc.addSite(slow)
	var done []string
	done = append(done, a.MustSucceed(a.StartJob(siteA, "preflight"), "preflight of a", time.Minute).ID)
	done = append(done, a.MustSucceed(a.StartJob(siteA, "backup"), "backup of a", 2*time.Minute).ID)
	done = append(done, a.MustSucceed(a.StartJob(siteB, "preflight"), "preflight of b", time.Minute).ID)

	sitesBefore := a.Sites()
	targetsBefore := map[string][]domain.Target{}
	for _, s := range sc.sites {
		targetsBefore[s] = a.Targets(s)
	}
	jobsBefore := map[string]domain.Job{}
	eventsBefore := map[string][]domain.JobEvent{}
	for _, id := range done {
		jobsBefore[id] = a.Job(id)
		eventsBefore[id] = a.Events(id)
	}
	natsBefore := readNATS(t, joinedNATSURL(t, sc.up))

	id := a.StartJob(siteB, "backup")
	rsyncInto := isRsyncInto(filepath.Join(sc.L.Staging, siteB))
	sc.killWhen(id, "mid-job (rsync of site b running, >= 2 MiB staged)", func() bool {
		return hasChild(sc.up, rsyncInto) && sc.staged(siteB) >= 2<<20
	})
	sqliteIntact(t, filepath.Join(sc.L.Data, "store"))

	sc.up.Start()
	a = sc.up.API()
	if got := a.Sites(); len(got) != len(sitesBefore) {
		t.Errorf("after kill -9: %d sites, want %d", len(got), len(sitesBefore))
	} else {
		for i := range got {
			if got[i].UUID != sitesBefore[i].UUID || got[i].Name != sitesBefore[i].Name || got[i].Port != sitesBefore[i].Port || got[i].HostKey != sitesBefore[i].HostKey {
				t.Errorf("after kill -9: site %d is %+v, was %+v", i, got[i].Site, sitesBefore[i].Site)
			}
		}
	}
	for s, want := range targetsBefore {
		got := a.Targets(s)
		if len(got) != len(want) || (len(got) > 0 && (got[0].TargetHash != want[0].TargetHash || got[0].Path != want[0].Path)) {
			t.Errorf("after kill -9: targets of %s are %+v, were %+v", s, got, want)
		}
	}
	for _, id := range done {
		want, got := jobsBefore[id], a.Job(id)
		if got.Status != want.Status || got.Attempts != want.Attempts || got.Error != want.Error ||
			got.FinishedAt == nil || !got.FinishedAt.Equal(*want.FinishedAt) {
			t.Errorf("after kill -9: job %s is %s (attempts %d, finished %v), was %s (attempts %d, finished %v)",
				id, got.Status, got.Attempts, got.FinishedAt, want.Status, want.Attempts, want.FinishedAt)
		}
		wantEv, gotEv := eventsBefore[id], a.Events(id)
		if len(gotEv) != len(wantEv) {
			t.Errorf("after kill -9: job %s has %d events, had %d", id, len(gotEv), len(wantEv))
			continue
		}
		for i := range gotEv {
			if gotEv[i].Seq != wantEv[i].Seq || gotEv[i].Step != wantEv[i].Step || gotEv[i].Message != wantEv[i].Message {
				t.Errorf("after kill -9: job %s event %d is %+v, was %+v", id, i, gotEv[i], wantEv[i])
			}
		}
		// The same events replayed from the SATORU_EVENTS stream.
		if streamed := a.StreamEvents(id, len(wantEv), 15*time.Second); len(streamed) != len(wantEv) {
			t.Errorf("after kill -9: the event stream replays %d events of job %s, want %d", len(streamed), id, len(wantEv))
		}
	}
	natsAfter := readNATS(t, joinedNATSURL(t, sc.up))
	for name, before := range natsBefore.streams {
		after := natsAfter.streams[name]
		if after.LastSeq < before.LastSeq || (name == events.StreamEvents && after.Msgs < before.Msgs) {
			t.Errorf("after kill -9: stream %s has %d messages up to seq %d, had %d up to seq %d", name, after.Msgs, after.LastSeq, before.Msgs, before.LastSeq)
		}
	}
	for _, c := range natsBefore.consumers {
		if !slices.Contains(natsAfter.consumers, c) {
			t.Errorf("after kill -9: consumer %s of %s is gone (now %v)", c, events.StreamJobs, natsAfter.consumers)
		}
	}
	for _, b := range natsBefore.buckets {
		if !slices.Contains(natsAfter.buckets, b) {
			t.Errorf("after kill -9: KV bucket %s is gone (now %v)", b, natsAfter.buckets)
		}
	}
	for name, st := range natsAfter.streams {
		t.Logf("after kill -9: stream %s holds %d messages up to seq %d (before: %d up to %d)", name, st.Msgs, st.LastSeq,
			natsBefore.streams[name].Msgs, natsBefore.streams[name].LastSeq)
	}
	t.Logf("after kill -9: consumers %v, KV buckets %v", natsAfter.consumers, natsAfter.buckets)
	j := sc.settle(id, "backup of b killed mid-pull with the node")
	wantFiles(t, j, 12)
}
