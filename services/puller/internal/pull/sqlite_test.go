package pull

import (
	"compress/gzip"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/testkit"
)

// openDB opens a database with the pure-Go driver, one connection, the
// pragmas given (e.g. "journal_mode(WAL)").
func openDB(t *testing.T, path string, pragmas ...string) *sql.DB {
	t.Helper()
	q := url.Values{}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// createDB makes a database of rows rows with blobBytes of random data
// each (random, so gzip cannot shrink it).
func createDB(t *testing.T, path string, rows, blobBytes int, pragmas ...string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, path, pragmas...)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, payload BLOB)`); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		if _, err := tx.ExecContext(ctx, `INSERT INTO items (name, payload) VALUES (?, randomblob(?))`, fmt.Sprintf("row %d ☕ 'q'", i), blobBytes); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// dbDigest is every row of items, in order, as one string.
func dbDigest(t *testing.T, path string) string {
	t.Helper()
	db := openDB(t, path)
	rows, err := db.Query(`SELECT id, name, hex(payload) FROM items ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var id int64
		var name, payload string
		if err := rows.Scan(&id, &name, &payload); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%d|%s|%s\n", id, name, payload)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestSQLitePull(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	c := testConfig(t, h)
	src := filepath.Join(h.Dir, "data dir", "app's ☕.db")
	createDB(t, src, 500, 64)
	target := sqliteTarget(src)

	res := SQLite(context.Background(), c, testSite, target, nil)
	t.Logf("result: %+v", res)
	if res.Status != domain.HealthSuccess || res.Error != "" {
		t.Fatalf("status %s, error %q", res.Status, res.Error)
	}
	copyPath := filepath.Join(res.StagingPath, "app's ☕.db")
	assertOnly(t, res.StagingPath, "app's ☕.db")
	fi, err := os.Stat(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("staging copy has mode %v, want 0600", fi.Mode().Perm())
	}
	if res.Files != 1 || res.Bytes != fi.Size() || res.Transferred <= 0 || res.Transferred >= res.Bytes {
		t.Errorf("Files, Bytes, Transferred = %d, %d, %d; copy is %d bytes", res.Files, res.Bytes, res.Transferred, fi.Size())
	}
	if got, want := dbDigest(t, copyPath), dbDigest(t, src); got != want {
		t.Errorf("the staging copy's rows differ from the site's (%d vs %d bytes of rows)", len(got), len(want))
	}
	if err := integrityCheck(context.Background(), copyPath); err != nil {
		t.Errorf("integrity_check of the staging copy: %v", err)
	}
	assertNoDumpLeftovers(t, c.RemoteTmpDir)

	t.Run("path is a folder", func(t *testing.T) {
		dir := filepath.Join(h.Dir, "a folder.db")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		res := SQLite(context.Background(), c, testSite, sqliteTarget(dir), nil)
		t.Logf("result: %+v", res)
		if res.Status != domain.HealthFailed || !strings.HasPrefix(res.Error, "dump on remote: exit 91 (sqlite3 .backup failed") ||
			!strings.Contains(res.Error, "is not a file") {
			t.Fatalf("result %+v", res)
		}
		assertOnly(t, res.StagingPath)
		assertNoDumpLeftovers(t, c.RemoteTmpDir)
	})

	t.Run("missing remote temp folder", func(t *testing.T) {
		c := c
		c.RemoteTmpDir = filepath.Join(h.Dir, "no-tmp")
		res := SQLite(context.Background(), c, testSite, target, nil)
		if res.Status != domain.HealthFailed || !strings.HasPrefix(res.Error, "dump on remote: exit 90 (no temp file could be created in the remote temp folder "+c.RemoteTmpDir) {
			t.Fatalf("result %+v", res)
		}
		assertOnly(t, res.StagingPath, "app's ☕.db")
	})
}

