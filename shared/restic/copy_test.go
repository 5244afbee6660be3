package restic

import (
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCopyArgs(t *testing.T) {
	from := []string{"--from-repo", "/repos/local"}
	tests := []struct {
		name      string
		got, want []string
	}{
		{"all snapshots", CopyArgs(from), []string{"copy", "-v", "--from-repo", "/repos/local"}},
		{"some snapshots after --", CopyArgs(from, "abc123", "-x"), []string{"copy", "-v", "--from-repo", "/repos/local", "--", "abc123", "-x"}},
		{"source by environment", CopyArgs(nil), []string{"copy", "-v"}},
		{"init", InitCopyChunkerArgs(from), []string{"--copy-chunker-params", "--from-repo", "/repos/local"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !slices.Equal(tc.got, tc.want) {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestFromRepo(t *testing.T) {
	clear := []string{"RESTIC_FROM_REPOSITORY_FILE=", "RESTIC_FROM_PASSWORD_COMMAND=", "RESTIC_FROM_KEY_HINT="}
	tests := []struct {
		name     string
		from     Repo
		wantArgs []string
		wantEnv  []string // after the cleared variables
		wantErr  string
	}{
		{"local path, password", Repo{Repository: "/repos/local", Password: "pw-from"},
			[]string{"--from-repo", "/repos/local"},
			[]string{"RESTIC_FROM_REPOSITORY=", "RESTIC_FROM_PASSWORD=pw-from", "RESTIC_FROM_PASSWORD_FILE="}, ""},
		{"password file", Repo{Repository: "/r", PasswordFile: "/etc/pw"},
			[]string{"--from-repo", "/r"},
			[]string{"RESTIC_FROM_REPOSITORY=", "RESTIC_FROM_PASSWORD_FILE=/etc/pw", "RESTIC_FROM_PASSWORD="}, ""},
		{"credentials in the location stay out of argv", Repo{Repository: "rest:https://u:secret@h/", Password: "pw"},
			nil,
			[]string{"RESTIC_FROM_REPOSITORY=rest:https://u:secret@h/", "RESTIC_FROM_PASSWORD=pw", "RESTIC_FROM_PASSWORD_FILE="}, ""},
		{"source Env appended", Repo{Repository: "/r", Password: "pw", Env: []string{"X=1"}},
			[]string{"--from-repo", "/r"},
			[]string{"RESTIC_FROM_REPOSITORY=", "RESTIC_FROM_PASSWORD=pw", "RESTIC_FROM_PASSWORD_FILE=", "X=1"}, ""},
		{"no location", Repo{Password: "pw"}, nil, nil, "no source repository"},
		{"no password", Repo{Repository: "/r"}, nil, nil, "no password"},
		{"two passwords", Repo{Repository: "/r", Password: "a", PasswordFile: "/b"}, nil, nil, "not both"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args, env, err := FromRepo(tc.from)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(args, tc.wantArgs) {
				t.Errorf("args = %q, want %q", args, tc.wantArgs)
			}
			if want := append(slices.Clone(clear), tc.wantEnv...); !slices.Equal(env, want) {
				t.Errorf("env = %q, want %q", env, want)
			}
		})
	}
}

func TestMergeEnv(t *testing.T) {
	tests := []struct {
		name    string
		a, b    []string
		wantErr string
	}{
		{"disjoint", []string{"A=1"}, []string{"B=2"}, ""},
		{"same value twice", []string{"AWS_ACCESS_KEY_ID=k"}, []string{"AWS_ACCESS_KEY_ID=k"}, ""},
		{"conflict names the key only", []string{"AWS_ACCESS_KEY_ID=k1"}, []string{"AWS_ACCESS_KEY_ID=k2"}, "AWS_ACCESS_KEY_ID"},
		{"the destination may override RESTIC_FROM_*", []string{"RESTIC_FROM_PASSWORD=a"}, []string{"RESTIC_FROM_PASSWORD=b"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mergeEnv(tc.a, tc.b)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "k1") || strings.Contains(err.Error(), "k2") {
					t.Fatalf("err = %v, want one naming %s and no value", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, append(slices.Clone(tc.a), tc.b...)) {
				t.Errorf("mergeEnv = %q, %v", got, err)
			}
		})
	}
}

func TestParseCapturedCopy(t *testing.T) {
	// testdata/copy.stdout is restic 0.18.1 `copy -v` output: four source
	// snapshots already copied, two copied by this run.
	p := &copyParser{}
	w := &lineWriter{max: maxLine, fn: p.line}
	out := readFile(t, filepath.Join("testdata", "copy.stdout"))
	for b := []byte(out); len(b) > 0; {
		n := min(len(b), 61)
		w.Write(b[:n])
		b = b[n:]
	}
	w.Flush()
	wantCopied := []CopiedSnapshot{{Source: "8f76c009", Target: "f0af61a4"}, {Source: "4c3e9932", Target: "2ad57af7"}}
	if !reflect.DeepEqual(p.copied, wantCopied) {
		t.Errorf("copied = %+v, want %+v", p.copied, wantCopied)
	}
	if want := []string{"775ecc25", "694895b7", "c8a474bf", "a07c0729"}; !slices.Equal(p.skipped, want) {
		t.Errorf("skipped = %q, want %q", p.skipped, want)
	}
}

func TestScheme(t *testing.T) {
	tests := map[string]string{
		"/srv/repo":                   "local",
		"repos/restic":                "local",
		"local:/srv/repo":             "local",
		"b2:bucket:path/to/repo":      "b2",
		"s3:https://s3.example/b/r":   "s3",
		"s3:s3.amazonaws.com/b":       "s3",
		"rest:http://u:p@host:8000/":  "rest",
		"sftp:user@host:/srv/restic":  "sftp",
		"C:/not-a-backend":            "local",
		"azure:container:/repo":       "azure",
		"weird:thing":                 "local",
		"":                            "local",
		"rclone:remote:bucket/path":   "rclone",
		"gs:bucket:/repo":             "gs",
		"swift:container:/repo":       "swift",
		"s3:http://127.0.0.1:9000/b/": "s3",
	}
	for loc, want := range tests {
		if got := Scheme(loc); got != want {
			t.Errorf("Scheme(%q) = %q, want %q", loc, got, want)
		}
	}
}

func TestRedactLocation(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/srv/repo", "/srv/repo"},
		{"b2:bucket:satoru/repo", "b2:bucket:satoru/repo"},
		{"s3:https://s3.us-west-004.backblazeb2.com/bucket/repo", "s3:https://s3.us-west-004.backblazeb2.com/bucket/repo"},
		{"rest:https://user:s3cret@host:8000/repo/", "rest:https://user:[redacted]@host:8000/repo/"},
		{"rest:https://user:p@ss@host/", "rest:https://user:[redacted]@host/"},
		{"rest:https://user@host/", "rest:https://user@host/"},
		{"sftp:user@host:/srv/restic", "sftp:user@host:/srv/restic"},
		{"rest:https://host/a@b", "rest:https://host/a@b"},
	}
	for _, tc := range tests {
		if got := RedactLocation(tc.in); got != tc.want {
			t.Errorf("RedactLocation(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCredentialsEnv(t *testing.T) {
	tests := []struct {
		name, loc, id, key string
		want               []string
		wantErr            string
	}{
		{"b2 native", "b2:bucket:repo", "0041", "K004", []string{"B2_ACCOUNT_ID=0041", "B2_ACCOUNT_KEY=K004"}, ""},
		{"b2 needs keys", "b2:bucket:repo", "", "", nil, "needs an account id and key"},
		{"s3 (B2's S3 endpoint)", "s3:https://s3.eu-central-003.backblazeb2.com/b/r", "0041", "K004",
			[]string{"AWS_ACCESS_KEY_ID=0041", "AWS_SECRET_ACCESS_KEY=K004", "AWS_SESSION_TOKEN="}, ""},
		{"s3 without keys", "s3:https://s3.example/b", "", "", nil, ""},
		{"half a pair", "s3:https://s3.example/b", "0041", "", nil, "both"},
		{"local with keys", "/srv/offsite", "0041", "K004-secret", nil, "takes no account id"},
		{"local without keys", "/srv/offsite", "", "", nil, ""},
		{"rest", "rest:https://host:8000/repo/", "satoru", "rest-secret",
			[]string{"RESTIC_REST_USERNAME=satoru", "RESTIC_REST_PASSWORD=rest-secret"}, ""},
		{"rest without keys (URL user info)", "rest:https://u:p@host:8000/", "", "", nil, ""},
		{"azure", "azure:container:/repo", "acct", "azure-secret",
			[]string{"AZURE_ACCOUNT_NAME=acct", "AZURE_ACCOUNT_KEY=azure-secret", "AZURE_ACCOUNT_SAS="}, ""},
		{"sftp with keys", "sftp:user@host:/srv/restic", "id", "sftp-secret", nil, "takes no account id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CredentialsEnv(tc.loc, tc.id, tc.key)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if tc.key != "" && strings.Contains(err.Error(), tc.key) {
					t.Errorf("error %q shows the key", err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("CredentialsEnv = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestCheckLocation(t *testing.T) {
	good := []string{"./repos/restic", "repos/restic", "/srv/restic", "local:/srv/restic",
		"s3:http://127.0.0.1:9000/bucket/repo", "rest:https://u:p@host:8000/", "b2:bucket:repo",
		"sftp:user@host:/srv/restic", "azure:container:/repo", "gs:bucket:/repo", "rclone:remote:bucket/path",
		"./ftp:thing"}
	for _, loc := range good {
		if err := CheckLocation(loc); err != nil {
			t.Errorf("CheckLocation(%q) = %v, want nil", loc, err)
		}
	}
	bad := map[string]string{
		"":                          "must not be empty",
		"ftp://host/repo":           `unknown restic backend "ftp"`,
		"S3:https://s3.example/b/r": `unknown restic backend "S3"`,
		"s3:":                       "needs the repository",
		"local:":                    "needs a path",
	}
	for loc, want := range bad {
		if err := CheckLocation(loc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckLocation(%q) = %v, want an error with %q", loc, err, want)
		}
	}
}

func TestLocalPath(t *testing.T) {
	tests := []struct {
		loc, want string
		local     bool
	}{
		{"/srv/restic", "/srv/restic", true},
		{"local:/srv/restic", "/srv/restic", true},
		{"repos/restic", "repos/restic", true},
		{"s3:http://127.0.0.1:9000/b/r", "", false},
		{"sftp:user@host:/srv/restic", "", false},
	}
	for _, tc := range tests {
		got, ok := LocalPath(tc.loc)
		if got != tc.want || ok != tc.local {
			t.Errorf("LocalPath(%q) = %q, %v; want %q, %v", tc.loc, got, ok, tc.want, tc.local)
		}
	}
}

func TestIsAccessDenied(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"s3 via minio (restic 0.18.1 against the S3 stand-in)", &Error{Op: "cat", Code: 1, Stderr: "Stat(<config/>) failed: Stat: Access Denied.\nFatal: unable to open config file: Stat: Access Denied."}, true},
		{"s3 error code", &Error{Op: "copy", Code: 1, Stderr: "InvalidAccessKeyId: The AWS Access Key Id you provided does not exist"}, true},
		{"b2 native", &Error{Op: "init", Code: 1, Stderr: "Fatal: create repository at b2:x:y failed: b2_authorize_account: 401: unauthorized"}, true},
		{"no repository", &Error{Op: "cat", Code: 10, Stderr: "Fatal: repository does not exist"}, false},
		{"wrong password", &Error{Op: "cat", Code: 12, Stderr: "Fatal: wrong password or no key found"}, false},
		{"not a restic error", errors.New("Access Denied"), false},
		{"nil", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsAccessDenied(tc.err); got != tc.want {
				t.Errorf("IsAccessDenied = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCopyKeepsSecretsOutOfArgvAndErrors(t *testing.T) {
	// A fake restic that records its argv, prints every secret it was
	// given to stderr, and fails.
	bin := fakeRestic(t, `printf '%s\n' "$@" > "$FAKE_OUT"
echo "snapshot 0123abcd of [/x] at 2026 by u@h"
echo "snapshot 4567cdef saved"
echo "secrets: $RESTIC_PASSWORD $RESTIC_FROM_PASSWORD $AWS_SECRET_ACCESS_KEY" >&2
echo '{"message_type":"exit_error","code":1,"message":"Fatal: '"$AWS_SECRET_ACCESS_KEY"'"}' >&2
exit 1`)
	out := t.TempDir() + "/argv"
	dst := Repo{Bin: bin, Repository: "s3:http://127.0.0.1:1/b/r", Password: "dst-password-1",
		RetryLock: time.Minute, Env: []string{"AWS_ACCESS_KEY_ID=AKID1", "AWS_SECRET_ACCESS_KEY=aws-secret-2", "FAKE_OUT=" + out}}
	src := Repo{Repository: "/repos/local", Password: "src-password-3"}
	res, err := dst.Copy(t.Context(), src)
	if err == nil {
		t.Fatal("Copy succeeded")
	}
	argv := readFile(t, out)
	if want := "--retry-lock\n1m0s\ncopy\n-v\n--from-repo\n/repos/local\n"; argv != want {
		t.Errorf("argv = %q, want %q", argv, want)
	}
	for _, secret := range []string{"dst-password-1", "src-password-3", "aws-secret-2"} {
		if strings.Contains(argv, secret) || strings.Contains(err.Error(), secret) {
			t.Errorf("secret %q leaked: argv %q, error %q", secret, argv, err)
		}
	}
	if !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("error %q shows no redaction", err)
	}
	if want := []CopiedSnapshot{{Source: "0123abcd", Target: "4567cdef"}}; !reflect.DeepEqual(res.Copied, want) {
		t.Errorf("partial result = %+v, want %+v", res.Copied, want)
	}

	if _, err := dst.Copy(t.Context(), src, "ok", "bad id"); err == nil {
		t.Error("Copy accepted a snapshot id with a space")
	}
	if _, err := dst.Copy(t.Context(), Repo{Repository: "/r"}); err == nil || !strings.Contains(err.Error(), "no password") {
		t.Errorf("Copy from a repo without password: %v", err)
	}
}
