// Package restart decides whether and when a failed job is restarted, with Flink's
// restart strategies. Strategies are pure decision objects: they never sleep or start
// goroutines and learn the time only from NotifyFailure's argument, so tests drive them
// with a fake clock. They are not safe for concurrent use.
package restart

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/sluice-stream/sluice/pkg/config"
)

// The names of the strategies: the values of the key restart-strategy.type.
const (
	TypeNone             = "none"
	TypeFixedDelay       = "fixed-delay"
	TypeExponentialDelay = "exponential-delay"
)

// Strategy decides about restarts after failures. On a failure, the caller does:
//
//	if !s.NotifyFailure(now) {
//		return // part of a failover whose restart is already scheduled
//	}
//	if !s.CanRestart() {
//		fail the job for good
//	}
//	restart the job at now + s.Delay()
type Strategy interface {
	// Name returns the strategy's restart-strategy.type value.
	Name() string

	// NotifyFailure records a failure of the job at now and decides about the restart,
	// which CanRestart and Delay then report. It returns false and changes nothing if
	// the restart decided for an earlier failure is still pending, i.e. now is before
	// that failure's time plus its Delay: such a failure (of another task of the same
	// failover, say) is handled by that restart. The times passed to successive calls
	// must not decrease.
	NotifyFailure(now time.Time) bool

	// CanRestart reports whether the job may restart after the last recorded failure;
	// if not, the job has failed for good.
	CanRestart() bool

	// Delay returns how long after the last recorded failure the job restarts. It only
	// changes in NotifyFailure (jitter is drawn there), and is zero before any failure.
	Delay() time.Duration
}

// FromConfig returns the strategy selected by restart-strategy.type, with the parameters
// of the keys restart-strategy.<type>.*.
func FromConfig(c *config.Config) (Strategy, error) {
	switch t := c.String(config.RestartStrategyType); t {
	case TypeNone:
		return None{}, nil
	case TypeFixedDelay:
		return NewFixedDelay(c.Int(config.FixedDelayAttempts), c.Duration(config.FixedDelayDelay))
	case TypeExponentialDelay:
		o := ExponentialDelayOptions{
			InitialBackoff:             c.Duration(config.ExponentialDelayInitialBackoff),
			MaxBackoff:                 c.Duration(config.ExponentialDelayMaxBackoff),
			BackoffMultiplier:          c.Float(config.ExponentialDelayBackoffMultiplier),
			ResetBackoffThreshold:      c.Duration(config.ExponentialDelayResetThreshold),
			JitterFactor:               c.Float(config.ExponentialDelayJitterFactor),
			AttemptsBeforeResetBackoff: c.Int(config.ExponentialDelayAttemptsBeforeReset),
		}
		if o.InitialBackoff > o.MaxBackoff {
			return nil, fmt.Errorf("%s (%v) must not exceed %s (%v)",
				config.ExponentialDelayInitialBackoff, o.InitialBackoff, config.ExponentialDelayMaxBackoff, o.MaxBackoff)
		}
		return NewExponentialDelay(o)
	default:
		return nil, fmt.Errorf("%s: unsupported restart strategy %q", config.RestartStrategyType, t)
	}
}

// None never restarts: every failure fails the job for good.
type None struct{}

// Name returns TypeNone.
func (None) Name() string { return TypeNone }

// NotifyFailure returns true: no restart is ever pending.
func (None) NotifyFailure(time.Time) bool { return true }

// CanRestart returns false.
func (None) CanRestart() bool { return false }

// Delay returns 0.
func (None) Delay() time.Duration { return 0 }

func (None) String() string { return TypeNone }

// FixedDelay allows a fixed number of restarts, each a fixed delay after its failure.
type FixedDelay struct {
	attempts int
	delay    time.Duration

	failures  int       // failures recorded (not merged)
	restartAt time.Time // of the last recorded failure
}

// NewFixedDelay returns a strategy that allows at most attempts (>= 0) restarts, each
// delay (>= 0) after its failure.
func NewFixedDelay(attempts int, delay time.Duration) (*FixedDelay, error) {
	if attempts < 0 {
		return nil, fmt.Errorf("restart: fixed-delay attempts must be at least 0, got %d", attempts)
	}
	if delay < 0 {
		return nil, fmt.Errorf("restart: fixed-delay delay must not be negative, got %v", delay)
	}
	return &FixedDelay{attempts: attempts, delay: delay}, nil
}

// Name returns TypeFixedDelay.
func (s *FixedDelay) Name() string { return TypeFixedDelay }

// NotifyFailure implements Strategy.
func (s *FixedDelay) NotifyFailure(now time.Time) bool {
	if s.failures > 0 && now.Before(s.restartAt) {
		return false
	}
	s.failures++
	s.restartAt = now.Add(s.delay)
	return true
}

// CanRestart reports whether at most attempts failures have been recorded.
func (s *FixedDelay) CanRestart() bool { return s.failures <= s.attempts }

// Delay returns the fixed delay once a failure has been recorded.
func (s *FixedDelay) Delay() time.Duration {
	if s.failures == 0 {
		return 0
	}
	return s.delay
}

func (s *FixedDelay) String() string {
	return fmt.Sprintf("%s(attempts=%d, delay=%v)", TypeFixedDelay, s.attempts, s.delay)
}

