package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/satoru/satoru/shared/domain"
)

// Job history. On the embedded store every query that is not a lookup by
// _id reads the whole collection (docs/store-budget.md), so no hot path
// may read a collection that grows with the history:
//
//   - "jobs" holds the open jobs (queued, running) and nothing else for
//     long: ActiveJobs and the open part of ListJobs read it whole.
//   - "jobs_history" holds every job by _id = job_id: the document as
//     created (InsertJob writes it first, so a job id, once used, is
//     refused for ever, also after the job left "jobs"), replaced by the
//     finished document when FinishJob moves the job out of "jobs".
//     GetJob falls back to it.
//   - "job_index" lists the finished jobs for ListJobs in append-only
//     logs, one per scope: "all", "site:<uuid>", "type:<type>" and
//     "status:<status>". A scope's head document (_id = scope) counts the
//     entries ever appended (n), keeps the newest created_at among them
//     (max_created) and the first bucket not deleted (first); entry number
//     p lives in bucket "<scope>#<p / indexBucket>". Each bucket holds at
//     most indexBucket entries (FerretDB rewrites a document on every
//     append) and its bound: the max_created of the head before its first
//     entry, i.e. no entry of an older bucket was created after it. A
//     listing reads buckets newest first and stops once it holds `limit`
//     jobs created after the next bucket's bound: a bounded number of
//     lookups by _id, whatever the size of the history.
//
// The index documents are the only ones with several writers (whoever
// finishes a job); they take only atomic operators ($inc, $max, $min,
// $push), which MongoDB applies atomically per document and which the
// embedded store, used over one connection, applies one at a time.

// indexEntry is one finished job in a job_index bucket, where it is
// stored as one string (encode): FerretDB decodes a document value by
// value, and a bucket of 90 entries as subdocuments took ~24 ms to read
// and ~29 ms to append to, as strings ~2.4 ms and ~5 ms
// (docs/store-budget.md).
type indexEntry struct {
	JobID      string
	SiteUUID   string
	Type       domain.JobType
	Status     domain.JobStatus
	CreatedAt  time.Time
	FinishedAt time.Time
	// Pos, in the "all" scope only: the entry's positions in its other
	// scopes (entryScopes(e)[1:]), so that the history pass learns when
	// it has deleted the last entry of one of their buckets.
	Pos []int64
}

// entrySep separates the fields of an encoded entry; job and site ids
// hold no control characters (InsertJobs refuses them).
const entrySep = "\x1f"

// encode is "<created ms>␟<job_id>␟<site_uuid>␟<type>␟<status>␟<finished ms>␟<pos,pos,...>".
func (e indexEntry) encode() string {
	var b strings.Builder
	b.WriteString(strconv.FormatInt(e.CreatedAt.UnixMilli(), 10))
	for _, f := range []string{e.JobID, e.SiteUUID, string(e.Type), string(e.Status), strconv.FormatInt(e.FinishedAt.UnixMilli(), 10)} {
		b.WriteString(entrySep)
		b.WriteString(f)
	}
	b.WriteString(entrySep)
	for i, p := range e.Pos {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(p, 10))
	}
	return b.String()
}

func decodeEntry(s string) (indexEntry, error) {
	f := strings.Split(s, entrySep)
	if len(f) != 7 {
		return indexEntry{}, fmt.Errorf("index entry %q: %d fields, want 7", s, len(f))
	}
	created, err1 := strconv.ParseInt(f[0], 10, 64)
	finished, err2 := strconv.ParseInt(f[5], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return indexEntry{}, fmt.Errorf("index entry %q: %w", s, err)
	}
	e := indexEntry{JobID: f[1], SiteUUID: f[2], Type: domain.JobType(f[3]), Status: domain.JobStatus(f[4]),
		CreatedAt: time.UnixMilli(created).UTC(), FinishedAt: time.UnixMilli(finished).UTC()}
	if f[6] != "" {
		for _, p := range strings.Split(f[6], ",") {
			n, err := strconv.ParseInt(p, 10, 64)
			if err != nil {
				return indexEntry{}, fmt.Errorf("index entry %q: %w", s, err)
			}
			e.Pos = append(e.Pos, n)
		}
	}
	return e, nil
}

type indexHead struct {
	N          int64     `bson:"n"`
	MaxCreated time.Time `bson:"max_created"`
	First      int64     `bson:"first"`
}

