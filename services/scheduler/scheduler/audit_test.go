package scheduler

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/satoru/satoru/shared/store"
)

// TestAuditPrune: when the leader's history pass ends, the audit entries
// recorded more than audit_retention_days ago are deleted, on the
// embedded store with the clock injected; newer ones stay; without a
// retention nothing is deleted.
func TestAuditPrune(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	t0 := start.Add(200 * day)
	first := t0.Add(time.Minute) // the first pass runs a minute after leading
	const retention = 30 * day
	var want []string
	for i := range 10 { // 5 older than the cutoff, 5 newer
		at := first.Add(-retention + time.Duration(i-5)*day + time.Hour)
		id := store.AuditID(at, fmt.Sprintf("%04d", i))
		if err := e.st.InsertAudit(ctx, store.AuditEntry{ID: id, At: at, Token: "ops", Action: "site.create", Status: 201}); err != nil {
			t.Fatal(err)
		}
		if i >= 5 {
			want = append(want, id)
		}
	}

	// No retention: the pass ends and keeps every entry.
	off := e.scheduler(t, "audit-0", Settings{Instance: "audit-0", HistoryRetention: 90 * day})
	if _, err := off.Tick(ctx, t0); err != nil {
		t.Fatal(err)
	}
	res, err := off.Tick(ctx, first)
	if err != nil || !res.History.Done || res.History.Audit != 0 {
		t.Fatalf("pass without audit retention: %+v %v", res.History, err)
	}
	off.Resign()

	reg := prometheus.NewRegistry()
	s, err := New(Deps{Settings: Settings{Instance: "audit-1", HistoryRetention: 90 * day, AuditRetention: retention},
		Store: e.st, Infra: e.in, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tick(ctx, t0); err != nil {
		t.Fatal(err)
	}
	res, err = s.Tick(ctx, first)
	if err != nil || !res.History.Done || res.History.Audit != 5 {
		t.Fatalf("pass: %+v %v, want 5 audit entries deleted", res.History, err)
	}
	left, err := e.st.ListAudit(ctx, store.AuditFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(left) - 1; i >= 0; i-- {
		got = append(got, left[i].ID)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("left %q, want %q", got, want)
	}
	if v := testutil.ToFloat64(s.m.historyDeleted.WithLabelValues("audit")); v != 5 {
		t.Errorf(`satoru_history_deleted_total{kind="audit"} = %v, want 5`, v)
	}
	// The next pass, a day later, deletes the one that expired since.
	res, err = s.Tick(ctx, first.Add(day))
	if err != nil || res.History.Audit != 1 {
		t.Fatalf("next day: %+v %v, want 1 deleted", res.History, err)
	}
}
