// Package config loads Satoru's configuration: defaults, then an optional
// YAML file, then SATORU_<KEY> environment variables, each key validated
// with an error that names it. Secrets are typed Secret so that printing a
// Config never shows them.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/satoru/satoru/shared/restic"
)

// EnvPrefix starts every environment variable that sets a key.
const EnvPrefix = "SATORU_"

// Config is the whole configuration. Durations are typed; the keys give
// them in whole hours, seconds or days (see Keys and the field comments).
type Config struct {
	StagingRoot              string          // staging_root
	ResticRepoPath           string          // restic_repo_path: a local path or a restic backend location (s3:, rest:, b2:, sftp:, azure:, gs:, rclone:); print restic.RedactLocation
	ResticRepoAccountID      Secret          // SATORU_RESTIC_REPO_ACCOUNT_ID or the contents of restic_repo_account_id_file
	ResticRepoAccountIDFile  string          // restic_repo_account_id_file
	ResticRepoAccountKey     Secret          // SATORU_RESTIC_REPO_ACCOUNT_KEY or the contents of restic_repo_account_key_file
	ResticRepoAccountKeyFile string          // restic_repo_account_key_file
	ResticPasswordFile       string          // restic_password_file (read at Load into ResticPassword)
	ResticPassword           Secret          // SATORU_RESTIC_PASSWORD or the contents of restic_password_file
	ResticRetentionPolicy    RetentionPolicy // restic_retention_policy
	ResticSyncInterval       time.Duration   // restic_sync_interval_hours
	ResticCheckInterval      time.Duration   // restic_check_interval_hours (0 = the scheduler never queues a check)
	ResticCheckSubset        string          // restic_check_read_data_subset
	ResticB2Repository       string          // restic_b2_repository
	ResticB2AccountID        Secret          // restic_b2_account_id or the contents of restic_b2_account_id_file
	ResticB2AccountIDFile    string          // restic_b2_account_id_file
	ResticB2AccountKey       Secret          // restic_b2_account_key or the contents of restic_b2_account_key_file
	ResticB2AccountKeyFile   string          // restic_b2_account_key_file
	ResticBin                string          // restic_bin ("" = find it)
	JobWorkerConcurrency     int             // job_worker_concurrency
	SiteScanInterval         time.Duration   // site_scan_interval_hours
	RetentionInterval        time.Duration   // retention_interval_hours (0 = the scheduler never queues retention)
	VerifyInterval           time.Duration   // verify_interval_hours (0 = the scheduler never queues verify)
	SchedulerTick            time.Duration   // scheduler_tick_seconds
	NATSURL                  string          // nats_url or the contents of nats_url_file ("" with MongoURI "" = embedded); may hold credentials
	NATSURLFile              string          // nats_url_file (read at Load into NATSURL)
	NATSReplicas             int             // nats_replicas: copies of each stream and KV bucket (3 on a 3-node cluster)
	MongoURI                 string          // mongo_uri or the contents of mongo_uri_file; may hold a password: print RedactedMongoURI
	MongoURIFile             string          // mongo_uri_file (read at Load into MongoURI)
	MongoDatabase            string          // mongo_database
	DataDir                  string          // data_dir
	APIListen                string          // api_listen
	APIToken                 Secret          // SATORU_API_TOKEN or the contents of api_token_file
	APITokenFile             string          // api_token_file
	EmbeddedNATSListen       string          // embedded_nats_listen
	EmbeddedStoreListen      string          // embedded_store_listen
	StagingMinFreeBytes      int64           // staging_min_free_bytes
	StagingMinFreePercent    int             // staging_min_free_percent
	SSHConnectTimeout        time.Duration   // ssh_connect_timeout_seconds
	SSHKnownHostsDir         string          // ssh_known_hosts_dir (Load fills "" with <data_dir>/ssh)
	RemoteTmpDir             string          // remote_tmp_dir
	JobAckWait               time.Duration   // job_ack_wait_seconds
	JobHeartbeat             time.Duration   // job_heartbeat_seconds
	SiteLease                time.Duration   // site_lease_seconds
	JobMaxAttempts           int             // job_max_attempts
	JobRetryBase             time.Duration   // job_retry_base_seconds: first backoff after a transient failure
	JobStaleAfter            time.Duration   // job_stale_after_seconds
	JobTimeoutPreflight      time.Duration   // job_timeout_preflight_seconds
	PreflightReuse           time.Duration   // preflight_reuse_seconds: a backup skips the remote checks of a site that passed them this recently with the same settings; 0 = never
	JobTimeoutTarget         time.Duration   // job_timeout_target_seconds: one target's pull
	JobTimeoutSnapshot       time.Duration   // job_timeout_snapshot_seconds: one restic backup
	JobTimeoutRetention      time.Duration   // job_timeout_retention_seconds: one forget --prune
	JobTimeoutSync           time.Duration   // job_timeout_sync_seconds: one offsite copy
	ResticB2Retry            time.Duration   // restic_b2_retry_seconds: how long restic may keep retrying an offsite repository that fails
	HistoryRetention         time.Duration   // history_retention_days
	AuditRetention           time.Duration   // audit_retention_days
	LogLevel                 string          // log_level: debug, info, warn, error
	LogFormat                string          // log_format: text, json
	InstanceName             string          // instance_name (Load fills "" with <hostname>-<pid>)
	WebhookURL               string          // webhook_url ("" = off); may hold a token: print RedactedWebhookURL
}

