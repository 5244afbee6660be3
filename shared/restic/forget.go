package restic

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/satoru/satoru/shared/proc"
)

// ForgetOptions describes one `restic forget`: which snapshots it
// considers (all of Tags and Host), how it groups them, the policy applied
// to each group and whether prune follows.
type ForgetOptions struct {
	// Tags limit forget to snapshots that carry all of them; a tag must
	// not contain a comma.
	Tags []string
	// Host limits forget to snapshots of this host; "" means any host.
	Host string
	// GroupBy is restic's --group-by (e.g. "host"); "" keeps restic's
	// default, "host,paths". The policy applies to each group on its own.
	GroupBy string
	// Policy are --keep-* flags with their values, as
	// config.RetentionPolicy.Args gives them, e.g. ["--keep-last", "2"].
	// It must keep something: restic refuses an empty policy, and other
	// flags (--unsafe-allow-remove-all, --dry-run) are rejected here.
	Policy []string
	// Prune runs prune after forget when snapshots were removed, in the
	// same restic run (one repository open, one exclusive lock).
	Prune bool
}

// ForgetArgs is the argv of Forget after the global flags. Forget always
// runs with --json: the result is one JSON line on stdout. It is not
// --quiet, since --quiet also silences prune, whose statistics are the
// only report of the space freed; prune's text follows the JSON line
// (parseForgetOutput separates them).
func ForgetArgs(o ForgetOptions) []string {
	args := []string{"forget", "--json"}
	if o.Host != "" {
		args = append(args, "--host", o.Host)
	}
	var tags []string
	for _, t := range o.Tags {
		if t != "" {
			tags = append(tags, t)
		}
	}
	if len(tags) > 0 {
		// One --tag with the tags joined means "all of them"; repeated
		// --tag flags would mean "any of them".
		args = append(args, "--tag", strings.Join(tags, ","))
	}
	if o.GroupBy != "" {
		args = append(args, "--group-by", o.GroupBy)
	}
	args = append(args, o.Policy...)
	if o.Prune {
		args = append(args, "--prune")
	}
	return args
}

// ForgetResult is what one forget (and prune) did.
type ForgetResult struct {
	// Groups is the number of snapshot groups the policy was applied to.
	Groups int
	// Kept and Removed count the snapshots; the ids are restic's full ids,
	// newest first within a group as restic lists them.
	Kept, Removed       int
	KeptIDs, RemovedIDs []string
	// Pruned reports that prune ran and printed its statistics. Prune
	// runs only when forget removed snapshots; otherwise nothing is freed
	// and the byte counts below are zero.
	Pruned bool
	// BlobsFreed and BytesFreed are prune's "total prune": the blobs it
	// deleted or repacked away and their size in the repository (packed,
	// i.e. compressed and encrypted). restic prints the size rounded to
	// four significant digits ("783.347 KiB"), so BytesFreed is exact to
	// within 0.05%.
	BlobsFreed int64
	BytesFreed int64
	// BytesRemaining is prune's "remaining": the size of the blobs left in
	// the repository, with the same precision.
	BytesRemaining int64
}

