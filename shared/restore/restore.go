// Package restore holds the rules a restore request must meet: the API
// checks them when the request comes in, and the puller checks them again
// on the job it read from the store before it acts, so a job that did not
// come through the API (or was changed in the store or the queue) meets
// the same rules.
//
// A local destination is judged by where it really leads: Guard resolves
// it with symlinks followed (the nearest existing parent, when the folder
// does not exist yet) and refuses it when it overlaps one of Satoru's own
// areas (data_dir, staging_root, the repository, secret files).
package restore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/remote"
)

// Limits on a request.
const (
	MaxPaths   = 1000
	MaxPathLen = 4096
)

// ErrInvalid marks a request (or a destination) that the rules refuse.
// Its text starts with the field at fault, as the API's JSON names it
// ("paths[2]: ...", "destination.local_path: ...").
var ErrInvalid = errors.New("invalid restore request")

// invalid is an ErrInvalid whose text is only the message.
type invalid struct{ msg string }

func (e *invalid) Error() string        { return e.msg }
func (e *invalid) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalid{msg: fmt.Sprintf(format, args...)}
}

// Clean returns r with its paths cleaned (path.Clean), the form Validate
// requires. Relative or empty paths stay as they are, for Validate to refuse.
func Clean(r domain.RestoreRequest) domain.RestoreRequest {
	c := func(p string) string {
		if strings.HasPrefix(p, "/") {
			return path.Clean(p)
		}
		return p
	}
	out := r
	out.Paths = make([]string, len(r.Paths))
	for i, p := range r.Paths {
		out.Paths[i] = c(p)
	}
	out.Destination.LocalPath = c(r.Destination.LocalPath)
	out.Destination.Path = c(r.Destination.Path)
	return out
}

// Validate checks a restore request as the API accepts it: a snapshot id
// (8 to 64 hex digits), 1 to MaxPaths clean absolute paths inside the
// snapshot with distinct base names (each lands at <destination>/<base
// name>), and exactly one destination: a clean absolute local_path, or
// to_site with a clean absolute path, neither the root folder. Errors
// wrap ErrInvalid and name the field.
func Validate(r domain.RestoreRequest) error {
	if msg := checkSnapshotID(r.SnapshotID); msg != "" {
		return invalidf("snapshot_id: %s", msg)
	}
	switch {
	case len(r.Paths) == 0:
		return invalidf("paths: required: the files or folders to restore, as absolute paths inside the snapshot")
	case len(r.Paths) > MaxPaths:
		return invalidf("paths: at most %d, got %d", MaxPaths, len(r.Paths))
	}
	names := map[string]int{}
	for i, p := range r.Paths {
		if msg := checkPath(p); msg != "" {
			return invalidf("paths[%d]: %s", i, msg)
		}
		if p == "/" {
			return invalidf("paths[%d]: must name a file or folder inside the snapshot (start from the snapshot's root path), not /", i)
		}
		base := path.Base(p)
		if j, dup := names[base]; dup {
			return invalidf("paths[%d]: has the same name %q as paths[%d], and both would be restored to <destination>/%s; restore them separately", i, clip(base), j, clip(base))
		}
		names[base] = i
	}
	d := r.Destination
	switch {
	case d.LocalPath != "" && (d.ToSite || d.Path != ""):
		return invalidf("%s", msgBoth)
	case d.LocalPath != "":
		if msg := checkPath(d.LocalPath); msg != "" {
			return invalidf("destination.local_path: %s", msg)
		}
		if d.LocalPath == "/" {
			return invalidf("destination.local_path: must not be the root folder")
		}
	case d.ToSite:
		if d.Path == "" {
			return invalidf("%s", msgSiteNoPath)
		}
		if msg := checkPath(d.Path); msg != "" {
			return invalidf("destination.path: %s", msg)
		}
		if d.Path == "/" {
			return invalidf("destination.path: must not be the root folder")
		}
	case d.Path != "":
		return invalidf("destination.path: only with to_site: true (for a folder on this host use local_path)")
	default:
		return invalidf(`destination: required: give {"local_path": "/folder"} or {"to_site": true, "path": "/folder"}`)
	}
	return nil
}

// Refusals that both Destination (the request's shape) and Validate
// (the request's values) give.
const (
	msgBoth       = "destination: give either local_path, or to_site with path, not both"
	msgSiteNoPath = "destination.path: required with to_site: the folder on the site to restore into"
)