// Default is the configuration with no file and no environment. Unlike
// Load it leaves SSHKnownHostsDir and InstanceName empty.
func Default() Config {
	return Config{
		StagingRoot:           "./backups",
		ResticRepoPath:        "./repos/restic",
		ResticRetentionPolicy: DefaultRetentionPolicy(),
		ResticSyncInterval:    24 * time.Hour,
		ResticCheckInterval:   168 * time.Hour,
		ResticCheckSubset:     "5%",
		JobWorkerConcurrency:  4,
		NATSReplicas:          1,
		SiteScanInterval:      24 * time.Hour,
		RetentionInterval:     24 * time.Hour,
		VerifyInterval:        168 * time.Hour,
		SchedulerTick:         30 * time.Second,
		MongoDatabase:         "satoru",
		DataDir:               "./data",
		APIListen:             "127.0.0.1:8080",
		StagingMinFreePercent: 5,
		SSHConnectTimeout:     10 * time.Second,
		RemoteTmpDir:          "/tmp",
		JobAckWait:            30 * time.Second, // AckWaitBeats heartbeats
		JobHeartbeat:          10 * time.Second,
		SiteLease:             20 * time.Second, // LeaseBeats heartbeats
		JobMaxAttempts:        5,
		JobStaleAfter:         300 * time.Second, // StaleAckWaits ack waits
		JobTimeoutPreflight:   120 * time.Second,
		PreflightReuse:        600 * time.Second,
		JobRetryBase:          10 * time.Second,
		JobTimeoutTarget:      4 * time.Hour,
		JobTimeoutSnapshot:    6 * time.Hour,
		JobTimeoutRetention:   6 * time.Hour,
		JobTimeoutSync:        12 * time.Hour,
		ResticB2Retry:         2 * time.Minute,
		HistoryRetention:      90 * 24 * time.Hour,
		AuditRetention:        90 * 24 * time.Hour,
		LogLevel:              "info",
		LogFormat:             "text",
	}
}

// Embedded reports whether Satoru runs its own NATS and store in-process:
// true when neither nats_url nor mongo_uri is configured.
func (c Config) Embedded() bool { return c.NATSURL == "" && c.MongoURI == "" }

// RedactedMongoURI is mongo_uri with its password (and credential-like
// query values) replaced by "[redacted]", fit for logs.
func (c Config) RedactedMongoURI() string { return redactURLs(c.MongoURI) }

// RedactedWebhookURL is webhook_url with its user info, path and
// credential-like query values replaced by "[redacted]", fit for logs:
// webhook tokens often sit in the path (https://hooks.example/T/B/TOKEN).
func (c Config) RedactedWebhookURL() string { return RedactWebhookURL(c.WebhookURL) }

// RedactedNATSURL is nats_url with any credentials replaced.
func (c Config) RedactedNATSURL() string { return redactURLs(c.NATSURL) }

// EnvName is the environment variable of a key: SATORU_<KEY>.
func EnvName(key string) string { return EnvPrefix + strings.ToUpper(key) }

// Keys lists every configuration key in a stable order, including the
// ones that may only come from the environment (restic_password,
// api_token).
func Keys() []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.name
	}
	return out
}

// UnknownEnv lists the SATORU_* variables of environ that set no key
// (likely typos), sorted; callers may warn about them.
func UnknownEnv(environ []string) []string {
	known := map[string]bool{}
	for _, s := range specs {
		known[EnvName(s.name)] = true
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix) && !known[name] {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// String lists every key and value on one line, secrets redacted.
func (c Config) String() string {
	var b strings.Builder
	for i, s := range specs {
		if i > 0 {
			b.WriteByte(' ')
		}
		v := s.show(c)
		if v == "" || strings.ContainsAny(v, " \"=\t\n") {
			v = strconv.Quote(v)
		}
		b.WriteString(s.name + "=" + v)
	}
	return b.String()
}

// GoString keeps %#v as safe as %v.
func (c Config) GoString() string { return "config.Config{" + c.String() + "}" }

// LogValue shows every key, secrets redacted.
func (c Config) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, len(specs))
	for _, s := range specs {
		attrs = append(attrs, slog.String(s.name, s.show(c)))
	}
	return slog.GroupValue(attrs...)
}

