package d365

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/plantgate/plantgate/internal/certexpiry"
)

// Metrics are the plantgate_fo_* collectors, shared by all F&O
// environments and sinks of one gateway (labelled by env and sink).
type Metrics struct {
	// Requests counts answered and failed requests by env, op and status
	// ("0" when no answer arrived).
	Requests *prometheus.CounterVec
	// Throttled counts 429 answers (including $batch parts) by env.
	Throttled *prometheus.CounterVec
	// RequestSeconds observes request durations by env and op.
	RequestSeconds *prometheus.HistogramVec
	// LimiterRate is the adaptive limiter's current rate by env.
	LimiterRate *prometheus.GaugeVec
	// BreakerState is 0 closed, 1 open, 2 half-open, by env.
	BreakerState *prometheus.GaugeVec
	// TokenRefreshes counts token requests by env and result.
	TokenRefreshes *prometheus.CounterVec
	// InDoubt is the number of records held in doubt for an operator, by
	// sink.
	InDoubt *prometheus.GaugeVec
	// Parked is the number of records parked behind held ones, by sink.
	Parked *prometheus.GaugeVec
	// Certificates holds the expiry of each environment's ca_file and
	// client certificate (component fo).
	Certificates *certexpiry.Gauge
}

// NewMetrics registers the collectors on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_fo_requests_total",
			Help: "Requests to F&O by environment, operation and HTTP status (0: no answer)."}, []string{"env", "op", "status"}),
		Throttled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_fo_throttled_total",
			Help: "Requests and $batch parts F&O answered 429 Too Many Requests."}, []string{"env"}),
		RequestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "plantgate_fo_request_duration_seconds",
			Help:    "Duration of requests to F&O, without the wait for the limiter.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"env", "op"}),
		LimiterRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "plantgate_fo_limiter_rate_requests_per_second",
			Help: "Current rate of the adaptive request limiter of each F&O environment."}, []string{"env"}),
		BreakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "plantgate_fo_breaker_state",
			Help: "Circuit breaker of each F&O environment: 0 closed, 1 open, 2 half-open."}, []string{"env"}),
		TokenRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_fo_token_refreshes_total",
			Help: "Access tokens obtained (result ok) or refused (result error), by reason: initial, expiry, unauthorized."}, []string{"env", "reason", "result"}),
		InDoubt: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "plantgate_fo_in_doubt_records",
			Help: "Records sent without a known outcome, held for an operator to release or drop."}, []string{"sink"}),
		Parked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "plantgate_fo_parked_records",
			Help: "Records of the same key parked behind a held record, delivered once it is released or dropped."}, []string{"sink"}),
	}
	m.Certificates = certexpiry.For(reg)
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Requests, m.Throttled, m.RequestSeconds, m.LimiterRate, m.BreakerState, m.TokenRefreshes, m.InDoubt, m.Parked} {
			reg.MustRegister(c)
		}
	}
	return m
}

// The values of plantgate_fo_token_refreshes_total's reason and result
// labels: a token is asked for first (initial), before it expires (expiry)
// or after F&O answered 401 (unauthorized: result requested counts the
// 401s, ok and error the identity platform's answers).
var (
	tokenReasons = []string{"initial", "expiry", "unauthorized"}
	tokenResults = []string{"ok", "error"}
)

// initEnv creates the counters of environment env at 0, so a scrape shows
// them before their first event. plantgate_fo_requests_total is the
// exception: its status label takes the values F&O answers.
func (m *Metrics) initEnv(env string) {
	m.Throttled.WithLabelValues(env)
	for _, reason := range tokenReasons {
		for _, result := range tokenResults {
			m.TokenRefreshes.WithLabelValues(env, reason, result)
		}
	}
	m.TokenRefreshes.WithLabelValues(env, "unauthorized", "requested")
}
