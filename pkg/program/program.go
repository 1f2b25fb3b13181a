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

func defaults(p *sluicev1.Program) api.Defaults {
	return api.Defaults{Parallelism: int(p.GetParallelism()), MaxParallelism: int(p.GetMaxParallelism())}
}

// Compile builds the typed program that p describes.
func Compile(p *sluicev1.Program, log *slog.Logger) (*api.Program, error) {
	switch k := p.GetKind().(type) {
	case *sluicev1.Program_Registered:
		return api.BuildRegistered(k.Registered.GetName(), k.Registered.GetArgs(), defaults(p), log)
	case *sluicev1.Program_SpecYaml:
		return CompileSpec("spec.yaml", []byte(k.SpecYaml), defaults(p), log)
	default:
		return nil, errors.New("job graph has no program")
	}
}
