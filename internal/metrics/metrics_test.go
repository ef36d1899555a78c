package metrics

import (
	"bytes"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

type failing struct{ d *Desc }

func (f failing) Describe(ch chan<- *Desc) { ch <- f.d }
func (f failing) Collect(ch chan<- Metric) {
	ch <- NewInvalidMetric(f.d, errors.New("queue stats: closed"))
}

func TestExposition(t *testing.T) {
	r := NewRegistry()
	c := NewCounterVec(CounterOpts{Name: "plantgate_sink_delivered_total", Help: "Records delivered.\nTwo lines."}, []string{"stream"})
	g := NewGauge(GaugeOpts{Namespace: "plantgate", Subsystem: "queue", Name: "full", Help: "Full.", ConstLabels: Labels{"gateway": "l3"}})
	h := NewHistogramVec(HistogramOpts{Name: "plantgate_sink_write_duration_seconds", Help: "Writes.", Buckets: []float64{0.1, 1}}, []string{"stream"})
	r.MustRegister(c, g, h, NewGaugeFunc(GaugeOpts{Name: "plantgate_build_info", Help: "Build.", ConstLabels: Labels{"version": "v1"}}, func() float64 { return 1 }))
	c.WithLabelValues(`b"\`).Add(2)
	c.WithLabelValues("a").Inc()
	g.Set(1)
	h.WithLabelValues("a").Observe(0.05)
	h.WithLabelValues("a").Observe(0.5)
	h.WithLabelValues("a").Observe(5)
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	want := `# HELP plantgate_build_info Build.
# TYPE plantgate_build_info gauge
plantgate_build_info{version="v1"} 1
# HELP plantgate_queue_full Full.
# TYPE plantgate_queue_full gauge
plantgate_queue_full{gateway="l3"} 1
# HELP plantgate_sink_delivered_total Records delivered.\nTwo lines.
# TYPE plantgate_sink_delivered_total counter
plantgate_sink_delivered_total{stream="a"} 1
plantgate_sink_delivered_total{stream="b\"\\"} 2
# HELP plantgate_sink_write_duration_seconds Writes.
# TYPE plantgate_sink_write_duration_seconds histogram
plantgate_sink_write_duration_seconds_bucket{stream="a",le="0.1"} 1
plantgate_sink_write_duration_seconds_bucket{stream="a",le="1"} 2
plantgate_sink_write_duration_seconds_bucket{stream="a",le="+Inf"} 3
plantgate_sink_write_duration_seconds_sum{stream="a"} 5.55
plantgate_sink_write_duration_seconds_count{stream="a"} 3
`
	if got := buf.String(); got != want {
		t.Fatalf("exposition:\n%s\nwant:\n%s", got, want)
	}
	if v := ToFloat64(c.WithLabelValues("a")); v != 1 {
		t.Fatalf("ToFloat64 = %v, want 1", v)
	}
	if n, _ := r.Count("plantgate_queue_full", "nope"); n != 1 {
		t.Fatalf("Count = %d, want 1", n)
	}
}

func TestRegistration(t *testing.T) {
	r := NewRegistry()
	a := NewCounter(CounterOpts{Name: "x_total", Help: "x"})
	r.MustRegister(a)
	err := r.Register(NewCounter(CounterOpts{Name: "x_total", Help: "x"}))
	var are AlreadyRegisteredError
	if !errors.As(err, &are) || are.ExistingCollector != a {
		t.Fatalf("duplicate: %v, want AlreadyRegisteredError with the existing collector", err)
	}
	if err := r.Register(NewCounter(CounterOpts{Name: "bad-name", Help: "x"})); err == nil {
		t.Fatal("an invalid name was accepted")
	}
	if !r.Unregister(a) || r.Register(a) != nil {
		t.Fatal("unregister then register failed")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a counter went down without a panic")
		}
	}()
	a.Add(-1)
}

func TestHandlerKeepsServingOnCollectError(t *testing.T) {
	r := NewRegistry()
	r.MustRegister(failing{NewDesc("plantgate_queue_records", "h", nil, nil)}, NewRuntimeCollector())
	rec := httptest.NewRecorder()
	Handler(r, HandlerOpts{MaxRequestsInFlight: 1}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{"go_goroutines ", "process_resident_memory_bytes ", "# collect error: queue stats: closed"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q:\n%s", want, body)
		}
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
}
