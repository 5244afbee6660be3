package remote

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/satoru/satoru/shared/domain"
)

// PreflightTarget is one target to check, identified by the caller's
// index so the report never has to echo a path back.
type PreflightTarget struct {
	Index int
	Mode  domain.TargetMode
	Path  string
}

// Problems a target check can report.
const (
	ProblemMissing        = "missing"
	ProblemNotADirectory  = "not_a_directory"
	ProblemNotReadable    = "not_readable"
	ProblemNotAFile       = "not_a_file"
	ProblemTmpNotWritable = "tmp_not_writable"
)

var problemText = map[string]string{
	ProblemMissing:        "path does not exist",
	ProblemNotADirectory:  "path is not a directory",
	ProblemNotReadable:    "path is not readable by the ssh user",
	ProblemNotAFile:       "path is not a regular file",
	ProblemTmpNotWritable: "remote temp folder is not writable",
}

// ToolCheck is one remote tool.
type ToolCheck struct {
	Name    string
	OK      bool
	Version string // first line of its version output, when found
	Detail  string // why it failed
}

// TargetCheck is one target.
type TargetCheck struct {
	Index   int
	OK      bool
	Problem string // one of the Problem constants when !OK
	Detail  string // a sentence for the operator
}

// PreflightReport is everything one preflight command found.
type PreflightReport struct {
	Tools   []ToolCheck
	Targets []TargetCheck
	// TmpDirOK is nil when no check needed the temp folder (no sqlite
	// targets), else whether a file could be created in it.
	TmpDirOK *bool
	// TmpDirDetail is mktemp's message when the temp folder failed.
	TmpDirDetail string
}

// OK reports whether every check passed.
func (r PreflightReport) OK() bool {
	for _, t := range r.Tools {
		if !t.OK {
			return false
		}
	}
	for _, t := range r.Targets {
		if !t.OK {
			return false
		}
	}
	return r.TmpDirOK == nil || *r.TmpDirOK
}

// Target returns the check of the target with index i.
func (r PreflightReport) Target(i int) (TargetCheck, bool) {
	for _, t := range r.Targets {
		if t.Index == i {
			return t, true
		}
	}
	return TargetCheck{}, false
}

// preflightVersion is the report format; the parser refuses others.
const preflightVersion = "1"

// preflightScript runs on the edge host under sh -c. It gets all data as
// positional arguments, never inside its own text, and prints one line per
// check: kind, key, status, text, tab-separated. Text echoed from the host
// (version lines, mktemp errors) loses tabs, line breaks and control
// characters and is cut to 200 characters, so it cannot forge a line.
//
// Arguments: version, target indexes (csv), tool names (csv), tmp needed
// (0/1), then records: "tool NAME", "tmp DIR", "dir INDEX PATH",
// "file INDEX PATH". Paths are absolute (ValidatePath), which gone's walk
// up the path relies on to end. It is one line (statements joined by spaces) so a
// login shell that dislikes newlines inside quotes still passes it on.
var preflightScript = strings.Join([]string{
	`c() { printf '%s' "$1" | tr '\t\r\n' '   ' | tr -d '\000-\037\177' | cut -c 1-200; };`,
	`o() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4"; };`,
	// gone tells a path that does not exist from one hidden behind a folder
	// the user cannot enter: the first existing ancestor decides.
	`gone() { p=$1; while [ -n "$p" ] && [ ! -e "$p" ]; do p=${p%/*}; done; [ -n "$p" ] || p=/;`,
	`if [ -d "$p" ] && [ ! -x "$p" ]; then echo not_readable; else echo missing; fi; };`,
	`printf 'satoru-preflight\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4"; shift 4;`,
	`tmpok=1;`,
	`while [ "$#" -gt 0 ]; do case "$1" in`,
	`tool) if command -v "$2" >/dev/null 2>&1; then o tool "$2" ok "$(c "$("$2" --version </dev/null 2>&1 | head -n 1)")";`,
	`else o tool "$2" fail missing; fi; shift 2;;`,
	`tmp) if m=$(mktemp "$2/.satoru-preflight.XXXXXX" </dev/null 2>&1); then rm -f "$m"; o tmp - ok '';`,
	`else tmpok=0; o tmp - fail "$(c "$m")"; fi; shift 2;;`,
	`dir) if [ ! -e "$3" ]; then r=$(gone "$3"); elif [ ! -d "$3" ]; then r=not_a_directory;`,
	`elif [ ! -r "$3" ] || [ ! -x "$3" ]; then r=not_readable; else r=ok; fi;`,
	`if [ "$r" = ok ]; then o target "$2" ok ''; else o target "$2" fail "$r"; fi; shift 3;;`,
	`file) if [ ! -e "$3" ]; then r=$(gone "$3"); elif [ ! -f "$3" ]; then r=not_a_file;`,
	`elif [ ! -r "$3" ]; then r=not_readable; elif [ "$tmpok" = 0 ]; then r=tmp_not_writable; else r=ok; fi;`,
	`if [ "$r" = ok ]; then o target "$2" ok ''; else o target "$2" fail "$r"; fi; shift 3;;`,
	`*) o error - fail "$(c "$1")"; exit 2;;`,
	`esac; done;`,
	`printf 'end\n'`,
}, " ")

