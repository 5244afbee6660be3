// Package preflight checks that a site can be backed up: local tools, the
// pinned host key, the SSH connection, remote tools and every target, all
// remote checks in one SSH round trip.
package preflight

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/sitecheck"
)

// Step names of preflight events.
const (
	StepLocalTool  = "local_tool"
	StepHostKey    = "host_key"
	StepSSH        = "ssh_connect"
	StepRemoteTool = "remote_tool"
	StepTarget     = "target"
	StepTmpDir     = "remote_tmp_dir"
	StepSite       = "site"
	StepSSHKey     = "ssh_key"
	StepReused     = "preflight_reused"
)

// LocalTool is a tool Satoru runs on its own host.
type LocalTool struct {
	Name string
	Path string // resolved path, or "" when not found
}

// Checker runs preflights. Its zero value is not usable.
type Checker struct {
	Tools          []LocalTool
	SSHPath        string
	KnownHostsDir  string
	ConnectTimeout time.Duration
	RemoteTmpDir   string

	// Reuse is how long a site's passed remote checks stand for a backup
	// that asks for them (Input.Reuse) with the same settings; 0 = never.
	Reuse time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time

	// Local tool versions are cached briefly: asking four tools for their
	// version on every job costs more than the check is worth.
	mu       sync.Mutex
	versions map[string]toolVersion
	// passed is when each site last passed every check, and under which
	// settings (Digest).
	passed map[string]passMark
}

type passMark struct {
	digest string
	at     time.Time
}

