package cluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/connectors/builtin"
	"github.com/sluice-stream/sluice/pkg/connectors/file"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// timerFn registers, for the first record of every key, a processing-time timer 30 ms
// later and an event-time timer (which fires at the end of input, the final watermark).
type timerFn struct {
	api.KeyedBase
	seen *api.ValueState[int64]
}

func (f *timerFn) Open(_ context.Context, kc *api.KeyedContext) error {
	f.seen = api.NewValueState(kc, "seen", api.Int64Codec{})
	return nil
}

func (f *timerFn) Process(kc *api.KeyedContext, _ int64, r rec, _ api.Emitter[rec]) error {
	if _, ok, err := f.seen.Value(); err != nil || ok {
		return err
	}
	if err := f.seen.Update(1); err != nil {
		return err
	}
	if err := kc.RegisterProcessingTimer(time.Now().Add(30 * time.Millisecond).UnixMilli()); err != nil {
		return err
	}
	return kc.RegisterEventTimer(1000 + r.Key)
}

// OnTimer emits (key, -1, 0) for a processing-time timer, (key, -2, ts) for an event one.
func (f *timerFn) OnTimer(_ *api.KeyedContext, key int64, ts int64, out api.Emitter[rec]) error {
	if ts >= 1000 && ts < 2000 {
		out.Emit(rec{Key: key, Seq: -2, Count: ts})
		return nil
	}
	out.Emit(rec{Key: key, Seq: -1})
	return nil
}

func init() {
	api.Register("timer-count", "test job with timers", func(env *api.Env, a *api.Args) error {
		keys, out := a.Int("keys", 10), a.String("out", "")
		src := api.FromSource(env, func() api.Source[rec] {
			return &builtin.Sequence[rec]{Keys: keys, PerKey: 50, Rate: 1000, Make: func(k int, s int64) rec { return rec{Key: int64(k), Seq: s} }}
		}).UID("seq").WithCodec(recCodec{})
		fired := api.ProcessKeyed(api.KeyBy(src, func(r rec) int64 { return r.Key }),
			func() api.KeyedProcessFunction[int64, rec, rec] { return &timerFn{} }).UID("timers").WithCodec(recCodec{})
		api.SinkTo(fired, func() api.Sink[rec] {
			return &file.TransactionalSink[rec]{Dir: out, Format: func(dst []byte, r rec) []byte {
				dst = strconv.AppendInt(dst, r.Key, 10)
				dst = append(dst, ',')
				dst = strconv.AppendInt(dst, r.Seq, 10)
				dst = append(dst, ',')
				return strconv.AppendInt(dst, r.Count, 10)
			}}
		}).UID("sink")
		return nil
	})
}

func TestTimersFire(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 100 * time.Millisecond
	js := startCheckpointingCluster(t, cc)
	out := t.TempDir()
	id := submit(t, js, "timer-count", 2, map[string]string{"keys": "10", "out": out})
	waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 30*time.Second)
	files, _ := filepath.Glob(filepath.Join(out, "part-*"))
	proc, event := map[string]int{}, map[string]int{}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Fields(string(b)) {
			p := strings.Split(line, ",")
			switch p[1] {
			case "-1":
				proc[p[0]]++
			case "-2":
				k, _ := strconv.Atoi(p[0])
				if p[2] != strconv.Itoa(1000+k) {
					t.Errorf("event timer of key %d fired with ts %s", k, p[2])
				}
				event[p[0]]++
			}
		}
	}
	for k := 0; k < 10; k++ {
		key := strconv.Itoa(k)
		if proc[key] != 1 || event[key] != 1 {
			t.Errorf("key %d: %d processing-time and %d event-time timers fired, want 1 each", k, proc[key], event[key])
		}
	}
}
