package foemu

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plantgate/plantgate/internal/logging"
)

// throttler implements per-client service protection: a token bucket
// (rate, burst) plus a cap on concurrent requests, scaled by the client's
// priority. A throttled request adds debt to the bucket, so a client that
// keeps sending sees Retry-After grow, as F&O documents.
type throttler struct {
	mu         sync.Mutex
	base       ThrottleConfig
	override   *ThrottleConfig
	priorities map[string]string
	buckets    map[string]*bucket
}

type bucket struct {
	tokens   float64
	last     time.Time
	inflight int
}

// maxRetryAfter caps Retry-After (seconds), like F&O's 300 second window.
const maxRetryAfter = 300

// limits are the effective limits of one client.
type limits struct {
	enabled    bool
	rate       float64
	burst      float64
	concurrent int
	penalty    float64
}

func newThrottler(cfg ThrottleConfig, clients []ClientConfig) *throttler {
	cfg.applyDefaults()
	t := &throttler{base: cfg, priorities: map[string]string{}, buckets: map[string]*bucket{}}
	for _, c := range clients {
		t.priorities[strings.ToLower(c.ClientID)] = c.Priority
	}
	return t
}

// setOverride replaces the configured budget (nil restores it).
func (t *throttler) setOverride(o *ThrottleConfig) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if o != nil {
		c := *o
		c.applyDefaults()
		o = &c
	}
	t.override = o
}

func (t *throttler) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buckets = map[string]*bucket{}
}

// limitsFor computes a client's limits. The caller holds t.mu.
func (t *throttler) limitsFor(client string) limits {
	cfg := t.base
	if t.override != nil {
		cfg = *t.override
	}
	key := strings.ToLower(client)
	l := limits{enabled: *cfg.Enabled, rate: cfg.RequestsPerSecond, burst: cfg.Burst, concurrent: cfg.Concurrent, penalty: cfg.Penalty}
	prio := t.priorities[key]
	for id, o := range cfg.Clients {
		if !strings.EqualFold(id, client) {
			continue
		}
		if o.Enabled != nil {
			l.enabled = *o.Enabled
		}
		if o.RequestsPerSecond > 0 {
			l.rate = o.RequestsPerSecond
		}
		if o.Burst > 0 {
			l.burst = o.Burst
		}
		if o.Concurrent != 0 {
			l.concurrent = o.Concurrent
		}
		if o.Penalty > 0 {
			l.penalty = o.Penalty
		}
	}
	if f, ok := priorityFactor(cfg, prio); ok {
		l.rate *= f
		l.burst *= f
		if l.concurrent > 0 {
			l.concurrent = max(1, int(math.Round(float64(l.concurrent)*f)))
		}
	}
	if l.burst < 1 {
		l.burst = 1
	}
	return l
}

// verdict is the outcome of asking the throttler for a request.
type verdict struct {
	ok         bool
	retryAfter int
	message    string
	release    func()
}

// acquire asks for n requests' worth of budget for a client. With
// concurrent set it also takes an in-flight slot, which release returns.
func (t *throttler) acquire(client string, n int, concurrent bool, now time.Time) verdict {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.limitsFor(client)
	if !l.enabled {
		return verdict{ok: true, release: func() {}}
	}
	key := strings.ToLower(client)
	b := t.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		t.buckets[key] = b
	}
	if l.rate > 0 {
		b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	}
	b.last = now
	// Debt is capped at maxRetryAfter seconds of refill.
	floor := -l.rate * maxRetryAfter
	if concurrent && l.concurrent > 0 && b.inflight >= l.concurrent {
		b.tokens = math.Max(floor, b.tokens-l.penalty)
		return verdict{retryAfter: 1, message: fmt.Sprintf("Number of concurrent requests exceeded the limit of %d.", l.concurrent)}
	}
	need := float64(n)
	if b.tokens < need {
		b.tokens = math.Max(floor, b.tokens-l.penalty*need)
		ra := maxRetryAfter
		if l.rate > 0 {
			ra = min(maxRetryAfter, int(math.Ceil((need-b.tokens)/l.rate)))
		}
		window := 300
		if l.rate > 0 {
			window = int(math.Round(l.burst / l.rate))
		}
		return verdict{retryAfter: max(1, ra), message: fmt.Sprintf("Number of requests exceeded the limit of %d over the time window of %d seconds.", int(l.burst), window)}
	}
	b.tokens -= need
	if !concurrent {
		return verdict{ok: true, release: func() {}}
	}
	b.inflight++
	var once sync.Once
	return verdict{ok: true, release: func() {
		once.Do(func() {
			t.mu.Lock()
			b.inflight--
			t.mu.Unlock()
		})
	}}
}

// admit applies throttling to an F&O request and answers 429 with
// Retry-After when the client is over budget.
func (e *Emulator) admit(w http.ResponseWriter, cl *ClientConfig, n int, concurrent bool) (func(), bool) {
	v := e.throttle.acquire(cl.ClientID, n, concurrent, time.Now())
	if v.ok {
		return v.release, true
	}
	e.log.Debug().Str(logging.FieldClientID, cl.ClientID).Int(logging.FieldRetryIn, v.retryAfter).Msg("request throttled")
	w.Header().Set("Retry-After", strconv.Itoa(v.retryAfter))
	writeODataError(w, http.StatusTooManyRequests, v.message, typeThrottle, "")
	return nil, false
}
