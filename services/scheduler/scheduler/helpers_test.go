package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/services/scheduler/internal/plan"
	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/store"
	"github.com/satoru/satoru/shared/testkit"
)

const day = 24 * time.Hour

// env is one test's infrastructure: the embedded NATS and store, the bus
// objects, and a consumer on the job stream standing in for the workers.
type env struct {
	stack *testkit.Stack
	st    *store.Store
	in    *bus.Infra
	cons  jetstream.Consumer
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	ctx := ctxT(tb)
	stack := testkit.StartStack(tb)
	st := stack.OpenStore(tb)
	if err := st.EnsureSchedules(ctx); err != nil {
		tb.Fatal(err)
	}
	// Index the schedules collection too, as the running store would
	// within 30 s.
	if _, err := stack.Store.IndexIDs(ctx); err != nil {
		tb.Fatal(err)
	}
	nc, err := nats.Connect("", stack.NATS.InProcessOption())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	in, err := bus.Ensure(ctx, js, bus.Settings{LeaseTTL: time.Minute, AckWait: 30 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	// The work-queue stream allows one consumer without a filter: this
	// one takes every job request, as all the workers together would.
	cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamJobs, jetstream.ConsumerConfig{
		Durable: "test-workers", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &env{stack: stack, st: st, in: in, cons: cons}
}

func ctxT(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// scheduler makes a scheduler named instance on the env.
func (e *env) scheduler(tb testing.TB, instance string, set Settings) *Scheduler {
	tb.Helper()
	set.Instance = instance
	s, err := New(Deps{Settings: set, Store: e.st, Infra: e.in})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// addSites registers sites with the given uuids.
func (e *env) addSites(tb testing.TB, uuids ...string) {
	tb.Helper()
	sites := make([]domain.Site, len(uuids))
	for i, u := range uuids {
		sites[i] = domain.Site{UUID: u, Name: "site " + u, Host: "10.0.0.1", Port: 22, User: "backup"}
	}
	done, err := e.st.InsertSites(ctxT(tb), sites)
	if err != nil {
		tb.Fatal(err)
	}
	for i, ok := range done {
		if !ok {
			tb.Fatalf("site %s not inserted", uuids[i])
		}
	}
}

// published takes every job request waiting in the stream (acking it, as a
// worker would) and returns them.
func (e *env) published(tb testing.TB) []events.JobRequest {
	tb.Helper()
	ctx := ctxT(tb)
	var out []events.JobRequest
	for {
		batch, err := e.cons.FetchNoWait(500)
		if err != nil {
			tb.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var r events.JobRequest
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				tb.Fatal(err)
			}
			if err := r.Validate(); err != nil {
				tb.Fatal(err)
			}
			msgID := r.JobID
			if r.Type == events.StepSnapshot {
				msgID += "." + events.StepSnapshot // as bus.Publish sends a hand-off
			}
			if m.Subject() != events.StoredJobSubject(r.SiteUUID, r.Type) || m.Headers().Get(jetstream.MsgIDHeader) != msgID {
				tb.Fatalf("message on %s with id %q carries %+v", m.Subject(), m.Headers().Get(jetstream.MsgIDHeader), r)
			}
			if err := m.DoubleAck(ctx); err != nil {
				tb.Fatal(err)
			}
			out = append(out, r)
		}
		if batch.Error() != nil {
			tb.Fatal(batch.Error())
		}
		if n == 0 {
			return out
		}
	}
}

// finishAll runs every queued job to success, as a worker would, except
// the ids in keep (left as they are).
func (e *env) finishAll(tb testing.TB, now time.Time, keep ...string) {
	tb.Helper()
	ctx := ctxT(tb)
	jobs, err := e.st.ActiveJobs(ctx, "")
	if err != nil {
		tb.Fatal(err)
	}
	skip := map[string]bool{}
	for _, id := range keep {
		skip[id] = true
	}
	for _, j := range jobs {
		if skip[j.ID] {
			continue
		}
		if j.Status == domain.StatusQueued {
			if err := e.st.StartJob(ctx, j.ID, "test-worker", 1, now); err != nil {
				tb.Fatal(err)
			}
		}
		if err := e.st.FinishJob(ctx, j.ID, domain.StatusSuccess, "", nil, now.Add(time.Minute)); err != nil {
			tb.Fatal(err)
		}
	}
}

// allJobs returns every stored job.
func (e *env) allJobs(tb testing.TB) []domain.Job {
	tb.Helper()
	jobs, err := e.st.ListJobs(ctxT(tb), store.JobFilter{Limit: store.MaxJobLimit})
	if err != nil {
		tb.Fatal(err)
	}
	if len(jobs) == store.MaxJobLimit {
		tb.Fatal("more jobs than one list shows")
	}
	return jobs
}

// counts tallies jobs by "<type>:<site>".
func counts(jobs []domain.Job) map[string]int {
	out := map[string]int{}
	for _, j := range jobs {
		out[string(j.Type)+":"+j.SiteUUID]++
	}
	return out
}

func countRequests(reqs []events.JobRequest) map[string]int {
	out := map[string]int{}
	for _, r := range reqs {
		out[r.Type+":"+r.SiteUUID]++
	}
	return out
}

// siteUUIDs picks n site uuids whose backup slots (for a day) fall
// between 01:00 and 22:00 in different hours, so a three-day window from
// midnight holds exactly three backups and three retentions of each.
func siteUUIDs(n int) []string {
	var out []string
	hours := map[time.Duration]bool{}
	for i := 1; len(out) < n; i++ {
		u := fmt.Sprintf("5a70b0e4-0000-4000-8000-%012d", i)
		off := plan.Offset(u, day)
		if off < time.Hour || off > 22*time.Hour || hours[off/time.Hour] {
			continue
		}
		hours[off/time.Hour] = true
		out = append(out, u)
	}
	return out
}
