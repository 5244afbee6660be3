package apicmd

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/client"
)

const tokensHelp = `usage:
  satoru tokens create NAME [--role viewer|operator|admin]   (default viewer)
        prints the new token's secret once, on the last line; it cannot be
        read again (store it now, e.g. in the file given to --token-file)
  satoru tokens list
  satoru tokens revoke <id or name>   refused at once from the next request
roles: viewer reads everything but snapshot contents; operator also runs and
cancels jobs, syncs, downloads and restores to a folder on the Satoru host;
admin may do everything (sites, targets, tokens, audit, restores to a site).
Needs an admin token (the startup token is one).

` + commonHelp

const auditHelp = `usage:
  satoru audit [--token NAME] [--action A] [--site <site or uuid>]
               [--since T] [--until T] [--limit N] [--before ID]
      T is an RFC 3339 time (2026-01-02T15:04:05Z) or a duration back from
      now (24h, 90m). Newest first; --limit is the page size (default 50);
      the last line names the --before of the next page when there is one.
      Actions: site.create|update|delete, target.create|delete, job.start,
      job.cancel, sync.start, restore.create, snapshot.download,
      token.create|revoke (and those of later routes).
Needs an admin token.

` + commonHelp

const whoamiHelp = `usage:
  satoru whoami    the name and role of the token in use

` + commonHelp

func (r *runner) tokensCreate(args []string) error {
	role := "viewer"
	fs := r.newFlags()
	fs.StringVar(&role, "role", role, "viewer, operator or admin")
	pos, err := parse(fs, tokensHelp, args, "NAME")
	if err != nil {
		return err
	}
	switch role {
	case "viewer", "operator", "admin":
	default:
		return usagef(tokensHelp, "%s: --role: one of viewer, operator, admin, got %q", r.cmd, role)
	}
	if err := r.connect(); err != nil {
		return err
	}
	t, err := r.api.CreateToken(r.ctx, client.TokenInput{Name: pos[0], Role: role})
	if err != nil {
		return fmt.Errorf("create token %q: %w", clean(pos[0]), err)
	}
	if r.flags.json {
		return printJSON(r.stdout, t.Raw())
	}
	fmt.Fprintf(r.stdout, "created %s token %s (id %s); its secret, shown only now:\n%s\n", t.Role, clean(t.Name), t.ID, t.Secret)
	return nil
}

func (r *runner) tokensList(args []string) error {
	if _, err := r.connectArgs(r.newFlags(), tokensHelp, args); err != nil {
		return err
	}
	list, err := r.api.ListTokens(r.ctx)
	if err != nil {
		return fmt.Errorf("list tokens: %w", err)
	}
	if r.flags.json {
		return printJSON(r.stdout, list.Raw())
	}
	if len(list.Tokens) == 0 {
		fmt.Fprintln(r.stdout, "no scoped tokens (the startup token is admin; create one with: satoru tokens create)")
		return nil
	}
	t := newTable(r.stdout, "ID", "NAME", "ROLE", "CREATED", "CREATED BY")
	for _, tk := range list.Tokens {
		t.row(tk.ID, tk.Name, tk.Role, ago(tk.CreatedAt, r.now()), tk.CreatedBy)
	}
	return t.flush()
}

func (r *runner) tokensRevoke(args []string) error {
	pos, err := r.connectArgs(r.newFlags(), tokensHelp, args, "TOKEN")
	if err != nil {
		return err
	}
	if err := r.api.RevokeToken(r.ctx, pos[0]); err != nil {
		return fmt.Errorf("revoke token %q: %w", clean(pos[0]), err)
	}
	if r.flags.json {
		return printValue(r.stdout, map[string]any{"revoked": true, "token": pos[0]})
	}
	fmt.Fprintf(r.stdout, "revoked token %s\n", clean(pos[0]))
	return nil
}

func (r *runner) whoami(args []string) error {
	if _, err := r.connectArgs(r.newFlags(), whoamiHelp, args); err != nil {
		return err
	}
	me, err := r.api.Me(r.ctx)
	if err != nil {
		return fmt.Errorf("who am I: %w", err)
	}
	if r.flags.json {
		return printJSON(r.stdout, me.Raw())
	}
	fmt.Fprintf(r.stdout, "%s (%s)\n", clean(me.Name), me.Role)
	return nil
}

// auditTime reads --since/--until: RFC 3339, or a duration back from now.
func auditTime(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("want an RFC 3339 time or a positive duration like 24h, got %q", v)
	}
	return now.Add(-d), nil
}

func (r *runner) audit(args []string) error {
	var q client.AuditQuery
	var site, since, until string
	fs := r.newFlags()
	fs.StringVar(&q.Token, "token", "", "only this token name")
	fs.StringVar(&q.Action, "action", "", "only this action")
	fs.StringVar(&site, "site", "", "only entries about this site (name or uuid)")
	fs.StringVar(&since, "since", "", "from this time on")
	fs.StringVar(&until, "until", "", "before this time")
	fs.IntVar(&q.Limit, "limit", 50, "page size (1..1000)")
	fs.StringVar(&q.Before, "before", "", "page cursor")
	if _, err := parse(fs, auditHelp, args); err != nil {
		return err
	}
	var err error
	if q.Since, err = auditTime(since, r.now()); err != nil {
		return usagef(auditHelp, "%s: --since: %v", r.cmd, err)
	}
	if q.Until, err = auditTime(until, r.now()); err != nil {
		return usagef(auditHelp, "%s: --until: %v", r.cmd, err)
	}
	if err := r.connect(); err != nil {
		return err
	}
	names := map[string]string{}
	if sites, err := r.api.ListSites(r.ctx); err == nil {
		names = siteNames(sites.Sites)
		if site != "" {
			// A removed site is no longer listed: its uuid is taken as given.
			if sv, err := resolveSite(sites.Sites, site); err == nil {
				site = sv.UUID
			}
		}
	}
	q.SiteUUID = site
	list, err := r.api.ListAudit(r.ctx, q)
	if err != nil {
		return fmt.Errorf("read the audit trail: %w", err)
	}
	if r.flags.json {
		return printJSON(r.stdout, list.Raw())
	}
	if len(list.Entries) == 0 {
		fmt.Fprintln(r.stdout, "no audit entries")
		return nil
	}
	t := newTable(r.stdout, "TIME", "TOKEN", "FROM", "ACTION", "STATUS", "SITE", "DETAIL")
	for _, e := range list.Entries {
		siteCol := e.SiteUUID
		if n := names[e.SiteUUID]; n != "" {
			siteCol = n
		}
		t.row(stamp(e.At), e.Token, e.Remote, e.Action, fmt.Sprint(e.Status), orDash(siteCol), orDash(auditDetail(e)))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if list.Next != "" {
		fmt.Fprintf(r.stdout, "more: --before %s\n", list.Next)
	}
	return nil
}

// auditDetail is an entry's ids (but the site's) and detail as k=v.
func auditDetail(e client.AuditEntry) string {
	var parts []string
	for _, m := range []map[string]string{e.IDs, e.Detail} {
		keys := make([]string, 0, len(m))
		for k := range m {
			if k != "site_uuid" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			parts = append(parts, k+"="+m[k])
		}
	}
	return clip(strings.Join(parts, " "), 100)
}
