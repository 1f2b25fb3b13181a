package config_test

import (
	"bytes"
	"flag"
	"os"
	"testing"

	"github.com/sluice-stream/sluice/pkg/config"
)

var update = flag.Bool("update", false, "rewrite the generated key table in docs/configuration.md")

const (
	configurationDoc = "../../docs/configuration.md"
	beginKeys        = "<!-- BEGIN GENERATED KEYS -->\n"
	endKeys          = "<!-- END GENERATED KEYS -->"
)

// TestConfigurationDocs checks that the key table of docs/configuration.md, the text
// between the two markers, is exactly config.Describe()'s output. With -update it
// rewrites that text instead.
func TestConfigurationDocs(t *testing.T) {
	doc, err := os.ReadFile(configurationDoc)
	if err != nil {
		t.Fatalf("read the configuration docs: %v", err)
	}
	begin := bytes.Index(doc, []byte(beginKeys))
	if begin < 0 {
		t.Fatalf("%s lacks the line %q", configurationDoc, beginKeys[:len(beginKeys)-1])
	}
	start := begin + len(beginKeys)
	end := bytes.Index(doc[start:], []byte(endKeys))
	if end < 0 {
		t.Fatalf("%s lacks the line %q after %q", configurationDoc, endKeys, beginKeys[:len(beginKeys)-1])
	}
	end += start
	got, want := string(doc[start:end]), config.Describe()
	if got == want {
		return
	}
	i := firstDiffLine(got, want)
	if *update {
		var b bytes.Buffer
		b.Write(doc[:start])
		b.WriteString(want)
		b.Write(doc[end:])
		if err := os.WriteFile(configurationDoc, b.Bytes(), 0o644); err != nil {
			t.Fatalf("update %s: %v", configurationDoc, err)
		}
		t.Logf("updated the key table in %s", configurationDoc)
		return
	}
	t.Errorf("the key table in %s is not config.Describe()'s output; regenerate it with\n\n"+
		"\tgo test ./pkg/config -run TestConfigurationDocs -update\n\n"+
		"first difference in line %d of the table:\n  docs: %q\n  keys: %q",
		configurationDoc, i+1, line(got, i), line(want, i))
}

// firstDiffLine returns the 0-based index of the first line where a and b differ.
func firstDiffLine(a, b string) int {
	la, lb := bytes.Split([]byte(a), []byte("\n")), bytes.Split([]byte(b), []byte("\n"))
	for i := range min(len(la), len(lb)) {
		if !bytes.Equal(la[i], lb[i]) {
			return i
		}
	}
	return min(len(la), len(lb))
}

// line returns line i (0-based) of s, or "" past its end.
func line(s string, i int) string {
	ls := bytes.Split([]byte(s), []byte("\n"))
	if i < len(ls) {
		return string(ls[i])
	}
	return ""
}
