package compose

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"
)

// satoruServices are the compose services that run the satoru image, each
// running the subcommand of its name.
var satoruServices = []string{"api", "puller", "snapshotter", "worker", "syncer", "scheduler"}

// scalable are the services meant for `docker compose up --scale`.
var scalable = map[string]bool{"puller": true, "worker": true}

// natsNodes are the NATS cluster's services.
var natsNodes = []string{"nats-1", "nats-2", "nats-3"}

// composeDir is deploy/compose of this checkout.
func composeDir(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate this test file")
	}
	return filepath.Dir(file)
}

// repoRoot is the checkout's root.
func repoRoot(t *testing.T) string {
	t.Helper()
	return filepath.Join(composeDir(t), "..", "..")
}

// offsiteVariants are the environments the secrets and the services'
// configuration are checked under: the offsite copy adds the B2 secrets.
var offsiteVariants = []struct {
	name    string
	environ []string
}{
	{"no offsite", nil},
	{"offsite", []string{"SATORU_RESTIC_B2_REPOSITORY=b2:bucket:satoru"}},
}

// loadProject loads compose.yaml as `docker compose` does (interpolation,
// schema validation, normalization, consistency checks), with environ as
// the only environment: neither the caller's variables nor a local .env
// change what is tested.
func loadProject(t *testing.T, environ ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(composeDir(t), "compose.yaml")},
		cli.WithWorkingDirectory(composeDir(t)),
		cli.WithEnv(environ),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load compose.yaml: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("compose.yaml has no service %q", name)
	}
	return s
}

// env returns a service's environment value of key ("" when unset).
func env(s types.ServiceConfig, key string) string {
	if v, ok := s.Environment[key]; ok && v != nil {
		return *v
	}
	return ""
}

// mount returns the service's mount of source (a named volume, or a bind
// path relative to deploy/compose), or false.
func mount(t *testing.T, s types.ServiceConfig, source string) (types.ServiceVolumeConfig, bool) {
	t.Helper()
	for _, v := range s.Volumes {
		src := v.Source
		if v.Type == types.VolumeTypeBind {
			rel, err := filepath.Rel(composeDir(t), src)
			if err != nil {
				continue
			}
			src = "./" + filepath.ToSlash(rel)
		}
		if src == source {
			return v, true
		}
	}
	return types.ServiceVolumeConfig{}, false
}

func TestComposeLoads(t *testing.T) {
	p := loadProject(t)
	if p.Name != "satoru" {
		t.Errorf("project name %q, want satoru", p.Name)
	}
	want := append(append([]string{"mongo", "prometheus", "grafana"}, natsNodes...), satoruServices...)
	for _, name := range want {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("compose.yaml has no service %q", name)
		}
	}
	if len(p.Services) != len(want) {
		t.Errorf("services %v, want exactly %v", p.ServiceNames(), want)
	}

	// The real client too, where its compose plugin is installed.
	out, err := exec.Command("docker", "compose", "version").CombinedOutput()
	if err != nil {
		t.Logf("docker compose plugin not available (%v: %s); compose-go's check above stands alone", err, strings.TrimSpace(string(out)))
		return
	}
	// In a copy with dummy secret files and no .env, so neither the
	// operator's secrets nor local settings decide the outcome.
	dir := copyForDocker(t, p)
	cmd := exec.Command("docker", "compose", "-f", "compose.yaml", "config", "-q")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker compose config -q: %v\n%s", err, out)
	}
}

