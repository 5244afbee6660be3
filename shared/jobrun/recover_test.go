package jobrun

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

// memEvents is a job's stored events and what the stream holds, for the
// pure logic of RecoverEvents.
type memEvents struct {
	stored   []domain.JobEvent
	streamed []events.StepEvent
	writes   int
	readErr  error
}

func (m *memEvents) ListEvents(context.Context, string) ([]domain.JobEvent, error) {
	return append([]domain.JobEvent(nil), m.stored...), nil
}

func (m *memEvents) AppendEvents(_ context.Context, _ string, evs ...domain.JobEvent) error {
	m.writes++
	m.stored = append(m.stored, evs...)
	return nil
}

func (m *memEvents) JobEvents(context.Context, string, string) ([]events.StepEvent, error) {
	return m.streamed, m.readErr
}

func evs(seqs ...int) []domain.JobEvent {
	out := make([]domain.JobEvent, len(seqs))
	for i, s := range seqs {
		out[i] = domain.JobEvent{Seq: s, Message: fmt.Sprint("e", s)}
	}
	return out
}

func streamed(seqs ...int) []events.StepEvent {
	out := make([]events.StepEvent, len(seqs))
	for i, ev := range evs(seqs...) {
		out[i] = events.StepEvent{V: events.StepEventV1, JobID: "j", Event: ev}
	}
	return out
}

func seqsOf(evs []domain.JobEvent) []int {
	out := []int{}
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

func TestRecoverEvents(t *testing.T) {
	for _, tc := range []struct {
		name       string
		stored     []domain.JobEvent
		streamed   []events.StepEvent
		wantSeqs   []int
		wantLast   int
		wantAdded  int
		wantWrites int
	}{
		{"nothing anywhere", nil, nil, []int{}, 0, 0, 0},
		{"all stored", evs(1, 2, 3), streamed(1, 2, 3), []int{1, 2, 3}, 3, 0, 0},
		{"tail lost", evs(1, 2), streamed(1, 2, 3, 4, 5), []int{1, 2, 3, 4, 5}, 5, 3, 1},
		{"none stored", nil, streamed(1, 2), []int{1, 2}, 2, 2, 1},
		{"stream lost its head (max age)", evs(1, 2, 3), streamed(3, 4), []int{1, 2, 3, 4}, 4, 1, 1},
		{"a seq published twice is stored once, in order", evs(1), streamed(3, 2, 3), []int{1, 2, 3}, 3, 2, 1},
		{"older gaps are left alone", evs(1, 4), streamed(2, 3, 4, 5), []int{1, 4, 5}, 5, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &memEvents{stored: tc.stored, streamed: tc.streamed}
			last, added, err := RecoverEvents(context.Background(), m, m, domain.Job{ID: "j", SiteUUID: "s"})
			if err != nil {
				t.Fatal(err)
			}
			if got := seqsOf(m.stored); !reflect.DeepEqual(got, tc.wantSeqs) {
				t.Errorf("stored seqs %v, want %v", got, tc.wantSeqs)
			}
			if last != tc.wantLast || added != tc.wantAdded || m.writes != tc.wantWrites {
				t.Errorf("last %d added %d writes %d, want %d %d %d", last, added, m.writes, tc.wantLast, tc.wantAdded, tc.wantWrites)
			}
		})
	}
	boom := errors.New("nats down")
	m := &memEvents{stored: evs(1), readErr: boom}
	if _, _, err := RecoverEvents(context.Background(), m, m, domain.Job{ID: "j"}); !errors.Is(err, boom) {
		t.Errorf("stream read failure: %v, want it wrapped", err)
	}
}

func TestPendingRequest(t *testing.T) {
	handed := []domain.TargetRun{{TargetHash: "h", Path: "/var/www"}}
	for _, tc := range []struct {
		name     string
		job      domain.Job
		wantType string
	}{
		{"backup still pulling", domain.Job{ID: "j", SiteUUID: "s", Type: domain.JobBackup}, "backup"},
		{"backup handed off", domain.Job{ID: "j", SiteUUID: "s", Type: domain.JobBackup, Targets: handed}, events.StepSnapshot},
		{"retention", domain.Job{ID: "j", SiteUUID: "s", Type: domain.JobRetention}, "retention"},
		{"offsite sync", domain.Job{ID: "j", Type: domain.JobResticSync}, "restic_sync"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := PendingRequest(tc.job)
			if r.Type != tc.wantType || r.JobID != tc.job.ID || r.SiteUUID != tc.job.SiteUUID || r.V != events.JobRequestV1 {
				t.Errorf("request = %+v, want type %s of job %s", r, tc.wantType, tc.job.ID)
			}
		})
	}
}
