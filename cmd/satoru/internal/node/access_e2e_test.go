package node

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCLITokensAndAudit drives `satoru tokens`, `whoami` and `audit`
// against an in-process `satoru up`: scoped tokens work at once with
// their role, a revoked one is refused at once, and the audit trail
// names who did what from where, without secrets.
func TestCLITokensAndAudit(t *testing.T) {
	n, _ := backupNode(t)
	base := []string{"SATORU_API_URL=http://" + n.APIAddr}
	as := func(token string, args ...string) cliRun {
		t.Helper()
		return satoruCLI(t, append(base, "SATORU_API_TOKEN="+token), args...)
	}
	lastLine := func(s string) string {
		lines := strings.Split(strings.TrimSpace(s), "\n")
		return lines[len(lines)-1]
	}

	expect(t, as(testToken, "whoami"), 0, "startup (admin)")
	r := as(testToken, "tokens", "create", "ops", "--role", "operator")
	expect(t, r, 0, "created operator token ops (id tok_", "shown only now")
	ops := lastLine(r.stdout)
	r = as(testToken, "tokens", "create", "watcher") // viewer by default
	expect(t, r, 0, "created viewer token watcher")
	viewer := lastLine(r.stdout)
	if !strings.HasPrefix(ops, "satoru_") || !strings.HasPrefix(viewer, "satoru_") || ops == viewer {
		t.Fatalf("secrets %q %q", ops, viewer)
	}
	r = as(testToken, "tokens", "list")
	expect(t, r, 0, "NAME", "ROLE", "ops", "operator", "watcher", "viewer", "startup")
	if strings.Contains(r.stdout, ops) || strings.Contains(r.stdout, viewer) {
		t.Fatalf("tokens list shows a secret: %s", r)
	}
	if r := as(testToken, "tokens", "create", "bad", "--role", "root"); r.code != 2 {
		t.Fatalf("bad role: %s", r)
	}

	expect(t, as(viewer, "whoami"), 0, "watcher (viewer)")
	expect(t, as(viewer, "sites", "list"), 0)
	r = as(viewer, "sites", "add", "edge", "--host", "h", "--user", "u")
	if r.code != 1 || !strings.Contains(r.stderr, "needs the admin role") || !strings.Contains(r.stderr, `"watcher" has the viewer role`) {
		t.Fatalf("viewer sites add: %s", r)
	}
	if r := as(viewer, "tokens", "list"); r.code != 1 || !strings.Contains(r.stderr, "forbidden") {
		t.Fatalf("viewer tokens list: %s", r)
	}
	expect(t, as(ops, "whoami"), 0, "ops (operator)")
	if r := as(ops, "audit"); r.code != 1 || !strings.Contains(r.stderr, "needs the admin role") {
		t.Fatalf("operator audit: %s", r)
	}

	expect(t, as(testToken, "tokens", "revoke", "ops"), 0, "revoked token ops")
	if r := as(ops, "whoami"); r.code != 1 || !strings.Contains(r.stderr, "unauthorized") {
		t.Fatalf("revoked token still works: %s", r)
	}

	r = as(testToken, "audit")
	expect(t, r, 0, "TOKEN", "FROM", "ACTION", "token.revoke", "token.create", "site.create", "403", "127.0.0.1", "name=ops", "role=operator")
	expectLine(t, r, "watcher", "127.0.0.1", "site.create", "403")
	expectLine(t, r, "startup", "127.0.0.1", "token.revoke", "204")
	for _, s := range []string{ops, viewer, testToken} {
		if strings.Contains(r.stdout, s) {
			t.Fatalf("audit shows a secret: %s", r)
		}
	}
	r = as(testToken, "audit", "--token", "watcher", "--since", "1h", "--json")
	expect(t, r, 0)
	var list struct {
		Entries []struct {
			Token, Action string
			Status        int
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Entries) != 1 ||
		list.Entries[0].Action != "site.create" || list.Entries[0].Status != 403 {
		t.Fatalf("audit --token watcher: %v %+v", err, list)
	}
	r = as(testToken, "audit", "--limit", "2")
	expect(t, r, 0, "more: --before ")
	if r := as(testToken, "audit", "--since", "yesterday"); r.code != 2 {
		t.Fatalf("bad --since: %s", r)
	}
}
