package spec

import (
	"bytes"
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sluice-stream/sluice/pkg/keygroup"
)

// Parse decodes and validates the spec in data; filename only labels errors. On
// failure it returns a nil Job and every problem found, joined with errors.Join and
// sorted by position, each one line "filename:line: message" (see Error, Errors).
// Expressions are compiled here, so a returned Job's expressions are ready to Clone
// and evaluate.
func Parse(filename string, data []byte) (*Job, error) {
	p := &parser{file: filename}
	var job *Job
	if root := p.decode(data); root != nil {
		job = p.job(root)
	}
	if len(p.errs) > 0 {
		return nil, p.joined()
	}
	return job, nil
}

var uidPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

var (
	jobFields    = []string{"name", "parallelism", "maxParallelism", "operators"}
	commonFields = []string{"uid", "name", "type", "parallelism", "partition"}
	inputFields  = []string{"input", "inputs"}
	typeFields   = map[Type][]string{
		TypeSequence:  slices.Concat(commonFields, []string{"keys", "perKey", "rate"}),
		TypeFile:      slices.Concat(commonFields, inputFields, []string{"path", "format", "fields"}),
		TypeMap:       slices.Concat(commonFields, inputFields, []string{"expr"}),
		TypeFilter:    slices.Concat(commonFields, inputFields, []string{"expr"}),
		TypeAggregate: slices.Concat(commonFields, inputFields, []string{"keyBy", "function", "field", "as"}),
		TypePrint:     slices.Concat(commonFields, inputFields),
		TypeBlackhole: slices.Concat(commonFields, inputFields),
	}
	typeNames      = []string{"sequence", "file", "map", "filter", "aggregate", "print", "blackhole"}
	partitionNames = []string{"forward", "rebalance", "broadcast"}
	formatNames    = []string{"json", "csv"}
	functionNames  = []string{"count", "sum", "min", "max"}
)

type parser struct {
	file string
	errs []*Error
	// mergeWork counts the entries merge keys have expanded, bounding documents
	// whose merges nest aliases exponentially.
	mergeWork int
}

const maxMergeWork = 100_000

func (p *parser) errorAt(line, col int, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: max(line, 1), Column: col, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	p.errorAt(n.Line, n.Column, format, args...)
}

// joined sorts the errors by position, drops repeats and joins them.
func (p *parser) joined() error {
	slices.SortStableFunc(p.errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	errs := make([]error, 0, len(p.errs))
	for i, e := range p.errs {
		if i > 0 && e.Line == p.errs[i-1].Line && e.Msg == p.errs[i-1].Msg {
			continue
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlError records a YAML syntax error.
func (p *parser) yamlError(err error) {
	msg := oneLine(err.Error())
	line := 1
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		if l, err := strconv.Atoi(m[1]); err == nil {
			line = l
		}
		msg = m[2]
	}
	p.errorAt(line, 0, "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}

// decodeYAML runs the YAML decoder, turning a panic inside it into an error.
func decodeYAML(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: %v", r)
		}
	}()
	return dec.Decode(n)
}

// decode parses data into its root mapping, or records why not and returns nil.
func (p *parser) decode(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := decodeYAML(dec, &doc); err != nil {
		if err == io.EOF {
			p.errorAt(1, 0, "empty spec")
		} else {
			p.yamlError(err)
		}
		return nil
	}
	var extra yaml.Node
	switch err := decodeYAML(dec, &extra); {
	case err == io.EOF:
	case err != nil:
		p.yamlError(err)
		return nil
	default:
		line := extra.Line
		if len(extra.Content) > 0 {
			line = extra.Content[0].Line
		}
		p.errorAt(line, 0, "a spec is a single YAML document, found a second one")
		return nil
	}
	root := &doc
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			p.errorAt(doc.Line, 0, "empty spec")
			return nil
		}
		root = doc.Content[0]
	}
	n := deref(root)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		p.errorAt(root.Line, 0, "empty spec")
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(root, "spec must be a mapping, got %s", describeNode(n))
		return nil
	}
	return n
}

