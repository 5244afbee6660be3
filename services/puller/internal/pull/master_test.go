package pull

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/testkit"
)

// TestPullsOverControlMaster runs a directory and a SQLite pull with the
// site job's ControlPath: the first opens the master, the second rides
// it, and neither waits on the backgrounded master's output.
func TestPullsOverControlMaster(t *testing.T) {
	h := testkit.StartEdgeHost(t)
	c := testConfig(t, h)
	// Unix socket paths are short (108 bytes): t.TempDir() can be too long.
	dir, err := os.MkdirTemp("", "pcm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c.SSH.ControlPath = filepath.Join(dir, "%C")
	c.SSH.ControlPersist = 30 * time.Second
	exit, err := remote.SSHControlArgs(c.SSH, "exit")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = proc.Run(context.Background(), proc.Cmd{Path: "ssh", Args: exit, Timeout: 10 * time.Second})
	})

	src := filepath.Join(h.Dir, "www")
	writeFile(t, filepath.Join(src, "index.html"), []byte("<h1>hi</h1>\n"), 0o644)
	db := filepath.Join(h.Dir, "app.db")
	createDB(t, db, 10, 10)

	res := Directory(context.Background(), c, testSite, dirTarget(src), nil)
	if res.Status != domain.HealthSuccess {
		t.Fatalf("directory pull: %+v", res)
	}
	if res.Duration >= proc.KillGrace {
		t.Errorf("the pull that opened the master took %v", res.Duration)
	}
	check, err := remote.SSHControlArgs(c.SSH, "check")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proc.Run(context.Background(), proc.Cmd{Path: "ssh", Args: check, Timeout: 10 * time.Second}); err != nil {
		t.Fatalf("no master after the first pull: %v", err)
	}
	res2 := SQLite(context.Background(), c, testSite, sqliteTarget(db), nil)
	if res2.Status != domain.HealthSuccess {
		t.Fatalf("sqlite pull: %+v", res2)
	}
	t.Logf("directory pull (opened the master) %v, sqlite pull over it %v", res.Duration, res2.Duration)
	assertNoDumpLeftovers(t, c.RemoteTmpDir)
}
