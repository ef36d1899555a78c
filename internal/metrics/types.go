package metrics

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Counter only goes up.
type Counter interface {
	Collector
	Metric
	Inc()
	Add(float64)
}

// Gauge goes up and down.
type Gauge interface {
	Collector
	Metric
	Set(float64)
	Inc()
	Dec()
	Add(float64)
	Sub(float64)
	SetToCurrentTime()
}

// Observer records observations (a histogram).
type Observer interface{ Observe(float64) }

// Histogram counts observations in buckets.
type Histogram interface {
	Collector
	Metric
	Observer
}

// value is a counter or gauge sample.
type value struct {
	desc   *Desc
	typ    ValueType
	labels []string
	v      atomicFloat
}

func (m *value) Desc() *Desc              { return m.desc }
func (m *value) Describe(ch chan<- *Desc) { ch <- m.desc }
func (m *value) Collect(ch chan<- Metric) { ch <- m }
func (m *value) Inc()                     { m.v.Add(1) }
func (m *value) Dec()                     { m.v.Add(-1) }
func (m *value) Sub(v float64)            { m.v.Add(-v) }
func (m *value) Set(v float64)            { m.v.Store(v) }
func (m *value) SetToCurrentTime()        { m.v.Store(float64(time.Now().UnixNano()) / 1e9) }
func (m *value) write(w *familyWriter)    { w.sample("", m.desc, m.labels, nil, m.v.Load()) }
func (m *value) Add(v float64) {
	if m.typ == CounterValue && v < 0 {
		panic("metrics: counter cannot decrease")
	}
	m.v.Add(v)
}

func optsDesc(o Opts, labels []string) *Desc {
	return NewDesc(fqName(o.Namespace, o.Subsystem, o.Name), o.Help, labels, o.ConstLabels)
}

// NewCounter returns a counter without labels.
func NewCounter(o CounterOpts) Counter {
	return &value{desc: optsDesc(Opts(o), nil), typ: CounterValue}
}

// NewGauge returns a gauge without labels.
func NewGauge(o GaugeOpts) Gauge { return &value{desc: optsDesc(Opts(o), nil), typ: GaugeValue} }

// vec holds the children of a labelled family.
type vec[T Metric] struct {
	desc     *Desc
	mu       sync.RWMutex
	children map[string]T
	make     func(labels []string) T
}

func (v *vec[T]) Describe(ch chan<- *Desc) { ch <- v.desc }
func (v *vec[T]) Collect(ch chan<- Metric) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	keys := make([]string, 0, len(v.children))
	for k := range v.children {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ch <- v.children[k]
	}
}

func (v *vec[T]) with(lvs []string) T {
	if len(lvs) != len(v.desc.varLabels) {
		panic(fmt.Sprintf("metrics: %s has %d labels, got %d values", v.desc.fqName, len(v.desc.varLabels), len(lvs)))
	}
	key := strings.Join(lvs, "\xff")
	v.mu.RLock()
	c, ok := v.children[key]
	v.mu.RUnlock()
	if ok {
		return c
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if c, ok := v.children[key]; ok {
		return c
	}
	c = v.make(append([]string(nil), lvs...))
	v.children[key] = c
	return c
}

func (v *vec[T]) withLabels(l Labels) T {
	lvs := make([]string, len(v.desc.varLabels))
	for i, n := range v.desc.varLabels {
		lvs[i] = l[n]
	}
	return v.with(lvs)
}

// Reset removes every child.
func (v *vec[T]) Reset() {
	v.mu.Lock()
	v.children = map[string]T{}
	v.mu.Unlock()
}

// DeleteLabelValues removes one child.
func (v *vec[T]) DeleteLabelValues(lvs ...string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	key := strings.Join(lvs, "\xff")
	_, ok := v.children[key]
	delete(v.children, key)
	return ok
}

// CounterVec is a counter family with labels.
type CounterVec struct{ *vec[Counter] }

// NewCounterVec returns a counter family.
func NewCounterVec(o CounterOpts, labels []string) *CounterVec {
	d := optsDesc(Opts(o), labels)
	return &CounterVec{&vec[Counter]{desc: d, children: map[string]Counter{}, make: func(lvs []string) Counter {
		return &value{desc: d, typ: CounterValue, labels: lvs}
	}}}
}

// WithLabelValues returns the child for the label values, in label order.
func (v *CounterVec) WithLabelValues(lvs ...string) Counter { return v.with(lvs) }

// With returns the child for labels.
func (v *CounterVec) With(l Labels) Counter { return v.withLabels(l) }

// GaugeVec is a gauge family with labels.
type GaugeVec struct{ *vec[Gauge] }

// NewGaugeVec returns a gauge family.
func NewGaugeVec(o GaugeOpts, labels []string) *GaugeVec {
	d := optsDesc(Opts(o), labels)
	return &GaugeVec{&vec[Gauge]{desc: d, children: map[string]Gauge{}, make: func(lvs []string) Gauge {
		return &value{desc: d, typ: GaugeValue, labels: lvs}
	}}}
}

// WithLabelValues returns the child for the label values.
func (v *GaugeVec) WithLabelValues(lvs ...string) Gauge { return v.with(lvs) }

// With returns the child for labels.
func (v *GaugeVec) With(l Labels) Gauge { return v.withLabels(l) }

// histogram counts observations.
type histogram struct {
	desc   *Desc
	labels []string
	upper  []float64
	mu     sync.Mutex
	counts []uint64
	sum    float64
	count  uint64
}

func newHistogram(d *Desc, buckets []float64, lvs []string) *histogram {
	if len(buckets) == 0 {
		buckets = DefBuckets
	}
	b := append([]float64(nil), buckets...)
	sort.Float64s(b)
	return &histogram{desc: d, labels: lvs, upper: b, counts: make([]uint64, len(b))}
}

func (h *histogram) Desc() *Desc              { return h.desc }
func (h *histogram) Describe(ch chan<- *Desc) { ch <- h.desc }
func (h *histogram) Collect(ch chan<- Metric) { ch <- h }

func (h *histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.upper, v)
	h.mu.Lock()
	if i < len(h.counts) {
		h.counts[i]++
	}
	h.sum += v
	h.count++
	h.mu.Unlock()
}

