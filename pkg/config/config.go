// Package config is Sluice's typed configuration. Keys, defaults and value formats are
// Flink's, so a Flink user can reuse what they know: durations such as "10 s" or
// "500 ms", memory sizes such as "32 kb", legacy key names accepted as aliases.
//
// Every key is registered once, in keys.go, with its kind, default and description. A
// Config holds the values that were set explicitly (from a YAML file, command-line flags
// or a map sent over the wire); every other key reads as its default. Values are
// validated when they are set, so the typed getters never fail; asking a getter for an
// unregistered key, or for a key of another kind, is a programming error and panics.
package config

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Kind is the type of a key's value and selects the format it is parsed with.
type Kind int

// The kinds of values.
const (
	String     Kind = iota // any text
	Int                    // a 32-bit decimal integer, as Flink's int options
	Bool                   // "true" or "false", case-insensitively
	Duration               // see ParseDuration
	MemorySize             // see ParseMemorySize
	Enum                   // one of Key.Enum (or Key.EnumAliases), case-insensitively
	Float                  // a finite decimal floating-point number
)

var kindNames = [...]string{String: "String", Int: "Int", Bool: "Bool", Duration: "Duration",
	MemorySize: "MemorySize", Enum: "Enum", Float: "Float"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Key describes a configuration key.
type Key struct {
	Name        string // canonical name, e.g. "heartbeat.timeout"
	Default     string // default value, in the key's format
	Kind        Kind
	Enum        []string // allowed values of an Enum key, in canonical spelling
	Description string
	Aliases     []string // legacy names, accepted and mapped to Name
	// Flag is a short command-line flag for the key, besides --<Name> (e.g. "etcd-endpoints").
	Flag string
	// EnumAliases maps legacy spellings of Enum values (lower case) to canonical values.
	EnumAliases map[string]string

	// check, if set, constrains the parsed value (whose Go type is given by Kind, see
	// entry.parse) beyond its format; it returns e.g. "must be at least 1".
	check func(v any) error
}

// ErrUnknownKey is wrapped by the errors about keys that are not registered.
var ErrUnknownKey = errors.New("unknown configuration key")

// entry is a registered key with its parsed default.
type entry struct {
	Key
	def any
}

var (
	registry = map[string]*entry{} // canonical names and aliases
	ordered  []*entry              // in registration order
)

// define registers k and returns its name. It panics on a duplicate name or alias and on
// an invalid default, so a mistake in the key table fails every test.
func define(k Key) string {
	e := &entry{Key: k}
	for _, n := range append([]string{k.Name}, k.Aliases...) {
		if n == "" || strings.TrimSpace(n) != n {
			panic(fmt.Sprintf("config: bad key name %q", n))
		}
		if _, dup := registry[n]; dup {
			panic(fmt.Sprintf("config: key %q registered twice", n))
		}
		registry[n] = e
	}
	if (k.Kind == Enum) != (len(k.Enum) > 0) || (k.Kind != Enum && k.EnumAliases != nil) {
		panic(fmt.Sprintf("config: key %q: Enum values are for (and required by) Enum keys", k.Name))
	}
	for _, v := range k.EnumAliases {
		if !slices.Contains(k.Enum, v) {
			panic(fmt.Sprintf("config: key %q: enum alias target %q is not an Enum value", k.Name, v))
		}
	}
	v, _, err := e.parse(k.Default)
	if err != nil {
		panic(fmt.Sprintf("config: key %q: bad default: %v", k.Name, err))
	}
	e.def = v
	ordered = append(ordered, e)
	return k.Name
}

// parse validates s as a value of e and returns the value (string for String and Enum,
// int, bool, time.Duration, int64 bytes for MemorySize, float64) and its normalized text:
// trimmed, and the canonical spelling for Enum keys. The error names no key.
func (e *entry) parse(s string) (v any, text string, err error) {
	text = strings.TrimSpace(s)
	switch e.Kind {
	case String:
		v, text = s, s
	case Int:
		v, err = parseInt(text)
	case Bool:
		v, err = parseBool(text)
	case Duration:
		v, err = ParseDuration(text)
	case MemorySize:
		v, err = ParseMemorySize(text)
	case Float:
		v, err = parseFloat(text)
	case Enum:
		text, err = e.parseEnum(text)
		v = text
	default:
		panic(fmt.Sprintf("config: key %q has unknown kind %v", e.Name, e.Kind))
	}
	if err == nil && e.check != nil {
		if cerr := e.check(v); cerr != nil {
			err = fmt.Errorf("invalid value %q (%v)", s, cerr)
		}
	}
	if err != nil {
		return nil, "", err
	}
	return v, text, nil
}

func (e *entry) parseEnum(s string) (string, error) {
	for _, v := range e.Enum {
		if strings.EqualFold(s, v) {
			return v, nil
		}
	}
	if v, ok := e.EnumAliases[strings.ToLower(s)]; ok {
		return v, nil
	}
	return "", fmt.Errorf("invalid value %q (use one of %s)", s, strings.Join(e.Enum, ", "))
}

// resolve returns the entry of a canonical name or alias, or an error that suggests the
// closest known key.
func resolve(name string) (*entry, error) {
	if e, ok := registry[name]; ok {
		return e, nil
	}
	if s := suggest(name); s != "" {
		return nil, fmt.Errorf("%w %q (did you mean %q?)", ErrUnknownKey, name, s)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKey, name)
}

// mustResolve is resolve for the getters: an unknown key is a programming error.
func mustResolve(name string) *entry {
	e, err := resolve(name)
	if err != nil {
		panic("config: " + err.Error())
	}
	return e
}

// Lookup returns the key registered under name, a canonical name or an alias.
func Lookup(name string) (Key, bool) {
	e, ok := registry[name]
	if !ok {
		return Key{}, false
	}
	return e.copyKey(), true
}

// Keys returns all registered keys in registration order.
func Keys() []Key {
	ks := make([]Key, len(ordered))
	for i, e := range ordered {
		ks[i] = e.copyKey()
	}
	return ks
}

func (e *entry) copyKey() Key {
	k := e.Key
	k.Enum = slices.Clone(k.Enum)
	k.Aliases = slices.Clone(k.Aliases)
	k.EnumAliases = maps.Clone(k.EnumAliases)
	k.check = nil
	return k
}

// Config holds configuration values by canonical key name. The zero value, and a nil
// *Config, read as all defaults. A Config is not safe for concurrent use while it is
// being modified; concurrent reads are safe.
type Config struct {
	set map[string]setting // explicitly set keys only
}

type setting struct {
	text string // normalized text, see entry.parse
	val  any
}

// New returns a Config in which every key has its default value.
func New() *Config { return &Config{} }

// Set validates value for key (a canonical name or an alias) and sets it. The error, one
// line, names the key, e.g. `heartbeat.timeout: invalid duration "ten" (use e.g. "10 s"
// or "500 ms")`, or wraps ErrUnknownKey and suggests the closest known key.
func (c *Config) Set(key, value string) error {
	e, err := resolve(key)
	if err != nil {
		return err
	}
	v, text, err := e.parse(value)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if c.set == nil {
		c.set = make(map[string]setting)
	}
	c.set[e.Name] = setting{text, v}
	return nil
}

// IsSet reports whether key was set explicitly. It panics if key is not registered.
func (c *Config) IsSet(key string) bool {
	e := mustResolve(key)
	if c == nil {
		return false
	}
	_, ok := c.set[e.Name]
	return ok
}

// Map returns the explicitly set keys by canonical name with their values in normalized
// text form, such that FromMap(c.Map()) equals c. Defaults are not included.
func (c *Config) Map() map[string]string {
	m := make(map[string]string)
	if c != nil {
		for k, s := range c.set {
			m[k] = s.text
		}
	}
	return m
}

// FromMap returns a Config with the keys of m (canonical names or aliases) set, as Set
// does; any other key has its default. Keys are applied in sorted order, so the error,
// if any, is that of the first bad key in that order.
func FromMap(m map[string]string) (*Config, error) {
	c := New()
	keys := slices.Sorted(maps.Keys(m))
	for _, k := range keys {
		if err := c.Set(k, m[k]); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Merge sets on c every key that is explicitly set in o, overriding c's values.
func (c *Config) Merge(o *Config) {
	if o == nil || len(o.set) == 0 {
		return
	}
	if c.set == nil {
		c.set = make(map[string]setting, len(o.set))
	}
	maps.Copy(c.set, o.set)
}

// get returns the value of key, which must be registered and of one of the kinds.
func (c *Config) get(key, getter string, kinds ...Kind) any {
	e := mustResolve(key)
	if !slices.Contains(kinds, e.Kind) {
		panic(fmt.Sprintf("config: %s(%q): key is of kind %v", getter, key, e.Kind))
	}
	if c != nil {
		if s, ok := c.set[e.Name]; ok {
			return s.val
		}
	}
	return e.def
}

// String returns the value of a String or Enum key (Enum values in canonical spelling).
func (c *Config) String(key string) string { return c.get(key, "String", String, Enum).(string) }

// Int returns the value of an Int key.
func (c *Config) Int(key string) int { return c.get(key, "Int", Int).(int) }

// Bool returns the value of a Bool key.
func (c *Config) Bool(key string) bool { return c.get(key, "Bool", Bool).(bool) }

// Duration returns the value of a Duration key.
func (c *Config) Duration(key string) time.Duration {
	return c.get(key, "Duration", Duration).(time.Duration)
}

// MemorySize returns the value of a MemorySize key in bytes.
func (c *Config) MemorySize(key string) int64 {
	return c.get(key, "MemorySize", MemorySize).(int64)
}

// Float returns the value of a Float key.
func (c *Config) Float(key string) float64 { return c.get(key, "Float", Float).(float64) }

// Describe returns a Markdown table of all keys with their kinds, defaults and
// descriptions, for documentation.
func Describe() string {
	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n|---|---|---|---|\n")
	for _, e := range ordered {
		typ := e.Kind.String()
		if e.Kind == Enum {
			typ += ": " + strings.Join(e.Enum, ", ")
		}
		desc := e.Description
		if e.Flag != "" {
			desc += " Flag: `--" + e.Flag + "`."
		}
		if len(e.Aliases) > 0 {
			desc += " Legacy key: `" + strings.Join(e.Aliases, "`, `") + "`."
		}
		if len(e.EnumAliases) > 0 {
			as := slices.Sorted(maps.Keys(e.EnumAliases))
			for i, a := range as {
				as[i] = "`" + a + "` = `" + e.EnumAliases[a] + "`"
			}
			desc += " Also accepted: " + strings.Join(as, ", ") + "."
		}
		def := "`" + e.Default + "`"
		if e.Default == "" {
			def = "(empty)"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", e.Name, typ, def,
			strings.ReplaceAll(desc, "|", `\|`))
	}
	return b.String()
}

// suggest returns the registered name closest to name, if it is close enough to be a
// plausible typo. Case differences do not count.
func suggest(name string) string {
	best, bestD := "", -1
	lname := strings.ToLower(name)
	for _, e := range ordered {
		for _, n := range append([]string{e.Name}, e.Aliases...) {
			d := editDistance(lname, strings.ToLower(n))
			if bestD < 0 || d < bestD {
				best, bestD = e.Name, d
			}
		}
	}
	if bestD < 0 || bestD > max(2, len(name)/4) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