type indexBucket struct {
	Bound   time.Time `bson:"bound"`
	Entries []string  `bson:"entries"`
	// Done: the history pass has deleted the jobs of the first Done
	// entries (all expired), and goes on after them.
	Done int `bson:"done"`
}

// readBucket reads bucket k of a scope; ok is false if it is missing.
func (s *Store) readBucket(ctx context.Context, scope string, k int64) (b indexBucket, es []indexEntry, ok bool, err error) {
	err = s.index.FindOne(ctx, byID(bucketKey(scope, k))).Decode(&b)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return b, nil, false, nil
	}
	if err != nil {
		return b, nil, false, err
	}
	es = make([]indexEntry, len(b.Entries))
	for i, raw := range b.Entries {
		if es[i], err = decodeEntry(raw); err != nil {
			return b, nil, false, fmt.Errorf("bucket %s: %w", bucketKey(scope, k), err)
		}
	}
	return b, es, true, nil
}

// purgeMarkID is the job_index document where the history pass records
// its cutoff: listings skip entries that finished before it (their jobs
// are deleted, or about to be).
const purgeMarkID = "_purge"

const scopeAll = "all"

func siteScope(uuid string) string           { return "site:" + uuid }
func typeScope(t domain.JobType) string      { return "type:" + string(t) }
func statusScope(st domain.JobStatus) string { return "status:" + string(st) }
func bucketKey(scope string, k int64) string { return scope + "#" + strconv.FormatInt(k, 10) }
func (h indexHead) last(per int64) int64     { return (h.N - 1) / per }
func entryScopes(e indexEntry) []string {
	out := []string{scopeAll, typeScope(e.Type), statusScope(e.Status)}
	if e.SiteUUID != "" {
		out = append(out, siteScope(e.SiteUUID))
	}
	return out
}

func entryOf(j domain.Job) indexEntry {
	e := indexEntry{JobID: j.ID, SiteUUID: j.SiteUUID, Type: j.Type, Status: j.Status, CreatedAt: ts(j.CreatedAt)}
	if j.FinishedAt != nil {
		e.FinishedAt = ts(*j.FinishedAt)
	} else {
		e.FinishedAt = e.CreatedAt
	}
	return e
}

// appendIndex lists finished jobs in every scope they belong to: per
// scope one update of its head and one push per bucket touched. The
// other scopes come first, so that the "all" entries carry the positions.
func (s *Store) appendIndex(ctx context.Context, entries []indexEntry) error {
	type at struct{ entry, slot int }
	byScope := map[string][]at{}
	var order []string
	for i, e := range entries {
		others := entryScopes(e)[1:]
		entries[i].Pos = make([]int64, len(others))
		for j, sc := range others {
			if _, ok := byScope[sc]; !ok {
				order = append(order, sc)
			}
			byScope[sc] = append(byScope[sc], at{i, j})
		}
	}
	for _, sc := range order {
		ats := byScope[sc]
		es := make([]indexEntry, len(ats))
		for k, a := range ats {
			es[k] = entries[a.entry]
			es[k].Pos = nil
		}
		first, err := s.appendScope(ctx, sc, es)
		if err != nil {
			return fmt.Errorf("index %d finished jobs under %s: %w", len(es), sc, err)
		}
		for k, a := range ats {
			entries[a.entry].Pos[a.slot] = first + int64(k)
		}
	}
	if _, err := s.appendScope(ctx, scopeAll, entries); err != nil {
		return fmt.Errorf("index %d finished jobs under %s: %w", len(entries), scopeAll, err)
	}
	return nil
}

