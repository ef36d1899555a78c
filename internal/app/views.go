package app

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/queue"
)

// SourceCounters are a source's message counts for the status page.
type SourceCounters struct {
	Received        float64 `json:"received"`
	Unmatched       float64 `json:"unmatched"`
	Duplicates      float64 `json:"duplicates"`
	DecodeFailures  float64 `json:"decode_failures"`
	LastDecodeError string  `json:"last_decode_error,omitempty"`
}

// counterValue reads a counter's current value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil || m.Counter == nil {
		return 0
	}
	return m.Counter.GetValue()
}

func (a *App) sourceCounters(name string, details map[string]any) *SourceCounters {
	sc := &SourceCounters{}
	if a.m != nil {
		sc.Received = counterValue(a.m.Messages.WithLabelValues(name))
		sc.Unmatched = counterValue(a.m.Unmatched.WithLabelValues(name))
		for _, fl := range a.flows {
			if a.cfg.Flows[fl.Name].From != name {
				continue
			}
			for _, sn := range fl.Sinks {
				sc.Duplicates += counterValue(a.m.Duplicates.WithLabelValues(fl.Stream(sn)))
			}
		}
	}
	switch v := details["decode_failures"].(type) {
	case int64:
		sc.DecodeFailures = float64(v)
	case int:
		sc.DecodeFailures = float64(v)
	case float64:
		sc.DecodeFailures = v
	}
	if e, ok := details["last_decode_error"].(string); ok {
		sc.LastDecodeError = e
	}
	return sc
}

// EnvView is an F&O environment on the status page.
type EnvView struct {
	Name        string             `json:"name"`
	URL         string             `json:"url"`
	Company     string             `json:"company,omitempty"`
	TokenOK     bool               `json:"token_ok"`
	TokenError  string             `json:"token_error,omitempty"`
	Breaker     d365.BreakerStatus `json:"breaker"`
	Limiter     d365.LimiterStatus `json:"limiter"`
	LastSuccess time.Time          `json:"last_success_at,omitzero"`
	// Throttled429 is the 429 answers F&O gave since the start.
	Throttled429 int64 `json:"throttled_429"`
}

func (a *App) envViews() []EnvView {
	if a.fo == nil {
		return nil
	}
	var out []EnvView
	for _, e := range a.fo.Envs() {
		st := e.Status()
		v := EnvView{Name: e.Name(), URL: e.URL(), Company: e.Company(), Breaker: e.Breaker().Status(), Limiter: e.Limiter().Status()}
		v.TokenError, _ = st["token_error"].(string)
		v.TokenOK = v.TokenError == ""
		v.LastSuccess, _ = st["last_success_at"].(time.Time)
		v.Throttled429 = v.Limiter.Throttled
		out = append(out, v)
	}
	return out
}

// FlowPath is one flow from its source to its sinks.
type FlowPath struct {
	Flow   string `json:"flow"`
	Source string `json:"source"`
	// SourceState is up, degraded or down.
	SourceState string `json:"source_state"`
	// State is the worst of the source's and the sinks' states.
	State string     `json:"state"`
	Rate  FlowStatus `json:"rate"`
	Legs  []FlowLeg  `json:"legs"`
}

// FlowLeg is a flow's path to one sink: its queue stream.
type FlowLeg struct {
	Sink      string        `json:"sink"`
	Type      string        `json:"type"`
	Stream    string        `json:"stream"`
	State     string        `json:"state"`
	Why       string        `json:"why,omitempty"`
	Pending   int64         `json:"pending"`
	OldestAge time.Duration `json:"oldest_age_ns"`
	Dead      int64         `json:"dead"`
	Paused    bool          `json:"paused"`
}

func worse(a, b string) string {
	rank := map[string]int{"up": 0, "degraded": 1, "down": 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

func (a *App) flowPaths(st Status) []FlowPath {
	comp := map[string]ComponentHealth{}
	for _, c := range st.Health.Components {
		comp[c.Kind+"/"+c.Name] = c
	}
	streams := map[string]queue.StreamStats{}
	for _, s := range st.Queue.Streams {
		streams[s.Stream] = s
	}
	rates := map[string]FlowStatus{}
	for _, f := range st.Flows {
		rates[f.Name] = f
	}
	a.mu.Lock()
	paused := map[string]bool{}
	for f := range a.paused {
		paused[f] = true
	}
	a.mu.Unlock()
	var out []FlowPath
	for _, fl := range a.flows {
		fc := a.cfg.Flows[fl.Name]
		src := comp["source/"+fc.From]
		p := FlowPath{Flow: fl.Name, Source: fc.From, SourceState: orState(src.State), Rate: rates[fl.Name]}
		p.State = p.SourceState
		sinks := fl.Sinks
		if o := fc.Overflow.Sink; o != "" {
			sinks = append(append([]string(nil), sinks...), o)
		}
		for _, sn := range sinks {
			sc := comp["sink/"+sn]
			stream := fl.Stream(sn)
			ss := streams[stream]
			leg := FlowLeg{Sink: sn, Type: sc.Type, Stream: stream, State: orState(sc.State), Why: sc.Why,
				Pending: ss.Records, OldestAge: ss.OldestAge, Dead: ss.Dead, Paused: paused[fl.Name]}
			if leg.Paused || leg.Dead > 0 {
				leg.State = worse(leg.State, "degraded")
			}
			p.State = worse(p.State, leg.State)
			p.Legs = append(p.Legs, leg)
		}
		if p.Rate.Drift != "" {
			p.State = worse(p.State, "degraded")
		}
		out = append(out, p)
	}
	return out
}

func orState(s string) string {
	if s == "" {
		return "down"
	}
	return s
}
