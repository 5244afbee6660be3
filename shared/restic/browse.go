package restic

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/satoru/satoru/shared/proc"
)

var (
	// ErrSnapshotNotFound: no snapshot has the given id (or prefix).
	// restic exits 1 for it, so it is recognised by restic's message.
	ErrSnapshotNotFound = errors.New("snapshot not found")
	// ErrPathNotFound: the snapshot has no file or folder at the path.
	ErrPathNotFound = errors.New("path not found in snapshot")
	// ErrNotDir: a folder was expected, the path is something else.
	ErrNotDir = errors.New("not a folder")
)

// Node is one entry of `restic ls --json`.
type Node struct {
	Name  string    `json:"name"`
	Type  string    `json:"type"` // file, dir, symlink, dev, ...
	Path  string    `json:"path"`
	Size  int64     `json:"size"`
	Mode  uint32    `json:"mode"`
	MTime time.Time `json:"mtime"`
}

// IsDir reports whether n is a folder.
func (n Node) IsDir() bool { return n.Type == "dir" }

// MaxListEntries bounds what List returns for one folder; the rest is
// counted, not kept, so a folder with millions of entries cannot exhaust
// memory.
const MaxListEntries = 10000

// Listing is one folder level of a snapshot.
type Listing struct {
	// Dir is the folder itself; nil for "/" (restic prints no node for
	// the root).
	Dir *Node
	// Entries are the direct children in restic's order (by name), at
	// most MaxListEntries.
	Entries []Node
	// Omitted counts the children past MaxListEntries.
	Omitted int
}

// LsArgs is the argv of List/Stat. Without --recursive restic lists the
// folder's node and its direct children only.
func LsArgs(snapshotID, dir string) []string {
	return []string{"ls", "--json", "--", snapshotID, dir}
}

// List returns one level of folder dir (absolute, as stored in the
// snapshot) of snapshot snapshotID. It wraps ErrSnapshotNotFound,
// ErrPathNotFound, or ErrNotDir when dir is a file. restic's output is
// decoded as it streams in.
func (r Repo) List(ctx context.Context, snapshotID, dir string) (Listing, error) {
	dir, err := cleanPath(dir)
	if err != nil {
		return Listing{}, fmt.Errorf("restic ls: %w", err)
	}
	var l Listing
	err = r.lsStream(ctx, snapshotID, dir, func(n Node) bool {
		switch {
		case n.Path == dir:
			nn := n
			l.Dir = &nn
		case path.Dir(n.Path) == dir:
			if len(l.Entries) < MaxListEntries {
				l.Entries = append(l.Entries, n)
			} else {
				l.Omitted++
			}
		}
		return true
	})
	if err != nil {
		return Listing{}, err
	}
	if dir == "/" {
		return l, nil
	}
	if l.Dir == nil {
		return Listing{}, fmt.Errorf("restic ls %s: %w", dir, ErrPathNotFound)
	}
	if !l.Dir.IsDir() {
		return Listing{}, fmt.Errorf("restic ls %s: %w", dir, ErrNotDir)
	}
	return l, nil
}

// Stat returns the node at p without listing a folder's children: restic
// prints the node itself first, and is stopped once it has. "/" is the
// snapshot's root folder (restic has no node for it; the snapshot is
// still checked to exist).
func (r Repo) Stat(ctx context.Context, snapshotID, p string) (Node, error) {
	p, err := cleanPath(p)
	if err != nil {
		return Node{}, fmt.Errorf("restic ls: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var found *Node
	err = r.lsStream(ctx, snapshotID, p, func(n Node) bool {
		if n.Path == p || p == "/" {
			found = &n
			cancel()
			return false
		}
		return true
	})
	if found != nil {
		if p == "/" {
			return Node{Name: "/", Type: "dir", Path: "/"}, nil
		}
		return *found, nil
	}
	if err != nil {
		return Node{}, err
	}
	if p == "/" {
		return Node{Name: "/", Type: "dir", Path: "/"}, nil // an empty snapshot
	}
	return Node{}, fmt.Errorf("restic ls %s: %w", p, ErrPathNotFound)
}

// lsStream runs restic ls and calls fn for each node until fn says stop
// (the caller then cancels ctx). Lines are decoded one by one.
func (r Repo) lsStream(ctx context.Context, snapshotID, dir string, fn func(Node) bool) error {
	if err := checkSnapshotID(snapshotID); err != nil {
		return fmt.Errorf("restic ls: %w", err)
	}
	return r.lsRun(ctx, LsArgs(snapshotID, dir), fn)
}

// lsRun runs restic ls with args and calls fn for each node as it is
// decoded, until fn says stop.
func (r Repo) lsRun(ctx context.Context, args []string, fn func(Node) bool) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	stopped := false
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var err error
		for sc.Scan() {
			if stopped {
				continue // drain
			}
			var m struct {
				Node
				MessageType string `json:"message_type"`
			}
			line := sc.Bytes()
			if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &m) != nil || m.MessageType != "node" {
				continue
			}
			if !fn(m.Node) {
				stopped = true
			}
		}
		err = sc.Err()
		_, _ = io.Copy(io.Discard, pr)
		done <- err
	}()
	res, runErr := r.runRaw(ctx, proc.Cmd{Step: "ls", Args: args, Stdout: pw}, false)
	pw.Close()
	scanErr := <-done
	if stopped {
		return nil // we stopped restic ourselves
	}
	if runErr != nil {
		return notFound(r.wrap("ls", res, runErr))
	}
	if scanErr != nil {
		return fmt.Errorf("restic ls: read output: %w", scanErr)
	}
	return nil
}