// appendScope appends es to one scope and returns the position of the
// first.
func (s *Store) appendScope(ctx context.Context, scope string, es []indexEntry) (int64, error) {
	var maxCreated time.Time
	for _, e := range es {
		if e.CreatedAt.After(maxCreated) {
			maxCreated = e.CreatedAt
		}
	}
	update := bson.D{
		{Key: "$inc", Value: bson.D{{Key: "n", Value: int64(len(es))}}},
		{Key: "$max", Value: bson.D{{Key: "max_created", Value: maxCreated}}},
	}
	opts := options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.Before)
	var head indexHead
	err := s.index.FindOneAndUpdate(ctx, byID(scope), update, opts).Decode(&head)
	if isConflict(err) {
		// Two first appends raced to create the head (MongoDB): the
		// second one updates it now.
		err = s.index.FindOneAndUpdate(ctx, byID(scope), update, opts).Decode(&head)
	}
	switch {
	case errors.Is(err, mongo.ErrNoDocuments): // the head is new
		head = indexHead{}
	case err != nil:
		return 0, err
	}
	// Entries head.N .. head.N+len(es)-1 are ours; hwm is the newest
	// created_at of every entry before the one at hand.
	hwm := head.MaxCreated
	for i := 0; i < len(es); {
		pos := head.N + int64(i)
		k := pos / s.indexBucket
		end := min(len(es), i+int(s.indexBucket-pos%s.indexBucket))
		chunk := make(bson.A, 0, end-i)
		bound := hwm
		for _, e := range es[i:end] {
			if e.CreatedAt.After(hwm) {
				hwm = e.CreatedAt
			}
			chunk = append(chunk, e.encode())
		}
		_, err := s.index.UpdateOne(ctx, byID(bucketKey(scope, k)), bson.D{
			{Key: "$push", Value: bson.D{{Key: "entries", Value: bson.D{{Key: "$each", Value: chunk}}}}},
			{Key: "$min", Value: bson.D{{Key: "bound", Value: bound}}},
		}, options.UpdateOne().SetUpsert(true))
		if err != nil {
			return 0, err
		}
		i = end
	}
	return head.N, nil
}

// archive moves a finished job out of "jobs": its final document into
// "jobs_history", its entries into the index, then off "jobs". Each step
// may be repeated: an archive cut short leaves the finished job in
// "jobs", where the history pass finds it and archives it again (readers
// drop the repeated index entries).
func (s *Store) archive(ctx context.Context, j domain.Job) error {
	if _, err := s.history.ReplaceOne(ctx, byID(j.ID), j, options.Replace().SetUpsert(true)); err != nil {
		return fmt.Errorf("write history: %w", err)
	}
	if err := s.appendIndex(ctx, []indexEntry{entryOf(j)}); err != nil {
		return err
	}
	if _, err := s.jobs.DeleteOne(ctx, byID(j.ID)); err != nil {
		return fmt.Errorf("remove from open jobs: %w", err)
	}
	return nil
}

// ArchiveJobs stores finished jobs directly in the history, as FinishJob
// leaves them (imports of old history, benchmarks): one InsertMany per
// 1,000 jobs and the index entries grouped per scope and bucket. A job
// whose id is in the history already is replaced. Jobs that are not
// finished are refused.
func (s *Store) ArchiveJobs(ctx context.Context, jobs []domain.Job) error {
	const batch = 1000
	entries := make([]indexEntry, 0, len(jobs))
	for start := 0; start < len(jobs); start += batch {
		part := jobs[start:min(start+batch, len(jobs))]
		docs := make([]any, len(part))
		for i, j := range part {
			if err := checkJobIDs(j); err != nil {
				return fmt.Errorf("store: archive jobs: job %d: %w", start+i, err)
			}
			if !j.Status.Terminal() {
				return fmt.Errorf("store: archive jobs: job %s is %s, not finished", j.ID, j.Status)
			}
			j = normJob(j)
			docs[i] = j
			entries = append(entries, entryOf(j))
		}
		done, err := insertManyNew(ctx, s.history, docs)
		if err != nil {
			return wrap(fmt.Sprintf("archive %d jobs", len(part)), err)
		}
		for i, ok := range done {
			if ok {
				continue
			}
			if _, err := s.history.ReplaceOne(ctx, byID(part[i].ID), docs[i]); err != nil {
				return wrap("archive job "+part[i].ID, err)
			}
		}
	}
	return wrap(fmt.Sprintf("archive %d jobs", len(jobs)), s.appendIndex(ctx, entries))
}

// listFinished walks one scope of the index for ListJobs.
type indexWalk struct {
	s      *Store
	scope  string
	head   indexHead
	next   int64 // next bucket to read, counting down
	before time.Time
	done   bool
	// bound: no entry not read yet was created after it (valid once a
	// bucket was read).
	bound      time.Time
	boundKnown bool
}

func (s *Store) walkIndex(ctx context.Context, scope string) (*indexWalk, error) {
	w := &indexWalk{s: s, scope: scope}
	var mark struct {
		Before time.Time `bson:"before"`
	}
	err := s.index.FindOne(ctx, byID(purgeMarkID)).Decode(&mark)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return nil, err
	}
	w.before = mark.Before
	err = s.index.FindOne(ctx, byID(scope)).Decode(&w.head)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments) || (err == nil && w.head.N == 0):
		w.done = true
		return w, nil
	case err != nil:
		return nil, err
	}
	w.next = w.head.last(s.indexBucket)
	w.done = w.next < w.head.First
	return w, nil
}

