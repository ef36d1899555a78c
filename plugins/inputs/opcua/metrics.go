package opcua

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// sourceMetrics are the source's Prometheus collectors, bound to its label.
// The vectors are shared by every opcua source on a registry.
type sourceMetrics struct {
	connected   prometheus.Gauge
	connects    prometheus.Counter
	values      prometheus.Counter
	events      prometheus.Counter
	gaps        prometheus.Counter
	republished prometheus.Counter
	watchdog    prometheus.Counter
	ownExpiry   prometheus.Gauge
	serverExp   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, source string) *sourceMetrics {
	l := []string{"source"}
	gauge := func(name, help string) prometheus.Gauge {
		return pipeline.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, l)).WithLabelValues(source)
	}
	counter := func(name, help string) prometheus.Counter {
		return pipeline.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, l)).WithLabelValues(source)
	}
	expiry := pipeline.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "plantgate_opcua_certificate_expiry_timestamp_seconds",
		Help: "Unix time at which the source's application certificate (certificate=\"own\") or the server's (\"server\") expires."}, []string{"source", "certificate"}))
	return &sourceMetrics{
		connected:   gauge("plantgate_opcua_connected", "1 while the source has a session with its server."),
		connects:    counter("plantgate_opcua_connects_total", "Sessions opened or reactivated."),
		values:      counter("plantgate_opcua_values_total", "Values received (notifications, reads and polls)."),
		events:      counter("plantgate_opcua_events_total", "Events the rules emitted."),
		gaps:        counter("plantgate_opcua_gaps_total", "Gaps recorded: the subscription was lost, or notifications could not be sent again."),
		republished: counter("plantgate_opcua_republished_total", "Notification messages recovered with Republish."),
		watchdog:    counter("plantgate_opcua_watchdog_rebuilds_total", "Subscriptions rebuilt because they sent neither data nor keep-alives."),
		ownExpiry:   expiry.WithLabelValues(source, "own"),
		serverExp:   expiry.WithLabelValues(source, "server"),
	}
}