// PreflightCommand builds the one remote command that checks every tool
// and target of a site in a single round trip. Tools checked: rsync when
// any target is a directory; sqlite3, gzip and mktemp when any is a SQLite
// dump, which also needs a file creatable in tmpDir. Every path travels as
// a quoted positional argument of `sh -c`, so spaces, quotes, ; $(...) and
// backticks in paths are data, never syntax.
func PreflightCommand(targets []PreflightTarget, tmpDir string) (string, error) {
	var needDir, needFile bool
	seen := map[int]bool{}
	var idx []string
	for _, t := range targets {
		if t.Index < 0 {
			return "", fmt.Errorf("preflight: target index %d is negative", t.Index)
		}
		if seen[t.Index] {
			return "", fmt.Errorf("preflight: target index %d given twice", t.Index)
		}
		seen[t.Index] = true
		if err := ValidatePath(t.Path); err != nil {
			return "", fmt.Errorf("preflight: target %d: %w", t.Index, err)
		}
		switch t.Mode {
		case domain.ModeDirectory:
			needDir = true
		case domain.ModeSQLiteDump:
			needFile = true
		default:
			return "", fmt.Errorf("preflight: target %d: unknown mode %q", t.Index, t.Mode)
		}
		idx = append(idx, strconv.Itoa(t.Index))
	}
	var tools []string
	if needDir {
		tools = append(tools, "rsync")
	}
	if needFile {
		tools = append(tools, "sqlite3", "gzip", "mktemp")
		if err := ValidatePath(tmpDir); err != nil {
			return "", fmt.Errorf("preflight: temp folder for sqlite dumps: %w", err)
		}
	}
	tmpFlag := "0"
	if needFile {
		tmpFlag = "1"
	}
	args := []string{"satoru-preflight", preflightVersion, strings.Join(idx, ","), strings.Join(tools, ","), tmpFlag}
	for _, tool := range tools {
		args = append(args, "tool", tool)
	}
	if needFile {
		args = append(args, "tmp", tmpDir)
	}
	for _, t := range targets {
		kind := "dir"
		if t.Mode == domain.ModeSQLiteDump {
			kind = "file"
		}
		args = append(args, kind, strconv.Itoa(t.Index), t.Path)
	}
	return "sh -c " + Quote(preflightScript) + " " + CommandLine(args...), nil
}

// ErrPreflightOutput means the preflight output is not a whole report.
var ErrPreflightOutput = errors.New("malformed preflight output")

