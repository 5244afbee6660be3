package store_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/store"
)

func TestTokens(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	a := store.Token{Hash: "aa11", ID: "tok_a", Name: "alice", Role: "viewer", CreatedAt: at, CreatedBy: "startup"}
	b := store.Token{Hash: "bb22", ID: "tok_b", Name: "bob", Role: "admin", CreatedAt: at.Add(time.Minute), CreatedBy: "alice"}
	for _, tk := range []store.Token{b, a} {
		if err := st.CreateToken(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	wantErr(t, "taken name", st.CreateToken(ctx, store.Token{Hash: "cc33", ID: "tok_c", Name: "alice", Role: "admin"}), store.ErrConflict, "alice")
	wantErr(t, "taken hash", st.CreateToken(ctx, store.Token{Hash: "aa11", ID: "tok_d", Name: "dora", Role: "admin"}), store.ErrConflict, "dora")

	got, err := st.TokenByHash(ctx, "aa11")
	a.CreatedAt = norm(at)
	mustEqual(t, "by hash", got, a)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.TokenByHash(ctx, "nope")
	wantErr(t, "unknown hash", err, store.ErrNotFound, "")

	list, err := st.ListTokens(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "alice" || list[1].Name != "bob" {
		t.Fatalf("list = %+v %v, want alice then bob", list, err)
	}
	if gone, err := st.DeleteToken(ctx, "tok_b"); err != nil || gone.Name != "bob" {
		t.Fatalf("revoke by id: %+v %v", gone, err)
	}
	if gone, err := st.DeleteToken(ctx, "alice"); err != nil || gone.ID != "tok_a" {
		t.Fatalf("revoke by name: %+v %v", gone, err)
	}
	_, err = st.DeleteToken(ctx, "alice")
	wantErr(t, "revoke twice", err, store.ErrNotFound, "alice")
	if _, err := st.TokenByHash(ctx, "aa11"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoked token still found: %v", err)
	}
}

func TestAuditListAndPrune(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var all []string
	for i := range 12 {
		at := t0.Add(time.Duration(i) * time.Hour)
		e := store.AuditEntry{ID: store.AuditID(at, fmt.Sprintf("%02d", i)), At: at, Token: []string{"ops", "view"}[i%2],
			Action: []string{"site.create", "job.start", "snapshot.download"}[i%3], SiteUUID: fmt.Sprintf("site-%d", i%4), Status: 200}
		if err := st.InsertAudit(ctx, e); err != nil {
			t.Fatal(err)
		}
		all = append([]string{e.ID}, all...) // newest first
	}
	ids := func(es []store.AuditEntry) []string {
		out := []string{}
		for _, e := range es {
			out = append(out, e.ID)
		}
		return out
	}
	list := func(f store.AuditFilter) []string {
		t.Helper()
		es, err := st.ListAudit(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return ids(es)
	}
	mustEqual(t, "all", list(store.AuditFilter{}), all)
	mustEqual(t, "limit", list(store.AuditFilter{Limit: 3}), all[:3])
	mustEqual(t, "page", list(store.AuditFilter{Limit: 3, Before: all[2]}), all[3:6])
	mustEqual(t, "token", len(list(store.AuditFilter{Token: "ops"})), 6)
	mustEqual(t, "action", len(list(store.AuditFilter{Action: "job.start"})), 4)
	mustEqual(t, "site and token", len(list(store.AuditFilter{SiteUUID: "site-1", Token: "view"})), 3)
	mustEqual(t, "time range", list(store.AuditFilter{Since: t0.Add(2 * time.Hour), Until: t0.Add(5 * time.Hour)}), all[7:10])

	n, err := st.PruneAudit(ctx, t0.Add(4*time.Hour))
	if err != nil || n != 4 {
		t.Fatalf("prune: %d %v, want 4", n, err)
	}
	mustEqual(t, "after prune", list(store.AuditFilter{}), all[:8])
}
