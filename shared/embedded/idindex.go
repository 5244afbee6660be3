package embedded

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the driver FerretDB itself uses ("sqlite")
)

// FerretDB v1's SQLite backend stores each collection as a table with one
// JSON column and pushes a filter {_id: <string or ObjectId>} down to
// SQLite as
//
//	WHERE _ferretdb_sjson->'$._id' = ?
//
// (find, update, findAndModify, delete and the UPDATE/DELETE it runs
// afterwards). The unique _id index it creates is on a different
// expression (_ferretdb_sjson->"_id"), so SQLite cannot use it and every
// lookup by _id reads the whole table: ~22 ms for a find and ~90 ms for an
// update in a 10,000-document collection on 2 cores.
//
// IndexIDs adds, beside FerretDB's own indexes, a plain SQLite index on
// exactly the pushed-down expression to every collection table. Lookups by
// _id then search the index (~0.5 ms at 10,000 documents). FerretDB does
// not know the index (it is not in its metadata, listIndexes does not show
// it); SQLite maintains it on every write and drops it with its table.
// Filters on other fields still scan.

// idIndexSuffix ends the name of the SQLite index IndexIDs creates.
const idIndexSuffix = "_satoru_id_expr"

// DefaultIndexEvery is how often a running Store indexes new collections.
const DefaultIndexEvery = 30 * time.Second

// IndexIDs indexes the _id lookups of every collection that exists now
// (see above) and returns how many tables it indexed. StartStore calls it
// and a running Store repeats it every StoreOptions.IndexEvery; call it
// after creating collections (e.g. after store.Open) to index them at once.
func (s *Store) IndexIDs(ctx context.Context) (int, error) {
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	files, err := filepath.Glob(filepath.Join(s.dir, "*.sqlite"))
	if err != nil {
		return 0, fmt.Errorf("embedded: store: index ids: %w", err)
	}
	total := 0
	var errs []error
	for _, f := range files {
		n, err := indexIDsIn(ctx, f)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("embedded: store: index ids in %s: %w", filepath.Base(f), err))
		}
	}
	return total, errors.Join(errs...)
}

// indexIDsIn indexes the collection tables of one database file. It opens
// the file only for the pass (FerretDB may drop and recreate a database's
// file) and never creates one (mode=rw).
func indexIDsIn(ctx context.Context, file string) (int, error) {
	u := url.URL{Scheme: "file", Path: file, RawQuery: "mode=rw&_pragma=busy_timeout(10000)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)

	var hasMeta int
	err = db.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_ferretdb_collections'`).Scan(&hasMeta)
	if err != nil || hasMeta == 0 {
		return 0, err
	}
	rows, err := db.QueryContext(ctx,
		`SELECT c.table_name FROM _ferretdb_collections c
		 WHERE NOT EXISTS (SELECT 1 FROM sqlite_master m WHERE m.type = 'index' AND m.name = c.table_name || ?)`,
		idIndexSuffix)
	if err != nil {
		return 0, err
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return 0, err
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, t := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON %s (_ferretdb_sjson->'$._id')`,
			quoteIdent(t+idIndexSuffix), quoteIdent(t))
		if _, err := db.ExecContext(ctx, q); err != nil {
			// The collection may have been dropped since the list was read.
			var exists int
			if qerr := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, t).Scan(&exists); qerr == nil && exists == 0 {
				continue
			}
			return n, fmt.Errorf("table %s: %w", t, err)
		}
		n++
	}
	return n, nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
