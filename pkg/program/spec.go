package program

import (
	"log/slog"

	"github.com/sluice-stream/sluice/pkg/api"
)

// CompileSpec compiles a YAML job spec (read from filename, for error messages).
func CompileSpec(filename string, data []byte, parallelism int, log *slog.Logger) (*api.Program, error) {
	if SpecCompiler == nil {
		return nil, errSpecMissing
	}
	return SpecCompiler(filename, data, parallelism, log)
}