// deref follows aliases to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 32; i++ {
		n = n.Alias
	}
	return n
}

// describeNode renders a node's value for "got ..." in messages.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:37] + "..."
		}
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!bool", "!!int", "!!float":
			return v
		}
		return strconv.Quote(v)
	}
	return "an unresolved alias"
}

// field is one mapping entry.
type field struct {
	name     string
	key, val *yaml.Node
}

// fields returns the entries of mapping n in order with merge keys (<<) expanded,
// explicit entries first. It reports duplicate names and non-scalar names.
func (p *parser) fields(n *yaml.Node, depth int) []field {
	var out, merged []field
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		kd := deref(k)
		if kd.Kind == yaml.ScalarNode && (kd.ShortTag() == "!!merge" || (kd.Value == "<<" && kd.Style == 0)) {
			merged = append(merged, p.merge(v, depth)...)
			continue
		}
		if kd.Kind != yaml.ScalarNode {
			if depth == 0 {
				p.errorf(k, "field names must be strings, got %s", describeNode(kd))
			}
			continue
		}
		if first, ok := seen[kd.Value]; ok {
			if depth == 0 {
				p.errorf(k, "duplicate field %q (first at line %d)", kd.Value, first.Line)
			}
			continue
		}
		seen[kd.Value] = k
		out = append(out, field{kd.Value, k, v})
	}
	for _, f := range merged {
		if _, ok := seen[f.name]; !ok {
			seen[f.name] = f.key
			out = append(out, f)
		}
	}
	return out
}

// merge returns the entries a merge key's value contributes.
func (p *parser) merge(v *yaml.Node, depth int) []field {
	if depth >= 8 {
		p.errorf(v, "merge keys nested too deep")
		return nil
	}
	d := deref(v)
	if p.mergeWork += 1 + len(d.Content); p.mergeWork > maxMergeWork {
		if p.mergeWork-1-len(d.Content) <= maxMergeWork {
			p.errorf(v, "merge keys expand to too many fields")
		}
		return nil
	}
	switch d.Kind {
	case yaml.MappingNode:
		return p.fields(d, depth+1)
	case yaml.SequenceNode:
		var out []field
		for _, e := range d.Content {
			if deref(e).Kind != yaml.MappingNode {
				p.errorf(e, "a merge key takes a mapping or a list of mappings, got %s", describeNode(deref(e)))
				continue
			}
			out = append(out, p.fields(deref(e), depth+1)...)
		}
		return out
	}
	p.errorf(v, "a merge key takes a mapping or a list of mappings, got %s", describeNode(d))
	return nil
}

func (p *parser) unknownField(ctx string, f field, forType string, valid []string) {
	msg := fmt.Sprintf("%sunknown field %q%s", ctx, f.name, forType)
	if s := suggest(f.name, valid); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	p.errorf(f.key, "%s; valid fields: %s", msg, strings.Join(valid, ", "))
}

// str reads a string field. Any non-null scalar is accepted as its text.
func (p *parser) str(ctx string, f field) (string, bool) {
	d := deref(f.val)
	if d.Kind == yaml.ScalarNode && d.ShortTag() != "!!null" {
		return d.Value, true
	}
	p.errorf(f.val, "%s%s must be a string, got %s", ctx, f.name, describeNode(d))
	return "", false
}

// nonEmpty reads a string field that must not be empty.
func (p *parser) nonEmpty(ctx string, f field) (string, bool) {
	s, ok := p.str(ctx, f)
	if ok && s == "" {
		p.errorf(f.val, "%s%s must not be empty", ctx, f.name)
		return "", false
	}
	return s, ok
}

