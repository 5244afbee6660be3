package restic

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIntegrationCheckReport: a healthy repository passes; one whose pack
// files were overwritten fails with restic's message and broken packs.
func TestIntegrationCheckReport(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	base := t.TempDir()
	repoDir := filepath.Join(base, "repo")
	r := testRepo(t, repoDir)
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(base, "src")
	writeTree(t, src)
	if _, err := r.Backup(ctx, BackupOptions{Paths: []string{src}}, nil); err != nil {
		t.Fatal(err)
	}
	res, err := r.CheckReport(ctx, CheckOptions{ReadDataSubset: "100%"})
	if err != nil || res.NumErrors != 0 {
		t.Fatalf("healthy check = %+v, %v", res, err)
	}
	CorruptPacks(t, repoDir)
	res, err = r.CheckReport(ctx, CheckOptions{ReadDataSubset: "100%"})
	var re *Error
	if !errors.As(err, &re) || re.Code != 1 || !strings.Contains(re.Stderr, "repository contains errors") {
		t.Fatalf("corrupt check error = %v", err)
	}
	if res.NumErrors == 0 || len(res.BrokenPacks) == 0 {
		t.Errorf("corrupt check summary = %+v", res)
	}
	if _, err := r.CheckReport(ctx, CheckOptions{ReadDataSubset: "5%; rm"}); err == nil {
		t.Error("bad subset accepted")
	}
}

// CorruptPacks overwrites bytes in every pack file under dir/data.
func CorruptPacks(t *testing.T, repoDir string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(repoDir, "data"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if err := os.Chmod(p, 0o600); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		n++
		_, err = f.WriteAt([]byte("corrupted-by-test-corrupted-by-test"), 4)
		return err
	})
	if err != nil || n == 0 {
		t.Fatalf("corrupt packs: %d files, %v", n, err)
	}
}

// TestIntegrationDiff: two snapshots with known added, removed and
// changed files.
func TestIntegrationDiff(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	base := t.TempDir()
	r := testRepo(t, filepath.Join(base, "repo"))
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(base, "src")
	write := func(name, data string) {
		t.Helper()
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("keep.txt", "same")
	write("gone.txt", "12345")
	write("grow.txt", "ab")
	first, err := r.Backup(ctx, BackupOptions{Paths: []string{src}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(src, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	write("grow.txt", "abcdefgh")
	write("new/added.txt", "0123456789")
	second, err := r.Backup(ctx, BackupOptions{Paths: []string{src}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := r.Diff(ctx, first.SnapshotID, second.SnapshotID)
	if err != nil {
		t.Fatal(err)
	}
	paths := func(l []DiffEntry) (out []string) {
		for _, e := range l {
			out = append(out, e.Path)
		}
		return out
	}
	if got := strings.Join(paths(d.Added), ","); got != src+"/new/,"+src+"/new/added.txt" {
		t.Errorf("added = %s", got)
	}
	if got := paths(d.Removed); len(got) != 1 || got[0] != src+"/gone.txt" || d.Removed[0].Size != 5 || d.Removed[0].Type != "file" {
		t.Errorf("removed = %+v", d.Removed)
	}
	if len(d.Changed) != 1 || d.Changed[0].Path != src+"/grow.txt" || d.Changed[0].Size != 8 || d.Changed[0].OldSize != 2 {
		t.Errorf("changed = %+v", d.Changed)
	}
	if d.Added[1].Size != 10 || d.Added[0].Type != "dir" {
		t.Errorf("added sizes = %+v", d.Added)
	}
	want := DiffTotals{Added: 2, Removed: 1, Changed: 1, AddedBytes: 10, RemovedBytes: 5, ChangedBytes: 6}
	got := d.Totals
	got.AddedDataBytes, got.RemovedDataBytes = 0, 0
	if got != want || d.Truncated || d.From != first.SnapshotID || d.To != second.SnapshotID {
		t.Errorf("totals = %+v (truncated %v, %s..%s)", d.Totals, d.Truncated, d.From, d.To)
	}
	_, err = r.Diff(ctx, "deadbeef00", second.SnapshotID)
	if !errors.Is(err, ErrSnapshotNotFound) || !strings.Contains(err.Error(), "deadbeef00") {
		t.Errorf("unknown id: %v", err)
	}
}

// TestCheckErrorText: the problems restic check names come first, its
// repair advice is left out, its final reason ends the text.
func TestCheckErrorText(t *testing.T) {
	stderr := `{"message_type":"error","message":"error for tree 6c80e41c:\n"}
{"message_type":"error","message":"  decrypting blob \u003ctree/6c80e41c\u003e from a73b33ea failed: ciphertext verification failed\n"}
{"message_type":"error","message":"pack 03c694a7 contains 2 errors: [blob a81c31ac: decrypting blob failed]\n"}
{"message_type":"error","message":"\nThe repository contains damaged pack files. These damaged files must be removed to repair the repository.\n\n"}
{"message_type":"error","message":"restic repair packs 03c694a7\nrestic repair snapshots --forget\n\n"}
{"message_type":"error","message":"Damaged pack files can be caused by backend problems, hardware problems or bugs in restic.\n"}
{"message_type":"exit_error","code":1,"message":"Fatal: repository contains errors"}
`
	got := checkErrorText(stderr)
	want := "error for tree 6c80e41c:; decrypting blob <tree/6c80e41c> from a73b33ea failed: ciphertext verification failed; " +
		"pack 03c694a7 contains 2 errors: [blob a81c31ac: decrypting blob failed]; Fatal: repository contains errors"
	if got != want {
		t.Errorf("checkErrorText =\n%q\nwant\n%q", got, want)
	}
	long := strings.Repeat(`{"message_type":"error","message":"pack 0123456789abcdef contains 2 errors"}`+"\n", 100) +
		`{"message_type":"exit_error","code":1,"message":"Fatal: repository contains errors"}`
	if got := checkErrorText(long); len(got) > errorTextCap || !strings.HasSuffix(got, " ...; Fatal: repository contains errors") {
		t.Errorf("long: %d bytes, %q", len(got), got)
	}
}
