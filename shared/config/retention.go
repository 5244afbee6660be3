package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// RetentionPolicy is what `restic forget --prune` keeps. A zero count
// means "not set"; at least one rule must be set.
type RetentionPolicy struct {
	KeepLast    int `json:"keep_last,omitempty" yaml:"keep_last,omitempty"`
	KeepHourly  int `json:"keep_hourly,omitempty" yaml:"keep_hourly,omitempty"`
	KeepDaily   int `json:"keep_daily,omitempty" yaml:"keep_daily,omitempty"`
	KeepWeekly  int `json:"keep_weekly,omitempty" yaml:"keep_weekly,omitempty"`
	KeepMonthly int `json:"keep_monthly,omitempty" yaml:"keep_monthly,omitempty"`
	KeepYearly  int `json:"keep_yearly,omitempty" yaml:"keep_yearly,omitempty"`
	// KeepWithin is a restic duration such as "30d" or "1y2m3d4h".
	KeepWithin string `json:"keep_within,omitempty" yaml:"keep_within,omitempty"`
}

// DefaultRetentionPolicy keeps 7 daily, 4 weekly and 12 monthly snapshots.
func DefaultRetentionPolicy() RetentionPolicy {
	return RetentionPolicy{KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 12}
}

// retentionKeys lists the policy keys in the order Args emits them.
var retentionKeys = []string{"keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within"}

// maxKeep bounds the counts; restic takes an int, and nobody keeps more.
const maxKeep = 1_000_000

// resticDuration is restic's --keep-within format: numbers with the units
// y, m, d, h, each unit at most once, in that order.
var resticDuration = regexp.MustCompile(`^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)d)?(?:(\d+)h)?$`)

func (p *RetentionPolicy) counts() []struct {
	key string
	v   *int
} {
	return []struct {
		key string
		v   *int
	}{
		{"keep_last", &p.KeepLast}, {"keep_hourly", &p.KeepHourly}, {"keep_daily", &p.KeepDaily},
		{"keep_weekly", &p.KeepWeekly}, {"keep_monthly", &p.KeepMonthly}, {"keep_yearly", &p.KeepYearly},
	}
}

// Validate reports a negative or too large count, a bad keep_within, or a
// policy that keeps nothing (which would let forget delete every snapshot).
func (p RetentionPolicy) Validate() error {
	keeps := false
	for _, c := range p.counts() {
		switch {
		case *c.v < 0:
			return fmt.Errorf("%s: must not be negative, got %d", c.key, *c.v)
		case *c.v > maxKeep:
			return fmt.Errorf("%s: must be at most %d, got %d", c.key, maxKeep, *c.v)
		case *c.v > 0:
			keeps = true
		}
	}
	if p.KeepWithin != "" {
		nonZero, err := parseResticDuration(p.KeepWithin)
		if err != nil {
			return fmt.Errorf("keep_within: %w", err)
		}
		if !nonZero {
			return fmt.Errorf("keep_within: must be longer than zero, got %q", p.KeepWithin)
		}
		keeps = true
	}
	if !keeps {
		return errors.New("keeps nothing: set at least one of " + strings.Join(retentionKeys, ", ") + " (all zero would delete every snapshot)")
	}
	return nil
}

// parseResticDuration checks s and reports whether it is longer than zero.
func parseResticDuration(s string) (nonZero bool, err error) {
	m := resticDuration.FindStringSubmatch(s)
	if s == "" || m == nil {
		return false, fmt.Errorf(`must be a restic duration like "30d", "1y2m" or "2d12h" (units y, m, d, h in that order), got %q`, s)
	}
	for _, part := range m[1:] {
		if part == "" {
			continue
		}
		n, err := strconv.ParseInt(part, 10, 32)
		if err != nil {
			return false, fmt.Errorf("number too large in %q", s)
		}
		if n > 0 {
			nonZero = true
		}
	}
	return nonZero, nil
}

// Args gives the restic forget flags of p, e.g. ["--keep-daily", "7"].
func (p RetentionPolicy) Args() []string {
	var out []string
	for _, c := range p.counts() {
		if *c.v > 0 {
			out = append(out, "--"+strings.ReplaceAll(c.key, "_", "-"), strconv.Itoa(*c.v))
		}
	}
	if p.KeepWithin != "" {
		out = append(out, "--keep-within", p.KeepWithin)
	}
	return out
}

// String is the policy in flag form, e.g. "keep_daily=7 keep_weekly=4".
func (p RetentionPolicy) String() string {
	var parts []string
	for _, c := range p.counts() {
		if *c.v != 0 {
			parts = append(parts, c.key+"="+strconv.Itoa(*c.v))
		}
	}
	if p.KeepWithin != "" {
		parts = append(parts, "keep_within="+p.KeepWithin)
	}
	return strings.Join(parts, " ")
}

// set stores one policy key given as text; the error names the key.
func (p *RetentionPolicy) set(key, text string) error {
	if key == "keep_within" {
		p.KeepWithin = text
		return nil
	}
	for _, c := range p.counts() {
		if c.key != key {
			continue
		}
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: must be a non-negative integer, got %q", key, text)
		}
		if n < 0 {
			return fmt.Errorf("%s: must not be negative, got %d", key, n)
		}
		if n > maxKeep {
			return fmt.Errorf("%s: must be at most %d, got %d", key, maxKeep, n)
		}
		*c.v = int(n)
		return nil
	}
	known := append([]string(nil), retentionKeys...)
	sort.Strings(known)
	return fmt.Errorf("unknown key %q (known: %s)", key, strings.Join(known, ", "))
}

// parseRetentionJSON reads a policy from a JSON object such as
// {"keep_last":2,"keep_daily":7}. Keys not given are zero: a policy given
// replaces the default as a whole.
func parseRetentionJSON(text string) (RetentionPolicy, error) {
	var p RetentionPolicy
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(text))
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return p, errors.New(`must be a JSON object like {"keep_daily":7,"keep_weekly":4}`)
	}
	if dec.More() {
		return p, errors.New("unexpected data after the JSON object")
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		raw := bytes.TrimSpace(fields[k])
		var text string
		if k == "keep_within" {
			if err := json.Unmarshal(raw, &text); err != nil {
				return p, fmt.Errorf("keep_within: must be a string like \"30d\", got %s", clip(string(raw)))
			}
		} else {
			text = string(raw)
			if len(raw) > 0 && raw[0] == '"' { // a quoted number is a mistake worth naming
				return p, fmt.Errorf("%s: must be a non-negative integer, got %s", k, clip(text))
			}
		}
		if err := p.set(k, text); err != nil {
			return p, err
		}
	}
	return p, nil
}

// parseRetentionYAML reads a policy from a YAML mapping (or a string
// holding a JSON object, the same form the environment uses).
func parseRetentionYAML(n *yaml.Node) (RetentionPolicy, error) {
	if n.Kind == yaml.ScalarNode {
		return parseRetentionJSON(n.Value)
	}
	var p RetentionPolicy
	if n.Kind != yaml.MappingNode {
		return p, errors.New("must be a mapping of keep_* keys")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		if seen[k] {
			return p, fmt.Errorf("%s: given twice (line %d)", k, n.Content[i].Line)
		}
		seen[k] = true
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			return p, fmt.Errorf("%s: must be a single value (line %d)", k, v.Line)
		}
		if err := p.set(k, v.Value); err != nil {
			return p, err
		}
	}
	return p, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
