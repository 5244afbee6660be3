package puller

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/store"
	"github.com/satoru/satoru/shared/testkit"
)

// brokenStatusWrites is the real store whose site status writes fail as
// a write cut off does: the real driver call, on a context that has
// ended.
type brokenStatusWrites struct{ *store.Store }

func (b brokenStatusWrites) PutSiteStatus(ctx context.Context, st domain.SiteStatus) error {
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	return b.Store.PutSiteStatus(cctx, st)
}

// TestFailedBackupHealthWriteIsAJobEvent: a backup that fails (here: the
// site has no targets) records the failure on the site's health; when
// that write fails, the job says so in a warn event instead of the
// failure vanishing. The job runs through jobrun as the service runs it,
// on the embedded NATS and store.
func TestFailedBackupHealthWriteIsAJobEvent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stack := testkit.StartStack(t)
	st := stack.OpenStore(t)
	nc, err := nats.Connect(stack.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	infra, err := bus.Ensure(ctx, js, bus.Settings{LeaseTTL: 10 * time.Second, AckWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	site := domain.Site{UUID: uuid.NewString(), Name: "no-targets", Host: "127.0.0.1", Port: 22, User: "backup"}
	if _, err := st.InsertSites(ctx, []domain.Site{site}); err != nil {
		t.Fatal(err)
	}
	job := domain.Job{ID: uuid.NewString(), SiteUUID: site.UUID, Type: domain.JobBackup, Status: domain.StatusQueued, CreatedAt: time.Now().UTC()}
	if err := st.InsertJob(ctx, job); err != nil {
		t.Fatal(err)
	}
	req := events.RequestFor(job)
	data, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	x := &jobrun.Executor{Store: st, Bus: infra, Worker: "test-puller", Heartbeat: time.Second, MaxAttempts: 3,
		LeaseRetry: 200 * time.Millisecond, IsNotFound: func(err error) bool { return errors.Is(err, store.ErrNotFound) },
		Log: slog.New(slog.DiscardHandler)}
	p := &Puller{Store: brokenStatusWrites{st}}
	if err := x.Handle(ctx, bus.Delivery{Subject: req.Subject(), Data: data, NumDelivered: 1}, p.Pick); err != nil {
		t.Fatalf("handle: %v", err)
	}

	got, err := st.GetJob(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != domain.StatusFailed || got.Error != "site has no targets to back up" {
		t.Fatalf("job %s: %q", got.Status, got.Error)
	}
	evs, err := st.ListEvents(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs {
		if e.Step == "health" && e.Level == domain.LevelWarn &&
			strings.HasPrefix(e.Message, "site health (failed) not recorded: ") && strings.Contains(e.Message, "put site status "+site.UUID) {
			found = true
		}
	}
	if !found {
		for _, e := range evs {
			t.Logf("event %d %s %s: %s", e.Seq, e.Step, e.Level, e.Message)
		}
		t.Error("no warn event says the site's health was not recorded")
	}
	status, err := st.GetSiteStatus(ctx, site.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if status.Health.Status != domain.HealthUnknown {
		t.Errorf("site health written after all: %+v", status.Health)
	}
}
