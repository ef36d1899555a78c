// Package metrics is plantgate's small Prometheus client: counters, gauges
// and histograms with labels, custom collectors, a registry and the text
// exposition format (version 0.0.4) served at /metrics.
//
// It mirrors the part of github.com/prometheus/client_golang that plantgate
// uses, with the same names, so code reads the same; it exists because that
// library (with protobuf) adds about 3 MB to a binary that must stay small
// on plant hardware. There is no global registry: the gateway builds one
// and hands it to components through pipeline.Env.
package metrics

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Labels are label names and values.
type Labels map[string]string

// ValueType is the type of a constant metric.
type ValueType int

// Value types.
const (
	CounterValue ValueType = iota + 1
	GaugeValue
	UntypedValue
)

func (v ValueType) String() string {
	switch v {
	case CounterValue:
		return "counter"
	case GaugeValue:
		return "gauge"
	}
	return "untyped"
}

// Desc describes a metric family: name, help, label names.
type Desc struct {
	fqName      string
	help        string
	varLabels   []string
	constLabels Labels
	err         error
}

// NewDesc returns a descriptor. An invalid name is reported when the
// collector is registered.
func NewDesc(fqName, help string, variableLabels []string, constLabels Labels) *Desc {
	d := &Desc{fqName: fqName, help: help, varLabels: variableLabels, constLabels: constLabels}
	if !validName(fqName) {
		d.err = fmt.Errorf("invalid metric name %q", fqName)
	}
	for _, l := range variableLabels {
		if !validName(l) || strings.HasPrefix(l, "__") {
			d.err = fmt.Errorf("metric %s: invalid label name %q", fqName, l)
		}
	}
	return d
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		ok := r == '_' || r == ':' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

func (d *Desc) String() string { return d.fqName }

// Metric is one sample (or one histogram) of a family.
type Metric interface {
	Desc() *Desc
	write(w *familyWriter)
}

// Collector is anything that yields metrics at scrape time.
type Collector interface {
	Describe(chan<- *Desc)
	Collect(chan<- Metric)
}

// Registerer registers collectors; components receive one.
type Registerer interface {
	Register(Collector) error
	MustRegister(...Collector)
	Unregister(Collector) bool
}

// AlreadyRegisteredError is returned by Register when a collector with the
// same metric names is registered; ExistingCollector is the one to use.
type AlreadyRegisteredError struct {
	ExistingCollector, NewCollector Collector
}

func (e AlreadyRegisteredError) Error() string {
	return "duplicate metrics collector registration attempted"
}

// Registry holds collectors. It is safe for concurrent use.
type Registry struct {
	mu         sync.RWMutex
	collectors []Collector
	byName     map[string]Collector
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{byName: map[string]Collector{}} }

func describe(c Collector) []*Desc {
	ch := make(chan *Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	var out []*Desc
	for d := range ch {
		out = append(out, d)
	}
	return out
}

// Register adds c.
func (r *Registry) Register(c Collector) error {
	descs := describe(c)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range descs {
		if d.err != nil {
			return d.err
		}
		if ex, ok := r.byName[d.fqName]; ok {
			return AlreadyRegisteredError{ExistingCollector: ex, NewCollector: c}
		}
	}
	for _, d := range descs {
		r.byName[d.fqName] = c
	}
	r.collectors = append(r.collectors, c)
	return nil
}

// MustRegister registers cs and panics on an error: a programming error.
func (r *Registry) MustRegister(cs ...Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister removes c and reports whether it was registered.
func (r *Registry) Unregister(c Collector) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.collectors {
		if x == c {
			r.collectors = append(r.collectors[:i], r.collectors[i+1:]...)
			for n, y := range r.byName {
				if y == c {
					delete(r.byName, n)
				}
			}
			return true
		}
	}
	return false
}

// gather collects every metric, grouped by family name, sorted.
func (r *Registry) gather() ([]*family, error) {
	r.mu.RLock()
	cs := append([]Collector(nil), r.collectors...)
	r.mu.RUnlock()
	fams := map[string]*family{}
	var errs []error
	for _, c := range cs {
		ch := make(chan Metric, 64)
		go func() { c.Collect(ch); close(ch) }()
		for m := range ch {
			if im, ok := m.(invalidMetric); ok {
				errs = append(errs, im.err)
				continue
			}
			d := m.Desc()
			f := fams[d.fqName]
			if f == nil {
				f = &family{desc: d}
				fams[d.fqName] = f
			}
			f.metrics = append(f.metrics, m)
		}
	}
	out := make([]*family, 0, len(fams))
	for _, f := range fams {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].desc.fqName < out[j].desc.fqName })
	return out, errors.Join(errs...)
}

// Count returns how many metric families with the given names have at least
// one sample (all families when names is empty).
func (r *Registry) Count(names ...string) (int, error) {
	fams, err := r.gather()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	n := 0
	for _, f := range fams {
		if len(want) == 0 || want[f.desc.fqName] {
			n++
		}
	}
	return n, err
}

type family struct {
	desc    *Desc
	metrics []Metric
}

// ---- values ----

// atomicFloat is a float64 updated without locks.
type atomicFloat struct{ bits atomic.Uint64 }

func (a *atomicFloat) Load() float64   { return math.Float64frombits(a.bits.Load()) }
func (a *atomicFloat) Store(v float64) { a.bits.Store(math.Float64bits(v)) }
func (a *atomicFloat) Add(v float64) {
	for {
		old := a.bits.Load()
		if a.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Opts name a metric. Namespace and Subsystem, if set, prefix Name.
type Opts struct {
	Namespace, Subsystem, Name, Help string
	ConstLabels                      Labels
}

// CounterOpts name a counter.
type CounterOpts Opts

// GaugeOpts name a gauge.
type GaugeOpts Opts

// HistogramOpts name a histogram and give its bucket upper bounds.
type HistogramOpts struct {
	Namespace, Subsystem, Name, Help string
	ConstLabels                      Labels
	Buckets                          []float64
}

func fqName(ns, sub, name string) string {
	parts := []string{}
	for _, p := range []string{ns, sub, name} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "_")
}

// DefBuckets are the default histogram buckets (seconds).
var DefBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
