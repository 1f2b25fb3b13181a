// Package program compiles a JobGraph's program descriptor into the typed operators that
// run it: a registered Go job is rebuilt by name, a spec is compiled from its text.
// Every process compiles the same descriptor to the same graph.
package program

import (
	"errors"
	"log/slog"

	"github.com/sluice-stream/sluice/pkg/api"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// SpecCompiler compiles a spec's YAML; it is set by the spec compiler's package so this
// package does not depend on it.
var SpecCompiler func(filename string, yaml []byte, parallelism int, log *slog.Logger) (*api.Program, error)

// Compile builds the typed program that p describes.
func Compile(p *sluicev1.Program, log *slog.Logger) (*api.Program, error) {
	switch k := p.GetKind().(type) {
	case *sluicev1.Program_Registered:
		return api.BuildRegistered(k.Registered.GetName(), k.Registered.GetArgs(), int(p.GetParallelism()), log)
	case *sluicev1.Program_SpecYaml:
		return CompileSpec("spec.yaml", []byte(k.SpecYaml), int(p.GetParallelism()), log)
	default:
		return nil, errors.New("job graph has no program")
	}
}
