package app

import (
	"strings"

	"github.com/plantgate/plantgate/internal/metrics"

	"github.com/plantgate/plantgate/internal/queue"
)

// queueCollector exposes queue stats at scrape time.
type queueCollector struct {
	s                                              *queue.Store
	records, bytes, dead, oldest, file, maxB, full *metrics.Desc
	used, deadBytes, deadMax, deadExpired          *metrics.Desc
}

func newQueueCollector(s *queue.Store) *queueCollector {
	l := []string{"stream"}
	return &queueCollector{s: s,
		records: metrics.NewDesc("plantgate_queue_records", "Records waiting in each stream.", l, nil),
		bytes:   metrics.NewDesc("plantgate_queue_bytes", "Bytes of records waiting in each stream.", l, nil),
		dead:    metrics.NewDesc("plantgate_queue_dead_records", "Dead letters in each stream.", l, nil),
		oldest:  metrics.NewDesc("plantgate_queue_oldest_record_age_seconds", "Age of the oldest waiting record.", l, nil),
		file:    metrics.NewDesc("plantgate_queue_file_bytes", "Size of the queue file.", nil, nil),
		maxB:    metrics.NewDesc("plantgate_queue_max_bytes", "Queue quota (0: none).", nil, nil),
		full: metrics.NewDesc("plantgate_queue_full", "1 while a quota is reached and sources are held back, with the quota as reason "+
			"(max_bytes, dead_max_bytes, stream_max_bytes, waiting).", []string{"reason"}, nil),
		used:        metrics.NewDesc("plantgate_queue_used_bytes", "Bytes in use in the queue file (records, dead letters, ids, state), against max_bytes.", nil, nil),
		deadBytes:   metrics.NewDesc("plantgate_queue_dead_bytes", "Bytes of dead letters over all streams, against dead_max_bytes.", nil, nil),
		deadMax:     metrics.NewDesc("plantgate_queue_dead_max_bytes", "Dead-letter quota (dead_max_bytes).", nil, nil),
		deadExpired: metrics.NewDesc("plantgate_queue_dead_expired_total", "Dead letters removed by dead_retention since start.", nil, nil),
	}
}

func (c *queueCollector) Describe(ch chan<- *metrics.Desc) {
	for _, d := range []*metrics.Desc{c.records, c.bytes, c.dead, c.oldest, c.file, c.maxB, c.full, c.used, c.deadBytes, c.deadMax, c.deadExpired} {
		ch <- d
	}
}

func (c *queueCollector) Collect(ch chan<- metrics.Metric) {
	st, err := c.s.Stats()
	if err != nil {
		ch <- metrics.NewInvalidMetric(c.records, err)
		return
	}
	for _, s := range st.Streams {
		ch <- metrics.MustNewConstMetric(c.records, metrics.GaugeValue, float64(s.Records), s.Stream)
		ch <- metrics.MustNewConstMetric(c.bytes, metrics.GaugeValue, float64(s.Bytes), s.Stream)
		ch <- metrics.MustNewConstMetric(c.dead, metrics.GaugeValue, float64(s.Dead), s.Stream)
		ch <- metrics.MustNewConstMetric(c.oldest, metrics.GaugeValue, s.OldestAge.Seconds(), s.Stream)
	}
	ch <- metrics.MustNewConstMetric(c.file, metrics.GaugeValue, float64(st.FileBytes))
	ch <- metrics.MustNewConstMetric(c.maxB, metrics.GaugeValue, float64(st.MaxBytes))
	ch <- metrics.MustNewConstMetric(c.used, metrics.GaugeValue, float64(st.UsedBytes))
	ch <- metrics.MustNewConstMetric(c.deadBytes, metrics.GaugeValue, float64(st.DeadBytes))
	ch <- metrics.MustNewConstMetric(c.deadMax, metrics.GaugeValue, float64(st.DeadMaxBytes))
	ch <- metrics.MustNewConstMetric(c.deadExpired, metrics.CounterValue, float64(st.DeadExpired))
	for _, reason := range []string{"max_bytes", "dead_max_bytes", "stream_max_bytes", "waiting"} {
		v := 0.0
		if st.Full && fullReason(st.FullReason) == reason {
			v = 1
		}
		ch <- metrics.MustNewConstMetric(c.full, metrics.GaugeValue, v, reason)
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

// componentCollector exposes plantgate_component_up.
type componentCollector struct {
	a  *App
	up *metrics.Desc
}

func newComponentCollector(a *App) *componentCollector {
	return &componentCollector{a: a, up: metrics.NewDesc("plantgate_component_up", "1 while a source or sink is up.", []string{"component", "instance", "type"}, nil)}
}

func (c *componentCollector) Describe(ch chan<- *metrics.Desc) { ch <- c.up }

func (c *componentCollector) Collect(ch chan<- metrics.Metric) {
	for _, s := range c.a.componentList() {
		v := 0.0
		if s.Up {
			v = 1
		}
		ch <- metrics.MustNewConstMetric(c.up, metrics.GaugeValue, v, s.Kind, s.Name, s.Type)
	}
}
