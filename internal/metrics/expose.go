package metrics

import (
	"bufio"
	"bytes"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// familyWriter writes samples in the text exposition format.
type familyWriter struct{ b *bytes.Buffer }

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

func (w *familyWriter) sample(suffix string, d *Desc, lvs []string, extra []string, v float64) {
	w.b.WriteString(d.fqName)
	w.b.WriteString(suffix)
	type kv struct{ k, v string }
	var pairs []kv
	for i, n := range d.varLabels {
		if i < len(lvs) {
			pairs = append(pairs, kv{n, lvs[i]})
		}
	}
	if len(d.constLabels) > 0 {
		keys := make([]string, 0, len(d.constLabels))
		for k := range d.constLabels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			pairs = append(pairs, kv{k, d.constLabels[k]})
		}
	}
	for i := 0; i+1 < len(extra); i += 2 {
		pairs = append(pairs, kv{extra[i], extra[i+1]})
	}
	if len(pairs) > 0 {
		w.b.WriteByte('{')
		for i, p := range pairs {
			if i > 0 {
				w.b.WriteByte(',')
			}
			w.b.WriteString(p.k)
			w.b.WriteString(`="`)
			w.b.WriteString(labelEscaper.Replace(p.v))
			w.b.WriteByte('"')
		}
		w.b.WriteByte('}')
	}
	w.b.WriteByte(' ')
	w.b.WriteString(formatFloat(v))
	w.b.WriteByte('\n')
}

// WriteText writes every metric of r in the text exposition format. A
// collector's error is returned after everything else was written.
func (r *Registry) WriteText(buf *bytes.Buffer) error {
	fams, err := r.gather()
	w := &familyWriter{b: buf}
	for _, f := range fams {
		if len(f.metrics) == 0 {
			continue
		}
		buf.WriteString("# HELP " + f.desc.fqName + " " + helpEscaper.Replace(f.desc.help) + "\n")
		buf.WriteString("# TYPE " + f.desc.fqName + " " + typeOf(f.metrics[0]) + "\n")
		for _, m := range f.metrics {
			m.write(w)
		}
	}
	return err
}

// HandlerOpts configure Handler.
type HandlerOpts struct {
	// MaxRequestsInFlight bounds concurrent scrapes (0: unbounded).
	MaxRequestsInFlight int
}

// Handler serves r at /metrics. Collect errors are reported in a comment
// and the scrape still returns every other metric.
func Handler(r *Registry, o HandlerOpts) http.Handler {
	var sem chan struct{}
	if o.MaxRequestsInFlight > 0 {
		sem = make(chan struct{}, o.MaxRequestsInFlight)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if sem != nil {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			default:
				http.Error(w, "too many scrapes in flight", http.StatusServiceUnavailable)
				return
			}
		}
		var buf bytes.Buffer
		err := r.WriteText(&buf)
		if err != nil {
			buf.WriteString("# collect error: " + helpEscaper.Replace(err.Error()) + "\n")
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		bw := bufio.NewWriter(w)
		_, _ = bw.Write(buf.Bytes())
		_ = bw.Flush()
	})
}

// ToFloat64 returns the value of a collector that yields exactly one
// counter or gauge sample (tests).
func ToFloat64(c Collector) float64 {
	ch := make(chan Metric, 8)
	go func() { c.Collect(ch); close(ch) }()
	var ms []Metric
	for m := range ch {
		ms = append(ms, m)
	}
	if len(ms) != 1 {
		panic("metrics: ToFloat64 needs a collector with exactly one sample")
	}
	switch m := ms[0].(type) {
	case *value:
		return m.v.Load()
	case constMetric:
		return m.v
	case *funcMetric:
		return m.fn()
	}
	panic("metrics: ToFloat64 on a histogram")
}