// DumpArgs is the argv of Dump. With an archive format the folder p is
// dumped rooted at itself ("<id>:<p>" then "/"), so the archive holds the
// folder's content without the leading staging path.
func DumpArgs(snapshotID, p, archive string) []string {
	if archive == "" {
		return []string{"dump", "--", snapshotID, p}
	}
	if p == "/" {
		return []string{"dump", "--archive", archive, "--", snapshotID, "/"}
	}
	return []string{"dump", "--archive", archive, "--", snapshotID + ":" + p, "/"}
}

// Dump streams p of snapshot snapshotID to w as restic produces it,
// never holding it in memory: a file as is (archive ""), a folder as an
// archive ("tar" or "zip"). It wraps ErrSnapshotNotFound or
// ErrPathNotFound when restic says so.
func (r Repo) Dump(ctx context.Context, snapshotID, p string, w io.Writer, archive string) error {
	if err := checkSnapshotID(snapshotID); err != nil {
		return fmt.Errorf("restic dump: %w", err)
	}
	p, err := cleanPath(p)
	if err != nil {
		return fmt.Errorf("restic dump: %w", err)
	}
	switch archive {
	case "", "tar", "zip":
	default:
		return fmt.Errorf("restic dump: unknown archive format %q", archive)
	}
	if w == nil {
		return errors.New("restic dump: no writer")
	}
	_, err = r.run(ctx, proc.Cmd{Step: "dump", Args: DumpArgs(snapshotID, p, archive), Stdout: w}, false)
	return notFound(err)
}

// notFound adds ErrSnapshotNotFound / ErrPathNotFound / ErrNotDir to a
// restic failure whose message says so (restic exits 1 for all of them).
func notFound(err error) error {
	var e *Error
	if !errors.As(err, &e) || e.Code != 1 {
		return err
	}
	s := e.Stderr
	switch {
	case strings.Contains(s, "no matching ID found"), strings.Contains(s, "failed to load snapshot"),
		strings.Contains(s, "invalid snapshot ID"), strings.Contains(s, "ambiguous"):
		return fmt.Errorf("%w: %w", ErrSnapshotNotFound, err)
	case strings.Contains(s, "not found in snapshot"), strings.Contains(s, ": not found"):
		return fmt.Errorf("%w: %w", ErrPathNotFound, err)
	case strings.Contains(s, "not a directory"):
		return fmt.Errorf("%w: %w", ErrNotDir, err)
	}
	return err
}

// checkSnapshotID accepts what restic takes as a snapshot id: hex, a
// prefix of at least 8 characters or the full 64. "latest" is not taken:
// browsing is always of a chosen snapshot.
func checkSnapshotID(id string) error {
	if len(id) < 8 || len(id) > 64 {
		return fmt.Errorf("snapshot id %q must be 8 to 64 hex digits", id)
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("snapshot id %q must be 8 to 64 lower-case hex digits", id)
		}
	}
	return nil
}

// cleanPath checks and cleans a path inside a snapshot.
func cleanPath(p string) (string, error) {
	switch {
	case p == "":
		return "/", nil
	case !strings.HasPrefix(p, "/"):
		return "", fmt.Errorf("path %q is not absolute", p)
	case strings.ContainsAny(p, "\x00\n\r"):
		return "", fmt.Errorf("path %q contains a NUL byte or line break", p)
	}
	return path.Clean(p), nil
}
