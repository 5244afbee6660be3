package compose

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction with its continuation lines
// joined.
type instruction struct {
	cmd, args string
}

// parseDockerfile splits the Dockerfile into instructions: enough to check
// what it does, not a full parser (no heredocs, no escape directive).
func parseDockerfile(t *testing.T) []instruction {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(composeDir(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		cont := strings.HasSuffix(trimmed, "\\")
		cur.WriteString(strings.TrimSuffix(trimmed, "\\"))
		cur.WriteString(" ")
		if cont {
			continue
		}
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	return out
}

// stages returns the instructions of each build stage, the last one being
// the runtime image.
func stages(t *testing.T) [][]instruction {
	t.Helper()
	var out [][]instruction
	for _, in := range parseDockerfile(t) {
		if in.cmd == "FROM" {
			out = append(out, nil)
		}
		if len(out) > 0 {
			out[len(out)-1] = append(out[len(out)-1], in)
		}
	}
	return out
}

func find(ins []instruction, cmd string) []string {
	var out []string
	for _, in := range ins {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// dockerfileUID is the uid the Dockerfile gives the satoru user.
func dockerfileUID(t *testing.T) string {
	t.Helper()
	for _, run := range find(parseDockerfile(t), "RUN") {
		if m := regexp.MustCompile(`useradd [^&]*--uid (\d+)[^&]* satoru\b`).FindStringSubmatch(run); m != nil {
			return m[1]
		}
	}
	t.Fatal("Dockerfile: no `useradd ... --uid N ... satoru`")
	return ""
}

// dockerfileOwnedDirs are the folders the runtime stage creates with
// `install -d ... -o satoru`.
func dockerfileOwnedDirs(t *testing.T) map[string]bool {
	t.Helper()
	st := stages(t)
	dirs := map[string]bool{}
	for _, run := range find(st[len(st)-1], "RUN") {
		for _, cmd := range strings.Split(run, "&&") {
			f := strings.Fields(cmd)
			if len(f) < 2 || f[0] != "install" || !slices.Contains(f, "-d") || !slices.Contains(f, "satoru") || !slices.Contains(f, "0700") {
				continue
			}
			for _, a := range f[1:] {
				if strings.HasPrefix(a, "/") {
					dirs[a] = true
				}
			}
		}
	}
	return dirs
}

func TestDockerfile(t *testing.T) {
	st := stages(t)
	if len(st) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a runtime stage", len(st))
	}
	build, runtime := st[0], st[len(st)-1]
	all := parseDockerfile(t)
	text := func(ins []instruction) string {
		var b strings.Builder
		for _, in := range ins {
			b.WriteString(in.cmd + " " + in.args + "\n")
		}
		return b.String()
	}

	// A static binary, built as the Makefile builds it.
	if !strings.Contains(text(build), "CGO_ENABLED=0") {
		t.Error("build stage: no CGO_ENABLED=0 (the binary must be static)")
	}
	makefile, err := os.ReadFile(filepath.Join(repoRoot(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	tags := regexp.MustCompile(`(?m)^TAGS\s*:=\s*(\S+)`).FindSubmatch(makefile)
	if tags == nil {
		t.Fatal("Makefile: no TAGS")
	}
	if !strings.Contains(text(build), "go build -tags "+string(tags[1])) || !strings.Contains(text(build), "./cmd/satoru") {
		t.Errorf("build stage does not run `go build -tags %s ... ./cmd/satoru`", tags[1])
	}

	// restic, the version scripts/install-tools.sh installs.
	tools, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts", "install-tools.sh"))
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`(?m)^restic_version=(\S+)`).FindSubmatch(tools)
	if want == nil {
		t.Fatal("scripts/install-tools.sh: no restic_version")
	}
	if !slices.Contains(find(all, "ARG"), "RESTIC_VERSION="+string(want[1])) {
		t.Errorf("Dockerfile: want ARG RESTIC_VERSION=%s (scripts/install-tools.sh)", want[1])
	}
	if !strings.Contains(text(build), "go install \"github.com/restic/restic/cmd/restic@v${RESTIC_VERSION}\"") {
		t.Error("build stage does not go install restic@v${RESTIC_VERSION}")
	}

	rt := text(runtime)
	for _, pkg := range []string{"openssh-client", "rsync", "gzip", "sqlite3", "ca-certificates", "tini"} {
		if !regexp.MustCompile(`apt-get install [^&]*\b` + regexp.QuoteMeta(pkg) + `\b`).MatchString(rt) {
			t.Errorf("runtime stage does not apt-get install %s", pkg)
		}
	}
	for _, bin := range []string{"/out/satoru", "/out/restic"} {
		if !strings.Contains(rt, "COPY --from=build") || !strings.Contains(rt, bin) {
			t.Errorf("runtime stage does not copy %s from the build stage", bin)
		}
	}
	if u := find(runtime, "USER"); len(u) != 1 || u[0] != "satoru" {
		t.Errorf("runtime stage USER %q, want satoru", u)
	}
	if uid := dockerfileUID(t); uid != "10001" {
		t.Errorf("satoru uid %s, want 10001", uid)
	}
	dirs := dockerfileOwnedDirs(t)
	for _, d := range []string{"/var/lib/satoru/data", "/var/lib/satoru/staging", "/var/lib/satoru/repo"} {
		if !dirs[d] {
			t.Errorf("runtime stage does not create %s 0700 owned by satoru", d)
		}
	}
	if hc := find(runtime, "HEALTHCHECK"); len(hc) != 1 || !strings.Contains(hc[0], "satoru-healthcheck") {
		t.Errorf("runtime stage HEALTHCHECK %q, want the satoru-healthcheck script", hc)
	}
	if ep := find(runtime, "ENTRYPOINT"); len(ep) != 1 || !strings.Contains(ep[0], "tini") || !strings.Contains(ep[0], "/usr/local/bin/satoru") {
		t.Errorf("runtime stage ENTRYPOINT %q, want tini running satoru", ep)
	}

	// Secrets and local data stay out of the build context.
	ignore, err := os.ReadFile(filepath.Join(composeDir(t), "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(ignore), "\n")
	for _, p := range []string{"deploy/compose/secrets", ".git", "data", "backups", "repos"} {
		if !slices.Contains(lines, p) {
			t.Errorf("Dockerfile.dockerignore does not exclude %s", p)
		}
	}
}

// TestHealthcheckScript runs the image's health check script against a
// real listener: healthy on 200, not on 503 or with nothing listening.
func TestHealthcheckScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash not found")
	}
	script := filepath.Join(composeDir(t), "healthcheck.sh")
	run := func(listen string) error {
		cmd := exec.Command(bash, script)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "SATORU_API_LISTEN=" + listen}
		return cmd.Run()
	}
	serve := func(status int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(status)
		}))
		t.Cleanup(srv.Close)
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		// As compose sets it: every interface.
		return "0.0.0.0:" + port
	}
	if err := run(serve(http.StatusOK)); err != nil {
		t.Errorf("200: %v, want healthy", err)
	}
	if err := run(serve(http.StatusServiceUnavailable)); err == nil {
		t.Error("503: healthy, want unhealthy")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if err := run(closed); err == nil {
		t.Error("nothing listening: healthy, want unhealthy")
	}
}