// MarshalJSON writes every key and value, secrets redacted, so a Config
// dumped as JSON is as safe as one logged.
func (c Config) MarshalJSON() ([]byte, error) {
	m := make(map[string]string, len(specs))
	for _, s := range specs {
		m[s.name] = s.show(c)
	}
	return json.Marshal(m)
}

// Validate reports every invalid value, each error naming its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
	}
	for _, s := range specs {
		if s.check == nil {
			continue
		}
		if err := s.check(c); err != nil {
			bad(s.name, "%v", err)
		}
	}
	if err := c.ResticRetentionPolicy.Validate(); err != nil {
		bad("restic_retention_policy", "%v", err)
	}
	for _, e := range c.crashTimings() {
		bad(e.key, "%s", e.msg)
	}
	if _, err := restic.CredentialsEnv(c.ResticRepoPath, c.ResticRepoAccountID.Value(), c.ResticRepoAccountKey.Value()); err != nil {
		bad("restic_repo_account_id", "with restic_repo_account_key for restic_repo_path %s: %v", restic.RedactLocation(c.ResticRepoPath), err)
	}
	if c.ResticB2AccountID.IsSet() != c.ResticB2AccountKey.IsSet() {
		bad("restic_b2_account_key", "restic_b2_account_id and restic_b2_account_key must be set together")
	}
	if (c.ResticB2AccountID.IsSet() || c.ResticB2AccountKey.IsSet()) && c.ResticB2Repository == "" {
		bad("restic_b2_repository", "required when restic_b2_account_id/_key are set")
	}
	return errors.Join(errs...)
}

// How the crash timings follow job_heartbeat_seconds when not given. A
// worker renews its site lease and sends InProgress every heartbeat
// (InProgress every third of the ack wait), so a crashed worker's job is
// redelivered within AckWaitBeats heartbeats; its lease, LeaseBeats
// heartbeats long, has expired by then, so the next worker starts at
// once. The leader scheduler's stale-job recovery, the safety net for a
// request the stream lost, waits StaleAckWaits ack waits.
const (
	AckWaitBeats  = 3
	LeaseBeats    = 2
	StaleAckWaits = 10
)

type keyProblem struct{ key, msg string }

// crashTimings checks that a crashed worker is noticed within three
// heartbeats and its job can start again at once (see AckWaitBeats).
func (c Config) crashTimings() []keyProblem {
	hb, ack, lease, stale := c.JobHeartbeat/time.Second, c.JobAckWait/time.Second, c.SiteLease/time.Second, c.JobStaleAfter/time.Second
	if hb <= 0 || ack <= 0 || lease <= 0 || stale <= 0 {
		return nil // the range checks report these
	}
	var out []keyProblem
	if ack > AckWaitBeats*hb {
		out = append(out, keyProblem{"job_ack_wait_seconds", fmt.Sprintf(
			"must be at most %d x job_heartbeat_seconds (%d) so a crashed worker's job is redelivered within %d heartbeats, got %d",
			AckWaitBeats, AckWaitBeats*hb, AckWaitBeats, ack)})
	}
	if lease <= hb {
		out = append(out, keyProblem{"site_lease_seconds", fmt.Sprintf(
			"must be more than job_heartbeat_seconds (%d) so heartbeats renew the lease, got %d", hb, lease)})
	} else if lease > ack-hb {
		out = append(out, keyProblem{"site_lease_seconds", fmt.Sprintf(
			"must be at most job_ack_wait_seconds - job_heartbeat_seconds (%d - %d = %d) so a crashed worker's lease has expired when its job is redelivered, got %d",
			ack, hb, ack-hb, lease)})
	}
	if stale <= ack {
		out = append(out, keyProblem{"job_stale_after_seconds", fmt.Sprintf(
			"must be more than job_ack_wait_seconds (%d): the scheduler recovers a job only after the stream had the time to redeliver it, got %d",
			ack, stale)})
	}
	return out
}

