package remote

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/satoru/satoru/shared/proc"
)

// Defaults for SSHConfig's zero values and the keepalive Satoru always
// sets: a dead peer is noticed within ServerAliveInterval*CountMax.
const (
	DefaultPort           = 22
	DefaultConnectTimeout = 10 * time.Second
	DefaultControlPersist = 60 * time.Second
	ServerAliveInterval   = 15 * time.Second
	ServerAliveCountMax   = 4
	// maxControlPath leaves room for the ".XXXXXXXXXXXXXXXX" suffix ssh
	// adds while creating the socket, within the 108-byte sun_path.
	maxControlPath = 90
)

// SSHConfig is how one site is reached.
type SSHConfig struct {
	Host string // name or IP; an IPv6 address may be bracketed
	Port int    // 0 means 22
	User string // required: never fall back to the local user's name
	// KeyPath is the client private key; empty leaves ssh its defaults.
	KeyPath string
	// KnownHostsFile holds the site's pinned key (required: host keys are
	// always checked strictly).
	KnownHostsFile string
	// HostKeyAlias is the name the key is pinned under in KnownHostsFile;
	// empty means ssh's default of host or [host]:port.
	HostKeyAlias string
	// ConnectTimeout bounds the TCP connect and banner exchange; zero
	// means DefaultConnectTimeout. ssh takes whole seconds, rounded up.
	ConnectTimeout time.Duration
	// ControlPath, when set, shares one master connection between every
	// ssh and rsync of a site job (ControlMaster=auto): the first command
	// opens it, later ones skip the handshake.
	ControlPath string
	// ControlPersist keeps an idle master open this long; zero means
	// DefaultControlPersist.
	ControlPersist time.Duration
}

// SSHArgs returns the argv after "ssh" that runs remoteCommand on c's host:
// no user or system ssh config, never a prompt, the host key checked
// strictly against c.KnownHostsFile only, then "--", the host and the
// remote command as one argument. remoteCommand is handed to the remote
// login shell as is: build it with CommandLine or Quote.
func SSHArgs(c SSHConfig, remoteCommand string) ([]string, error) {
	opts, host, err := sshOptions(c)
	if err != nil {
		return nil, err
	}
	if remoteCommand == "" {
		return nil, fmt.Errorf("%w: empty remote command", ErrInvalidConfig)
	}
	if strings.ContainsRune(remoteCommand, 0) {
		return nil, fmt.Errorf("%w: remote command contains a NUL byte", ErrInvalidConfig)
	}
	// "--" ends ssh's option parsing for good: ssh otherwise reads options
	// after the host too, so a command starting with "-" would be one.
	return append(opts, "--", host, remoteCommand), nil
}

// SSHCommandForRsync returns rsync's -e value: "ssh" and the same options
// as SSHArgs, without host and command (rsync appends those). rsync splits
// -e on spaces itself, so every option value must be a single plain word:
// sshOptions rejects whitespace, quotes and backslashes in values, which
// is what makes joining with spaces safe without any quoting.
func SSHCommandForRsync(c SSHConfig) (string, error) {
	opts, _, err := sshOptions(c)
	if err != nil {
		return "", err
	}
	return "ssh " + strings.Join(opts, " "), nil
}

// SSHControlArgs returns the argv after "ssh" that sends op ("check" or
// "exit") to c's master connection, e.g. to close it when a site job ends.
func SSHControlArgs(c SSHConfig, op string) ([]string, error) {
	if c.ControlPath == "" {
		return nil, fmt.Errorf("%w: no control path", ErrInvalidConfig)
	}
	if op != "check" && op != "exit" {
		return nil, fmt.Errorf("%w: control operation %q", ErrInvalidConfig, op)
	}
	opts, host, err := sshOptions(c)
	if err != nil {
		return nil, err
	}
	return append(opts, "-O", op, "--", host), nil
}

// sshOptions validates c and returns the options shared by every ssh
// invocation, and the normalised host.
func sshOptions(c SSHConfig) ([]string, string, error) {
	host, err := checkHost(c.Host)
	if err != nil {
		return nil, "", err
	}
	port := c.Port
	if port == 0 {
		port = DefaultPort
	}
	if port < 1 || port > 65535 {
		return nil, "", fmt.Errorf("%w: port %d out of range 1-65535", ErrInvalidConfig, c.Port)
	}
	if c.User == "" {
		return nil, "", fmt.Errorf("%w: user is required", ErrInvalidConfig)
	}
	if err := checkWord("user", c.User, false); err != nil {
		return nil, "", err
	}
	if strings.HasPrefix(c.User, "-") {
		return nil, "", fmt.Errorf("%w: user %q starts with '-'", ErrInvalidConfig, c.User)
	}
	if c.KnownHostsFile == "" {
		return nil, "", fmt.Errorf("%w: known_hosts file is required (host keys are always pinned)", ErrInvalidConfig)
	}
	if err := checkWord("known_hosts path", c.KnownHostsFile, false); err != nil {
		return nil, "", err
	}
	if err := checkWord("host key alias", c.HostKeyAlias, false); err != nil {
		return nil, "", err
	}
	if c.KeyPath != "" {
		if err := ValidateKeyPath(c.KeyPath); err != nil {
			return nil, "", err
		}
	}
	// ControlPath may use ssh's % tokens (%C, %h...), so % is allowed.
	if err := checkWord("control path", c.ControlPath, true); err != nil {
		return nil, "", err
	}
	if len(c.ControlPath) > maxControlPath && !strings.Contains(c.ControlPath, "%") {
		return nil, "", fmt.Errorf("%w: control path is %d bytes, over the %d a unix socket allows", ErrInvalidConfig, len(c.ControlPath), maxControlPath)
	}
	timeout := c.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}

	o := []string{
		"-F", "/dev/null", // ignore ~/.ssh/config and /etc/ssh/ssh_config
		"-o", "BatchMode=yes", // never prompt: there is nobody to answer
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + c.KnownHostsFile,
		"-o", "GlobalKnownHostsFile=/dev/null",
		// The pin is the whole truth: do not learn extra keys from the host.
		"-o", "UpdateHostKeys=no",
	}
	if c.HostKeyAlias != "" {
		o = append(o, "-o", "HostKeyAlias="+c.HostKeyAlias)
	}
	o = append(o,
		"-o", "ConnectTimeout="+strconv.Itoa(seconds(timeout)),
		"-o", "ServerAliveInterval="+strconv.Itoa(seconds(ServerAliveInterval)),
		"-o", "ServerAliveCountMax="+strconv.Itoa(ServerAliveCountMax),
		"-o", "PasswordAuthentication=no",
		"-o", "KbdInteractiveAuthentication=no",
	)
	if c.KeyPath != "" {
		o = append(o, "-o", "IdentitiesOnly=yes", "-i", c.KeyPath)
	}
	if c.ControlPath != "" {
		persist := c.ControlPersist
		if persist <= 0 {
			persist = DefaultControlPersist
		}
		o = append(o,
			"-o", "ControlMaster=auto",
			"-o", "ControlPath="+c.ControlPath,
			"-o", "ControlPersist="+strconv.Itoa(seconds(persist)),
		)
	}
	o = append(o, "-p", strconv.Itoa(port), "-l", c.User)
	return o, host, nil
}

