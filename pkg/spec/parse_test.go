package spec

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// lines joins its arguments as the lines of a spec, so tests can count lines.
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

const formatExample = `name: keyed-count            # required
parallelism: 2               # default parallelism for operators (default 1)
maxParallelism: 128          # optional; must be >= every operator's parallelism, <= 32768
operators:
  - uid: numbers             # required, unique, [a-z0-9][a-z0-9._-]*
    type: sequence           # source: deterministic keyed records
    keys: 100                # number of keys (>=1), key values "key-0".."key-99"
    perKey: 1000             # records per key; 0 or absent = unbounded
    rate: 5000               # records per second over the whole source, 0 = unlimited
    parallelism: 1           # optional per operator
  - uid: lines
    type: file               # source: lines of a text file (or every file in a directory)
    path: /data/in.txt
  - uid: doubled
    type: map
    input: numbers           # one input uid; or ` + "`inputs: [a, b]`" + ` for a union of several
    expr: '{"key": key, "seq": seq, "value": seq * 2}'   # must evaluate to a map (the new record)
  - uid: big
    type: filter
    input: doubled
    expr: 'value > 10'       # must evaluate to bool
  - uid: counts
    type: aggregate          # keyed running aggregate
    input: big
    keyBy: key               # field name
    function: count          # count | sum | min | max
    field: value             # required for sum/min/max
    as: count                # output field name, default = the function name
  - uid: out
    type: file               # sink when it has an input; writes part-<subtask> files in a directory
    input: counts
    path: /tmp/out
    format: csv              # csv | json (default json)
    fields: [key, seq, count] # csv column order (required for csv)
  - uid: show
    type: print              # sink: one line per record
    input: counts
  - uid: drop
    type: blackhole          # sink: discards
    input: counts
`

func TestParseFormatExample(t *testing.T) {
	job, err := Parse("example.yaml", []byte(formatExample))
	if err != nil {
		t.Fatal(err)
	}
	exprs := map[string]string{}
	for _, op := range job.Operators {
		if op.Expr != nil {
			exprs[op.UID] = op.Expr.Source()
			op.Expr = nil
		}
	}
	want := &Job{
		Name:           "keyed-count",
		Parallelism:    2,
		MaxParallelism: 128,
		Operators: []*Operator{
			{UID: "numbers", Name: "numbers", Type: TypeSequence, Parallelism: 1, Line: 5,
				Sequence: &SequenceSpec{Keys: 100, PerKey: 1000, Rate: 5000}},
			{UID: "lines", Name: "lines", Type: TypeFile, Parallelism: 2, Line: 11,
				File: &FileSpec{Path: "/data/in.txt"}},
			{UID: "doubled", Name: "doubled", Type: TypeMap, Parallelism: 2, Line: 14,
				Inputs: []string{"numbers"}, InputPartitions: []Partition{PartitionRebalance}},
			{UID: "big", Name: "big", Type: TypeFilter, Parallelism: 2, Line: 18,
				Inputs: []string{"doubled"}, InputPartitions: []Partition{PartitionForward}},
			{UID: "counts", Name: "counts", Type: TypeAggregate, Parallelism: 2, Line: 22,
				Inputs: []string{"big"}, InputPartitions: []Partition{PartitionKeyGroup}, KeyBy: "key",
				Aggregate: &AggregateSpec{Function: FuncCount, Field: "value", As: "count"}},
			{UID: "out", Name: "out", Type: TypeFile, Parallelism: 2, Line: 29,
				Inputs: []string{"counts"}, InputPartitions: []Partition{PartitionForward},
				File: &FileSpec{Path: "/tmp/out", Format: FormatCSV, Fields: []string{"key", "seq", "count"}}},
			{UID: "show", Name: "show", Type: TypePrint, Parallelism: 2, Line: 35,
				Inputs: []string{"counts"}, InputPartitions: []Partition{PartitionForward}},
			{UID: "drop", Name: "drop", Type: TypeBlackhole, Parallelism: 2, Line: 38,
				Inputs: []string{"counts"}, InputPartitions: []Partition{PartitionForward}},
		},
	}
	if !reflect.DeepEqual(job, want) {
		for i := range max(len(job.Operators), len(want.Operators)) {
			if i < len(job.Operators) && i < len(want.Operators) && !reflect.DeepEqual(job.Operators[i], want.Operators[i]) {
				t.Errorf("operator %d:\n got %+v\nwant %+v", i, *job.Operators[i], *want.Operators[i])
			}
		}
		t.Fatalf("got %+v\nwant %+v", job, want)
	}
	wantExprs := map[string]string{
		"doubled": `{"key": key, "seq": seq, "value": seq * 2}`,
		"big":     "value > 10",
	}
	if !reflect.DeepEqual(exprs, wantExprs) {
		t.Errorf("expressions %v, want %v", exprs, wantExprs)
	}
	if op := job.Lookup("show"); op == nil || !op.IsSink() || op.IsSource() {
		t.Errorf("Lookup(show) = %+v", op)
	}
	if op := job.Lookup("lines"); op == nil || op.IsSink() || !op.IsSource() {
		t.Errorf("Lookup(lines) = %+v", op)
	}
	if job.Lookup("nope") != nil {
		t.Error("Lookup(nope) != nil")
	}
}

