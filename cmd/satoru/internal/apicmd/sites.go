package apicmd

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/client"
	"github.com/satoru/satoru/shared/domain"
)

func (r *runner) sitesAdd(args []string) error {
	in := client.SiteInput{}
	var dirs, dbs, excludes stringList
	fs := r.newFlags()
	fs.StringVar(&in.Host, "host", "", "edge host name or address")
	fs.IntVar(&in.Port, "port", 22, "ssh port")
	fs.StringVar(&in.User, "user", "", "ssh user")
	fs.StringVar(&in.SSHKeyPath, "ssh-key", "", "private key path on the Satoru host")
	fs.StringVar(&in.HostKey, "host-key", "", `pinned host key "TYPE BASE64"`)
	fs.BoolVar(&in.TrustOnFirstUse, "trust-on-first-use", false, "pin the first host key seen")
	fs.IntVar(&in.BandwidthLimitKbps, "bwlimit", 0, "rsync bandwidth limit in KiB/s (0 = none)")
	fs.Var(&dirs, "dir", "directory target (repeatable)")
	fs.Var(&dbs, "sqlite", "SQLite database target (repeatable)")
	fs.Var(&excludes, "exclude", "rsync exclude pattern for the --dir targets (repeatable)")
	pos, err := parse(fs, sitesHelp, args, "NAME")
	if err != nil {
		return err
	}
	in.Name = pos[0]
	switch {
	case in.Host == "":
		return usagef(sitesHelp, "%s: missing --host", r.cmd)
	case in.User == "":
		return usagef(sitesHelp, "%s: missing --user", r.cmd)
	case len(excludes) > 0 && len(dirs) == 0:
		return usagef(sitesHelp, "%s: --exclude needs a --dir target (SQLite targets take no excludes)", r.cmd)
	}
	for _, d := range dirs {
		in.Targets = append(in.Targets, client.TargetInput{Mode: domain.ModeDirectory, Path: d, Excludes: excludes})
	}
	for _, d := range dbs {
		in.Targets = append(in.Targets, client.TargetInput{Mode: domain.ModeSQLiteDump, Path: d})
	}
	if err := r.connect(); err != nil {
		return err
	}
	site, err := r.api.CreateSite(r.ctx, in)
	if err != nil {
		return fmt.Errorf("add site %q: %w", clean(in.Name), err)
	}
	if r.flags.json {
		return printJSON(r.stdout, site.Raw())
	}
	fmt.Fprintf(r.stdout, "added site %s (uuid %s) with %d target(s)\n", clean(site.Name), site.UUID, len(site.Targets))
	if len(site.Targets) > 0 {
		t := newTable(r.stdout, "TARGET_HASH", "MODE", "PATH", "EXCLUDES")
		for _, tg := range site.Targets {
			t.row(tg.TargetHash, string(tg.Mode), tg.Path, strings.Join(tg.Excludes, " "))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if site.HostKey == "" && !site.TrustOnFirstUse {
		fmt.Fprintf(r.stdout, "note: no --host-key and no --trust-on-first-use: preflight will refuse the site and print the key's fingerprint to pin\n")
	}
	return nil
}

func (r *runner) sitesList(args []string) error {
	if _, err := r.connectArgs(r.newFlags(), sitesHelp, args); err != nil {
		return err
	}
	list, err := r.api.ListSites(r.ctx)
	if err != nil {
		return fmt.Errorf("list sites: %w", err)
	}
	if r.flags.json {
		return printJSON(r.stdout, list.Raw())
	}
	return writeSites(r.stdout, list.Sites, r.now())
}

// writeSites is the sites table.
func writeSites(w io.Writer, sites []domain.SiteView, now time.Time) error {
	if len(sites) == 0 {
		_, err := fmt.Fprintln(w, "no sites registered (add one with: satoru sites add)")
		return err
	}
	t := newTable(w, "NAME", "UUID", "HOST", "HEALTH", "LAST SUCCESS", "LAST JOB")
	for _, s := range sites {
		health := string(s.Status.Health.Status)
		if s.Policy != nil && s.Policy.Paused {
			health += " (paused)"
		}
		t.row(s.Name, s.UUID, sshAddr(s.Site), health,
			agoPtr(s.Status.LastSuccessAt, now), orDash(s.Status.LastJobID))
	}
	return t.flush()
}

// sshAddr is user@host:port ([v6]:port for IPv6).
func sshAddr(s domain.Site) string {
	return s.User + "@" + net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
}

func (r *runner) sitesShow(args []string) error {
	sv, _, err := r.siteArgs(r.newFlags(), sitesHelp, args)
	if err != nil {
		return err
	}
	d, err := r.api.GetSite(r.ctx, sv.UUID)
	if err != nil {
		return fmt.Errorf("show site %s: %w", clean(sv.Name), err)
	}
	if r.flags.json {
		return printJSON(r.stdout, d.Raw())
	}
	return writeSiteDetail(r.stdout, d, r.now())
}

// writeSiteDetail is a site's detail view with its targets.
func writeSiteDetail(w io.Writer, d client.SiteDetail, now time.Time) error {
	st := d.Status
	hostKey := d.HostKey
	switch {
	case hostKey != "":
		hostKey += " (pinned)"
	case st.LearnedHostKey != "":
		hostKey = st.LearnedHostKey + " (learned on first use)"
	case d.TrustOnFirstUse:
		hostKey = "none yet (the first key seen will be pinned)"
	default:
		hostKey = "none (preflight refuses the site until one is pinned)"
	}
	bw := "unlimited"
	if d.BandwidthLimitKbps > 0 {
		bw = fmt.Sprintf("%d KiB/s", d.BandwidthLimitKbps)
	}
	health := string(st.Health.Status)
	if st.Health.Message != "" {
		health += ": " + st.Health.Message
	}
	if !st.Health.UpdatedAt.IsZero() {
		health += " (" + ago(st.Health.UpdatedAt, now) + ")"
	}
	kv := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, p := range [][2]string{
		{"name", d.Name},
		{"uuid", d.UUID},
		{"ssh", sshAddr(d.Site)},
		{"ssh key", orDash(d.SSHKeyPath)},
		{"host key", hostKey},
		{"bandwidth", bw},
		{"health", health},
		{"policy", policySummary(d.Policy)},
		{"last success", stampPtr(st.LastSuccessAt)},
		{"last preflight", stampPtr(st.LastPreflightAt)},
		{"last scan", stampPtr(st.LastScanAt)},
		{"last retention", stampPtr(st.LastRetentionAt)},
		{"last verified", stampPtr(st.LastVerifiedAt)},
		{"last verify", verifyLine(st.LastVerify, now)},
		{"last job", orDash(st.LastJobID)},
		{"created", stamp(d.CreatedAt)},
	} {
		fmt.Fprintf(kv, "%s:\t%s\n", p[0], clean(p[1]))
	}
	if err := kv.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "targets (%d):\n", len(d.Targets))
	if len(d.Targets) == 0 {
		_, err := fmt.Fprintln(w, "  none (add one with: satoru targets add)")
		return err
	}
	return writeTargets(w, d.Targets, now)
}

func (r *runner) sitesRm(args []string) error {
	sv, _, err := r.siteArgs(r.newFlags(), sitesHelp, args)
	if err != nil {
		return err
	}
	if err := r.api.DeleteSite(r.ctx, sv.UUID); err != nil {
		return fmt.Errorf("remove site %s: %w", clean(sv.Name), err)
	}
	if r.flags.json {
		return printValue(r.stdout, map[string]any{"removed": true, "site_uuid": sv.UUID})
	}
	fmt.Fprintf(r.stdout, "removed site %s (uuid %s); its snapshots stay in the repository\n", clean(sv.Name), sv.UUID)
	return nil
}
