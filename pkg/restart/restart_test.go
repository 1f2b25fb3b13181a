package restart

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/config"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	_ Strategy = None{}
	_ Strategy = (*FixedDelay)(nil)
	_ Strategy = (*ExponentialDelay)(nil)
)

// t0 is the fake clock's origin; steps are offsets from it.
var t0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// step is one failure and the decision expected for it.
type step struct {
	at       time.Duration // failure time, from t0
	isNew    bool          // NotifyFailure's result
	canRetry bool          // CanRestart
	delay    time.Duration // Delay
}

func run(t *testing.T, s Strategy, steps []step) {
	t.Helper()
	for i, st := range steps {
		isNew := s.NotifyFailure(t0.Add(st.at))
		if isNew != st.isNew || s.CanRestart() != st.canRetry || s.Delay() != st.delay {
			t.Errorf("failure %d at %v: NotifyFailure = %v, CanRestart = %v, Delay = %v; want %v, %v, %v",
				i, st.at, isNew, s.CanRestart(), s.Delay(), st.isNew, st.canRetry, st.delay)
		}
	}
}

const (
	ms  = time.Millisecond
	sec = time.Second
)

func TestNone(t *testing.T) {
	s := None{}
	if s.Name() != "none" || s.CanRestart() || s.Delay() != 0 {
		t.Errorf("before failure: %v %v %v", s.Name(), s.CanRestart(), s.Delay())
	}
	run(t, s, []step{{0, true, false, 0}, {0, true, false, 0}, {time.Hour, true, false, 0}})
}