// Destination builds a request's destination from the fields its JSON
// gave, nil for a field left out: the shape of the request, which the
// domain type cannot tell (a local_path given empty, an empty
// destination object). Validate judges the values afterwards. Errors
// wrap ErrInvalid and name the field.
func Destination(localPath *string, toSite *bool, sitePath *string) (domain.RestoreDestination, error) {
	var d domain.RestoreDestination
	site := toSite != nil && *toSite
	switch {
	case localPath != nil && (site || sitePath != nil):
		return d, invalidf("%s", msgBoth)
	case localPath != nil:
		if *localPath == "" {
			return d, invalidf("destination.local_path: must not be empty: the folder on this host to restore into")
		}
		d.LocalPath = *localPath
	case !site && sitePath == nil:
		return d, invalidf(`destination: give {"local_path": "/folder"} or {"to_site": true, "path": "/folder"}`)
	case sitePath != nil && *sitePath == "" && site:
		return d, invalidf("%s", msgSiteNoPath)
	case sitePath != nil:
		d.ToSite, d.Path = site, *sitePath
	default:
		d.ToSite = site
	}
	return d, nil
}

// InSnapshot checks that each path lies inside the snapshot: at or below
// one of its root paths (restic's paths of the snapshot). A path outside
// would restore nothing. Errors wrap ErrInvalid and name the path.
func InSnapshot(paths, roots []string) error {
	for i, p := range paths {
		if !insideAny(p, roots) {
			return invalidf("paths[%d]: %q is not inside the snapshot, whose root is %s", i, clip(p), strings.Join(roots, ", "))
		}
	}
	return nil
}

// insideAny reports whether p is one of roots or below one.
func insideAny(p string, roots []string) bool {
	for _, r := range roots {
		if p == r || strings.HasPrefix(p, strings.TrimRight(r, "/")+"/") {
			return true
		}
	}
	return false
}

