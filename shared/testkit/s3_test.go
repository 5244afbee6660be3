package testkit

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestS3WithRestic(t *testing.T) {
	t.Parallel()
	s3 := StartS3(t, "AKIDTESTKIT0001", "testkit-secret-key-0001")
	s3.Bucket(t, "offsite")
	bin := ResticBin(t)
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "f.txt"), []byte("hello offsite"), 0o600); err != nil {
		t.Fatal(err)
	}
	restic := func(env []string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), bin, args...)
		cmd.Env = append(os.Environ(),
			"RESTIC_REPOSITORY="+s3.Repository("offsite", "/satoru/repo/"),
			"RESTIC_PASSWORD=pw-s3-test",
			"RESTIC_CACHE_DIR="+filepath.Join(data, ".cache"))
		cmd.Env = append(cmd.Env, env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}

	if got := s3.Repository("offsite", "/satoru/repo/"); got != "s3:"+s3.URL+"/offsite/satoru/repo" {
		t.Errorf("Repository = %q", got)
	}
	if out, err := restic(s3.Env(), "init"); err != nil {
		t.Fatalf("restic init: %v\n%s", err, out)
	}
	if out, err := restic(s3.Env(), "backup", "--exclude", ".cache", data); err != nil {
		t.Fatalf("restic backup: %v\n%s", err, out)
	}
	out, err := restic(s3.Env(), "snapshots", "--json")
	if err != nil || !strings.Contains(out, `"id"`) {
		t.Fatalf("restic snapshots: %v\n%s", err, out)
	}
	if s3.Denied() != 0 {
		t.Errorf("%d requests with the right key were denied", s3.Denied())
	}
	if n, size := s3.Objects(t, "offsite", "satoru/repo/data/"); n == 0 || size == 0 {
		t.Errorf("Objects under data/ after a backup: %d objects, %d bytes", n, size)
	}
	if n, _ := s3.Objects(t, "offsite", "satoru/repo/keys/"); n != 1 {
		t.Errorf("Objects under keys/: %d, want 1", n)
	}
	if n, _ := s3.Objects(t, "offsite", "elsewhere/"); n != 0 {
		t.Errorf("Objects under an unused prefix: %d", n)
	}

	// The right secret under another access key id is refused.
	wrong := []string{"AWS_ACCESS_KEY_ID=AKIDSOMEONEELSE", "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey}
	out, err = restic(wrong, "snapshots", "--json")
	if err == nil {
		t.Fatalf("restic with a wrong access key succeeded:\n%s", out)
	}
	if !strings.Contains(out, "Access Denied") && !strings.Contains(out, "AccessDenied") {
		t.Errorf("restic with a wrong key did not report access denied:\n%s", out)
	}
	t.Logf("wrong key:\n%s", out)
	if s3.Denied() == 0 {
		t.Error("no request was denied")
	}
}

func TestS3RefusesOtherKeys(t *testing.T) {
	t.Parallel()
	s3 := StartS3(t, "AKIDRIGHT", "secret")
	s3.Bucket(t, "b")
	sig := func(akid string) string {
		return "AWS4-HMAC-SHA256 Credential=" + akid + "/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
	}
	tests := []struct {
		name, method, path, auth string
		want                     int
	}{
		{"right key", "GET", "/b", sig("AKIDRIGHT"), http.StatusOK},
		{"other key", "GET", "/b", sig("AKIDWRONG"), http.StatusForbidden},
		{"other key, HEAD", "HEAD", "/b", sig("AKIDWRONG"), http.StatusForbidden},
		{"key is a prefix of the right one", "GET", "/b", sig("AKID"), http.StatusForbidden},
		{"anonymous", "GET", "/b", "", http.StatusForbidden},
		{"presigned, right key", "GET", "/b?X-Amz-Credential=AKIDRIGHT%2F20260101%2Fus-east-1%2Fs3%2Faws4_request", "", http.StatusOK},
		{"presigned, other key", "GET", "/b?X-Amz-Credential=AKIDWRONG%2F20260101%2Fus-east-1%2Fs3%2Faws4_request", "", http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, s3.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			req.Header.Set("X-Amz-Date", time.Now().UTC().Format("20060102T150405Z"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			if resp.StatusCode != tc.want {
				t.Fatalf("status = %d, want %d: %s", resp.StatusCode, tc.want, body.String())
			}
			if tc.want == http.StatusForbidden && tc.method != "HEAD" && !strings.Contains(body.String(), "<Code>AccessDenied</Code>") {
				t.Errorf("body = %s, want an AccessDenied error", body.String())
			}
		})
	}
}

func TestRequestAccessKey(t *testing.T) {
	tests := []struct{ name, auth, query, want string }{
		{"sigv4", "AWS4-HMAC-SHA256 Credential=AK1/20260101/auto/s3/aws4_request, SignedHeaders=host, Signature=ab", "", "AK1"},
		{"sigv4 without spaces", "AWS4-HMAC-SHA256 SignedHeaders=host,Credential=AK2/x,Signature=ab", "", "AK2"},
		{"no credential", "Bearer x", "", ""},
		{"presigned", "", "X-Amz-Credential=AK3%2Fx", "AK3"},
		{"none", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/b?"+tc.query, nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			if got := requestAccessKey(r); got != tc.want {
				t.Errorf("requestAccessKey = %q, want %q", got, tc.want)
			}
		})
	}
}
