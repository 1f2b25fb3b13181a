package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// DefineFlag is the long name of the repeatable -D flag.
const DefineFlag = "define"

// BindFlags adds to fs a flag --<key> for every registered key (aliases excluded), e.g.
// --heartbeat.timeout=5s, and the repeatable flag -D/--define key=value (Flink's dynamic
// properties; the key may be an alias). Each flag value is validated and applied to c
// through Set while fs is parsed, so a bad value fails the parse; of several settings of
// one key the last wins. Bool keys may be given as --<key>, meaning true.
//
// For the precedence default < file < flags, bind a New() Config, parse, and then read
// the file with LoadWithOverrides(path, c).
func BindFlags(fs *pflag.FlagSet, c *Config) {
	for _, e := range ordered {
		f := fs.VarPF(&keyFlag{c: c, e: e}, e.Name, "", flagUsage(e))
		f.DefValue = e.Default
		if e.Kind == Bool {
			f.NoOptDefVal = "true"
		}
		if e.Flag != "" {
			short := fs.VarPF(&keyFlag{c: c, e: e}, e.Flag, "", "Short for --"+e.Name+".")
			short.DefValue = e.Default
		}
	}
	fs.VarP(&defineFlag{c: c}, DefineFlag, "D",
		"Set a configuration `key=value` (Flink's dynamic properties); repeatable.")
}

func flagUsage(e *entry) string {
	// Back quotes would be taken by pflag as the name of the flag's value.
	u := strings.ReplaceAll(e.Description, "`", "'")
	if e.Kind == Enum {
		u += " One of " + strings.Join(e.Enum, ", ") + "."
	}
	return u
}

// keyFlag is the pflag.Value of the flag of one key.
type keyFlag struct {
	c *Config
	e *entry
}

func (f *keyFlag) Set(s string) error {
	if err := f.c.Set(f.e.Name, s); err != nil {
		// pflag names the flag; drop the key the error starts with.
		return errors.New(strings.TrimPrefix(err.Error(), f.e.Name+": "))
	}
	return nil
}

func (f *keyFlag) String() string {
	if f.c != nil {
		if s, ok := f.c.set[f.e.Name]; ok {
			return s.text
		}
	}
	return f.e.Default
}

func (f *keyFlag) Type() string {
	switch f.e.Kind {
	case MemorySize:
		return "size"
	case Enum:
		return "string"
	}
	return strings.ToLower(f.e.Kind.String())
}

// IsBoolFlag tells pflag's usage output that the value of a Bool key is optional.
func (f *keyFlag) IsBoolFlag() bool { return f.e.Kind == Bool }

// defineFlag is the pflag.Value of -D key=value.
type defineFlag struct {
	c    *Config
	sets []string
}

func (f *defineFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("expected key=value, got %q", s)
	}
	if err := f.c.Set(strings.TrimSpace(k), v); err != nil {
		return err
	}
	f.sets = append(f.sets, s)
	return nil
}

func (f *defineFlag) String() string { return strings.Join(f.sets, ",") }

func (f *defineFlag) Type() string { return "key=value" }

// DefineValue returns a pflag value that applies key=value settings to c, validated, for
// commands that take -D but not a flag per key.
func DefineValue(c *Config) pflag.Value { return &defineFlag{c: c} }