// Load reads the YAML file at path (none if path is ""), then the
// SATORU_<KEY> variables of environ (each "NAME=value"; an empty value
// counts as unset), reads secret files, fills the derived defaults and
// validates. Every error names its key and where the value came from, and
// never shows a secret's value or a secret file's contents.
func Load(path string, environ []string) (Config, error) {
	c := Default()
	vals := map[string]value{}
	var errs []error

	if path != "" {
		fileVals, err := readFile(path)
		if err != nil {
			return Config{}, err
		}
		for k, v := range fileVals {
			vals[k] = v
		}
	}
	byEnv := map[string]*spec{}
	for i := range specs {
		byEnv[EnvName(specs[i].name)] = &specs[i]
	}
	for _, kv := range environ {
		name, text, ok := strings.Cut(kv, "=")
		if !ok || text == "" {
			continue
		}
		if s := byEnv[name]; s != nil {
			vals[s.name] = value{text: text, origin: name}
		}
	}

	for _, s := range specs {
		v, ok := vals[s.name]
		if !ok {
			continue
		}
		if err := s.set(&c, v); err != nil {
			errs = append(errs, v.errorf(s.name, "%v", err))
		}
	}

	// Secrets given by file: read now so a missing file fails at start.
	for _, f := range secretFiles {
		v, hasValue := vals[f.valueKey]
		fv, hasFile := vals[f.fileKey]
		if !hasFile {
			continue
		}
		if hasValue {
			errs = append(errs, fmt.Errorf("config: %s: set either %s or %s, not both (%s is set by %s)",
				f.fileKey, f.valueKey, f.fileKey, f.valueKey, v.origin))
			continue
		}
		secret, err := readSecretFile(*f.path(&c))
		if err != nil {
			errs = append(errs, fv.errorf(f.fileKey, "%v", err))
			continue
		}
		*f.secret(&c) = secret
	}
	// Connection strings given by file: they carry credentials (the
	// files `satoru up` writes for joining workers, compose secrets).
	for _, f := range []struct {
		valueKey, fileKey string
		path, dst         *string
		check             func(string) error
	}{
		{"nats_url", "nats_url_file", &c.NATSURLFile, &c.NATSURL, checkNATSURL},
		{"mongo_uri", "mongo_uri_file", &c.MongoURIFile, &c.MongoURI, checkMongoURI},
	} {
		fv, hasFile := vals[f.fileKey]
		if !hasFile {
			continue
		}
		if v, hasValue := vals[f.valueKey]; hasValue {
			errs = append(errs, fmt.Errorf("config: %s: set either %s or %s, not both (%s is set by %s)",
				f.fileKey, f.valueKey, f.fileKey, f.valueKey, v.origin))
			continue
		}
		text, err := readSecretFile(*f.path)
		if err == nil {
			*f.dst = text.Value()
			if f.fileKey == "mongo_uri_file" {
				*f.dst = ResolveTLSFiles(*f.dst, filepath.Dir(*f.path))
			}
			err = f.check(*f.dst)
		}
		if err != nil {
			errs = append(errs, fv.errorf(f.fileKey, "%v", err))
		}
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}

	// Crash timings not given follow the heartbeat (and ack wait).
	if _, ok := vals["job_ack_wait_seconds"]; !ok {
		c.JobAckWait = AckWaitBeats * c.JobHeartbeat
	}
	if _, ok := vals["site_lease_seconds"]; !ok {
		// Short enough to expire before a given ack wait redelivers.
		c.SiteLease = min(LeaseBeats*c.JobHeartbeat, c.JobAckWait-c.JobHeartbeat)
	}
	if _, ok := vals["job_stale_after_seconds"]; !ok {
		c.JobStaleAfter = StaleAckWaits * c.JobAckWait
	}
	if c.SSHKnownHostsDir == "" {
		c.SSHKnownHostsDir = filepath.Join(c.DataDir, "ssh")
	}
	if c.InstanceName == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "satoru"
		}
		if host = sanitizeInstance(host); host == "" {
			host = "satoru"
		}
		c.InstanceName = host + "-" + strconv.Itoa(os.Getpid())
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// secretFiles pairs each secret with its *_file key.
var secretFiles = []struct {
	valueKey, fileKey string
	path              func(*Config) *string
	secret            func(*Config) *Secret
}{
	{"restic_password", "restic_password_file", func(c *Config) *string { return &c.ResticPasswordFile }, func(c *Config) *Secret { return &c.ResticPassword }},
	{"restic_repo_account_id", "restic_repo_account_id_file", func(c *Config) *string { return &c.ResticRepoAccountIDFile }, func(c *Config) *Secret { return &c.ResticRepoAccountID }},
	{"restic_repo_account_key", "restic_repo_account_key_file", func(c *Config) *string { return &c.ResticRepoAccountKeyFile }, func(c *Config) *Secret { return &c.ResticRepoAccountKey }},
	{"restic_b2_account_id", "restic_b2_account_id_file", func(c *Config) *string { return &c.ResticB2AccountIDFile }, func(c *Config) *Secret { return &c.ResticB2AccountID }},
	{"restic_b2_account_key", "restic_b2_account_key_file", func(c *Config) *string { return &c.ResticB2AccountKeyFile }, func(c *Config) *Secret { return &c.ResticB2AccountKey }},
	{"api_token", "api_token_file", func(c *Config) *string { return &c.APITokenFile }, func(c *Config) *Secret { return &c.APIToken }},
}

// maxSecretFile bounds a secret file; anything larger is the wrong file.
const maxSecretFile = 64 << 10