func (p *parser) integer(ctx string, f field) (int64, bool) {
	d := deref(f.val)
	if d.Kind == yaml.ScalarNode && d.ShortTag() == "!!int" {
		var v int64
		if err := d.Decode(&v); err == nil {
			return v, true
		}
		p.errorf(f.val, "%s%s is not a 64-bit integer: %s", ctx, f.name, describeNode(d))
		return 0, false
	}
	p.errorf(f.val, "%s%s must be an integer, got %s", ctx, f.name, describeNode(d))
	return 0, false
}

func (p *parser) number(ctx string, f field) (float64, bool) {
	d := deref(f.val)
	if d.Kind == yaml.ScalarNode && (d.ShortTag() == "!!int" || d.ShortTag() == "!!float") {
		var v float64
		if err := d.Decode(&v); err == nil {
			return v, true
		}
	}
	p.errorf(f.val, "%s%s must be a number, got %s", ctx, f.name, describeNode(d))
	return 0, false
}

// strList reads a list of non-empty strings, returning each element's node too.
func (p *parser) strList(ctx string, f field) ([]string, []*yaml.Node, bool) {
	d := deref(f.val)
	if d.Kind != yaml.SequenceNode {
		p.errorf(f.val, "%s%s must be a list, got %s", ctx, f.name, describeNode(d))
		return nil, nil, false
	}
	if len(d.Content) == 0 {
		p.errorf(f.val, "%s%s must not be empty", ctx, f.name)
		return nil, nil, false
	}
	out := make([]string, 0, len(d.Content))
	nodes := make([]*yaml.Node, 0, len(d.Content))
	seen := make(map[string]bool, len(d.Content))
	ok := true
	for _, e := range d.Content {
		s, good := p.nonEmpty(ctx, field{f.name + " element", e, e})
		if !good {
			ok = false
			continue
		}
		if seen[s] {
			p.errorf(e, "%s%s lists %q twice", ctx, f.name, s)
			ok = false
			continue
		}
		seen[s] = true
		out = append(out, s)
		nodes = append(nodes, e)
	}
	return out, nodes, ok
}

// job validates the root mapping.
func (p *parser) job(root *yaml.Node) *Job {
	job := &Job{Parallelism: 1}
	var nameSeen bool
	var parallelism, maxParallelism, opsKey, opsVal *yaml.Node
	for _, f := range p.fields(root, 0) {
		switch f.name {
		case "name":
			nameSeen = true
			job.Name, _ = p.nonEmpty("", f)
		case "parallelism":
			if v, ok := p.parallelism("", f); ok {
				job.Parallelism, parallelism = v, f.val
			}
		case "maxParallelism":
			if v, ok := p.integer("", f); ok {
				if v < keygroup.MinMaxParallelism || v > keygroup.UpperBound {
					p.errorf(f.val, "maxParallelism must be between %d and %d, got %d", keygroup.MinMaxParallelism, keygroup.UpperBound, v)
				} else {
					job.MaxParallelism, maxParallelism = int(v), f.val
				}
			}
		case "operators":
			opsKey, opsVal = f.key, f.val
		default:
			p.unknownField("", f, "", jobFields)
		}
	}
	if !nameSeen {
		p.errorf(root, `missing required field "name"`)
	}
	if maxParallelism != nil && parallelism != nil && job.Parallelism > job.MaxParallelism {
		p.errorf(parallelism, "parallelism %d exceeds maxParallelism %d", job.Parallelism, job.MaxParallelism)
	}
	if opsVal == nil {
		p.errorf(root, `missing required field "operators"`)
		return nil
	}
	list := deref(opsVal)
	if list.Kind != yaml.SequenceNode {
		p.errorf(opsVal, "operators must be a list, got %s", describeNode(list))
		return nil
	}
	if len(list.Content) == 0 {
		p.errorf(opsVal, "job has no operators")
		return nil
	}
	ops := make([]*opNode, 0, len(list.Content))
	for _, n := range list.Content {
		if d := deref(n); d.Kind != yaml.MappingNode {
			p.errorf(n, "an operator must be a mapping, got %s", describeNode(d))
			continue
		}
		ops = append(ops, p.operator(deref(n), n.Line, job))
	}
	job.Operators = p.graph(job, ops, opsKey)
	return job
}