// Forget applies a retention policy. It takes restic's exclusive lock, so
// RetryLock matters: without it a running backup makes it fail at once
// with ErrLocked. When forget succeeded but prune then failed, the result
// still says which snapshots were removed, alongside the error.
func (r Repo) Forget(ctx context.Context, o ForgetOptions) (ForgetResult, error) {
	if err := checkPolicy(o.Policy); err != nil {
		return ForgetResult{}, fmt.Errorf("restic forget: %w", err)
	}
	if err := checkTags(o.Tags); err != nil {
		return ForgetResult{}, fmt.Errorf("restic forget: %w", err)
	}
	// Parsed as it streams: the JSON line lists every snapshot of every
	// group in full (~1.5 KB each, twice for kept ones), more than proc
	// captures for a site with a few hundred snapshots.
	pr, pw := io.Pipe()
	type parsed struct {
		res   ForgetResult
		noise string
		err   error
	}
	done := make(chan parsed, 1)
	go func() {
		var p parsed
		p.res, p.noise, p.err = parseForgetOutput(pr)
		_, _ = io.Copy(io.Discard, pr) // restic must never block on a full pipe
		done <- p
	}()
	res, err := r.runRaw(ctx, proc.Cmd{Step: "forget", Args: ForgetArgs(o), Stdout: pw}, true)
	pw.Close()
	p := <-done
	if err != nil {
		var extra []string
		if p.noise != "" {
			extra = append(extra, p.noise)
		}
		return p.res, r.wrap("forget", res, err, extra...)
	}
	if p.err != nil {
		return p.res, fmt.Errorf("restic forget: %w", p.err)
	}
	return p.res, nil
}

// forgetPolicyFlags are the flags a Policy may hold; each takes a value.
var forgetPolicyFlags = map[string]bool{
	"--keep-last": true, "--keep-hourly": true, "--keep-daily": true, "--keep-weekly": true,
	"--keep-monthly": true, "--keep-yearly": true, "--keep-within": true,
	"--keep-within-hourly": true, "--keep-within-daily": true, "--keep-within-weekly": true,
	"--keep-within-monthly": true, "--keep-within-yearly": true, "--keep-tag": true,
}

// checkPolicy accepts only pairs of a --keep-* flag and its value, and at
// least one pair: a forget with no policy, or with a flag that widens what
// it deletes, must never run by accident.
func checkPolicy(policy []string) error {
	if len(policy) == 0 {
		return errors.New("no retention policy given")
	}
	if len(policy)%2 != 0 {
		return fmt.Errorf("retention policy %q: each flag needs a value", policy)
	}
	for i := 0; i < len(policy); i += 2 {
		flag, val := policy[i], policy[i+1]
		if !forgetPolicyFlags[flag] {
			return fmt.Errorf("retention policy: %q is not a --keep-* flag", flag)
		}
		if val == "" || strings.HasPrefix(val, "-") {
			return fmt.Errorf("retention policy: %s has no value", flag)
		}
	}
	return nil
}

// forgetNoiseCap bounds the non-JSON, non-statistics text kept for errors.
const forgetNoiseCap = 2 << 10

// parseForgetOutput reads `restic forget --json [--prune]` stdout: one
// JSON array of groups (absent when no snapshot matched), then prune's
// text. The array is walked token by token, so memory holds one snapshot
// at a time, not the whole list. noise is the trimmed tail of the text
// that was neither JSON nor a statistics line. err is set when the output
// is not understood; the result then holds what was read before.
func parseForgetOutput(r io.Reader) (res ForgetResult, noise string, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var text io.Reader = br
	first, perr := peekNonSpace(br)
	switch {
	case perr == io.EOF:
		return res, "", nil // nothing matched: restic prints nothing
	case perr != nil:
		return res, "", perr
	case first == '[':
		dec := json.NewDecoder(br)
		if err = decodeForgetGroups(dec, &res); err != nil {
			return res, "", fmt.Errorf("decode forget output: %w", err)
		}
		text = io.MultiReader(dec.Buffered(), br)
	}
	p := &pruneParser{}
	lw := &lineWriter{max: maxLine, fn: p.line}
	if _, err := io.Copy(lw, text); err != nil {
		return res, "", err
	}
	lw.Flush()
	noise = strings.TrimSpace(string(p.noise))
	if first != '[' {
		// Something printed, but not the result: nothing says what was
		// removed.
		return res, noise, fmt.Errorf("no JSON result in output: %s", proc.TrimStderr(noise, errorTextCap))
	}
	res.Pruned = p.total && p.remaining
	res.BlobsFreed, res.BytesFreed, res.BytesRemaining = p.blobsFreed, p.bytesFreed, p.bytesRemaining
	return res, noise, nil
}

