package pull

import (
	"bufio"
	"compress/gzip"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/satoru/satoru/shared/ctxio"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/remote"

	// The pure-Go SQLite driver ("sqlite") checks the copy locally, so the
	// Satoru host needs no sqlite3 binary.
	_ "modernc.org/sqlite"
)

// SQLite pulls the database t.Path: the remote takes a consistent copy
// with sqlite3's .backup and streams it gzipped over ssh straight into a
// temp file in staging; the copy is decompressed beside the current one,
// must pass PRAGMA integrity_check, and only then is renamed over
// <staging>/<basename>. Until that rename the previous good copy stays,
// whatever fails; temp files are removed on every failure, and the remote
// temp file by the dump command itself.
func SQLite(ctx context.Context, c Config, siteUUID string, t domain.Target, progress func(Progress)) Result {
	start := time.Now()
	r := Result{TargetHash: t.TargetHash, Path: t.Path, Mode: t.Mode}
	r.sqlite(ctx, c, siteUUID, t, progress)
	r.Duration = time.Since(start)
	return r
}

func (r *Result) sqlite(ctx context.Context, c Config, siteUUID string, t domain.Target, progress func(Progress)) {
	if t.Mode != domain.ModeSQLiteDump {
		r.fail("%s: target mode is %q, not %q", StepDump, t.Mode, domain.ModeSQLiteDump)
		return
	}
	cmdline, err := remote.SQLiteDumpCommand(t.Path, c.RemoteTmpDir)
	if err != nil {
		r.fail("%s: %v", StepDump, err)
		return
	}
	name := filepath.Base(t.Path)
	if name == "/" || name == "." || name == ".." {
		r.fail("%s: %s does not name a database file", StepDump, t.Path)
		return
	}
	staging, err := prepareStaging(c.StagingRoot, siteUUID, t.TargetHash)
	if err != nil {
		r.fail("%s: %v", StepStaging, err)
		return
	}
	r.StagingPath = staging
	final := filepath.Join(staging, name)
	tmps := dumpTemps(staging, name)
	gzTmp, dbTmp := tmps[0], tmps[1]
	ok := false
	defer func() {
		// The gzip is never kept; the decompressed copy only as final.
		_ = os.Remove(gzTmp)
		if !ok {
			_ = os.Remove(dbTmp)
		}
	}()

	ctx, cancel := jobrun.WithLimitCause(ctx, c.TargetTimeout, errTargetTimeout)
	defer cancel()

	gzBytes, err := fetchDump(ctx, c, t.TargetHash, cmdline, gzTmp, progress)
	if err != nil {
		r.fail("%v", err)
		r.Transient = remote.IsTransient(err)
		return
	}
	r.Transferred = gzBytes
	size, err := gunzipFile(ctx, gzTmp, dbTmp)
	if err != nil {
		if why := interrupted(ctx, c.TargetTimeout); why != "" {
			r.fail("%s: %s", StepDecompress, why)
		} else {
			r.fail("%s: %v", StepDecompress, err)
		}
		return
	}
	if err := integrityCheck(ctx, dbTmp); err != nil {
		if why := interrupted(ctx, c.TargetTimeout); why != "" {
			r.fail("%s: %s", StepIntegrity, why)
		} else {
			r.fail("%s: %v", StepIntegrity, err)
		}
		return
	}
	if err := os.Rename(dbTmp, final); err != nil {
		r.fail("%s: %v", StepPublish, err)
		return
	}
	ok = true
	// Best effort: the copy is whole either way; a crash before the
	// folder is synced at worst loses the rename, and the next pull
	// dumps again.
	_ = syncDir(staging)
	r.Status = domain.HealthSuccess
	r.Files, r.Bytes = 1, size
}

// dumpTemps are the temp files a pull of the database name writes into
// its staging folder: the gzip as it arrives, then its decompressed copy,
// which is renamed over the previous copy once checked.
func dumpTemps(staging, name string) [2]string {
	return [2]string{filepath.Join(staging, "."+name+".gz.tmp"), filepath.Join(staging, name+".tmp")}
}

// fetchDump runs the remote dump and streams its stdout into gzTmp,
// returning the bytes received. Its errors name the step: the remote dump
// (exit 90/91/92 with the remote's stderr) or the transfer (ssh, the
// local file, cancel, timeout).
func fetchDump(ctx context.Context, c Config, hash, cmdline, gzTmp string, progress func(Progress)) (int64, error) {
	cmd, err := remote.SSHCmd(c.SSH, "sqlite_dump", cmdline)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", StepTransfer, err)
	}
	cmd.Path = orDefault(c.SSHPath, cmd.Path)
	f, err := os.OpenFile(gzTmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", StepTransfer, err)
	}
	// A leftover from a crashed run may have had another mode.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return 0, fmt.Errorf("%s: %w", StepTransfer, err)
	}
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	w := &dumpWriter{ctx: runCtx, f: f, stop: stop, hash: hash, start: time.Now(), tick: newThrottle(c.progressEvery(), progress),
		limit: int64(c.BandwidthLimitKbps) * 1024}
	cmd.Stdout = w
	_, runErr := proc.Run(runCtx, cmd)
	closeErr := f.Close()
	switch {
	case w.err != nil:
		return w.n, fmt.Errorf("%s: write %s: %w", StepTransfer, gzTmp, w.err)
	case runErr != nil:
		return w.n, dumpError(ctx, c, runErr)
	case closeErr != nil:
		return w.n, fmt.Errorf("%s: write %s: %w", StepTransfer, gzTmp, closeErr)
	}
	return w.n, nil
}

