package flow

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/codec"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// Queue is what the engine needs of the queue; *queue.Store implements it.
type Queue interface {
	Append(ctx context.Context, entries []queue.Entry, states ...queue.StateWrite) (queue.AppendResult, error)
	AddDead(ctx context.Context, stream string, recs []pipeline.Record, reasons []string) (int, error)
	ValidateEntry(e queue.Entry) error
	KeyPending(stream, key string) int
	Lease(stream string, max int, ttl time.Duration) ([]pipeline.Record, error)
	Ack(ctx context.Context, stream string, seqs []uint64, states ...queue.StateWrite) error
	Nack(stream string, seqs []uint64)
	DeadLetter(ctx context.Context, stream string, dead []queue.Dead, states ...queue.StateWrite) error
	Wait(stream string) <-chan struct{}
}

var _ Queue = (*queue.Store)(nil)

var _ pipeline.StateEmitter = (*emitter)(nil)

// Metrics are the engine's Prometheus collectors.
type Metrics struct {
	Messages   *prometheus.CounterVec
	Unmatched  *prometheus.CounterVec
	Duplicates *prometheus.CounterVec
	Conflicts  *prometheus.CounterVec
	Appended   *prometheus.CounterVec
	// Overflowed counts records an overflow flow sent to DMF;
	// OverflowSwitches its switches between the paths.
	Overflowed       *prometheus.CounterVec
	OverflowSwitches *prometheus.CounterVec
	DeadLettered     *prometheus.CounterVec
	Delivered        *prometheus.CounterVec
	Retries          *prometheus.CounterVec
	WriteSeconds     *prometheus.HistogramVec
}

// NewMetrics registers the engine's collectors on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Messages:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_source_messages_total", Help: "Messages emitted by each source."}, []string{"source"}),
		Unmatched:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_source_unmatched_total", Help: "Messages no flow matched."}, []string{"source"}),
		Duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_queue_duplicates_total", Help: "Records dropped because their id was seen within the dedup window."}, []string{"stream"}),
		Conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_queue_conflicts_total",
			Help: "Records whose id was seen within the dedup window with different content: dead-lettered with both versions."}, []string{"stream"}),
		Appended: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_queue_appended_total", Help: "Records appended to each stream."}, []string{"stream"}),
		Overflowed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_flow_overflow_records_total",
			Help: "Records an overflow flow sent to its DMF sink instead of OData."}, []string{"flow"}),
		OverflowSwitches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_flow_overflow_switches_total",
			Help: "Switches of overflow flows between OData and DMF, by the path switched to."}, []string{"flow", "to"}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_dead_lettered_total", Help: "Records and messages dead-lettered."}, []string{"stream"}),
		Delivered:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_sink_delivered_total", Help: "Records delivered and acked."}, []string{"stream"}),
		Retries:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_sink_retries_total", Help: "Write attempts that will be retried, by cause."}, []string{"stream", "cause"}),
		WriteSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "plantgate_sink_write_duration_seconds", Help: "Duration of sink writes.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"stream"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Messages, m.Unmatched, m.Duplicates, m.Conflicts, m.Appended, m.Overflowed, m.OverflowSwitches, m.DeadLettered, m.Delivered, m.Retries, m.WriteSeconds} {
			reg.MustRegister(c)
		}
	}
	return m
}

// Router turns the messages of sources into queue entries according to the
// compiled flows.
type Router struct {
	q     Queue
	flows map[string][]*Flow // by source
	log   zerolog.Logger
	m     *Metrics
	now   func() time.Time
	// keepUnmatched lists the sources whose unmatched messages are
	// dead-lettered rather than only counted.
	keepUnmatched map[string]bool
	// decoders decode a source's raw bytes again for Remap (nil: JSON).
	decoders map[string]pipeline.Redecoder
	// pressure reports the pressure on overflow flows' streams.
	pressure Pressure
}

// SetDecoder gives the router the decoder of source's raw bytes, used to
// map replayed records again (Remap). Call it before the runners run.
func (r *Router) SetDecoder(source string, dec pipeline.Redecoder) { r.decoders[source] = dec }

