package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/plantgate/plantgate/internal/queue"
)

// queueCollector exposes queue stats at scrape time.
type queueCollector struct {
	s                                              *queue.Store
	records, bytes, dead, oldest, file, maxB, full *prometheus.Desc
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
		full:    prometheus.NewDesc("plantgate_queue_full", "1 while the quota is reached and sources are held back.", nil, nil),
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.records, c.bytes, c.dead, c.oldest, c.file, c.maxB, c.full} {
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
	full := 0.0
	if st.Full {
		full = 1
	}
	ch <- prometheus.MustNewConstMetric(c.full, prometheus.GaugeValue, full)
}

// componentCollector exposes plantgate_component_up.
type componentCollector struct {
	a  *App
	up *prometheus.Desc
}

func newComponentCollector(a *App) *componentCollector {
	return &componentCollector{a: a, up: prometheus.NewDesc("plantgate_component_up", "1 while a source or sink is up.", []string{"component", "instance", "type"}, nil)}
}

func (c *componentCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.up }

func (c *componentCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.a.componentList() {
		v := 0.0
		if s.Up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, v, s.Kind, s.Name, s.Type)
	}
}
