package testkit

import (
	"context"
	"encoding/xml"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// S3 is an in-process S3-compatible server (gofakes3 with an in-memory
// backend) on a random 127.0.0.1 port: the stand-in for Backblaze B2's
// S3-compatible endpoint, which restic reaches with its s3: backend.
//
// gofakes3 checks no credentials, so S3 adds one check in front of it:
// every request must name AccessKey in its AWS Signature V4 credential
// (the Authorization header, or X-Amz-Credential for presigned URLs);
// anything else, anonymous requests included, gets 403 AccessDenied as S3
// answers it. Signatures are not verified, so the secret key only matters
// to clients (Env hands it to restic).
type S3 struct {
	// URL is the endpoint, "http://127.0.0.1:<port>".
	URL       string
	AccessKey string
	SecretKey string

	backend *s3mem.Backend
	denied  atomic.Int64
	stop    func()
}

// StartS3 starts the server and stops it when the test ends.
func StartS3(t testing.TB, accessKey, secretKey string) *S3 {
	t.Helper()
	if accessKey == "" || secretKey == "" {
		t.Fatalf("testkit: StartS3 needs an access key and a secret key")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testkit: s3 listen: %v", err)
	}
	s := &S3{URL: "http://" + ln.Addr().String(), AccessKey: accessKey, SecretKey: secretKey, backend: s3mem.New()}
	faker := gofakes3.New(s.backend, gofakes3.WithAutoBucket(false))
	srv := &http.Server{Handler: s.checkAccessKey(faker.Server()), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("testkit: s3 serve: %v", err)
		}
	}()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				_ = srv.Close()
			}
			<-done
		})
	}
	t.Cleanup(s.stop)
	return s
}

// Stop shuts the server down: its port refuses connections from now on,
// as an offsite endpoint that went away.
func (s *S3) Stop() { s.stop() }

// Bucket creates a bucket (a name S3 accepts: 3-63 lower-case letters,
// digits, dots and hyphens).
func (s *S3) Bucket(t testing.TB, name string) {
	t.Helper()
	if err := s.backend.CreateBucket(name); err != nil {
		t.Fatalf("testkit: create bucket %q: %v", name, err)
	}
}

// Repository is the restic location of path inside bucket on this server:
// "s3:http://127.0.0.1:<port>/<bucket>/<path>".
func (s *S3) Repository(bucket, path string) string {
	loc := "s3:" + s.URL + "/" + bucket
	if path = strings.Trim(path, "/"); path != "" {
		loc += "/" + path
	}
	return loc
}

// Env is the environment restic's s3: backend reads its credentials from.
func (s *S3) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey}
}

// Objects is how many objects the bucket holds under prefix, and their
// total size: a test can see an upload under way.
func (s *S3) Objects(t testing.TB, bucket, prefix string) (n int, bytes int64) {
	t.Helper()
	list, err := s.backend.ListBucket(bucket, &gofakes3.Prefix{HasPrefix: true, Prefix: prefix}, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatalf("testkit: list bucket %q: %v", bucket, err)
	}
	for _, c := range list.Contents {
		bytes += c.Size
	}
	return len(list.Contents), bytes
}

// Denied is how many requests were refused for their credentials.
func (s *S3) Denied() int64 { return s.denied.Load() }

// checkAccessKey refuses requests that do not name s.AccessKey.
func (s *S3) checkAccessKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requestAccessKey(r) == s.AccessKey {
			next.ServeHTTP(w, r)
			return
		}
		s.denied.Add(1)
		writeS3Error(w, r, http.StatusForbidden, "AccessDenied", "Access Denied")
	})
}

// requestAccessKey is the access key id a SigV4-signed request names:
// "Authorization: AWS4-HMAC-SHA256 Credential=<AKID>/<date>/<region>/s3/
// aws4_request, SignedHeaders=..., Signature=...", or the X-Amz-Credential
// query parameter of a presigned URL. "" when there is none.
func requestAccessKey(r *http.Request) string {
	if auth := r.Header.Get("Authorization"); auth != "" {
		_, params, _ := strings.Cut(auth, " ")
		for _, p := range strings.Split(params, ",") {
			if cred, ok := strings.CutPrefix(strings.TrimSpace(p), "Credential="); ok {
				akid, _, _ := strings.Cut(cred, "/")
				return akid
			}
		}
		return ""
	}
	akid, _, _ := strings.Cut(r.URL.Query().Get("X-Amz-Credential"), "/")
	return akid
}

// writeS3Error answers the way S3 does: an XML <Error> document (no body
// for HEAD, whose answers have none).
func writeS3Error(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	body := struct {
		XMLName  xml.Name `xml:"Error"`
		Code     string   `xml:"Code"`
		Message  string   `xml:"Message"`
		Resource string   `xml:"Resource"`
	}{Code: code, Message: msg, Resource: r.URL.Path}
	_, _ = w.Write([]byte(xml.Header))
	_ = xml.NewEncoder(w).Encode(body)
}
