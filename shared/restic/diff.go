package restic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/satoru/satoru/shared/proc"
)

// MaxDiffEntries bounds each list of a Diff (added, removed, changed);
// the rest is counted, not kept, so a diff of millions of files cannot
// exhaust memory.
const MaxDiffEntries = 5000

// DiffEntry is one path that differs between two snapshots. Directory
// paths keep restic's trailing "/".
type DiffEntry struct {
	Path string `json:"path"`
	// Type is "dir" for a folder, else what restic ls says (file,
	// symlink, ...); "" when the path was not found in the listing.
	Type string `json:"type"`
	// Size is the file's size in the newer snapshot (in the older one for
	// a removed path).
	Size int64 `json:"size"`
	// OldSize is a changed file's size in the older snapshot.
	OldSize int64 `json:"old_size,omitempty"`
	// Modifier is restic's: "+", "-", "M" (content), "T" (type).
	Modifier string `json:"modifier"`
}

// DiffTotals counts a diff's paths and sums its files' sizes.
type DiffTotals struct {
	Added, Removed, Changed int
	// AddedBytes and RemovedBytes sum the listed files' sizes; ChangedBytes
	// is the changed files' growth (negative when they shrank).
	AddedBytes, RemovedBytes, ChangedBytes int64
	// AddedDataBytes and RemovedDataBytes are restic's statistics: the
	// repository data only one of the snapshots references.
	AddedDataBytes, RemovedDataBytes int64
}

// DiffResult is what changed from snapshot From to snapshot To.
type DiffResult struct {
	From, To                string
	Added, Removed, Changed []DiffEntry
	Totals                  DiffTotals
	// Truncated says a list hit MaxDiffEntries: its totals count every
	// path, its byte sums only the listed ones.
	Truncated bool
}

// DiffArgs is the argv of the diff step of Diff.
func DiffArgs(from, to string) []string {
	return []string{"diff", "--json", "--", from, to}
}

