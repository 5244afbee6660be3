package node

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

// TestDeletingASiteRemovesItsKnownHosts: the pinned key file goes with
// the site, at once in satoru up; and a file left by a site deleted while
// the puller was down is swept when it starts.
func TestDeletingASiteRemovesItsKnownHosts(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	dir := t.TempDir()
	khDir := filepath.Join(dir, "ssh")
	mkdir(t, khDir)
	stale := filepath.Join(khDir, "5d41402a-0000-4000-8000-000000000000.known_hosts")
	if err := os.WriteFile(stale, []byte("satoru-x ssh-ed25519 AAAA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, _ := startNode(t, loadConfig(t, testEnv(dir)), All)
	c := newClient(t, n)

	site := c.registerSite(edge, siteOpts{name: "edge-kh"})
	if j := c.waitJob(c.startJob(site, "preflight"), 60*time.Second); j.Status != domain.StatusSuccess {
		t.Fatalf("preflight: %s %q", j.Status, j.Error)
	}
	kh := filepath.Join(n.Config.SSHKnownHostsDir, site+".known_hosts")
	if _, err := os.Stat(kh); err != nil {
		t.Fatalf("preflight wrote no known_hosts: %v", err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("the known_hosts file of a site that does not exist was not swept at start")
	}
	if code := c.do("DELETE", "/api/v1/sites/"+site, nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	if _, err := os.Stat(kh); err == nil {
		t.Error("the deleted site's known_hosts file is still there")
	}
}
