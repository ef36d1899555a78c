package app

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/plantgate/plantgate/internal/queue"
)

// newRegistry returns the gateway's own registry (never the global one)
// with the Go runtime's and the process's collectors on it. Components
// register theirs through pipeline.Env.Metrics.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// maxScrapesInFlight bounds concurrent /metrics scrapes; more are answered
// 503.
const maxScrapesInFlight = 4

// metricsHandler serves reg at /metrics. A collector's error does not fail
// the scrape: every other metric is still served.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxScrapesInFlight,
		Registry:            reg,
	})
}

// queueCollector exposes queue stats at scrape time.
type queueCollector struct {
	s                                              *queue.Store
	records, bytes, dead, oldest, file, maxB, full *prometheus.Desc
	used, deadBytes, deadMax, deadExpired          *prometheus.Desc
}

func newQueueCollector(s *queue.Store) *queueCollector {
	l := []string{"stream"}
	return &queueCollector{s: s,
		records: prometheus.NewDesc("plantgate_queue_records", "Records waiting in each stream.", l, nil),
		bytes:   prometheus.NewDesc("plantgate_queue_bytes", "Bytes of records waiting in each stream.", l, nil),
		dead:    prometheus.NewDesc("plantgate_queue_dead_records", "Dead letters in each stream.", l, nil),
		oldest:  prometheus.NewDesc("plantgate_queue_oldest_record_age_seconds", "Age of the oldest waiting record.", l, nil),
		file:    prometheus.NewDesc("plantgate_queue_file_bytes", "Size of the queue file.", nil, nil),
		maxB:    prometheus.NewDesc("plantgate_queue_max_bytes", "Queue quota (0: none).", nil, nil),
		full: prometheus.NewDesc("plantgate_queue_full", "1 while a quota is reached and sources are held back, with the quota as reason "+
			"(max_bytes, dead_max_bytes, stream_max_bytes, waiting).", []string{"reason"}, nil),
		used:        prometheus.NewDesc("plantgate_queue_used_bytes", "Bytes in use in the queue file (records, dead letters, ids, state), against max_bytes.", nil, nil),
		deadBytes:   prometheus.NewDesc("plantgate_queue_dead_bytes", "Bytes of dead letters over all streams, against dead_max_bytes.", nil, nil),
		deadMax:     prometheus.NewDesc("plantgate_queue_dead_max_bytes", "Dead-letter quota (dead_max_bytes).", nil, nil),
		deadExpired: prometheus.NewDesc("plantgate_queue_dead_expired_total", "Dead letters removed by dead_retention since start.", nil, nil),
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.records, c.bytes, c.dead, c.oldest, c.file, c.maxB, c.full, c.used, c.deadBytes, c.deadMax, c.deadExpired} {
		ch <- d
	}
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.s.Stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.records, err)
		return
	}
	for _, s := range st.Streams {
		ch <- prometheus.MustNewConstMetric(c.records, prometheus.GaugeValue, float64(s.Records), s.Stream)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.Bytes), s.Stream)
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(s.Dead), s.Stream)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, s.OldestAge.Seconds(), s.Stream)
	}
	ch <- prometheus.MustNewConstMetric(c.file, prometheus.GaugeValue, float64(st.FileBytes))
	ch <- prometheus.MustNewConstMetric(c.maxB, prometheus.GaugeValue, float64(st.MaxBytes))
	ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(st.UsedBytes))
	ch <- prometheus.MustNewConstMetric(c.deadBytes, prometheus.GaugeValue, float64(st.DeadBytes))
	ch <- prometheus.MustNewConstMetric(c.deadMax, prometheus.GaugeValue, float64(st.DeadMaxBytes))
	ch <- prometheus.MustNewConstMetric(c.deadExpired, prometheus.CounterValue, float64(st.DeadExpired))
	for _, reason := range []string{"max_bytes", "dead_max_bytes", "stream_max_bytes", "waiting"} {
		v := 0.0
		if st.Full && fullReason(st.FullReason) == reason {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.full, prometheus.GaugeValue, v, reason)
	}
}

// fullReason names the quota of a Stats.FullReason.
func fullReason(why string) string {
	for _, q := range []string{"dead_max_bytes", "stream_max_bytes", "max_bytes"} {
		if strings.Contains(why, "("+q+")") {
			return q
		}
	}
	return "waiting"
}

// componentCollector exposes the health model (health.go):
// plantgate_ready, plantgate_degraded and plantgate_component_up, read
// from the same Health that /readyz and the status page show, and
// plantgate_config_last_reload_successful.
type componentCollector struct {
	a                       *App
	up, ready, degr, reload *prometheus.Desc
}

func newComponentCollector(a *App) *componentCollector {
	return &componentCollector{a: a,
		up:    prometheus.NewDesc("plantgate_component_up", "1 while a source, sink, F&O environment or the queue is up (health model; /readyz).", []string{"component", "instance", "type"}, nil),
		ready: prometheus.NewDesc("plantgate_ready", "1 while the gateway is ready: every sink can deliver and every source is connected (as /readyz).", nil, nil),
		degr:  prometheus.NewDesc("plantgate_degraded", "1 while the gateway is ready but has reasons to look at (throttling, records in doubt, dead letters, a refused reload).", nil, nil),
		reload: prometheus.NewDesc("plantgate_config_last_reload_successful",
			"0 while the last reload (SIGHUP) was refused and the previous config keeps running; 1 otherwise.", nil, nil),
	}
}

func (c *componentCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.ready
	ch <- c.degr
	ch <- c.reload
}

func (c *componentCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.a.Health()
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, b2f(h.Ready))
	ch <- prometheus.MustNewConstMetric(c.degr, prometheus.GaugeValue, b2f(h.State == StateDegraded))
	c.a.mu.Lock()
	refused := c.a.reloadErr != ""
	c.a.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.reload, prometheus.GaugeValue, b2f(!refused))
	for _, s := range h.Components {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, b2f(s.Up), s.Kind, s.Name, s.Type)
	}
}