// readSecretFile reads a secret, trimming surrounding whitespace (as restic
// does for --password-file). Its errors show the path, never the contents.
func readSecretFile(path string) (Secret, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %q: %w", path, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("cannot read %q: %w", path, unwrapPath(err))
	}
	if st.IsDir() {
		return "", fmt.Errorf("%q is a directory, not a file", path)
	}
	if err := CheckSecretMode(path, st.Mode()); err != nil {
		return "", err
	}
	buf, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("cannot read %q: %w", path, unwrapPath(err))
	}
	if len(buf) > maxSecretFile {
		return "", fmt.Errorf("%q is larger than %d KiB; is it the right file?", path, maxSecretFile>>10)
	}
	s := strings.TrimSpace(string(buf))
	if s == "" {
		return "", fmt.Errorf("%q is empty", path)
	}
	return Secret(s), nil
}

// tlsFileOptions are the MongoDB URI options that name files.
var tlsFileOptions = []string{"tlsCAFile", "tlsCertificateKeyFile"}

// ResolveTLSFiles makes the relative file paths of a MongoDB URI's TLS
// options (tlsCAFile, tlsCertificateKeyFile) relative to dir, the folder
// of the file the URI came from, so a folder of join files works wherever
// it is copied. Other URIs come back unchanged.
func ResolveTLSFiles(uri, dir string) string {
	base, query, ok := strings.Cut(uri, "?")
	if !ok {
		return uri
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return uri
	}
	changed := false
	for _, k := range tlsFileOptions {
		if v := q.Get(k); v != "" && !filepath.IsAbs(v) {
			q.Set(k, filepath.Join(dir, v))
			changed = true
		}
	}
	if !changed {
		return uri
	}
	return base + "?" + q.Encode()
}

// CheckSecretMode refuses a secret file that its group or others may
// read or write: another local user could read the secret, or replace it.
// mode is the file's (symlinks followed). The error names the fix.
func CheckSecretMode(path string, mode os.FileMode) error {
	if mode.Perm()&0o077 == 0 {
		return nil
	}
	return fmt.Errorf("%q is open to its group or others (mode %04o); a secret file must be its owner's alone: chmod 600 %s",
		path, mode.Perm(), path)
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var instanceUnsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func sanitizeInstance(host string) string {
	host = instanceUnsafe.ReplaceAllString(host, "_")
	if len(host) > 100 {
		host = host[:100]
	}
	return strings.Trim(host, "._-")
}

// --- key table ---

// value is one key's raw setting and where it came from.
type value struct {
	text   string
	node   *yaml.Node // set for values from the YAML file
	origin string     // "SATORU_X" or "<file> line N"
}

// errorf formats "config: <key>: <msg> (from <origin>)".
func (v value) errorf(key, format string, args ...any) error {
	return fmt.Errorf("config: %s: %s (from %s)", key, fmt.Sprintf(format, args...), v.origin)
}

// spec describes one key: how to set it from text, how to show it, and
// how to check the typed value.
type spec struct {
	name    string
	envOnly bool // may only come from the environment (or its _file key)
	set     func(*Config, value) error
	show    func(Config) string
	check   func(Config) error
}

func strSpec(name string, field func(*Config) *string, check func(string) error) spec {
	full := func(s string) error {
		if err := noControl(s); err != nil {
			return err
		}
		if check != nil {
			return check(s)
		}
		return nil
	}
	return spec{
		name: name,
		set: func(c *Config, v value) error {
			if err := full(v.text); err != nil {
				return err
			}
			*field(c) = v.text
			return nil
		},
		show:  func(c Config) string { return *field(&c) },
		check: func(c Config) error { return full(*field(&c)) },
	}
}

func secretSpec(name string, envOnly bool, field func(*Config) *Secret) spec {
	return spec{
		name:    name,
		envOnly: envOnly,
		set: func(c *Config, v value) error {
			*field(c) = Secret(v.text)
			return nil
		},
		show: func(c Config) string { return field(&c).String() },
	}
}

// intWord names the kind of integer a key takes, for messages.
func intWord(min int64) string {
	if min >= 1 {
		return "a positive integer"
	}
	return "a non-negative integer"
}

func checkRange(n, min, max int64) error {
	switch {
	case n < min && min == 1:
		return fmt.Errorf("must be a positive integer, got %d", n)
	case n < min && min == 0:
		return fmt.Errorf("must not be negative, got %d", n)
	case n < min || n > max:
		return fmt.Errorf("must be between %d and %d, got %d", min, max, n)
	}
	return nil
}

func parseInt(text string, min int64) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("must be %s, got %q", intWord(min), clip(text))
	}
	return n, nil
}

func intSpec(name string, min, max int64, get func(Config) int64, put func(*Config, int64)) spec {
	return spec{
		name: name,
		set: func(c *Config, v value) error {
			n, err := parseInt(v.text, min)
			if err != nil {
				return err
			}
			if err := checkRange(n, min, max); err != nil {
				return err
			}
			put(c, n)
			return nil
		},
		show:  func(c Config) string { return strconv.FormatInt(get(c), 10) },
		check: func(c Config) error { return checkRange(get(c), min, max) },
	}
}

