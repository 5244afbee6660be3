// Package staging gives a staging folder an identity of its own. A
// backup's snapshot must read the staging its pull wrote: the id, not
// the host name, tells whether two processes share that folder (two
// processes on one host with different staging roots are different
// nodes; two with one staging root are one node).
package staging

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// IDFile is the file under the staging root that holds its id.
const IDFile = ".satoru-staging-id"

// idLen is the length of an id: 16 random bytes, hex.
const idLen = 32

// ValidID reports whether s has the form of a staging id.
func ValidID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ID returns the id of the staging folder root, creating the folder
// (0700) and the id (0600) on first use. Processes starting at once on
// one root agree: the id is written to a temporary file and linked into
// place, which fails for all but the first; the others read the winner's.
func ID(root string) (string, error) {
	if root == "" {
		return "", errors.New("staging id: staging_root is empty")
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", fmt.Errorf("staging id: create staging_root %s: %w", root, err)
	}
	path := filepath.Join(root, IDFile)
	if id, err := read(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return id, err
	}
	buf := make([]byte, idLen/2)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("staging id: generate: %w", err)
	}
	tmp, err := os.CreateTemp(root, IDFile+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("staging id: write in %s: %w", root, err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(hex.EncodeToString(buf) + "\n")
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp.Name(), 0o600)
	}
	if werr != nil {
		return "", fmt.Errorf("staging id: write %s: %w", tmp.Name(), werr)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("staging id: create %s: %w", path, err)
	}
	return read(path)
}

// read reads and checks an id file.
func read(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		return "", fmt.Errorf("staging id: read %s: %w", path, err)
	}
	id := strings.TrimSpace(string(b))
	if !ValidID(id) {
		// Never replaced silently: a new id would make this folder look
		// like another node's and fail every snapshot handed to it.
		return "", fmt.Errorf("staging id: %s does not hold a staging id (32 hex digits); remove it to give the folder a new one", path)
	}
	return id, nil
}
