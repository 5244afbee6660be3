package config

import (
	"errors"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

// readFile parses the YAML config file into raw values by key. Unknown
// keys, keys given twice and environment-only secrets are errors that name
// the key and line.
func readFile(path string) (map[string]value, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: cannot read config file %q: %w", path, unwrapPath(err))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	vals := map[string]value{}
	if doc.Kind == 0 || len(doc.Content) == 0 { // empty file
		return vals, nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return vals, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config: %s: must be a mapping of key: value (line %d)", path, root.Line)
	}
	byName := map[string]*spec{}
	for i := range specs {
		byName[specs[i].name] = &specs[i]
	}
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		origin := fmt.Sprintf("%s line %d", path, k.Line)
		s := byName[k.Value]
		switch {
		case s == nil:
			errs = append(errs, fmt.Errorf("config: unknown key %q in %s", k.Value, origin))
			continue
		case s.envOnly:
			errs = append(errs, fmt.Errorf("config: %s: must not be in the config file (%s); set %s or %s_file instead",
				s.name, origin, EnvName(s.name), s.name))
			continue
		}
		if _, dup := vals[s.name]; dup {
			errs = append(errs, fmt.Errorf("config: %s: given twice (%s)", s.name, origin))
			continue
		}
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			continue // "key:" with no value leaves the default
		}
		if s.name == "restic_retention_policy" {
			vals[s.name] = value{node: v, origin: origin}
			continue
		}
		if v.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Errorf("config: %s: must be a single value, not a list or mapping (%s)", s.name, origin))
			continue
		}
		vals[s.name] = value{text: v.Value, origin: origin}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return vals, nil
}
