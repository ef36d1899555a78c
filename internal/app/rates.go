package app

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/queue"
)

// Observed rates: every flow's records are counted as the queue commits
// them (countingQueue, between the router and the store), sampled every
// rateInterval, and turned into a moving rate per flow over rateWindow,
// which the status compares with the flow's expect.rate.
const (
	// defaultRateInterval is how often the counts are sampled.
	defaultRateInterval = 10 * time.Second
	// defaultRateWindow is the span an observed rate is measured over: a
	// minute smooths a machine's cycle without hiding a change of pattern.
	defaultRateWindow = time.Minute
	// driftFactor: a flow running faster than this times its declared rate
	// over a whole window is drifting. Records come in bursts (a shift
	// start, a batch of reports), so a factor of 2 would warn about normal
	// bursts; 3 over a full minute means the declaration is out of date.
	driftFactor = 3.0
	// driftMinRecords: a flow declared at a few records an hour is not
	// drifting because of one record in a minute; the factor rule needs at
	// least this many records in the window.
	driftMinRecords = 5
)

// flowStream is a flow's stream, the unit records are counted by.
type flowStream struct{ flow, stream string }

// countingQueue is the router's queue: it counts the records each flow's
// appends committed (not the duplicates and conflicts the queue refused),
// by stream. Replayed dead letters count too: they go through the router
// again.
type countingQueue struct {
	flow.Queue
	mu sync.Mutex
	n  map[flowStream]uint64
}

func newCountingQueue(q flow.Queue) *countingQueue {
	return &countingQueue{Queue: q, n: map[flowStream]uint64{}}
}

// Append implements flow.Queue.
func (q *countingQueue) Append(ctx context.Context, entries []queue.Entry, states ...queue.StateWrite) (queue.AppendResult, error) {
	res, err := q.Queue.Append(ctx, entries, states...)
	if err != nil {
		return res, err
	}
	q.mu.Lock()
	for i, e := range entries {
		if i < len(res.Seqs) && res.Seqs[i] != 0 && e.Record.Flow != "" {
			q.n[flowStream{e.Record.Flow, e.Stream}]++
		}
	}
	q.mu.Unlock()
	return res, nil
}

func (q *countingQueue) counts() map[flowStream]uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[flowStream]uint64, len(q.n))
	for k, v := range q.n {
		out[k] = v
	}
	return out
}

// rateSampler keeps the samples of the counts that cover the last window.
type rateSampler struct {
	now    func() time.Time
	window time.Duration
	read   func() map[flowStream]uint64

	mu      sync.Mutex
	samples []rateSample // oldest first
}

type rateSample struct {
	at time.Time
	n  map[flowStream]uint64
}

func newRateSampler(window time.Duration, now func() time.Time, read func() map[flowStream]uint64) *rateSampler {
	if window <= 0 {
		window = defaultRateWindow
	}
	return &rateSampler{now: now, window: window, read: read}
}

// sample records the counts now and forgets the samples the window no
// longer needs: it keeps the newest one at or before its start, so a
// rate always spans at least the window once the sampler has run that
// long.
func (s *rateSampler) sample() {
	smp := rateSample{at: s.now(), n: s.read()}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, smp)
	start := smp.at.Add(-s.window)
	for len(s.samples) > 2 && !s.samples[1].at.After(start) {
		s.samples = s.samples[1:]
	}
}

// run samples every interval until ctx ends.
func (s *rateSampler) run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = defaultRateInterval
	}
	s.sample()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sample()
		}
	}
}

// observed is the rates between the oldest and the newest sample.
type observed struct {
	perSecond map[flowStream]float64
	// span is the time the rates are measured over; full says it covers
	// the whole window, so drift may be judged.
	span time.Duration
	full bool
}

// rates returns the records per second of each flow's stream over the
// samples held.
func (s *rateSampler) rates() observed {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := observed{perSecond: map[flowStream]float64{}}
	if len(s.samples) < 2 {
		return o
	}
	first, last := s.samples[0], s.samples[len(s.samples)-1]
	o.span = last.at.Sub(first.at)
	o.full = o.span >= s.window
	if o.span <= 0 {
		return o
	}
	for k, n := range last.n {
		if d := n - first.n[k]; n >= first.n[k] && d > 0 {
			o.perSecond[k] = float64(d) / o.span.Seconds()
		}
	}
	return o
}

