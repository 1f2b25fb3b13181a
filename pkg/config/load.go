package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxDepth bounds the nesting of YAML maps.
const maxDepth = 32

// Load reads a YAML configuration file. Keys may be flat ("heartbeat.timeout: 5 s"),
// nested maps ("heartbeat: {timeout: 5 s}") or a mix; a nested key is the dot-joined
// path. Values must be scalars; an empty value (or null) is the empty string. Keys not
// in the file have their defaults. An empty file is valid.
//
// Errors are one line. Those about the content start with "path:line: ", e.g.
// `sluice.yaml:3: unknown configuration key "heartbeat.timout" (did you mean
// "heartbeat.timeout"?)`. A key set twice, also through an alias or in both flat and
// nested form, is an error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseYAML(path, data)
}

// LoadWithOverrides returns the configuration of the file at path, or the defaults if
// path is "", with the keys explicitly set in overrides (e.g. the Config given to
// BindFlags) set over it, so that default < file < overrides.
func LoadWithOverrides(path string, overrides *Config) (*Config, error) {
	c := New()
	if path != "" {
		var err error
		if c, err = Load(path); err != nil {
			return nil, err
		}
	}
	c.Merge(overrides)
	return c, nil
}

func parseYAML(name string, data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return New(), nil
		}
		return nil, yamlError(name, err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlError(name, err)
		}
		return nil, fmt.Errorf("%s:%d: more than one YAML document", name, next.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return New(), nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return New(), nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: expected a map of configuration keys to values", name, root.Line)
	}
	l := loader{name: name, c: New(), seen: map[string]seenKey{}}
	if err := l.walk(root, "", 1); err != nil {
		return nil, err
	}
	return l.c, nil
}

type loader struct {
	name string
	c    *Config
	seen map[string]seenKey // by canonical name
}

type seenKey struct {
	line int
	as   string // the key as written
}

// walk sets the keys of the YAML map m, whose keys are prefixed with prefix.
func (l *loader) walk(m *yaml.Node, prefix string, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%s:%d: maps nested too deeply", l.name, m.Line)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s:%d: a configuration key must be a string", l.name, k.Line)
		}
		if k.Tag == "!!merge" {
			return fmt.Errorf("%s:%d: YAML merge keys (<<) are not supported", l.name, k.Line)
		}
		if strings.TrimSpace(k.Value) == "" {
			return fmt.Errorf("%s:%d: empty configuration key", l.name, k.Line)
		}
		key := k.Value
		if prefix != "" {
			key = prefix + "." + key
		}
		if v.Kind == yaml.MappingNode {
			if err := l.walk(v, key, depth+1); err != nil {
				return err
			}
			continue
		}
		if err := l.set(key, v, k.Line); err != nil {
			return err
		}
	}
	return nil
}

// set sets key, a full key as written in the file at line, to the value v.
func (l *loader) set(key string, v *yaml.Node, line int) error {
	e, err := resolve(key)
	if err != nil {
		return fmt.Errorf("%s:%d: %w", l.name, line, err)
	}
	// From here on key is a registered name, safe to print unquoted.
	if v.Kind == yaml.AliasNode { // *name, referring to &name
		if v.Alias == nil || v.Alias.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s:%d: %s: YAML aliases are supported for single values only", l.name, line, key)
		}
		v = v.Alias
	}
	if v.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s:%d: %s: expected a single value or a map", l.name, line, key)
	}
	value := v.Value
	if v.Tag == "!!null" {
		value = ""
	}
	if prev, dup := l.seen[e.Name]; dup {
		as := ""
		if prev.as != key {
			as = fmt.Sprintf(" as %q", prev.as)
		}
		return fmt.Errorf("%s:%d: duplicate key %q (already set on line %d%s)", l.name, line, key, prev.line, as)
	}
	l.seen[e.Name] = seenKey{line, key}
	if err := l.c.Set(key, value); err != nil {
		return fmt.Errorf("%s:%d: %w", l.name, line, err)
	}
	return nil
}

// yamlError turns a YAML syntax error ("yaml: line 3: ...") into "name:3: ...", one line.
func yamlError(name string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", "; ")), " ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				return fmt.Errorf("%s:%d: invalid YAML: %s", name, n, text)
			}
		}
	}
	return fmt.Errorf("%s: invalid YAML: %s", name, msg)
}