func (c *Checker) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Digest names everything a passed preflight vouches for: where and how
// ssh connects, the pinned key, the remote temp folder and every target.
// Any change makes the next backup check everything again.
func (c *Checker) Digest(in Input) string {
	h := sha256.New()
	put := func(v string) { h.Write([]byte(v)); h.Write([]byte{0}) }
	hostKey := in.Site.HostKey
	if hostKey == "" {
		hostKey = in.Status.LearnedHostKey
	}
	for _, v := range []string{in.Site.UUID, in.Site.Host, strconv.Itoa(in.Site.Port), in.Site.User, in.Site.SSHKeyPath, hostKey, c.RemoteTmpDir} {
		put(v)
	}
	for _, t := range in.Targets {
		put(t.TargetHash)
		put(string(t.Mode))
		put(t.Path)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Passed records that in's site passed every check just now, so backups
// within Reuse may skip the remote round trip.
func (c *Checker) Passed(in Input) {
	if c.Reuse <= 0 {
		return
	}
	mark := passMark{digest: c.Digest(in), at: c.now()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.passed == nil {
		c.passed = map[string]passMark{}
	}
	c.passed[in.Site.UUID] = mark
}

// Forget drops a site's passed checks: something failed since.
func (c *Checker) Forget(siteUUID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.passed, siteUUID)
}

// passedAgo is how long ago in's site passed every check under the same
// settings, when that is within Reuse.
func (c *Checker) passedAgo(in Input) (time.Duration, bool) {
	if !in.Reuse || c.Reuse <= 0 {
		return 0, false
	}
	c.mu.Lock()
	mark, ok := c.passed[in.Site.UUID]
	c.mu.Unlock()
	if !ok {
		return 0, false
	}
	ago := c.now().Sub(mark.at)
	if ago < 0 || ago >= c.Reuse || mark.digest != c.Digest(in) {
		return 0, false
	}
	return ago, true
}

type toolVersion struct {
	version string
	at      time.Time
}

// toolVersionTTL is how long a local tool's version is trusted.
const toolVersionTTL = 5 * time.Minute

func (c *Checker) toolVersion(ctx context.Context, t LocalTool) (string, error) {
	c.mu.Lock()
	v, ok := c.versions[t.Path]
	c.mu.Unlock()
	if ok && time.Since(v.at) < toolVersionTTL {
		return v.version, nil
	}
	version, err := remote.LocalToolVersion(ctx, t.Name, t.Path)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	if c.versions == nil {
		c.versions = map[string]toolVersion{}
	}
	c.versions[t.Path] = toolVersion{version: version, at: time.Now()}
	c.mu.Unlock()
	return version, nil
}

// Input is what a preflight checks.
type Input struct {
	Site    domain.Site
	Status  domain.SiteStatus
	Targets []domain.Target
	// ControlPath, when set, makes the preflight's ssh the job's master
	// connection, which later pulls reuse.
	ControlPath string
	// Reuse lets a site that passed every check within Checker.Reuse,
	// with the same settings, skip the remote checks: the pull that
	// follows connects with the same pinned key and fails on the same
	// problems, and a failed pull checks again (see Passed, Forget).
	Reuse bool
}

// Result is a preflight's outcome: one event per check, in order.
type Result struct {
	Events []domain.JobEvent
	// Failures are every failed check's message; TargetFailures are the
	// ones about a single target, by target hash. A backup skips those
	// targets and pulls the rest; any other failure stops it.
	Failures       []string
	TargetFailures map[string]string
	// LearnedHostKey is set when trust-on-first-use recorded a key.
	LearnedHostKey string
	// SSH is how the site was reached, for the steps that follow.
	SSH remote.SSHConfig
	// Transient says the site could not be reached for a reason that may
	// pass (connection refused or timed out, network unreachable), so the
	// job is worth another attempt; a host key or login refusal is not.
	Transient bool
	// Reused says the remote checks were skipped: the site passed them
	// moments ago (Input.Reuse). No ssh ran; the pull opens the master.
	Reused bool
}

// OK reports whether every check passed.
func (r *Result) OK() bool { return len(r.Failures) == 0 }

// Error summarises the failures.
func (r *Result) Error() string { return strings.Join(r.Failures, "; ") }

func (r *Result) ok(step, hash, msg string, data map[string]any) {
	r.Events = append(r.Events, domain.JobEvent{Step: step, Level: domain.LevelInfo, TargetHash: hash, Message: msg, Data: data})
}

func (r *Result) fail(step, hash, msg string, data map[string]any) {
	r.Events = append(r.Events, domain.JobEvent{Step: step, Level: domain.LevelError, TargetHash: hash, Message: msg, Data: data})
	r.Failures = append(r.Failures, msg)
	if hash != "" {
		if r.TargetFailures == nil {
			r.TargetFailures = map[string]string{}
		}
		r.TargetFailures[hash] = msg
	}
}

// SiteOK reports whether every check that is not about one target passed.
func (r *Result) SiteOK() bool { return len(r.Failures) == len(r.TargetFailures) }

// Run checks everything and reports each check; it stops early only when
// a later check cannot run (no host key, no connection).
func (c *Checker) Run(ctx context.Context, in Input) Result {
	var res Result
	c.checkLocalTools(ctx, &res)

	// The site was read from the store, which the API does not guard:
	// its fields meet the API's rules again before anything runs with them.
	site := in.Site
	if err := sitecheck.Validate(&site); err != nil {
		res.fail(StepSite, "", fmt.Sprintf("site %s as stored breaks the API's rules, nothing was run: %v (correct it with PATCH /api/v1/sites/%s)",
			in.Site.UUID, err, in.Site.UUID), nil)
		return res
	}
	if in.Site.SSHKeyPath != "" {
		if msg := checkKeyFile(in.Site.SSHKeyPath); msg != "" {
			res.fail(StepSSHKey, "", msg, nil)
			return res
		}
	}

	key, err := c.hostKey(ctx, in, &res)
	if err != nil {
		return res
	}
	knownHosts, err := c.writeKnownHosts(in.Site.UUID, key)
	if err != nil {
		res.fail(StepHostKey, "", fmt.Sprintf("host key: %v", err), nil)
		return res
	}
	res.SSH = c.SSHConfig(in.Site, knownHosts)
	res.SSH.ControlPath = in.ControlPath
	if ago, ok := c.passedAgo(in); ok {
		res.Reused = true
		res.ok(StepReused, "", fmt.Sprintf("remote checks skipped: the site passed every check %s ago with the same settings (preflight_reuse_seconds %d); the pull verifies the pinned host key",
			ago.Round(time.Second), int(c.Reuse/time.Second)), map[string]any{"passed_seconds_ago": ago.Seconds()})
		return res
	}
	c.checkRemote(ctx, in, res.SSH, &res)
	return res
}

// checkKeyFile makes sure the site's ssh key is a regular file this
// process can read, before ssh says more about it than it should. A
// missing file and an unreadable one get the same answer: job events are
// visible to API clients, and the difference would tell them which files
// exist on this host.
func checkKeyFile(path string) string {
	f, err := os.Open(path)
	if err == nil {
		fi, serr := f.Stat()
		f.Close()
		if serr == nil && fi.Mode().IsRegular() {
			return ""
		}
	}
	return keyFileMessage(path)
}

func keyFileMessage(path string) string {
	return fmt.Sprintf("ssh key %s cannot be used: it is missing, not a regular file, or not readable by Satoru's user (uid %d); "+
		"check ssh_key_path and the file's owner and mode (0600, owned by that user)", path, os.Getuid())
}

func (c *Checker) checkLocalTools(ctx context.Context, res *Result) {
	for _, t := range c.Tools {
		if t.Path == "" {
			res.fail(StepLocalTool, "", fmt.Sprintf("local tool %s: not found on this host", t.Name), map[string]any{"tool": t.Name})
			continue
		}
		v, err := c.toolVersion(ctx, t)
		if err != nil {
			res.fail(StepLocalTool, "", fmt.Sprintf("local tool %s (%s): %v", t.Name, t.Path, err), map[string]any{"tool": t.Name, "path": t.Path})
			continue
		}
		res.ok(StepLocalTool, "", fmt.Sprintf("local tool %s: %s", t.Name, v), map[string]any{"tool": t.Name, "path": t.Path, "version": v})
	}
}

// errNoKey stops a preflight that has no host key to pin.
var errNoKey = errors.New("no host key")

// hostKey returns the key to pin: the site's own, the one learned on first
// use, or (trust-on-first-use only) the one scanned now.
func (c *Checker) hostKey(ctx context.Context, in Input, res *Result) (remote.HostKey, error) {
	pinned := in.Site.HostKey
	source := "pinned"
	if pinned == "" && in.Status.LearnedHostKey != "" {
		pinned, source = in.Status.LearnedHostKey, "learned on first use"
	}
	if pinned != "" {
		k, err := remote.ParseHostKey(pinned)
		if err != nil {
			res.fail(StepHostKey, "", fmt.Sprintf("host key: the site's %s key does not parse: %v", source, err), nil)
			return remote.HostKey{}, err
		}
		res.ok(StepHostKey, "", fmt.Sprintf("host key %s %s (%s)", k.Type, k.Fingerprint(), source),
			map[string]any{"type": k.Type, "fingerprint": k.Fingerprint(), "source": source})
		return k, nil
	}
	keys, err := remote.ScanHostKeys(ctx, in.Site.Host, in.Site.Port, c.ConnectTimeout)
	if err != nil || len(keys) == 0 {
		msg := fmt.Sprintf("host key: the site has no pinned host key and none could be scanned from %s port %d", in.Site.Host, in.Site.Port)
		if err != nil {
			msg += ": " + err.Error()
		}
		res.fail(StepHostKey, "", msg, nil)
		return remote.HostKey{}, errNoKey
	}
	k := keys[0]
	line := k.Type + " " + k.Base64
	if in.Site.TrustOnFirstUse {
		res.LearnedHostKey = line
		res.ok(StepHostKey, "", fmt.Sprintf("host key %s %s recorded on first use", k.Type, k.Fingerprint()),
			map[string]any{"type": k.Type, "fingerprint": k.Fingerprint(), "source": "trust on first use", "host_key": line})
		return k, nil
	}
	res.fail(StepHostKey, "", fmt.Sprintf(
		"host key: the site has no pinned host key; %s:%d offers %s %s. Check that fingerprint out of band, then pin it: "+
			`PATCH /api/v1/sites/%s {"host_key": %q}`+" (or register the site with trust_on_first_use)",
		in.Site.Host, in.Site.Port, k.Type, k.Fingerprint(), in.Site.UUID, line),
		map[string]any{"type": k.Type, "fingerprint": k.Fingerprint(), "host_key": line})
	return remote.HostKey{}, errNoKey
}

// KnownHostsPath is where a site's pinned key is written for ssh.
func KnownHostsPath(dir, siteUUID string) string { return filepath.Join(dir, siteUUID+".known_hosts") }

// HostKeyAlias is the name a site's key is pinned under, whatever its
// address, so a host or port change cannot match another site's key.
func HostKeyAlias(siteUUID string) string { return "satoru-" + siteUUID }

func (c *Checker) writeKnownHosts(siteUUID string, k remote.HostKey) (string, error) {
	if err := os.MkdirAll(c.KnownHostsDir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", c.KnownHostsDir, err)
	}
	path := KnownHostsPath(c.KnownHostsDir, siteUUID)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(k.KnownHostsLine(HostKeyAlias(siteUUID))+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

// SSHConfig is how a site is reached.
func (c *Checker) SSHConfig(site domain.Site, knownHosts string) remote.SSHConfig {
	return remote.SSHConfig{
		Host:           site.Host,
		Port:           site.Port,
		User:           site.User,
		KeyPath:        site.SSHKeyPath,
		KnownHostsFile: knownHosts,
		HostKeyAlias:   HostKeyAlias(site.UUID),
		ConnectTimeout: c.ConnectTimeout,
	}
}

func (c *Checker) checkRemote(ctx context.Context, in Input, sshc remote.SSHConfig, res *Result) {
	pts := make([]remote.PreflightTarget, len(in.Targets))
	for i, t := range in.Targets {
		pts[i] = remote.PreflightTarget{Index: i, Mode: t.Mode, Path: t.Path}
	}
	cmdline, err := remote.PreflightCommand(pts, c.RemoteTmpDir)
	if err != nil {
		res.fail(StepSSH, "", fmt.Sprintf("build remote checks: %v", err), nil)
		return
	}
	args, err := remote.SSHArgs(sshc, cmdline)
	if err != nil {
		res.fail(StepSSH, "", fmt.Sprintf("ssh: %v", err), nil)
		return
	}
	dest := fmt.Sprintf("%s@%s:%d", in.Site.User, in.Site.Host, in.Site.Port)
	out, err := proc.Run(ctx, proc.Cmd{Step: "preflight", Path: c.SSHPath, Args: args, Timeout: c.ConnectTimeout + time.Minute})
	if err != nil {
		var ee *proc.ExitError
		if errors.As(err, &ee) && ee.Code == 255 {
			reason := "ssh failed"
			switch cerr := remote.ClassifySSHError(ee.Code, ee.Stderr); {
			case errors.Is(cerr, remote.ErrHostKeyMismatch):
				reason = "the host key does not match the pinned key (possible man-in-the-middle, or the host was reinstalled; re-pin only after checking)"
			case cerr != nil:
				reason = cerr.Error()
				res.Transient = !remote.IsPermanent(cerr)
			}
			res.fail(StepSSH, "", fmt.Sprintf("ssh %s: %s: %s", dest, reason, ee.Stderr), map[string]any{"exit_code": ee.Code})
			return
		}
		res.fail(StepSSH, "", fmt.Sprintf("ssh %s: %v", dest, err), nil)
		return
	}
	res.ok(StepSSH, "", fmt.Sprintf("ssh %s: connected, host key verified", dest), nil)
	rep, err := remote.ParsePreflight(out.Stdout)
	if err != nil {
		res.fail(StepSSH, "", fmt.Sprintf("remote checks on %s: %v", dest, err), nil)
		return
	}
	for _, t := range rep.Tools {
		if t.OK {
			res.ok(StepRemoteTool, "", fmt.Sprintf("remote tool %s: %s", t.Name, t.Version), map[string]any{"tool": t.Name, "version": t.Version})
		} else {
			res.fail(StepRemoteTool, "", fmt.Sprintf("remote tool %s: not found on %s", t.Name, dest), map[string]any{"tool": t.Name})
		}
	}
	if rep.TmpDirOK != nil {
		if *rep.TmpDirOK {
			res.ok(StepTmpDir, "", fmt.Sprintf("remote temp folder %s is writable", c.RemoteTmpDir), nil)
		} else {
			res.fail(StepTmpDir, "", fmt.Sprintf("remote temp folder %s is not writable (needed for sqlite dumps)", c.RemoteTmpDir), nil)
		}
	}
	for _, tc := range rep.Targets {
		if tc.Index < 0 || tc.Index >= len(in.Targets) {
			continue
		}
		t := in.Targets[tc.Index]
		data := map[string]any{"mode": string(t.Mode), "path": t.Path}
		if tc.OK {
			res.ok(StepTarget, t.TargetHash, fmt.Sprintf("target %s %s (%s): ok", t.TargetHash, t.Path, t.Mode), data)
		} else {
			data["problem"] = tc.Problem
			res.fail(StepTarget, t.TargetHash, fmt.Sprintf("target %s %s (%s): %s", t.TargetHash, t.Path, t.Mode, problemText(tc.Problem)), data)
		}
	}
}

func problemText(p string) string {
	switch p {
	case "missing":
		return "path does not exist"
	case "not_a_directory":
		return "path is not a directory"
	case "not_a_file":
		return "path is not a regular file"
	case "not_readable":
		return "path is not readable by the ssh user"
	case "tmp_not_writable":
		return "remote temp folder is not writable"
	}
	return p
}
