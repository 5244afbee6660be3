package remote

import (
	"fmt"
	"strings"
	"time"
)

// Exit codes of the SQLite dump command, so the caller can say which
// remote step failed (stderr has the tool's own words).
const (
	DumpExitTmp    = 90 // no temp file could be created in the temp folder
	DumpExitBackup = 91 // the database is missing or sqlite3 .backup failed
	DumpExitGzip   = 92 // gzip failed (or the connection closed mid-stream)
)

// DumpBusyTimeout is how long the dump's sqlite3 waits for a lock held by
// the site's own writers before giving up (exit DumpExitBackup).
const (
	DumpBusyTimeout = 10 * time.Second
	// dumpBusyTimeoutMS is DumpBusyTimeout as sqlite3's .timeout takes it
	// (a test keeps the two equal).
	dumpBusyTimeoutMS = "10000"
)

// dumpScript takes the database and the temp folder as $1 and $2. sqlite3's
// .backup uses SQLite's online backup API, so the copy is consistent while
// the site keeps writing. The copy is gzipped to stdout, so one ssh round
// trip both dumps and transfers it. The EXIT trap removes the temp file on
// success, on failure and on HUP/INT/TERM (a canceled job).
const dumpScript = `umask 077; ` +
	// sqlite3 would create a missing database, on the site: refuse first.
	`[ -f "$1" ] || { printf 'satoru-dump: %s is not a file\n' "$1" >&2; exit 91; }; ` +
	`t=$(mktemp "$2/.satoru-dump.XXXXXX") || exit 90; ` +
	`trap 'rm -f "$t"' EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; ` +
	// sqlite3's own output is dropped (errors still reach stderr): stdout
	// carries only the gzip. The busy timeout makes it wait for a writer's
	// lock instead of failing at once with "database is locked". The read
	// transaction held across .backup keeps a busy writer from restarting
	// the copy after every commit (a rollback-journal database under
	// constant writes otherwise never finishes).
	`sqlite3 -bail -batch -cmd '.timeout ` + dumpBusyTimeoutMS + `' "$1" "BEGIN; SELECT count(*) FROM sqlite_schema;" ".backup '$t'" "COMMIT;" </dev/null >/dev/null || { printf 'satoru-dump: sqlite3 .backup of %s failed\n' "$1" >&2; exit 91; }; ` +
	`gzip -c -- "$t" || exit 92`

// SQLiteDumpCommand returns the remote command that writes a gzip of a
// consistent copy of the SQLite database db to stdout, using a temp file
// in tmpDir that is always removed. Run it with SSHCmd and a Stdout
// writer.
func SQLiteDumpCommand(db, tmpDir string) (string, error) {
	if err := ValidatePath(db); err != nil {
		return "", fmt.Errorf("sqlite database: %w", err)
	}
	if err := ValidatePath(tmpDir); err != nil {
		return "", fmt.Errorf("sqlite temp folder: %w", err)
	}
	// The temp path lands inside sqlite3's own '...' quoting, which has no
	// escape for a quote.
	if strings.Contains(tmpDir, "'") {
		return "", fmt.Errorf("%w: temp folder %q contains a single quote, which sqlite3's .backup cannot take", ErrInvalidPath, tmpDir)
	}
	return "sh -c " + Quote(dumpScript) + " " + CommandLine("satoru-dump", db, tmpDir), nil
}