func TestParseExampleExpressionsEvaluate(t *testing.T) {
	job, err := Parse("example.yaml", []byte(formatExample))
	if err != nil {
		t.Fatal(err)
	}
	seq := job.Lookup("numbers").Sequence
	m := job.Lookup("doubled").Expr.Clone()
	f := job.Lookup("big").Expr.Clone()
	agg := job.Lookup("counts").Aggregate.NewAggregator()
	accs := map[string]Acc{}
	var got []Row
	for n := int64(0); n < 12; n++ {
		r, ok := seq.At(0, 1, n*100) // keys 0, 0, ... (n*100 mod 100 == 0), seq n+1
		if !ok {
			t.Fatal("sequence ended")
		}
		r, err := m.EvalMap(r)
		if err != nil {
			t.Fatal(err)
		}
		keep, err := f.EvalBool(r)
		if err != nil {
			t.Fatal(err)
		}
		if !keep {
			continue
		}
		k := KeyString(r["key"])
		acc, out, err := agg.Update(accs[k], r)
		if err != nil {
			t.Fatal(err)
		}
		accs[k] = acc
		got = append(got, out)
	}
	// value = 2*seq > 10 from seq 6 on: seq 6..12, counts 1..7.
	if len(got) != 7 {
		t.Fatalf("got %d records: %v", len(got), got)
	}
	last := Row{"key": "key-0", "seq": int64(12), "value": int64(24), "count": int64(7)}
	if !reflect.DeepEqual(got[6], last) {
		t.Errorf("last record %v, want %v", got[6], last)
	}
}

