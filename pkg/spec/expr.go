package spec

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// ExprKind says what an expression must evaluate to.
type ExprKind uint8

const (
	// ExprMap expressions evaluate to a map, the new record (map operator).
	ExprMap ExprKind = iota + 1
	// ExprFilter expressions evaluate to a bool, whether to keep the record.
	ExprFilter
)

// Expr is a compiled expr-lang expression over one record: the record's fields are
// the expression's variables (a missing field reads as nil) and $env is the whole
// record.
//
// The compiled program is immutable and shared by clones, but an Expr also owns the
// virtual machine that evaluates it, so one Expr must not be evaluated by two
// goroutines at once: give each subtask its own Clone.
type Expr struct {
	src  string
	kind ExprKind
	prog *vm.Program
	vm   vm.VM
}

// ExprError is a compile error in an expression. Line and Column are 1-based
// positions inside the expression source (Column 0 when unknown).
type ExprError struct {
	Line, Column int
	Msg          string
}

func (e *ExprError) Error() string {
	if e.Column > 0 {
		return fmt.Sprintf("%s (expression line %d, column %d)", e.Msg, e.Line, e.Column)
	}
	return e.Msg
}

// CompileMap compiles the expression of a map operator. Its result must be a map;
// that is checked here when the type is known statically, else at evaluation.
// Errors are *ExprError.
func CompileMap(src string) (*Expr, error) { return compile(src, ExprMap) }

// CompileFilter compiles the expression of a filter operator. Its result must be a
// bool; that is checked here when the type is known statically, else at evaluation.
// Errors are *ExprError.
func CompileFilter(src string) (*Expr, error) { return compile(src, ExprFilter) }

func compile(src string, kind ExprKind) (*Expr, error) {
	if strings.TrimSpace(src) == "" {
		return nil, &ExprError{Line: 1, Msg: "empty expression"}
	}
	prog, err := compileProgram(src)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			return nil, &ExprError{Line: max(fe.Line, 1), Column: fe.Column + 1, Msg: oneLine(fe.Message)}
		}
		return nil, &ExprError{Line: 1, Msg: oneLine(err.Error())}
	}
	if t := prog.Node().Type(); t != nil && t.Kind() != reflect.Interface {
		switch {
		case kind == ExprMap && !(t.Kind() == reflect.Map && t.Key().Kind() == reflect.String):
			return nil, &ExprError{Line: 1, Msg: "expression must evaluate to a map, but its type is " + typeName(t)}
		case kind == ExprFilter && t.Kind() != reflect.Bool:
			return nil, &ExprError{Line: 1, Msg: "expression must evaluate to a bool, but its type is " + typeName(t)}
		}
	}
	return &Expr{src: src, kind: kind, prog: prog}, nil
}

// compileProgram guards against panics inside the expression compiler.
func compileProgram(src string) (prog *vm.Program, err error) {
	defer func() {
		if r := recover(); r != nil {
			prog, err = nil, fmt.Errorf("cannot compile expression: %v", r)
		}
	}()
	return expr.Compile(src, expr.Env(map[string]any{}), expr.AllowUndefinedVariables())
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "int"
	case reflect.Float32, reflect.Float64:
		return "float"
	case reflect.Slice, reflect.Array:
		return "list"
	case reflect.Map:
		return "map"
	}
	return t.String()
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// Source returns the expression text.
func (e *Expr) Source() string { return e.src }

// Kind returns what the expression evaluates to.
func (e *Expr) Kind() ExprKind { return e.kind }

// Clone returns an Expr sharing the compiled program with its own virtual machine.
func (e *Expr) Clone() *Expr { return &Expr{src: e.src, kind: e.kind, prog: e.prog} }

// run evaluates the program against r; panics in the VM become errors.
func (e *Expr) run(r Row) (out any, err error) {
	if r == nil {
		r = Row{}
	}
	out, err = e.vm.Run(e.prog, r)
	if err != nil {
		msg := err.Error()
		var fe *file.Error
		if errors.As(err, &fe) {
			msg = oneLine(fe.Message)
			if fe.Column >= 0 && fe.Snippet != "" {
				msg += fmt.Sprintf(" (expression line %d, column %d)", max(fe.Line, 1), fe.Column+1)
			}
		}
		return nil, fmt.Errorf("expression %q: %s", e.src, oneLine(msg))
	}
	return out, nil
}

// EvalMap evaluates a map expression against r and returns the new record, its
// numbers normalised to int64 and float64 (see Normalize). r must hold Row values
// only and is not modified; the result may share nested values with r, or be r
// itself (for the expression $env). A result that is not a map with string keys is
// an error.
func (e *Expr) EvalMap(r Row) (Row, error) {
	out, err := e.run(r)
	if err != nil {
		return nil, err
	}
	if m, ok := out.(map[string]any); ok {
		for k, v := range m {
			n, changed, err := normalize(v, 1)
			if err != nil {
				return nil, fmt.Errorf("expression %q: field %q: %v", e.src, k, err)
			}
			if changed {
				m[k] = n
			}
		}
		return m, nil
	}
	n, _, err := normalize(out, 0)
	if m, ok := n.(map[string]any); ok && err == nil && out != nil {
		return m, nil
	}
	return nil, fmt.Errorf("expression %q: result must be a map, got %s", e.src, describe(out))
}

// EvalBool evaluates a filter expression against r. A result that is not a bool
// (nil included) is an error.
func (e *Expr) EvalBool(r Row) (bool, error) {
	out, err := e.run(r)
	if err != nil {
		return false, err
	}
	b, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("expression %q: result must be a bool, got %s", e.src, describe(out))
	}
	return b, nil
}

func describe(v any) string {
	if v == nil {
		return "nil"
	}
	s := fmt.Sprint(v)
	if str, ok := v.(string); ok {
		s = strconv.Quote(str)
	}
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return typeName(reflect.TypeOf(v)) + " " + s
}
