package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Default()
	want.SSHKnownHostsDir = filepath.Join("./data", "ssh")
	want.InstanceName = c.InstanceName
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %s\nwant %s", c, want)
	}
	if !strings.HasSuffix(c.InstanceName, fmt.Sprintf("-%d", os.Getpid())) {
		t.Errorf("InstanceName = %q, want <hostname>-<pid>", c.InstanceName)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"staging_root", c.StagingRoot, "./backups"},
		{"restic_repo_path", c.ResticRepoPath, "./repos/restic"},
		{"retention", c.ResticRetentionPolicy, RetentionPolicy{KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 12}},
		{"sync", c.ResticSyncInterval, 24 * time.Hour},
		{"concurrency", c.JobWorkerConcurrency, 4},
		{"scan", c.SiteScanInterval, 24 * time.Hour},
		{"retention interval", c.RetentionInterval, 24 * time.Hour},
		{"scheduler tick", c.SchedulerTick, 30 * time.Second},
		{"mongo_database", c.MongoDatabase, "satoru"},
		{"data_dir", c.DataDir, "./data"},
		{"api_listen", c.APIListen, "127.0.0.1:8080"},
		{"embedded_nats_listen", c.EmbeddedNATSListen, ""},
		{"embedded_store_listen", c.EmbeddedStoreListen, ""},
		{"staging_min_free_percent", c.StagingMinFreePercent, 5},
		{"ssh_connect_timeout", c.SSHConnectTimeout, 10 * time.Second},
		{"remote_tmp_dir", c.RemoteTmpDir, "/tmp"},
		{"ack_wait", c.JobAckWait, 30 * time.Second},
		{"heartbeat", c.JobHeartbeat, 10 * time.Second},
		{"lease", c.SiteLease, 20 * time.Second},
		{"attempts", c.JobMaxAttempts, 5},
		{"stale after", c.JobStaleAfter, 5 * time.Minute},
		{"preflight timeout", c.JobTimeoutPreflight, 2 * time.Minute},
		{"history", c.HistoryRetention, 90 * 24 * time.Hour},
		{"audit", c.AuditRetention, 90 * 24 * time.Hour},
		{"log_level", c.LogLevel, "info"},
		{"log_format", c.LogFormat, "text"},
		{"embedded", c.Embedded(), true},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if err := Default().Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "satoru.yaml", `
staging_root: /srv/staging
job_worker_concurrency: 8
site_scan_interval_hours: 12
log_level: debug
data_dir: /var/lib/satoru
restic_retention_policy:
  keep_last: 3
  keep_within: 30d
`)
	tests := []struct {
		name  string
		path  string
		env   []string
		check func(t *testing.T, c Config)
	}{
		{"file only", file, nil, func(t *testing.T, c Config) {
			if c.StagingRoot != "/srv/staging" || c.JobWorkerConcurrency != 8 || c.SiteScanInterval != 12*time.Hour || c.LogLevel != "debug" {
				t.Errorf("file values not applied: %s", c)
			}
			if c.ResticRetentionPolicy != (RetentionPolicy{KeepLast: 3, KeepWithin: "30d"}) {
				t.Errorf("policy = %+v", c.ResticRetentionPolicy)
			}
			if c.SSHKnownHostsDir != "/var/lib/satoru/ssh" {
				t.Errorf("ssh_known_hosts_dir = %q, want <data_dir>/ssh", c.SSHKnownHostsDir)
			}
			if c.ResticRepoPath != "./repos/restic" {
				t.Errorf("unset key lost its default: %q", c.ResticRepoPath)
			}
		}},
		{"env beats file", file, []string{"SATORU_JOB_WORKER_CONCURRENCY=16", "SATORU_LOG_LEVEL=WARN", "SATORU_SSH_KNOWN_HOSTS_DIR=/etc/satoru/kh"}, func(t *testing.T, c Config) {
			if c.JobWorkerConcurrency != 16 || c.LogLevel != "warn" || c.StagingRoot != "/srv/staging" || c.SSHKnownHostsDir != "/etc/satoru/kh" {
				t.Errorf("env did not override: %s", c)
			}
		}},
		{"empty env is unset", file, []string{"SATORU_JOB_WORKER_CONCURRENCY="}, func(t *testing.T, c Config) {
			if c.JobWorkerConcurrency != 8 {
				t.Errorf("concurrency = %d, want the file's 8", c.JobWorkerConcurrency)
			}
		}},
		{"env only", "", []string{"SATORU_NATS_URL=nats://a:4222,nats://b:4222", "SATORU_MONGO_URI=mongodb://u:p@h1,h2/db", "PATH=/bin", "SATORU_UNRELATED=1"}, func(t *testing.T, c Config) {
			if c.Embedded() || c.NATSURL != "nats://a:4222,nats://b:4222" || c.MongoURI != "mongodb://u:p@h1,h2/db" {
				t.Errorf("env urls: %s", c)
			}
		}},
		{"retention policy JSON in env", file, []string{`SATORU_RESTIC_RETENTION_POLICY={"keep_last":2,"keep_daily":7}`}, func(t *testing.T, c Config) {
			want := RetentionPolicy{KeepLast: 2, KeepDaily: 7}
			if c.ResticRetentionPolicy != want {
				t.Errorf("policy = %+v, want %+v (a given policy replaces the file's)", c.ResticRetentionPolicy, want)
			}
		}},
		{"durations", "", []string{"SATORU_JOB_ACK_WAIT_SECONDS=80", "SATORU_JOB_HEARTBEAT_SECONDS=30", "SATORU_SITE_LEASE_SECONDS=45", "SATORU_HISTORY_RETENTION_DAYS=30", "SATORU_RESTIC_SYNC_INTERVAL_HOURS=6", "SATORU_JOB_STALE_AFTER_SECONDS=600"}, func(t *testing.T, c Config) {
			if c.JobAckWait != 80*time.Second || c.JobHeartbeat != 30*time.Second || c.SiteLease != 45*time.Second || c.JobStaleAfter != 10*time.Minute ||
				c.HistoryRetention != 30*24*time.Hour || c.ResticSyncInterval != 6*time.Hour {
				t.Errorf("durations: %s", c)
			}
		}},
		{"scheduler keys", "", []string{"SATORU_RETENTION_INTERVAL_HOURS=168", "SATORU_SCHEDULER_TICK_SECONDS=5"}, func(t *testing.T, c Config) {
			if c.RetentionInterval != 7*24*time.Hour || c.SchedulerTick != 5*time.Second {
				t.Errorf("scheduler keys: %s", c)
			}
		}},
		{"retention interval zero turns retention off", "", []string{"SATORU_RETENTION_INTERVAL_HOURS=0"}, func(t *testing.T, c Config) {
			if c.RetentionInterval != 0 {
				t.Errorf("retention interval = %s, want 0", c.RetentionInterval)
			}
		}},
		{"explicit instance name", "", []string{"SATORU_INSTANCE_NAME=worker-1"}, func(t *testing.T, c Config) {
			if c.InstanceName != "worker-1" {
				t.Errorf("instance = %q", c.InstanceName)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.path, tc.env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tc.check(t, c)
		})
	}
}

