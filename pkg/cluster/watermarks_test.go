package cluster_test

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
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

// windowSize is the event-time tumbling window of windowCount, in ms.
const windowSize = 100

// windowCount counts the records of each key per event-time tumbling window of
// windowSize ms, with one event-time timer per window: when the watermark passes the
// window's end, it emits "key end count early", early being 1 when a watermark before
// the final one fired it.
type windowCount struct {
	api.KeyedBase
	counts *api.MapState[int64, int64]
}

func (f *windowCount) Open(_ context.Context, kc *api.KeyedContext) error {
	f.counts = api.NewMapState(kc, "counts", api.Int64Codec{}, api.Int64Codec{})
	return nil
}

func (f *windowCount) Process(kc *api.KeyedContext, _ int64, _ rec, _ api.Emitter[string]) error {
	ts, ok := kc.Timestamp()
	if !ok {
		return fmt.Errorf("record without timestamp")
	}
	if ts <= kc.CurrentWatermark() {
		return fmt.Errorf("record at %d is late (watermark %d): sources emit in order", ts, kc.CurrentWatermark())
	}
	end := ts - ts%windowSize + windowSize - 1
	n, _, err := f.counts.Get(end)
	if err != nil {
		return err
	}
	if err := f.counts.Put(end, n+1); err != nil {
		return err
	}
	return kc.RegisterEventTimer(end)
}

func (f *windowCount) OnTimer(kc *api.KeyedContext, key int64, end int64, out api.Emitter[string]) error {
	wm := kc.CurrentWatermark()
	if wm < end {
		return fmt.Errorf("timer %d fired at watermark %d", end, wm)
	}
	n, _, err := f.counts.Get(end)
	if err != nil {
		return err
	}
	if err := f.counts.Delete(end); err != nil {
		return err
	}
	early := 0
	if wm < math.MaxInt64 {
		early = 1
	}
	out.Emit(fmt.Sprintf("%d %d %d %d", key, end, n, early))
	return nil
}

// lateTimers reports every record (with the watermark it met, and whether it is late)
// and registers an event-time timer at its timestamp; OnTimer reports the watermark
// that fired it.
type lateTimers struct{ api.KeyedBase }

func wmString(wm int64) string {
	switch wm {
	case math.MinInt64:
		return "-"
	case math.MaxInt64:
		return "max"
	}
	return strconv.FormatInt(wm, 10)
}

func (lateTimers) Process(kc *api.KeyedContext, key string, r tsEvent, out api.Emitter[string]) error {
	ts, _ := kc.Timestamp()
	kind := "rec"
	if ts <= kc.CurrentWatermark() {
		kind = "late"
	}
	out.Emit(fmt.Sprintf("%s %s %d wm %s", key, kind, ts, wmString(kc.CurrentWatermark())))
	return kc.RegisterEventTimer(ts)
}

func (lateTimers) OnTimer(kc *api.KeyedContext, key string, ts int64, out api.Emitter[string]) error {
	out.Emit(fmt.Sprintf("%s timer %d at %s", key, ts, wmString(kc.CurrentWatermark())))
	return nil
}

type tsEvent struct {
	Key string
	TS  int64
}

// eventList emits its events one per poll, then ends.
type eventList struct {
	api.Base
	events []tsEvent
}

func (s *eventList) Poll(out api.Emitter[tsEvent]) (api.PollResult, error) {
	if len(s.events) == 0 {
		return api.End, nil
	}
	out.Emit(s.events[0])
	s.events = s.events[1:]
	return api.More, nil
}

// punctuated emits the watermark ts-1 after every record: the watermarks are a pure
// function of the records, so the test's output is exact.
type punctuated struct{}

func (punctuated) OnEvent(_ tsEvent, ts int64, out api.WatermarkOutput) { out.EmitWatermark(ts - 1) }
func (punctuated) OnPeriodicEmit(api.WatermarkOutput)                   {}

func lineSink(out string) func() api.Sink[string] {
	return func() api.Sink[string] {
		return &file.TransactionalSink[string]{Dir: out, Format: func(dst []byte, s string) []byte { return append(dst, s...) }}
	}
}

func init() {
	api.Register("wm-window-count", "test job: event-time tumbling window counts over a keyBy", func(env *api.Env, a *api.Args) error {
		keys, perKey, out := a.Int("keys", 10), a.Int("per-key", 100), a.String("out", "")
		env.SetAutoWatermarkInterval(20 * time.Millisecond)
		ws := api.ForMonotonousTimestamps[rec]().WithTimestampAssigner(func(r rec, _ int64) int64 { return r.Seq * 10 })
		src := api.FromSourceWithWatermarks(env, func() api.Source[rec] {
			return &builtin.Sequence[rec]{Keys: keys, PerKey: int64(perKey), Rate: 2000, Make: func(k int, s int64) rec { return rec{Key: int64(k), Seq: s} }}
		}, ws).UID("seq").WithCodec(recCodec{})
		counts := api.ProcessKeyed(api.KeyBy(src, func(r rec) int64 { return r.Key }),
			func() api.KeyedProcessFunction[int64, rec, string] { return &windowCount{} }).UID("windows")
		api.SinkTo(counts, lineSink(out)).UID("sink")
		return nil
	})
	api.Register("wm-late-timers", "test job: late records and their event-time timers", func(env *api.Env, a *api.Args) error {
		out := a.String("out", "")
		env.SetAutoWatermarkInterval(0)
		events := []tsEvent{{"a", 100}, {"b", 100}, {"a", 200}, {"b", 200}, {"a", 50}, {"b", 300}, {"a", 300}}
		ws := api.ForGenerator(func() api.WatermarkGenerator[tsEvent] { return punctuated{} }).
			WithTimestampAssigner(func(e tsEvent, _ int64) int64 { return e.TS })
		src := api.FromSourceWithWatermarks(env, func() api.Source[tsEvent] { return &eventList{events: slices.Clone(events)} }, ws).
			UID("events").Parallelism(1)
		fired := api.ProcessKeyed(api.KeyBy(src, func(e tsEvent) string { return e.Key }),
			func() api.KeyedProcessFunction[string, tsEvent, string] { return lateTimers{} }).UID("timers")
		api.SinkTo(fired, lineSink(out)).UID("sink")
		return nil
	})
}