// peekNonSpace skips leading white space and returns the next byte
// without consuming it.
func peekNonSpace(br *bufio.Reader) (byte, error) {
	for {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		if b != ' ' && b != '\t' && b != '\n' && b != '\r' {
			return b, br.UnreadByte()
		}
	}
}

// decodeForgetGroups walks restic's forget JSON:
// [{"tags":..,"host":..,"paths":..,"keep":[snap..],"remove":[snap..],"reasons":[..]}, ...]
func decodeForgetGroups(dec *json.Decoder, res *ForgetResult) error {
	if err := expectJSONDelim(dec, '['); err != nil {
		return err
	}
	for dec.More() {
		if err := expectJSONDelim(dec, '{'); err != nil {
			return err
		}
		res.Groups++
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			switch tok {
			case "keep":
				ids, err := decodeSnapshotIDs(dec)
				if err != nil {
					return fmt.Errorf("keep: %w", err)
				}
				res.KeptIDs = append(res.KeptIDs, ids...)
			case "remove":
				ids, err := decodeSnapshotIDs(dec)
				if err != nil {
					return fmt.Errorf("remove: %w", err)
				}
				res.RemovedIDs = append(res.RemovedIDs, ids...)
			default:
				if err := skipJSONValue(dec); err != nil {
					return err
				}
			}
		}
		if err := expectJSONDelim(dec, '}'); err != nil {
			return err
		}
	}
	if err := expectJSONDelim(dec, ']'); err != nil {
		return err
	}
	res.Kept, res.Removed = len(res.KeptIDs), len(res.RemovedIDs)
	return nil
}

// decodeSnapshotIDs reads an array of snapshots (or null) and returns
// their ids.
func decodeSnapshotIDs(dec *json.Decoder) ([]string, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, nil
	}
	if tok != json.Delim('[') {
		return nil, fmt.Errorf("want an array, got %v", tok)
	}
	var ids []string
	for dec.More() {
		var s struct {
			ID string `json:"id"`
		}
		if err := dec.Decode(&s); err != nil {
			return nil, err
		}
		if s.ID == "" {
			return nil, errors.New("snapshot without id")
		}
		ids = append(ids, s.ID)
	}
	return ids, expectJSONDelim(dec, ']')
}

func expectJSONDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != want {
		return fmt.Errorf("want %q, got %v", want, tok)
	}
	return nil
}

// skipJSONValue skips one value, token by token.
func skipJSONValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '[', '{':
				depth++
			default:
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

// pruneParser reads prune's text. restic 0.18 has no JSON output for
// prune, and these lines are the only report of what it freed:
//
//	total prune:          10 blobs / 783.347 KiB
//	remaining:            30 blobs / 2.295 MiB
type pruneParser struct {
	total, remaining bool
	blobsFreed       int64
	bytesFreed       int64
	bytesRemaining   int64
	noise            []byte
}

var pruneStatRe = regexp.MustCompile(`^(total prune|remaining):\s+(\d+) blobs / ([0-9.]+ (?:B|KiB|MiB|GiB|TiB))$`)

func (p *pruneParser) line(b []byte, overlong bool) {
	if overlong {
		return
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return
	}
	if m := pruneStatRe.FindStringSubmatch(s); m != nil {
		blobs, berr := strconv.ParseInt(m[2], 10, 64)
		size, serr := parseResticSize(m[3])
		if berr == nil && serr == nil {
			switch m[1] {
			case "total prune":
				p.total, p.blobsFreed, p.bytesFreed = true, blobs, size
			case "remaining":
				p.remaining, p.bytesRemaining = true, size
			}
			return
		}
	}
	p.noise = append(append(p.noise, s...), '\n')
	if len(p.noise) > 2*forgetNoiseCap {
		p.noise = append(p.noise[:0], p.noise[len(p.noise)-forgetNoiseCap:]...)
	}
}