func TestSecretFiles(t *testing.T) {
	pw := writeFile(t, "pw", "correct horse\n")
	tok := writeFile(t, "tok", "  tok-123\n")
	id := writeFile(t, "id", "b2id")
	key := writeFile(t, "key", "b2key")
	empty := writeFile(t, "empty", "\n")
	c, err := Load("", []string{
		"SATORU_RESTIC_PASSWORD_FILE=" + pw, "SATORU_API_TOKEN_FILE=" + tok,
		"SATORU_RESTIC_B2_ACCOUNT_ID_FILE=" + id, "SATORU_RESTIC_B2_ACCOUNT_KEY_FILE=" + key,
		"SATORU_RESTIC_B2_REPOSITORY=s3:http://127.0.0.1:9000/bucket",
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.ResticPassword.Value() != "correct horse" || c.APIToken.Value() != "tok-123" ||
		c.ResticB2AccountID.Value() != "b2id" || c.ResticB2AccountKey.Value() != "b2key" {
		t.Errorf("secrets not read from files")
	}

	bad := []struct {
		name string
		env  []string
		want []string
	}{
		{"missing file", []string{"SATORU_API_TOKEN_FILE=/nonexistent/tok"}, []string{"api_token_file", "/nonexistent/tok", "no such file"}},
		{"empty file", []string{"SATORU_RESTIC_PASSWORD_FILE=" + empty}, []string{"restic_password_file", empty, "empty"}},
		{"directory", []string{"SATORU_API_TOKEN_FILE=" + t.TempDir()}, []string{"api_token_file", "directory"}},
		{"value and file", []string{"SATORU_API_TOKEN=abc", "SATORU_API_TOKEN_FILE=" + tok}, []string{"api_token_file", "not both"}},
		{"b2 id without key", []string{"SATORU_RESTIC_B2_ACCOUNT_ID=x", "SATORU_RESTIC_B2_REPOSITORY=b2:bucket"}, []string{"restic_b2_account_key", "together"}},
		{"b2 creds without repo", []string{"SATORU_RESTIC_B2_ACCOUNT_ID=x", "SATORU_RESTIC_B2_ACCOUNT_KEY=y"}, []string{"restic_b2_repository", "required"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load("", tc.env)
			if err == nil {
				t.Fatal("Load succeeded, want error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, secret := range []string{"correct horse", "tok-123"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows a secret", err)
				}
			}
		})
	}
}

func TestBadValues(t *testing.T) {
	tests := []struct {
		name string
		env  string // NAME=value
		want string // substring, besides the key name
	}{
		{"concurrency not a number", "SATORU_JOB_WORKER_CONCURRENCY=abc", `job_worker_concurrency: must be a positive integer, got "abc"`},
		{"concurrency zero", "SATORU_JOB_WORKER_CONCURRENCY=0", "job_worker_concurrency: must be a positive integer, got 0"},
		{"concurrency too big", "SATORU_JOB_WORKER_CONCURRENCY=257", "job_worker_concurrency: must be between 1 and 256, got 257"},
		{"sync interval", "SATORU_RESTIC_SYNC_INTERVAL_HOURS=1.5", `restic_sync_interval_hours: must be a positive integer, got "1.5"`},
		{"scan interval", "SATORU_SITE_SCAN_INTERVAL_HOURS=-1", "site_scan_interval_hours: must be a positive integer, got -1"},
		{"retention interval negative", "SATORU_RETENTION_INTERVAL_HOURS=-1", "retention_interval_hours: must not be negative, got -1"},
		{"retention interval text", "SATORU_RETENTION_INTERVAL_HOURS=daily", `retention_interval_hours: must be a non-negative integer, got "daily"`},
		{"retention interval too big", "SATORU_RETENTION_INTERVAL_HOURS=9000", "retention_interval_hours: must be between 0 and 8784, got 9000"},
		{"scheduler tick zero", "SATORU_SCHEDULER_TICK_SECONDS=0", "scheduler_tick_seconds: must be a positive integer, got 0"},
		{"scheduler tick fraction", "SATORU_SCHEDULER_TICK_SECONDS=0.5", `scheduler_tick_seconds: must be a positive integer, got "0.5"`},
		{"scheduler tick too big", "SATORU_SCHEDULER_TICK_SECONDS=86401", "scheduler_tick_seconds: must be between 1 and 86400, got 86401"},
		{"free bytes", "SATORU_STAGING_MIN_FREE_BYTES=-5", "staging_min_free_bytes: must not be negative, got -5"},
		{"free bytes text", "SATORU_STAGING_MIN_FREE_BYTES=10G", `staging_min_free_bytes: must be a non-negative integer, got "10G"`},
		{"free percent", "SATORU_STAGING_MIN_FREE_PERCENT=101", "staging_min_free_percent: must be between 0 and 100, got 101"},
		{"ssh timeout", "SATORU_SSH_CONNECT_TIMEOUT_SECONDS=0", "ssh_connect_timeout_seconds: must be a positive integer"},
		{"remote tmp", "SATORU_REMOTE_TMP_DIR=tmp", `remote_tmp_dir: must be an absolute path, got "tmp"`},
		{"ack wait", "SATORU_JOB_ACK_WAIT_SECONDS=x", "job_ack_wait_seconds: must be a positive integer"},
		{"attempts", "SATORU_JOB_MAX_ATTEMPTS=0", "job_max_attempts: must be a positive integer, got 0"},
		{"stale after zero", "SATORU_JOB_STALE_AFTER_SECONDS=0", "job_stale_after_seconds: must be a positive integer, got 0"},
		{"preflight timeout", "SATORU_JOB_TIMEOUT_PREFLIGHT_SECONDS=999999", "job_timeout_preflight_seconds: must be between 1 and 86400"},
		{"history", "SATORU_HISTORY_RETENTION_DAYS=0", "history_retention_days: must be a positive integer"},
		{"log level", "SATORU_LOG_LEVEL=verbose", `log_level: must be one of debug, info, warn, error, got "verbose"`},
		{"log format", "SATORU_LOG_FORMAT=xml", `log_format: must be one of text, json, got "xml"`},
		{"api listen", "SATORU_API_LISTEN=8080", `api_listen: must be host:port`},
		{"api listen port", "SATORU_API_LISTEN=127.0.0.1:99999", `api_listen: port must be a number from 0 to 65535`},
		{"nats listen", "SATORU_EMBEDDED_NATS_LISTEN=localhost", `embedded_nats_listen: must be host:port`},
		{"store listen", "SATORU_EMBEDDED_STORE_LISTEN=:x", `embedded_store_listen: port must be`},
		{"nats url scheme", "SATORU_NATS_URL=http://x:4222", "nats_url: must be a comma-separated list"},
		{"mongo uri scheme", "SATORU_MONGO_URI=postgres://u:hunter2@h/db", "mongo_uri: must start with mongodb:// or mongodb+srv://"},
		{"mongo uri host", "SATORU_MONGO_URI=mongodb://u:hunter2@/db", "mongo_uri: has no host"},
		{"webhook scheme", "SATORU_WEBHOOK_URL=ftp://hunter2@h/x", "webhook_url: must be an http:// or https:// URL"},
		{"webhook host", "SATORU_WEBHOOK_URL=https:///hunter2", "webhook_url: must be an http:// or https:// URL"},
		{"mongo database", "SATORU_MONGO_DATABASE=a.b", "mongo_database: must be 1 to 63 characters"},
		{"instance name", "SATORU_INSTANCE_NAME=has space", "instance_name: must be 1 to 128 characters"},
		{"newline in path", "SATORU_STAGING_ROOT=/a\nb", "staging_root: must not contain NUL, newline or carriage return"},
		{"policy not json", "SATORU_RESTIC_RETENTION_POLICY=keep_daily=7", "restic_retention_policy: must be a JSON object"},
		{"policy negative", `SATORU_RESTIC_RETENTION_POLICY={"keep_daily":-1}`, "restic_retention_policy: keep_daily: must not be negative, got -1"},
		{"policy all zero", `SATORU_RESTIC_RETENTION_POLICY={"keep_daily":0,"keep_last":0}`, "restic_retention_policy: keeps nothing"},
		{"policy empty", `SATORU_RESTIC_RETENTION_POLICY={}`, "restic_retention_policy: keeps nothing"},
		{"policy unknown key", `SATORU_RESTIC_RETENTION_POLICY={"keep_forever":1}`, `restic_retention_policy: unknown key "keep_forever"`},
		{"policy string count", `SATORU_RESTIC_RETENTION_POLICY={"keep_daily":"7"}`, `restic_retention_policy: keep_daily: must be a non-negative integer, got "7"`},
		{"policy float", `SATORU_RESTIC_RETENTION_POLICY={"keep_daily":1.5}`, `restic_retention_policy: keep_daily: must be a non-negative integer, got "1.5"`},
		{"policy bad within", `SATORU_RESTIC_RETENTION_POLICY={"keep_within":"30 days"}`, `restic_retention_policy: keep_within: must be a restic duration`},
		{"policy zero within", `SATORU_RESTIC_RETENTION_POLICY={"keep_within":"0d"}`, `restic_retention_policy: keep_within: must be longer than zero`},
		{"policy within number", `SATORU_RESTIC_RETENTION_POLICY={"keep_within":30}`, `restic_retention_policy: keep_within: must be a string`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name, _, _ := strings.Cut(tc.env, "=")
			_, err := Load("", []string{tc.env})
			if err == nil {
				t.Fatalf("Load(%s) succeeded, want error", tc.env)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "config: ") || !strings.Contains(msg, tc.want) {
				t.Errorf("error = %q\nwant it to contain %q", msg, tc.want)
			}
			if !strings.Contains(msg, "(from "+name+")") {
				t.Errorf("error %q does not say the value came from %s", msg, name)
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("error %q shows the mongo password", msg)
			}
		})
	}
}

func TestFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string
	}{
		{"unknown key", "staging_root: /x\njob_worker_concurency: 3\n", []string{`unknown key "job_worker_concurency"`, "line 2"}},
		{"env-only secret in file", "restic_password: hunter2\n", []string{"restic_password: must not be in the config file", "SATORU_RESTIC_PASSWORD"}},
		{"api token in file", "api_token: hunter2\n", []string{"api_token: must not be in the config file"}},
		{"bad value", "job_worker_concurrency: abc\n", []string{`job_worker_concurrency: must be a positive integer, got "abc"`, "line 1"}},
		{"list value", "staging_root: [a, b]\n", []string{"staging_root: must be a single value"}},
		{"not a mapping", "- a\n- b\n", []string{"must be a mapping"}},
		{"syntax", "staging_root: [\n", []string{"yaml:"}},
		{"duplicate", "log_level: info\nlog_level: debug\n", []string{"log_level: given twice"}},
		{"policy unknown key", "restic_retention_policy:\n  keep_daly: 7\n", []string{`restic_retention_policy: unknown key "keep_daly"`}},
		{"policy negative", "restic_retention_policy:\n  keep_daily: -7\n", []string{"restic_retention_policy: keep_daily: must not be negative"}},
		{"policy all zero", "restic_retention_policy:\n  keep_daily: 0\n", []string{"restic_retention_policy: keeps nothing"}},
		{"policy list", "restic_retention_policy: [1]\n", []string{"restic_retention_policy: must be a mapping"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, "satoru.yaml", tc.content)
			_, err := Load(p, nil)
			if err == nil {
				t.Fatal("Load succeeded, want error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows a secret", err)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := Load("/nonexistent/satoru.yaml", nil)
		if err == nil || !strings.Contains(err.Error(), "/nonexistent/satoru.yaml") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		if _, err := Load(writeFile(t, "e.yaml", "# nothing\n"), nil); err != nil {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("policy as JSON string in file", func(t *testing.T) {
		c, err := Load(writeFile(t, "p.yaml", `restic_retention_policy: '{"keep_hourly":24}'`+"\n"), nil)
		if err != nil || c.ResticRetentionPolicy != (RetentionPolicy{KeepHourly: 24}) {
			t.Errorf("policy = %+v, err = %v", c.ResticRetentionPolicy, err)
		}
	})
	t.Run("several errors at once", func(t *testing.T) {
		_, err := Load("", []string{"SATORU_JOB_MAX_ATTEMPTS=x", "SATORU_LOG_FORMAT=xml"})
		if err == nil || !strings.Contains(err.Error(), "job_max_attempts") || !strings.Contains(err.Error(), "log_format") {
			t.Errorf("err = %v, want both keys", err)
		}
	})
}

func TestRetentionPolicy(t *testing.T) {
	tests := []struct {
		name    string
		p       RetentionPolicy
		args    []string
		wantErr string
	}{
		{"default", DefaultRetentionPolicy(), []string{"--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "12"}, ""},
		{"all", RetentionPolicy{1, 2, 3, 4, 5, 6, "1y2m"}, []string{"--keep-last", "1", "--keep-hourly", "2", "--keep-daily", "3",
			"--keep-weekly", "4", "--keep-monthly", "5", "--keep-yearly", "6", "--keep-within", "1y2m"}, ""},
		{"within only", RetentionPolicy{KeepWithin: "2d12h"}, []string{"--keep-within", "2d12h"}, ""},
		{"zero", RetentionPolicy{}, nil, "keeps nothing"},
		{"negative", RetentionPolicy{KeepLast: -1, KeepDaily: 3}, nil, "keep_last: must not be negative"},
		{"bad within order", RetentionPolicy{KeepWithin: "2d1y"}, nil, "keep_within: must be a restic duration"},
		{"bad within unit", RetentionPolicy{KeepWithin: "30s"}, nil, "keep_within: must be a restic duration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Validate() = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if got := tc.p.Args(); !reflect.DeepEqual(got, tc.args) {
				t.Errorf("Args() = %q, want %q", got, tc.args)
			}
		})
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	tok := writeFile(t, "tok", "file-token-AAA\n")
	c, err := Load("", []string{
		"SATORU_RESTIC_PASSWORD=pw-BBB",
		"SATORU_API_TOKEN_FILE=" + tok,
		"SATORU_RESTIC_B2_ACCOUNT_ID=id-CCC",
		"SATORU_RESTIC_B2_ACCOUNT_KEY=key-DDD",
		"SATORU_RESTIC_B2_REPOSITORY=b2:bucket:/satoru",
		"SATORU_MONGO_URI=mongodb://admin:mongo-EEE@db1:27017,db2:27017/satoru?authSource=admin&tlsCertificateKeyFilePassword=cert-FFF",
		"SATORU_NATS_URL=nats://natsuser:nats-GGG@n1:4222,nats://tok-HHH@n2:4222",
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	secrets := []string{"file-token-AAA", "pw-BBB", "id-CCC", "key-DDD", "mongo-EEE", "cert-FFF", "nats-GGG", "tok-HHH"}

	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("config", "cfg", c)
	jsonOut, _ := json.Marshal(c)
	outputs := map[string]string{
		"String":    c.String(),
		"%v":        fmt.Sprintf("%v", c),
		"%+v":       fmt.Sprintf("%+v", c),
		"%#v":       fmt.Sprintf("%#v", c),
		"%s field":  fmt.Sprintf("%s %v %q %x %d", c.APIToken, c.ResticPassword, c.ResticB2AccountKey, c.ResticB2AccountID, c.APIToken),
		"%#v field": fmt.Sprintf("%#v", c.APIToken),
		"slog":      logBuf.String(),
		"json":      string(jsonOut),
		"mongo":     c.RedactedMongoURI(),
		"nats":      c.RedactedNATSURL(),
	}
	for name, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s shows secret %q: %s", name, s, out)
			}
		}
	}
	if !strings.Contains(c.String(), "api_token=[redacted]") || !strings.Contains(c.String(), "restic_password=[redacted]") {
		t.Errorf("String() should say secrets are set: %s", c)
	}
	if got, want := c.RedactedMongoURI(), "mongodb://admin:[redacted]@db1:27017,db2:27017/satoru?authSource=admin&tlsCertificateKeyFilePassword=%5Bredacted%5D"; got != want {
		t.Errorf("RedactedMongoURI = %q, want %q", got, want)
	}
	if got, want := c.RedactedNATSURL(), "nats://natsuser:[redacted]@n1:4222,nats://[redacted]@n2:4222"; got != want {
		t.Errorf("RedactedNATSURL = %q, want %q", got, want)
	}
	if c.APIToken.Value() != "file-token-AAA" || c.MongoURI == c.RedactedMongoURI() {
		t.Error("the real values must stay reachable")
	}
}

func TestKeys(t *testing.T) {
	keys := Keys()
	want := []string{"staging_root", "restic_repo_path", "restic_repo_account_id", "restic_repo_account_id_file",
		"restic_repo_account_key", "restic_repo_account_key_file", "restic_password_file", "restic_password", "restic_retention_policy",
		"restic_sync_interval_hours", "restic_check_interval_hours", "restic_check_read_data_subset", "restic_b2_repository", "restic_b2_account_id", "restic_b2_account_id_file",
		"restic_b2_account_key", "restic_b2_account_key_file", "restic_bin", "job_worker_concurrency", "nats_replicas", "site_scan_interval_hours",
		"retention_interval_hours", "verify_interval_hours", "scheduler_tick_seconds", "nats_url", "mongo_uri", "nats_url_file", "mongo_uri_file", "mongo_database", "data_dir", "api_listen", "api_token", "api_token_file", "embedded_nats_listen",
		"embedded_store_listen", "staging_min_free_bytes", "staging_min_free_percent", "ssh_connect_timeout_seconds",
		"ssh_known_hosts_dir", "remote_tmp_dir", "job_ack_wait_seconds", "job_heartbeat_seconds", "site_lease_seconds",
		"job_max_attempts", "job_retry_base_seconds", "job_stale_after_seconds", "job_timeout_preflight_seconds", "preflight_reuse_seconds", "job_timeout_target_seconds",
		"job_timeout_snapshot_seconds", "job_timeout_retention_seconds", "job_timeout_sync_seconds", "restic_b2_retry_seconds", "history_retention_days", "audit_retention_days", "log_level", "log_format", "instance_name", "webhook_url"}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("Keys() = %q", keys)
	}
	// Every key is shown by String, so an operator sees the whole config.
	s := Default().String()
	for _, k := range keys {
		if !strings.Contains(s, k+"=") {
			t.Errorf("String() lacks %s", k)
		}
	}
	if got := UnknownEnv([]string{"SATORU_LOG_LEVEL=x", "SATORU_LOGLEVEL=x", "HOME=/root"}); !reflect.DeepEqual(got, []string{"SATORU_LOGLEVEL"}) {
		t.Errorf("UnknownEnv = %q", got)
	}
}

func TestValidateTyped(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"concurrency", func(c *Config) { c.JobWorkerConcurrency = 0 }, "config: job_worker_concurrency: must be a positive integer, got 0"},
		{"fractional seconds", func(c *Config) { c.JobAckWait = 1500 * time.Millisecond }, "config: job_ack_wait_seconds: must be a whole number of seconds"},
		{"stale after vs ack wait", func(c *Config) { c.JobStaleAfter = c.JobHeartbeat }, "config: job_stale_after_seconds: must be more than job_ack_wait_seconds (30)"},
		{"ack wait vs heartbeat", func(c *Config) { c.JobAckWait = 31 * time.Second }, "config: job_ack_wait_seconds: must be at most 3 x job_heartbeat_seconds (30)"},
		{"lease vs ack wait", func(c *Config) { c.SiteLease = 21 * time.Second }, "config: site_lease_seconds: must be at most job_ack_wait_seconds - job_heartbeat_seconds (30 - 10 = 20)"},
		{"policy", func(c *Config) { c.ResticRetentionPolicy = RetentionPolicy{} }, "config: restic_retention_policy: keeps nothing"},
		{"empty staging", func(c *Config) { c.StagingRoot = "" }, "config: staging_root: must not be empty"},
		{"bad log level", func(c *Config) { c.LogLevel = "" }, "config: log_level: must be one of"},
		{"negative retention interval", func(c *Config) { c.RetentionInterval = -time.Hour }, "config: retention_interval_hours: must not be negative"},
		{"fractional retention interval", func(c *Config) { c.RetentionInterval = 90 * time.Minute }, "config: retention_interval_hours: must be a whole number of hours"},
		{"zero scheduler tick", func(c *Config) { c.SchedulerTick = 0 }, "config: scheduler_tick_seconds: must be a positive integer, got 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestCrashTimings: ack wait, lease and stale-after follow the heartbeat
// unless given, and given ones must let a crashed worker's job come back
// within three heartbeats and start at once.
func TestCrashTimings(t *testing.T) {
	tests := []struct {
		name              string
		env               []string
		ack, lease, stale time.Duration
		wantErr           []string // substrings; none means Load succeeds
	}{
		{name: "defaults", ack: 30 * time.Second, lease: 20 * time.Second, stale: 300 * time.Second},
		{name: "heartbeat alone", env: []string{"SATORU_JOB_HEARTBEAT_SECONDS=1"},
			ack: 3 * time.Second, lease: 2 * time.Second, stale: 30 * time.Second},
		{name: "long heartbeat", env: []string{"SATORU_JOB_HEARTBEAT_SECONDS=60"},
			ack: 180 * time.Second, lease: 120 * time.Second, stale: 1800 * time.Second},
		{name: "short ack wait given: lease fits under it", env: []string{"SATORU_JOB_ACK_WAIT_SECONDS=25"},
			ack: 25 * time.Second, lease: 15 * time.Second, stale: 250 * time.Second},
		{name: "all given", env: []string{"SATORU_JOB_HEARTBEAT_SECONDS=5", "SATORU_JOB_ACK_WAIT_SECONDS=15", "SATORU_SITE_LEASE_SECONDS=7", "SATORU_JOB_STALE_AFTER_SECONDS=16"},
			ack: 15 * time.Second, lease: 7 * time.Second, stale: 16 * time.Second},
		{name: "old ack wait", env: []string{"SATORU_JOB_ACK_WAIT_SECONDS=60"},
			wantErr: []string{"config: job_ack_wait_seconds: must be at most 3 x job_heartbeat_seconds (30) so a crashed worker's job is redelivered within 3 heartbeats, got 60"}},
		{name: "lease not renewable", env: []string{"SATORU_SITE_LEASE_SECONDS=10"},
			wantErr: []string{"config: site_lease_seconds: must be more than job_heartbeat_seconds (10) so heartbeats renew the lease, got 10"}},
		{name: "lease outlives the ack wait", env: []string{"SATORU_SITE_LEASE_SECONDS=30"},
			wantErr: []string{"config: site_lease_seconds: must be at most job_ack_wait_seconds - job_heartbeat_seconds (30 - 10 = 20) so a crashed worker's lease has expired when its job is redelivered, got 30"}},
		{name: "ack wait too short for a lease", env: []string{"SATORU_JOB_ACK_WAIT_SECONDS=20"},
			wantErr: []string{"config: site_lease_seconds: must be more than job_heartbeat_seconds (10)", "got 10"}},
		{name: "stale before redelivery", env: []string{"SATORU_JOB_STALE_AFTER_SECONDS=30"},
			wantErr: []string{"config: job_stale_after_seconds: must be more than job_ack_wait_seconds (30)", "got 30"}},
		{name: "every problem at once", env: []string{"SATORU_JOB_HEARTBEAT_SECONDS=10", "SATORU_JOB_ACK_WAIT_SECONDS=60", "SATORU_SITE_LEASE_SECONDS=60", "SATORU_JOB_STALE_AFTER_SECONDS=60"},
			wantErr: []string{"job_ack_wait_seconds: must be at most", "site_lease_seconds: must be at most", "job_stale_after_seconds: must be more than"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load("", tc.env)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Load(%q) succeeded, want an error", tc.env)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q\nwant it to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Load(%q): %v", tc.env, err)
			}
			if c.JobAckWait != tc.ack || c.SiteLease != tc.lease || c.JobStaleAfter != tc.stale {
				t.Errorf("ack wait %s, lease %s, stale after %s; want %s, %s, %s", c.JobAckWait, c.SiteLease, c.JobStaleAfter, tc.ack, tc.lease, tc.stale)
			}
		})
	}
}

func TestWebhookURL(t *testing.T) {
	c, err := Load("", []string{"SATORU_WEBHOOK_URL=https://bot:hunter2@hooks.example.com/services/T0/B0/hunter2?token=hunter2&x=1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.WebhookURL != "https://bot:hunter2@hooks.example.com/services/T0/B0/hunter2?token=hunter2&x=1" {
		t.Errorf("WebhookURL = %q", c.WebhookURL)
	}
	want := "https://[redacted]@hooks.example.com/[redacted]?token=%5Bredacted%5D&x=%5Bredacted%5D"
	if got := c.RedactedWebhookURL(); got != want {
		t.Errorf("RedactedWebhookURL = %q, want %q", got, want)
	}
	for _, out := range []string{c.String(), fmt.Sprintf("%v", c), fmt.Sprintf("%#v", c)} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("output shows the webhook token: %s", out)
		}
	}
	js, _ := json.Marshal(c)
	if strings.Contains(string(js), "hunter2") {
		t.Errorf("JSON shows the webhook token: %s", js)
	}
	if d := Default(); d.WebhookURL != "" || d.RedactedWebhookURL() != "" {
		t.Error("webhook_url must default to off")
	}
	if _, err := Load("", []string{"SATORU_WEBHOOK_URL=http://127.0.0.1:9/hook"}); err != nil {
		t.Errorf("plain http URL rejected: %v", err)
	}
}

