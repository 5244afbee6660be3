package apicmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/client"
	"github.com/satoru/satoru/shared/domain"
)

func TestResolveSite(t *testing.T) {
	sites := []domain.SiteView{
		{Site: domain.Site{UUID: "11111111-aaaa", Name: "alpha"}},
		{Site: domain.Site{UUID: "22222222-bbbb", Name: "beta"}},
		// A name that is another site's uuid.
		{Site: domain.Site{UUID: "33333333-cccc", Name: "11111111-aaaa"}},
		{Site: domain.Site{UUID: "44444444-dddd", Name: "44444444-dddd"}},
	}
	cases := []struct {
		name, ref, uuid, err string
	}{
		{name: "by name", ref: "beta", uuid: "22222222-bbbb"},
		{name: "by uuid", ref: "22222222-bbbb", uuid: "22222222-bbbb"},
		{name: "a site named after its own uuid", ref: "44444444-dddd", uuid: "44444444-dddd"},
		{name: "uuid of one, name of another", ref: "11111111-aaaa", err: `site "11111111-aaaa" is ambiguous: it is the uuid of site "alpha" and the name of site 33333333-cccc`},
		{name: "unknown lists the names", ref: "gamma", err: `site "gamma" not found by name or uuid (sites: 11111111-aaaa, 44444444-dddd, alpha, beta)`},
		{name: "no prefix matching", ref: "22222222", err: "not found"},
		{name: "empty", ref: "", err: "empty name or uuid"},
		{name: "control characters are escaped", ref: "x\x1b[2J", err: `site "x\x1b[2J" not found`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveSite(sites, tc.ref)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v %v, want error containing %q", got.UUID, err, tc.err)
				}
				return
			}
			if err != nil || got.UUID != tc.uuid {
				t.Fatalf("got %q %v, want %s", got.UUID, err, tc.uuid)
			}
		})
	}
	t.Run("no sites at all", func(t *testing.T) {
		_, err := resolveSite(nil, "x")
		if err == nil || !strings.Contains(err.Error(), "no sites are registered") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("long lists are cut", func(t *testing.T) {
		var many []domain.SiteView
		for i := range 25 {
			many = append(many, domain.SiteView{Site: domain.Site{UUID: string(rune('a' + i)), Name: "s" + string(rune('a'+i))}})
		}
		_, err := resolveSite(many, "nope")
		if err == nil || !strings.Contains(err.Error(), "... 15 more") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestResolveSettings(t *testing.T) {
	files := map[string]string{
		"/flag-token":    "from-flag\n",
		"/env-token":     "  from-env-file  \n",
		"/d/api-token":   "from-data-dir\n",
		"data/api-token": "from-default-dir\n",
		"/empty":         "\n",
		"/two-lines":     "abc\ndef\n",
	}
	read := func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	cases := []struct {
		name          string
		flagURL, flag string
		env           []string
		url, token    string
		source        string
		err           string
	}{
		{name: "defaults", env: nil, url: DefaultAPIURL, token: "from-default-dir", source: "data/api-token (written by satoru up)"},
		{name: "data dir from the environment", env: []string{"SATORU_DATA_DIR=/d"}, token: "from-data-dir", url: DefaultAPIURL, source: "/d/api-token"},
		{name: "env token beats token file env and data dir", env: []string{"SATORU_API_TOKEN=envtok", "SATORU_API_TOKEN_FILE=/env-token", "SATORU_DATA_DIR=/d"}, token: "envtok", url: DefaultAPIURL, source: "SATORU_API_TOKEN"},
		{name: "token file env beats data dir, trimmed", env: []string{"SATORU_API_TOKEN_FILE=/env-token", "SATORU_DATA_DIR=/d"}, token: "from-env-file", url: DefaultAPIURL, source: "/env-token (SATORU_API_TOKEN_FILE)"},
		{name: "flag beats everything", flagURL: "http://flag:1", flag: "/flag-token", env: []string{"SATORU_API_URL=http://env:2", "SATORU_API_TOKEN=envtok"}, url: "http://flag:1", token: "from-flag", source: "--token-file"},
		{name: "url from the environment", env: []string{"SATORU_API_URL=http://env:2", "SATORU_API_TOKEN=t"}, url: "http://env:2", token: "t"},
		{name: "an empty env token counts as unset", env: []string{"SATORU_API_TOKEN=", "SATORU_DATA_DIR=/d"}, url: DefaultAPIURL, token: "from-data-dir"},
		{name: "no token anywhere", env: []string{"SATORU_DATA_DIR=/nowhere"}, err: "no API token: pass --token-file FILE or set SATORU_API_TOKEN or SATORU_API_TOKEN_FILE"},
		{name: "missing flag file", flag: "/missing", err: "read token file /missing (--token-file)"},
		{name: "missing env file", env: []string{"SATORU_API_TOKEN_FILE=/missing"}, err: "read token file /missing (SATORU_API_TOKEN_FILE)"},
		{name: "empty file", flag: "/empty", err: "no API token: the token file /empty (--token-file) is empty"},
		{name: "two lines", flag: "/two-lines", err: "contains spaces or control characters"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := resolveSettings(tc.flagURL, tc.flag, tc.env, read)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v %v, want error containing %q", s, err, tc.err)
				}
				if strings.Contains(err.Error(), "abc") || strings.Contains(err.Error(), "def") {
					t.Errorf("error shows the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.APIURL != tc.url || s.Token != tc.token || !strings.Contains(s.TokenSource, tc.source) {
				t.Errorf("got %+v, want url %s token %s source ~%q", s, tc.url, tc.token, tc.source)
			}
			if strings.Contains(s.TokenSource, s.Token) {
				t.Errorf("the token source %q shows the token", s.TokenSource)
			}
		})
	}
}

func TestParseInterspersed(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		names []string
		pos   []string
		host  string
		dirs  []string
		err   string
	}{
		{name: "flags after the name", args: []string{"web", "--host", "h", "--dir", "/a", "--dir", "/b"}, names: []string{"NAME"}, pos: []string{"web"}, host: "h", dirs: []string{"/a", "/b"}},
		{name: "flags before the name", args: []string{"--host=h", "web"}, names: []string{"NAME"}, pos: []string{"web"}, host: "h"},
		{name: "double dash ends the flags", args: []string{"--host", "h", "--", "-odd-name"}, names: []string{"NAME"}, pos: []string{"-odd-name"}, host: "h"},
		{name: "missing", args: []string{"--host", "h"}, names: []string{"SITE", "TARGET_HASH"}, err: "missing SITE and TARGET_HASH"},
		{name: "missing the second", args: []string{"s"}, names: []string{"SITE", "TARGET_HASH"}, err: "missing TARGET_HASH"},
		{name: "extra", args: []string{"a", "b"}, names: []string{"SITE"}, err: `unexpected argument "b"`},
		{name: "unknown flag", args: []string{"a", "--nope"}, names: []string{"SITE"}, err: "flag provided but not defined: -nope"},
		{name: "flag without its value", args: []string{"a", "--host"}, names: []string{"SITE"}, err: "flag needs an argument: -host"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c commonFlags
			var host string
			var dirs stringList
			f := newFlags("satoru test", &c)
			f.StringVar(&host, "host", "", "")
			f.Var(&dirs, "dir", "")
			pos, err := parse(f, "HELP", tc.args, tc.names...)
			if tc.err != "" {
				var ue *usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "satoru test: ") {
					t.Fatalf("got %v, want usage error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(pos, "|") != strings.Join(tc.pos, "|") || host != tc.host || strings.Join(dirs, "|") != strings.Join(tc.dirs, "|") {
				t.Errorf("got pos %q host %q dirs %q", pos, host, dirs)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		var c commonFlags
		_, err := parse(newFlags("x", &c), "HELP", []string{"-h"})
		var h *helpRequest
		if !errors.As(err, &h) || h.help != "HELP" {
			t.Fatalf("got %v", err)
		}
	})
}

func TestFormatting(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "never"},
		{now, "just now"},
		{now.Add(-42 * time.Second), "42s ago"},
		{now.Add(-3 * time.Minute), "3m ago"},
		{now.Add(-5 * time.Hour), "5h ago"},
		{now.Add(-47 * time.Hour), "47h ago"},
		{now.Add(-72 * time.Hour), "3d ago"},
		{now.Add(90 * time.Second), "in 1m"},
	} {
		if got := ago(tc.t, now); got != tc.want {
			t.Errorf("ago(%s) = %q, want %q", now.Sub(tc.t), got, tc.want)
		}
	}
	if got := clean("a\tb\x1b[31mred\nnext ☕"); got != `a\tb\x1b[31mred\nnext ☕` {
		t.Errorf("clean = %q", got)
	}
	if got := summaryValue(float64(12000000)); got != "12000000" {
		t.Errorf("summaryValue = %q", got)
	}
}

func TestWriteSites(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	ok := now.Add(-3 * time.Minute)
	sites := []domain.SiteView{
		{Site: domain.Site{UUID: "u-1", Name: "web", Host: "10.0.0.1", Port: 22, User: "backup"},
			Status: domain.SiteStatus{Health: domain.HealthState{Status: domain.HealthSuccess}, LastSuccessAt: &ok, LastJobID: "j-1"}},
		{Site: domain.Site{UUID: "u-2", Name: "db\tevil", Host: "fe80::1", Port: 2222, User: "root"},
			Status: domain.SiteStatus{Health: domain.HealthState{Status: domain.HealthUnknown}}},
	}
	var b bytes.Buffer
	if err := writeSites(&b, sites, now); err != nil {
		t.Fatal(err)
	}
	want := "NAME      UUID  HOST                 HEALTH   LAST SUCCESS  LAST JOB\n" +
		"web       u-1   backup@10.0.0.1:22   success  3m ago        j-1\n" +
		`db\tevil  u-2   root@[fe80::1]:2222  unknown  never         -` + "\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	if err := writeSites(&b, nil, now); err != nil || !strings.Contains(b.String(), "no sites registered") {
		t.Errorf("empty list: %q %v", b.String(), err)
	}
}

func TestWriteEventShowsDryRunChanges(t *testing.T) {
	var b bytes.Buffer
	writeEvent(&b, domain.JobEvent{Seq: 3, TS: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), Step: "restore_dry_run", Level: "info",
		TargetHash: "abcd", Message: "dry run: 3 change(s)",
		Data: map[string]any{"changes": []any{">f+++++++++ a.txt", "cd+++++++++ sub/"}, "changes_total": float64(3)}})
	out := b.String()
	for _, want := range []string{"info    restore_dry_run [abcd] dry run: 3 change(s)\n", "    >f+++++++++ a.txt\n", "    cd+++++++++ sub/\n", "    ... 1 more\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
}

// TestMainUsage runs the command line paths that end before any request.
func TestMainUsage(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		env    []string
		code   int
		stdout string
		stderr string
	}{
		{name: "unknown command", args: []string{"frob"}, code: ExitUsage, stderr: `satoru: unknown command "frob"`},
		{name: "missing subcommand", args: []string{"sites"}, code: ExitUsage, stderr: "satoru sites: missing subcommand (add, list, policy, rm, show)\nsee: satoru sites --help"},
		{name: "unknown subcommand", args: []string{"jobs", "frob"}, code: ExitUsage, stderr: `satoru jobs: unknown subcommand "frob"`},
		{name: "unknown flag", args: []string{"sites", "list", "--nope"}, code: ExitUsage, stderr: "satoru sites list: flag provided but not defined: -nope"},
		{name: "missing site", args: []string{"snapshots"}, code: ExitUsage, stderr: "satoru snapshots: missing SITE"},
		{name: "missing host", args: []string{"sites", "add", "web", "--user", "u"}, code: ExitUsage, stderr: "satoru sites add: missing --host"},
		{name: "exclude without dir", args: []string{"sites", "add", "web", "--host", "h", "--user", "u", "--sqlite", "/db", "--exclude", "*.log"}, code: ExitUsage, stderr: "--exclude needs a --dir target"},
		{name: "bad job type", args: []string{"run", "web", "restore"}, code: ExitUsage, stderr: `unknown job type "restore"`},
		{name: "timeout without wait", args: []string{"run", "web", "backup", "--timeout", "1m"}, code: ExitUsage, stderr: "--timeout needs --wait"},
		{name: "restore without destination", args: []string{"restore", "web", "--snapshot", "abcd1234", "--path", "/x"}, code: ExitUsage, stderr: "missing --to-local DIR or --to-site DIR"},
		{name: "restore with both destinations", args: []string{"restore", "web", "--snapshot", "abcd1234", "--path", "/x", "--to-local", "/a", "--to-site", "/b"}, code: ExitUsage, stderr: "either --to-local or --to-site"},
		{name: "target with both kinds", args: []string{"targets", "add", "web", "--dir", "/a", "--sqlite", "/b"}, code: ExitUsage, stderr: "either --dir or --sqlite"},
		{name: "bad API URL", args: []string{"health", "--api-url", "localhost:8080"}, env: []string{"SATORU_API_TOKEN=t"}, code: ExitUsage, stderr: "must start with http:// or https://"},
		{name: "help", args: []string{"restore", "--help"}, code: ExitOK, stdout: "satoru restore <site> --snapshot ID"},
		{name: "group help", args: []string{"jobs", "help"}, code: ExitOK, stdout: "satoru jobs logs <job> [--follow]"},
		{name: "no token", args: []string{"sites", "list"}, env: []string{"SATORU_DATA_DIR=/nonexistent-satoru-dir"}, code: ExitFailed,
			stderr: "satoru sites list: no API token: pass --token-file FILE or set SATORU_API_TOKEN or SATORU_API_TOKEN_FILE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), tc.args, tc.env, &out, &errb)
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s\nwant stdout ~%q stderr ~%q", code, tc.code, out.String(), errb.String(), tc.stdout, tc.stderr)
			}
		})
	}
}

