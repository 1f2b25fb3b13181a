package program

import (
	"log/slog"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/spec"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// CompileSpec compiles a YAML job spec (filename is for error messages). The program's
// graph carries the spec text, so task managers compile exactly the same spec.
func CompileSpec(filename string, data []byte, d api.Defaults, log *slog.Logger) (*api.Program, error) {
	prog, err := spec.Compile(filename, data, d, log)
	if err != nil {
		return nil, err
	}
	prog.Graph.Program = &sluicev1.Program{Kind: &sluicev1.Program_SpecYaml{SpecYaml: string(data)}, Parallelism: int32(d.Parallelism), MaxParallelism: int32(d.MaxParallelism)}
	return prog, nil
}