// read returns the entries of the next bucket (none if it is missing)
// and moves on.
func (w *indexWalk) read(ctx context.Context) ([]indexEntry, error) {
	if w.done {
		return nil, nil
	}
	k := w.next
	w.next--
	w.done = w.next < w.head.First
	b, es, ok, err := w.s.readBucket(ctx, w.scope, k)
	if err != nil || !ok {
		return nil, err
	}
	w.bound, w.boundKnown = b.Bound, true
	out := es[:0]
	for _, e := range es {
		if w.before.IsZero() || !e.FinishedAt.Before(w.before) {
			out = append(out, e)
		}
	}
	return out, nil
}

// candidate is a job ListJobs may return: an open job (job set) or an
// index entry whose document is read from the history at the end.
type candidate struct {
	id      string
	created time.Time
	job     *domain.Job
}

func newer(a, b candidate) bool {
	if !a.created.Equal(b.created) {
		return a.created.After(b.created)
	}
	return a.id > b.id
}

// listFinished completes ListJobs: open holds the open jobs that match f
// (newest first, at most limit); it adds the finished ones from the
// index scope that suits f and returns the newest limit of all.
func (s *Store) listFinished(ctx context.Context, f JobFilter, limit int, open []domain.Job) ([]domain.Job, error) {
	seen := make(map[string]bool, len(open))
	cands := make([]candidate, 0, len(open)+limit)
	for i := range open {
		seen[open[i].ID] = true
		cands = append(cands, candidate{id: open[i].ID, created: open[i].CreatedAt, job: &open[i]})
	}
	w, err := s.walkIndex(ctx, scopeFor(f))
	if err != nil {
		return nil, err
	}
	matches := func(typ domain.JobType, st domain.JobStatus, site string) bool {
		return (f.SiteUUID == "" || site == f.SiteUUID) && (f.Type == "" || typ == f.Type) && (f.Status == "" || st == f.Status)
	}
	// enough reports whether the newest limit candidates are final: none
	// not read yet can be newer than the limit-th.
	enough := func() bool {
		if w.done {
			return true
		}
		if len(cands) < limit || !w.boundKnown {
			return false
		}
		sort.Slice(cands, func(i, j int) bool { return newer(cands[i], cands[j]) })
		return cands[limit-1].created.After(w.bound)
	}
	for {
		for !enough() {
			es, err := w.read(ctx)
			if err != nil {
				return nil, err
			}
			// A bucket lists its entries oldest first; a job listed twice
			// (archived again, or finished again) counts once, as listed
			// last.
			for i := len(es) - 1; i >= 0; i-- {
				e := es[i]
				if seen[e.JobID] {
					continue
				}
				seen[e.JobID] = true
				if matches(e.Type, e.Status, e.SiteUUID) {
					cands = append(cands, candidate{id: e.JobID, created: e.CreatedAt})
				}
			}
		}
		sort.Slice(cands, func(i, j int) bool { return newer(cands[i], cands[j]) })
		out := make([]domain.Job, 0, limit)
		kept := cands[:0]
		for _, c := range cands {
			if len(out) == limit {
				kept = append(kept, c)
				continue
			}
			if c.job == nil {
				j, err := s.historyJob(ctx, c.id)
				if err != nil {
					return nil, err
				}
				// Gone (deleted by the history pass meanwhile), or no longer
				// what the index says (finished again): leave it out.
				if j == nil || !j.Status.Terminal() || !matches(j.Type, j.Status, j.SiteUUID) {
					continue
				}
				c.job = j
			}
			out = append(out, *c.job)
			kept = append(kept, c)
		}
		if len(out) == limit || w.done {
			return out, nil
		}
		cands = kept // some were left out: read on
	}
}

// scopeFor picks the index scope a listing reads: the site's when it
// names one; else the status's when it is a rare outcome (failed,
// warning, canceled); else the type's; else the success list or all.
// Other filters are applied to the entries read.
func scopeFor(f JobFilter) string {
	switch {
	case f.SiteUUID != "":
		return siteScope(f.SiteUUID)
	case f.Status != "" && f.Status != domain.StatusSuccess:
		return statusScope(f.Status)
	case f.Type != "":
		return typeScope(f.Type)
	case f.Status != "":
		return statusScope(f.Status)
	}
	return scopeAll
}

