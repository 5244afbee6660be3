package restic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// The forget testdata is real restic 0.18.1 output for two sites with four
// snapshots each (--host satoru-<uuid>, --tag site:<uuid>, job:<id>), made
// by `forget --json --prune --host satoru-6f1c... --tag site:6f1c...
// --group-by host --keep-last 2`: forget_prune.stdout the first run,
// forget_nothing.stdout a second one (nothing left to remove, so no
// prune), forget_locked.stderr a run against the stale exclusive lock of
// a SIGKILLed `restic key passwd` with --retry-lock 1s (exit 11), and
// unlock.stdout the `unlock --json` that removed that lock.

const capturedSite = "6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"

func TestForgetArgs(t *testing.T) {
	tests := []struct {
		name string
		o    ForgetOptions
		want []string
	}{
		{"policy only", ForgetOptions{Policy: []string{"--keep-last", "2"}},
			[]string{"forget", "--json", "--keep-last", "2"}},
		{"one site, pruned", ForgetOptions{Tags: []string{"site:s1"}, Host: "satoru-s1", GroupBy: "host",
			Policy: []string{"--keep-daily", "7", "--keep-weekly", "4", "--keep-within", "30d"}, Prune: true},
			[]string{"forget", "--json", "--host", "satoru-s1", "--tag", "site:s1", "--group-by", "host",
				"--keep-daily", "7", "--keep-weekly", "4", "--keep-within", "30d", "--prune"}},
		{"tags joined: all of them, empty ones dropped", ForgetOptions{Tags: []string{"a", "", "b"}, Policy: []string{"--keep-last", "1"}},
			[]string{"forget", "--json", "--tag", "a,b", "--keep-last", "1"}},
		{"no --quiet, so prune's statistics are printed", ForgetOptions{Policy: []string{"--keep-last", "1"}, Prune: true},
			[]string{"forget", "--json", "--keep-last", "1", "--prune"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ForgetArgs(tc.o); !slices.Equal(got, tc.want) {
				t.Errorf("ForgetArgs = %q\nwant          %q", got, tc.want)
			}
		})
	}
}

