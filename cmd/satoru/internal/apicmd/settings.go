package apicmd

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"unicode"
)

// DefaultAPIURL matches the default api_listen.
const DefaultAPIURL = "http://127.0.0.1:8080"

// Environment variables the client commands read.
const (
	EnvAPIURL    = "SATORU_API_URL"
	EnvToken     = "SATORU_API_TOKEN"
	EnvTokenFile = "SATORU_API_TOKEN_FILE"
	EnvDataDir   = "SATORU_DATA_DIR"
)

// settings is where to send requests and with which token.
type settings struct {
	APIURL string
	Token  string
	// TokenSource says where the token came from, for error messages
	// (never the token itself).
	TokenSource string
}

// errNoToken: no source held a token.
var errNoToken = errors.New("no API token")

// resolveSettings picks the API URL (--api-url, SATORU_API_URL, the
// default) and the token (--token-file, SATORU_API_TOKEN,
// SATORU_API_TOKEN_FILE, <data_dir>/api-token). The token is never taken
// from a flag value: argv is visible to every user in ps.
func resolveSettings(flagURL, flagTokenFile string, environ []string, readFile func(string) ([]byte, error)) (settings, error) {
	var s settings
	switch {
	case flagURL != "":
		s.APIURL = flagURL
	case lookup(environ, EnvAPIURL) != "":
		s.APIURL = lookup(environ, EnvAPIURL)
	default:
		s.APIURL = DefaultAPIURL
	}

	var raw []byte
	switch {
	case flagTokenFile != "":
		s.TokenSource = "token file " + flagTokenFile + " (--token-file)"
		b, err := readFile(flagTokenFile)
		if err != nil {
			return s, fmt.Errorf("read token file %s (--token-file): %w", flagTokenFile, err)
		}
		raw = b
	case lookup(environ, EnvToken) != "":
		s.TokenSource = EnvToken
		raw = []byte(lookup(environ, EnvToken))
	case lookup(environ, EnvTokenFile) != "":
		p := lookup(environ, EnvTokenFile)
		s.TokenSource = "token file " + p + " (" + EnvTokenFile + ")"
		b, err := readFile(p)
		if err != nil {
			return s, fmt.Errorf("read token file %s (%s): %w", p, EnvTokenFile, err)
		}
		raw = b
	default:
		dataDir := lookup(environ, EnvDataDir)
		if dataDir == "" {
			dataDir = "./data"
		}
		p := filepath.Join(dataDir, "api-token")
		s.TokenSource = "token file " + p + " (written by satoru up)"
		b, err := readFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return s, fmt.Errorf("%w: pass --token-file FILE or set %s or %s (satoru up writes a generated token to <data_dir>/api-token; %s does not exist)",
				errNoToken, EnvToken, EnvTokenFile, p)
		}
		if err != nil {
			return s, fmt.Errorf("read token file %s: %w", p, err)
		}
		raw = b
	}
	tok := strings.TrimSpace(string(raw))
	switch {
	case tok == "":
		return s, fmt.Errorf("%w: the %s is empty", errNoToken, s.TokenSource)
	case strings.ContainsFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		// Never echo it: say only what is wrong.
		return s, fmt.Errorf("the token from %s contains spaces or control characters; it must be one line", s.TokenSource)
	}
	s.Token = tok
	return s, nil
}

func lookup(environ []string, key string) string {
	for i := len(environ) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(environ[i], key+"="); ok {
			return v
		}
	}
	return ""
}