// parseResticSize reads a size as restic prints it (ui.FormatBytes):
// "0 B", "512 B", "783.347 KiB", "2.295 MiB", "1.000 GiB", "3.500 TiB".
func parseResticSize(s string) (int64, error) {
	num, unit, ok := strings.Cut(s, " ")
	if !ok {
		return 0, fmt.Errorf("size %q has no unit", s)
	}
	var mult float64
	switch unit {
	case "B":
		mult = 1
	case "KiB":
		mult = 1 << 10
	case "MiB":
		mult = 1 << 20
	case "GiB":
		mult = 1 << 30
	case "TiB":
		mult = 1 << 40
	default:
		return 0, fmt.Errorf("size %q: unknown unit", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("size %q: bad number", s)
	}
	b := math.Round(v * mult)
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return int64(b), nil
}

// UnlockStale removes stale locks, as Unlock does, and reports how many
// it removed. restic's rule decides what is stale: a lock older than 30
// minutes (a live holder refreshes its lock every 5), or one made on this
// host by a process that no longer exists. Live locks stay; this never
// uses --remove-all.
func (r Repo) UnlockStale(ctx context.Context) (int, error) {
	var removed int
	lw := &lineWriter{max: 4 << 10, fn: func(b []byte, overlong bool) {
		if n, ok := parseUnlocked(string(b)); ok && !overlong {
			removed += n
		}
	}}
	_, err := r.run(ctx, proc.Cmd{Step: "unlock", Args: []string{"unlock", "--json"}, Stdout: lw}, false)
	lw.Flush()
	return removed, err
}

var unlockedRe = regexp.MustCompile(`^successfully removed (\d+) locks?$`)

// parseUnlocked reads restic's "successfully removed 1 locks" (printed
// even with --json; nothing is printed when no lock was removed).
func parseUnlocked(line string) (int, bool) {
	m := unlockedRe.FindStringSubmatch(strings.TrimSpace(line))
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}

// PruneOptions describes one `restic prune`.
type PruneOptions struct {
	// MaxUnused is --max-unused ("5%", "unlimited", ...); "" keeps
	// restic's default (5%). "unlimited" makes prune only delete what no
	// snapshot needs whole (unreferenced packs, such as a killed backup
	// leaves) without repacking, the cheapest clean-up.
	MaxUnused string
}

// PruneArgs is the argv of Prune after the global flags. restic 0.18's
// prune has no JSON output; its statistics are read from the text.
func PruneArgs(o PruneOptions) []string {
	args := []string{"prune"}
	if o.MaxUnused != "" {
		args = append(args, "--max-unused", o.MaxUnused)
	}
	return args
}

// PruneResult is what one prune freed.
type PruneResult struct {
	// Pruned reports that prune printed its statistics.
	Pruned         bool
	BlobsFreed     int64
	BytesFreed     int64
	BytesRemaining int64
}

// Prune removes the data no snapshot references any more, as a run of its
// own: a retention job forgets first and prunes in a second step, so a
// prune cut short (a crash) is simply run again. It takes restic's
// exclusive lock, so RetryLock matters.
func (r Repo) Prune(ctx context.Context, o PruneOptions) (PruneResult, error) {
	var p pruneParser
	lw := &lineWriter{max: 4 << 10, fn: p.line}
	res, err := r.runRaw(ctx, proc.Cmd{Step: "prune", Args: PruneArgs(o), Stdout: lw}, true)
	lw.Flush()
	out := PruneResult{Pruned: p.total, BlobsFreed: p.blobsFreed, BytesFreed: p.bytesFreed, BytesRemaining: p.bytesRemaining}
	if err != nil {
		var extra []string
		if len(p.noise) > 0 {
			extra = append(extra, string(p.noise))
		}
		return out, r.wrap("prune", res, err, extra...)
	}
	return out, nil
}
