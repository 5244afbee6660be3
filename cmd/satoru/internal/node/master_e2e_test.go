package node

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

// controlSockets lists the ssh master sockets in the node's control dir.
func controlSockets(t *testing.T, n *Node) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(n.Config.DataDir, "ssh", "cm"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 {
			out = append(out, e.Name())
		}
	}
	return out
}

// A site's jobs share one ssh connection while they follow each other: a
// second backup logs in no more; a failed job closes the connection, so
// the next one logs in afresh; stopping the node closes it too.
func TestBackupsOfASiteShareTheMasterConnection(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	// A short data dir keeps the control sockets in <data_dir>/ssh/cm
	// (longer paths fall back to a temp folder).
	dataDir, err := os.MkdirTemp("", "sm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dataDir) })
	n, stop := startNode(t, loadConfig(t, testEnv(dataDir)), All)
	c := newClient(t, n)
	src := filepath.Join(edge.Dir, "srv")
	mkdir(t, src)
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	site := c.registerSite(edge, siteOpts{name: "edge-master", targets: []map[string]any{{"mode": "directory", "path": src}}})

	backup := func(want domain.JobStatus) {
		t.Helper()
		id := c.startJob(site, "backup")
		if j := c.waitJob(id, 2*time.Minute); j.Status != want {
			t.Fatalf("backup: %s %q, want %s\n%s", j.Status, j.Error, want, dumpEvents(c.events(id)))
		}
	}
	logins := edge.Logins()
	backup(domain.StatusSuccess)
	if got := edge.Logins() - logins; got != 1 {
		t.Fatalf("first backup: %d logins, want 1 (preflight opens the master, rsync runs over it)", got)
	}
	if s := controlSockets(t, n); len(s) != 1 {
		t.Fatalf("after a good backup the site's master stays up: sockets %v, want one", s)
	}
	backup(domain.StatusSuccess)
	if got := edge.Logins() - logins; got != 1 {
		t.Fatalf("second backup logged in again (%d logins in all): the master was not reused", got)
	}

	// Every target failing fails the job, which closes the master.
	if err := os.Rename(src, src+".away"); err != nil {
		t.Fatal(err)
	}
	backup(domain.StatusFailed)
	if s := controlSockets(t, n); len(s) != 0 {
		t.Fatalf("a failed job leaves its master open: sockets %v", s)
	}
	if err := os.Rename(src+".away", src); err != nil {
		t.Fatal(err)
	}
	before := edge.Logins()
	backup(domain.StatusSuccess)
	if got := edge.Logins() - before; got != 1 {
		t.Fatalf("backup after a failure: %d logins, want 1 (a fresh master)", got)
	}

	stop()
	if s := controlSockets(t, n); len(s) != 0 {
		t.Fatalf("a stopped node leaves masters open: sockets %v", s)
	}
}