// A secret file its group or others can read (or write) stops the start,
// naming the key and the fix; the owner's modes are fine.
func TestSecretFilesOpenToOthersRefused(t *testing.T) {
	keys := map[string]string{
		"restic_password_file":         "SATORU_RESTIC_PASSWORD_FILE",
		"api_token_file":               "SATORU_API_TOKEN_FILE",
		"restic_b2_account_id_file":    "SATORU_RESTIC_B2_ACCOUNT_ID_FILE",
		"restic_b2_account_key_file":   "SATORU_RESTIC_B2_ACCOUNT_KEY_FILE",
		"restic_repo_account_id_file":  "SATORU_RESTIC_REPO_ACCOUNT_ID_FILE",
		"restic_repo_account_key_file": "SATORU_RESTIC_REPO_ACCOUNT_KEY_FILE",
	}
	for key, env := range keys {
		for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620, 0o602} {
			t.Run(fmt.Sprintf("%s %04o", key, mode), func(t *testing.T) {
				p := writeFile(t, "secret", "s3cret-value")
				if err := os.Chmod(p, mode); err != nil {
					t.Fatal(err)
				}
				_, err := Load("", []string{env + "=" + p, "SATORU_RESTIC_B2_REPOSITORY=b2:bucket"})
				if err == nil {
					t.Fatal("Load accepted a secret file open to others")
				}
				for _, want := range []string{"config: " + key + ": ", "chmod 600 " + p, fmt.Sprintf("mode %04o", mode)} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				if strings.Contains(err.Error(), "s3cret-value") {
					t.Errorf("error shows the secret: %q", err)
				}
			})
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		p := writeFile(t, "ok", "s3cret")
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := Load("", []string{"SATORU_API_TOKEN_FILE=" + p}); err != nil {
			t.Errorf("mode %04o refused: %v", mode, err)
		}
	}
}

