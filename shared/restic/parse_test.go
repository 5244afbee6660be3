package restic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// The testdata files are real restic 0.18.1 output: backup.stdout is a
// first backup of 165 MB in 5,000 files with RESTIC_PROGRESS_FPS=2;
// backup_incomplete.* is a backup with one unreadable file (exit 3).

func TestParseCapturedBackup(t *testing.T) {
	out := readFile(t, filepath.Join("testdata", "backup.stdout"))
	var got []Progress
	clock := time.Unix(0, 0)
	p := &backupParser{
		progress: func(pr Progress) { got = append(got, pr) },
		// Each line arrives 300 ms after the previous one, so the
		// throttle passes every other line.
		now: func() time.Time { clock = clock.Add(300 * time.Millisecond); return clock },
	}
	w := &lineWriter{max: maxLine, fn: p.line}
	// Feed it in awkward chunks, as a pipe would.
	for b := []byte(out); len(b) > 0; {
		n := min(len(b), 97)
		w.Write(b[:n])
		b = b[n:]
	}
	w.Flush()

	if len(got) != 2 {
		t.Fatalf("progress calls = %d, want 2 of the 4 status lines: %+v", len(got), got)
	}
	if want := (Progress{PercentDone: 0.2398, TotalFiles: 5000, FilesDone: 1197, TotalBytes: 165000000, BytesDone: 39567000}); got[0] != want {
		t.Errorf("first progress = %+v, want %+v", got[0], want)
	}
	if got[1].PercentDone != 0.7604 || got[1].SecondsElapsed != 1 {
		t.Errorf("second progress = %+v", got[1])
	}
	if p.summary == nil {
		t.Fatal("no summary")
	}
	want := Summary{
		SnapshotID: "446f8b2cfa3f0c29c1c70b778fc75b2abb1721444a0e1491ce645dad265acadc",
		FilesNew:   5000, DirsNew: 51, DataBlobs: 5000, TreeBlobs: 52,
		DataAdded: 166737431, DataAddedPacked: 165680209,
		TotalFilesProcessed: 5000, TotalBytesProcessed: 165000000, TotalDuration: 2.732062864,
	}
	if s := *p.summary; !summaryEqual(s, want) {
		t.Errorf("summary = %+v\nwant      %+v", s, want)
	}
	if len(p.noise) != 0 || len(p.warnings) != 0 || p.overlong != 0 {
		t.Errorf("noise %q, warnings %q, overlong %d", p.noise, p.warnings, p.overlong)
	}
}

func TestParseCapturedIncompleteStderr(t *testing.T) {
	stderr := readFile(t, filepath.Join("testdata", "backup_incomplete.stderr"))
	msgs, exit := stderrMessages(stderr)
	if len(msgs) != 1 || !strings.HasSuffix(msgs[0], "s3/locked: permission denied") {
		t.Errorf("messages = %q", msgs)
	}
	if !slices.Equal(exit, []string{"Warning: at least one source file could not be read"}) {
		t.Errorf("exit = %q", exit)
	}
	r := Repo{}
	text := r.errorText(stderr)
	if !strings.HasSuffix(text, "permission denied\nWarning: at least one source file could not be read") {
		t.Errorf("error text = %q", text)
	}
}