func TestCheckPolicy(t *testing.T) {
	tests := []struct {
		name    string
		policy  []string
		wantErr string
	}{
		{"keep last", []string{"--keep-last", "2"}, ""},
		{"every keep flag", []string{"--keep-last", "1", "--keep-hourly", "2", "--keep-daily", "3", "--keep-weekly", "4",
			"--keep-monthly", "5", "--keep-yearly", "6", "--keep-within", "1y2m", "--keep-tag", "pin"}, ""},
		{"empty", nil, "no retention policy"},
		{"odd", []string{"--keep-last"}, "needs a value"},
		{"remove all", []string{"--unsafe-allow-remove-all", "x"}, "not a --keep-* flag"},
		{"dry run", []string{"--keep-last", "2", "--dry-run", "x"}, "not a --keep-* flag"},
		{"value is a flag", []string{"--keep-last", "--unsafe-allow-remove-all"}, "has no value"},
		{"empty value", []string{"--keep-daily", ""}, "has no value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkPolicy(tc.policy)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseCapturedForget(t *testing.T) {
	tests := []struct {
		name string
		file string
		want ForgetResult
	}{
		{"forget and prune", "forget_prune.stdout", ForgetResult{
			Groups: 1, Kept: 2, Removed: 2,
			KeptIDs:    []string{"f712268923473089d80ebff27086a2489bbc001acef14499d036b9d4126cffbf", "8059b6132b79606332fd3a2a3adf441a190d18ad5bb0d638e1a12bd0f3c375f4"},
			RemovedIDs: []string{"c5574eb0af75dedfef325bcb6a38903bf1c5d200ecd022000317d1219a0861d0", "0dc4a09fa605f3f7a7b58e5f4b3d7081043fe04531f6e0573667cd74bd7391f6"},
			Pruned:     true, BlobsFreed: 10,
			BytesFreed:     802147,  // 783.347 KiB
			BytesRemaining: 2406482, // 2.295 MiB
		}},
		{"nothing to remove: no prune", "forget_nothing.stdout", ForgetResult{
			Groups: 1, Kept: 2,
			KeptIDs: []string{"f712268923473089d80ebff27086a2489bbc001acef14499d036b9d4126cffbf", "8059b6132b79606332fd3a2a3adf441a190d18ad5bb0d638e1a12bd0f3c375f4"},
		}},
	}
	for _, tc := range tests {
		for _, feed := range []struct {
			name string
			wrap func(*strings.Reader) io.Reader
		}{
			{"whole", func(r *strings.Reader) io.Reader { return r }},
			{"one byte at a time", func(r *strings.Reader) io.Reader { return iotest.OneByteReader(r) }},
		} {
			t.Run(tc.name+"/"+feed.name, func(t *testing.T) {
				out := readFile(t, filepath.Join("testdata", tc.file))
				res, noise, err := parseForgetOutput(feed.wrap(strings.NewReader(out)))
				if err != nil {
					t.Fatal(err)
				}
				if !forgetResultEqual(res, tc.want) {
					t.Errorf("result = %+v\nwant     %+v", res, tc.want)
				}
				if tc.want.Pruned {
					// Prune's other text is kept as noise; the statistics are not.
					if !strings.HasSuffix(noise, "done") || strings.Contains(noise, "total prune") || strings.Contains(noise, capturedSite) {
						t.Errorf("noise = %q", noise)
					}
				} else if noise != "" {
					t.Errorf("noise = %q, want none", noise)
				}
			})
		}
	}
}

func TestParseForgetOutputOdd(t *testing.T) {
	snap := func(id string) string { return `{"time":"2026-01-01T00:00:00Z","id":"` + id + `","paths":["/p"]}` }
	tests := []struct {
		name    string
		out     string
		want    ForgetResult
		wantErr string
	}{
		{"no snapshot matched: restic prints nothing", "", ForgetResult{}, ""},
		{"white space only", " \n\n", ForgetResult{}, ""},
		{"two groups, null lists, unknown fields",
			`[{"tags":null,"host":"h1","paths":["/a"],"keep":[` + snap("k1") + `],"remove":null,"reasons":[{"snapshot":` + snap("k1") + `,"matches":["last snapshot"]}],"future":{"x":[1,{"y":2}]}},` +
				`{"host":"h2","keep":[` + snap("k2") + `,` + snap("k3") + `],"remove":[` + snap("r1") + `]}]` + "\n",
			ForgetResult{Groups: 2, Kept: 3, Removed: 1, KeptIDs: []string{"k1", "k2", "k3"}, RemovedIDs: []string{"r1"}}, ""},
		{"prune text without statistics", `[{"keep":[` + snap("k") + `],"remove":[` + snap("r") + `]}]` + "\nloading indexes...\ndone\n",
			ForgetResult{Groups: 1, Kept: 1, Removed: 1, KeptIDs: []string{"k"}, RemovedIDs: []string{"r"}}, ""},
		{"text instead of JSON", "Applying Policy: keep 2 latest snapshots\n", ForgetResult{}, "no JSON result in output: Applying Policy"},
		{"broken JSON", `[{"keep":[{"id":"a"}`, ForgetResult{}, "decode forget output"},
		{"snapshot without id", `[{"keep":[{"time":"x"}]}]`, ForgetResult{}, "snapshot without id"},
		{"keep is not a list", `[{"keep":{"id":"a"}}]`, ForgetResult{}, "want an array"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, _, err := parseForgetOutput(strings.NewReader(tc.out))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !forgetResultEqual(res, tc.want) {
				t.Errorf("result = %+v\nwant     %+v", res, tc.want)
			}
		})
	}
}

func TestParseResticSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0 B", 0, true},
		{"1023 B", 1023, true},
		{"1.000 KiB", 1024, true},
		{"783.347 KiB", 802147, true},
		{"2.295 MiB", 2406482, true},
		{"1.500 GiB", 1610612736, true},
		{"2.000 TiB", 2 << 40, true},
		{"12", 0, false},
		{"1.0 PB", 0, false},
		{"-1 B", 0, false},
		{"x KiB", 0, false},
	}
	for _, tc := range tests {
		got, err := parseResticSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseResticSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseUnlocked(t *testing.T) {
	out := readFile(t, filepath.Join("testdata", "unlock.stdout"))
	if n, ok := parseUnlocked(out); !ok || n != 1 {
		t.Errorf("captured %q: %d, %v; want 1", out, n, ok)
	}
	for _, line := range []string{"", "successfully removed x locks", "removed 2 locks"} {
		if n, ok := parseUnlocked(line); ok {
			t.Errorf("parseUnlocked(%q) = %d, true", line, n)
		}
	}
}

// TestForgetWithFakeRestic drives Forget's exit handling with scripts
// that replay captured output.
func TestForgetWithFakeRestic(t *testing.T) {
	td, _ := filepath.Abs("testdata")
	policy := []string{"--keep-last", "2"}
	tests := []struct {
		name        string
		script      string
		wantErr     error
		wantText    string
		wantRemoved int
	}{
		{name: "success", script: `cat "$TD/forget_prune.stdout"`, wantRemoved: 2},
		{name: "stale lock after the retry window", script: `cat "$TD/forget_locked.stderr" >&2; exit 11`,
			wantErr: ErrLocked, wantText: "exit 11 (repository is locked): unable to create lock in backend: repository is already locked exclusively by PID 25455"},
		{name: "prune fails after forget removed snapshots: the removal is still reported",
			script:  `head -n 1 "$TD/forget_prune.stdout"; echo 'loading indexes...'; echo '{"message_type":"exit_error","code":1,"message":"Fatal: pack 1234 is damaged"}' >&2; exit 1`,
			wantErr: errAny, wantText: "pack 1234 is damaged", wantRemoved: 2},
		{name: "exit 0 with text only", script: `echo 'something odd'`, wantErr: errAny, wantText: "no JSON result in output: something odd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Repo{Bin: fakeRestic(t, tc.script), Repository: "/r", Password: "pw", Env: []string{"TD=" + td}}
			res, err := r.Forget(context.Background(), ForgetOptions{Policy: policy, Prune: true})
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("err = %v", err)
			case tc.wantErr != nil && err == nil:
				t.Fatalf("no error, want %v", tc.wantErr)
			case tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantText != "" && !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("err = %q, want it to contain %q", err, tc.wantText)
			}
			if res.Removed != tc.wantRemoved {
				t.Errorf("removed = %d, want %d", res.Removed, tc.wantRemoved)
			}
		})
	}
}