// TestSQLiteCancelMidTransfer cancels a pull as its first bytes arrive:
// the result says so, the previous copy and nothing else is in staging,
// and the remote temp file goes too.
func TestSQLiteCancelMidTransfer(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	c := testConfig(t, h)
	c.ProgressEvery = 20 * time.Millisecond
	src := filepath.Join(h.Dir, "big.db")
	createDB(t, src, 24, 1<<20) // 24 MiB that gzip cannot shrink
	target := sqliteTarget(src)

	var (
		times []time.Time
		ticks []Progress
	)
	first := SQLite(context.Background(), c, testSite, target, func(p Progress) {
		times = append(times, time.Now())
		ticks = append(ticks, p)
	})
	if first.Status != domain.HealthSuccess {
		t.Fatalf("first pull: %+v", first)
	}
	t.Run("progress at a bounded rate", func(t *testing.T) {
		if len(ticks) < 2 {
			t.Fatalf("%d callbacks during a %v pull", len(ticks), first.Duration)
		}
		for i, p := range ticks {
			if p.TargetHash != target.TargetHash || p.Percent != -1 || p.BytesDone <= 0 || p.BytesDone > first.Transferred || !strings.HasSuffix(p.Rate, "B/s") {
				t.Errorf("callback %d: %+v", i, p)
			}
			if i > 0 && times[i].Sub(times[i-1]) < c.ProgressEvery-5*time.Millisecond {
				t.Errorf("callbacks %d and %d only %v apart", i-1, i, times[i].Sub(times[i-1]))
			}
		}
		t.Logf("%d callbacks in %v, last %+v", len(ticks), first.Duration, ticks[len(ticks)-1])
	})
	copyPath := filepath.Join(first.StagingPath, "big.db")
	before := fileSum(t, copyPath)
	assertNoDumpLeftovers(t, c.RemoteTmpDir)

	// The site changes, then the next pull is canceled mid-way.
	db := openDB(t, src)
	if _, err := db.Exec(`INSERT INTO items (name, payload) VALUES ('new', randomblob(1000))`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got int64
	res := SQLite(ctx, c, testSite, target, func(p Progress) {
		got = p.BytesDone
		cancel()
	})
	t.Logf("canceled pull after %d bytes: %+v", got, res)
	if res.Status != domain.HealthFailed || res.Error != "transfer: canceled" {
		t.Fatalf("result %+v", res)
	}
	if fileSum(t, copyPath) != before {
		t.Error("the previous staging copy changed")
	}
	assertOnly(t, first.StagingPath, "big.db")
	assertNoDumpLeftovers(t, c.RemoteTmpDir)
}

// TestSQLiteFailureKeepsPreviousCopy breaks each step after a good pull:
// every failure names its step, and the good copy stays as it was.
func TestSQLiteFailureKeepsPreviousCopy(t *testing.T) {
	h := testkit.StartEdgeHost(t)

	setup := func(t *testing.T) (Config, domain.Target, string, [32]byte) {
		t.Helper()
		c := testConfig(t, h)
		src := filepath.Join(t.TempDir(), "app.db")
		// The site's file must be under the edge host's folder only by
		// convention; any path the ssh user can read works.
		createDB(t, src, 2000, 100)
		target := sqliteTarget(src)
		res := SQLite(context.Background(), c, testSite, target, nil)
		if res.Status != domain.HealthSuccess {
			t.Fatalf("first pull: %+v", res)
		}
		copyPath := filepath.Join(res.StagingPath, "app.db")
		return c, target, copyPath, fileSum(t, copyPath)
	}
	check := func(t *testing.T, res Result, copyPath string, before [32]byte, prefix string) {
		t.Helper()
		t.Logf("result: %+v", res)
		if res.Status != domain.HealthFailed || !strings.HasPrefix(res.Error, prefix) {
			t.Fatalf("status %s, error %q; want failed with %q", res.Status, res.Error, prefix)
		}
		if fileSum(t, copyPath) != before {
			t.Error("the previous staging copy changed")
		}
		assertOnly(t, filepath.Dir(copyPath), "app.db")
	}

	t.Run("not a database", func(t *testing.T) {
		c, target, copyPath, before := setup(t)
		writeFile(t, target.Path, []byte(strings.Repeat("not a database at all\n", 100)), 0o644)
		res := SQLite(context.Background(), c, testSite, target, nil)
		check(t, res, copyPath, before, "dump on remote: exit 91 (sqlite3 .backup failed")
		if res.Transient {
			t.Error("a broken database was marked transient")
		}
		assertNoDumpLeftovers(t, c.RemoteTmpDir)
	})

	t.Run("connection refused is transient", func(t *testing.T) {
		c, target, copyPath, before := setup(t)
		c.SSH.Port = testkit.FreePort(t)
		res := SQLite(context.Background(), c, testSite, target, nil)
		check(t, res, copyPath, before, "transfer: exit 255 (ssh: connection refused)")
		if !res.Transient {
			t.Error("a refused connection was not marked transient")
		}
	})

	t.Run("corrupt pages fail integrity_check", func(t *testing.T) {
		c, target, copyPath, before := setup(t)
		// Overwrite the middle of a b-tree page: the header still reads,
		// so .backup copies the damage faithfully.
		f, err := os.OpenFile(target.Path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte(strings.Repeat("\xff", 512)), 4096*5+8); err != nil {
			t.Fatal(err)
		}
		f.Close()
		res := SQLite(context.Background(), c, testSite, target, nil)
		check(t, res, copyPath, before, "integrity_check: ")
		if strings.TrimPrefix(res.Error, "integrity_check: ") == "ok" {
			t.Errorf("error %q", res.Error)
		}
		assertNoDumpLeftovers(t, c.RemoteTmpDir)
	})

	// A stand-in for ssh that prints the given bytes, to feed the
	// decompress step what a broken transfer could.
	fakeSSH := func(t *testing.T, out []byte) string {
		t.Helper()
		dir := t.TempDir()
		data := filepath.Join(dir, "out")
		writeFile(t, data, out, 0o600)
		script := filepath.Join(dir, "ssh")
		writeFile(t, script, []byte("#!/bin/sh\nexec cat '"+data+"'\n"), 0o700)
		return script
	}

	t.Run("not gzip", func(t *testing.T) {
		c, target, copyPath, before := setup(t)
		c.SSHPath = fakeSSH(t, []byte("this is not gzip"))
		res := SQLite(context.Background(), c, testSite, target, nil)
		check(t, res, copyPath, before, "decompress: not a gzip stream")
	})

	t.Run("truncated gzip", func(t *testing.T) {
		c, target, copyPath, before := setup(t)
		var gz strings.Builder
		zw := gzip.NewWriter(&gz)
		if _, err := zw.Write([]byte(strings.Repeat("SQLite format 3\x00 and more ", 10000))); err != nil {
			t.Fatal(err)
		}
		zw.Close()
		c.SSHPath = fakeSSH(t, []byte(gz.String()[:gz.Len()/2]))
		res := SQLite(context.Background(), c, testSite, target, nil)
		check(t, res, copyPath, before, "decompress: unexpected EOF")
	})

	t.Run("empty dump", func(t *testing.T) {
		c, target, copyPath, before := setup(t)
		c.SSHPath = fakeSSH(t, nil)
		res := SQLite(context.Background(), c, testSite, target, nil)
		check(t, res, copyPath, before, "decompress: the dump is empty")
	})

	t.Run("gzip of something else", func(t *testing.T) {
		c, target, copyPath, before := setup(t)
		var gz strings.Builder
		zw := gzip.NewWriter(&gz)
		if _, err := zw.Write([]byte(strings.Repeat("x", 8192))); err != nil {
			t.Fatal(err)
		}
		zw.Close()
		c.SSHPath = fakeSSH(t, []byte(gz.String()))
		res := SQLite(context.Background(), c, testSite, target, nil)
		check(t, res, copyPath, before, "integrity_check: file is not a database")
	})
}

// TestSQLiteUnderConcurrentWrites pulls while another connection inserts
// rows in a tight loop, in rollback-journal and in WAL mode: every pull
// succeeds, passes integrity_check, and holds a consistent snapshot (ids
// without gaps, as the writer commits one row at a time). In rollback
// mode a writer's commit locks readers out: without the dump's busy
// timeout, .backup fails at once with "database is locked".
//
// The rollback-journal database stays under 100 pages here (the WAL one
// grows past that and is fine), which sqlite3's .backup copies in one
// step. A bigger rollback-journal database under a writer this busy is
// copied in steps that restart after every commit, and the dump can run
// out of its busy timeout (seen with 5 MB: exit 91 "database is
// locked"); holding a read transaction across the .backup fixes that and
// is proposed for remote.SQLiteDumpCommand.
func TestSQLiteUnderConcurrentWrites(t *testing.T) {
	for _, mode := range []string{"DELETE", "WAL"} {
		t.Run(mode, func(t *testing.T) {
			h := testkit.StartEdgeHost(t)
			c := testConfig(t, h)
			src := filepath.Join(h.Dir, "busy.db")
			const initial = 300
			createDB(t, src, initial, 100, "journal_mode("+mode+")")
			target := sqliteTarget(src)

			w := openDB(t, src, "busy_timeout(10000)", "journal_mode("+mode+")")
			var jm string
			if err := w.QueryRow(`PRAGMA journal_mode`).Scan(&jm); err != nil || !strings.EqualFold(jm, mode) {
				t.Fatalf("journal_mode = %q, %v", jm, err)
			}
			ctx, stop := context.WithCancel(context.Background())
			var (
				wg       sync.WaitGroup
				inserted int64
				werr     error
			)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					if _, err := w.ExecContext(ctx, `INSERT INTO items (name, payload) VALUES ('busy', randomblob(100))`); err != nil {
						if ctx.Err() == nil && werr == nil {
							werr = err
						}
						continue
					}
					inserted++
				}
			}()

			var last int64
			for i := range 3 {
				time.Sleep(200 * time.Millisecond)
				res := SQLite(context.Background(), c, testSite, target, nil)
				if res.Status != domain.HealthSuccess {
					stop()
					wg.Wait()
					t.Fatalf("pull %d: %+v", i, res)
				}
				copyDB := openDB(t, filepath.Join(res.StagingPath, "busy.db"))
				var n, lo, hi, pages int64
				if err := copyDB.QueryRow(`SELECT count(*), min(id), max(id) FROM items`).Scan(&n, &lo, &hi); err != nil {
					t.Fatal(err)
				}
				if err := copyDB.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
					t.Fatal(err)
				}
				copyDB.Close()
				t.Logf("pull %d: %d rows (ids %d-%d, %d pages) in %v, %d bytes over the wire", i, n, lo, hi, pages, res.Duration, res.Transferred)
				if hi-lo+1 != n || lo != 1 {
					t.Errorf("pull %d: %d rows with ids %d-%d: not a consistent snapshot", i, n, lo, hi)
				}
				if n < initial || n < last {
					t.Errorf("pull %d: %d rows, previous pull had %d", i, n, last)
				}
				last = n
			}
			stop()
			wg.Wait()
			if werr != nil {
				t.Errorf("writer: %v", werr)
			}
			if inserted < 100 {
				t.Errorf("the writer inserted only %d rows: the pulls did not run under load", inserted)
			}
			if last <= initial {
				t.Errorf("no pull saw the writer's rows")
			}
			t.Logf("writer inserted %d rows", inserted)
			assertNoDumpLeftovers(t, c.RemoteTmpDir)
		})
	}
}