func durSpec(name string, unit time.Duration, min, max int64, field func(*Config) *time.Duration) spec {
	s := intSpec(name, min, max,
		func(c Config) int64 { return int64(*field(&c) / unit) },
		func(c *Config, n int64) { *field(c) = time.Duration(n) * unit })
	s.check = func(c Config) error {
		d := *field(&c)
		if d%unit != 0 {
			return fmt.Errorf("must be a whole number of %s, got %s", unitName(unit), d)
		}
		return checkRange(int64(d/unit), min, max)
	}
	return s
}

func unitName(u time.Duration) string {
	switch u {
	case time.Hour:
		return "hours"
	case 24 * time.Hour:
		return "days"
	}
	return "seconds"
}

func enumSpec(name string, allowed []string, field func(*Config) *string) spec {
	check := func(s string) error {
		for _, a := range allowed {
			if s == a {
				return nil
			}
		}
		return fmt.Errorf("must be one of %s, got %q", strings.Join(allowed, ", "), clip(s))
	}
	return spec{
		name: name,
		set: func(c *Config, v value) error {
			s := strings.ToLower(strings.TrimSpace(v.text))
			if err := check(s); err != nil {
				return err
			}
			*field(c) = s
			return nil
		},
		show:  func(c Config) string { return *field(&c) },
		check: func(c Config) error { return check(*field(&c)) },
	}
}

const (
	maxHours   = 366 * 24
	maxSeconds = 24 * 60 * 60
)

