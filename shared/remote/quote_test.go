package remote

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/satoru/satoru/shared/proc"
)

func TestQuote(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty", "", "''"},
		{"plain", "abc", "'abc'"},
		{"space", "a b", "'a b'"},
		{"single quote", "it's", `'it'\''s'`},
		{"only quotes", "''", `''\'''\'''`},
		{"dollar and backticks stay literal", "$(id) `id` $HOME", "'$(id) `id` $HOME'"},
		{"newline", "a\nb", "'a\nb'"},
		{"backslash", `a\b`, `'a\b'`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Quote(tc.in); got != tc.want {
				t.Errorf("Quote(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// hostileArgs are strings a path or name could hold that would do harm if
// the remote shell read them as syntax.
var hostileArgs = []string{
	"plain",
	"",
	"with space",
	"it's",
	`double "quoted"`,
	"semi;colon && true || false",
	"$(touch /tmp/satoru-pwned)",
	"`touch /tmp/satoru-pwned`",
	"$HOME ${PATH} $1 $@ $*",
	"glob * ? [a-z]",
	"back\\slash\\",
	"new\nline",
	"tab\there",
	"-starts-with-dash",
	"unicode ✓ é",
	"'",
	"\\'",
	"#comment",
	"~tilde",
	"a|b>c<d&e",
}

// TestCommandLineRoundTrip hands CommandLine's output to real shells, the
// way sshd does, and checks each argument comes back byte for byte.
func TestCommandLineRoundTrip(t *testing.T) {
	for _, shell := range []string{"sh", "bash", "dash"} {
		if _, err := exec.LookPath(shell); err != nil {
			continue
		}
		t.Run(shell, func(t *testing.T) {
			line := "printf '%s\\0' " + CommandLine(hostileArgs...)
			res, err := proc.Run(context.Background(), proc.Cmd{Path: shell, Args: []string{"-c", line}})
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimSuffix(string(res.Stdout), "\x00"), "\x00")
			if len(got) != len(hostileArgs) {
				t.Fatalf("got %d args, want %d: %q", len(got), len(hostileArgs), got)
			}
			for i := range got {
				if got[i] != hostileArgs[i] {
					t.Errorf("arg %d = %q, want %q", i, got[i], hostileArgs[i])
				}
			}
		})
	}
}

func TestValidatePath(t *testing.T) {
	tests := []struct {
		name, path, wantErr string // wantErr: substring, "" for valid
	}{
		{"absolute", "/var/www", ""},
		{"root", "/", ""},
		{"odd but fine", "/data/it's a $(dir)`x`;", ""},
		{"empty", "", "empty path"},
		{"relative", "var/www", "not absolute"},
		{"dot relative", "./x", "not absolute"},
		{"tilde is not absolute", "~/x", "not absolute"},
		{"nul", "/a\x00b", "NUL"},
		{"newline", "/a\nb", "line break"},
		{"carriage return", "/a\rb", "line break"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidatePath(tc.path)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidatePath(%q) = %v", tc.path, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidPath) {
				t.Fatalf("ValidatePath(%q) = %v, want ErrInvalidPath mentioning %q", tc.path, err, tc.wantErr)
			}
		})
	}
}