func TestSQLiteRejects(t *testing.T) {
	c := Config{StagingRoot: t.TempDir(), RemoteTmpDir: "/tmp", SSH: sshConfigFor("edge")}
	tests := []struct {
		name   string
		target domain.Target
		want   string
	}{
		{"wrong mode", dirTarget("/srv"), `dump on remote: target mode is "directory"`},
		{"relative path", sqliteTarget("app.db"), "dump on remote: sqlite database: invalid remote path"},
		{"root", sqliteTarget("/"), "dump on remote: / does not name a database file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := SQLite(context.Background(), c, testSite, tc.target, nil)
			if res.Status != domain.HealthFailed || !strings.HasPrefix(res.Error, tc.want) {
				t.Fatalf("result %+v, want failed with %q", res, tc.want)
			}
		})
	}
}

// TestSQLiteBandwidthLimit paces a dump to the site's limit.
func TestSQLiteBandwidthLimit(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	c := testConfig(t, h)
	src := filepath.Join(h.Dir, "paced.db")
	createDB(t, src, 4, 1<<20) // 4 MiB that gzip cannot shrink
	c.BandwidthLimitKbps = 2 << 10
	res := SQLite(context.Background(), c, testSite, sqliteTarget(src), nil)
	if res.Status != domain.HealthSuccess {
		t.Fatalf("result %+v", res)
	}
	floor := time.Duration(float64(res.Transferred) / float64(c.BandwidthLimitKbps*1024) * float64(time.Second))
	t.Logf("%d bytes in %v at %d KiB/s (floor %v)", res.Transferred, res.Duration, c.BandwidthLimitKbps, floor)
	if res.Duration < floor-100*time.Millisecond {
		t.Errorf("took %v, the limit allows no less than %v", res.Duration, floor)
	}
}