// jobIDRe is the form of the job ids the API makes (UUIDs); a job id
// becomes part of a temporary folder's name, so nothing else is accepted.
var jobIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,63}$`)

// ValidateJob is what a worker checks on a restore job it read from the
// store: Validate, a full 64-digit snapshot id (the API stores the full
// id it matched), and a job id fit for a folder name.
func ValidateJob(jobID string, r domain.RestoreRequest) error {
	if !jobIDRe.MatchString(jobID) {
		return invalidf("job_id: %q is not a job id", clip(jobID))
	}
	if err := Validate(r); err != nil {
		return err
	}
	if len(r.SnapshotID) != 64 {
		return invalidf("snapshot_id: a queued restore must carry the full 64-digit id, got %d digits", len(r.SnapshotID))
	}
	return nil
}

// TempName is the name of a restore's temporary folder, made next to its
// destination: hidden, and unique per job so a redelivered attempt finds
// (and clears) its own leftovers and nothing else.
func TempName(jobID string) string { return ".satoru-restore-" + jobID }

func checkSnapshotID(id string) string {
	switch {
	case id == "":
		return "required"
	case len(id) < 8 || len(id) > 64 || strings.Trim(id, "0123456789abcdef") != "":
		return fmt.Sprintf("must be a snapshot id of 8 to 64 lower-case hex digits, got %q", clip(id))
	}
	return ""
}

func checkPath(p string) string {
	if len(p) > MaxPathLen {
		return fmt.Sprintf("must be at most %d bytes, got %d", MaxPathLen, len(p))
	}
	if err := remote.ValidatePath(p); err != nil {
		return "must be an absolute path (starting with /) without NUL bytes or line breaks: " +
			strings.TrimPrefix(strings.TrimPrefix(err.Error(), remote.ErrInvalidPath.Error()), ": ")
	}
	if path.Clean(p) != p {
		return fmt.Sprintf("must be a clean path (no empty, . or .. parts, no trailing /), got %q", clip(p))
	}
	return ""
}

// Area is one of Satoru's own paths that a local restore may neither
// write into nor contain: a folder (data_dir, staging_root, the
// repository) or a file (a secret).
type Area struct {
	// Key is the config key that names the path, used in errors.
	Key  string
	Path string
}

// Guard judges local destinations against Satoru's own areas.
type Guard struct {
	Areas []Area
}

// Check resolves dest (an absolute path) with symlinks followed and
// refuses it when it, or the path as given, lies inside an area or
// contains one (areas are resolved the same way). It returns the resolved
// path, which is where the restore must write. Errors wrap ErrInvalid and
// start with "destination.local_path:".
func (g Guard) Check(dest string) (string, error) {
	if !filepath.IsAbs(dest) {
		return "", invalidf("destination.local_path: %q is not absolute", clip(dest))
	}
	dest = filepath.Clean(dest)
	real, err := Resolve(dest)
	if err != nil {
		return "", invalidf("destination.local_path: %v; nothing restored", err)
	}
	// Every overlap is found; the error names the innermost area that
	// holds the destination (the repository rather than the data_dir
	// around it), else the first area the destination would contain.
	var hit *Area
	var hitAbs string
	hitInside, hitLen := false, -1
	for i, a := range g.Areas {
		if a.Path == "" {
			continue
		}
		abs, err := filepath.Abs(a.Path)
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", a.Key, a.Path, err)
		}
		forms := []string{abs}
		if r, err := Resolve(abs); err == nil && r != abs {
			forms = append(forms, r)
		}
		for _, d := range []string{dest, real} {
			for _, ap := range forms {
				inside := within(d, ap)
				if !inside && !within(ap, d) {
					continue
				}
				better := hit == nil || (inside && !hitInside) || (inside == hitInside && inside && len(ap) > hitLen)
				if better {
					hit, hitAbs, hitInside, hitLen = &g.Areas[i], abs, inside, len(ap)
				}
			}
		}
	}
	if hit != nil {
		return "", invalidf("destination.local_path: %s%s overlaps %s %s, which holds Satoru's own files; nothing restored. Restore into a folder outside it",
			dest, resolvedNote(dest, real), hit.Key, hitAbs)
	}
	return real, nil
}

func resolvedNote(dest, real string) string {
	if dest == real {
		return ""
	}
	return " (which resolves to " + real + ")"
}

// Local is a local destination a restore may write, as Guard.Local judged it.
type Local struct {
	// Path is the destination with symlinks resolved: the restore writes
	// here and nowhere else.
	Path string
	// Exists says the folder is there already (and overwrite was given);
	// otherwise the restore creates it.
	Exists bool
}

// Local checks a local destination: Check, then the folder must not
// exist, or overwrite must be set and it must be a folder. An existing
// empty folder needs overwrite too: the restore did not create it, and an
// empty /root/.ssh is still a place that matters.
func (g Guard) Local(dest string, overwrite bool) (Local, error) {
	real, err := g.Check(dest)
	if err != nil {
		return Local{}, err
	}
	fi, err := os.Lstat(real)
	if errors.Is(err, fs.ErrNotExist) {
		return Local{Path: real}, nil
	}
	if err != nil {
		return Local{}, fmt.Errorf("destination %s: %w", real, err)
	}
	if !fi.IsDir() {
		return Local{}, invalidf("destination.local_path: %s%s exists and is not a folder; nothing restored", dest, resolvedNote(dest, real))
	}
	if !overwrite {
		if empty, _ := isEmpty(real); empty {
			return Local{}, invalidf(`destination.local_path: %s%s already exists (an empty folder this restore did not create); nothing restored. `+
				`Restore into a new folder, or set "overwrite": true to restore into it`, dest, resolvedNote(dest, real))
		}
		return Local{}, invalidf("destination.local_path: "+NotEmpty, dest+resolvedNote(dest, real))
	}
	return Local{Path: real, Exists: true}, nil
}

// NotEmpty is the refusal of a destination folder that has files in it
// (%s is the folder), for local and site destinations alike.
const NotEmpty = `destination %s is not empty; nothing restored. Restore into a new folder, ` +
	`or set "overwrite": true to restore into it (files of the same name are replaced, other files are kept)`

func isEmpty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// Resolve returns the absolute path p with every symlink followed: the
// nearest existing parent of p is resolved with filepath.EvalSymlinks and
// the parts that do not exist yet are joined to it. It fails when a part
// of p is a file, or a symlink that leads nowhere.
func Resolve(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%q is not absolute", p)
	}
	cur := filepath.Clean(p)
	var missing []string
	for {
		_, err := os.Lstat(cur)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			// ENOTDIR (a file on the way) and EACCES end up here.
			return "", fmt.Errorf("%s: %w", p, err)
		}
		if cur == "/" {
			break
		}
		missing = append(missing, filepath.Base(cur))
		cur = filepath.Dir(cur)
	}
	real, err := filepath.EvalSymlinks(cur)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s is a symbolic link to a path that does not exist", cur)
	}
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", cur, err)
	}
	if len(missing) > 0 {
		if fi, err := os.Stat(real); err != nil {
			return "", fmt.Errorf("%s: %w", cur, err)
		} else if !fi.IsDir() {
			return "", fmt.Errorf("%s is not a folder", cur)
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		real = filepath.Join(real, missing[i])
	}
	return real, nil
}

// MoveNew renames the folder from to the path to, which must not exist:
// a file, folder or symlink that appeared there since the destination was
// checked is never replaced (RENAME_NOREPLACE). from and to must be on one
// filesystem.
func MoveNew(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
		// A filesystem without RENAME_NOREPLACE: check, then rename.
		if _, lerr := os.Lstat(to); !errors.Is(lerr, fs.ErrNotExist) {
			return fmt.Errorf("%s appeared while restoring", to)
		}
		if err := os.Rename(from, to); err != nil {
			return fmt.Errorf("rename %s to %s: %w", from, to, err)
		}
		return nil
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%s appeared while restoring", to)
	}
	return fmt.Errorf("rename %s to %s: %w", from, to, err)
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
