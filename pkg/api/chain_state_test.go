package api

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/heap"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// reportingFactory makes heap backends that report native metrics and restore
// statistics, as the RocksDB backend does.
type reportingFactory struct {
	metrics state.NativeMetrics
	restore state.RestoreStats
}

func (reportingFactory) Name() string { return "reporting" }

func (f reportingFactory) NewKeyed(opts state.KeyedOptions) (state.KeyedBackend, error) {
	b, err := heap.Factory{}.NewKeyed(opts)
	if err != nil {
		return nil, err
	}
	return &reportingBackend{KeyedBackend: b, f: f}, nil
}

type reportingBackend struct {
	state.KeyedBackend
	f      reportingFactory
	closed atomic.Bool
}

// Restore restores nothing: the test checks what the chain does around it.
func (b *reportingBackend) Restore(context.Context, []*sluicev1.KeyedStateHandle, state.StateReader) error {
	return nil
}

func (b *reportingBackend) LastRestore() state.RestoreStats { return b.f.restore }

func (b *reportingBackend) NativeMetrics() state.NativeMetrics {
	if b.closed.Load() {
		return state.NativeMetrics{}
	}
	return b.f.metrics
}

func (b *reportingBackend) Close() error {
	b.closed.Store(true)
	return b.KeyedBackend.Close()
}

// TestChainStateReports: a keyed chain exposes its backends' native metrics and what
// their restore read, on any goroutine; OnRestore hears of a restore once; the metrics
// end with Close, the restore statistics stay.
func TestChainStateReports(t *testing.T) {
	ctx := context.Background()
	env := NewEnv("reports", quiet())
	src := FromSource(env, func() Source[tsRec] { return nopSource[tsRec]{} })
	fired := ProcessKeyed(KeyBy(src, func(r tsRec) string { return r.Key }),
		func() KeyedProcessFunction[string, tsRec, string] { return &adaptTimerLog{timerLog{t: t}} })
	var got []string
	SinkTo(fired, func() Sink[string] { return &collectSink{got: &got} })
	prog, err := env.Compile()
	if err != nil {
		t.Fatal(err)
	}
	vx := prog.Plan.Vertices[1]
	metrics := state.NativeMetrics{Backends: 1, EstimatedKeys: 42, LiveSSTBytes: 1000, BlockCacheCapacity: 1 << 20}
	rs := state.RestoreStats{LocalBytes: 10, RemoteBytes: 20, LocalCheckpointID: 7, Fallback: "000042.sst: checksum mismatch"}
	restore := map[string]*sluicev1.OperatorRestore{vx.Operators[0]: {Uid: vx.Operators[0], Keyed: []*sluicev1.KeyedStateHandle{{}}}}

	tests := []struct {
		name        string
		factory     state.Factory
		restore     map[string]*sluicev1.OperatorRestore
		wantMetrics bool
		wantRestore bool
	}{
		{"reporting backend, fresh", reportingFactory{metrics: metrics, restore: rs}, nil, true, false},
		{"reporting backend, restored", reportingFactory{metrics: metrics, restore: rs}, restore, true, true},
		{"heap backend, restored", heap.Factory{}, map[string]*sluicev1.OperatorRestore{vx.Operators[0]: {Uid: vx.Operators[0]}}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var heard []state.RestoreStats
			c, err := prog.NewChain(ChainSpec{Vertex: vx, Log: quiet(), State: tt.factory, LocalDir: t.TempDir(),
				Restore: tt.restore, RestoredCheckpoint: 7, OnRestore: func(s state.RestoreStats) { heard = append(heard, s) }})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := c.StateMetrics(); ok {
				t.Fatal("state metrics before Open")
			}
			if err := c.Open(ctx); err != nil {
				t.Fatal(err)
			}
			// The heartbeat reads from another goroutine, also while the chain closes.
			var wg sync.WaitGroup
			stop := make(chan struct{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
						c.StateMetrics()
						c.RestoreStats()
					}
				}
			}()
			m, ok := c.StateMetrics()
			if ok != tt.wantMetrics || ok && m != metrics {
				t.Errorf("state metrics %+v %v, want %v", m, ok, tt.wantMetrics)
			}
			r, ok := c.RestoreStats()
			if ok != tt.wantRestore || ok && r != rs {
				t.Errorf("restore stats %+v %v, want %v", r, ok, tt.wantRestore)
			}
			if tt.wantRestore && (len(heard) != 1 || heard[0] != rs) || !tt.wantRestore && len(heard) > 0 {
				t.Errorf("OnRestore heard %+v", heard)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			close(stop)
			wg.Wait()
			if m, ok := c.StateMetrics(); ok {
				t.Errorf("state metrics after Close: %+v", m)
			}
			if _, ok := c.RestoreStats(); ok != tt.wantRestore {
				t.Errorf("restore stats after Close: %v, want %v", ok, tt.wantRestore)
			}
		})
	}
}

// TestAddRestore: the restores of a subtask's backends sum; the first fallback reason
// and the newest local checkpoint are kept.
func TestAddRestore(t *testing.T) {
	got := addRestore(addRestore(state.RestoreStats{}, state.RestoreStats{LocalBytes: 1, RemoteBytes: 2, LocalCheckpointID: 5}),
		state.RestoreStats{LocalBytes: 3, RemoteBytes: 4, Fallback: "no local copy of checkpoint 6"})
	got = addRestore(got, state.RestoreStats{Fallback: "later"})
	want := state.RestoreStats{LocalBytes: 4, RemoteBytes: 6, LocalCheckpointID: 5, Fallback: "no local copy of checkpoint 6"}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
