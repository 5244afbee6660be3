// Package remote builds the commands Satoru runs against edge hosts (ssh,
// rsync over ssh, the preflight script) and parses what they print. The
// builders are pure functions from config to argv, table-tested without
// running anything; the few helpers that execute (ScanHostKeys, RunSSH,
// LocalToolVersion) go through proc.
//
// Everything that reaches the remote shell is built with Quote: ssh hands
// the remote side one string that the login shell parses, so every piece
// of data in it is single-quoted and can never be read as shell syntax.
package remote

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrInvalidPath means a target or temp path cannot be used remotely.
	ErrInvalidPath = errors.New("invalid remote path")
	// ErrInvalidConfig means an SSH config cannot be turned into a safe
	// command line. Like ErrInvalidPath it is permanent: retrying the same
	// config cannot help.
	ErrInvalidConfig = errors.New("invalid ssh config")
)

// Quote returns s as one POSIX shell word: always single-quoted, with each
// ' written as '\” (close, escaped quote, reopen). Inside single quotes
// nothing is special, so $, `, ;, \, newlines and globs stay literal.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// CommandLine quotes each argument and joins them with spaces: the string
// a remote POSIX shell splits back into exactly argv.
func CommandLine(argv ...string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}

// ValidatePath checks a path that will be used on the remote side: it must
// be absolute and free of NUL (which cannot cross argv at all) and of
// newlines and carriage returns (which break line-based tool output such
// as rsync's file lists and Satoru's own preflight report).
func ValidatePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty path", ErrInvalidPath)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("%w: path contains a NUL byte", ErrInvalidPath)
	case strings.ContainsAny(p, "\n\r"):
		return fmt.Errorf("%w: path %q contains a line break", ErrInvalidPath, p)
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%w: path %q is not absolute", ErrInvalidPath, p)
	}
	return nil
}
