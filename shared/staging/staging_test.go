package staging

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestIDIsCreatedOnceAndKept: the first call creates the folder and the
// id with private modes; later calls, and calls racing the first from
// many goroutines, all get that one id.
func TestIDIsCreatedOnceAndKept(t *testing.T) {
	root := filepath.Join(t.TempDir(), "backups")
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := ID(root)
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] || !ValidID(id) {
			t.Fatalf("ids %q: want one valid id", ids)
		}
	}
	again, err := ID(root)
	if err != nil || again != ids[0] {
		t.Fatalf("second read = %q, %v; want %q", again, err, ids[0])
	}
	for path, want := range map[string]os.FileMode{root: 0o700, filepath.Join(root, IDFile): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %o, want %o", path, fi.Mode().Perm(), want)
		}
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 {
		t.Errorf("staging root holds %d entries, want only %s (no temporary files left)", len(entries), IDFile)
	}
	other, err := ID(filepath.Join(t.TempDir(), "other"))
	if err != nil || other == ids[0] {
		t.Errorf("another root's id = %q, %v; want a different one", other, err)
	}
}

// TestIDRefusesADamagedFile: a file that is not an id is an error naming
// it, not silently replaced.
func TestIDRefusesADamagedFile(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, IDFile)
	if err := os.WriteFile(path, []byte("not an id\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ID(root)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want one naming %s", err, path)
	}
}

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   string
		want bool
	}{
		{"hex", "0123456789abcdef0123456789abcdef", true},
		{"short", "0123", false},
		{"upper", "0123456789ABCDEF0123456789ABCDEF", false},
		{"subject chars", "0123456789abcdef0123456789abc.*>", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidID(tc.id); got != tc.want {
				t.Errorf("ValidID(%q) = %v", tc.id, got)
			}
		})
	}
}