// errAny stands for "some error" in tables.
var errAny = errors.New("any error")

func TestForgetRejectsBadInputWithoutRunning(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	r := Repo{Bin: fakeRestic(t, `touch "$MARK"`), Repository: "/r", Password: "pw", Env: []string{"MARK=" + marker}}
	for _, o := range []ForgetOptions{
		{},
		{Policy: []string{"--unsafe-allow-remove-all", "true"}},
		{Policy: []string{"--keep-last", "1"}, Tags: []string{"a,b"}},
	} {
		if _, err := r.Forget(context.Background(), o); err == nil {
			t.Errorf("Forget(%+v): no error", o)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("restic ran")
	}
}

func TestForgetRetryLockAndStreaming(t *testing.T) {
	// ~2.5 MB of JSON, more than proc captures, then prune's statistics:
	// decoded as it streams. argv goes to a file to check --retry-lock.
	script := `printf '%s\n' "$@" > "$ARGV"
awk 'BEGIN { printf "[{\"host\":\"h\",\"keep\":["; for (i = 0; i < 3000; i++) { if (i) printf ","; printf "{\"id\":\"k%063d\",\"paths\":[\"/p/%0300d\"]}", i, i }
printf "],\"remove\":["; for (i = 0; i < 3000; i++) { if (i) printf ","; printf "{\"id\":\"r%063d\",\"paths\":[\"/p/%0300d\"]}", i, i }
print "]}]"; print "total prune:        9000 blobs / 1.500 GiB"; print "remaining:            10 blobs / 0 B" }'`
	argv := filepath.Join(t.TempDir(), "argv")
	r := Repo{Bin: fakeRestic(t, script), Repository: "/r", Password: "pw", RetryLock: 90 * time.Second, Env: []string{"ARGV=" + argv}}
	res, err := r.Forget(context.Background(), ForgetOptions{Policy: []string{"--keep-last", "3000"}, Prune: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kept != 3000 || res.Removed != 3000 || res.RemovedIDs[2999] != fmt.Sprintf("r%063d", 2999) {
		t.Errorf("kept %d, removed %d", res.Kept, res.Removed)
	}
	if !res.Pruned || res.BlobsFreed != 9000 || res.BytesFreed != 1610612736 || res.BytesRemaining != 0 {
		t.Errorf("prune stats = %+v", res)
	}
	if got := readFile(t, argv); !strings.HasPrefix(got, "--retry-lock\n1m30s\nforget\n--json\n") {
		t.Errorf("argv = %q", got)
	}
}

func forgetResultEqual(a, b ForgetResult) bool {
	return a.Groups == b.Groups && a.Kept == b.Kept && a.Removed == b.Removed &&
		slices.Equal(a.KeptIDs, b.KeptIDs) && slices.Equal(a.RemovedIDs, b.RemovedIDs) &&
		a.Pruned == b.Pruned && a.BlobsFreed == b.BlobsFreed && a.BytesFreed == b.BytesFreed && a.BytesRemaining == b.BytesRemaining
}