// Remap maps a replayed record again from its source message (Raw)
// through its flow's current config, keeping its stream and sequence. It
// fails when the message no longer decodes, its flow is gone or no longer
// selects it, or the mapping fails: the runner dead-letters the record
// again with that reason.
func (r *Router) Remap(rec pipeline.Record) (pipeline.Record, error) {
	var fl *Flow
	for _, f := range r.flows[rec.Source] {
		if f.Name == rec.Flow {
			fl = f
		}
	}
	if fl == nil {
		return rec, fmt.Errorf("replay: flow %q of source %q is no longer configured", rec.Flow, rec.Source)
	}
	dec := r.decoders[rec.Source]
	if dec == nil {
		d, _ := codec.New(codec.Options{})
		dec = jsonRedecoder{d}
	}
	meta := plainMeta(rec.Meta)
	payload, err := safeRedecode(dec, rec.Raw, meta)
	if err != nil {
		return rec, fmt.Errorf("replay: decode the source message again: %w", err)
	}
	nr, ok, err := fl.apply(rec.Source, pipeline.Message{Raw: rec.Raw, Payload: payload, Meta: meta, Time: rec.Time})
	switch {
	case err != nil:
		return rec, fmt.Errorf("replay: flow %s: %w", fl.Name, err)
	case !ok:
		return rec, fmt.Errorf("replay: flow %s no longer selects this message (when: %s)", fl.Name, fl.cfg.When.Src)
	}
	nr.Stream, nr.Seq, nr.Attempts = rec.Stream, rec.Seq, rec.Attempts
	return nr, nil
}

// KeepUnmatched makes the router dead-letter the messages of source that no
// flow selects (reason "no flow matched"), instead of only counting them.
// Call it before the sources run.
func (r *Router) KeepUnmatched(source string) { r.keepUnmatched[source] = true }

// NewRouter builds a router for flows over q.
func NewRouter(q Queue, flows []*Flow, log zerolog.Logger, m *Metrics) *Router {
	r := &Router{q: q, flows: map[string][]*Flow{}, log: log, m: m, now: time.Now, keepUnmatched: map[string]bool{}, decoders: map[string]pipeline.Redecoder{}}
	if r.m == nil {
		r.m = NewMetrics(nil)
	}
	for _, f := range flows {
		r.flows[f.Source] = append(r.flows[f.Source], f)
	}
	r.m.initFlows(flows)
	return r
}

// initFlows creates the router's counters of every source, stream and
// overflow flow of flows at 0, so a scrape shows them before their first
// event and rate() and increase() see the first one.
func (m *Metrics) initFlows(flows []*Flow) {
	for _, f := range flows {
		m.Messages.WithLabelValues(f.Source)
		m.Unmatched.WithLabelValues(f.Source)
		m.DeadLettered.WithLabelValues(SourceDeadStream(f.Source))
		for _, stream := range f.streams {
			m.Duplicates.WithLabelValues(stream)
			m.Conflicts.WithLabelValues(stream)
			m.Appended.WithLabelValues(stream)
			m.DeadLettered.WithLabelValues(stream)
		}
		if f.overflow != nil {
			m.Overflowed.WithLabelValues(f.Name)
			m.OverflowSwitches.WithLabelValues(f.Name, "odata")
			m.OverflowSwitches.WithLabelValues(f.Name, "dmf")
		}
	}
}

// initStream creates a runner's counters and histogram of stream at 0.
func (m *Metrics) initStream(stream string) {
	m.Delivered.WithLabelValues(stream)
	m.DeadLettered.WithLabelValues(stream)
	m.WriteSeconds.WithLabelValues(stream)
	for _, cause := range retryCauses {
		m.Retries.WithLabelValues(stream, cause)
	}
}

// The values of plantgate_sink_retries_total's cause label.
const (
	causeTransient = "transient"
	causeThrottled = "throttled"
)

var retryCauses = []string{causeTransient, causeThrottled}

// Emitter returns the emitter handed to source's Run.
func (r *Router) Emitter(source string) pipeline.Emitter { return &emitter{r: r, source: source} }

type emitter struct {
	r      *Router
	source string
}

// Emit implements pipeline.Emitter.
func (e *emitter) Emit(ctx context.Context, msgs ...pipeline.Message) error {
	return e.r.route(ctx, e.source, msgs, nil)
}

// EmitWithState implements pipeline.StateEmitter.
func (e *emitter) EmitWithState(ctx context.Context, states []pipeline.StateWrite, msgs ...pipeline.Message) error {
	ws := make([]queue.StateWrite, len(states))
	for i, s := range states {
		ws[i] = queue.StateWrite{Scope: SourceStateScope(e.source), Name: s.Name, Value: s.Value, Delete: s.Delete}
	}
	return e.r.route(ctx, e.source, msgs, ws)
}

// SourceStateScope is the queue state scope of a source.
func SourceStateScope(source string) string { return "source." + source }

// SinkStateScope is the queue state scope of a sink.
func SinkStateScope(sink string) string { return "sink." + sink }

// Route maps msgs without queueing them; check-config and tests use it to
// show what a message would become.
func (r *Router) Route(source string, m pipeline.Message) ([]queue.Entry, []error) {
	return r.appendRoute(nil, source, m)
}

