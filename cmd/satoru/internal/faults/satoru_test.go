package faults

import (
	"testing"

	"github.com/satoru/satoru/cmd/satoru/internal/realproc"
)

// resticPassword is every test repository's password, given to satoru as
// SATORU_RESTIC_PASSWORD and to the test's own restic commands.
const resticPassword = "faults-restic-password"

// The real process, its folders and its REST client live in realproc,
// shared with the operator benchmark.
type (
	layout   = realproc.Layout
	satoru   = realproc.Satoru
	api      = realproc.Client
	site     = realproc.Site
	procInfo = realproc.ProcInfo
)

var newLayout = realproc.NewLayout

// satoruEnv is the environment of a satoru process: realproc.Env (the
// default config on l's folders) plus random ports, the repository
// password and a scheduler that ticks once at start and then not for a
// day, so scheduled jobs do not mix into a scenario's own.
func satoruEnv(l layout, extra ...string) []string {
	knobs := []string{
		// Port 0: the kernel picks a free port at bind time, so parallel
		// scenarios never race for one; the banner says which.
		"SATORU_API_LISTEN=127.0.0.1:0",
		"SATORU_EMBEDDED_NATS_LISTEN=127.0.0.1:0",
		"SATORU_EMBEDDED_STORE_LISTEN=127.0.0.1:0",
		"SATORU_RESTIC_PASSWORD=" + resticPassword,
		"SATORU_SCHEDULER_TICK_SECONDS=86400",
	}
	return realproc.Env(repoRoot, l, append(knobs, extra...)...)
}

// newSatoru prepares a satoru command of the suite's binary (see
// realproc.New); Start runs it.
func newSatoru(t testing.TB, name string, l layout, args []string, env []string) *satoru {
	t.Helper()
	return realproc.New(t, satoruBin, name, l, args, env)
}

// startUp starts `satoru up` on l with the suite's config (satoruEnv).
func startUp(t testing.TB, l layout, extra ...string) *satoru {
	t.Helper()
	s := newSatoru(t, "satoru up", l, []string{"up"}, satoruEnv(l, extra...))
	s.Start()
	return s
}