func TestParserOddLines(t *testing.T) {
	var calls int
	p := &backupParser{progress: func(Progress) { calls++ }, now: time.Now}
	w := &lineWriter{max: 64, fn: p.line}
	w.Write([]byte("plain text from restic\n"))
	w.Write([]byte(`{"message_type":"status","percent_done":0.5` + "\n"))    // broken JSON: noise
	w.Write([]byte(`{"message_type":"status","percent_done":0.5}` + "\r\n")) // CRLF is fine
	w.Write([]byte(`{"message_type":"status","percent_done":0.6}` + "\n"))   // within 500 ms: dropped
	w.Write([]byte(`{"message_type":"verbose_status","action":"new"}` + "\n"))
	w.Write([]byte(`{"message_type":"error","error":{"message":"x: denied"}}` + "\n"))
	w.Write([]byte(strings.Repeat("y", 200) + "\n")) // over the 64-byte cap
	w.Write([]byte("no newline at the end"))
	w.Flush()
	if calls != 1 {
		t.Errorf("progress calls = %d, want 1", calls)
	}
	if p.overlong != 1 {
		t.Errorf("overlong = %d, want 1", p.overlong)
	}
	if !slices.Equal(p.warnings, []string{"x: denied"}) {
		t.Errorf("warnings = %q", p.warnings)
	}
	noise := string(p.noise)
	for _, want := range []string{"plain text from restic\n", `"percent_done":0.5` + "\n", "no newline at the end\n"} {
		if !strings.Contains(noise, want) {
			t.Errorf("noise %q lacks %q", noise, want)
		}
	}
	if strings.Contains(noise, "yyy") {
		t.Errorf("noise kept the overlong line")
	}
}

func TestParserNoiseIsCapped(t *testing.T) {
	p := &backupParser{now: time.Now}
	line := bytes.Repeat([]byte("n"), 100)
	for range 1000 {
		p.line(line, false)
	}
	if len(p.noise) > 2*noiseCap+len(line)+1 {
		t.Errorf("noise grew to %d bytes", len(p.noise))
	}
}

// TestBackupWithFakeRestic drives Backup's exit handling with a script
// that replays the captured output, so each branch runs without a repo.
func TestBackupWithFakeRestic(t *testing.T) {
	td, _ := filepath.Abs("testdata")
	tests := []struct {
		name         string
		script       string
		wantProgress int
		wantErr      error
		wantID       bool
		wantWarning  string
		wantText     string
	}{
		// The four status lines arrive at once: the throttle passes one.
		{name: "success", script: `cat "$TD/backup.stdout"`, wantID: true, wantProgress: 1},
		{name: "exit 3 returns the summary", script: `cat "$TD/backup_incomplete.stdout"; cat "$TD/backup_incomplete.stderr" >&2; exit 3`,
			wantErr: ErrIncomplete, wantID: true, wantWarning: "s3/locked: permission denied", wantText: "could not be read"},
		{name: "exit 0 without summary", script: `echo 'something odd'`, wantErr: ErrNoSummary, wantText: "something odd"},
		{name: "locked", script: `echo '{"message_type":"exit_error","code":11,"message":"repository is already locked exclusively by PID 1"}' >&2; exit 11`,
			wantErr: ErrLocked, wantText: "exit 11 (repository is locked): repository is already locked exclusively by PID 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Repo{Bin: fakeRestic(t, tc.script), Repository: "/r", Password: "pw", Env: []string{"TD=" + td}}
			calls := 0
			s, err := r.Backup(context.Background(), BackupOptions{Paths: []string{"."}}, func(Progress) { calls++ })
			if calls != tc.wantProgress {
				t.Errorf("progress calls = %d, want %d", calls, tc.wantProgress)
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantText != "" && !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("err = %q, want it to contain %q", err, tc.wantText)
			}
			if (s.SnapshotID != "") != tc.wantID {
				t.Errorf("snapshot id = %q", s.SnapshotID)
			}
			if tc.wantWarning != "" && (len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], tc.wantWarning)) {
				t.Errorf("warnings = %q", s.Warnings)
			}
		})
	}
}