// copyForDocker copies compose.yaml and the folders it mounts to
// <tmp>/deploy/compose (so the build context ../.. exists), with a dummy
// file for each secret, and returns that folder.
func copyForDocker(t *testing.T, p *types.Project) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "deploy", "compose")
	for _, sub := range []string{"nats", "prometheus", "grafana"} {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(filepath.Join(composeDir(t), sub))); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"compose.yaml", "Dockerfile"} {
		data, err := os.ReadFile(filepath.Join(composeDir(t), f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, sec := range p.Secrets {
		if err := os.WriteFile(filepath.Join(dir, "secrets", filepath.Base(sec.File)), []byte("dummy-"+name+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSatoruServices(t *testing.T) {
	p := loadProject(t)
	uid := dockerfileUID(t)
	for _, name := range satoruServices {
		s := service(t, p, name)
		if s.Build == nil || filepath.Clean(s.Build.Context) != filepath.Clean(repoRoot(t)) || s.Build.Dockerfile != "deploy/compose/Dockerfile" {
			t.Errorf("%s: build %+v, want context ../.. (the repository root, for go.work) and dockerfile deploy/compose/Dockerfile", name, s.Build)
		}
		if len(s.Command) != 1 || s.Command[0] != name {
			t.Errorf("%s: command %q, want [%s]", name, s.Command, name)
		}
		// Non-root: the Dockerfile's USER satoru, and the same uid said
		// again here so that no other image runs the services as root.
		if user, _, _ := strings.Cut(s.User, ":"); user != uid {
			t.Errorf("%s: user %q, want the Dockerfile's satoru uid %s", name, s.User, uid)
		}
		if s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s: restart %q, want unless-stopped (a service that starts before the NATS cluster elects a leader retries)", name, s.Restart)
		}
		for _, dep := range append(slices.Clone(natsNodes), "mongo") {
			d, ok := s.DependsOn[dep]
			if !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s: depends_on %s: %+v, want condition service_healthy", name, dep, d)
			}
		}
		if got := env(s, "SATORU_API_LISTEN"); got != "0.0.0.0:8080" {
			t.Errorf("%s: SATORU_API_LISTEN %q, want 0.0.0.0:8080 (Prometheus scrapes it)", name, got)
		}
	}

	puller := service(t, p, "puller")
	if puller.Deploy == nil || puller.Deploy.Replicas == nil || *puller.Deploy.Replicas != 2 {
		t.Errorf("puller: %d replicas, want deploy.replicas: 2", puller.GetScale())
	}
	// `--scale puller=N` needs containers that can be told apart.
	if puller.ContainerName != "" || len(puller.Ports) > 0 {
		t.Errorf("puller: container_name %q, ports %v: want neither, so it can scale", puller.ContainerName, puller.Ports)
	}
	api := service(t, p, "api")
	published := false
	for _, port := range api.Ports {
		if port.Target == 8080 && port.Published != "" {
			published = true
		}
	}
	if !published {
		t.Errorf("api: ports %+v, want 8080 published", api.Ports)
	}
}

// secretWord marks an environment key that names a credential.
var secretWord = regexp.MustCompile(`PASSWORD|TOKEN|KEY|SECRET|CREDENTIAL`)

func TestSecretsByFile(t *testing.T) {
	for _, tc := range offsiteVariants {
		t.Run(tc.name, func(t *testing.T) {
			p := loadProject(t, tc.environ...)
			secretsDir := filepath.Join(composeDir(t), "secrets")
			for name, sec := range p.Secrets {
				if sec.File == "" || sec.Environment != "" || sec.Content != "" {
					t.Errorf("secret %s: want a file, got %+v", name, sec)
					continue
				}
				if filepath.Dir(sec.File) != secretsDir {
					t.Errorf("secret %s: file %s, want one in %s (git-ignored)", name, sec.File, secretsDir)
				}
			}
			for name, s := range p.Services {
				targets := map[string]bool{}
				for _, sec := range s.Secrets {
					if _, ok := p.Secrets[sec.Source]; !ok {
						t.Errorf("%s: secret %q is not declared", name, sec.Source)
					}
					targets[sec.Target] = true
				}
				for key, v := range s.Environment {
					val := ""
					if v != nil {
						val = *v
					}
					if secretWord.MatchString(key) && !strings.HasSuffix(key, "_FILE") {
						t.Errorf("%s: environment %s looks like a secret given as a value; give the file (%s_FILE)", name, key, key)
					}
					if strings.HasSuffix(key, "_FILE") && val != "" && !targets[val] {
						t.Errorf("%s: %s=%s is not a secret mounted in the service (mounted: %v)", name, key, val, keys(targets))
					}
					if strings.HasPrefix(val, "/run/secrets/") && !targets[val] {
						t.Errorf("%s: %s points at %s, which is not mounted", name, key, val)
					}
					// URLs must not carry credentials either.
					for _, part := range strings.Split(val, ",") {
						if u, err := url.Parse(part); err == nil && u.User != nil {
							t.Errorf("%s: %s carries credentials in its URL", name, key)
						}
					}
				}
			}

			wantFiles := map[string]map[string]string{
				"api":         {"SATORU_API_TOKEN_FILE": "api_token", "SATORU_RESTIC_PASSWORD_FILE": "restic_password"},
				"puller":      {"SATORU_RESTIC_PASSWORD_FILE": "restic_password"},
				"snapshotter": {"SATORU_RESTIC_PASSWORD_FILE": "restic_password"},
				"worker":      {"SATORU_RESTIC_PASSWORD_FILE": "restic_password"},
				"syncer":      {"SATORU_RESTIC_PASSWORD_FILE": "restic_password"},
				"grafana":     {"GF_SECURITY_ADMIN_PASSWORD__FILE": "grafana_admin_password"},
			}
			if tc.environ != nil {
				// The syncer copies offsite; the snapshotters check it.
				for _, name := range []string{"syncer", "snapshotter", "worker"} {
					wantFiles[name]["SATORU_RESTIC_B2_ACCOUNT_ID_FILE"] = "b2_account_id"
					wantFiles[name]["SATORU_RESTIC_B2_ACCOUNT_KEY_FILE"] = "b2_account_key"
				}
			}
			for name, files := range wantFiles {
				s := service(t, p, name)
				for key, secret := range files {
					if got, want := env(s, key), "/run/secrets/"+secret; got != want {
						t.Errorf("%s: %s=%q, want %q", name, key, got, want)
					}
				}
			}
			if tc.environ == nil {
				// Credentials without a repository stop the service.
				for _, name := range []string{"syncer", "snapshotter", "worker"} {
					for _, key := range []string{"SATORU_RESTIC_B2_REPOSITORY", "SATORU_RESTIC_B2_ACCOUNT_ID_FILE", "SATORU_RESTIC_B2_ACCOUNT_KEY_FILE"} {
						if got := env(service(t, p, name), key); got != "" {
							t.Errorf("%s without offsite: %s=%q, want empty", name, key, got)
						}
					}
				}
			}
			// The pullers' key for the sites.
			if !slices.ContainsFunc(service(t, p, "puller").Secrets, func(s types.ServiceSecretConfig) bool {
				return s.Source == "ssh_key" && s.Target == "/run/secrets/ssh_key"
			}) {
				t.Error("puller: secret ssh_key is not mounted at /run/secrets/ssh_key (the ssh_key_path the README registers sites with)")
			}
		})
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestSecretFilesIgnored(t *testing.T) {
	f, err := os.Open(filepath.Join(composeDir(t), "secrets", ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var patterns []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	// Ignore everything, keep only the README and this file.
	want := []string{"*", "!.gitignore", "!README.md"}
	if !slices.Equal(patterns, want) {
		t.Errorf("secrets/.gitignore patterns %q, want %q", patterns, want)
	}
	if _, err := os.Stat(filepath.Join(composeDir(t), "secrets", "README.md")); err != nil {
		t.Error(err)
	}
}

func TestVolumes(t *testing.T) {
	p := loadProject(t)
	for _, v := range []string{"staging", "repo"} {
		if _, ok := p.Volumes[v]; !ok {
			t.Errorf("volume %s is not declared", v)
		}
	}
	imageDirs := dockerfileOwnedDirs(t)
	for _, tc := range []struct {
		service, volume, env string
		readOnly             bool
	}{
		// The snapshotter snapshots what the pullers pull: one volume.
		{"puller", "staging", "SATORU_STAGING_ROOT", false},
		{"snapshotter", "staging", "SATORU_STAGING_ROOT", false},
		{"api", "staging", "SATORU_STAGING_ROOT", true},
		// One repository: written by the snapshotter, copied by the
		// syncer, read by the API and by the pullers' restores.
		{"puller", "repo", "SATORU_RESTIC_REPO_PATH", false},
		{"snapshotter", "repo", "SATORU_RESTIC_REPO_PATH", false},
		{"worker", "repo", "SATORU_RESTIC_REPO_PATH", false},
		{"syncer", "repo", "SATORU_RESTIC_REPO_PATH", false},
		{"api", "repo", "SATORU_RESTIC_REPO_PATH", false},
	} {
		s := service(t, p, tc.service)
		m, ok := mount(t, s, tc.volume)
		if !ok {
			t.Errorf("%s: volume %s is not mounted", tc.service, tc.volume)
			continue
		}
		if m.Type != types.VolumeTypeVolume {
			t.Errorf("%s: %s is a %s mount, want a named volume", tc.service, tc.volume, m.Type)
		}
		if got := env(s, tc.env); got != m.Target {
			t.Errorf("%s: %s=%q, but volume %s is mounted at %s", tc.service, tc.env, got, tc.volume, m.Target)
		}
		if m.ReadOnly != tc.readOnly {
			t.Errorf("%s: %s read_only %v, want %v", tc.service, tc.volume, m.ReadOnly, tc.readOnly)
		}
	}
	// A new named volume starts as a copy of the image folder it is
	// mounted on: those folders must exist there, owned by satoru.
	for _, name := range satoruServices {
		for _, m := range service(t, p, name).Volumes {
			if m.Type == types.VolumeTypeVolume && !imageDirs[m.Target] {
				t.Errorf("%s: volume %s mounted at %s, which the Dockerfile does not create owned by satoru (it creates %v)", name, m.Source, m.Target, keys(imageDirs))
			}
		}
	}
	// The scheduler keeps nothing on disk.
	if v := service(t, p, "scheduler").Volumes; len(v) > 0 {
		t.Errorf("scheduler: volumes %+v, want none", v)
	}
}

// TestWorkersKeepTheirOwnStaging: the worker service scales (no
// container name, no host port) and every replica gets a staging volume
// of its own (anonymous), while the repository is the one named volume
// every node shares; it reaches the sites with the ssh key.
func TestWorkersKeepTheirOwnStaging(t *testing.T) {
	p := loadProject(t)
	w := service(t, p, "worker")
	if !slices.Equal(w.Command, types.ShellCommand{"worker"}) {
		t.Errorf("worker: command %q, want [worker]", w.Command)
	}
	if w.ContainerName != "" || len(w.Ports) > 0 {
		t.Errorf("worker: container_name %q, ports %v: want neither, so it can scale", w.ContainerName, w.Ports)
	}
	root := env(w, "SATORU_STAGING_ROOT")
	var staging *types.ServiceVolumeConfig
	for i, m := range w.Volumes {
		if m.Target == root {
			staging = &w.Volumes[i]
		}
	}
	switch {
	case root == "" || staging == nil:
		t.Errorf("worker: no volume at SATORU_STAGING_ROOT %q", root)
	case staging.Type != types.VolumeTypeVolume || staging.Source != "":
		t.Errorf("worker: staging is %s volume %q, want an anonymous volume (one per replica, never shared)", staging.Type, staging.Source)
	}
	if m, ok := mount(t, w, "repo"); !ok || m.Target != env(w, "SATORU_RESTIC_REPO_PATH") {
		t.Errorf("worker: the shared repo volume is not mounted at SATORU_RESTIC_REPO_PATH")
	}
	if !slices.ContainsFunc(w.Secrets, func(s types.ServiceSecretConfig) bool { return s.Source == "ssh_key" }) {
		t.Error("worker: secret ssh_key is not mounted")
	}
	if !slices.ContainsFunc(networks(w), func(n string) bool { return !p.Networks[n].Internal }) {
		t.Errorf("worker is only on internal networks %v", networks(w))
	}
}

func TestBindMountsExist(t *testing.T) {
	p := loadProject(t)
	n := 0
	for name, s := range p.Services {
		for _, m := range s.Volumes {
			if m.Type != types.VolumeTypeBind {
				continue
			}
			n++
			if !strings.HasPrefix(m.Source, composeDir(t)+string(filepath.Separator)) {
				t.Errorf("%s: bind mount %s is outside deploy/compose", name, m.Source)
			}
			if _, err := os.Stat(m.Source); err != nil {
				t.Errorf("%s: bind mount source: %v", name, err)
			}
			if !m.ReadOnly {
				t.Errorf("%s: bind mount %s is writable, want read_only", name, m.Source)
			}
		}
	}
	if n == 0 {
		t.Error("no bind mounts found")
	}
}

func TestNATSCluster(t *testing.T) {
	p := loadProject(t)
	volumes := map[string]string{}
	for _, name := range natsNodes {
		s := service(t, p, name)
		if got := env(s, "NATS_SERVER_NAME"); got != name {
			t.Errorf("%s: NATS_SERVER_NAME %q, want %q", name, got, name)
		}
		if _, ok := mount(t, s, "./nats/cluster.conf"); !ok || !slices.Contains(s.Command, "/etc/nats/cluster.conf") {
			t.Errorf("%s: want ./nats/cluster.conf mounted and passed with --config; command %q", name, s.Command)
		}
		data, ok := mount(t, s, name)
		if !ok || data.Target != "/data" {
			t.Errorf("%s: want its own volume %s at /data (cluster.conf's store_dir is below it)", name, name)
		}
		if other, dup := volumes[data.Source]; dup {
			t.Errorf("%s and %s share volume %s", name, other, data.Source)
		}
		volumes[data.Source] = name
		if s.HealthCheck == nil || !strings.Contains(strings.Join(s.HealthCheck.Test, " "), ":8222/healthz") {
			t.Errorf("%s: healthcheck %+v, want the monitoring port's /healthz", name, s.HealthCheck)
		}
	}
	for _, name := range natsNodes {
		s := service(t, p, name)
		if !slices.ContainsFunc(s.Secrets, func(sec types.ServiceSecretConfig) bool {
			return sec.Source == "nats_auth" && sec.Target == "/etc/nats/auth.conf"
		}) {
			t.Errorf("%s: secret nats_auth is not mounted at /etc/nats/auth.conf, which cluster.conf includes", name)
		}
	}
	for _, name := range satoruServices {
		// nats_url (every node, with the password) comes from a secret.
		if got := env(service(t, p, name), "SATORU_NATS_URL_FILE"); got != "/run/secrets/nats_url" || env(service(t, p, name), "SATORU_NATS_URL") != "" {
			t.Errorf("%s: SATORU_NATS_URL_FILE %q, want /run/secrets/nats_url (and no SATORU_NATS_URL)", name, got)
		}
		// One copy per node, so losing a node loses no stream.
		if got, want := env(service(t, p, name), "SATORU_NATS_REPLICAS"), fmt.Sprint(len(natsNodes)); got != want {
			t.Errorf("%s: SATORU_NATS_REPLICAS %q, want %s (one copy per node)", name, got, want)
		}
	}
}

func TestMongoReplicaSet(t *testing.T) {
	p := loadProject(t)
	mongo := service(t, p, "mongo")
	i := slices.Index(mongo.Command, "--replSet")
	if i < 0 || i+1 >= len(mongo.Command) {
		t.Fatalf("mongo: command %q has no --replSet", mongo.Command)
	}
	rs := mongo.Command[i+1]
	health := ""
	if mongo.HealthCheck != nil {
		health = strings.Join(mongo.HealthCheck.Test, " ")
	}
	for _, want := range []string{"rs.initiate", "_id: '" + rs + "'", "host: 'mongo:27017'", "isWritablePrimary"} {
		if !strings.Contains(health, want) {
			t.Errorf("mongo: healthcheck %q lacks %q (it initiates the replica set once and waits for a primary)", health, want)
		}
	}
	if _, ok := mount(t, mongo, "mongo-data"); !ok {
		t.Error("mongo: volume mongo-data is not mounted")
	}
	// Authentication on: a root user from the secret mongo_password, and the
	// key file the replica set then requires.
	if i := slices.Index(mongo.Command, "--keyFile"); i < 0 || i+1 >= len(mongo.Command) || mongo.Command[i+1] != "/run/secrets/mongo_keyfile" {
		t.Errorf("mongo: command %q, want --keyFile /run/secrets/mongo_keyfile", mongo.Command)
	}
	if env(mongo, "MONGO_INITDB_ROOT_USERNAME") != "satoru" || env(mongo, "MONGO_INITDB_ROOT_PASSWORD_FILE") != "/run/secrets/mongo_password" {
		t.Errorf("mongo: root user %q from %q, want satoru from /run/secrets/mongo_password",
			env(mongo, "MONGO_INITDB_ROOT_USERNAME"), env(mongo, "MONGO_INITDB_ROOT_PASSWORD_FILE"))
	}
	for _, want := range []string{"-u satoru", "/run/secrets/mongo_password", "--authenticationDatabase admin"} {
		if !strings.Contains(health, want) {
			t.Errorf("mongo: healthcheck %q lacks %q (it must log in)", health, want)
		}
	}
	u, err := url.Parse(exampleSecret("mongo_uri"))
	if err != nil || u.Host != "mongo:27017" || u.Query().Get("replicaSet") != rs || u.User.Username() != "satoru" || u.Query().Get("authSource") != "admin" {
		t.Errorf("mongo_uri %v: want mongodb://satoru:<password>@mongo:27017/?replicaSet=%s&authSource=admin", err, rs)
	}
	for _, name := range satoruServices {
		s := service(t, p, name)
		if got := env(s, "SATORU_MONGO_URI_FILE"); got != "/run/secrets/mongo_uri" || env(s, "SATORU_MONGO_URI") != "" {
			t.Errorf("%s: SATORU_MONGO_URI_FILE %q, want /run/secrets/mongo_uri (and no SATORU_MONGO_URI)", name, got)
		}
	}
}

// networks returns the networks a service is on.
func networks(s types.ServiceConfig) []string {
	out := make([]string, 0, len(s.Networks))
	for n := range s.Networks {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func shareNetwork(a, b types.ServiceConfig) bool {
	for n := range a.Networks {
		if _, ok := b.Networks[n]; ok {
			return true
		}
	}
	return false
}

func TestNetworks(t *testing.T) {
	p := loadProject(t)
	internal := func(n string) bool { return p.Networks[n].Internal }
	// NATS and MongoDB have no auth: only internal networks reach them.
	for _, name := range append(slices.Clone(natsNodes), "mongo") {
		for _, n := range networks(service(t, p, name)) {
			if !internal(n) {
				t.Errorf("%s is on network %s, which is not internal", name, n)
			}
		}
	}
	prometheus := service(t, p, "prometheus")
	for _, name := range satoruServices {
		s := service(t, p, name)
		for _, dep := range append(slices.Clone(natsNodes), "mongo") {
			if !shareNetwork(s, service(t, p, dep)) {
				t.Errorf("%s cannot reach %s (no shared network)", name, dep)
			}
		}
		if !shareNetwork(s, prometheus) {
			t.Errorf("prometheus cannot scrape %s (no shared network)", name)
		}
	}
	// Out to the sites, and a publishable port.
	for _, name := range []string{"puller", "worker", "syncer", "api", "prometheus", "grafana"} {
		if !slices.ContainsFunc(networks(service(t, p, name)), func(n string) bool { return !internal(n) }) {
			t.Errorf("%s is only on internal networks %v", name, networks(service(t, p, name)))
		}
	}
	if !shareNetwork(service(t, p, "grafana"), prometheus) {
		t.Error("grafana cannot reach prometheus")
	}
	// Prometheus finds the pullers by DNS: sharing exactly one network
	// with them keeps each puller to one address.
	shared := 0
	for n := range prometheus.Networks {
		if _, ok := service(t, p, "puller").Networks[n]; ok {
			shared++
		}
	}
	if shared != 1 {
		t.Errorf("prometheus and puller share %d networks, want 1 (one A record per puller)", shared)
	}
}

// prometheusConfig is the part of prometheus.yml the test reads.
type prometheusConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
		DNSSDConfigs []struct {
			Names []string `yaml:"names"`
			Type  string   `yaml:"type"`
			Port  int      `yaml:"port"`
		} `yaml:"dns_sd_configs"`
	} `yaml:"scrape_configs"`
}

func TestPrometheusScrapesEveryService(t *testing.T) {
	p := loadProject(t)
	prom := service(t, p, "prometheus")
	m, ok := mount(t, prom, "./prometheus")
	if !ok || m.Target != "/etc/prometheus" {
		t.Fatalf("prometheus: want ./prometheus mounted at /etc/prometheus")
	}
	if !slices.Contains(prom.Command, "--config.file=/etc/prometheus/prometheus.yml") {
		t.Errorf("prometheus: command %q does not load /etc/prometheus/prometheus.yml", prom.Command)
	}
	var cfg prometheusConfig
	readYAML(t, filepath.Join(m.Source, "prometheus.yml"), &cfg)
	for _, f := range cfg.RuleFiles {
		if _, err := os.Stat(filepath.Join(m.Source, f)); err != nil {
			t.Errorf("prometheus.yml rule file: %v", err)
		}
	}
	static, dns := map[string]bool{}, map[string]int{}
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName != "satoru" {
			continue
		}
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				static[target] = true
			}
		}
		for _, d := range sc.DNSSDConfigs {
			for _, n := range d.Names {
				if d.Type == "A" {
					dns[n] = d.Port
				}
			}
		}
	}
	for _, name := range satoruServices {
		s := service(t, p, name)
		_, port, _ := strings.Cut(env(s, "SATORU_API_LISTEN"), ":")
		replicated := s.GetScale() > 1 || scalable[name]
		switch {
		case replicated && static[name+":"+port]:
			t.Errorf("prometheus.yml: %s has replicas, but a static target reaches only one of them; use dns_sd_configs", name)
		case replicated && strconv.Itoa(dns[name]) != port:
			t.Errorf("prometheus.yml: want dns_sd_configs name %s type A port %s (one target per replica)", name, port)
		case !replicated && !static[name+":"+port]:
			t.Errorf("prometheus.yml: no static target %s:%s", name, port)
		}
	}
}

func TestGrafanaProvisioning(t *testing.T) {
	p := loadProject(t)
	g := service(t, p, "grafana")
	prov, ok := mount(t, g, "./grafana/provisioning")
	if !ok || prov.Target != "/etc/grafana/provisioning" {
		t.Fatal("grafana: want ./grafana/provisioning mounted at /etc/grafana/provisioning")
	}
	var providers struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join(prov.Source, "dashboards", "satoru.yml"), &providers)
	if len(providers.Providers) == 0 {
		t.Fatal("grafana dashboards provisioning has no provider")
	}
	dashPath := providers.Providers[0].Options.Path
	dash, ok := mount(t, g, "./grafana/dashboards")
	if !ok || dash.Target != dashPath {
		t.Errorf("grafana: dashboards provider reads %s, but ./grafana/dashboards is mounted at %q", dashPath, dash.Target)
	}
	if _, err := os.Stat(filepath.Join(dash.Source, "satoru.json")); err != nil {
		t.Error(err)
	}
	if home := env(g, "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"); home != dashPath+"/satoru.json" {
		t.Errorf("grafana: home dashboard %q, want %s/satoru.json", home, dashPath)
	}

	var ds struct {
		Datasources []struct {
			URL string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join(prov.Source, "datasources", "prometheus.yml"), &ds)
	for _, d := range ds.Datasources {
		u, err := url.Parse(d.URL)
		if err != nil {
			t.Errorf("datasource url %q: %v", d.URL, err)
			continue
		}
		target, ok := p.Services[u.Hostname()]
		if !ok || !shareNetwork(g, target) {
			t.Errorf("grafana datasource %s: no service %q on a network grafana shares", d.URL, u.Hostname())
		}
	}
}

// composeVar matches ${NAME...} in compose.yaml.
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)`)

func TestEnvExample(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(composeDir(t), "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, m := range composeVar.FindAllStringSubmatch(string(raw), -1) {
		used[m[1]] = true
	}
	example := map[string]string{}
	var environ []string
	f, err := os.Open(filepath.Join(composeDir(t), ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf(".env.example: %q is not KEY=value", line)
			continue
		}
		example[k] = v
		environ = append(environ, line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for k := range used {
		if _, ok := example[k]; !ok {
			t.Errorf("compose.yaml uses ${%s}, which .env.example does not document", k)
		}
	}
	for k := range example {
		if !used[k] {
			t.Errorf(".env.example sets %s, which compose.yaml does not use", k)
		}
		if secretWord.MatchString(k) {
			t.Errorf(".env.example sets %s: secrets belong in secrets/ files", k)
		}
	}

	// .env.example's values are the defaults: loading with them changes nothing.
	withDefaults, withExample := loadProject(t), loadProject(t, environ...)
	for name, s := range withDefaults.Services {
		e := withExample.Services[name]
		if !equalEnv(s.Environment, e.Environment) || s.Image != e.Image || !slices.Equal(s.Command, e.Command) || len(s.Ports) != len(e.Ports) {
			t.Errorf("%s: .env.example's values differ from compose.yaml's defaults", name)
			continue
		}
		for i := range s.Ports {
			if s.Ports[i].Published != e.Ports[i].Published || s.Ports[i].HostIP != e.Ports[i].HostIP || s.Ports[i].Target != e.Ports[i].Target {
				t.Errorf("%s: port %+v with .env.example, %+v by default", name, e.Ports[i], s.Ports[i])
			}
		}
	}
}

func equalEnv(a, b types.MappingWithEquals) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || (v == nil) != (w == nil) || (v != nil && *v != *w) {
			return false
		}
	}
	return true
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