var specs = []spec{
	strSpec("staging_root", func(c *Config) *string { return &c.StagingRoot }, required),
	{
		// A rest: URL may carry a password: shown redacted, and its
		// check's messages name the scheme only.
		name: "restic_repo_path",
		set: func(c *Config, v value) error {
			if err := checkRepoLocation(v.text); err != nil {
				return err
			}
			c.ResticRepoPath = v.text
			return nil
		},
		show:  func(c Config) string { return restic.RedactLocation(c.ResticRepoPath) },
		check: func(c Config) error { return checkRepoLocation(c.ResticRepoPath) },
	},
	secretSpec("restic_repo_account_id", true, func(c *Config) *Secret { return &c.ResticRepoAccountID }),
	strSpec("restic_repo_account_id_file", func(c *Config) *string { return &c.ResticRepoAccountIDFile }, nil),
	secretSpec("restic_repo_account_key", true, func(c *Config) *Secret { return &c.ResticRepoAccountKey }),
	strSpec("restic_repo_account_key_file", func(c *Config) *string { return &c.ResticRepoAccountKeyFile }, nil),
	strSpec("restic_password_file", func(c *Config) *string { return &c.ResticPasswordFile }, nil),
	secretSpec("restic_password", true, func(c *Config) *Secret { return &c.ResticPassword }),
	{
		name: "restic_retention_policy",
		set: func(c *Config, v value) error {
			var p RetentionPolicy
			var err error
			if v.node != nil {
				p, err = parseRetentionYAML(v.node)
			} else {
				p, err = parseRetentionJSON(v.text)
			}
			if err != nil {
				return err
			}
			if err := p.Validate(); err != nil {
				return err
			}
			c.ResticRetentionPolicy = p
			return nil
		},
		show: func(c Config) string { return c.ResticRetentionPolicy.String() },
	},
	durSpec("restic_sync_interval_hours", time.Hour, 1, maxHours, func(c *Config) *time.Duration { return &c.ResticSyncInterval }),
	durSpec("restic_check_interval_hours", time.Hour, 0, maxHours, func(c *Config) *time.Duration { return &c.ResticCheckInterval }),
	strSpec("restic_check_read_data_subset", func(c *Config) *string { return &c.ResticCheckSubset }, checkSubset),
	strSpec("restic_b2_repository", func(c *Config) *string { return &c.ResticB2Repository }, nil),
	secretSpec("restic_b2_account_id", false, func(c *Config) *Secret { return &c.ResticB2AccountID }),
	strSpec("restic_b2_account_id_file", func(c *Config) *string { return &c.ResticB2AccountIDFile }, nil),
	secretSpec("restic_b2_account_key", false, func(c *Config) *Secret { return &c.ResticB2AccountKey }),
	strSpec("restic_b2_account_key_file", func(c *Config) *string { return &c.ResticB2AccountKeyFile }, nil),
	strSpec("restic_bin", func(c *Config) *string { return &c.ResticBin }, nil),
	intSpec("job_worker_concurrency", 1, 256,
		func(c Config) int64 { return int64(c.JobWorkerConcurrency) }, func(c *Config, n int64) { c.JobWorkerConcurrency = int(n) }),
	intSpec("nats_replicas", 1, 5,
		func(c Config) int64 { return int64(c.NATSReplicas) }, func(c *Config, n int64) { c.NATSReplicas = int(n) }),
	durSpec("site_scan_interval_hours", time.Hour, 1, maxHours, func(c *Config) *time.Duration { return &c.SiteScanInterval }),
	durSpec("retention_interval_hours", time.Hour, 0, maxHours, func(c *Config) *time.Duration { return &c.RetentionInterval }),
	durSpec("verify_interval_hours", time.Hour, 0, maxHours, func(c *Config) *time.Duration { return &c.VerifyInterval }),
	durSpec("scheduler_tick_seconds", time.Second, 1, maxSeconds, func(c *Config) *time.Duration { return &c.SchedulerTick }),
	{
		name: "nats_url",
		set: func(c *Config, v value) error {
			c.NATSURL = strings.TrimSpace(v.text)
			return checkNATSURL(c.NATSURL)
		},
		show:  func(c Config) string { return c.RedactedNATSURL() },
		check: func(c Config) error { return checkNATSURL(c.NATSURL) },
	},
	{
		name: "mongo_uri",
		set: func(c *Config, v value) error {
			c.MongoURI = strings.TrimSpace(v.text)
			return checkMongoURI(c.MongoURI)
		},
		show:  func(c Config) string { return c.RedactedMongoURI() },
		check: func(c Config) error { return checkMongoURI(c.MongoURI) },
	},
	strSpec("nats_url_file", func(c *Config) *string { return &c.NATSURLFile }, nil),
	strSpec("mongo_uri_file", func(c *Config) *string { return &c.MongoURIFile }, nil),
	strSpec("mongo_database", func(c *Config) *string { return &c.MongoDatabase }, checkDatabase),
	strSpec("data_dir", func(c *Config) *string { return &c.DataDir }, required),
	strSpec("api_listen", func(c *Config) *string { return &c.APIListen }, checkListen),
	secretSpec("api_token", true, func(c *Config) *Secret { return &c.APIToken }),
	strSpec("api_token_file", func(c *Config) *string { return &c.APITokenFile }, nil),
	strSpec("embedded_nats_listen", func(c *Config) *string { return &c.EmbeddedNATSListen }, optionalListen),
	strSpec("embedded_store_listen", func(c *Config) *string { return &c.EmbeddedStoreListen }, optionalListen),
	intSpec("staging_min_free_bytes", 0, math.MaxInt64,
		func(c Config) int64 { return c.StagingMinFreeBytes }, func(c *Config, n int64) { c.StagingMinFreeBytes = n }),
	intSpec("staging_min_free_percent", 0, 100,
		func(c Config) int64 { return int64(c.StagingMinFreePercent) }, func(c *Config, n int64) { c.StagingMinFreePercent = int(n) }),
	durSpec("ssh_connect_timeout_seconds", time.Second, 1, 3600, func(c *Config) *time.Duration { return &c.SSHConnectTimeout }),
	strSpec("ssh_known_hosts_dir", func(c *Config) *string { return &c.SSHKnownHostsDir }, nil),
	strSpec("remote_tmp_dir", func(c *Config) *string { return &c.RemoteTmpDir }, checkRemoteTmp),
	durSpec("job_ack_wait_seconds", time.Second, 1, maxSeconds, func(c *Config) *time.Duration { return &c.JobAckWait }),
	durSpec("job_heartbeat_seconds", time.Second, 1, maxSeconds, func(c *Config) *time.Duration { return &c.JobHeartbeat }),
	durSpec("site_lease_seconds", time.Second, 1, maxSeconds, func(c *Config) *time.Duration { return &c.SiteLease }),
	intSpec("job_max_attempts", 1, 100,
		func(c Config) int64 { return int64(c.JobMaxAttempts) }, func(c *Config, n int64) { c.JobMaxAttempts = int(n) }),
	durSpec("job_retry_base_seconds", time.Second, 1, 3600, func(c *Config) *time.Duration { return &c.JobRetryBase }),
	durSpec("job_stale_after_seconds", time.Second, 1, maxSeconds, func(c *Config) *time.Duration { return &c.JobStaleAfter }),
	durSpec("job_timeout_preflight_seconds", time.Second, 1, maxSeconds, func(c *Config) *time.Duration { return &c.JobTimeoutPreflight }),
	durSpec("preflight_reuse_seconds", time.Second, 0, maxSeconds, func(c *Config) *time.Duration { return &c.PreflightReuse }),
	durSpec("job_timeout_target_seconds", time.Second, 1, maxSeconds, func(c *Config) *time.Duration { return &c.JobTimeoutTarget }),
	durSpec("job_timeout_snapshot_seconds", time.Second, 1, maxSeconds, func(c *Config) *time.Duration { return &c.JobTimeoutSnapshot }),
	durSpec("job_timeout_retention_seconds", time.Second, 1, maxSeconds, func(c *Config) *time.Duration { return &c.JobTimeoutRetention }),
	durSpec("job_timeout_sync_seconds", time.Second, 1, maxSeconds, func(c *Config) *time.Duration { return &c.JobTimeoutSync }),
	durSpec("restic_b2_retry_seconds", time.Second, 1, 3600, func(c *Config) *time.Duration { return &c.ResticB2Retry }),
	durSpec("history_retention_days", 24*time.Hour, 1, 36500, func(c *Config) *time.Duration { return &c.HistoryRetention }),
	durSpec("audit_retention_days", 24*time.Hour, 1, 36500, func(c *Config) *time.Duration { return &c.AuditRetention }),
	enumSpec("log_level", []string{"debug", "info", "warn", "error"}, func(c *Config) *string { return &c.LogLevel }),
	enumSpec("log_format", []string{"text", "json"}, func(c *Config) *string { return &c.LogFormat }),
	strSpec("instance_name", func(c *Config) *string { return &c.InstanceName }, checkInstance),
	{
		name: "webhook_url",
		set: func(c *Config, v value) error {
			c.WebhookURL = strings.TrimSpace(v.text)
			return checkWebhookURL(c.WebhookURL)
		},
		show:  func(c Config) string { return c.RedactedWebhookURL() },
		check: func(c Config) error { return checkWebhookURL(c.WebhookURL) },
	},
}

