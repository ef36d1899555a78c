package d365

import (
	"sync"
	"time"
)

// BreakerState is the state of a circuit breaker.
type BreakerState int

// Breaker states.
const (
	BreakerClosed   BreakerState = iota // calls flow
	BreakerOpen                         // calls are refused until the delay passed
	BreakerHalfOpen                     // one probe call is let through
)

// String returns closed, open or half-open.
func (s BreakerState) String() string {
	switch s {
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return "closed"
}

// BreakerConfig configures a Breaker.
type BreakerConfig struct {
	// Failures is the number of consecutive connectivity failures (network
	// errors, 5xx, an unreachable identity platform) that open the breaker.
	Failures int
	// Delay is how long the breaker stays open before a probe; it doubles
	// after each failed probe up to MaxDelay.
	Delay    time.Duration
	MaxDelay time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnState is called on every state change.
	OnState func(BreakerState)
}

// Breaker stops calls to an environment that keeps failing, so plantgate
// does not hammer F&O or the identity platform while they are down, and
// lets one probe call through after a delay to find out whether they are
// back. It is safe for concurrent use. (Why not sony/gobreaker: see the
// package doc, "Limiter and breaker".)
//
//	closed --N consecutive failures--> open --delay--> half-open --probe ok--> closed
//	                                     ^                  |
//	                                     +--probe failed----+ (delay doubles)
type Breaker struct {
	cfg BreakerConfig

	mu       sync.Mutex
	state    BreakerState
	failures int
	delay    time.Duration
	openedAt time.Time
	until    time.Time
	probing  bool
	// probeDone is closed when the probe in flight ends (nil when none
	// is), so callers that found the slot taken can wait for its outcome
	// (ProbeDone) instead of retrying after a fixed delay.
	probeDone chan struct{}
	lastErr   string
	since     time.Time
}

// NewBreaker builds a closed breaker.
func NewBreaker(cfg BreakerConfig) *Breaker {
	if cfg.Failures <= 0 {
		cfg.Failures = 5
	}
	if cfg.Delay <= 0 {
		cfg.Delay = 5 * time.Second
	}
	if cfg.MaxDelay < cfg.Delay {
		cfg.MaxDelay = max(cfg.Delay, time.Minute)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Breaker{cfg: cfg, delay: cfg.Delay, since: cfg.Now()}
}

// Allow asks to make a call. It returns probe true when the call is the
// half-open probe (its result decides the state), or ok false with the
// time left until the next probe when the breaker is open.
func (b *Breaker) Allow() (ok, probe bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.cfg.Now()
	switch b.state {
	case BreakerClosed:
		return true, false, 0
	case BreakerOpen:
		if now.Before(b.until) {
			return false, false, b.until.Sub(now)
		}
		b.setLocked(BreakerHalfOpen, now)
	}
	if b.probing {
		return false, false, max(b.cfg.Delay/10, 50*time.Millisecond)
	}
	b.probing = true
	b.probeDone = make(chan struct{})
	return true, true, 0
}

// ProbeDone returns a channel closed when the half-open probe in flight
// ends, or nil when no probe is in flight.
//
// After an outage every stream's lanes come back when the breaker lets
// its probe through; the probe is whichever request asked first, often a
// bulk one. Callers refused only because the probe slot was taken used to
// be told to retry Delay/10 later, so the probe's stream ran alone for
// that long (about 10 requests at 20/s) before the urgent streams came
// back: "urgent first" depended on who won the probe. Waiting for the
// probe's outcome instead sends every waiting request to the limiter
// together as soon as the circuit closes, and the limiter admits them by
// priority.
func (b *Breaker) ProbeDone() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.probing {
		return nil
	}
	return b.probeDone
}

// endProbeLocked frees the probe slot and wakes the callers waiting on it.
func (b *Breaker) endProbeLocked() {
	b.probing = false
	if b.probeDone != nil {
		close(b.probeDone)
		b.probeDone = nil
	}
}

// Success records a call that reached its peer (any answer but a 5xx).
func (b *Breaker) Success(probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.endProbeLocked()
	}
	b.failures = 0
	if b.state != BreakerClosed {
		b.delay = b.cfg.Delay
		b.setLocked(BreakerClosed, b.cfg.Now())
	}
}

// Failure records a connectivity failure described by reason.
func (b *Breaker) Failure(probe bool, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.cfg.Now()
	b.lastErr = reason
	if probe {
		b.endProbeLocked()
	}
	switch {
	case b.state == BreakerHalfOpen && probe:
		b.delay = min(b.delay*2, b.cfg.MaxDelay)
		b.openLocked(now)
	case b.state == BreakerClosed:
		b.failures++
		if b.failures >= b.cfg.Failures {
			b.openLocked(now)
		}
	}
}

// Release ends a probe whose call said nothing about connectivity (it was
// cancelled), so another call may probe.
func (b *Breaker) Release(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	b.endProbeLocked()
	b.mu.Unlock()
}

func (b *Breaker) openLocked(now time.Time) {
	b.until = now.Add(b.delay)
	if b.state == BreakerClosed {
		b.openedAt = now
	}
	b.setLocked(BreakerOpen, now)
}

func (b *Breaker) setLocked(s BreakerState, now time.Time) {
	if b.state == s {
		return
	}
	b.state, b.since = s, now
	if b.cfg.OnState != nil {
		b.cfg.OnState(s)
	}
}

// BreakerStatus is a snapshot for status output.
type BreakerStatus struct {
	State     string    `json:"state"`
	Since     time.Time `json:"since"`
	Failures  int       `json:"consecutive_failures"`
	NextProbe time.Time `json:"next_probe,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// State returns the breaker's state.
func (b *Breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// Status returns the breaker's state with details.
func (b *Breaker) Status() BreakerStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := BreakerStatus{State: b.state.String(), Since: b.since.UTC(), Failures: b.failures, LastError: b.lastErr}
	if b.state == BreakerOpen {
		s.NextProbe = b.until.UTC()
	}
	return s
}

// statusUnlocked is the last failure, read by OnState callbacks, which
// run with b.mu held.
func (b *Breaker) statusUnlocked() string { return b.lastErr }