// appendRoute appends what m maps to in source's flows to entries.
func (r *Router) appendRoute(entries []queue.Entry, source string, m pipeline.Message) ([]queue.Entry, []error) {
	var errs []error
	for _, f := range r.flows[source] {
		rec, ok, err := f.apply(source, m)
		if err != nil {
			errs = append(errs, fmt.Errorf("flow %s: %w", f.Name, err))
			continue
		}
		if !ok {
			continue
		}
		for _, s := range f.Sinks {
			rr := rec
			rr.Stream = f.Stream(s)
			entries = append(entries, queue.Entry{Stream: rr.Stream, Record: rr})
		}
	}
	return entries, errs
}

func (r *Router) route(ctx context.Context, source string, msgs []pipeline.Message, states []queue.StateWrite) error {
	entries := make([]queue.Entry, 0, len(msgs)) // most messages make one record
	from := make([]int, 0, len(msgs))            // the message of each entry
	var dead []pipeline.Record
	var reasons []string
	unmatched := 0
	deadLetter := func(m *pipeline.Message, why, what string) {
		dead = append(dead, pipeline.Record{Source: source, Time: m.Time, Raw: m.Raw, Meta: m.Meta, ID: deadLetterID(m, what)})
		reasons = append(reasons, why)
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Time.IsZero() {
			m.Time = r.now().UTC()
		}
		if m.DecodeErr != nil {
			deadLetter(m, "decode: "+m.DecodeErr.Error(), "decode")
			continue
		}
		before := len(entries)
		var errs []error
		entries, errs = r.appendRoute(entries, source, *m)
		for _, err := range errs {
			deadLetter(m, err.Error(), err.Error())
		}
		if len(entries) == before && len(errs) == 0 {
			unmatched++
			if r.keepUnmatched[source] {
				deadLetter(m, unmatchedReason(r.flows[source], m.Meta), "unmatched")
			}
		}
		for range len(entries) - before {
			from = append(from, i)
		}
	}
	r.m.Messages.WithLabelValues(source).Add(float64(len(msgs)))
	if unmatched > 0 {
		r.m.Unmatched.WithLabelValues(source).Add(float64(unmatched))
	}
	// Overflow flows decide each record's path and keep the decision
	// until the records are committed.
	unlock := r.lockOverflows(source)
	defer unlock()
	r.divert(source, entries)
	// Dead letters first: if the process dies between the two commits the
	// upstream redelivers (nothing was acked), and ids keep both the
	// records and the dead letters single.
	if err := r.addDead(ctx, source, dead, reasons); err != nil {
		return err
	}
	if len(entries) == 0 && len(states) == 0 {
		return nil
	}
	res, err := r.q.Append(ctx, entries, states...)
	if errors.Is(err, queue.ErrTooLarge) || errors.Is(err, queue.ErrBadName) {
		// Append refused the batch whole (nothing was written): a record
		// that can never be stored (an id or key over the limits, too
		// large) is dead-lettered with its message instead of failing the
		// others or looping on redelivery. Only then are the records
		// checked one by one.
		dead, reasons = nil, nil
		var ok []queue.Entry
		for j, e := range entries {
			if verr := r.q.ValidateEntry(e); verr != nil {
				deadLetter(&msgs[from[j]], fmt.Sprintf("stream %s: the record cannot be queued: %v", e.Stream, verr), "invalid "+e.Stream)
				continue
			}
			ok = append(ok, e)
		}
		if len(dead) > 0 {
			if err := r.addDead(ctx, source, dead, reasons); err != nil {
				return err
			}
			entries = ok
			res, err = r.q.Append(ctx, entries, states...)
		}
	}
	if err != nil {
		return fmt.Errorf("append %d records: %w", len(entries), err)
	}
	conflict := map[int]queue.Conflict{}
	for _, c := range res.Conflicts {
		conflict[c.Index] = c
	}
	for i, e := range entries {
		switch c, isConflict := conflict[i]; {
		case isConflict:
			r.m.Conflicts.WithLabelValues(e.Stream).Inc()
			r.m.DeadLettered.WithLabelValues(e.Stream).Inc()
			r.log.Warn().Str(logging.FieldSource, source).Str(logging.FieldStream, e.Stream).Str(logging.FieldKey, e.Record.Key).
				Str("id", e.Record.ID).Uint64("first_seq", c.FirstSeq).Uint64("dead_letter", c.DeadSeq).
				Msg("conflict: a message with a known id but different content; dead-lettered with both versions")
		case res.Seqs[i] == 0:
			r.m.Duplicates.WithLabelValues(e.Stream).Inc()
		default:
			r.m.Appended.WithLabelValues(e.Stream).Inc()
		}
	}
	return nil
}