// TestSecretsStayOutOfArgvAndErrors uses a fake restic that prints its
// argv and echoes the secrets back, raw and JSON-escaped (where proc's
// redaction of raw stderr cannot see them).
func TestSecretsStayOutOfArgvAndErrors(t *testing.T) {
	const password = `pa"ss<wo>rd-4242`
	const awsKey = "AKIA-secret-key-99"
	script := `echo "argv: $*" >&2
echo "pw: $RESTIC_PASSWORD" >&2
echo "stdout pw: $RESTIC_PASSWORD"
printf '{"message_type":"error","error":{"message":"pa\\"ss\\u003cwo\\u003erd-4242 and %s"}}\n' "$AWS_SECRET_ACCESS_KEY" >&2
printf '{"message_type":"exit_error","code":12,"message":"Fatal: pa\\"ss\\u003cwo\\u003erd-4242"}\n' >&2
exit ${FAKE_CODE:-12}`
	for _, code := range []string{"12", "0"} {
		r := Repo{Bin: fakeRestic(t, script), Repository: "/r", Password: password,
			Env: []string{"AWS_SECRET_ACCESS_KEY=" + awsKey, "FAKE_CODE=" + code}}
		s, err := r.Backup(context.Background(), BackupOptions{Paths: []string{"/data"}, Tags: []string{"t"}}, nil)
		if err == nil {
			t.Fatalf("exit %s: no error", code)
		}
		if code == "12" && !errors.Is(err, ErrWrongPassword) {
			t.Errorf("err = %v, want ErrWrongPassword", err)
		}
		text := err.Error() + strings.Join(s.Warnings, "\n")
		if !strings.Contains(text, "argv:") && code == "12" {
			t.Errorf("error text lost restic's stderr: %q", text)
		}
		for _, secret := range []string{password, awsKey} {
			if strings.Contains(text, secret) {
				t.Errorf("exit %s: error leaks %q: %q", code, secret, text)
			}
		}
	}
}

// fakeRestic writes a shell script standing in for restic.
func fakeRestic(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "restic")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func summaryEqual(a, b Summary) bool {
	a.Warnings, b.Warnings = nil, nil
	return reflect.DeepEqual(a, b)
}

func TestSnapshotsStreamsPastProcCap(t *testing.T) {
	// ~2 MB of JSON: more than proc captures, decoded as it streams.
	script := `awk 'BEGIN { printf "["; for (i = 0; i < 6000; i++) { if (i) printf ","; printf "{\"id\":\"%064d\",\"short_id\":\"s\",\"time\":\"2026-01-02T03:04:05Z\",\"hostname\":\"h\",\"tags\":[\"t\"],\"paths\":[\"/p/%0200d\"]}", i, i }; print "]" }'`
	r := Repo{Bin: fakeRestic(t, script), Repository: "/r", Password: "pw"}
	snaps, err := r.Snapshots(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 6000 || snaps[5999].ID != fmt.Sprintf("%064d", 5999) || snaps[0].Time.Year() != 2026 {
		t.Fatalf("got %d snapshots, last %+v", len(snaps), snaps[len(snaps)-1])
	}
}

func TestCancelIsErrCanceled(t *testing.T) {
	r := Repo{Bin: fakeRestic(t, "sleep 10"), Repository: "/r", Password: "pw"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	_, err := r.Backup(ctx, BackupOptions{Paths: []string{"."}}, nil)
	if !errors.Is(err, ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrCanceled and context.Canceled", err)
	}
}

// restic 0.18 retries a failed write for 15 minutes, also on a full disk:
// the first "no space left on device" stops it, and the error names the
// repository (a local path is no secret) but never the password.
func TestBackupStopsOnAFullDisk(t *testing.T) {
	bin := fakeRestic(t, `echo 'Save(<data/5f0c1a2b3c>) returned error, retrying after 552ms: open /srv/repo/data/5f/tmp: no space left on device' >&2
sleep 60`)
	r := Repo{Bin: bin, Repository: "/srv/repo", Password: "hunter2-secret-pw"}
	start := time.Now()
	_, err := r.Backup(t.Context(), BackupOptions{Paths: []string{t.TempDir()}, Host: "h"}, nil)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("err = %v, want ErrNoSpace", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s: restic was left retrying", took)
	}
	msg := err.Error()
	if !strings.Contains(msg, "restic repository /srv/repo") || !strings.Contains(msg, "no space left on device") {
		t.Errorf("error %q does not name the repository and the reason", msg)
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error %q carries the password", msg)
	}
}