// checkHost accepts a host name or IP address. A leading '-' would make
// the host an option; '@' would smuggle in a user; whitespace and quotes
// cannot cross rsync's -e splitting.
func checkHost(h string) (string, error) {
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	switch {
	case h == "":
		return "", fmt.Errorf("%w: host is required", ErrInvalidConfig)
	case strings.HasPrefix(h, "-"):
		return "", fmt.Errorf("%w: host %q starts with '-'", ErrInvalidConfig, h)
	case strings.ContainsAny(h, "@/"):
		return "", fmt.Errorf("%w: host %q contains '@' or '/'", ErrInvalidConfig, h)
	}
	// '%' is allowed for an IPv6 zone ("fe80::1%eth0") and checked below.
	if err := checkWord("host", h, true); err != nil {
		return "", err
	}
	if strings.ContainsAny(h, ":%") {
		// Only IPv6 addresses have colons or zones; "host:port" belongs
		// in Port.
		if _, err := netip.ParseAddr(h); err != nil {
			return "", fmt.Errorf("%w: host %q is neither a host name nor an IP address (a port belongs in Port)", ErrInvalidConfig, h)
		}
	}
	return h, nil
}

// checkWord rejects what cannot travel as one word through ssh's config
// parsing and rsync's -e splitting: whitespace, quotes, backslashes and
// control characters, and (unless allowed) '%', which ssh expands as a
// token in paths.
func checkWord(what, v string, allowPercent bool) error {
	for _, r := range v {
		switch {
		case unicode.IsSpace(r):
			return fmt.Errorf("%w: %s %q contains whitespace, which ssh options and rsync -e cannot carry", ErrInvalidConfig, what, v)
		case r == '\'' || r == '"' || r == '\\':
			return fmt.Errorf("%w: %s %q contains a quote or backslash, which ssh options and rsync -e cannot carry", ErrInvalidConfig, what, v)
		case unicode.IsControl(r):
			return fmt.Errorf("%w: %s %q contains a control character", ErrInvalidConfig, what, v)
		case r == '%' && !allowPercent:
			return fmt.Errorf("%w: %s %q contains '%%', which ssh would expand", ErrInvalidConfig, what, v)
		}
	}
	return nil
}

// ValidateKeyPath checks an ssh private key path (a site's ssh_key_path)
// as the ssh and rsync argv carry it: absolute (ssh would resolve a
// relative one against whatever folder the worker runs in), without NUL
// or line breaks, and free of whitespace, quotes and backslashes (which
// rsync -e cannot carry) and of '%' (which ssh expands in -i).
func ValidateKeyPath(p string) error {
	if err := ValidatePath(p); err != nil {
		return err
	}
	return checkWord("key path", p, false)
}

// seconds rounds d up to whole seconds, at least 1: ssh takes integers and
// a timeout of 0 would mean none.
func seconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	if s < 1 {
		return 1
	}
	return s
}

// SSHCmd builds, without running it, the proc.Cmd that runs remoteCommand
// over ssh. Callers set Stdout (to stream) or Timeout on it, run it with
// proc.Run and pass the error through ClassifyRunError.
func SSHCmd(c SSHConfig, step, remoteCommand string) (proc.Cmd, error) {
	args, err := SSHArgs(c, remoteCommand)
	if err != nil {
		return proc.Cmd{}, err
	}
	return proc.Cmd{Step: step, Path: "ssh", Args: args}, nil
}

// RunSSH runs remoteCommand on c's host, captures its stdout, and returns
// an error that wraps both the *proc.ExitError and, for ssh's own
// failures, the matching sentinel (ErrHostKeyMismatch, ErrConnRefused...).
func RunSSH(ctx context.Context, c SSHConfig, step, remoteCommand string, timeout time.Duration) (proc.Result, error) {
	cmd, err := SSHCmd(c, step, remoteCommand)
	if err != nil {
		return proc.Result{ExitCode: -1}, err
	}
	cmd.Timeout = timeout
	res, err := proc.Run(ctx, cmd)
	return res, ClassifyRunError(err)
}