// parallelism reads a parallelism field: 1..32768.
func (p *parser) parallelism(ctx string, f field) (int, bool) {
	v, ok := p.integer(ctx, f)
	switch {
	case !ok:
		return 0, false
	case v < 1:
		p.errorf(f.val, "%sparallelism must be >= 1, got %d", ctx, v)
		return 0, false
	case v > keygroup.UpperBound:
		p.errorf(f.val, "%sparallelism %d exceeds the maximum %d", ctx, v, keygroup.UpperBound)
		return 0, false
	}
	return int(v), true
}

// opNode is an operator being validated, with the nodes later checks point at.
type opNode struct {
	op        *Operator
	index     int
	typeKnown bool
	uid       *yaml.Node // uid value
	par       *yaml.Node // parallelism value, nil when inherited
	partition *yaml.Node // partition value
	inputKey  *yaml.Node // input or inputs key
	inputs    []*yaml.Node
}

func (o *opNode) ctx() string {
	if o.op.UID == "" {
		return "operator: "
	}
	return fmt.Sprintf("operator %q: ", o.op.UID)
}

// operator validates one operator mapping n, which starts at line.
func (p *parser) operator(n *yaml.Node, line int, job *Job) *opNode {
	o := &opNode{op: &Operator{Line: line, Parallelism: job.Parallelism}}
	op := o.op
	fs := p.fields(n, 0)
	byName := make(map[string]field, len(fs))
	for _, f := range fs {
		byName[f.name] = f
	}
	if f, ok := byName["uid"]; ok {
		if s, ok := p.str("operator: ", f); ok {
			op.UID, o.uid = s, f.val
			if !uidPattern.MatchString(s) {
				p.errorf(f.val, "invalid uid %q (must match [a-z0-9][a-z0-9._-]*)", s)
			}
		}
	} else {
		p.errorAt(line, n.Column, `operator is missing required field "uid"`)
	}
	ctx := o.ctx()
	if f, ok := byName["type"]; ok {
		if s, ok := p.str(ctx, f); ok {
			if _, known := typeFields[Type(s)]; known {
				op.Type, o.typeKnown = Type(s), true
			} else {
				msg := fmt.Sprintf("%sunknown type %q", ctx, s)
				if sg := suggest(s, typeNames); sg != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", sg)
				}
				p.errorf(f.val, "%s; valid types: %s", msg, strings.Join(typeNames, ", "))
			}
		}
	} else {
		p.errorAt(line, n.Column, `%smissing required field "type"`, ctx)
	}
	if !o.typeKnown {
		return o // the fields cannot be checked without the type
	}
	// A sequence lists no input fields but accepts them, to report "takes no input".
	valid := typeFields[op.Type]
	var (
		exprField, formatField, fieldsField field
		functionField, partitionField       field
		keyByField, asField                 field
		fields                              []string
		format                              Format
		fn                                  Function
		agg                                 AggregateSpec
		seq                                 SequenceSpec
		path                                string
		hasKeys, hasPath, hasFunction       bool
	)
	for _, f := range fs {
		if !slices.Contains(valid, f.name) && !(op.Type == TypeSequence && slices.Contains(inputFields, f.name)) {
			p.unknownField(ctx, f, " for type "+string(op.Type), valid)
			continue
		}
		switch f.name {
		case "uid", "type":
		case "name":
			op.Name, _ = p.nonEmpty(ctx, f)
		case "parallelism":
			if v, ok := p.parallelism(ctx, f); ok {
				op.Parallelism, o.par = v, f.val
			}
		case "partition":
			partitionField = f
			if s, ok := p.str(ctx, f); ok {
				if slices.Contains(partitionNames, s) {
					op.Partition, o.partition = Partition(s), f.val
				} else {
					msg := fmt.Sprintf("%sunknown partition %q", ctx, s)
					if sg := suggest(s, partitionNames); sg != "" {
						msg += fmt.Sprintf(" (did you mean %q?)", sg)
					}
					p.errorf(f.val, "%s; valid partitions: %s", msg, strings.Join(partitionNames, ", "))
				}
			}
		case "input", "inputs":
			if o.inputKey != nil {
				p.errorf(f.key, "%sinput and inputs are mutually exclusive", ctx)
				continue
			}
			o.inputKey = f.key
			if f.name == "input" {
				if s, ok := p.nonEmpty(ctx, f); ok {
					op.Inputs, o.inputs = []string{s}, []*yaml.Node{f.val}
				}
			} else {
				op.Inputs, o.inputs, _ = p.strList(ctx, f)
			}
		case "keys":
			hasKeys = true
			if v, ok := p.integer(ctx, f); ok {
				if v < 1 {
					p.errorf(f.val, "%skeys must be >= 1, got %d", ctx, v)
				}
				seq.Keys = v
			}
		case "perKey":
			if v, ok := p.integer(ctx, f); ok {
				if v < 0 {
					p.errorf(f.val, "%sperKey must be >= 0, got %d", ctx, v)
				}
				seq.PerKey = v
			}
		case "rate":
			if v, ok := p.number(ctx, f); ok {
				if !(v >= 0) || math.IsInf(v, 0) {
					p.errorf(f.val, "%srate must be a finite number >= 0, got %s", ctx, describeNode(deref(f.val)))
				}
				seq.Rate = v
			}
		case "path":
			hasPath = true
			path, _ = p.nonEmpty(ctx, f)
		case "format":
			formatField = f
			if s, ok := p.str(ctx, f); ok {
				if slices.Contains(formatNames, s) {
					format = Format(s)
				} else {
					p.errorf(f.val, "%sunknown format %q; valid formats: %s", ctx, s, strings.Join(formatNames, ", "))
				}
			}
		case "fields":
			fieldsField = f
			fields, _, _ = p.strList(ctx, f)
		case "expr":
			exprField = f
		case "keyBy":
			keyByField = f
			op.KeyBy, _ = p.nonEmpty(ctx, f)
		case "function":
			hasFunction, functionField = true, f
			if s, ok := p.str(ctx, f); ok {
				if slices.Contains(functionNames, s) {
					fn = Function(s)
				} else {
					msg := fmt.Sprintf("%sunknown function %q", ctx, s)
					if sg := suggest(s, functionNames); sg != "" {
						msg += fmt.Sprintf(" (did you mean %q?)", sg)
					}
					p.errorf(f.val, "%s; valid functions: %s", msg, strings.Join(functionNames, ", "))
				}
			}
		case "field":
			agg.Field, _ = p.nonEmpty(ctx, f)
		case "as":
			asField = f
			agg.As, _ = p.nonEmpty(ctx, f)
		}
	}
	missing := func(name string) { p.errorAt(line, n.Column, "%smissing required field %q", ctx, name) }
	switch op.Type {
	case TypeSequence:
		if !hasKeys {
			missing("keys")
		}
		op.Sequence = &seq
	case TypeFile:
		if !hasPath {
			missing("path")
		}
		file := &FileSpec{Path: path}
		switch {
		case o.inputKey == nil:
			for _, f := range []field{formatField, fieldsField} {
				if f.key != nil {
					p.errorf(f.key, "%s%s applies to a file sink only (a file operator with an input)", ctx, f.name)
				}
			}
		default:
			file.Format, file.Fields = cmp.Or(format, FormatJSON), fields
			if format == FormatCSV && fieldsField.key == nil {
				p.errorf(formatField.val, "%sformat csv requires fields", ctx)
			}
		}
		op.File = file
	case TypeMap, TypeFilter:
		if exprField.key == nil {
			missing("expr")
			break
		}
		src, ok := p.str(ctx, exprField)
		if !ok {
			break
		}
		compileFn := CompileMap
		if op.Type == TypeFilter {
			compileFn = CompileFilter
		}
		e, err := compileFn(src)
		if err != nil {
			var ee *ExprError
			if errors.As(err, &ee) {
				msg := ee.Msg
				if ee.Column > 0 {
					msg += fmt.Sprintf(" (expression column %d)", ee.Column)
				}
				p.errorAt(exprLine(deref(exprField.val), exprField.val.Line, ee.Line), exprField.val.Column, "%sexpr: %s", ctx, msg)
			} else {
				p.errorf(exprField.val, "%sexpr: %s", ctx, oneLine(err.Error()))
			}
			break
		}
		op.Expr = e
	case TypeAggregate:
		if keyByField.key == nil {
			missing("keyBy")
		}
		if !hasFunction {
			missing("function")
		} else if fn != "" && fn != FuncCount && agg.Field == "" {
			p.errorf(functionField.val, "%sfunction %s requires field", ctx, fn)
		}
		agg.Function = fn
		agg.As = cmp.Or(agg.As, string(fn))
		if op.KeyBy != "" && agg.As == op.KeyBy {
			at := keyByField.val
			if asField.key != nil {
				at = asField.val
			}
			p.errorf(at, "%sas %q would overwrite the keyBy field", ctx, agg.As)
		}
		if partitionField.key != nil {
			p.errorf(partitionField.key, "%skeyBy implies key-group partitioning and cannot be combined with partition", ctx)
			op.Partition, o.partition = "", nil
		}
		op.Aggregate = &agg
	}
	return o
}

