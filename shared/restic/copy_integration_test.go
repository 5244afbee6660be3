package restic

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/satoru/satoru/shared/proc"
)

func TestIntegrationCopy(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	base := t.TempDir()
	local := testRepo(t, filepath.Join(base, "local"))
	offsite := testRepo(t, filepath.Join(base, "offsite"))
	offsite.Password = "another-password-for-offsite-9"
	if err := local.Init(ctx); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(base, "staging")
	files := writeTree(t, filepath.Join(src, "data"))
	opts := BackupOptions{Paths: []string{"data"}, Dir: src, Host: "edge-1"}
	var ids []string
	for i := range 2 {
		if i == 1 {
			if err := os.WriteFile(filepath.Join(src, "data", "second.txt"), []byte("second"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		s, err := local.Backup(ctx, opts, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.SnapshotID)
	}

	if ok, err := offsite.Exists(ctx); ok || err != nil {
		t.Fatalf("Exists before init = %v, %v; want false, nil", ok, err)
	}
	for i, want := range []bool{true, false} {
		created, err := offsite.EnsureCopyTarget(ctx, local)
		if err != nil || created != want {
			t.Fatalf("EnsureCopyTarget #%d = %v, %v; want %v, nil", i+1, created, err, want)
		}
	}
	if ok, err := offsite.Exists(ctx); !ok || err != nil {
		t.Fatalf("Exists after init = %v, %v; want true, nil", ok, err)
	}
	if a, b := chunkerPolynomial(t, local), chunkerPolynomial(t, offsite); a == "" || a != b {
		t.Errorf("chunker polynomial: local %q, offsite %q; want equal", a, b)
	}

	res, err := offsite.Copy(ctx, local)
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if len(res.Copied) != 2 || len(res.Skipped) != 0 {
		t.Fatalf("first copy = %+v, want 2 copied", res)
	}
	snaps, err := offsite.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	originals := map[string]string{}
	for _, s := range snaps {
		originals[s.Original] = s.ID
	}
	for _, id := range ids {
		if originals[id] == "" {
			t.Errorf("local snapshot %s has no copy offsite (offsite: %+v)", id[:8], snaps)
		}
	}
	for _, c := range res.Copied {
		if c.Source != ids[0][:8] && c.Source != ids[1][:8] {
			t.Errorf("copied %+v names no local snapshot", c)
		}
		if c.Target != originals[ids[0]][:8] && c.Target != originals[ids[1]][:8] {
			t.Errorf("copied %+v names no offsite snapshot", c)
		}
	}

	// Again: nothing new, both skipped.
	res, err = offsite.Copy(ctx, local)
	if err != nil || len(res.Copied) != 0 || len(res.Skipped) != 2 {
		t.Fatalf("second copy = %+v, %v; want 2 skipped", res, err)
	}

	// The copy restores to the same bytes.
	target := t.TempDir()
	if err := offsite.Restore(ctx, originals[ids[0]], target); err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(target, "data", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("restored %s: %d bytes, %v; want %d bytes", name, len(got), err, len(want))
		}
	}

	// A wrong source password: ErrWrongPassword, and no password in the error.
	bad := local
	bad.Password = "not-the-local-password-5"
	_, err = offsite.Copy(ctx, bad)
	if !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("copy with a wrong source password: %v, want ErrWrongPassword", err)
	}
	for _, secret := range []string{bad.Password, offsite.Password} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q shows a password", err)
		}
	}
}

// chunkerPolynomial reads a repository's chunker parameter.
func chunkerPolynomial(t *testing.T, r Repo) string {
	t.Helper()
	var out bytes.Buffer
	_, err := r.run(t.Context(), proc.Cmd{Step: "cat", Args: []string{"--no-lock", "cat", "config", "--json"}, Stdout: &out}, false)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Poly string `json:"chunker_polynomial"`
	}
	if err := json.Unmarshal(out.Bytes(), &cfg); err != nil {
		t.Fatalf("config %q: %v", out.String(), err)
	}
	return cfg.Poly
}