func TestParseTopologicalOrder(t *testing.T) {
	src := lines(
		"name: t",
		"operators:",
		"  - {uid: sink, type: print, input: m2}",
		"  - {uid: m2, type: map, inputs: [m1, s2], expr: '$env'}",
		"  - {uid: s2, type: sequence, keys: 1}",
		"  - {uid: m1, type: filter, input: s1, expr: 'true', partition: broadcast}",
		"  - {uid: s1, type: sequence, keys: 1, parallelism: 3}",
	)
	job, err := Parse("t.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var uids []string
	for _, op := range job.Operators {
		uids = append(uids, op.UID)
	}
	if want := []string{"s2", "s1", "m1", "m2", "sink"}; !reflect.DeepEqual(uids, want) {
		t.Errorf("order %v, want %v", uids, want)
	}
	if got := job.Lookup("m1").InputPartitions; !reflect.DeepEqual(got, []Partition{PartitionBroadcast}) {
		t.Errorf("m1 partitions %v", got)
	}
	if got := job.Lookup("m2").InputPartitions; !reflect.DeepEqual(got, []Partition{PartitionForward, PartitionForward}) {
		t.Errorf("m2 partitions %v", got)
	}
	if got := job.Lookup("m1").Partition; got != PartitionBroadcast {
		t.Errorf("m1 declared partition %q", got)
	}
}

func TestParseDefaultsAndMerge(t *testing.T) {
	src := lines(
		"name: t",
		"operators:",
		"  - &seq",
		"    uid: a",
		"    type: sequence",
		"    keys: 5",
		"    rate: 0.5",
		"  - <<: *seq",
		"    uid: b",
		"    name: Second source",
		"  - uid: sum",
		"    type: aggregate",
		"    inputs: [a, b]",
		"    keyBy: key",
		"    function: sum",
		"    field: seq",
		"  - uid: out",
		"    type: file",
		"    input: sum",
		"    path: /tmp/x",
	)
	job, err := Parse("t.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if job.Parallelism != 1 || job.MaxParallelism != 0 {
		t.Errorf("parallelism %d max %d", job.Parallelism, job.MaxParallelism)
	}
	b := job.Lookup("b")
	if b.Name != "Second source" || b.Type != TypeSequence || *b.Sequence != (SequenceSpec{Keys: 5, Rate: 0.5}) || b.Line != 8 {
		t.Errorf("merged operator %+v %+v", b, b.Sequence)
	}
	sum := job.Lookup("sum")
	if *sum.Aggregate != (AggregateSpec{Function: FuncSum, Field: "seq", As: "sum"}) {
		t.Errorf("aggregate %+v", sum.Aggregate)
	}
	if !reflect.DeepEqual(sum.InputPartitions, []Partition{PartitionKeyGroup, PartitionKeyGroup}) {
		t.Errorf("partitions %v", sum.InputPartitions)
	}
	if out := job.Lookup("out"); out.File.Format != FormatJSON || out.File.Fields != nil {
		t.Errorf("file sink %+v", out.File)
	}
}

// validSpec is the base the error cases vary; its sink is on line 6.
var validSpec = lines(
	"name: t",
	"operators:",
	"  - uid: src",
	"    type: sequence",
	"    keys: 10",
	"  - uid: out",
	"    type: print",
	"    input: src",
)

func TestParseErrors(t *testing.T) {
	mapFields := "uid, name, type, parallelism, partition, input, inputs, expr"
	tests := []struct {
		name string
		src  string
		want string // the whole error text; lines joined with \n
	}{
		{"empty", "", "t.yaml:1: empty spec"},
		{"only comments", "# nothing\n\n", "t.yaml:1: empty spec"},
		{"null document", "---\n~\n", "t.yaml:2: empty spec"},
		{"yaml syntax", "name: t\noperators: [\n", "t.yaml:2: invalid YAML: did not find expected node content"},
		{"two documents", "name: t\n---\nname: u\n", "t.yaml:3: a spec is a single YAML document, found a second one"},
		{"root not mapping", "- a\n", "t.yaml:1: spec must be a mapping, got a list"},
		{"unknown top-level field", "nmae: t\n" + validSpec[len("name: t\n"):],
			"t.yaml:1: unknown field \"nmae\" (did you mean \"name\"?); valid fields: name, parallelism, maxParallelism, operators\n" +
				"t.yaml:1: missing required field \"name\""},
		{"unknown top-level field without suggestion", "version: 2\n" + validSpec,
			"t.yaml:1: unknown field \"version\"; valid fields: name, parallelism, maxParallelism, operators"},
		{"top-level field case", "maxparallelism: 4\n" + validSpec,
			"t.yaml:1: unknown field \"maxparallelism\" (did you mean \"maxParallelism\"?); valid fields: name, parallelism, maxParallelism, operators"},
		{"duplicate top-level field", validSpec + "name: u\n", "t.yaml:9: duplicate field \"name\" (first at line 1)"},
		{"missing name", validSpec[len("name: t\n"):], "t.yaml:1: missing required field \"name\""},
		{"empty name", "name: ''\n" + validSpec[len("name: t\n"):], "t.yaml:1: name must not be empty"},
		{"name wrong type", "name: [a]\n" + validSpec[len("name: t\n"):], "t.yaml:1: name must be a string, got a list"},
		{"missing operators", "name: t\n", "t.yaml:1: missing required field \"operators\""},
		{"operators not a list", "name: t\noperators: {a: 1}\n", "t.yaml:2: operators must be a list, got a mapping"},
		{"no operators", "name: t\noperators: []\n", "t.yaml:2: job has no operators"},
		{"operator not a mapping", validSpec + "  - out2\n", "t.yaml:9: an operator must be a mapping, got \"out2\""},
		{"parallelism wrong type", "parallelism: two\n" + validSpec,
			"t.yaml:1: parallelism must be an integer, got \"two\""},
		{"parallelism float", "parallelism: 1.5\n" + validSpec,
			"t.yaml:1: parallelism must be an integer, got 1.5"},
		{"job parallelism zero", "parallelism: 0\n" + validSpec, "t.yaml:1: parallelism must be >= 1, got 0"},
		{"job parallelism above upper bound", "parallelism: 40000\n" + validSpec,
			"t.yaml:1: parallelism 40000 exceeds the maximum 32768"},
		{"job parallelism above maxParallelism", "parallelism: 8\nmaxParallelism: 4\n" + validSpec,
			"t.yaml:1: parallelism 8 exceeds maxParallelism 4"},
		{"maxParallelism too large", "maxParallelism: 40000\n" + validSpec,
			"t.yaml:1: maxParallelism must be between 1 and 32768, got 40000"},
		{"maxParallelism zero", "maxParallelism: 0\n" + validSpec,
			"t.yaml:1: maxParallelism must be between 1 and 32768, got 0"},
		{"operator parallelism zero", validSpec + "    parallelism: 0\n",
			"t.yaml:9: operator \"out\": parallelism must be >= 1, got 0"},
		{"operator parallelism above maxParallelism", "maxParallelism: 4\n" + validSpec + "    parallelism: 5\n",
			"t.yaml:10: operator \"out\": parallelism 5 exceeds maxParallelism 4"},
		{"missing uid", validSpec + "  - type: print\n    input: src\n",
			"t.yaml:9: operator is missing required field \"uid\""},
		{"invalid uid", validSpec + "  - uid: Out_2\n    type: print\n    input: src\n",
			"t.yaml:9: invalid uid \"Out_2\" (must match [a-z0-9][a-z0-9._-]*)"},
		{"missing type", validSpec + "  - uid: x\n    input: src\n",
			"t.yaml:9: operator \"x\": missing required field \"type\""},
		{"unknown type", validSpec + "  - uid: x\n    type: mapp\n    input: src\n",
			"t.yaml:10: operator \"x\": unknown type \"mapp\" (did you mean \"map\"?); valid types: sequence, file, map, filter, aggregate, print, blackhole"},
		{"unknown type without suggestion", validSpec + "  - uid: x\n    type: kafka\n",
			"t.yaml:10: operator \"x\": unknown type \"kafka\"; valid types: sequence, file, map, filter, aggregate, print, blackhole"},
		{"unknown operator field", validSpec + "  - uid: m\n    type: map\n    input: src\n    expr: '$env'\n    exprs: x\n",
			"t.yaml:13: operator \"m\": unknown field \"exprs\" for type map (did you mean \"expr\"?); valid fields: " + mapFields},
		{"keyBy on map", validSpec + "  - uid: m\n    type: map\n    input: src\n    expr: '$env'\n    keyBy: key\n",
			"t.yaml:13: operator \"m\": unknown field \"keyBy\" for type map; valid fields: " + mapFields},
		{"unknown sequence field", lines("name: t", "operators:", "  - {uid: s, type: sequence, keys: 1, perkey: 2}", "  - {uid: p, type: print, input: s}"),
			"t.yaml:3: operator \"s\": unknown field \"perkey\" for type sequence (did you mean \"perKey\"?); valid fields: uid, name, type, parallelism, partition, keys, perKey, rate"},
		{"duplicate operator field", validSpec + "    input: src\n",
			"t.yaml:9: duplicate field \"input\" (first at line 8)"},
		{"duplicate uid", validSpec + "  - uid: out\n    type: blackhole\n    input: src\n",
			"t.yaml:9: duplicate uid \"out\" (first defined at line 6)"},
		{"dangling input", lines("name: t", "operators:", "  - uid: numbers", "    type: sequence", "    keys: 1", "  - uid: out", "    type: print", "    input: nubmers"),
			"t.yaml:8: operator \"out\": unknown input \"nubmers\" (did you mean \"numbers\"?)"},
		{"dangling inputs element", validSpec + "  - uid: m\n    type: blackhole\n    inputs: [src, zzz]\n",
			"t.yaml:11: operator \"m\": unknown input \"zzz\""},
		{"input listed twice", validSpec + "  - uid: m\n    type: blackhole\n    inputs: [src, src]\n",
			"t.yaml:11: operator \"m\": inputs lists \"src\" twice"},
		{"empty inputs", validSpec + "  - uid: m\n    type: blackhole\n    inputs: []\n",
			"t.yaml:11: operator \"m\": inputs must not be empty"},
		{"input and inputs", validSpec + "    inputs: [src]\n",
			"t.yaml:9: operator \"out\": input and inputs are mutually exclusive"},
		{"inputs wrong type", validSpec + "  - uid: m\n    type: blackhole\n    inputs: src\n",
			"t.yaml:11: operator \"m\": inputs must be a list, got \"src\""},
		{"cycle", lines("name: t", "operators:",
			"  - {uid: a, type: map, input: c, expr: '$env'}",
			"  - {uid: b, type: filter, input: a, expr: 'true'}",
			"  - {uid: c, type: map, input: b, expr: '$env'}",
			"  - {uid: out, type: print, input: c}"),
			"t.yaml:3: operators form a cycle: a -> b -> c -> a"},
		{"cycle named from its first operator", lines("name: t", "operators:",
			"  - {uid: s, type: sequence, keys: 1}",
			"  - {uid: x, type: map, inputs: [s, z], expr: '$env'}",
			"  - {uid: y, type: map, input: x, expr: '$env'}",
			"  - {uid: z, type: map, input: y, expr: '$env'}",
			"  - {uid: out, type: print, input: z}"),
			"t.yaml:4: operators form a cycle: x -> y -> z -> x"},
		{"self cycle", validSpec + "  - {uid: m, type: map, input: m, expr: '$env'}\n",
			"t.yaml:9: operators form a cycle: m -> m"},
		{"source with input", lines("name: t", "operators:", "  - uid: s", "    type: sequence", "    keys: 1", "    input: s", "  - {uid: p, type: print, input: s}"),
			"t.yaml:6: operator \"s\": a sequence source takes no input"},
		{"non-source without input", validSpec + "  - uid: m\n    type: filter\n    expr: 'true'\n",
			"t.yaml:9: operator \"m\": type filter needs an input (input or inputs)"},
		{"sink without input", validSpec + "  - uid: p\n    type: print\n",
			"t.yaml:9: operator \"p\": type print needs an input (input or inputs)"},
		{"sink as input", validSpec + "  - uid: p\n    type: print\n    input: out\n",
			"t.yaml:11: operator \"p\": input \"out\" is a print sink, which has no output"},
		{"file sink as input", validSpec + "  - {uid: f, type: file, input: src, path: /x}\n  - {uid: p, type: print, input: f}\n",
			"t.yaml:10: operator \"p\": input \"f\" is a file sink, which has no output"},
		{"forward with different parallelism", validSpec + "    parallelism: 2\n    partition: forward\n",
			"t.yaml:10: operator \"out\": forward partition needs equal parallelism, but \"out\" has 2 and its input \"src\" has 1"},
		{"unknown partition", validSpec + "    partition: shuffle\n",
			"t.yaml:9: operator \"out\": unknown partition \"shuffle\"; valid partitions: forward, rebalance, broadcast"},
		{"partition typo", validSpec + "    partition: rebalanse\n",
			"t.yaml:9: operator \"out\": unknown partition \"rebalanse\" (did you mean \"rebalance\"?); valid partitions: forward, rebalance, broadcast"},
		{"partition on source", lines("name: t", "operators:", "  - {uid: s, type: sequence, keys: 1, partition: rebalance}", "  - {uid: p, type: print, input: s}"),
			"t.yaml:3: operator \"s\": a source has no input to partition"},
		{"keyBy with partition", validSpec + "  - {uid: c, type: aggregate, input: src, keyBy: key, function: count, partition: rebalance}\n  - {uid: p, type: print, input: c}\n",
			"t.yaml:9: operator \"c\": keyBy implies key-group partitioning and cannot be combined with partition"},
		{"csv without fields", validSpec + "  - uid: f\n    type: file\n    input: src\n    path: /tmp/o\n    format: csv\n",
			"t.yaml:13: operator \"f\": format csv requires fields"},
		{"unknown format", validSpec + "  - uid: f\n    type: file\n    input: src\n    path: /tmp/o\n    format: xml\n",
			"t.yaml:13: operator \"f\": unknown format \"xml\"; valid formats: json, csv"},
		{"format on file source", lines("name: t", "operators:", "  - uid: f", "    type: file", "    path: /in", "    format: csv", "  - {uid: p, type: print, input: f}"),
			"t.yaml:6: operator \"f\": format applies to a file sink only (a file operator with an input)"},
		{"file without path", validSpec + "  - {uid: f, type: file, input: src}\n",
			"t.yaml:9: operator \"f\": missing required field \"path\""},
		{"csv fields listed twice", validSpec + "  - {uid: f, type: file, input: src, path: /o, format: csv, fields: [a, a]}\n",
			"t.yaml:9: operator \"f\": fields lists \"a\" twice"},
		{"unknown function", validSpec + "  - {uid: c, type: aggregate, input: src, keyBy: key, function: avg}\n",
			"t.yaml:9: operator \"c\": unknown function \"avg\"; valid functions: count, sum, min, max"},
		{"function typo", validSpec + "  - {uid: c, type: aggregate, input: src, keyBy: key, function: coutn}\n",
			"t.yaml:9: operator \"c\": unknown function \"coutn\" (did you mean \"count\"?); valid functions: count, sum, min, max"},
		{"sum without field", validSpec + "  - uid: c\n    type: aggregate\n    input: src\n    keyBy: key\n    function: sum\n",
			"t.yaml:13: operator \"c\": function sum requires field"},
		{"max without field", validSpec + "  - {uid: c, type: aggregate, input: src, keyBy: key, function: max}\n",
			"t.yaml:9: operator \"c\": function max requires field"},
		{"aggregate without keyBy", validSpec + "  - uid: c\n    type: aggregate\n    input: src\n    function: count\n",
			"t.yaml:9: operator \"c\": missing required field \"keyBy\""},
		{"aggregate without function", validSpec + "  - uid: c\n    type: aggregate\n    input: src\n    keyBy: key\n",
			"t.yaml:9: operator \"c\": missing required field \"function\""},
		{"as overwrites key", validSpec + "  - uid: c\n    type: aggregate\n    input: src\n    keyBy: key\n    function: count\n    as: key\n",
			"t.yaml:14: operator \"c\": as \"key\" would overwrite the keyBy field"},
		{"default as overwrites key", validSpec + "  - {uid: c, type: aggregate, input: src, keyBy: min, function: min, field: seq}\n",
			"t.yaml:9: operator \"c\": as \"min\" would overwrite the keyBy field"},
		{"missing expr", validSpec + "  - uid: m\n    type: map\n    input: src\n",
			"t.yaml:9: operator \"m\": missing required field \"expr\""},
		{"expr syntax error", validSpec + "  - uid: m\n    type: filter\n    input: src\n    expr: 'seq >'\n",
			"t.yaml:12: operator \"m\": expr: unexpected token EOF (expression column 5)"},
		{"expr error in a literal block", validSpec + "  - uid: m\n    type: map\n    input: src\n    expr: |\n      {\n        \"a\": seq +,\n      }\n",
			"t.yaml:14: operator \"m\": expr: unexpected token Operator(\",\") (expression column 13)"},
		{"empty expr", validSpec + "  - uid: m\n    type: map\n    input: src\n    expr: ''\n",
			"t.yaml:12: operator \"m\": expr: empty expression"},
		{"map expr not a map", validSpec + "  - uid: m\n    type: map\n    input: src\n    expr: 'seq > 1'\n",
			"t.yaml:12: operator \"m\": expr: expression must evaluate to a map, but its type is bool"},
		{"filter expr not a bool", validSpec + "  - uid: m\n    type: filter\n    input: src\n    expr: '\"yes\"'\n",
			"t.yaml:12: operator \"m\": expr: expression must evaluate to a bool, but its type is string"},
		{"no sink", lines("name: t", "operators:", "  - {uid: s, type: sequence, keys: 1}", "  - {uid: m, type: filter, input: s, expr: 'true'}"),
			"t.yaml:2: job has no sink (a file operator with an input, print or blackhole)"},
		{"sequence without keys", lines("name: t", "operators:", "  - uid: s", "    type: sequence", "  - {uid: p, type: print, input: s}"),
			"t.yaml:3: operator \"s\": missing required field \"keys\""},
		{"sequence bad numbers", lines("name: t", "operators:", "  - uid: s", "    type: sequence", "    keys: 0", "    perKey: -1", "    rate: -2.5", "  - {uid: p, type: print, input: s}"),
			"t.yaml:5: operator \"s\": keys must be >= 1, got 0\n" +
				"t.yaml:6: operator \"s\": perKey must be >= 0, got -1\n" +
				"t.yaml:7: operator \"s\": rate must be a finite number >= 0, got -2.5"},
		{"rate wrong type", lines("name: t", "operators:", "  - {uid: s, type: sequence, keys: 1, rate: fast}", "  - {uid: p, type: print, input: s}"),
			"t.yaml:3: operator \"s\": rate must be a number, got \"fast\""},
		{"keys out of range", lines("name: t", "operators:", "  - {uid: s, type: sequence, keys: 9223372036854775808}", "  - {uid: p, type: print, input: s}"),
			"t.yaml:3: operator \"s\": keys is not a 64-bit integer: 9223372036854775808"},
		{"several errors in line order", lines("name: t", "parallelism: 0", "operators:",
			"  - {uid: s, type: sequence, keys: 1}",
			"  - {uid: m, type: map, input: q, expr: '1 +'}",
			"  - {uid: s, type: print, input: s}"),
			"t.yaml:2: parallelism must be >= 1, got 0\n" +
				"t.yaml:5: operator \"m\": unknown input \"q\"\n" +
				"t.yaml:5: operator \"m\": expr: unexpected token EOF (expression column 3)\n" +
				"t.yaml:6: duplicate uid \"s\" (first defined at line 4)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, err := Parse("t.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("no error; job %+v", job)
			}
			if job != nil {
				t.Error("a job returned with an error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error\n%s\nwant\n%s", got, tt.want)
			}
			for _, e := range Errors(err) {
				if e.File != "t.yaml" || e.Line < 1 {
					t.Errorf("bad Error %+v", e)
				}
			}
		})
	}
}

