package preflight

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

// TestReuseSkipsTheRoundTripOnlyWhileNothingChanged runs preflights
// against a real sshd and counts its logins: a backup that asks to reuse
// the checks of a site that passed them moments ago makes no connection;
// any change of the site's settings or targets, a forgotten pass, or the
// end of the reuse window makes it check everything again.
func TestReuseSkipsTheRoundTripOnlyWhileNothingChanged(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	dir := filepath.Join(edge.Dir, "www")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sshPath, err := exec.LookPath("ssh")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	c := &Checker{SSHPath: sshPath, KnownHostsDir: t.TempDir(), ConnectTimeout: 10 * time.Second, RemoteTmpDir: "/tmp",
		Reuse: 10 * time.Minute, Now: func() time.Time { return now }}
	site := domain.Site{UUID: "s1", Name: "edge", Host: edge.Host, Port: edge.Port, User: edge.User, SSHKeyPath: edge.KeyPath, HostKey: edge.HostKeyLine}
	target := domain.Target{TargetHash: domain.TargetHash(domain.ModeDirectory, dir), Mode: domain.ModeDirectory, Path: dir}
	in := Input{Site: site, Targets: []domain.Target{target}, Reuse: true}
	ctx := context.Background()

	run := func(what string, in Input, wantReused bool) Result {
		t.Helper()
		before := edge.Logins()
		res := c.Run(ctx, in)
		if !res.OK() {
			t.Fatalf("%s: preflight failed: %s", what, res.Error())
		}
		// sshd's log is read in the background: give a login time to show.
		wait := 3 * time.Second
		if wantReused {
			wait = 500 * time.Millisecond
		}
		for deadline := time.Now().Add(wait); edge.Logins() == before && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		logins := edge.Logins() - before
		if res.Reused != wantReused || (wantReused && logins != 0) || (!wantReused && logins == 0) {
			t.Fatalf("%s: reused %v with %d ssh logins, want reused %v", what, res.Reused, logins, wantReused)
		}
		if res.SSH.KnownHostsFile == "" || res.SSH.HostKeyAlias == "" {
			t.Fatalf("%s: no ssh settings for the pull: %+v", what, res.SSH)
		}
		return res
	}

	run("never passed", in, false)
	c.Passed(in)
	res := run("passed a minute ago", in, true)
	if ev := res.Events[len(res.Events)-1]; ev.Step != StepReused || !strings.Contains(ev.Message, "pinned host key") {
		t.Errorf("last event = %+v, want a %s event that says the pull still checks the key", ev, StepReused)
	}
	now = now.Add(time.Minute)
	run("a minute later", in, true)
	run("without Reuse (a preflight job)", Input{Site: site, Targets: in.Targets}, false)

	moved := in
	moved.Targets = []domain.Target{{TargetHash: domain.TargetHash(domain.ModeDirectory, edge.Dir), Mode: domain.ModeDirectory, Path: edge.Dir}}
	run("another target", moved, false)
	// Every setting the checks vouch for is in the digest.
	for name, change := range map[string]func(*Input){
		"host":     func(in *Input) { in.Site.Host = "127.0.0.2" },
		"port":     func(in *Input) { in.Site.Port++ },
		"user":     func(in *Input) { in.Site.User = "backup2" },
		"key":      func(in *Input) { in.Site.SSHKeyPath = "/other/key" },
		"host key": func(in *Input) { in.Site.HostKey = "ssh-ed25519 AAAAother" },
		"target mode": func(in *Input) {
			in.Targets = []domain.Target{{TargetHash: target.TargetHash, Mode: domain.ModeSQLiteDump, Path: dir}}
		},
		"target added":  func(in *Input) { in.Targets = append([]domain.Target{target}, target) },
		"targets empty": func(in *Input) { in.Targets = nil },
	} {
		changed := in
		change(&changed)
		if c.Digest(changed) == c.Digest(in) {
			t.Errorf("changing the %s keeps the digest: a changed site would skip its checks", name)
		}
	}

	c.Forget(site.UUID)
	run("after Forget", in, false)
	c.Passed(in)
	run("passed again", in, true)
	now = now.Add(10 * time.Minute)
	run("past preflight_reuse_seconds", in, false)

	c.Reuse = 0
	c.Passed(in)
	run("reuse off", in, false)
}
