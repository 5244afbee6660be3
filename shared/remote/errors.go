package remote

import (
	"errors"
	"fmt"
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
)

// sshFailures maps ssh's stderr to sentinels. Order matters: an unknown
// key also prints "Host key verification failed.", so the more specific
// unknown-key text is checked before the generic mismatch one. Texts are
// from OpenSSH 9.x (see testdata/ssh-stderr).
var sshFailures = []struct {
	err     error
	needles []string
}{
	{ErrHostKeyUnknown, []string{"host key is known for"}}, // "No ED25519 host key is known for x and you have requested strict checking."
	{ErrHostKeyMismatch, []string{"REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed", "has changed and you have requested strict checking"}},
	{ErrAuthRefused, []string{"Permission denied", "Too many authentication failures"}},
	{ErrConnRefused, []string{"Connection refused"}},
	{ErrConnTimeout, []string{"Connection timed out", "timed out during banner exchange", "Operation timed out"}},
	{ErrHostUnreachable, []string{"No route to host", "Network is unreachable", "Could not resolve hostname", "Name or service not known", "Temporary failure in name resolution"}},
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

func matchSSHFailure(stderr string) error {
	for _, f := range sshFailures {
		for _, n := range f.needles {
			if strings.Contains(stderr, n) {
				return f.err
			}
		}
	}
	return nil
}

// ClassifyRunError adds the matching sentinel to an error from running ssh
// (or rsync over ssh) with proc.Run, keeping the original in the chain:
// errors.Is finds the sentinel, errors.As the *proc.ExitError. Other
// errors are returned unchanged.
//
// rsync passes ssh's stderr through and exits 255 or, depending on which
// side notices the dead connection first, 12 (protocol data stream); both
// are classified. Other rsync codes are rsync's own.
func ClassifyRunError(err error) error {
	var ee *proc.ExitError
	if err == nil || !errors.As(err, &ee) {
		return err
	}
	var c error
	switch {
	case ee.Code == 255:
		c = matchSSHFailure(ee.Stderr)
	case ee.Command == "rsync" && ee.Code == 12:
		c = matchSSHFailure(ee.Stderr)
	}
	if c != nil {
		return fmt.Errorf("%w: %w", c, err)
	}
	return err
}

// IsPermanent reports whether retrying cannot help: a host key problem or
// refused authentication needs an operator, and so does a config or path
// that does not validate. Refused connections, timeouts and unreachable
// hosts are transient (the site may be rebooting or offline).
func IsPermanent(err error) bool {
	for _, p := range []error{ErrHostKeyMismatch, ErrHostKeyUnknown, ErrAuthRefused, ErrInvalidConfig, ErrInvalidPath, ErrInvalidHostKey} {
		if errors.Is(err, p) {
			return true
		}
	}
	return false
}