// exprLine maps line l (1-based) of an expression to its spec line; the expression
// is the scalar n whose (possibly alias) value node starts at line.
func exprLine(n *yaml.Node, line, l int) int {
	if n.Style == yaml.LiteralStyle {
		return n.Line + l // the block's text starts below the | indicator
	}
	if n.Style == yaml.FoldedStyle {
		return n.Line + 1 // folding joins lines: the first is the best guess
	}
	return line
}

// graph checks uids, inputs, parallelism and partitions across operators and returns
// them in topological order.
func (p *parser) graph(job *Job, ops []*opNode, opsKey *yaml.Node) []*Operator {
	byUID := make(map[string]*opNode, len(ops))
	uids := make([]string, 0, len(ops))
	var nodes []*opNode // operators with a unique uid, in declaration order
	for _, o := range ops {
		if o.op.UID == "" {
			continue
		}
		if first, dup := byUID[o.op.UID]; dup {
			p.errorf(o.uid, "duplicate uid %q (first defined at line %d)", o.op.UID, first.uid.Line)
			continue
		}
		o.index = len(nodes)
		byUID[o.op.UID] = o
		uids = append(uids, o.op.UID)
		nodes = append(nodes, o)
	}
	allKnown, hasSink := true, false
	for _, o := range ops {
		op := o.op
		if op.Name == "" {
			op.Name = op.UID
		}
		if !o.typeKnown {
			allKnown = false
			continue
		}
		ctx := o.ctx()
		if isSink(op.Type, o.inputKey != nil) {
			hasSink = true
		}
		if job.MaxParallelism > 0 && o.par != nil && op.Parallelism > job.MaxParallelism {
			p.errorf(o.par, "%sparallelism %d exceeds maxParallelism %d", ctx, op.Parallelism, job.MaxParallelism)
		}
		switch {
		case op.Type == TypeSequence:
			if o.inputKey != nil {
				p.errorf(o.inputKey, "%sa sequence source takes no input", ctx)
			}
			if o.partition != nil {
				p.errorf(o.partition, "%sa source has no input to partition", ctx)
			}
			op.Inputs = nil
			continue
		case op.Type == TypeFile && o.inputKey == nil:
			if o.partition != nil {
				p.errorf(o.partition, "%sa source has no input to partition", ctx)
			}
			continue
		case o.inputKey == nil:
			p.errorAt(op.Line, 0, "%stype %s needs an input (input or inputs)", ctx, op.Type)
			continue
		}
		for i, in := range op.Inputs {
			up, ok := byUID[in]
			if !ok {
				msg := fmt.Sprintf("%sunknown input %q", ctx, in)
				if s := suggest(in, uids); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				p.errorf(o.inputs[i], "%s", msg)
				continue
			}
			if up.typeKnown && isSink(up.op.Type, up.inputKey != nil) {
				p.errorf(o.inputs[i], "%sinput %q is a %s sink, which has no output", ctx, in, up.op.Type)
				continue
			}
			part := PartitionForward
			switch {
			case op.KeyBy != "":
				part = PartitionKeyGroup
			case op.Partition != "":
				part = op.Partition
			case op.Parallelism != up.op.Parallelism:
				part = PartitionRebalance
			}
			if part == PartitionForward && o.partition != nil && op.Parallelism != up.op.Parallelism {
				p.errorf(o.partition, "%sforward partition needs equal parallelism, but %q has %d and its input %q has %d",
					ctx, op.UID, op.Parallelism, in, up.op.Parallelism)
			}
			op.InputPartitions = append(op.InputPartitions, part)
		}
	}
	if allKnown && !hasSink && len(ops) > 0 {
		p.errorf(opsKey, "job has no sink (a file operator with an input, print or blackhole)")
	}
	return p.order(nodes, byUID)
}

