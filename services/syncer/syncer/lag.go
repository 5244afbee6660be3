package syncer

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/satoru/satoru/shared/restic"
)

// Lag is how far the offsite repository is behind the local one.
type Lag struct {
	// Pending are the ids of the local snapshots with no offsite copy,
	// oldest first.
	Pending []string
	// OldestPendingAt is the time of the oldest pending snapshot; nil when
	// none is pending.
	OldestPendingAt *time.Time
	// OldestPendingAge is now minus OldestPendingAt (0 when none).
	OldestPendingAge time.Duration
}

// SnapshotsPending is the number of local snapshots not yet offsite.
func (l Lag) SnapshotsPending() int { return len(l.Pending) }

// ComputeLag compares the two repositories' snapshot lists. A local
// snapshot is offsite when an offsite snapshot names it as its Original
// (what `restic copy` records) or has its id; a local snapshot that is
// itself a copy counts by its own Original too, as restic copy does.
func ComputeLag(local, offsite []restic.Snapshot, now time.Time) Lag {
	have := make(map[string]bool, 2*len(offsite))
	for _, s := range offsite {
		have[s.ID] = true
		if s.Original != "" {
			have[s.Original] = true
		}
	}
	var pending []restic.Snapshot
	for _, s := range local {
		if have[s.ID] || (s.Original != "" && have[s.Original]) {
			continue
		}
		pending = append(pending, s)
	}
	sort.SliceStable(pending, func(i, j int) bool { return pending[i].Time.Before(pending[j].Time) })
	var lag Lag
	for _, s := range pending {
		lag.Pending = append(lag.Pending, s.ID)
	}
	if len(pending) > 0 {
		oldest := pending[0].Time.UTC()
		lag.OldestPendingAt = &oldest
		if age := now.Sub(oldest); age > 0 {
			lag.OldestPendingAge = age
		}
	}
	return lag
}

// listBoth lists the snapshots of both repositories concurrently.
func listBoth(ctx context.Context, local, offsite restic.Repo) (l, o []restic.Snapshot, err error) {
	var (
		wg         sync.WaitGroup
		lerr, oerr error
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		l, lerr = local.Snapshots(ctx)
	}()
	go func() {
		defer wg.Done()
		o, oerr = offsite.Snapshots(ctx)
	}()
	wg.Wait()
	switch {
	case lerr != nil:
		return nil, nil, fmt.Errorf("list local snapshots: %w", lerr)
	case oerr != nil:
		return nil, nil, fmt.Errorf("list offsite snapshots: %w", oerr)
	}
	return l, o, nil
}