// TestSQLiteCutMidTransfer cuts the connection while a dump streams in:
// ssh exits 255, the failure is transient (the job retries it), the
// previous copy stays and no temp file is left on either side.
func TestSQLiteCutMidTransfer(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	proxy := testkit.StartProxy(t, net.JoinHostPort(h.Host, strconv.Itoa(h.Port)))
	c := testConfig(t, h)
	c.SSH.Port = proxy.Port
	c.ProgressEvery = 20 * time.Millisecond
	src := filepath.Join(h.Dir, "big.db")
	createDB(t, src, 8, 1<<20) // 8 MiB that gzip cannot shrink
	target := sqliteTarget(src)
	first := SQLite(context.Background(), c, testSite, target, nil)
	if first.Status != domain.HealthSuccess {
		t.Fatalf("first pull: %+v", first)
	}
	copyPath := filepath.Join(first.StagingPath, "big.db")
	before := fileSum(t, copyPath)

	// 2 MiB/s: about four seconds to cut into.
	c.BandwidthLimitKbps = 2 << 10
	cut := 0
	res := SQLite(context.Background(), c, testSite, target, func(p Progress) {
		if cut == 0 && p.BytesDone >= 512<<10 {
			cut = proxy.Cut()
		}
	})
	t.Logf("result: %+v", res)
	if cut == 0 {
		t.Fatal("no connection was cut")
	}
	if res.Status != domain.HealthFailed || !strings.HasPrefix(res.Error, "transfer: exit 255 (ssh: connection lost)") || !res.Transient {
		t.Errorf("status %s, transient %v, error %q; want a transient lost connection", res.Status, res.Transient, res.Error)
	}
	if fileSum(t, copyPath) != before {
		t.Error("the previous staging copy changed")
	}
	assertOnly(t, first.StagingPath, "big.db")
	assertNoDumpLeftovers(t, c.RemoteTmpDir)
}

