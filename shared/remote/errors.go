package remote

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/satoru/satoru/shared/proc"
)

// Errors ssh reports when it cannot run the remote command (exit 255).
// Their texts are written for the operator reading a job's error.
var (
	ErrHostKeyMismatch = errors.New("host key does not match the pinned key")
	ErrHostKeyUnknown  = errors.New("no pinned host key for this host")
	ErrAuthRefused     = errors.New("ssh authentication refused")
	ErrConnRefused     = errors.New("connection refused")
	ErrConnTimeout     = errors.New("connection timed out")
	ErrHostUnreachable = errors.New("host unreachable")
	// ErrConnLost means a connection that was up broke mid-run (reset,
	// closed by the network or the site, rsync's stream cut short).
	ErrConnLost = errors.New("connection lost")
	// ErrIOTimeout means rsync saw no data move within its --timeout
	// (exit 30), or no daemon greeting in time (exit 35).
	ErrIOTimeout = errors.New("no data moved within the I/O timeout")
	// ErrRemoteRsync means the remote rsync could not start or speak the
	// protocol: not installed, or a login shell that prints text.
	ErrRemoteRsync = errors.New("the remote rsync could not start (is rsync installed on the site, and does the login shell print nothing?)")
)

// sshFailures maps ssh's stderr to sentinels. Order matters: an unknown
// key also prints "Host key verification failed.", so the more specific
// unknown-key text is checked before the generic mismatch one. Texts are
// from OpenSSH 9.x (see testdata/ssh-stderr).
var sshFailures = []struct {
	err     error
	needles []string
	pattern *regexp.Regexp // matched as well as needles
}{
	{ErrHostKeyUnknown, []string{"host key is known for"}, nil}, // "No ED25519 host key is known for x and you have requested strict checking."
	{ErrHostKeyMismatch, []string{"REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed", "has changed and you have requested strict checking"}, nil},
	// ssh names the methods it tried: "u@h: Permission denied (publickey)."
	// A bare "Permission denied" is not enough: rsync prints "Permission
	// denied (13)" for a file it may not read or write, which no operator
	// fixes by touching the site's keys.
	{ErrAuthRefused, []string{"Too many authentication failures", "Permission denied, please try again"}, sshAuthDenied},
	{ErrConnRefused, []string{"Connection refused"}, nil},
	{ErrConnTimeout, []string{"Connection timed out", "timed out during banner exchange", "Operation timed out"}, nil},
	{ErrHostUnreachable, []string{"No route to host", "Network is unreachable", "Could not resolve hostname", "Name or service not known", "Temporary failure in name resolution"}, nil},
}

// ClassifySSHError maps a failed ssh run to one of the sentinels above, or
// returns nil when it is not one of ssh's own failures: ssh exits 255 for
// those, any other code is the remote command's. For rsync over ssh use
// ClassifyRunError, which knows rsync's codes.
func ClassifySSHError(exitCode int, stderr string) error {
	if exitCode != 255 {
		return nil
	}
	return matchSSHFailure(stderr)
}

// sshAuthDenied is ssh's refused login: the method list is lowercase
// names, commas and, for extensions, '@' and '.' ("publickey,
// keyboard-interactive", "publickey-hostbound-v00@openssh.com").
var sshAuthDenied = regexp.MustCompile(`Permission denied \([a-z][a-z0-9@.,-]*\)`)

func matchSSHFailure(stderr string) error {
	for _, f := range sshFailures {
		if containsAny(stderr, f.needles) || f.pattern != nil && f.pattern.MatchString(stderr) {
			return f.err
		}
	}
	return nil
}

