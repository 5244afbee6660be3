package fleetbench

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/satoru/satoru/cmd/satoru/internal/realproc"
)

func TestParseNodes(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []int
		ok       bool
	}{
		{"default", "1,2,3", []int{1, 2, 3}, true},
		{"unordered with spaces and a repeat", " 3, 1 ,3", []int{1, 3}, true},
		{"baseline alone", "1", []int{1}, true},
		{"no baseline", "2,3", nil, false},
		{"zero", "0,1", nil, false},
		{"not a number", "1,two", nil, false},
		{"empty", "", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseNodes(tc.in)
			if (err == nil) != tc.ok || !slices.Equal(got, tc.want) {
				t.Errorf("parseNodes(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

// changeSite rewrites one run of 1/20 of the site's bytes, in one file,
// and leaves the sizes alone: what round 3 relies on for "5% changed".
func TestChangeSiteRewritesFivePercent(t *testing.T) {
	const size = 2_000_000
	dir := t.TempDir()
	if err := writeSite(dir, size, 7); err != nil {
		t.Fatal(err)
	}
	before := readAll(t, dir)
	if err := changeSite(dir, size, 42); err != nil {
		t.Fatal(err)
	}
	after := readAll(t, dir)
	changedFiles, differ := 0, 0
	for name, b := range before {
		a := after[name]
		if len(a) != len(b) {
			t.Fatalf("%s: %d bytes after the change, %d before", name, len(a), len(b))
		}
		if !bytes.Equal(a, b) {
			changedFiles++
		}
		for i := range b {
			if a[i] != b[i] {
				differ++
			}
		}
	}
	// Random over random: 1 byte in 256 stays the same by chance.
	n := size / changeShare
	if changedFiles != 1 || differ < n*95/100 || differ > n {
		t.Errorf("%d file(s) changed, %d bytes differ: want 1 file and about %d bytes", changedFiles, differ, n)
	}
	if realproc.TreeBytes(dir) != size {
		t.Errorf("site holds %d bytes, want %d", realproc.TreeBytes(dir), size)
	}
}

func readAll(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	if len(out) != siteFiles {
		t.Fatalf("%d files in the site, want %d", len(out), siteFiles)
	}
	return out
}
