package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestClientCommandsAreDispatched checks that the client command words
// reach package apicmd and that the usage lists them.
func TestClientCommandsAreDispatched(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{name: "usage lists the client commands", args: []string{"help"}, code: 0, stdout: "run <site> preflight|backup|retention|verify [--wait]"},
		{name: "sites reaches apicmd", args: []string{"sites"}, code: 2, stderr: "satoru sites: missing subcommand"},
		{name: "health without a token", args: []string{"health"}, code: 1, stderr: "satoru health: no API token"},
		{name: "usage lists worker", args: []string{"help"}, code: 0, stdout: "worker    run a worker node"},
		{name: "usage lists control", args: []string{"help"}, code: 0, stdout: "control   run the control plane only"},
		{name: "control needs a listener workers can join", args: []string{"control"}, code: 2, stderr: "satoru control: runs no backup itself"},
		{name: "worker needs NATS and the store", args: []string{"worker"}, code: 2, stderr: "satoru worker: needs nats_url and mongo_uri"},
		{name: "unknown command", args: []string{"frob"}, code: 2, stderr: `unknown command "frob"`},
		{name: "sync is not syncer", args: []string{"sync", "frob"}, code: 2, stderr: `satoru sync: unknown subcommand "frob"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), tc.args, []string{"SATORU_DATA_DIR=" + t.TempDir()}, &out, &errb)
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
		})
	}
}