func (h *histogram) write(w *familyWriter) {
	h.mu.Lock()
	counts := append([]uint64(nil), h.counts...)
	sum, count := h.sum, h.count
	h.mu.Unlock()
	var cum uint64
	for i, up := range h.upper {
		cum += counts[i]
		w.sample("_bucket", h.desc, h.labels, []string{"le", formatFloat(up)}, float64(cum))
	}
	w.sample("_bucket", h.desc, h.labels, []string{"le", "+Inf"}, float64(count))
	w.sample("_sum", h.desc, h.labels, nil, sum)
	w.sample("_count", h.desc, h.labels, nil, float64(count))
}

// NewHistogram returns a histogram without labels.
func NewHistogram(o HistogramOpts) Histogram {
	return newHistogram(NewDesc(fqName(o.Namespace, o.Subsystem, o.Name), o.Help, nil, o.ConstLabels), o.Buckets, nil)
}

// HistogramVec is a histogram family with labels.
type HistogramVec struct{ *vec[Histogram] }

// NewHistogramVec returns a histogram family.
func NewHistogramVec(o HistogramOpts, labels []string) *HistogramVec {
	d := NewDesc(fqName(o.Namespace, o.Subsystem, o.Name), o.Help, labels, o.ConstLabels)
	return &HistogramVec{&vec[Histogram]{desc: d, children: map[string]Histogram{}, make: func(lvs []string) Histogram {
		return newHistogram(d, o.Buckets, lvs)
	}}}
}

// WithLabelValues returns the child for the label values.
func (v *HistogramVec) WithLabelValues(lvs ...string) Observer { return v.with(lvs) }

// With returns the child for labels.
func (v *HistogramVec) With(l Labels) Observer { return v.withLabels(l) }

// constMetric is a sample made at collect time.
type constMetric struct {
	desc   *Desc
	typ    ValueType
	v      float64
	labels []string
}

func (m constMetric) Desc() *Desc           { return m.desc }
func (m constMetric) write(w *familyWriter) { w.sample("", m.desc, m.labels, nil, m.v) }

// NewConstMetric returns a sample for a custom collector.
func NewConstMetric(d *Desc, t ValueType, v float64, lvs ...string) (Metric, error) {
	if d.err != nil {
		return nil, d.err
	}
	if len(lvs) != len(d.varLabels) {
		return nil, fmt.Errorf("metric %s: %d label values for %d labels", d.fqName, len(lvs), len(d.varLabels))
	}
	return constMetric{desc: d, typ: t, v: v, labels: lvs}, nil
}

// MustNewConstMetric is NewConstMetric that panics on a programming error.
func MustNewConstMetric(d *Desc, t ValueType, v float64, lvs ...string) Metric {
	m, err := NewConstMetric(d, t, v, lvs...)
	if err != nil {
		panic(err)
	}
	return m
}

type invalidMetric struct {
	desc *Desc
	err  error
}

func (m invalidMetric) Desc() *Desc       { return m.desc }
func (invalidMetric) write(*familyWriter) {}

// NewInvalidMetric reports a collect-time error; the scrape still serves
// every other metric.
func NewInvalidMetric(d *Desc, err error) Metric { return invalidMetric{desc: d, err: err} }

// funcMetric calls a function at collect time.
type funcMetric struct {
	desc *Desc
	typ  ValueType
	fn   func() float64
}

func (m *funcMetric) Desc() *Desc              { return m.desc }
func (m *funcMetric) Describe(ch chan<- *Desc) { ch <- m.desc }
func (m *funcMetric) Collect(ch chan<- Metric) { ch <- m }
func (m *funcMetric) write(w *familyWriter)    { w.sample("", m.desc, nil, nil, m.fn()) }

// GaugeFunc is a gauge whose value a function gives at scrape time.
type GaugeFunc interface {
	Collector
	Metric
}

// NewGaugeFunc returns a gauge read from fn at each scrape.
func NewGaugeFunc(o GaugeOpts, fn func() float64) GaugeFunc {
	return &funcMetric{desc: optsDesc(Opts(o), nil), typ: GaugeValue, fn: fn}
}

// NewCounterFunc returns a counter read from fn at each scrape.
func NewCounterFunc(o CounterOpts, fn func() float64) GaugeFunc {
	return &funcMetric{desc: optsDesc(Opts(o), nil), typ: CounterValue, fn: fn}
}

func typeOf(m Metric) string {
	switch x := m.(type) {
	case *value:
		return x.typ.String()
	case constMetric:
		return x.typ.String()
	case *funcMetric:
		return x.typ.String()
	case *histogram:
		return "histogram"
	}
	return "untyped"
}