// dumpError names the step that failed from the dump's exit code.
func dumpError(ctx context.Context, c Config, err error) error {
	if why := interrupted(ctx, c.TargetTimeout); why != "" {
		return fmt.Errorf("%s: %s", StepTransfer, why)
	}
	var ee *proc.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("%s: %v", StepTransfer, err)
	}
	if ee.Signal != 0 {
		return fmt.Errorf("%s: ssh killed by signal %d (%s): %s", StepTransfer, int(ee.Signal), ee.Signal, ee.Stderr)
	}
	var step, what string
	cerr := remote.ClassifyRunError(err)
	switch ee.Code {
	case remote.DumpExitTmp:
		step, what = StepDump, fmt.Sprintf("no temp file could be created in the remote temp folder %s", c.RemoteTmpDir)
	case remote.DumpExitBackup:
		step, what = StepDump, "sqlite3 .backup failed (missing or not a database, or locked longer than the busy timeout)"
	case remote.DumpExitGzip:
		step, what = StepDump, "gzip failed, or the connection closed mid-stream"
	case 255:
		step, what = StepTransfer, "ssh failed"
		if reason := sshReason(cerr); reason != "" {
			what = "ssh: " + reason
		}
	default:
		step = StepDump
	}
	msg := fmt.Sprintf("%s: exit %d", step, ee.Code)
	if what != "" {
		msg += " (" + what + ")"
	}
	if ee.Stderr != "" {
		msg += ": " + ee.Stderr
	}
	return &stepError{msg: msg, err: cerr}
}

// stepError is a failure as the operator reads it (step, exit code,
// stderr) over the error it came from, so errors.Is still finds the
// sentinel remote.ClassifyRunError added (a lost or refused connection is
// retried) and errors.As the *proc.ExitError.
type stepError struct {
	msg string
	err error
}

func (e *stepError) Error() string { return e.msg }
func (e *stepError) Unwrap() error { return e.err }

// dumpWriter writes the dump to its temp file as it arrives, counting
// bytes for progress. A write error (disk full) stops the transfer at
// once: it is recorded and the run canceled, and the writer keeps
// accepting (and dropping) data, since an error returned to os/exec would
// leave ssh blocked on a full pipe.
//
// With a bandwidth limit it also paces the transfer: it returns no faster
// than limit bytes per second on average, so the pipe, ssh's channel
// window and TCP push back to the site's gzip, which then sends no faster
// either. That is the site's uplink the limit protects, as rsync's
// --bwlimit does for folders.
type dumpWriter struct {
	ctx   context.Context
	f     *os.File
	n     int64
	err   error
	stop  context.CancelCauseFunc
	hash  string
	start time.Time
	tick  *throttle
	limit int64 // bytes per second; 0 means none
}

func (w *dumpWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return len(p), nil
	}
	k, err := w.f.Write(p)
	w.n += int64(k)
	if err != nil {
		w.err = err
		w.stop(err)
		return len(p), nil
	}
	w.tick.offer(func() Progress {
		return Progress{TargetHash: w.hash, BytesDone: w.n, Percent: -1, Rate: rate(w.n, time.Since(w.start))}
	})
	if w.limit > 0 {
		due := time.Duration(float64(w.n) / float64(w.limit) * float64(time.Second))
		if wait := due - time.Since(w.start); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-w.ctx.Done():
				t.Stop()
			}
		}
	}
	return len(p), nil
}

// gunzipFile decompresses src into dst (0600, synced to disk) and returns
// dst's size. Streaming: memory use does not depend on the database size.
func gunzipFile(ctx context.Context, src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	zr, err := gzip.NewReader(bufio.NewReaderSize(in, 256<<10))
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, errors.New("the dump is empty")
		}
		return 0, fmt.Errorf("not a gzip stream: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	if err := out.Chmod(0o600); err != nil {
		out.Close()
		return 0, err
	}
	// Reading to the end checks the gzip's CRC and length.
	n, err := io.Copy(out, ctxio.Reader(ctx, zr))
	if err != nil {
		out.Close()
		return n, err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return n, err
	}
	return n, out.Close()
}

// maxIntegrityRows bounds the problems quoted from integrity_check.
const maxIntegrityRows = 5

// integrityCheck runs PRAGMA integrity_check on the database file at path,
// which must answer exactly "ok". The file is opened read-only and
// immutable, so no journal, -wal or -shm file is created beside it (a
// .backup of a WAL database is itself marked WAL; immutable reads the
// file alone, which holds every page).
func integrityCheck(ctx context.Context, path string) error {
	u := url.URL{Scheme: "file", Path: path, RawQuery: "mode=ro&immutable=1"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return err
	}
	defer rows.Close()
	var got []string
	more := false
	for rows.Next() {
		if len(got) == maxIntegrityRows {
			more = true
			break
		}
		var s string
		if err := rows.Scan(&s); err != nil {
			return err
		}
		got = append(got, s)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(got) == 1 && got[0] == "ok" {
		return nil
	}
	if len(got) == 0 {
		return errors.New("no result")
	}
	msg := strings.Join(got, "; ")
	if more {
		msg += "; ..."
	}
	return errors.New(proc.TrimStderr(msg, 1024))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
