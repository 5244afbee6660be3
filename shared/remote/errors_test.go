package remote

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/satoru/satoru/shared/proc"
)

func TestClassifySSHError(t *testing.T) {
	// Real OpenSSH 9.2 and rsync 3.5 stderr, captured against sshd.
	files := []struct {
		file string
		want error
	}{
		{"host-key-changed.txt", ErrHostKeyMismatch},
		{"host-key-unknown.txt", ErrHostKeyUnknown},
		{"auth-publickey.txt", ErrAuthRefused},
		{"conn-refused.txt", ErrConnRefused},
		{"banner-timeout.txt", ErrConnTimeout},
		{"resolve.txt", ErrHostUnreachable},
		{"rsync-host-key-changed.txt", ErrHostKeyMismatch},
		{"rsync-conn-refused.txt", ErrConnRefused},
	}
	for _, tc := range files {
		t.Run(tc.file, func(t *testing.T) {
			if got := ClassifySSHError(255, readTestdata(t, "ssh-stderr/"+tc.file)); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}

	texts := []struct {
		name   string
		code   int
		stderr string
		want   error
	}{
		{"connect timeout", 255, "ssh: connect to host 10.255.255.1 port 22: Connection timed out\r\n", ErrConnTimeout},
		{"no route", 255, "ssh: connect to host 192.0.2.1 port 22: No route to host", ErrHostUnreachable},
		{"network unreachable", 255, "ssh: connect to host 2001:db8::1 port 22: Network is unreachable", ErrHostUnreachable},
		{"dns temporary failure", 255, "ssh: Could not resolve hostname edge: Temporary failure in name resolution", ErrHostUnreachable},
		{"auth, methods listed", 255, "edge@10.0.0.1: Permission denied (publickey,keyboard-interactive).", ErrAuthRefused},
		{"auth, extension method", 255, "u@h: Permission denied (publickey-hostbound-v00@openssh.com).", ErrAuthRefused},
		{"auth, password retry", 255, "Permission denied, please try again.", ErrAuthRefused},
		{"rsync file permission is not auth", 255, "rsync: [generator] recv_generator: mkdir \"/b/x\" failed: Permission denied (13)", nil},
		{"local file permission is not auth", 255, "Load key \"/k\": Permission denied", nil},
		{"too many auth failures", 255, "Received disconnect from 10.0.0.1 port 22:2: Too many authentication failures", ErrAuthRefused},
		{"unknown ssh failure", 255, "kex_exchange_identification: read: Connection reset by peer", nil},
		{"remote command failed, not ssh", 1, "Permission denied", nil},
		{"success", 0, "", nil},
		{"rsync partial transfer", 23, "rsync: [sender] send_files failed to open \"/x\": Permission denied (13)", nil},
	}
	for _, tc := range texts {
		t.Run(tc.name, func(t *testing.T) {
			if got := ClassifySSHError(tc.code, tc.stderr); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestClassifyRunError(t *testing.T) {
	ee := &proc.ExitError{Step: "preflight", Command: "ssh", Code: 255, Stderr: "ssh: connect to host h port 22: Connection refused"}
	err := ClassifyRunError(fmt.Errorf("site x: %w", ee))
	if !errors.Is(err, ErrConnRefused) {
		t.Errorf("%v does not wrap ErrConnRefused", err)
	}
	var got *proc.ExitError
	if !errors.As(err, &got) || got != ee {
		t.Errorf("%v lost the ExitError", err)
	}
	if want := "connection refused: site x: preflight: ssh: exit 255: ssh: connect to host h port 22: Connection refused"; err.Error() != want {
		t.Errorf("text %q\nwant %q", err, want)
	}

	tests := []struct {
		name string
		err  *proc.ExitError
		want error // nil: returned unchanged
	}{
		{"rsync exit 12 after ssh failed", &proc.ExitError{Command: "rsync", Code: 12, Stderr: readTestdata(t, "ssh-stderr/host-key-changed.txt") +
			"rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]\nrsync error: error in rsync protocol data stream (code 12)"}, ErrHostKeyMismatch},
		{"rsync exit 255 after ssh failed", &proc.ExitError{Command: "rsync", Code: 255, Stderr: readTestdata(t, "ssh-stderr/rsync-conn-refused.txt")}, ErrConnRefused},
		{"rsync's own failure", &proc.ExitError{Command: "rsync", Code: 23, Stderr: "rsync: opendir \"/x\" failed: Permission denied (13)"}, nil},
		{"ssh exit 12 is the remote command's", &proc.ExitError{Command: "ssh", Code: 12, Stderr: "Connection refused"}, nil},
		{"remote exit 2", &proc.ExitError{Command: "ssh", Code: 2, Stderr: "Connection refused"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ClassifyRunError(tc.err)
			if tc.want == nil {
				if err != error(tc.err) {
					t.Errorf("changed to %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	if ClassifyRunError(nil) != nil {
		t.Error("nil changed")
	}
	plain := errors.New("boom")
	if ClassifyRunError(plain) != plain {
		t.Error("plain error changed")
	}
}

func TestIsPermanent(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{ErrHostKeyMismatch, true},
		{ErrHostKeyUnknown, true},
		{ErrAuthRefused, true},
		{fmt.Errorf("x: %w", ErrAuthRefused), true},
		{ErrInvalidConfig, true},
		{ErrInvalidPath, true},
		{ErrInvalidHostKey, true},
		{ErrRemoteRsync, true},
		{ErrConnLost, false},
		{ErrIOTimeout, false},
		{ErrConnRefused, false},
		{ErrConnTimeout, false},
		{ErrHostUnreachable, false},
		{proc.ErrTimeout, false},
		{errors.New("other"), false},
		{nil, false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.err), func(t *testing.T) {
			if got := IsPermanent(tc.err); got != tc.want {
				t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestClassifyRsyncFailures is the table behind a pull's retry decision:
// which rsync (and ssh) exits a later attempt may not meet.
func TestClassifyRsyncFailures(t *testing.T) {
	tests := []struct {
		name      string
		command   string
		code      int
		stderr    string // "@file": testdata/ssh-stderr/file
		want      error  // nil: no sentinel added
		transient bool
	}{
		// Real rsync 3.5 stderr, a connection cut mid-transfer by a proxy.
		{"cut, receiver noticed first", "rsync", 12, "@rsync-cut-12.txt", ErrConnLost, true},
		{"cut, ssh noticed first", "rsync", 255, "@rsync-cut-255.txt", ErrConnLost, true},
		{"ssh reset mid-run", "rsync", 255, "client_loop: send disconnect: Broken pipe", ErrConnLost, true},
		{"server alive timeout", "rsync", 255, "Timeout, server 10.0.0.1 not responding.", ErrConnLost, true},
		{"12 with no text", "rsync", 12, "", ErrConnLost, true},
		{"255 with unknown text", "rsync", 255, "something odd", ErrConnLost, true},
		{"io timeout", "rsync", 30, "[receiver] io timeout after 30 seconds -- exiting\nrsync error: timeout in data send/receive (code 30)", ErrIOTimeout, true},
		{"daemon timeout", "rsync", 35, "rsync error: timeout waiting for daemon connection (code 35)", ErrIOTimeout, true},
		{"connection refused", "rsync", 255, "@rsync-conn-refused.txt", ErrConnRefused, true},
		{"connect timeout", "rsync", 255, "ssh: connect to host 10.255.255.1 port 22: Connection timed out", ErrConnTimeout, true},
		{"unresolvable", "rsync", 255, "ssh: Could not resolve hostname edge: Temporary failure in name resolution", ErrHostUnreachable, true},
		{"host key changed", "rsync", 12, "@rsync-host-key-changed.txt", ErrHostKeyMismatch, false},
		{"host key unknown", "rsync", 255, "@host-key-unknown.txt", ErrHostKeyUnknown, false},
		{"auth refused", "rsync", 255, "@auth-publickey.txt", ErrAuthRefused, false},
		{"no rsync on the site (bash)", "rsync", 12, "@rsync-missing-bash.txt", ErrRemoteRsync, false},
		{"no rsync on the site (dash)", "rsync", 12, "@rsync-missing-dash.txt", ErrRemoteRsync, false},
		{"a file rsync may not read, then a cut", "rsync", 12, "rsync: [sender] send_files failed to open \"/srv/x\": Permission denied (13)\n@rsync-cut-12.txt", ErrConnLost, true},
		{"staging disk full", "rsync", 12, "rsync: [receiver] write failed on \"/b/x\": No space left on device (28)\nrsync error: error in rsync protocol data stream (code 12)", nil, false},
		{"missing remote folder", "rsync", 23, "@../rsync/stderr-23-missing-root.txt", nil, false},
		{"partial transfer", "rsync", 23, "@../rsync/stderr-23-sender-denied.txt", nil, false},
		{"vanished files", "rsync", 24, "@../rsync/stderr-24-vanished.txt", nil, false},
		{"file I/O", "rsync", 11, "rsync error: error in file IO (code 11)", nil, false},
		{"protocol mismatch", "rsync", 2, "protocol version mismatch -- is your shell clean?", nil, false},
		{"ssh: connection lost", "ssh", 255, "Connection to 10.0.0.1 closed by remote host.", ErrConnLost, true},
		{"ssh: unknown 255", "ssh", 255, "something odd", nil, false},
		{"ssh: remote exit 12", "ssh", 12, "error in rsync protocol data stream", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stderr := tc.stderr
			// "@file" (after an optional first line) is testdata.
			if i := strings.Index(stderr, "@"); i >= 0 && (i == 0 || stderr[i-1] == '\n') {
				stderr = stderr[:i] + readTestdata(t, "ssh-stderr/"+stderr[i+1:])
			}
			ee := &proc.ExitError{Step: "pull", Command: tc.command, Code: tc.code, Stderr: stderr}
			err := ClassifyRunError(ee)
			if tc.want == nil {
				if err != error(ee) {
					t.Errorf("got %v, want no sentinel", err)
				}
			} else if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			if got := IsTransient(err); got != tc.transient {
				t.Errorf("IsTransient = %v, want %v", got, tc.transient)
			}
			var back *proc.ExitError
			if !errors.As(err, &back) || back != ee {
				t.Errorf("the ExitError is lost from %v", err)
			}
		})
	}
	killed := &proc.ExitError{Command: "rsync", Code: -1, Signal: 9}
	if err := ClassifyRunError(killed); err != error(killed) || IsTransient(err) {
		t.Errorf("killed rsync: %v", err)
	}
	for _, err := range []error{nil, errors.New("boom"), proc.ErrTimeout, context.Canceled} {
		if IsTransient(err) {
			t.Errorf("IsTransient(%v) = true", err)
		}
	}
}