func TestFixedDelay(t *testing.T) {
	for _, tc := range []struct {
		name     string
		attempts int
		delay    time.Duration
		steps    []step
	}{
		{"attempts exhausted", 3, sec, []step{
			{0, true, true, sec},
			{2 * sec, true, true, sec},
			{10 * sec, true, true, sec},
			{time.Hour, true, false, sec}, // the 4th failure: no 4th restart
		}},
		{"no attempts", 0, sec, []step{{0, true, false, sec}}},
		{"failures during the delay are merged", 2, sec, []step{
			{0, true, true, sec},
			{500 * ms, false, true, sec},  // pending restart at 1 s
			{999 * ms, false, true, sec},  // still pending
			{sec, true, true, sec},        // the restarted job failed: 2nd restart
			{1500 * ms, false, true, sec}, // merged into the 2nd
			{3 * sec, true, false, sec},   // 3rd failure: exhausted
		}},
		{"zero delay counts every failure", 2, 0, []step{
			{0, true, true, 0}, {0, true, true, 0}, {0, true, false, 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewFixedDelay(tc.attempts, tc.delay)
			if err != nil {
				t.Fatal(err)
			}
			if s.Name() != "fixed-delay" || !s.CanRestart() && tc.attempts > 0 || s.Delay() != 0 {
				t.Errorf("before failure: %v %v %v", s.Name(), s.CanRestart(), s.Delay())
			}
			run(t, s, tc.steps)
		})
	}
	for _, bad := range []struct {
		attempts int
		delay    time.Duration
	}{{-1, sec}, {1, -1}} {
		if _, err := NewFixedDelay(bad.attempts, bad.delay); err == nil {
			t.Errorf("NewFixedDelay(%d, %v) succeeded", bad.attempts, bad.delay)
		}
	}
	s, _ := NewFixedDelay(3, sec)
	if got := s.String(); got != "fixed-delay(attempts=3, delay=1s)" {
		t.Errorf("String() = %q", got)
	}
}

// opts returns exponential-delay options without jitter; change what a test needs.
func opts() ExponentialDelayOptions {
	return ExponentialDelayOptions{
		InitialBackoff: sec, MaxBackoff: 10 * sec, BackoffMultiplier: 2,
		ResetBackoffThreshold: time.Minute, JitterFactor: 0, AttemptsBeforeResetBackoff: math.MaxInt32,
	}
}

func TestExponentialDelay(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  func(*ExponentialDelayOptions)
		steps []step
	}{
		{"growth and cap", nil, []step{
			// Each failure comes 1 s after the restart of the previous one.
			{0, true, true, 1 * sec},         // restart at 1 s
			{2 * sec, true, true, 2 * sec},   // restart at 4 s
			{5 * sec, true, true, 4 * sec},   // 9 s
			{10 * sec, true, true, 8 * sec},  // 18 s
			{19 * sec, true, true, 10 * sec}, // 16 s capped; 29 s
			{30 * sec, true, true, 10 * sec}, // stays at the cap
		}},
		{"fractional multiplier", func(o *ExponentialDelayOptions) { o.BackoffMultiplier = 1.5 }, []step{
			{0, true, true, sec}, {sec, true, true, 1500 * ms}, {3 * sec, true, true, 2250 * ms},
		}},
		{"multiplier 1 is a fixed delay", func(o *ExponentialDelayOptions) { o.BackoffMultiplier = 1 }, []step{
			{0, true, true, sec}, {sec, true, true, sec}, {2 * sec, true, true, sec},
		}},
		{"initial equals max", func(o *ExponentialDelayOptions) { o.MaxBackoff = sec }, []step{
			{0, true, true, sec}, {sec, true, true, sec},
		}},
		{"failures during the delay are merged", nil, []step{
			{0, true, true, sec},
			{999 * ms, false, true, sec}, // before the restart at 1 s
			{sec, true, true, 2 * sec},   // at the restart: a new attempt; restart at 3 s
			{2 * sec, false, true, 2 * sec},
			{3 * sec, true, true, 4 * sec},
		}},
		{"reset after the threshold", nil, []step{
			{0, true, true, sec},                                     // restart at 1 s
			{sec + time.Minute - 1, true, true, 2 * sec},             // ran 1 min - 1 ns: no reset; restart at 1 min + 3 s - 1 ns
			{time.Minute + 3*sec - 1 + time.Minute, true, true, sec}, // ran exactly 1 min: reset
			{3 * time.Minute, true, true, 2 * sec},                   // grows again
		}},
		{"attempts exhausted", func(o *ExponentialDelayOptions) { o.AttemptsBeforeResetBackoff = 2 }, []step{
			{0, true, true, sec},
			{sec, true, true, 2 * sec},
			{3 * sec, true, false, 4 * sec}, // 3rd failure: no 3rd restart
		}},
		{"attempts reset with the backoff", func(o *ExponentialDelayOptions) { o.AttemptsBeforeResetBackoff = 2 }, []step{
			{0, true, true, sec},
			{sec, true, true, 2 * sec},             // restart at 3 s
			{3*sec + time.Minute, true, true, sec}, // stable for the threshold: attempt 1 again
			{3*sec + time.Minute + sec, true, true, 2 * sec},
			{time.Hour, true, true, sec}, // reset again
			{time.Hour + sec, true, true, 2 * sec},
			{time.Hour + 3*sec, true, false, 4 * sec}, // exhausted
		}},
		{"single attempt", func(o *ExponentialDelayOptions) { o.AttemptsBeforeResetBackoff = 1 }, []step{
			{0, true, true, sec}, {sec, true, false, 2 * sec},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts()
			if tc.opts != nil {
				tc.opts(&o)
			}
			s, err := NewExponentialDelay(o)
			if err != nil {
				t.Fatal(err)
			}
			if s.Name() != "exponential-delay" || !s.CanRestart() || s.Delay() != 0 {
				t.Errorf("before failure: %v %v %v", s.Name(), s.CanRestart(), s.Delay())
			}
			run(t, s, tc.steps)
		})
	}
}