// TestWriteHealthNodes: `satoru health` shows each worker node with its
// status and the sites it owns; a gone node with when it was last seen
// and what ran there.
func TestWriteHealthNodes(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var h client.HealthReport
	if err := json.Unmarshal([]byte(`{"status":"degraded","problems":["node bbbb is gone (last seen 2026-05-01T11:55:00Z) and holds the baseline of 2 site(s)"],
		"sync":{"status":"not_configured"},
		"nodes":[
		 {"node":"aaaa","status":"live","sites_owned":1,"partitions":20,"sites_assigned":4,"running_jobs":3,"last_seen":"2026-05-01T11:59:58Z",
		  "instances":[{"service":"puller","instance":"wa","live":true},{"service":"puller","instance":"old","live":false},{"service":"snapshotter","instance":"wa","live":true}]},
		 {"node":"bbbb","status":"gone","sites_owned":2,"running_jobs":0,"last_seen":"2026-05-01T11:55:00Z",
		  "instances":[{"service":"puller","instance":"wb","live":false}]}]}`), &h); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := writeHealth(&out, h, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"  problem: node bbbb is gone (last seen 2026-05-01T11:55:00Z) and holds the baseline of 2 site(s)\n",
		"node aaaa:  live, takes 4 site(s) (20 partition(s)), holds the baseline of 1 site(s), 3 running job(s): puller wa, snapshotter wa\n",
		"node bbbb:  gone, takes 0 site(s) (0 partition(s)), holds the baseline of 2 site(s), 0 running job(s), last seen 5m ago (2026-05-01T11:55:00Z): puller wb\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// `satoru health` shows a repository at a backend URL as remote, with no
// free-space figures.
func TestWriteHealthRemoteRepository(t *testing.T) {
	var h client.HealthReport
	if err := json.Unmarshal([]byte(`{"status":"ok","disks":[{"name":"restic_repo_path","path":"s3:http://127.0.0.1:9000/b/r","status":"remote","note":"no local free space to check"}]}`), &h); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := writeHealth(&b, h, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "remote at s3:http://127.0.0.1:9000/b/r: no local free space to check") || strings.Contains(b.String(), "free of") {
		t.Errorf("health output:\n%s", b.String())
	}
}