// nats_url_file and mongo_uri_file: the connection strings with their
// credentials come from files (the join files of `satoru up`, compose
// secrets), with the secret files' rules.
func TestConnectionStringFiles(t *testing.T) {
	dir := t.TempDir()
	natsFile := filepath.Join(dir, "nats-url")
	mongoFile := filepath.Join(dir, "mongo-uri")
	if err := os.WriteFile(natsFile, []byte("nats://satoru:s3cret-pass@10.0.0.5:4222\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mongoFile, []byte("mongodb://10.0.0.5:27017/?tls=true&tlsCAFile=store-ca.pem&tlsCertificateKeyFile=store-client.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load("", []string{"SATORU_NATS_URL_FILE=" + natsFile, "SATORU_MONGO_URI_FILE=" + mongoFile})
	if err != nil {
		t.Fatal(err)
	}
	if c.NATSURL != "nats://satoru:s3cret-pass@10.0.0.5:4222" || c.Embedded() {
		t.Errorf("nats_url = %q", c.NATSURL)
	}
	wantMongo := "mongodb://10.0.0.5:27017/?tls=true&tlsCAFile=" + url.QueryEscape(filepath.Join(dir, "store-ca.pem")) +
		"&tlsCertificateKeyFile=" + url.QueryEscape(filepath.Join(dir, "store-client.pem"))
	if c.MongoURI != wantMongo {
		t.Errorf("mongo_uri = %q\nwant        %q (TLS files beside the URI's file)", c.MongoURI, wantMongo)
	}
	if strings.Contains(c.String(), "s3cret-pass") {
		t.Error("String() shows the NATS password")
	}
	if got := ResolveTLSFiles("mongodb://h/?tlsCAFile=/abs/ca.pem", "/x"); got != "mongodb://h/?tlsCAFile=/abs/ca.pem" {
		t.Errorf("an absolute path was changed: %q", got)
	}

	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("nats://u:p@h:4222"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("http://h"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		env  []string
		want []string
	}{
		"open to others":        {[]string{"SATORU_NATS_URL_FILE=" + open}, []string{"nats_url_file", "chmod 600 " + open}},
		"both":                  {[]string{"SATORU_NATS_URL=nats://h:4222", "SATORU_NATS_URL_FILE=" + natsFile}, []string{"nats_url_file", "not both"}},
		"not a URL of its kind": {[]string{"SATORU_MONGO_URI_FILE=" + bad}, []string{"mongo_uri_file"}},
		"missing":               {[]string{"SATORU_MONGO_URI_FILE=/nonexistent/uri"}, []string{"mongo_uri_file", "/nonexistent/uri"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load("", tc.env)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to contain %q", err, w)
				}
			}
		})
	}
}

// restic_repo_path takes a local path or a restic backend location; its
// credentials come by file or environment and are never printed, nor is
// a password in a rest: URL.
func TestRepoLocation(t *testing.T) {
	for _, loc := range []string{"./repos/restic", "/srv/restic", "s3:http://127.0.0.1:9000/bucket/repo",
		"rest:https://satoru:url-pass-ZZZ@backup.example:8000/", "sftp:backup@host:/srv/restic", "b2:bucket:repo",
		"azure:container:/repo", "gs:bucket:/repo", "rclone:remote:bucket/path"} {
		env := []string{"SATORU_RESTIC_REPO_PATH=" + loc}
		if strings.HasPrefix(loc, "b2:") {
			env = append(env, "SATORU_RESTIC_REPO_ACCOUNT_ID=a", "SATORU_RESTIC_REPO_ACCOUNT_KEY=b")
		}
		c, err := Load("", env)
		if err != nil {
			t.Errorf("restic_repo_path %q refused: %v", loc, err)
			continue
		}
		if c.ResticRepoPath != loc {
			t.Errorf("ResticRepoPath = %q, want %q", c.ResticRepoPath, loc)
		}
	}

	bad := []struct {
		name string
		env  []string
		want []string
	}{
		{"unknown scheme", []string{"SATORU_RESTIC_REPO_PATH=ftp://host/repo"}, []string{"restic_repo_path", `unknown restic backend "ftp"`, "SATORU_RESTIC_REPO_PATH"}},
		{"empty location", []string{"SATORU_RESTIC_REPO_PATH=s3:"}, []string{"restic_repo_path", "needs the repository"}},
		{"b2 without credentials", []string{"SATORU_RESTIC_REPO_PATH=b2:bucket:repo"}, []string{"restic_repo_account_id", "b2: repository needs an account id and key"}},
		{"half a pair", []string{"SATORU_RESTIC_REPO_PATH=s3:http://h/b", "SATORU_RESTIC_REPO_ACCOUNT_ID=id-only"}, []string{"restic_repo_account_id", "both"}},
		{"local with credentials", []string{"SATORU_RESTIC_REPO_ACCOUNT_ID=i", "SATORU_RESTIC_REPO_ACCOUNT_KEY=k-secret"}, []string{"restic_repo_account_id", "takes no account id"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load("", tc.env)
			if err == nil {
				t.Fatal("Load accepted it")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "k-secret") {
				t.Errorf("error shows the key: %v", err)
			}
		})
	}

	// The account id and key are env-only or by file, never in the file.
	cfgFile := writeFile(t, "satoru.yaml", "restic_repo_account_key: key-in-file\n")
	if _, err := Load(cfgFile, nil); err == nil || !strings.Contains(err.Error(), "SATORU_RESTIC_REPO_ACCOUNT_KEY or restic_repo_account_key_file") {
		t.Errorf("account key in the config file: err = %v", err)
	}

	id := writeFile(t, "id", "s3-id-XXX\n")
	key := writeFile(t, "key", "s3-key-YYY\n")
	c, err := Load("", []string{
		"SATORU_RESTIC_REPO_PATH=s3:http://127.0.0.1:9000/bucket/repo",
		"SATORU_RESTIC_REPO_ACCOUNT_ID_FILE=" + id, "SATORU_RESTIC_REPO_ACCOUNT_KEY_FILE=" + key,
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.ResticRepoAccountID.Value() != "s3-id-XXX" || c.ResticRepoAccountKey.Value() != "s3-key-YYY" {
		t.Errorf("credentials not read from files")
	}
	rest, err := Load("", []string{"SATORU_RESTIC_REPO_PATH=rest:https://satoru:url-pass-ZZZ@backup.example:8000/",
		"SATORU_RESTIC_REPO_ACCOUNT_ID=rest-user", "SATORU_RESTIC_REPO_ACCOUNT_KEY=rest-pass-WWW"})
	if err != nil {
		t.Fatalf("Load rest: %v", err)
	}
	jc, _ := json.Marshal(c)
	jr, _ := json.Marshal(rest)
	for _, out := range []string{c.String(), fmt.Sprintf("%#v", c), string(jc), rest.String(), fmt.Sprintf("%+v", rest), string(jr)} {
		for _, secret := range []string{"s3-id-XXX", "s3-key-YYY", "url-pass-ZZZ", "rest-pass-WWW"} {
			if strings.Contains(out, secret) {
				t.Errorf("output shows %q: %s", secret, out)
			}
		}
	}
	if !strings.Contains(rest.String(), "restic_repo_path=rest:https://satoru:[redacted]@backup.example:8000/") ||
		!strings.Contains(c.String(), "restic_repo_account_key=[redacted]") {
		t.Errorf("String() should show the location redacted and that the key is set: %s | %s", rest, c)
	}
}

// TestCheckKeys: the repository check's defaults, 0 turns the schedule
// off, and a read data subset restic would refuse is refused at load.
func TestCheckKeys(t *testing.T) {
	d := Default()
	if d.ResticCheckInterval != 168*time.Hour || d.ResticCheckSubset != "5%" {
		t.Errorf("defaults: interval %v, subset %q", d.ResticCheckInterval, d.ResticCheckSubset)
	}
	for _, ok := range []string{"0", "24"} {
		if _, err := Load("", []string{"SATORU_RESTIC_CHECK_INTERVAL_HOURS=" + ok}); err != nil {
			t.Errorf("restic_check_interval_hours=%s: %v", ok, err)
		}
	}
	for _, ok := range []string{"100%", "2.5%", "1/10", "500M"} {
		c, err := Load("", []string{"SATORU_RESTIC_CHECK_READ_DATA_SUBSET=" + ok})
		if err != nil || c.ResticCheckSubset != ok {
			t.Errorf("restic_check_read_data_subset=%q: %q, %v", ok, c.ResticCheckSubset, err)
		}
	}
	for _, bad := range []string{"5", "five%", "--read-data", "1/"} {
		_, err := Load("", []string{"SATORU_RESTIC_CHECK_READ_DATA_SUBSET=" + bad})
		if err == nil || !strings.Contains(err.Error(), "restic_check_read_data_subset") {
			t.Errorf("restic_check_read_data_subset=%q: %v, want an error naming the key", bad, err)
		}
	}
}
