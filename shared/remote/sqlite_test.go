package remote

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/proc"
)

func TestSQLiteDumpCommandRejects(t *testing.T) {
	tests := []struct{ name, db, tmp, wantErr string }{
		{"relative db", "app.db", "/tmp", "not absolute"},
		{"relative tmp", "/a.db", "tmp", "not absolute"},
		{"quote in tmp", "/a.db", "/it's", "single quote"},
		{"newline in db", "/a\n.db", "/tmp", "line break"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := SQLiteDumpCommand(tc.db, tc.tmp)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidPath) {
				t.Fatalf("err = %v, want ErrInvalidPath containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestSQLiteDumpLocally runs the dump command under sh, as sshd would, on a
// real database: the gzip on stdout must hold the data, and the temp file
// must be gone whether the dump worked or not.
func TestSQLiteDumpLocally(t *testing.T) {
	root := t.TempDir()
	db := filepath.Join(root, "it's a $(db).db")
	tmp := filepath.Join(root, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := proc.Run(ctx, proc.Cmd{Path: "sqlite3", Args: []string{db, "CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('hello');"}}); err != nil {
		t.Fatal(err)
	}

	t.Run("dump", func(t *testing.T) {
		cmd, err := SQLiteDumpCommand(db, tmp)
		if err != nil {
			t.Fatal(err)
		}
		var gz bytes.Buffer
		if _, err := proc.Run(ctx, proc.Cmd{Path: "sh", Args: []string{"-c", cmd}, Stdout: &gz}); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "copy.db")
		gunzipTo(t, &gz, out)
		res, err := proc.Run(ctx, proc.Cmd{Path: "sqlite3", Args: []string{out, "SELECT v FROM t"}})
		if err != nil || string(res.Stdout) != "hello\n" {
			t.Fatalf("restored copy: %q %v", res.Stdout, err)
		}
		assertEmpty(t, tmp)
	})

	tests := []struct {
		name     string
		db, tmp  string
		wantCode int
	}{
		{"not a database", filepath.Join(root, "plain.txt"), tmp, DumpExitBackup},
		{"missing temp folder", db, filepath.Join(root, "no-tmp"), DumpExitTmp},
		{"missing database", filepath.Join(root, "missing.db"), tmp, DumpExitBackup},
	}
	if err := os.WriteFile(filepath.Join(root, "plain.txt"), []byte("not sqlite at all, long enough to be read as a header......."), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd, err := SQLiteDumpCommand(tc.db, tc.tmp)
			if err != nil {
				t.Fatal(err)
			}
			_, err = proc.Run(ctx, proc.Cmd{Path: "sh", Args: []string{"-c", cmd}, Stdout: io.Discard})
			var ee *proc.ExitError
			if !errors.As(err, &ee) || ee.Code != tc.wantCode {
				t.Fatalf("err = %v, want exit %d", err, tc.wantCode)
			}
			assertEmpty(t, tmp)
		})
	}
	if _, err := os.Stat(filepath.Join(root, "missing.db")); err == nil {
		t.Error("the dump created the missing database")
	}
}

func gunzipTo(t *testing.T, r io.Reader, path string) {
	t.Helper()
	zr, err := gzip.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, zr); err != nil {
		t.Fatal(err)
	}
	if err := zr.Close(); err != nil {
		t.Fatal(err)
	}
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("temp folder not cleaned: %v", left)
	}
}

func TestDumpBusyTimeoutMatches(t *testing.T) {
	if got := strconv.FormatInt(DumpBusyTimeout.Milliseconds(), 10); got != dumpBusyTimeoutMS {
		t.Fatalf("dumpBusyTimeoutMS = %s, DumpBusyTimeout is %s ms", dumpBusyTimeoutMS, got)
	}
}

// TestSQLiteDumpWaitsForWriter holds an exclusive write lock on a
// rollback-journal database for a moment, as a site's writer committing a
// big transaction would: without a busy timeout sqlite3's .backup fails at
// once with "database is locked"; the dump must wait and succeed, and its
// copy must hold the committed write.
func TestSQLiteDumpWaitsForWriter(t *testing.T) {
	root := t.TempDir()
	db := filepath.Join(root, "app.db")
	tmp := filepath.Join(root, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := proc.Run(ctx, proc.Cmd{Path: "sqlite3", Args: []string{db, "CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('before');"}}); err != nil {
		t.Fatal(err)
	}

	// A second sqlite3 holds the lock until told to commit.
	writer := exec.Command("sqlite3", "-batch", db)
	in, err := writer.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := writer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); _ = writer.Wait() })
	if _, err := io.WriteString(in, "BEGIN EXCLUSIVE; INSERT INTO t VALUES ('during'); SELECT 'locked';\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "locked\n" {
		t.Fatalf("writer: %q %v", line, err)
	}
	const hold = time.Second
	go func() {
		time.Sleep(hold)
		_, _ = io.WriteString(in, "COMMIT;\n")
	}()

	cmd, err := SQLiteDumpCommand(db, tmp)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	start := time.Now()
	if _, err := proc.Run(ctx, proc.Cmd{Path: "sh", Args: []string{"-c", cmd}, Stdout: &gz}); err != nil {
		t.Fatalf("dump while a writer held the lock: %v", err)
	}
	if waited := time.Since(start); waited < hold/2 {
		t.Errorf("dump finished after %v: it did not wait for the lock", waited)
	}
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	gunzipTo(t, &gz, copyPath)
	res, err := proc.Run(ctx, proc.Cmd{Path: "sqlite3", Args: []string{copyPath, "SELECT group_concat(v) FROM t"}})
	if err != nil || string(res.Stdout) != "before,during\n" {
		t.Fatalf("copy holds %q (%v), want the committed write", res.Stdout, err)
	}
	assertEmpty(t, tmp)
}
