package puller

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/satoru/satoru/shared/domain"
)

type siteList []string

func (l siteList) ListSites(context.Context) ([]domain.Site, error) {
	out := make([]domain.Site, len(l))
	for i, u := range l {
		out[i] = domain.Site{UUID: u}
	}
	return out, nil
}

func TestSweepKnownHostsRemovesOnlyDeletedSites(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"live.known_hosts", "gone.known_hosts", "gone.known_hosts.tmp", "other.known_hosts.tmp", "notes.txt", "live.known_hosts.tmp"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "folder.known_hosts"), 0o700); err != nil {
		t.Fatal(err)
	}
	n, err := SweepKnownHosts(context.Background(), dir, siteList{"live"})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	want := []string{"folder.known_hosts", "live.known_hosts", "live.known_hosts.tmp", "notes.txt"}
	if !slices.Equal(left, want) || n != 2 {
		t.Errorf("left %q (removed %d), want %q (sites gone and other)", left, n, want)
	}
	if n, err := SweepKnownHosts(context.Background(), filepath.Join(dir, "missing"), siteList{}); n != 0 || err != nil {
		t.Errorf("a missing folder: %d, %v", n, err)
	}
}

func TestRemoveKnownHostsStaysInItsFolder(t *testing.T) {
	dir := t.TempDir()
	for _, id := range []string{"../x", "", ".", "..", "a/b"} {
		if err := RemoveKnownHosts(dir, id); err == nil {
			t.Errorf("RemoveKnownHosts(%q) accepted", id)
		}
	}
	if err := RemoveKnownHosts(dir, "never-existed"); err != nil {
		t.Errorf("a missing file: %v", err)
	}
}