// ExponentialDelayOptions are the parameters of an exponential-delay strategy.
type ExponentialDelayOptions struct {
	InitialBackoff             time.Duration // > 0: delay of the first restart
	MaxBackoff                 time.Duration // >= InitialBackoff: cap on every delay
	BackoffMultiplier          float64       // >= 1: growth of the backoff per failure
	ResetBackoffThreshold      time.Duration // > 0: run time without failure that resets
	JitterFactor               float64       // in [0, 1]: jitter, as a fraction of the backoff
	AttemptsBeforeResetBackoff int           // >= 1: restarts allowed between resets

	// Rand returns uniformly distributed numbers in [0, 1) for the jitter; nil uses
	// math/rand/v2. Inject a seeded source for deterministic delays.
	Rand func() float64
}

// ExponentialDelay restarts with a delay that grows exponentially, with Flink's
// semantics. The first failure gets InitialBackoff; each further one the previous
// backoff times BackoffMultiplier, capped at MaxBackoff. The delay is the backoff plus
// a uniformly random jitter of up to JitterFactor times the backoff either side, capped
// at MaxBackoff. When the job ran for ResetBackoffThreshold or longer after its last
// restart (the last failure plus its delay) before failing again, the backoff and the
// attempt count start afresh. At most AttemptsBeforeResetBackoff restarts are allowed
// between such resets.
type ExponentialDelay struct {
	o ExponentialDelayOptions

	attempts  int           // failures recorded since the last reset
	backoff   time.Duration // of the last recorded failure, without jitter
	delay     time.Duration // of the last recorded failure
	restartAt time.Time     // of the last recorded failure
}

// NewExponentialDelay returns an exponential-delay strategy, or an error if the options
// are out of their ranges.
func NewExponentialDelay(o ExponentialDelayOptions) (*ExponentialDelay, error) {
	switch {
	case o.InitialBackoff <= 0:
		return nil, fmt.Errorf("restart: exponential-delay initial backoff must be positive, got %v", o.InitialBackoff)
	case o.MaxBackoff < o.InitialBackoff:
		return nil, fmt.Errorf("restart: exponential-delay max backoff %v is less than the initial backoff %v", o.MaxBackoff, o.InitialBackoff)
	case !(o.BackoffMultiplier >= 1) || math.IsInf(o.BackoffMultiplier, 0):
		return nil, fmt.Errorf("restart: exponential-delay backoff multiplier must be finite and at least 1, got %v", o.BackoffMultiplier)
	case o.ResetBackoffThreshold <= 0:
		return nil, fmt.Errorf("restart: exponential-delay reset threshold must be positive, got %v", o.ResetBackoffThreshold)
	case !(o.JitterFactor >= 0 && o.JitterFactor <= 1):
		return nil, fmt.Errorf("restart: exponential-delay jitter factor must be in [0, 1], got %v", o.JitterFactor)
	case o.AttemptsBeforeResetBackoff < 1:
		return nil, fmt.Errorf("restart: exponential-delay attempts before reset must be at least 1, got %d", o.AttemptsBeforeResetBackoff)
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	return &ExponentialDelay{o: o}, nil
}

// Name returns TypeExponentialDelay.
func (s *ExponentialDelay) Name() string { return TypeExponentialDelay }

// NotifyFailure implements Strategy.
func (s *ExponentialDelay) NotifyFailure(now time.Time) bool {
	if s.attempts > 0 {
		if now.Before(s.restartAt) {
			return false
		}
		if now.Sub(s.restartAt) >= s.o.ResetBackoffThreshold {
			s.attempts = 0
		}
	}
	if s.attempts == 0 {
		s.backoff = s.o.InitialBackoff
	} else {
		s.backoff = capped(float64(s.backoff)*s.o.BackoffMultiplier, s.o.MaxBackoff)
	}
	if s.attempts < math.MaxInt {
		s.attempts++
	}
	r := min(max(s.o.Rand(), 0), 1)
	jitter := (2*r - 1) * s.o.JitterFactor * float64(s.backoff)
	s.delay = capped(float64(s.backoff)+jitter, s.o.MaxBackoff)
	s.restartAt = now.Add(s.delay)
	return true
}

// capped returns d as a Duration, limited to [0, limit].
func capped(d float64, limit time.Duration) time.Duration {
	if d >= float64(limit) { // also avoids converting a float beyond the int64 range
		return limit
	}
	return time.Duration(max(d, 0))
}

// CanRestart reports whether at most AttemptsBeforeResetBackoff failures have been
// recorded since the last reset.
func (s *ExponentialDelay) CanRestart() bool { return s.attempts <= s.o.AttemptsBeforeResetBackoff }

// Delay returns the jittered delay decided for the last recorded failure.
func (s *ExponentialDelay) Delay() time.Duration { return s.delay }

func (s *ExponentialDelay) String() string {
	return fmt.Sprintf("%s(initial-backoff=%v, max-backoff=%v, multiplier=%g, reset-threshold=%v, jitter=%g, attempts=%d)",
		TypeExponentialDelay, s.o.InitialBackoff, s.o.MaxBackoff, s.o.BackoffMultiplier,
		s.o.ResetBackoffThreshold, s.o.JitterFactor, s.o.AttemptsBeforeResetBackoff)
}
