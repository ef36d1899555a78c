package d365

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Priority orders requests waiting for the limiter: urgent flows first.
type Priority int

// Priorities, lowest first.
const (
	PriorityLow Priority = iota
	PriorityNormal
	PriorityHigh
	numPriorities
)

// String returns low, normal or high.
func (p Priority) String() string {
	switch p {
	case PriorityLow:
		return "low"
	case PriorityHigh:
		return "high"
	}
	return "normal"
}

// ParsePriority reads low, normal or high (empty means normal).
func ParsePriority(s string) (Priority, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "normal":
		return PriorityNormal, nil
	case "low":
		return PriorityLow, nil
	case "high":
		return PriorityHigh, nil
	}
	return PriorityNormal, fmt.Errorf("parse priority %q: want high, normal or low", s)
}

// LimiterConfig configures a Limiter.
type LimiterConfig struct {
	// Ceiling is the most requests per second ever sent (max_requests_per_second).
	Ceiling float64
	// Floor is the least rate the limiter decreases to (default Ceiling/100).
	Floor float64
	// Initial is the starting rate (default Ceiling).
	Initial float64
	// MaxConcurrent bounds requests in flight (max_concurrent).
	MaxConcurrent int
	// Increase is the rate added per second of saturated sending
	// (default Ceiling/20, at least 0.5).
	Increase float64
	// Decrease multiplies the rate on a 429 (default 0.7).
	Decrease float64
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnRate is called with the new rate whenever it changes.
	OnRate func(rate float64)
}

// Outcome tells the limiter how a request it admitted ended.
type Outcome int

// Outcomes of a request.
const (
	// OutcomeOther: an error that says nothing about F&O's load.
	OutcomeOther Outcome = iota
	// OutcomeOK: F&O answered without throttling.
	OutcomeOK
	// OutcomeThrottled: F&O answered 429.
	OutcomeThrottled
	// OutcomePause: F&O asked to wait (503 with Retry-After) without
	// throttling this client.
	OutcomePause
)

// Limiter paces the requests to one F&O environment, shared by all its
// sinks. It combines
//
//   - a token bucket (golang.org/x/time/rate, driven by the limiter's
//     clock) whose rate adapts: additive increase while the limiter is the
//     bottleneck and F&O answers, multiplicative decrease on a 429, never
//     above the configured ceiling;
//   - a pause until Retry-After after a 429 (or a 503 with Retry-After),
//     for every sink of the environment, so F&O rarely has to say 429
//     twice;
//   - a cap on requests in flight;
//   - priority lanes: a waiting high-priority request is always admitted
//     before normal and low ones (strict priority; low-priority flows wait
//     while urgent ones use the whole budget).
//
// rate.Limiter keeps the bucket; its own Wait is not used, because it
// admits callers in no particular order and knows no pause and no cap on
// requests in flight: the lanes, the pause and the cap are the Limiter's,
// and a waiter is admitted when the bucket has a token for it (AllowN at
// the limiter's clock).
//
// It is safe for concurrent use.
type Limiter struct {
	cfg LimiterConfig

	mu           sync.Mutex
	rate         float64
	bucket       *rate.Limiter
	inflight     int
	pausedUntil  time.Time
	limitedAt    time.Time // last time a waiter had to wait for a token
	lastDecrease time.Time
	waiters      [numPriorities][]*waiter
	timer        *time.Timer
	timerAt      time.Time
	throttled    int64
	lanes        [numPriorities]laneStats
}

// laneStats counts a priority lane's admissions for status output, so
// that the order in which the lanes drain is visible: per second over the
// last recentSeconds, and in total.
type laneStats struct {
	admitted int64
	last     time.Time
	secs     [recentSeconds]int64 // admissions in second sec[i]
	sec      [recentSeconds]int64 // the Unix second each slot counts
}

// recentSeconds is the window of LaneStatus.Recent.
const recentSeconds = 10

func (l *Limiter) admittedLocked(p Priority, now time.Time) {
	ls := &l.lanes[p]
	ls.admitted++
	ls.last = now
	s := now.Unix()
	i := s % recentSeconds
	if ls.sec[i] != s {
		ls.sec[i], ls.secs[i] = s, 0
	}
	ls.secs[i]++
}

type waiter struct {
	ch      chan struct{}
	granted bool
	at      time.Time
}