// TestDumpErrorKeepsTheChain checks that a dump failure's text is for the
// operator while the ssh exit underneath stays classifiable.
func TestDumpErrorKeepsTheChain(t *testing.T) {
	c := Config{RemoteTmpDir: "/tmp"}
	tests := []struct {
		name      string
		ee        *proc.ExitError
		want      string
		sentinel  error
		transient bool
	}{
		{"connection lost", &proc.ExitError{Command: "ssh", Code: 255, Stderr: "Connection to 10.0.0.1 closed by remote host."},
			"transfer: exit 255 (ssh: connection lost): Connection to 10.0.0.1 closed by remote host.", remote.ErrConnLost, true},
		{"refused", &proc.ExitError{Command: "ssh", Code: 255, Stderr: "ssh: connect to host h port 22: Connection refused"},
			"transfer: exit 255 (ssh: connection refused): ssh: connect to host h port 22: Connection refused", remote.ErrConnRefused, true},
		{"auth", &proc.ExitError{Command: "ssh", Code: 255, Stderr: "u@h: Permission denied (publickey)."},
			"transfer: exit 255 (ssh: ssh authentication refused): u@h: Permission denied (publickey).", remote.ErrAuthRefused, false},
		{"backup failed", &proc.ExitError{Command: "ssh", Code: remote.DumpExitBackup, Stderr: "Error: file is not a database"},
			"dump on remote: exit 91 (sqlite3 .backup failed (missing or not a database, or locked longer than the busy timeout)): Error: file is not a database", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := dumpError(context.Background(), c, fmt.Errorf("sqlite_dump: %w", tc.ee))
			if err.Error() != tc.want {
				t.Errorf("text %q\nwant %q", err, tc.want)
			}
			var ee *proc.ExitError
			if !errors.As(err, &ee) || ee != tc.ee {
				t.Errorf("the ExitError is lost from %v", err)
			}
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Errorf("%v does not wrap %v", err, tc.sentinel)
			}
			if got := remote.IsTransient(err); got != tc.transient {
				t.Errorf("IsTransient = %v, want %v", got, tc.transient)
			}
		})
	}
}