// addDead stores the dead letters of messages of source.
func (r *Router) addDead(ctx context.Context, source string, dead []pipeline.Record, reasons []string) error {
	if len(dead) == 0 {
		return nil
	}
	stream := SourceDeadStream(source)
	skipped, err := r.q.AddDead(ctx, stream, dead, reasons)
	if err != nil {
		return fmt.Errorf("dead-letter %d messages: %w", len(dead), err)
	}
	r.m.DeadLettered.WithLabelValues(stream).Add(float64(len(dead) - skipped))
	if skipped > 0 {
		r.m.Duplicates.WithLabelValues(stream).Add(float64(skipped))
	}
	for _, why := range reasons {
		r.log.Warn().Str(logging.FieldSource, source).Str(logging.FieldReason, why).Msg("message dead-lettered")
	}
	return nil
}

// deadLetterID identifies the dead letter of a message that failed for
// what (decode, a flow's error, unmatched), so a redelivery of the same
// message that fails the same way is recognised within the dedup window
// and does not become a second dead letter.
func deadLetterID(m *pipeline.Message, what string) string {
	h := fnv.New64a()
	topic, _ := m.Meta["topic"].(string)
	_, _ = h.Write([]byte(topic))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write(m.Raw)
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(what))
	return fmt.Sprintf("dl:%016x", h.Sum64())
}

func unmatchedReason(flows []*Flow, meta map[string]any) string {
	names := make([]string, len(flows))
	for i, f := range flows {
		names[i] = f.Name
	}
	why := "no flow matched"
	if t, ok := meta["topic"].(string); ok {
		why += fmt.Sprintf(" (topic %q)", t)
	}
	if len(names) == 0 {
		return why + "; no flow reads this source"
	}
	return why + "; flows of this source: " + strings.Join(names, ", ")
}

// apply evaluates the flow for one message: ok is false when "when" did not match.
func (f *Flow) apply(source string, m pipeline.Message) (rec pipeline.Record, ok bool, err error) {
	env := envPool.Get().(map[string]any)
	defer func() {
		clear(env)
		envPool.Put(env)
		if p := recover(); p != nil {
			err = fmt.Errorf("expression panicked: %v", p)
			ok = false
		}
	}()
	payload, isMap := m.Payload.(map[string]any)
	if !isMap {
		payload = map[string]any{"value": m.Payload}
	}
	meta := m.Meta
	if meta == nil {
		meta = map[string]any{}
	}
	topic, _ := meta["topic"].(string)
	env["payload"], env["meta"], env["topic"], env["received_at"], env["source"] = payload, meta, topic, m.Time, source
	if f.usesRaw {
		env["raw"] = string(m.Raw)
	}
	if f.when != nil {
		v, err := run(f.when, env)
		if err != nil {
			return rec, false, &evalErr{field: "when", src: f.cfg.When.Src, err: notCondition(err)}
		}
		if b, _ := v.(bool); !b {
			return rec, false, nil
		}
	}
	// The record keeps its source message, so a dead letter of the sink can
	// be fixed and replayed: the replay maps it again (Router.Remap).
	rec = pipeline.Record{Source: source, Flow: f.Name, Time: m.Time, Meta: m.Meta, Raw: m.Raw}
	if f.key != nil {
		if rec.Key, err = evalString(f.key, env, "key", f.cfg.Key.Src); err != nil {
			return rec, false, err
		}
	}
	if f.id != nil {
		if rec.ID, err = evalString(f.id, env, "id", f.cfg.ID.Src); err != nil {
			return rec, false, err
		}
	}
	if len(f.fields) == 0 {
		rec.Fields = payload
		return rec, true, nil
	}
	rec.Fields = make(map[string]any, len(f.fields))
	for _, cf := range f.fields {
		v, err := run(cf.prog, env)
		if err != nil {
			return rec, false, &evalErr{field: "map." + cf.name, src: cf.src, err: err}
		}
		if v == nil {
			return rec, false, &evalErr{field: "map." + cf.name, src: cf.src}
		}
		rec.Fields[cf.name] = v
	}
	return rec, true, nil
}

func evalString(p *vm.Program, env map[string]any, field, src string) (string, error) {
	v, err := run(p, env)
	if err != nil {
		return "", &evalErr{field: field, src: src, err: err}
	}
	if v == nil {
		return "", &evalErr{field: field, src: src}
	}
	if s, ok := v.(string); ok {
		if s == "" {
			return "", &evalErr{field: field, src: src, err: errors.New("empty string")}
		}
		return s, nil
	}
	return fmt.Sprint(v), nil
}
