package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/store"
)

func sched(kind, site string, next time.Time) store.Schedule {
	return store.Schedule{ID: store.ScheduleID(kind, site), Kind: kind, SiteUUID: site, IntervalSeconds: 86400,
		NextRunAt: next, UpdatedAt: base}
}

func TestScheduleID(t *testing.T) {
	for _, tc := range []struct{ kind, site, want string }{
		{store.ScheduleBackup, "s1", "backup:s1"},
		{store.ScheduleRetention, "s1", "retention:s1"},
		{store.ScheduleSync, "", "sync"},
	} {
		if got := store.ScheduleID(tc.kind, tc.site); got != tc.want {
			t.Errorf("ScheduleID(%q, %q) = %q, want %q", tc.kind, tc.site, got, tc.want)
		}
	}
}

func TestSchedules(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)
	for range 2 { // idempotent
		if err := st.EnsureSchedules(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := st.ListSchedules(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v, %v", got, err)
	}

	b1 := sched(store.ScheduleBackup, "s1", base)
	b1.LastDueAt, b1.LastRunAt, b1.LastJobID = ptr(base.Add(-24*time.Hour)), ptr(base.Add(-24*time.Hour+time.Second)), "j0"
	r1 := sched(store.ScheduleRetention, "s1", base)
	sy := sched(store.ScheduleSync, "", base.Add(time.Hour))
	n, err := st.InsertSchedules(ctx, []store.Schedule{sy, r1, b1})
	if err != nil || n != 3 {
		t.Fatalf("insert: %d, %v", n, err)
	}
	// An existing id is skipped, not an error, and not overwritten.
	other := b1
	other.NextRunAt = base.Add(99 * time.Hour)
	n, err = st.InsertSchedules(ctx, []store.Schedule{other, sched(store.ScheduleBackup, "s2", base)})
	if err != nil || n != 1 {
		t.Fatalf("insert with a duplicate: %d, %v", n, err)
	}
	got, err := st.ListSchedules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	norm1 := b1
	norm1.NextRunAt, norm1.UpdatedAt = norm(b1.NextRunAt), norm(b1.UpdatedAt)
	norm1.LastDueAt, norm1.LastRunAt = ptr(norm(*b1.LastDueAt)), ptr(norm(*b1.LastRunAt))
	mustEqual(t, "backup:s1 read back", got[0], norm1)
	ids := []string{}
	for _, sc := range got {
		ids = append(ids, sc.ID)
	}
	mustEqual(t, "sorted ids", ids, []string{"backup:s1", "backup:s2", "retention:s1", "sync"})
	if got[0].Interval() != 24*time.Hour {
		t.Errorf("Interval = %s", got[0].Interval())
	}

	// Swaps: applied where next_run_at still holds Expect.
	moved := norm1
	moved.NextRunAt = norm(base.Add(24 * time.Hour))
	stale := sched(store.ScheduleBackup, "s2", base.Add(48*time.Hour))
	gone := sched(store.ScheduleBackup, "nope", base.Add(48*time.Hour))
	swapped, err := st.SwapSchedules(ctx, []store.ScheduleSwap{
		{Expect: base, Schedule: moved},                  // matches (base, read back at ms)
		{Expect: base.Add(time.Minute), Schedule: stale}, // s2 is at base
		{Expect: base, Schedule: gone},                   // no such schedule
	})
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "swapped", swapped, []bool{true, false, false})
	got, _ = st.ListSchedules(ctx)
	mustEqual(t, "after swap", got[0], moved)
	if !got[1].NextRunAt.Equal(norm(base)) || len(got) != 4 {
		t.Fatalf("a stale or missing swap wrote: %+v", got)
	}
	// The same swap again: the schedule moved on, nothing changes.
	again := moved
	again.NextRunAt = base.Add(72 * time.Hour)
	if swapped, err := st.SwapSchedules(ctx, []store.ScheduleSwap{{Expect: base, Schedule: again}}); err != nil || swapped[0] {
		t.Fatalf("second swap from the old value: %v, %v", swapped, err)
	}
	if _, err := st.SwapSchedules(ctx, []store.ScheduleSwap{{Expect: base, Schedule: moved}, {Expect: base, Schedule: moved}}); err == nil {
		t.Error("a schedule given twice was accepted")
	}

	n, err = st.DeleteSchedules(ctx, "backup:s2", "sync", "unknown")
	if err != nil || n != 2 {
		t.Fatalf("delete: %d, %v", n, err)
	}
	got, _ = st.ListSchedules(ctx)
	if len(got) != 2 {
		t.Fatalf("after delete: %+v", got)
	}
}