// NewLimiter builds a limiter; it starts at cfg.Initial with a full bucket.
func NewLimiter(cfg LimiterConfig) *Limiter {
	if cfg.Ceiling <= 0 {
		cfg.Ceiling = 20
	}
	if cfg.Floor <= 0 {
		cfg.Floor = cfg.Ceiling / 100
	}
	cfg.Floor = math.Min(cfg.Floor, cfg.Ceiling)
	if cfg.Initial <= 0 || cfg.Initial > cfg.Ceiling {
		cfg.Initial = cfg.Ceiling
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 8
	}
	if cfg.Increase <= 0 {
		cfg.Increase = math.Max(0.5, cfg.Ceiling/20)
	}
	if cfg.Decrease <= 0 || cfg.Decrease >= 1 {
		cfg.Decrease = 0.7
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Limiter{cfg: cfg, rate: cfg.Initial}
	l.bucket = rate.NewLimiter(rate.Limit(cfg.Initial), burstOf(cfg.Initial)) // starts full
	return l
}

// burstOf is the bucket's size at rate r: a tenth of a second's requests,
// at least one.
func burstOf(r float64) int { return max(1, int(r/10)) }

// setRateLocked changes the bucket's rate (and size) from now on.
func (l *Limiter) setRateLocked(now time.Time, r float64) {
	l.rate = r
	l.bucket.SetLimitAt(now, rate.Limit(r))
	l.bucket.SetBurstAt(now, burstOf(r))
}

// Rate returns the current rate in requests per second.
func (l *Limiter) Rate() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rate
}

// Permit is an admitted request; Done returns it.
type Permit struct {
	l    *Limiter
	at   time.Time
	once sync.Once
}

// Acquire waits until a request of priority p may be sent, or ctx ends.
func (l *Limiter) Acquire(ctx context.Context, p Priority) (*Permit, error) {
	if p < 0 || p >= numPriorities {
		p = PriorityNormal
	}
	l.mu.Lock()
	now := l.cfg.Now()
	if l.queuedLocked() == 0 && l.canGrantLocked(now) && l.bucket.AllowN(now, 1) {
		l.inflight++
		l.admittedLocked(p, now)
		l.mu.Unlock()
		return &Permit{l: l, at: now}, nil
	}
	w := &waiter{ch: make(chan struct{})}
	l.waiters[p] = append(l.waiters[p], w)
	l.dispatchLocked(now)
	l.mu.Unlock()
	select {
	case <-w.ch:
		return &Permit{l: l, at: w.at}, nil
	case <-ctx.Done():
		l.mu.Lock()
		if w.granted {
			l.inflight--
		} else {
			q := l.waiters[p]
			for i, x := range q {
				if x == w {
					l.waiters[p] = append(q[:i:i], q[i+1:]...)
					break
				}
			}
		}
		l.dispatchLocked(l.cfg.Now())
		l.mu.Unlock()
		return nil, ctx.Err()
	}
}

// Done returns the permit and reports the outcome; retryAfter applies to
// OutcomeThrottled and OutcomePause. Calls after the first do nothing.
func (p *Permit) Done(o Outcome, retryAfter time.Duration) {
	if p == nil {
		return
	}
	p.once.Do(func() { p.l.done(p.at, o, retryAfter) })
}

func (l *Limiter) done(at time.Time, o Outcome, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	l.inflight--
	old := l.rate
	switch o {
	case OutcomeOK:
		if now.Sub(l.limitedAt) < 2*time.Second && l.rate < l.cfg.Ceiling {
			l.setRateLocked(now, math.Min(l.cfg.Ceiling, l.rate+l.cfg.Increase/l.rate))
		}
	case OutcomeThrottled:
		l.throttled++
		if retryAfter <= 0 {
			retryAfter = time.Second
		}
		l.pauseLocked(now.Add(retryAfter))
		// Requests sent before the last decrease were already in flight:
		// their 429s belong to the same congestion event.
		if !at.Before(l.lastDecrease) {
			l.setRateLocked(now, math.Max(l.cfg.Floor, l.rate*l.cfg.Decrease))
			l.lastDecrease = now
		}
		// Empty the bucket: nothing saved up is sent into the throttling.
		if n := int(l.bucket.TokensAt(now)); n > 0 {
			l.bucket.ReserveN(now, n)
		}
	case OutcomePause:
		if retryAfter > 0 {
			l.pauseLocked(now.Add(retryAfter))
		}
	}
	if l.rate != old && l.cfg.OnRate != nil {
		l.cfg.OnRate(l.rate)
	}
	l.dispatchLocked(now)
}

