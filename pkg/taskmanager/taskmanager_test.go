package taskmanager

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	_ "github.com/sluice-stream/sluice/examples/jobs"
	"github.com/sluice-stream/sluice/pkg/api"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/protobuf/proto"
)

func deployReq(t *testing.T, mutate func(*sluicev1.JobGraph)) *sluicev1.DeployTaskRequest {
	t.Helper()
	prog, err := api.BuildRegistered("keyed-count", map[string]string{"keys": "4", "per-key": "1", "out": t.TempDir()}, api.Defaults{Parallelism: 1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	g := proto.Clone(prog.Graph).(*sluicev1.JobGraph)
	mutate(g)
	return &sluicev1.DeployTaskRequest{
		Execution: &sluicev1.ExecutionId{JobId: "j", Attempt: 1, Vertex: 0, Subtask: 0},
		JobGraph:  g, Parallelism: 1,
		Outputs: []*sluicev1.OutputDeployment{{Edge: 0, ConsumerParallelism: 1}},
	}
}

// TestRefusesMismatchedBuildOrOperators: a task manager never runs a job compiled by
// another build or whose operators differ from the ones it registers.
func TestRefusesMismatchedBuildOrOperators(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*sluicev1.JobGraph)
		want   string
	}{
		{"other build", func(g *sluicev1.JobGraph) { g.BuildId = "0123456789ab" }, "compiled by build 0123456789ab"},
		{"renamed operator", func(g *sluicev1.JobGraph) {
			g.Operators[1].Uid = "counter-v2"
			g.Edges[0].TargetUid = "counter-v2"
			g.Edges[1].SourceUid = "counter-v2"
		}, "does not match the operators"},
		{"other record type", func(g *sluicev1.JobGraph) { g.Operators[0].OutType = "string" }, "does not match the operators"},
		{"unknown job", func(g *sluicev1.JobGraph) { g.Program.GetRegistered().Name = "no-such-job" }, `no job named "no-such-job"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tm := New(Config{ID: "tm-test", JobManager: "127.0.0.1:1"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			tm.base = context.Background()
			defer tm.xclient.Close()
			_, err := tm.DeployTask(context.Background(), deployReq(t, tt.mutate))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DeployTask error = %v, want it to contain %q", err, tt.want)
			}
			if len(tm.tasks) != 0 || tm.reg.Len() != 0 {
				t.Fatalf("refused deployment left %d tasks and %d channels behind", len(tm.tasks), tm.reg.Len())
			}
		})
	}
}