// --- value checks (messages never include secret values) ---

func noControl(s string) error {
	if strings.ContainsAny(s, "\x00\n\r") {
		return errors.New("must not contain NUL, newline or carriage return")
	}
	return nil
}

// checkRepoLocation accepts a local path or a restic backend location.
func checkRepoLocation(s string) error {
	if err := noControl(s); err != nil {
		return err
	}
	return restic.CheckLocation(s)
}

func required(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("must not be empty")
	}
	return nil
}

// optionalListen is checkListen, or "" for no listener.
func optionalListen(s string) error {
	if s == "" {
		return nil
	}
	return checkListen(s)
}

func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("must be host:port (e.g. 127.0.0.1:8080), got %q", clip(s))
	}
	if strings.ContainsAny(host, " \t") {
		return fmt.Errorf("host must not contain spaces, got %q", clip(s))
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port must be a number from 0 to 65535, got %q", clip(s))
	}
	return nil
}

var natsSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}

// checkNATSURL accepts a comma-separated list of nats://, tls://, ws:// or
// wss:// URLs. Messages show the redacted URL (it may carry credentials).
func checkNATSURL(s string) error {
	if s == "" {
		return nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		u, err := url.Parse(part)
		if err != nil || !natsSchemes[strings.ToLower(u.Scheme)] || u.Host == "" {
			return fmt.Errorf("must be a comma-separated list of nats://host:port URLs (schemes nats, tls, ws, wss), got %q", redactURL(part))
		}
	}
	return nil
}

// checkWebhookURL accepts "" (off) or one http:// or https:// URL with a
// host. Messages show the redacted URL (it may carry a token).
func checkWebhookURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(s, " \t\n\r") {
		return fmt.Errorf("must be an http:// or https:// URL with a host, got %q", RedactWebhookURL(s))
	}
	return nil
}

// checkMongoURI checks the scheme and that there is a host; it never
// shows the URI, which may hold a password.
func checkMongoURI(s string) error {
	if s == "" {
		return nil
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || (scheme != "mongodb" && scheme != "mongodb+srv") {
		return errors.New("must start with mongodb:// or mongodb+srv://")
	}
	host := rest
	if i := strings.IndexAny(host, "/?"); i >= 0 {
		host = host[:i]
	}
	if at := strings.LastIndex(host, "@"); at >= 0 {
		host = host[at+1:]
	}
	if host == "" {
		return errors.New("has no host")
	}
	if strings.ContainsAny(s, " \t") {
		return errors.New("must not contain spaces")
	}
	return nil
}

// checkDatabase applies MongoDB's database name rules.
func checkDatabase(s string) error {
	if s == "" || len(s) > 63 || strings.ContainsAny(s, "/\\. \"$*<>:|?") {
		return fmt.Errorf("must be 1 to 63 characters without /\\. \"$*<>:|?, got %q", clip(s))
	}
	return nil
}

func checkRemoteTmp(s string) error {
	if !strings.HasPrefix(s, "/") {
		return fmt.Errorf("must be an absolute path, got %q", clip(s))
	}
	return nil
}

var instanceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func checkInstance(s string) error {
	if s != "" && !instanceName.MatchString(s) {
		return fmt.Errorf("must be 1 to 128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit, got %q", clip(s))
	}
	return nil
}

// checkSubset accepts "" (structure only), a percentage, n/t or a size.
func checkSubset(s string) error { return restic.ValidSubset(s) }