// Past pointWrites swaps, SwapSchedules deletes and re-inserts the
// matching schedules; stale ones keep their documents.
func TestSwapSchedulesBatch(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)
	const n = 120 // also past updateBatch and pointReads
	var all []store.Schedule
	for i := range n {
		all = append(all, sched(store.ScheduleBackup, fmt.Sprintf("s%03d", i), base.Add(time.Duration(i)*time.Second)))
	}
	if k, err := st.InsertSchedules(ctx, all); err != nil || k != n {
		t.Fatalf("insert: %d, %v", k, err)
	}
	var swaps []store.ScheduleSwap
	for i, sc := range all {
		next := sc
		next.NextRunAt = sc.NextRunAt.Add(24 * time.Hour)
		next.LastJobID = fmt.Sprintf("job-%d", i)
		expect := sc.NextRunAt
		if i%10 == 0 {
			expect = expect.Add(time.Hour) // stale: another writer moved it
		}
		swaps = append(swaps, store.ScheduleSwap{Expect: expect, Schedule: next})
	}
	swapped, err := st.SwapSchedules(ctx, swaps)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.ListSchedules(ctx)
	if err != nil || len(got) != n {
		t.Fatalf("list: %d, %v", len(got), err)
	}
	for i, sc := range got { // sorted by id = order of all
		want := all[i]
		if i%10 != 0 {
			want = swaps[i].Schedule
		}
		if swapped[i] != (i%10 != 0) || !sc.NextRunAt.Equal(norm(want.NextRunAt)) || sc.LastJobID != want.LastJobID {
			t.Fatalf("schedule %d: swapped %v, stored %+v, want %+v", i, swapped[i], sc, want)
		}
	}
	// Up to pointWrites (32) swaps read and replace one by one; the
	// outcome is the same.
	var small []store.ScheduleSwap
	for i := 1; i <= 20; i++ {
		next := swaps[i].Schedule
		next.NextRunAt = next.NextRunAt.Add(24 * time.Hour)
		small = append(small, store.ScheduleSwap{Expect: swaps[i].Schedule.NextRunAt, Schedule: next})
	}
	swapped, err = st.SwapSchedules(ctx, small)
	if err != nil {
		t.Fatal(err)
	}
	for k, ok := range swapped {
		if want := (k+1)%10 != 0; ok != want {
			t.Errorf("small swap %d: %v, want %v", k+1, ok, want)
		}
	}
}

func TestInsertJobsAndSites(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)
	if err := st.InsertJob(ctx, job("j2", "s1", domain.JobBackup, base)); err != nil {
		t.Fatal(err)
	}
	jobs := []domain.Job{
		job("j1", "s1", domain.JobBackup, base),
		job("j2", "s1", domain.JobRetention, base.Add(time.Hour)), // exists: skipped, not overwritten
		job("j3", "", domain.JobResticSync, base),
	}
	done, err := st.InsertJobs(ctx, jobs)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "inserted", done, []bool{true, false, true})
	j2, err := st.GetJob(ctx, "j2")
	if err != nil || j2.Type != domain.JobBackup {
		t.Fatalf("j2 = %+v, %v", j2, err)
	}
	j3, err := st.GetJob(ctx, "j3")
	if err != nil || !j3.CreatedAt.Equal(norm(base)) || j3.Status != domain.StatusQueued {
		t.Fatalf("j3 = %+v, %v", j3, err)
	}
	if done, err := st.InsertJobs(ctx, nil); err != nil || len(done) != 0 {
		t.Fatalf("no jobs: %v, %v", done, err)
	}
	if _, err := st.InsertJobs(ctx, []domain.Job{{SiteUUID: "s1"}}); err == nil {
		t.Error("job without id accepted")
	}

	if err := st.CreateSite(ctx, site("a", "alpha")); err != nil {
		t.Fatal(err)
	}
	done, err = st.InsertSites(ctx, []domain.Site{site("b", "beta"), site("c", "alpha"), site("a", "gamma")})
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "sites inserted", done, []bool{true, false, false})
	sites, err := st.ListSites(ctx)
	if err != nil || len(sites) != 2 {
		t.Fatalf("sites = %+v, %v", sites, err)
	}
}
