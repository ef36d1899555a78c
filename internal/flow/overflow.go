package flow

import (
	"strings"
	"sync"
	"time"

	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/queue"
)

// Overflow: an entity flow to a fo.odata sink may name a fo.dmf sink that
// takes its new records while the OData stream is under pressure (its
// backlog, or how long F&O has been throttling it). The decision is made
// per record at append time, under the flow's lock held until the records
// are committed, from the pending records of the record's key in both
// streams (queue.TrackKeys):
//
//	key pending in the OData stream  -> OData   (never overtake it)
//	key pending in the DMF stream    -> DMF     (never overtake it)
//	otherwise, under pressure        -> DMF
//	otherwise                        -> OData
//
// so a key never has records in both paths at once, and its order holds
// whichever path it takes. A record going to DMF keeps its fields with
// their names in upper case, the DMF staging column names.

// Pressure reports a stream's backlog and for how long its sink has been
// throttled (0 when it is not).
type Pressure func(stream string) (backlog int64, throttled time.Duration)

type overflow struct {
	primary, over string // streams
	sink          string // the DMF sink
	backlog       int64
	throttled     time.Duration

	mu     sync.Mutex // held from the decision until the records are committed
	active bool
	since  time.Time
	moved  int64
}

// OverflowStatus is a flow's overflow state for status output.
type OverflowStatus struct {
	Flow   string    `json:"flow"`
	Sink   string    `json:"sink"`
	Active bool      `json:"active"`
	Since  time.Time `json:"since,omitzero"`
	// Moved counts the records sent to DMF since start.
	Moved int64 `json:"moved"`
}

// SetPressure gives the router what it needs to decide overflows. Call it
// before the sources run.
func (r *Router) SetPressure(p Pressure) { r.pressure = p }

// OverflowStreams returns the streams whose keys the router must see
// pending (queue.TrackKeys): both streams of every overflow flow.
func (r *Router) OverflowStreams() []string {
	var out []string
	for _, fs := range r.flows {
		for _, f := range fs {
			if f.overflow != nil {
				out = append(out, f.overflow.primary, f.overflow.over)
			}
		}
	}
	return out
}

// Overflows returns the state of every overflow flow.
func (r *Router) Overflows() []OverflowStatus {
	var out []OverflowStatus
	for _, fs := range r.flows {
		for _, f := range fs {
			if o := f.overflow; o != nil {
				o.mu.Lock()
				out = append(out, OverflowStatus{Flow: f.Name, Sink: o.sink, Active: o.active, Since: o.since, Moved: o.moved})
				o.mu.Unlock()
			}
		}
	}
	return out
}

// lockOverflows locks the overflow flows of source, in a fixed order, and
// returns the unlock.
func (r *Router) lockOverflows(source string) func() {
	var locked []*overflow
	for _, f := range r.flows[source] {
		if f.overflow != nil {
			f.overflow.mu.Lock()
			locked = append(locked, f.overflow)
		}
	}
	return func() {
		for _, o := range locked {
			o.mu.Unlock()
		}
	}
}

// divert decides the stream of each entry of an overflow flow (with the
// flow's lock held) and rewrites the entries that go to DMF.
func (r *Router) divert(source string, entries []queue.Entry) {
	byStream := map[string]*Flow{}
	for _, f := range r.flows[source] {
		if f.overflow != nil {
			byStream[f.overflow.primary] = f
		}
	}
	if len(byStream) == 0 {
		return
	}
	now := r.now()
	pressed := map[*Flow]bool{}
	for _, f := range byStream {
		o := f.overflow
		p := false
		if r.pressure != nil {
			backlog, throttled := r.pressure(o.primary)
			limit := o.backlog
			if o.active {
				limit = max(o.backlog/2, 1) // leave only once the backlog halved: no flapping
			}
			p = backlog >= limit || (o.throttled > 0 && throttled >= o.throttled)
		}
		pressed[f] = p
		if p != o.active {
			o.active = p
			o.since = now
			to := "odata"
			if p {
				to = "dmf"
			}
			r.m.OverflowSwitches.WithLabelValues(f.Name, to).Inc()
			msg := "pressure over: new records of keys not pending in DMF go to OData again"
			if p {
				msg = "flow under pressure: new records of keys not pending in OData go to DMF"
			}
			r.log.Warn().Str(logging.FieldFlow, f.Name).Bool("overflow", p).Str(logging.FieldSink, o.sink).Msg(msg)
		}
	}
	for i := range entries {
		e := &entries[i]
		f := byStream[e.Stream]
		if f == nil {
			continue
		}
		o := f.overflow
		key := e.Record.Key
		toDMF := false
		switch {
		case r.q.KeyPending(o.primary, key) > 0:
		case r.q.KeyPending(o.over, key) > 0:
			toDMF = true
		default:
			toDMF = pressed[f]
		}
		if !toDMF {
			continue
		}
		fields := make(map[string]any, len(e.Record.Fields))
		for k, v := range e.Record.Fields {
			fields[strings.ToUpper(k)] = v
		}
		e.Stream, e.Record.Stream, e.Record.Fields = o.over, o.over, fields
		o.moved++
		r.m.Overflowed.WithLabelValues(f.Name).Inc()
	}
}
