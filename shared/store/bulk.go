package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/satoru/satoru/shared/domain"
)

// Bulk writes: one command for many documents. The embedded store costs
// about 1 ms per command (docs/store-budget.md), so a writer that creates
// many documents at once (the scheduler's tick) sends them together.

// InsertJobs stores new jobs in two writes (unordered): their documents
// as created into the history, which reserves their ids for good, then
// into the open jobs. inserted[i] reports whether jobs[i] was written. A
// job whose id exists is not written and is not an error: with
// deterministic job ids it is the same job, created earlier, finished or
// not. err reports any other failure; the jobs it names were not
// written, the others were.
func (s *Store) InsertJobs(ctx context.Context, jobs []domain.Job) (inserted []bool, err error) {
	docs := make([]any, len(jobs))
	for i, j := range jobs {
		if err := checkJobIDs(j); err != nil {
			return make([]bool, len(jobs)), fmt.Errorf("store: insert jobs: job %d: %w", i, err)
		}
		docs[i] = normJob(j)
	}
	done, err := s.insertJobs(ctx, jobs, docs)
	return done, wrap(fmt.Sprintf("insert %d jobs", len(jobs)), err)
}

// checkJobIDs refuses an empty job_id and control characters in job_id
// and site_uuid (the job index separates its fields with one).
func checkJobIDs(j domain.Job) error {
	if j.ID == "" {
		return errors.New("empty job_id")
	}
	for _, f := range []struct{ name, v string }{{"job_id", j.ID}, {"site_uuid", j.SiteUUID}} {
		if strings.ContainsFunc(f.v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return fmt.Errorf("%s %q holds a control character", f.name, f.v)
		}
	}
	return nil
}

func (s *Store) insertJobs(ctx context.Context, jobs []domain.Job, docs []any) ([]bool, error) {
	inserted := make([]bool, len(docs))
	reserved, dup, err := insertMany(ctx, s.history, docs)
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("history: %w", err))
	}
	var open []int
	for i := range docs {
		switch {
		case reserved[i]:
			open = append(open, i)
		case dup[i]:
			// The id is taken: by a finished job (refused), or by this
			// job as created, open already (the insert below refuses it)
			// or not yet (an insert cut short between the two writes).
			h, err := s.historyJob(ctx, jobs[i].ID)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if h != nil && !h.Status.Terminal() {
				open = append(open, i)
			}
		}
	}
	openDocs := make([]any, len(open))
	for k, i := range open {
		openDocs[k] = docs[i]
	}
	done, _, err := insertMany(ctx, s.jobs, openDocs)
	if err != nil {
		errs = append(errs, err)
	}
	for k, i := range open {
		inserted[i] = done[k]
	}
	return inserted, errors.Join(errs...)
}

// InsertSites stores new sites in one write (unordered), for seeding a
// fleet (imports, benchmarks); the API creates sites one by one with
// CreateSite. inserted[i] reports whether sites[i] was written; a site
// whose id or name is taken is not written and not an error.
func (s *Store) InsertSites(ctx context.Context, sites []domain.Site) (inserted []bool, err error) {
	docs := make([]any, len(sites))
	for i, site := range sites {
		if site.UUID == "" {
			return make([]bool, len(sites)), fmt.Errorf("store: insert sites: site %d has no site_uuid", i)
		}
		docs[i] = normSite(site)
	}
	done, err := insertManyNew(ctx, s.sites, docs)
	return done, wrap(fmt.Sprintf("insert %d sites", len(sites)), err)
}

// insertManyNew inserts docs with one unordered InsertMany. done[i]
// reports whether docs[i] was written; duplicates of an existing key are
// skipped without error, any other write error is returned.
func insertManyNew(ctx context.Context, coll *mongo.Collection, docs []any) (done []bool, err error) {
	done, _, err = insertMany(ctx, coll, docs)
	return done, err
}

// insertMany is insertManyNew that also reports which documents were
// skipped as duplicates (dup[i]).
func insertMany(ctx context.Context, coll *mongo.Collection, docs []any) (done, dup []bool, err error) {
	done = make([]bool, len(docs))
	dup = make([]bool, len(docs))
	if len(docs) == 0 {
		return done, dup, nil
	}
	_, err = coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	if err == nil {
		for i := range done {
			done[i] = true
		}
		return done, dup, nil
	}
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil {
		// The command failed as a whole: nothing is known to be written.
		return done, dup, err
	}
	failed := make([]bool, len(docs))
	var other []error
	for _, we := range bwe.WriteErrors {
		if we.Index < 0 || we.Index >= len(docs) {
			other = append(other, we)
			continue
		}
		failed[we.Index] = true
		if isDuplicate(we.WriteError) {
			dup[we.Index] = true
		} else {
			other = append(other, fmt.Errorf("document %d: %w", we.Index, we))
		}
	}
	for i := range done {
		done[i] = !failed[i]
	}
	return done, dup, errors.Join(other...)
}

// isDuplicate reports a unique-key violation of one write (E11000, or
// FerretDB's SQLite message).
func isDuplicate(we mongo.WriteError) bool {
	return we.Code == 11000 || we.Code == 11001 || we.Code == 12582 || isConflict(errors.New(we.Message))
}
