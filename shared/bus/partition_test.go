package bus_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/embedded"
	"github.com/satoru/satoru/shared/events"
)

// TestEnsurePartitionsAJobStreamOfAnOlderVersion: a stream declared
// without the partition transform, holding a request of the old shape,
// is given the transform; the old request is purged (no consumer takes
// it; the scheduler requeues stale jobs) and new requests are stored by
// partition.
func TestEnsurePartitionsAJobStreamOfAnOlderVersion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := embedded.StartNATS(embedded.NATSOptions{Dir: filepath.Join(t.TempDir(), "nats"), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	js := connectJS(t, "", n.InProcessOption())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamJobs, Subjects: []string{events.JobsPrefix + ".>"},
		Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "satoru.jobs.old-site.backup", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	in, err := bus.Ensure(ctx, js, bus.Settings{LeaseTTL: time.Second, AckWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Publish(ctx, jobRequest("job-new", "new-site", "backup")); err != nil {
		t.Fatal(err)
	}
	str, err := js.Stream(ctx, events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(ctx, jetstream.WithSubjectFilter(events.JobsPrefix+".>"))
	if err != nil {
		t.Fatal(err)
	}
	want := events.StoredJobSubject("new-site", "backup")
	if len(info.State.Subjects) != 1 || info.State.Subjects[want] != 1 {
		t.Fatalf("stream holds %v, want only %s", info.State.Subjects, want)
	}
}