// readLines returns the committed lines of a file sink's directory grouped by their
// first field, each group in the order its subtask wrote it.
func readLines(t *testing.T, dir string) map[string][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "part-*"))
	if err != nil {
		t.Fatal(err)
	}
	// part-<subtask>-<token>-<n>: one subtask's files in the order it wrote them.
	num := func(f string, i int) int {
		p := strings.Split(filepath.Base(f), "-")
		n, _ := strconv.Atoi(p[i])
		return n
	}
	slices.SortFunc(files, func(a, b string) int {
		return cmp.Or(cmp.Compare(num(a, 1), num(b, 1)), cmp.Compare(num(a, 3), num(b, 3)))
	})
	got := map[string][]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if line != "" {
				key, _, _ := strings.Cut(line, " ")
				got[key] = append(got[key], line)
			}
		}
	}
	return got
}

// TestEventTimeWindows: two source subtasks with watermarks feed two keyed subtasks
// across a keyBy; every window's timer fires once, in order, with the exact count, as
// the watermark (the minimum over both sources) passes it, most before the end of input.
func TestEventTimeWindows(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 100 * time.Millisecond
	js := startCheckpointingCluster(t, cc)
	out := t.TempDir()
	const keys, perKey = 10, 100
	id := submit(t, js, "wm-window-count", 2, map[string]string{"keys": strconv.Itoa(keys), "per-key": strconv.Itoa(perKey), "out": out})
	st := waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	if st.GetRestarts() != 0 {
		t.Fatalf("the job restarted %d times: %s", st.GetRestarts(), st.GetFailure())
	}
	got := readLines(t, out)
	early := 0
	for k := 0; k < keys; k++ {
		// Record seq s (1..perKey) has timestamp 10s: window [0, 99] holds seq 1..9, the
		// next ones 10 records each, the last one seq 100 alone.
		var want []string
		for end := int64(windowSize - 1); end-windowSize < perKey*10; end += windowSize {
			n := 0
			for s := 1; s <= perKey; s++ {
				if ts := int64(s * 10); ts > end-windowSize && ts <= end {
					n++
				}
			}
			want = append(want, fmt.Sprintf("%d %d %d", k, end, n))
		}
		lines := got[strconv.Itoa(k)]
		var trimmed []string
		for _, l := range lines {
			trimmed = append(trimmed, l[:strings.LastIndexByte(l, ' ')])
			if strings.HasSuffix(l, " 1") {
				early++
			}
		}
		if !slices.Equal(trimmed, want) {
			t.Errorf("key %d: windows fired\n  %q\nwant\n  %q", k, trimmed, want)
		}
	}
	// The sources run for about half a second, emitting a watermark every 20 ms: most
	// windows fire on the way, not only at the final watermark.
	t.Logf("%d of %d windows fired before the end of input", early, keys*11)
	if early < keys*perKey/10/2 {
		t.Errorf("only %d windows fired before the end of input", early)
	}
}

// TestLateRecordTimers: a record behind the watermark is still processed, and the timer
// it registers for a time already passed fires at the next watermark, in timestamp
// order with the timers due then. One source subtask feeds two keyed subtasks, and its
// watermark follows every record, so each subtask's input is exact.
func TestLateRecordTimers(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 100 * time.Millisecond
	js := startCheckpointingCluster(t, cc)
	out := t.TempDir()
	id := submit(t, js, "wm-late-timers", 2, map[string]string{"out": out})
	waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 30*time.Second)
	got := readLines(t, out)
	want := map[string][]string{
		"a": {
			"a rec 100 wm -",
			"a rec 200 wm 99",
			"a timer 100 at 199",
			"a late 50 wm 199",
			"a timer 50 at 299",
			"a timer 200 at 299",
			"a rec 300 wm 299",
			"a timer 300 at max",
		},
		"b": {
			"b rec 100 wm 99",
			"b timer 100 at 199",
			"b rec 200 wm 199",
			"b rec 300 wm 199",
			"b timer 200 at 299",
			"b timer 300 at max",
		},
	}
	for k, w := range want {
		if !slices.Equal(got[k], w) {
			t.Errorf("key %s:\n  got  %q\n  want %q", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("keys %v, want a and b", slices.Sorted(maps.Keys(got)))
	}
}