// historyJob reads a job from the history; nil if it is not there.
func (s *Store) historyJob(ctx context.Context, id string) (*domain.Job, error) {
	var j domain.Job
	err := s.history.FindOne(ctx, byID(id)).Decode(&j)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read history of job %s: %w", id, err)
	}
	return &j, nil
}

// PurgeResult is what one PurgeHistory call did.
type PurgeResult struct {
	// Jobs and EventDocs deleted (job_events documents: a job has one per
	// 100 events).
	Jobs, EventDocs int
	// Archived: finished jobs found in "jobs" (a FinishJob cut short, or
	// a store written before the history existed) and moved to the
	// history.
	Archived int
	// More: the call stopped at its limit; call again.
	More bool
}

// PurgeHistory is one bounded step of the history pass: it deletes the
// jobs that finished before `before`, with their events, at most max jobs
// (0 means 500), oldest first, and reads at most one index bucket of
// entries whose jobs are gone already. It never deletes a
// queued or running job. Every write is by _id; the only collection it
// queries by another field is "jobs", which holds the open jobs.
//
// Steps: (1) finished jobs left in "jobs" are deleted if expired, else
// archived; (2) the "all" index scope is read from its oldest bucket:
// each expired job's events and history document are deleted, and each
// bucket whose entries all expired is deleted; (3) the other scopes of
// the jobs deleted drop their leading buckets whose entries all expired.
// Listings skip entries that finished before `before` from step (1) on.
func (s *Store) PurgeHistory(ctx context.Context, before time.Time, max int) (PurgeResult, error) {
	var res PurgeResult
	if max <= 0 {
		max = 500
	}
	before = ts(before)
	if _, err := s.index.UpdateOne(ctx, byID(purgeMarkID), bson.D{{Key: "$set", Value: bson.D{{Key: "before", Value: before}}}},
		options.UpdateOne().SetUpsert(true)); err != nil {
		return res, wrap("purge history: mark", err)
	}

	// (1) Finished jobs still in "jobs".
	left, err := s.findJobs(ctx, "purge history: finished open jobs", bson.D{
		{Key: "status", Value: bson.D{{Key: "$nin", Value: bson.A{domain.StatusQueued, domain.StatusRunning}}}},
	}, options.Find().SetLimit(int64(max)))
	if err != nil {
		return res, err
	}
	budget := max
	for _, j := range left {
		budget--
		if entryOf(j).FinishedAt.Before(before) {
			n, err := s.deleteJob(ctx, j.ID)
			if err != nil {
				return res, wrap("purge history: job "+j.ID, err)
			}
			if _, err := s.jobs.DeleteOne(ctx, byID(j.ID)); err != nil {
				return res, wrap("purge history: job "+j.ID, err)
			}
			res.Jobs++
			res.EventDocs += n
			continue
		}
		if err := s.archive(ctx, j); err != nil {
			return res, wrap("purge history: archive job "+j.ID, err)
		}
		res.Archived++
	}
	if budget <= 0 {
		res.More = true
		return res, nil
	}

	// (2) The "all" scope, oldest bucket first.
	var head indexHead
	err = s.index.FindOne(ctx, byID(scopeAll)).Decode(&head)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return res, nil
	}
	if err != nil {
		return res, wrap("purge history: index", err)
	}
	// trim[scope] = k: the pass went past the last entry of the scope's
	// bucket k; its leading buckets up to k may have expired.
	trim := map[string]int64{}
	last := head.last(s.indexBucket)
	for k := head.First; k <= last && head.N > 0; k++ {
		b, es, ok, err := s.readBucket(ctx, scopeAll, k)
		if err != nil {
			return res, wrap("purge history: index", err)
		}
		if !ok {
			if k >= last-1 {
				break // maybe not written yet
			}
			continue
		}
		whole, prefix := true, true
		for i, e := range es {
			if !e.FinishedAt.Before(before) {
				whole, prefix = false, false
				continue
			}
			if i < b.Done {
				continue
			}
			if budget <= 0 {
				res.More = true
				if prefix {
					if err := s.markDone(ctx, bucketKey(scopeAll, k), i); err != nil {
						return res, wrap("purge history: index", err)
					}
				}
				return res, s.trimScopes(ctx, trim, before)
			}
			for j, sc := range entryScopes(e)[1:] { // "all" is trimmed by this loop
				if j < len(e.Pos) && (e.Pos[j]+1)%s.indexBucket == 0 {
					trim[sc] = e.Pos[j] / s.indexBucket
				}
			}
			gone, n, err := s.deleteExpired(ctx, e.JobID, before)
			if err != nil {
				return res, wrap("purge history: job "+e.JobID, err)
			}
			// Only deletions count against max: an entry whose job is
			// gone already (deleted by an earlier call, listed twice)
			// costs one lookup.
			if gone {
				budget--
				res.Jobs++
			}
			res.EventDocs += n
		}
		if !whole {
			// Entries are appended as jobs finish: the buckets after this
			// one hold later jobs.
			break
		}
		if err := s.dropBucket(ctx, scopeAll, k); err != nil {
			return res, wrap("purge history: index", err)
		}
	}
	return res, s.trimScopes(ctx, trim, before)
}

