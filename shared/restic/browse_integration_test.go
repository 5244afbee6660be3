package restic

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestIntegrationBrowseDumpRestore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	base := t.TempDir()
	r := testRepo(t, filepath.Join(base, "repo"))
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(base, "src")
	files := writeTree(t, src)
	// A name with glob characters must restore literally.
	if err := os.WriteFile(filepath.Join(src, "odd*[1].txt"), []byte("odd"), 0o600); err != nil {
		t.Fatal(err)
	}
	files["odd*[1].txt"] = []byte("odd")
	if err := os.WriteFile(filepath.Join(src, "odd-1.txt"), []byte("not me"), 0o600); err != nil {
		t.Fatal(err)
	}
	sum, err := r.Backup(ctx, BackupOptions{Paths: []string{src}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := sum.SnapshotID

	t.Run("list one level", func(t *testing.T) {
		l, err := r.List(ctx, id, src)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, n := range l.Entries {
			names = append(names, n.Name)
		}
		want := []string{"a.txt", "d with space.txt", "odd*[1].txt", "odd-1.txt", "sub"}
		if len(names) != len(want) {
			t.Fatalf("entries = %q, want %q", names, want)
		}
		if l.Dir == nil || !l.Dir.IsDir() {
			t.Errorf("dir node = %+v", l.Dir)
		}
		root, err := r.List(ctx, id, "/")
		if err != nil || len(root.Entries) != 1 {
			t.Errorf("root = %+v, %v", root, err)
		}
	})

	t.Run("not found", func(t *testing.T) {
		if _, err := r.List(ctx, id, src+"/nope"); !errors.Is(err, ErrPathNotFound) {
			t.Errorf("missing path: %v", err)
		}
		if _, err := r.List(ctx, id, src+"/a.txt"); !errors.Is(err, ErrNotDir) {
			t.Errorf("file as folder: %v", err)
		}
		if _, err := r.List(ctx, "deadbeef", "/"); !errors.Is(err, ErrSnapshotNotFound) {
			t.Errorf("unknown snapshot: %v", err)
		}
		if err := r.Dump(ctx, id, src+"/nope", io.Discard, ""); !errors.Is(err, ErrPathNotFound) {
			t.Errorf("dump missing file: %v", err)
		}
		if err := r.Dump(ctx, id, src+"/nope", io.Discard, "tar"); !errors.Is(err, ErrPathNotFound) {
			t.Errorf("dump missing folder: %v", err)
		}
		if err := r.Dump(ctx, "deadbeef00", "/", io.Discard, "tar"); !errors.Is(err, ErrSnapshotNotFound) {
			t.Errorf("dump unknown snapshot: %v", err)
		}
		if _, err := r.Stat(ctx, id, src+"/nope"); !errors.Is(err, ErrPathNotFound) {
			t.Errorf("stat missing: %v", err)
		}
	})

	t.Run("stat and dump a file", func(t *testing.T) {
		n, err := r.Stat(ctx, id, src+"/sub/b.bin")
		if err != nil || n.Type != "file" || n.Size != int64(len(files["sub/b.bin"])) {
			t.Fatalf("stat = %+v, %v", n, err)
		}
		d, err := r.Stat(ctx, id, src)
		if err != nil || !d.IsDir() {
			t.Fatalf("stat dir = %+v, %v", d, err)
		}
		var buf bytes.Buffer
		if err := r.Dump(ctx, id, src+"/sub/b.bin", &buf, ""); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), files["sub/b.bin"]) {
			t.Error("dumped file differs")
		}
	})

	t.Run("dump a folder as tar rooted at it", func(t *testing.T) {
		var buf bytes.Buffer
		if err := r.Dump(ctx, id, src+"/sub", &buf, "tar"); err != nil {
			t.Fatal(err)
		}
		got := map[string][]byte{}
		tr := tar.NewReader(&buf)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				b, _ := io.ReadAll(tr)
				got[h.Name] = b
			}
		}
		for _, name := range []string{"b.bin", "deeper/c.bin", "deeper/empty"} {
			if !bytes.Equal(got[name], files["sub/"+name]) {
				t.Errorf("tar entry %s differs or is missing (have %d entries)", name, len(got))
			}
		}
	})

	t.Run("restore literal paths", func(t *testing.T) {
		target := filepath.Join(base, "restore")
		if err := r.RestorePaths(ctx, id, target, []string{src + "/odd*[1].txt", src + "/sub"}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(target, src, "odd*[1].txt"))
		if err != nil || string(b) != "odd" {
			t.Errorf("odd file: %q %v", b, err)
		}
		if _, err := os.Stat(filepath.Join(target, src, "odd-1.txt")); err == nil {
			t.Error("odd-1.txt restored: the pattern was not literal")
		}
		if _, err := os.Stat(filepath.Join(target, src, "a.txt")); err == nil {
			t.Error("a.txt restored: not asked for")
		}
		b, err = os.ReadFile(filepath.Join(target, src, "sub/deeper/c.bin"))
		if err != nil || !bytes.Equal(b, files["sub/deeper/c.bin"]) {
			t.Errorf("sub/deeper/c.bin: %v", err)
		}
	})
}