// FlowStatus is a flow's declared shape against what it does, in the
// status output. Rates are records per second.
type FlowStatus struct {
	Name string `json:"name"`
	// DeclaredRate is expect.rate in records/s; 0 when the flow declares none.
	DeclaredRate float64 `json:"declared_rate"`
	Declared     string  `json:"declared,omitempty"`
	Urgent       bool    `json:"urgent"`
	// ObservedRate is the records the flow appended per second over
	// ObservedSeconds (the last minute once the gateway has run that long).
	ObservedRate    float64 `json:"observed_rate"`
	ObservedSeconds float64 `json:"observed_seconds"`
	// Pattern is the integration pattern of each sink, in "to" order:
	// odata, mes, dmf, or the type of a sink outside F&O.
	Pattern string `json:"pattern"`
	// Drift says how the flow's traffic no longer fits its declaration or
	// its pattern; it is also among the status problems.
	Drift string `json:"drift,omitempty"`
}

// flowStatuses compares each flow of cfg, in file order, with its
// observed rates: the flow's rate is its records over all its streams
// divided by its number of sinks (each record goes to each sink once; a
// record an overflow sends to DMF goes there instead of its OData sink).
func flowStatuses(cfg *config.Config, o observed, window time.Duration) []FlowStatus {
	total := map[string]float64{}
	for k, r := range o.perSecond {
		total[k.flow] += r
	}
	var out []FlowStatus
	for _, name := range cfg.FlowOrder {
		f := cfg.Flows[name]
		if f == nil {
			continue
		}
		fs := FlowStatus{Name: name, DeclaredRate: f.Expect.PerSecond(), Declared: f.Expect.Rate, Urgent: f.Expect.Urgent,
			ObservedSeconds: o.span.Seconds()}
		if n := len(f.To); n > 0 {
			fs.ObservedRate = total[name] / float64(n)
		}
		var patterns []string
		for _, sn := range f.To {
			if s := cfg.Sinks[sn]; s != nil {
				patterns = append(patterns, patternOf(s.Type))
			}
		}
		fs.Pattern = strings.Join(patterns, ",")
		if o.full {
			fs.Drift = flowDrift(cfg, name, f, fs, o, window)
		}
		out = append(out, fs)
	}
	return out
}

// patternOf names a sink type's integration pattern.
func patternOf(typ string) string {
	if p, ok := strings.CutPrefix(typ, "fo."); ok {
		return p
	}
	return typ
}

// flowDrift judges a flow's observed rates, worst first: telemetry volume
// to any F&O sink, more than a synchronous sink tolerates, more than
// driftFactor times the declared rate.
func flowDrift(cfg *config.Config, name string, f *config.Flow, fs FlowStatus, o observed, window time.Duration) string {
	over := "over the last " + windowWords(window)
	declared := ""
	if f.Expect.Rate != "" {
		declared = " (it declares " + f.Expect.Rate + ")"
	}
	// Per sink: the stream of a sync sink carries only what the flow did
	// not overflow to DMF.
	var syncMsg string
	for _, sn := range f.To {
		s := cfg.Sinks[sn]
		if s == nil || !strings.HasPrefix(s.Type, "fo.") {
			continue
		}
		r := o.perSecond[flowStream{name, streamOf(cfg, name, sn)}]
		switch {
		case r >= telemetryRate:
			return fmt.Sprintf("flow %s ran at %s %s to sink %s (%s)%s: that is telemetry volume, and F&O is not a telemetry store; %s",
				name, rateWords(r), over, sn, s.Type, declared, telemetryAdvice)
		case isSyncSink(s.Type) && r > maxSyncRate && syncMsg == "":
			syncMsg = fmt.Sprintf("flow %s ran at %s %s to sink %s (%s)%s: above the %s F&O's throttling tolerates for one client, one request per record; %s",
				name, rateWords(r), over, sn, s.Type, declared, rateWords(maxSyncRate), bulkAdvice())
		}
	}
	if syncMsg != "" {
		return syncMsg
	}
	if fs.DeclaredRate > 0 && fs.ObservedRate > driftFactor*fs.DeclaredRate && fs.ObservedRate*window.Seconds() >= driftMinRecords {
		return fmt.Sprintf("flow %s declares %s but ran at %s %s, more than %g times that; "+
			"find what sends more than planned, or declare the real rate in expect so check-config judges the pattern for it",
			name, f.Expect.Rate, rateWords(fs.ObservedRate), over, driftFactor)
	}
	return ""
}

// rateWords prints records per second the way a person reads them.
func rateWords(r float64) string {
	var n string
	switch {
	case r >= 10:
		n = fmt.Sprintf("%.0f", r)
	case r >= 1:
		n = strings.TrimSuffix(fmt.Sprintf("%.1f", r), ".0")
	default:
		n = fmt.Sprintf("%.2g", r)
	}
	return n + " records/s"
}

func windowWords(d time.Duration) string {
	if d == time.Minute {
		return "minute"
	}
	return d.String()
}

// flowProblems are the drifts of statuses, in file order, for the status
// problems.
func flowProblems(statuses []FlowStatus) []string {
	var out []string
	for _, f := range statuses {
		if f.Drift != "" {
			out = append(out, f.Drift)
		}
	}
	return out
}
