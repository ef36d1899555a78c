package d365

import "github.com/plantgate/plantgate/internal/metrics"

// Metrics are the plantgate_fo_* collectors, shared by all F&O
// environments and sinks of one gateway (labelled by env and sink).
type Metrics struct {
	// Requests counts answered and failed requests by env, op and status
	// ("0" when no answer arrived).
	Requests *metrics.CounterVec
	// Throttled counts 429 answers (including $batch parts) by env.
	Throttled *metrics.CounterVec
	// RequestSeconds observes request durations by env and op.
	RequestSeconds *metrics.HistogramVec
	// LimiterRate is the adaptive limiter's current rate by env.
	LimiterRate *metrics.GaugeVec
	// BreakerState is 0 closed, 1 open, 2 half-open, by env.
	BreakerState *metrics.GaugeVec
	// TokenRefreshes counts token requests by env and result.
	TokenRefreshes *metrics.CounterVec
	// InDoubt is the number of records held in doubt for an operator, by
	// sink.
	InDoubt *metrics.GaugeVec
	// Parked is the number of records parked behind held ones, by sink.
	Parked *metrics.GaugeVec
}

// NewMetrics registers the collectors on reg (nil: unregistered).
func NewMetrics(reg metrics.Registerer) *Metrics {
	m := &Metrics{
		Requests: metrics.NewCounterVec(metrics.CounterOpts{Name: "plantgate_fo_requests_total",
			Help: "Requests to F&O by environment, operation and HTTP status (0: no answer)."}, []string{"env", "op", "status"}),
		Throttled: metrics.NewCounterVec(metrics.CounterOpts{Name: "plantgate_fo_throttled_total",
			Help: "Requests and $batch parts F&O answered 429 Too Many Requests."}, []string{"env"}),
		RequestSeconds: metrics.NewHistogramVec(metrics.HistogramOpts{Name: "plantgate_fo_request_duration_seconds",
			Help:    "Duration of requests to F&O, without the wait for the limiter.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"env", "op"}),
		LimiterRate: metrics.NewGaugeVec(metrics.GaugeOpts{Name: "plantgate_fo_limiter_rate_requests_per_second",
			Help: "Current rate of the adaptive request limiter of each F&O environment."}, []string{"env"}),
		BreakerState: metrics.NewGaugeVec(metrics.GaugeOpts{Name: "plantgate_fo_breaker_state",
			Help: "Circuit breaker of each F&O environment: 0 closed, 1 open, 2 half-open."}, []string{"env"}),
		TokenRefreshes: metrics.NewCounterVec(metrics.CounterOpts{Name: "plantgate_fo_token_refreshes_total",
			Help: "Access tokens obtained (result ok) or refused (result error), by reason: initial, expiry, unauthorized."}, []string{"env", "reason", "result"}),
		InDoubt: metrics.NewGaugeVec(metrics.GaugeOpts{Name: "plantgate_fo_in_doubt_records",
			Help: "Records sent without a known outcome, held for an operator to release or drop."}, []string{"sink"}),
		Parked: metrics.NewGaugeVec(metrics.GaugeOpts{Name: "plantgate_fo_parked_records",
			Help: "Records of the same key parked behind a held record, delivered once it is released or dropped."}, []string{"sink"}),
	}
	if reg != nil {
		for _, c := range []metrics.Collector{m.Requests, m.Throttled, m.RequestSeconds, m.LimiterRate, m.BreakerState, m.TokenRefreshes, m.InDoubt, m.Parked} {
			reg.MustRegister(c)
		}
	}
	return m
}
