package puller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/remote"
)

// A site's ssh master connection is shared by the jobs of that site: the
// backup's preflight opens it (ControlMaster=auto), its pulls run over it,
// and it stays up for ControlPersist after the last session, so a job of
// the same site soon after (preflight then backup, a rerun, a restore)
// skips the ssh handshake. The socket's name is a digest of everything
// that decides where and how ssh connects, so a changed host, port, user,
// key or pinned host key never reuses a connection made under the old
// settings. A job that fails closes it (it may be what broke); the
// service closes every one it opened when it stops.

// masterExitTimeout bounds one `ssh -O exit`.
const masterExitTimeout = 10 * time.Second

// masterPath is the site's master socket path (0700 folder).
func (p *Puller) masterPath(site domain.Site, status domain.SiteStatus) (string, error) {
	hostKey := site.HostKey
	if hostKey == "" {
		hostKey = status.LearnedHostKey
	}
	h := sha256.New()
	for _, f := range []string{site.UUID, site.Host, strconv.Itoa(site.Port), site.User, site.SSHKeyPath, hostKey} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	name := hex.EncodeToString(h.Sum(nil)[:8])
	dir := p.Backup.ControlDir
	// Unix socket paths are short; ssh adds a temporary suffix too.
	if dir == "" || len(dir)+1+len(name) > 80 {
		var err error
		if dir, err = p.shortControlDir(); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("ssh control folder %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("ssh control folder %s: %w", dir, err)
	}
	return filepath.Join(dir, name), nil
}

func (p *Puller) shortControlDir() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tmpControlDir == "" {
		d, err := os.MkdirTemp("", "satoru-ssh-")
		if err != nil {
			return "", fmt.Errorf("ssh control folder: %w", err)
		}
		p.tmpControlDir = d
	}
	return p.tmpControlDir, nil
}

// releaseMaster ends a job's use of its site master: closed when broken,
// otherwise remembered so closeMasters can end it.
func (p *Puller) releaseMaster(c remote.SSHConfig, broken bool) {
	if c.ControlPath == "" {
		return
	}
	p.mu.Lock()
	if broken {
		delete(p.masters, c.ControlPath)
	} else {
		if p.masters == nil {
			p.masters = map[string]remote.SSHConfig{}
		}
		p.masters[c.ControlPath] = c
	}
	p.mu.Unlock()
	if broken {
		p.exitMaster(c)
	}
}

// closeMasters ends every master this puller kept open.
func (p *Puller) closeMasters() {
	p.mu.Lock()
	open := p.masters
	p.masters = nil
	p.mu.Unlock()
	for _, c := range open {
		p.exitMaster(c)
	}
}

// exitMaster asks a master to exit (it may have expired already) and
// removes its socket.
func (p *Puller) exitMaster(c remote.SSHConfig) {
	defer os.Remove(c.ControlPath)
	if _, err := os.Stat(c.ControlPath); err != nil || p.Checker == nil {
		return
	}
	args, err := remote.SSHControlArgs(c, "exit")
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), masterExitTimeout)
	defer cancel()
	// Best effort: a master that does not answer exits by ControlPersist,
	// and its socket goes either way (the deferred Remove).
	_, _ = proc.Run(ctx, proc.Cmd{Step: "ssh master exit", Path: p.Checker.SSHPath, Args: args})
}