func TestExponentialDelayJitter(t *testing.T) {
	// Extreme draws of the random source hit the bounds exactly.
	for _, tc := range []struct {
		r      float64
		factor float64
		want   []time.Duration // for backoffs 1 s, 2 s, 4 s, 8 s, 10 s (capped)
	}{
		{0, 0.1, []time.Duration{900 * ms, 1800 * ms, 3600 * ms, 7200 * ms, 9 * sec}},
		{0.5, 0.1, []time.Duration{sec, 2 * sec, 4 * sec, 8 * sec, 10 * sec}},
		{1, 0.1, []time.Duration{1100 * ms, 2200 * ms, 4400 * ms, 8800 * ms, 10 * sec}}, // capped at max
		{0.75, 0.5, []time.Duration{1250 * ms, 2500 * ms, 5 * sec, 10 * sec, 10 * sec}},
		{0, 1, []time.Duration{0, 0, 0, 0, 0}},
		{-3, 0.1, []time.Duration{900 * ms, 1800 * ms, 3600 * ms, 7200 * ms, 9 * sec}}, // out-of-range draws are clamped
	} {
		o := opts()
		o.JitterFactor = tc.factor
		o.Rand = func() float64 { return tc.r }
		s, err := NewExponentialDelay(o)
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		for i, want := range tc.want {
			if !s.NotifyFailure(now) {
				t.Fatalf("r=%v: failure %d merged", tc.r, i)
			}
			if got := s.Delay(); got != want {
				t.Errorf("r=%v factor=%v: failure %d: delay %v, want %v", tc.r, tc.factor, i, got, want)
			}
			now = now.Add(s.Delay() + sec)
		}
	}

	// A seeded source: every delay is within the jitter of its backoff and at most the
	// max, both sides occur, and the same seed gives the same delays.
	newSeeded := func() *ExponentialDelay {
		o := opts()
		o.JitterFactor = 0.25
		o.MaxBackoff = time.Hour
		o.BackoffMultiplier = 1.1
		o.Rand = rand.New(rand.NewPCG(1, 2)).Float64
		s, err := NewExponentialDelay(o)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := newSeeded(), newSeeded()
	now, backoff := t0, float64(sec)
	below, above := 0, 0
	for i := range 200 {
		a.NotifyFailure(now)
		b.NotifyFailure(now)
		d := a.Delay()
		if d != b.Delay() {
			t.Fatalf("failure %d: same seed, delays %v and %v", i, d, b.Delay())
		}
		lo, hi := time.Duration(backoff*0.75), min(time.Duration(backoff*1.25), time.Hour)
		if d < lo-1 || d > hi+1 { // ±1 ns for rounding
			t.Fatalf("failure %d: delay %v outside [%v, %v]", i, d, lo, hi)
		}
		if float64(d) < backoff {
			below++
		} else if float64(d) > backoff {
			above++
		}
		backoff = min(backoff*1.1, float64(time.Hour))
		now = now.Add(d)
	}
	if below < 50 || above < 50 {
		t.Errorf("jitter one-sided: %d below, %d above the backoff", below, above)
	}

	// The default source works too.
	o := opts()
	o.JitterFactor = 0.5
	s, _ := NewExponentialDelay(o)
	s.NotifyFailure(t0)
	if d := s.Delay(); d < 500*ms || d > 1500*ms {
		t.Errorf("default random source: delay %v", d)
	}
}

// Extreme parameters neither overflow nor panic.
func TestExponentialDelayExtremes(t *testing.T) {
	o := opts()
	o.MaxBackoff = math.MaxInt64
	o.BackoffMultiplier = 1e300
	o.JitterFactor = 1
	o.Rand = func() float64 { return 0.9999999 }
	o.ResetBackoffThreshold = math.MaxInt64
	s, err := NewExponentialDelay(o)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	for i := range 5 {
		s.NotifyFailure(now)
		if d := s.Delay(); d < 0 || i > 0 && d != math.MaxInt64 {
			t.Fatalf("failure %d: delay %v", i, d)
		}
		now = now.Add(s.Delay()) // saturates at the end of time
	}
}

func TestNewExponentialDelayErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(*ExponentialDelayOptions)
		want string
	}{
		{"zero initial", func(o *ExponentialDelayOptions) { o.InitialBackoff = 0 }, "initial backoff must be positive"},
		{"max below initial", func(o *ExponentialDelayOptions) { o.MaxBackoff = 500 * ms }, "max backoff 500ms is less than the initial backoff 1s"},
		{"multiplier below 1", func(o *ExponentialDelayOptions) { o.BackoffMultiplier = 0.9 }, "backoff multiplier"},
		{"multiplier NaN", func(o *ExponentialDelayOptions) { o.BackoffMultiplier = math.NaN() }, "backoff multiplier"},
		{"multiplier Inf", func(o *ExponentialDelayOptions) { o.BackoffMultiplier = math.Inf(1) }, "backoff multiplier"},
		{"zero threshold", func(o *ExponentialDelayOptions) { o.ResetBackoffThreshold = 0 }, "reset threshold"},
		{"negative jitter", func(o *ExponentialDelayOptions) { o.JitterFactor = -0.1 }, "jitter factor"},
		{"jitter above 1", func(o *ExponentialDelayOptions) { o.JitterFactor = 1.5 }, "jitter factor"},
		{"jitter NaN", func(o *ExponentialDelayOptions) { o.JitterFactor = math.NaN() }, "jitter factor"},
		{"no attempts", func(o *ExponentialDelayOptions) { o.AttemptsBeforeResetBackoff = 0 }, "attempts before reset"},
	} {
		o := opts()
		tc.f(&o)
		if _, err := NewExponentialDelay(o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestFromConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    map[string]string
		want string // String() of the strategy
	}{
		{"default", nil, "fixed-delay(attempts=3, delay=1s)"},
		{"none", map[string]string{"restart-strategy.type": "none"}, "none"},
		{"legacy", map[string]string{"restart-strategy": "off"}, "none"},
		{"fixed-delay", map[string]string{"restart-strategy.type": "fixeddelay",
			"restart-strategy.fixed-delay.attempts": "10", "restart-strategy.fixed-delay.delay": "5 s"},
			"fixed-delay(attempts=10, delay=5s)"},
		{"exponential-delay defaults", map[string]string{"restart-strategy.type": "exponential-delay"},
			"exponential-delay(initial-backoff=1s, max-backoff=1m0s, multiplier=2, reset-threshold=1h0m0s, jitter=0.1, attempts=2147483647)"},
		{"exponential-delay", map[string]string{"restart-strategy.type": "exponential-delay",
			"restart-strategy.exponential-delay.initial-backoff":               "100 ms",
			"restart-strategy.exponential-delay.max-backoff":                   "2 s",
			"restart-strategy.exponential-delay.backoff-multiplier":            "1.5",
			"restart-strategy.exponential-delay.reset-backoff-threshold":       "10 min",
			"restart-strategy.exponential-delay.jitter-factor":                 "0",
			"restart-strategy.exponential-delay.attempts-before-reset-backoff": "5"},
			"exponential-delay(initial-backoff=100ms, max-backoff=2s, multiplier=1.5, reset-threshold=10m0s, jitter=0, attempts=5)"},
	} {
		c, err := config.FromMap(tc.m)
		if err != nil {
			t.Fatal(err)
		}
		s, err := FromConfig(c)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := s.(interface{ String() string }).String(); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
		if want := c.String(config.RestartStrategyType); s.Name() != want {
			t.Errorf("%s: Name() = %q, want %q", tc.name, s.Name(), want)
		}
	}

	// A nil Config is all defaults.
	if s, err := FromConfig(nil); err != nil || s.Name() != TypeFixedDelay {
		t.Errorf("FromConfig(nil) = %v, %v", s, err)
	}

	// Every value the key accepts has a strategy.
	k, _ := config.Lookup(config.RestartStrategyType)
	for _, typ := range k.Enum {
		c := config.New()
		if err := c.Set(config.RestartStrategyType, typ); err != nil {
			t.Fatal(err)
		}
		if s, err := FromConfig(c); err != nil || s.Name() != typ {
			t.Errorf("FromConfig(%s) = %v, %v", typ, s, err)
		}
	}

	c, _ := config.FromMap(map[string]string{"restart-strategy.type": "exponential-delay",
		"restart-strategy.exponential-delay.initial-backoff": "2 min"})
	if _, err := FromConfig(c); err == nil || err.Error() != "restart-strategy.exponential-delay.initial-backoff (2m0s) must not exceed restart-strategy.exponential-delay.max-backoff (1m0s)" {
		t.Errorf("initial > max: %v", err)
	}
}