// connLost are ssh's and rsync's words for a connection that broke after
// it was up (OpenSSH 9.x, rsync 3.x; see testdata/ssh-stderr/rsync-cut-*).
var connLost = []string{
	"Connection reset",                    // "kex_exchange_identification: read: Connection reset by peer"
	"Broken pipe",                         // "client_loop: send disconnect: Broken pipe"
	"Connection closed by",                // "Connection closed by 10.0.0.1 port 22"
	"closed by remote host",               // "ssh_exchange_identification: Connection closed by remote host"
	"Connection to ",                      // "Connection to h closed by remote host." / "... timed out"
	"not responding",                      // "Timeout, server h not responding." (ServerAliveInterval)
	"connection unexpectedly closed",      // rsync: "connection unexpectedly closed (2 bytes received so far)"
	"error in rsync protocol data stream", // rsync exit 12 from either side
}

// remoteRsyncFailures are rsync exit 12 texts that no retry fixes: the
// remote shell found no rsync (bash, dash; see testdata/ssh-stderr), or
// printed text into the protocol stream.
var remoteRsyncFailures = []string{
	"command not found", ": not found", "protocol version mismatch", "is your shell clean",
}

// localFailures are the receiving side's own errors that can surface as
// a broken stream (the local rsync died of them): no retry fixes them.
var localFailures = []string{"No space left on device", "Disk quota exceeded"}

// ClassifyRunError adds the matching sentinel to an error from running ssh
// (or rsync over ssh) with proc.Run, keeping the original in the chain:
// errors.Is finds the sentinel, errors.As the *proc.ExitError. Other
// errors are returned unchanged.
//
// ssh exits 255 for its own failures. rsync passes ssh's stderr through
// and exits 255 or, depending on which side notices the dead connection
// first, 12 (protocol data stream): both are ssh's sentinel when its text
// names one, ErrRemoteRsync when the remote rsync never ran, and
// otherwise ErrConnLost, since the stream ended early. rsync's 30 and 35
// are ErrIOTimeout. Other codes are the remote command's or rsync's own
// (e.g. 23, a missing remote folder) and get no sentinel.
func ClassifyRunError(err error) error {
	var ee *proc.ExitError
	if err == nil || !errors.As(err, &ee) || ee.Signal != 0 {
		return err
	}
	var c error
	switch rsync := ee.Command == "rsync"; {
	case ee.Code == 255 || rsync && ee.Code == 12:
		c = matchSSHFailure(ee.Stderr)
		switch {
		case c != nil:
		case containsAny(ee.Stderr, localFailures):
		case rsync && containsAny(ee.Stderr, remoteRsyncFailures):
			c = ErrRemoteRsync
		case rsync || containsAny(ee.Stderr, connLost):
			c = ErrConnLost
		}
	case rsync && (ee.Code == 30 || ee.Code == 35):
		c = ErrIOTimeout
	}
	if c != nil {
		return fmt.Errorf("%w: %w", c, err)
	}
	return err
}

func containsAny(s string, needles []string) bool {
	for _, n := range needles {
		if strings.Contains(s, n) {
			return true
		}
	}
	return false
}

// IsPermanent reports whether retrying cannot help: a host key problem or
// refused authentication needs an operator, and so does a config or path
// that does not validate, or a site without a working rsync. Refused
// connections, timeouts and unreachable hosts are transient (the site may
// be rebooting or offline).
func IsPermanent(err error) bool {
	for _, p := range []error{ErrHostKeyMismatch, ErrHostKeyUnknown, ErrAuthRefused, ErrInvalidConfig, ErrInvalidPath, ErrInvalidHostKey, ErrRemoteRsync} {
		if errors.Is(err, p) {
			return true
		}
	}
	return false
}

// IsTransient reports whether err, as ClassifyRunError returns it, may pass
// on its own: the site refused or did not answer the connection, or the
// connection broke or stalled mid-run. Anything else, unclassified errors
// included, is not: a retry would meet the same failure.
func IsTransient(err error) bool {
	if IsPermanent(err) {
		return false
	}
	for _, t := range []error{ErrConnRefused, ErrConnTimeout, ErrHostUnreachable, ErrConnLost, ErrIOTimeout} {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
