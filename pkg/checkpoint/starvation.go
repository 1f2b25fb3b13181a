package checkpoint

// Compaction starvation: RocksDB's background compaction falls behind the writes. Its
// estimate of the bytes compaction still has to rewrite (pending compaction bytes)
// then grows without bound until RocksDB slows, and finally stops, writes; meanwhile
// every incremental checkpoint uploads more, since the many small files flushed to
// level 0 are rewritten again and again. StarvationDetector watches the two series at
// each completed checkpoint and says when the trend starts and when it ends.
//
// The rule, over the window of the last Window samples (positions 0..Window-1; the
// checkpoints of one job are about evenly spaced in time):
//
//   - Onset, when every one of these holds:
//     1. the pending compaction bytes rose at every step of the window but at most
//     one (one dip or plateau of noise is tolerated, a single jump is not a trend);
//     2. their least-squares line rises by at least MinGrowth of its start value over
//     the window (from a start at or below zero, any rise);
//     3. the newest pending compaction bytes are at least MinPendingBytes (a growing
//     but small debt is no concern);
//     4. the incremental sizes' least-squares slope is positive.
//   - End, once the pending compaction bytes stop growing: their least-squares slope
//     over the window is no longer positive, or the newest are below MinPendingBytes.
//     The incremental sizes do not matter for the end, so that a warning does not
//     flap with their noise.
//
// Like the Coordinator it is a pure state machine: no I/O, no goroutines, no clock.
// It is not safe for concurrent use.

// StarvationConfig tunes a StarvationDetector; zero fields take the defaults.
type StarvationConfig struct {
	// Window is the number of consecutive samples a trend is judged over (default 5,
	// at least 3).
	Window int
	// MinGrowth is the least rise of the pending compaction bytes over the window, as a
	// fraction of the start of their least-squares line (default 0.25).
	MinGrowth float64
	// MinPendingBytes: pending compaction bytes below this never raise the warning
	// (default 64 MiB).
	MinPendingBytes int64
}

// Defaults of StarvationConfig.
const (
	DefaultStarvationWindow          = 5
	DefaultStarvationMinGrowth       = 0.25
	DefaultStarvationMinPendingBytes = 64 << 20
)

func (c StarvationConfig) withDefaults() StarvationConfig {
	if c.Window <= 0 {
		c.Window = DefaultStarvationWindow
	}
	c.Window = max(c.Window, 3)
	if c.MinGrowth <= 0 {
		c.MinGrowth = DefaultStarvationMinGrowth
	}
	if c.MinPendingBytes <= 0 {
		c.MinPendingBytes = DefaultStarvationMinPendingBytes
	}
	return c
}

// StarvationSample is one completed checkpoint as the detector sees it.
type StarvationSample struct {
	CheckpointID int64
	// PendingCompactionBytes summed over the job's subtasks, as they acknowledged the
	// checkpoint.
	PendingCompactionBytes int64
	// IncrementalBytes is what the checkpoint uploaded.
	IncrementalBytes int64
}

// Starvation is the detector's state after a sample.
type Starvation struct {
	// Active: the warning holds. Onset: it started with this sample; Ended: it ended
	// with this sample (Active is then false).
	Active bool
	Onset  bool
	Ended  bool
	// Since is the checkpoint whose sample raised the warning (while Active, and in the
	// sample that ended it).
	Since int64
	// First and Last are the oldest and newest samples of the window judged (zero
	// before the window is full).
	First, Last StarvationSample
}

// StarvationDetector tells when compaction falls behind (see the rule above). Feed it
// every completed incremental checkpoint in order with Observe; Reset when the
// backends start anew (a restore).
type StarvationDetector struct {
	cfg    StarvationConfig
	window []StarvationSample // the last Window samples, oldest first
	active bool
	since  int64
}

// NewStarvationDetector returns a detector without samples.
func NewStarvationDetector(cfg StarvationConfig) *StarvationDetector {
	return &StarvationDetector{cfg: cfg.withDefaults()}
}

// Config returns the configuration in use, defaults applied.
func (d *StarvationDetector) Config() StarvationConfig { return d.cfg }

// Observe takes the sample of a completed checkpoint and returns the state after it.
// A sample whose checkpoint is not newer than the last one taken is ignored.
func (d *StarvationDetector) Observe(s StarvationSample) Starvation {
	if n := len(d.window); n > 0 && s.CheckpointID <= d.window[n-1].CheckpointID {
		return d.State()
	}
	d.window = append(d.window, s)
	if len(d.window) > d.cfg.Window {
		d.window = d.window[len(d.window)-d.cfg.Window:]
	}
	if len(d.window) < d.cfg.Window {
		return d.State()
	}
	pending := make([]float64, len(d.window))
	incremental := make([]float64, len(d.window))
	for i, w := range d.window {
		pending[i], incremental[i] = float64(w.PendingCompactionBytes), float64(w.IncrementalBytes)
	}
	pSlope, pStart := fitLine(pending)
	last := d.window[len(d.window)-1]
	high := last.PendingCompactionBytes >= d.cfg.MinPendingBytes
	onset, ended, since := false, false, d.since
	switch {
	case d.active && (pSlope <= 0 || !high):
		ended = true
		d.active, d.since = false, 0
	case !d.active && high && risingSteps(pending) >= len(pending)-2 &&
		grew(pSlope, pStart, len(pending), d.cfg.MinGrowth) && slope(incremental) > 0:
		onset = true
		d.active, d.since = true, last.CheckpointID
		since = d.since
	}
	st := d.State()
	st.Onset, st.Ended, st.Since = onset, ended, since
	return st
}

// State returns the current state (Onset and Ended false).
func (d *StarvationDetector) State() Starvation {
	st := Starvation{Active: d.active, Since: d.since}
	if len(d.window) == d.cfg.Window {
		st.First, st.Last = d.window[0], d.window[len(d.window)-1]
	}
	return st
}

// Reset forgets the samples and ends a warning without saying so: the series start
// anew (the backends restored into new instances).
func (d *StarvationDetector) Reset() {
	d.window, d.active, d.since = nil, false, 0
}

// risingSteps counts the steps of ys that rise strictly.
func risingSteps(ys []float64) int {
	n := 0
	for i := 1; i < len(ys); i++ {
		if ys[i] > ys[i-1] {
			n++
		}
	}
	return n
}

// grew reports whether the line start + slope*x rises over n positions by at least
// minGrowth of its start (any rise when the start is not positive).
func grew(slope, start float64, n int, minGrowth float64) bool {
	rise := slope * float64(n-1)
	if rise <= 0 {
		return false
	}
	return start <= 0 || rise >= minGrowth*start
}

func slope(ys []float64) float64 {
	s, _ := fitLine(ys)
	return s
}

// fitLine returns the least-squares line through (i, ys[i]): its slope and its value
// at 0.
func fitLine(ys []float64) (slope, start float64) {
	n := float64(len(ys))
	if len(ys) < 2 {
		return 0, 0
	}
	var sx, sy, sxx, sxy float64
	for i, y := range ys {
		x := float64(i)
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	slope = (n*sxy - sx*sy) / (n*sxx - sx*sx)
	return slope, (sy - slope*sx) / n
}
