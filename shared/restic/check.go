package restic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/satoru/satoru/shared/proc"
)

// CheckOptions describes one `restic check`.
type CheckOptions struct {
	// ReadDataSubset is --read-data-subset: "5%", "1/10" or a size such
	// as "500M"; "" reads no pack data (structure only).
	ReadDataSubset string
}

// subsetRe is what restic takes as --read-data-subset: a percentage, a
// part n/t, or a size with its K/M/G/T unit (restic refuses a bare number).
var subsetRe = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?%|[0-9]+/[0-9]+|[0-9]+[KMGTkmgt])$`)

// ValidSubset reports what is wrong with a --read-data-subset value.
func ValidSubset(s string) error {
	if s == "" || subsetRe.MatchString(s) {
		return nil
	}
	return fmt.Errorf("read data subset %q: want a percentage (5%%), a part (1/10) or a size (500M)", s)
}

// CheckArgs is the argv of Check after the global flags.
func CheckArgs(o CheckOptions) []string {
	args := []string{"check", "--json"}
	if o.ReadDataSubset != "" {
		args = append(args, "--read-data-subset", o.ReadDataSubset)
	}
	return args
}

// CheckResult is restic check's summary line.
type CheckResult struct {
	NumErrors          int      `json:"num_errors"`
	BrokenPacks        []string `json:"broken_packs"`
	SuggestRepairIndex bool     `json:"suggest_repair_index"`
	SuggestPrune       bool     `json:"suggest_prune"`
}

// maxBrokenPacks bounds the pack ids kept from one check.
const maxBrokenPacks = 50

// CheckReport verifies the repository's structure and reads the subset of its
// pack data. It takes restic's exclusive lock, so RetryLock matters. A
// damaged repository is restic's exit 1 with its messages (which packs,
// what failed) in the *Error, and the summary in the result.
func (r Repo) CheckReport(ctx context.Context, o CheckOptions) (CheckResult, error) {
	if err := ValidSubset(o.ReadDataSubset); err != nil {
		return CheckResult{}, fmt.Errorf("restic check: %w", err)
	}
	var res CheckResult
	lw := &lineWriter{max: 1 << 20, fn: func(b []byte, overlong bool) {
		if overlong || len(b) == 0 || b[0] != '{' {
			return
		}
		var m struct {
			MessageType string `json:"message_type"`
			CheckResult
		}
		if json.Unmarshal(b, &m) == nil && m.MessageType == "summary" {
			res = m.CheckResult
		}
	}}
	out, err := r.runRaw(ctx, proc.Cmd{Step: "check", Args: CheckArgs(o), Stdout: lw}, true)
	lw.Flush()
	if len(res.BrokenPacks) > maxBrokenPacks {
		res.BrokenPacks = res.BrokenPacks[:maxBrokenPacks]
	}
	var xe *proc.ExitError
	if errors.As(err, &xe) {
		return res, &Error{Op: "check", Code: xe.Code, Stderr: r.redact(checkErrorText(out.Stderr))}
	}
	return res, r.wrap("check", out, err)
}

// checkProblemsCap bounds the problems part of a check's error text, so
// the final reason always fits in errorTextCap after it.
const checkProblemsCap = 700

// checkErrorText is restic check's failure as an operator reads it: the
// first problems it found (which tree or pack, what failed), without the
// repair advice it prints after them, then its final reason. restic's own
// error text would keep only the end of stderr: the advice.
func checkErrorText(stderr string) string {
	msgs, exit := stderrMessages(stderr)
	var problems []string
	for _, msg := range msgs {
		msg = strings.Join(strings.Fields(msg), " ")
		if strings.HasPrefix(msg, "The repository contains damaged pack files") {
			break // the repair advice: what follows is advice too
		}
		if msg != "" {
			problems = append(problems, msg)
		}
	}
	text := strings.Join(problems, "; ")
	if len(text) > checkProblemsCap {
		cut := checkProblemsCap
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + " ..."
	}
	if len(exit) > 0 {
		if text != "" {
			text += "; "
		}
		text += strings.Join(exit, "; ")
	}
	return proc.TrimStderr(text, errorTextCap)
}