// deleteExpired deletes a job listed as finished before `before`, with
// its events, if its history document agrees (it may have been finished
// again since), and reports whether it deleted it and how many event
// documents.
func (s *Store) deleteExpired(ctx context.Context, id string, before time.Time) (bool, int, error) {
	var j struct {
		Status     domain.JobStatus `bson:"status"`
		FinishedAt *time.Time       `bson:"finished_at"`
	}
	err := s.history.FindOne(ctx, byID(id), options.FindOne().SetProjection(bson.D{{Key: "status", Value: 1}, {Key: "finished_at", Value: 1}})).Decode(&j)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, 0, nil // deleted by an earlier pass
	}
	if err != nil {
		return false, 0, err
	}
	if !j.Status.Terminal() || j.FinishedAt == nil || !j.FinishedAt.Before(before) {
		return false, 0, nil
	}
	n, err := s.deleteJob(ctx, id)
	return err == nil, n, err
}

// deleteJob deletes a job's events, then its history document, and
// returns how many event documents it deleted.
func (s *Store) deleteJob(ctx context.Context, id string) (int, error) {
	n, err := s.deleteEvents(ctx, id)
	if err != nil {
		return n, fmt.Errorf("events: %w", err)
	}
	if _, err := s.history.DeleteOne(ctx, byID(id)); err != nil {
		return n, fmt.Errorf("history: %w", err)
	}
	return n, nil
}

// markDone records that the history pass has dealt with the first n
// entries of a bucket.
func (s *Store) markDone(ctx context.Context, bucket string, n int) error {
	_, err := s.index.UpdateOne(ctx, byID(bucket), bson.D{{Key: "$max", Value: bson.D{{Key: "done", Value: n}}}})
	return err
}

func (s *Store) dropBucket(ctx context.Context, scope string, k int64) error {
	if _, err := s.index.DeleteOne(ctx, byID(bucketKey(scope, k))); err != nil {
		return err
	}
	_, err := s.index.UpdateOne(ctx, byID(scope), bson.D{{Key: "$max", Value: bson.D{{Key: "first", Value: k + 1}}}})
	return err
}

// trimScopes deletes, for each scope in upTo, its leading buckets up to
// bucket upTo[scope] whose entries all finished before `before`; it reads
// one bucket per 100 jobs deleted (the default bucket size), not one per
// job. A scope whose jobs stop coming (a removed site) keeps its head and
// its last, partly filled bucket.
func (s *Store) trimScopes(ctx context.Context, upTo map[string]int64, before time.Time) error {
	names := make([]string, 0, len(upTo))
	for sc := range upTo {
		names = append(names, sc)
	}
	sort.Strings(names)
	for _, sc := range names {
		var head indexHead
		err := s.index.FindOne(ctx, byID(sc)).Decode(&head)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue
		}
		if err != nil {
			return wrap("purge history: index "+sc, err)
		}
	buckets:
		for k := head.First; k <= upTo[sc]; k++ {
			_, es, ok, err := s.readBucket(ctx, sc, k)
			switch {
			case err != nil:
				return wrap("purge history: index "+sc, err)
			case !ok:
				continue
			}
			for _, e := range es {
				if !e.FinishedAt.Before(before) {
					break buckets
				}
			}
			if err := s.dropBucket(ctx, sc, k); err != nil {
				return wrap("purge history: index "+sc, err)
			}
		}
	}
	return nil
}

// DeleteFinishedJobsBefore runs the history pass to the end: it deletes
// every job that finished before t, with its events, and returns how
// many jobs it deleted.
func (s *Store) DeleteFinishedJobsBefore(ctx context.Context, t time.Time) (int, error) {
	total := 0
	for {
		res, err := s.PurgeHistory(ctx, t, 0)
		total += res.Jobs
		if err != nil || !res.More {
			return total, err
		}
	}
}