func TestErrorsUnwrap(t *testing.T) {
	_, err := Parse("x.yaml", []byte("name: t\nparallelism: 0\nmaxParallelism: 0\noperators: []\n"))
	es := Errors(err)
	if len(es) != 3 {
		t.Fatalf("Errors = %v", es)
	}
	if es[0].Line != 2 || es[0].Column != 14 {
		t.Errorf("first error at %d:%d, want 2:14", es[0].Line, es[0].Column)
	}
	var e *Error
	if !errors.As(err, &e) || e != es[0] {
		t.Error("errors.As does not find the first *Error")
	}
	if Errors(nil) != nil {
		t.Error("Errors(nil) != nil")
	}
}

func TestSuggest(t *testing.T) {
	for _, tt := range []struct{ word, want string }{
		{"nmae", "name"},
		{"mapp", "map"},
		{"KEYBY", "keyBy"},
		{"prallelism", "parallelism"},
		{"parallelsim", "parallelism"},
		{"xyz", ""},
		{"", ""},
		{"expresion", ""},
	} {
		if got := suggest(tt.word, []string{"name", "map", "keyBy", "parallelism", "expr", "maxParallelism"}); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.word, got, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(formatExample))
	f.Add([]byte(validSpec))
	f.Add([]byte("name: t\noperators:\n  - &a {uid: a, type: sequence, keys: 1}\n  - {<<: *a, uid: b}\n  - {uid: p, type: print, inputs: [a, b]}\n"))
	f.Add([]byte("name: t\noperators:\n  - {uid: a, type: map, input: a, expr: '{\"x\": 1}'}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("---\n--- x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		job, err := Parse("fuzz.yaml", data)
		if err == nil {
			if job == nil {
				t.Fatal("nil job without error")
			}
			for _, op := range job.Operators {
				if op.Parallelism < 1 || (len(op.Inputs) == 0) != op.IsSource() {
					t.Fatalf("invalid operator %+v", op)
				}
			}
			return
		}
		if job != nil {
			t.Fatal("job with error")
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, "fuzz.yaml:") {
				t.Fatalf("error line %q lacks the file name", line)
			}
		}
	})
}

func TestParseMergeBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 {x: 1}\n")
	for i := 1; i < 7; i++ {
		b.WriteString("a" + strconv.Itoa(i) + ": &a" + strconv.Itoa(i) + " {<<: [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*a" + strconv.Itoa(i-1))
		}
		b.WriteString("]}\n")
	}
	b.WriteString("name: t\noperators:\n  - {<<: *a6, uid: s, type: sequence, keys: 1}\n  - {uid: p, type: print, input: s}\n")
	_, err := Parse("t.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), ": merge keys expand to too many fields\n") || strings.Contains(err.Error(), "deep") {
		t.Errorf("error %v", err)
	}
}
