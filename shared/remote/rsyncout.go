package remote

import (
	"strconv"
	"strings"
)

// RsyncProgress is one --info=progress2 update: the whole transfer so
// far, not one file.
type RsyncProgress struct {
	Bytes   int64  // file data done so far
	Percent int    // rsync's estimate, 0-100
	Rate    string // as rsync prints it, e.g. "12.34MB/s"
}

// ParseRsyncProgress reads one --info=progress2 record, the text between
// two '\r' or '\n' that rsync writes while it transfers:
//
//	"     1,179,648  39% 1000.89kB/s    0:00:01  (xfr#1, to-chk=3/5)"
//
// It reports false for anything else (the --stats block, blank lines).
func ParseRsyncProgress(rec string) (RsyncProgress, bool) {
	f := strings.Fields(rec)
	if len(f) < 4 || !strings.HasSuffix(f[1], "%") || !strings.HasSuffix(f[2], "/s") {
		return RsyncProgress{}, false
	}
	n, rest, err := leadingInt(f[0])
	if err != nil || rest != "" {
		return RsyncProgress{}, false
	}
	pct, err := strconv.Atoi(strings.TrimSuffix(f[1], "%"))
	if err != nil || pct < 0 || pct > 100 {
		return RsyncProgress{}, false
	}
	return RsyncProgress{Bytes: n, Percent: pct, Rate: f[2]}, true
}

// RsyncFailures is what rsync's stderr says it could not transfer
// (exit 23, partial transfer) or found gone (exit 24, vanished files).
type RsyncFailures struct {
	// Paths are the paths named in error lines, in rsync's order, at
	// most the max given to ParseRsyncFailures, each once. They are as
	// rsync printed them: sender paths are usually absolute on the remote
	// host, receiver paths absolute in (or relative to) the staging folder.
	Paths []string
	// Total counts every distinct path named, including those past max.
	Total int
	// Vanished counts "file has vanished" lines.
	Vanished int
	// DeletionsSkipped means rsync kept files it would have deleted,
	// because an I/O error made its view of the source incomplete.
	DeletionsSkipped bool
}

// ParseRsyncFailures reads the per-file error lines of rsync's stderr
// (rsync 3.x), for example:
//
//	rsync: [sender] send_files failed to open "/srv/x": Permission denied (13)
//	rsync: [sender] readlink_stat("/srv/l") failed: Permission denied (13)
//	rsync: [receiver] rename "/b/s/.a.Xy12" -> "sub/a": Operation not permitted (1)
//	file has vanished: "/srv/tmp/sess_1"
//
// Lines without a quoted path (the closing "rsync error: ... (code 23)"
// summary, "*** Skipping ..." notes) are not paths. max <= 0 means no cap.
func ParseRsyncFailures(stderr string, max int) RsyncFailures {
	var f RsyncFailures
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.ReplaceAll(stderr, "\r", "\n"), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.Contains(line, "IO error encountered -- skipping file deletion"):
			f.DeletionsSkipped = true
			continue
		case strings.HasPrefix(line, "file has vanished: "):
			f.Vanished++
		case strings.HasPrefix(line, "rsync: "), strings.HasPrefix(line, "rsync warning: "):
			if strings.HasPrefix(line, "rsync warning: some files vanished") {
				continue
			}
		default:
			continue
		}
		p, ok := quotedPath(line)
		if !ok || seen[p] {
			continue
		}
		seen[p] = true
		f.Total++
		if max <= 0 || len(f.Paths) < max {
			f.Paths = append(f.Paths, p)
		}
	}
	return f
}

// quotedPath returns the path an rsync error line names between double
// quotes. Paths may themselves hold quotes, so it takes the first quote to
// the last; in a rename line ("A" -> "B") it is the destination, the name
// the file should have had.
func quotedPath(line string) (string, bool) {
	if strings.Contains(line, ` rename "`) {
		if _, dst, ok := strings.Cut(line, `" -> "`); ok {
			if j := strings.LastIndex(dst, `"`); j > 0 {
				return dst[:j], true
			}
		}
	}
	i := strings.Index(line, `"`)
	j := strings.LastIndex(line, `"`)
	if i < 0 || j <= i+1 {
		return "", false
	}
	return line[i+1 : j], true
}