// ParsePreflight reads the report printed by PreflightCommand's script.
// Lines before the header (a chatty login shell) and after the end line
// are ignored; inside, every line must parse, every requested tool and
// target must have exactly one line, and the end line must be there, so a
// cut-off or tampered report is an error rather than a partial success.
func ParsePreflight(stdout []byte) (PreflightReport, error) {
	var rep PreflightReport
	lines := strings.Split(string(bytes.ReplaceAll(stdout, []byte("\r\n"), []byte("\n"))), "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "satoru-preflight\t") })
	if start < 0 {
		return rep, fmt.Errorf("%w: no report header in %q", ErrPreflightOutput, headOf(stdout))
	}
	h := strings.Split(lines[start], "\t")
	if len(h) != 5 {
		return rep, fmt.Errorf("%w: header has %d fields, want 5", ErrPreflightOutput, len(h))
	}
	if h[1] != preflightVersion {
		return rep, fmt.Errorf("%w: report version %q, want %s", ErrPreflightOutput, h[1], preflightVersion)
	}
	wantTargets, err := csvInts(h[2])
	if err != nil {
		return rep, fmt.Errorf("%w: header targets: %v", ErrPreflightOutput, err)
	}
	wantTools := csv(h[3])
	wantTmp := h[4] == "1"

	gotTarget := map[int]bool{}
	gotTool := map[string]bool{}
	ended := false
	for n, line := range lines[start+1:] {
		if line == "end" {
			ended = true
			break
		}
		if line == "" {
			continue // the final newline; the script prints no blank lines
		}
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			return rep, fmt.Errorf("%w: line %d has %d fields, want 4", ErrPreflightOutput, n+1, len(f))
		}
		kind, key, status, text := f[0], f[1], f[2], f[3]
		if status != "ok" && status != "fail" {
			return rep, fmt.Errorf("%w: line %d: status %q", ErrPreflightOutput, n+1, status)
		}
		ok := status == "ok"
		switch kind {
		case "tool":
			if !slices.Contains(wantTools, key) || gotTool[key] {
				return rep, fmt.Errorf("%w: unexpected or repeated tool %q", ErrPreflightOutput, key)
			}
			gotTool[key] = true
			tc := ToolCheck{Name: key, OK: ok}
			if ok {
				tc.Version = text
			} else {
				tc.Detail = "not found in PATH on the remote host"
			}
			rep.Tools = append(rep.Tools, tc)
		case "tmp":
			if !wantTmp || rep.TmpDirOK != nil {
				return rep, fmt.Errorf("%w: unexpected or repeated temp folder line", ErrPreflightOutput)
			}
			rep.TmpDirOK = &ok
			if !ok {
				rep.TmpDirDetail = text
			}
		case "target":
			i, err := strconv.Atoi(key)
			if err != nil || !slices.Contains(wantTargets, i) || gotTarget[i] {
				return rep, fmt.Errorf("%w: unexpected or repeated target %q", ErrPreflightOutput, key)
			}
			gotTarget[i] = true
			tc := TargetCheck{Index: i, OK: ok}
			if !ok {
				detail, known := problemText[text]
				if !known {
					return rep, fmt.Errorf("%w: target %d: unknown problem %q", ErrPreflightOutput, i, text)
				}
				tc.Problem, tc.Detail = text, detail
			}
			rep.Targets = append(rep.Targets, tc)
		case "error":
			return rep, fmt.Errorf("%w: the preflight script rejected argument %q", ErrPreflightOutput, text)
		default:
			return rep, fmt.Errorf("%w: line %d: unknown kind %q", ErrPreflightOutput, n+1, kind)
		}
	}
	if !ended {
		return rep, fmt.Errorf("%w: report is cut off (no end line)", ErrPreflightOutput)
	}
	for _, t := range wantTools {
		if !gotTool[t] {
			return rep, fmt.Errorf("%w: no result for tool %s", ErrPreflightOutput, t)
		}
	}
	for _, i := range wantTargets {
		if !gotTarget[i] {
			return rep, fmt.Errorf("%w: no result for target %d", ErrPreflightOutput, i)
		}
	}
	if wantTmp && rep.TmpDirOK == nil {
		return rep, fmt.Errorf("%w: no result for the temp folder", ErrPreflightOutput)
	}
	// Name the cause on sqlite targets that failed only for the temp folder.
	if rep.TmpDirDetail != "" {
		for i := range rep.Targets {
			if rep.Targets[i].Problem == ProblemTmpNotWritable {
				rep.Targets[i].Detail += ": " + rep.TmpDirDetail
			}
		}
	}
	return rep, nil
}

func csv(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func csvInts(s string) ([]int, error) {
	var out []int
	for _, f := range csv(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func headOf(b []byte) string {
	const max = 200
	if len(b) > max {
		b = b[:max]
	}
	return string(b)
}