// Diff compares snapshot from (the older) with snapshot to: restic diff,
// decoded line by line as it streams, then one restic ls of each snapshot
// for the sizes of the listed paths. Ids are full or at least 8 hex
// digits; an unknown one wraps ErrSnapshotNotFound and is named.
func (r Repo) Diff(ctx context.Context, from, to string) (DiffResult, error) {
	for _, id := range []string{from, to} {
		if err := checkSnapshotID(id); err != nil {
			return DiffResult{}, fmt.Errorf("restic diff: %w", err)
		}
	}
	res := DiffResult{From: from, To: to, Added: []DiffEntry{}, Removed: []DiffEntry{}, Changed: []DiffEntry{}}
	var parseErr error
	lw := &lineWriter{max: 1 << 20, fn: func(b []byte, overlong bool) {
		if overlong || len(b) == 0 || b[0] != '{' {
			return
		}
		var m struct {
			MessageType string `json:"message_type"`
			Path        string `json:"path"`
			Modifier    string `json:"modifier"`
			Source      string `json:"source_snapshot"`
			Target      string `json:"target_snapshot"`
			Added       struct {
				Bytes int64 `json:"bytes"`
			} `json:"added"`
			Removed struct {
				Bytes int64 `json:"bytes"`
			} `json:"removed"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			parseErr = err
			return
		}
		switch m.MessageType {
		case "change":
			res.add(DiffEntry{Path: m.Path, Modifier: m.Modifier})
		case "statistics":
			res.From, res.To = m.Source, m.Target
			res.Totals.AddedDataBytes, res.Totals.RemovedDataBytes = m.Added.Bytes, m.Removed.Bytes
		}
	}}
	out, err := r.runRaw(ctx, proc.Cmd{Step: "diff", Args: DiffArgs(from, to), Stdout: lw}, false)
	lw.Flush()
	if err != nil {
		return res, namedNotFound(r.wrap("diff", out, err), from, to)
	}
	if parseErr != nil {
		return res, fmt.Errorf("restic diff: read output: %w", parseErr)
	}
	if err := r.diffSizes(ctx, &res); err != nil {
		return res, err
	}
	return res, nil
}

// add files e under its list, counting it past MaxDiffEntries.
func (d *DiffResult) add(e DiffEntry) {
	list, n := &d.Changed, &d.Totals.Changed
	switch e.Modifier {
	case "+":
		list, n = &d.Added, &d.Totals.Added
	case "-":
		list, n = &d.Removed, &d.Totals.Removed
	}
	*n++
	if strings.HasSuffix(e.Path, "/") {
		e.Type = "dir"
	}
	if len(*list) >= MaxDiffEntries {
		d.Truncated = true
		return
	}
	*list = append(*list, e)
}

// diffSizes fills in the listed files' types and sizes from one restic ls
// of each snapshot, streamed; only the listed paths are looked up.
func (r Repo) diffSizes(ctx context.Context, d *DiffResult) error {
	type ref struct {
		e   *DiffEntry
		old bool
	}
	inFrom, inTo := map[string][]ref{}, map[string][]ref{}
	for i := range d.Added {
		inTo[diffKey(d.Added[i].Path)] = append(inTo[diffKey(d.Added[i].Path)], ref{e: &d.Added[i]})
	}
	for i := range d.Removed {
		inFrom[diffKey(d.Removed[i].Path)] = append(inFrom[diffKey(d.Removed[i].Path)], ref{e: &d.Removed[i]})
	}
	for i := range d.Changed {
		k := diffKey(d.Changed[i].Path)
		inTo[k] = append(inTo[k], ref{e: &d.Changed[i]})
		inFrom[k] = append(inFrom[k], ref{e: &d.Changed[i], old: true})
	}
	for _, side := range []struct {
		id   string
		refs map[string][]ref
	}{{d.From, inFrom}, {d.To, inTo}} {
		if len(side.refs) == 0 {
			continue
		}
		err := r.lsAll(ctx, side.id, func(n Node) {
			for _, rf := range side.refs[n.Path] {
				if rf.old {
					rf.e.OldSize = n.Size
					continue
				}
				rf.e.Type, rf.e.Size = n.Type, n.Size
			}
		})
		if err != nil {
			return namedNotFound(err, d.From, d.To)
		}
	}
	for _, e := range d.Added {
		d.Totals.AddedBytes += e.Size
	}
	for _, e := range d.Removed {
		d.Totals.RemovedBytes += e.Size
	}
	for _, e := range d.Changed {
		d.Totals.ChangedBytes += e.Size - e.OldSize
	}
	for _, l := range [][]DiffEntry{d.Added, d.Removed, d.Changed} {
		sort.SliceStable(l, func(i, j int) bool { return l[i].Path < l[j].Path })
	}
	return nil
}

// diffKey is a diff path as restic ls prints it (no trailing "/").
func diffKey(p string) string {
	if len(p) > 1 {
		return strings.TrimSuffix(p, "/")
	}
	return p
}

// lsAll streams every node of a snapshot to fn.
func (r Repo) lsAll(ctx context.Context, id string, fn func(Node)) error {
	lw := &lineWriter{max: 1 << 20, fn: func(b []byte, overlong bool) {
		if overlong || len(b) == 0 || b[0] != '{' {
			return
		}
		var m struct {
			Node
			MessageType string `json:"message_type"`
		}
		if json.Unmarshal(b, &m) == nil && m.MessageType == "node" {
			fn(m.Node)
		}
	}}
	out, err := r.runRaw(ctx, proc.Cmd{Step: "ls", Args: []string{"ls", "--json", "--", id}, Stdout: lw}, false)
	lw.Flush()
	return notFound(r.wrap("ls", out, err))
}

// namedNotFound says which of the ids restic did not find.
func namedNotFound(err error, ids ...string) error {
	err = notFound(err)
	if !errors.Is(err, ErrSnapshotNotFound) {
		return err
	}
	var e *Error
	if errors.As(err, &e) {
		for _, id := range ids {
			if strings.Contains(e.Stderr, id) {
				return fmt.Errorf("snapshot %s: %w", id, err)
			}
		}
	}
	return err
}