func (l *Limiter) pauseLocked(until time.Time) {
	if until.After(l.pausedUntil) {
		l.pausedUntil = until
	}
}

func (l *Limiter) queuedLocked() int {
	n := 0
	for _, q := range l.waiters {
		n += len(q)
	}
	return n
}

// canGrantLocked reports whether the pause and the cap on requests in
// flight let a request go now; the bucket is asked separately.
func (l *Limiter) canGrantLocked(now time.Time) bool {
	return !now.Before(l.pausedUntil) && l.inflight < l.cfg.MaxConcurrent
}

// dispatchLocked admits waiters, highest priority first, while the bucket,
// the pause and the concurrency cap allow, and arms the timer for the next
// moment a token is due.
func (l *Limiter) dispatchLocked(now time.Time) {
	for {
		var w *waiter
		var p Priority
		for p = numPriorities - 1; p >= 0; p-- {
			if len(l.waiters[p]) > 0 {
				w = l.waiters[p][0]
				break
			}
		}
		if w == nil {
			return
		}
		if now.Before(l.pausedUntil) {
			l.armLocked(now, l.pausedUntil)
			return
		}
		if l.inflight >= l.cfg.MaxConcurrent {
			return // Done dispatches again
		}
		if !l.bucket.AllowN(now, 1) {
			l.limitedAt = now
			need := (1 - l.bucket.TokensAt(now)) / l.rate
			l.armLocked(now, now.Add(time.Duration(need*float64(time.Second))+50*time.Microsecond))
			return
		}
		l.inflight++
		l.admittedLocked(p, now)
		l.waiters[p][0] = nil
		l.waiters[p] = l.waiters[p][1:]
		w.granted, w.at = true, now
		close(w.ch)
	}
}

func (l *Limiter) armLocked(now, at time.Time) {
	if !l.timerAt.IsZero() && !l.timerAt.After(at) && l.timerAt.After(now) {
		return // an earlier wake-up is already armed
	}
	l.timerAt = at
	d := max(at.Sub(now), 0)
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.fire)
		return
	}
	l.timer.Reset(d)
}

func (l *Limiter) fire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timerAt = time.Time{}
	l.dispatchLocked(l.cfg.Now())
}

// LimiterStatus is a snapshot for status output.
type LimiterStatus struct {
	Rate        float64   `json:"rate"`
	Ceiling     float64   `json:"ceiling"`
	InFlight    int       `json:"in_flight"`
	Waiting     int       `json:"waiting"`
	Throttled   int64     `json:"throttled"`
	PausedUntil time.Time `json:"paused_until,omitzero"`
	// Lanes are the priority lanes, high first: what waits in each and
	// what each was admitted, which shows urgent streams draining first.
	Lanes []LaneStatus `json:"lanes"`
}

// LaneStatus is one priority lane of the limiter.
type LaneStatus struct {
	Priority string `json:"priority"`
	// Waiting counts the requests of the lane waiting for the limiter.
	Waiting int `json:"waiting"`
	// Recent counts the requests admitted in the last 10 seconds,
	// Admitted since the start.
	Recent         int64     `json:"admitted_last_10s"`
	Admitted       int64     `json:"admitted"`
	LastAdmittedAt time.Time `json:"last_admitted_at,omitzero"`
}

// Status returns the limiter's state.
func (l *Limiter) Status() LimiterStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := LimiterStatus{Rate: math.Round(l.rate*100) / 100, Ceiling: l.cfg.Ceiling, InFlight: l.inflight, Waiting: l.queuedLocked(), Throttled: l.throttled}
	now := l.cfg.Now()
	if l.pausedUntil.After(now) {
		s.PausedUntil = l.pausedUntil.UTC()
	}
	for p := numPriorities - 1; p >= 0; p-- {
		ls := &l.lanes[p]
		st := LaneStatus{Priority: p.String(), Waiting: len(l.waiters[p]), Admitted: ls.admitted}
		if !ls.last.IsZero() {
			st.LastAdmittedAt = ls.last.UTC()
		}
		for i, sec := range ls.sec {
			if sec > now.Unix()-recentSeconds {
				st.Recent += ls.secs[i]
			}
		}
		s.Lanes = append(s.Lanes, st)
	}
	return s
}
