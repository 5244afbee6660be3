package restic

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFindBin(t *testing.T) {
	exe := func(t *testing.T, dir, name string) string {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		// setup lays out tools under root and returns the PATH, the
		// configured restic_bin and the expected answer.
		setup func(t *testing.T, root string) (path, configured, want string)
	}{
		{"configured wins", func(t *testing.T, root string) (string, string, string) {
			exe(t, filepath.Join(root, "bin"), "restic")
			return exe(t, filepath.Join(root, "path"), "restic"), "/opt/restic", "/opt/restic"
		}},
		{"project bin before PATH", func(t *testing.T, root string) (string, string, string) {
			want := exe(t, filepath.Join(root, "bin"), "restic")
			exe(t, filepath.Join(root, "path"), "restic")
			return filepath.Join(root, "path"), "", want
		}},
		{"beside satoru before PATH order", func(t *testing.T, root string) (string, string, string) {
			exe(t, filepath.Join(root, "first"), "restic")
			exe(t, filepath.Join(root, "app"), "satoru")
			want := exe(t, filepath.Join(root, "app"), "restic")
			return filepath.Join(root, "first") + string(os.PathListSeparator) + filepath.Join(root, "app"), "", want
		}},
		{"PATH", func(t *testing.T, root string) (string, string, string) {
			return filepath.Join(root, "path"), "", exe(t, filepath.Join(root, "path"), "restic")
		}},
		{"none", func(t *testing.T, root string) (string, string, string) {
			return filepath.Join(root, "empty"), "", ""
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			path, configured, want := tc.setup(t, root)
			t.Setenv("PATH", path)
			t.Chdir(root)
			if got := FindBin(configured); got != want {
				t.Errorf("FindBin(%q) = %q, want %q", configured, got, want)
			}
		})
	}
}