// order sorts the operators topologically, declaration order breaking ties, and
// reports a cycle if there is one.
func (p *parser) order(nodes []*opNode, byUID map[string]*opNode) []*Operator {
	indeg := make([]int, len(nodes))
	outs := make([][]int, len(nodes))
	ups := make([][]int, len(nodes))
	for _, o := range nodes {
		for _, in := range o.op.Inputs {
			if up, ok := byUID[in]; ok {
				indeg[o.index]++
				outs[up.index] = append(outs[up.index], o.index)
				ups[o.index] = append(ups[o.index], up.index)
			}
		}
	}
	ready := &intHeap{}
	for i, d := range indeg {
		if d == 0 {
			heap.Push(ready, i)
		}
	}
	sorted := make([]*Operator, 0, len(nodes))
	done := make([]bool, len(nodes))
	for ready.Len() > 0 {
		i := heap.Pop(ready).(int)
		done[i] = true
		sorted = append(sorted, nodes[i].op)
		for _, j := range outs[i] {
			if indeg[j]--; indeg[j] == 0 {
				heap.Push(ready, j)
			}
		}
	}
	if len(sorted) == len(nodes) {
		return sorted
	}
	// Every operator left has an input that is left too: walking upstream from one
	// must revisit an operator, closing a cycle.
	start := slices.Index(done, false)
	pos := map[int]int{}
	var path []int
	for cur := start; ; {
		if k, seen := pos[cur]; seen {
			path = path[k:]
			break
		}
		pos[cur] = len(path)
		path = append(path, cur)
		for _, u := range ups[cur] {
			if !done[u] {
				cur = u
				break
			}
		}
	}
	slices.Reverse(path) // data-flow order
	first := 0
	for k, i := range path {
		if nodes[i].op.Line < nodes[path[first]].op.Line {
			first = k
		}
	}
	names := make([]string, 0, len(path)+1)
	for k := range path {
		names = append(names, nodes[path[(first+k)%len(path)]].op.UID)
	}
	names = append(names, names[0])
	p.errorAt(nodes[path[first]].op.Line, 0, "operators form a cycle: %s", strings.Join(names, " -> "))
	return sorted
}

type intHeap []int

func (h intHeap) Len() int           { return len(h) }
func (h intHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h intHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *intHeap) Push(x any)        { *h = append(*h, x.(int)) }
func (h *intHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
