package remote

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/satoru/satoru/shared/proc"
)

// ErrNoHostKeys means ssh-keyscan got no key from the host.
var ErrNoHostKeys = errors.New("no host keys")

// scanTypes are the key types asked for: one connection each, so the
// rarely useful security-key types are left out.
const scanTypes = "ed25519,ecdsa,rsa"

// ScanHostKeys asks host:port for its host keys with ssh-keyscan, best
// first (ed25519, then ECDSA, then RSA). It is for trust-on-first-use and
// for showing an operator the fingerprint to pin; it proves nothing about
// who answered.
func ScanHostKeys(ctx context.Context, host string, port int, timeout time.Duration) ([]HostKey, error) {
	h, err := checkHost(host)
	if err != nil {
		return nil, err
	}
	if port == 0 {
		port = DefaultPort
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("%w: port %d out of range 1-65535", ErrInvalidConfig, port)
	}
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	secs := seconds(timeout)
	res, err := proc.Run(ctx, proc.Cmd{
		Step: "keyscan",
		Path: "ssh-keyscan",
		Args: []string{"-p", strconv.Itoa(port), "-T", strconv.Itoa(secs), "-t", scanTypes, "--", h},
		// -T bounds each connection; one per type, plus slack.
		Timeout: time.Duration(3*secs+5) * time.Second,
	})
	if err != nil && ctx.Err() != nil {
		return nil, err
	}
	// ssh-keyscan exits 1 when it got nothing; the keys, if any, decide.
	keys, perr := ParseHostKeys(string(res.Stdout))
	if perr != nil {
		return nil, fmt.Errorf("keyscan %s port %d: %w", h, port, perr)
	}
	if len(keys) == 0 {
		if err != nil {
			return nil, fmt.Errorf("keyscan %s port %d: %w: %w", h, port, ErrNoHostKeys, err)
		}
		return nil, fmt.Errorf("keyscan %s port %d: %w", h, port, ErrNoHostKeys)
	}
	sort.SliceStable(keys, func(i, j int) bool { return keyTypeRank(keys[i].Type) < keyTypeRank(keys[j].Type) })
	return keys, nil
}

// LocalToolVersion runs the tool at path (or name, looked up in PATH, when
// path is empty) and returns the first line of its version output, to
// prove the tool runs and to record which version did the work.
func LocalToolVersion(ctx context.Context, name, path string) (string, error) {
	if path == "" {
		path = name
	}
	args := []string{"--version"}
	switch name {
	case "ssh":
		args = []string{"-V"} // prints to stderr
	case "restic":
		args = []string{"version"}
	}
	res, err := proc.Run(ctx, proc.Cmd{Step: name + " version", Path: path, Args: args, Timeout: 30 * time.Second})
	if err != nil {
		return "", err
	}
	for _, out := range []string{string(res.Stdout), res.Stderr} {
		for _, line := range strings.Split(out, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				return line, nil
			}
		}
	}
	return "", fmt.Errorf("%s: no version output", name)
}
