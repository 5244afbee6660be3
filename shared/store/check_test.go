package store_test

import (
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
)

func TestCheckState(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	got, err := st.GetCheckState(ctx)
	if err != nil || got.Status != domain.HealthUnknown || got.ID != domain.CheckStateID || got.Repositories == nil {
		t.Fatalf("never checked: %+v, %v", got, err)
	}
	at := time.Date(2026, 3, 4, 5, 6, 7, 891234567, time.UTC)
	want := domain.CheckState{Status: domain.HealthFailed, Subset: "5%", LastAttemptAt: &at, LastJobID: "j1", Error: "local repository /r: boom",
		Repositories: []domain.CheckRepoResult{{Name: "local", Repository: "/r", Status: domain.HealthFailed, Error: "boom", NumErrors: 2,
			BrokenPacks: []string{"abc"}, CheckedAt: &at, DurationMS: 1500}}}
	if err := st.PutCheckState(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err = st.GetCheckState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ms := at.Truncate(time.Millisecond)
	if got.ID != domain.CheckStateID || got.Status != domain.HealthFailed || !got.LastAttemptAt.Equal(ms) || got.LastSuccessAt != nil ||
		len(got.Repositories) != 1 || got.Repositories[0].NumErrors != 2 || got.Repositories[0].BrokenPacks[0] != "abc" ||
		!got.Repositories[0].CheckedAt.Equal(ms) || got.Error != want.Error {
		t.Errorf("read back %+v", got)
	}
	// A second put replaces the document.
	want.Status, want.Error, want.LastSuccessAt = domain.HealthSuccess, "", &at
	if err := st.PutCheckState(ctx, want); err != nil {
		t.Fatal(err)
	}
	if got, _ = st.GetCheckState(ctx); got.Status != domain.HealthSuccess || got.Error != "" || got.LastSuccessAt == nil {
		t.Errorf("after replace %+v", got)
	}
}
