// Package rules turns a source's stream of values into production events:
// a counter's increase, a boolean's rising or falling edge, a change to or
// from a value, a value held for a duration. Any source that delivers named
// values (OPC UA now) feeds an Engine and emits the events it returns.
//
// Each event carries the latest good value of every other value the engine
// has seen (the order number, item and operation at that moment), so a
// flow can map it without asking for anything else.
//
// A counter rule's baseline (the last value it counted to) is durable
// state: Observe returns the state to write with the event, and the source
// writes both in one queue transaction (pipeline.StateEmitter). After a
// restart or power cut the engine starts from the committed baseline, so
// parts are never counted twice, and the first value after a reconnect
// yields the parts counted while the gateway was away as one increase.
//
// Values of bad or uncertain quality never trigger a rule and never move a
// baseline.
//
// The rules are hand-written: they are a few comparisons each, and no
// library models wrap-around counters with a transactional baseline.
package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"
)

// Rule kinds.
const (
	// KindCounter emits the increase of a monotonic counter.
	KindCounter = "counter"
	// KindRising emits when a boolean goes from false to true.
	KindRising = "rising"
	// KindFalling emits when a boolean goes from true to false.
	KindFalling = "falling"
	// KindChange emits when a value changes (to To, from From, or at all).
	KindChange = "change"
	// KindHeld emits once when a value has stayed equal to Value for For.
	KindHeld = "held"
)

// Kinds lists the rule kinds.
var Kinds = []string{KindCounter, KindRising, KindFalling, KindChange, KindHeld}

// Rule is one event rule.
type Rule struct {
	// Name identifies the rule in events, state and status.
	Name string
	// Kind is one of the Kind constants.
	Kind string
	// Value is the name of the value the rule watches.
	Value string
	// WrapAt is a counter's modulus (65536 for a 16-bit counter): a lower
	// value after a value within the top half of the range is a wrap, not
	// a reset. 0: the counter never wraps; any decrease is a reset.
	WrapAt float64
	// To and From restrict a change rule: emit only when the value becomes
	// To, or only when it leaves From. Nil: any.
	To, From any
	// Equals is the value a held rule waits for (nil: true).
	Equals any
	// For is how long a held rule's value must stay equal to Equals.
	For time.Duration
	// Include names the values attached to the rule's events (empty: all).
	Include []string
}

// Validate checks a rule.
func (r Rule) Validate() error {
	var errs []error
	if r.Name == "" {
		errs = append(errs, errors.New("rule without a name"))
	}
	if r.Value == "" {
		errs = append(errs, fmt.Errorf("rule %s: value is required (the name of the value it watches)", r.Name))
	}
	switch r.Kind {
	case KindCounter:
		if r.WrapAt < 0 || math.IsInf(r.WrapAt, 0) || math.IsNaN(r.WrapAt) {
			errs = append(errs, fmt.Errorf("rule %s: wrap_at %v: want 0 (no wrap) or the counter's modulus", r.Name, r.WrapAt))
		}
	case KindHeld:
		if r.For <= 0 {
			errs = append(errs, fmt.Errorf("rule %s: a held rule needs for: a positive duration", r.Name))
		}
	case KindRising, KindFalling, KindChange:
	default:
		errs = append(errs, fmt.Errorf("rule %s: kind %q: want one of %v", r.Name, r.Kind, Kinds))
	}
	if r.Kind != KindCounter && r.WrapAt != 0 {
		errs = append(errs, fmt.Errorf("rule %s: wrap_at is for counter rules", r.Name))
	}
	if r.Kind != KindChange && (r.To != nil || r.From != nil) {
		errs = append(errs, fmt.Errorf("rule %s: to and from are for change rules", r.Name))
	}
	if r.Kind != KindHeld && (r.Equals != nil || r.For != 0) {
		errs = append(errs, fmt.Errorf("rule %s: equals and for are for held rules", r.Name))
	}
	return errors.Join(errs...)
}

// Sample is one value of a source at one moment.
type Sample struct {
	// Name is the value's configured name.
	Name string
	// Value is the decoded value (bool, integer, float, string, time).
	Value any
	// Good is false for a value of bad or uncertain quality.
	Good bool
	// Time is when the value was taken (the source timestamp if any).
	Time time.Time
}

// Event is what a rule emits.
type Event struct {
	// Rule and Kind name the rule.
	Rule, Kind string
	// Value is the watched value's name.
	Value string
	// Seq numbers a counter rule's events (1, 2, ...); it is kept with the
	// baseline, so Rule and Seq identify an event across restarts.
	Seq uint64
	// Time is the time of the sample that triggered the event.
	Time time.Time
	// Current and Previous are the watched value now and before.
	Current, Previous any
	// Increase is a counter's increase since the previous event.
	Increase float64
	// Reset says the counter went backwards and was taken as restarted
	// from zero; Wrapped that it passed WrapAt.
	Reset, Wrapped bool
	// Since is when a held value started being equal.
	Since time.Time
	// Values are the latest good values of the other values.
	Values map[string]any
}

// Payload is the event as a message payload for flows.
func (e Event) Payload() map[string]any {
	p := map[string]any{
		"rule":  e.Rule,
		"kind":  e.Kind,
		"value": e.Value,
		"time":  e.Time.UTC().Format(time.RFC3339Nano),
		"now":   plain(e.Current),
		// A non-counter event is identified by its rule and the time of
		// the sample that triggered it.
		"event_id": e.Rule + "@" + e.Time.UTC().Format(time.RFC3339Nano),
	}
	if e.Previous != nil {
		p["previous"] = plain(e.Previous)
	}
	if e.Kind == KindCounter {
		p["increase"] = plain(e.Increase)
		p["seq"] = e.Seq
		p["event_id"] = e.Rule + "/" + strconv.FormatUint(e.Seq, 10)
		if e.Reset {
			p["reset"] = true
		}
		if e.Wrapped {
			p["wrapped"] = true
		}
	}
	if e.Kind == KindHeld {
		p["since"] = e.Since.UTC().Format(time.RFC3339Nano)
	}
	vals := map[string]any{}
	for k, v := range e.Values {
		vals[k] = plain(v)
	}
	p["values"] = vals
	return p
}

// plain turns whole floats into integers, so 10 parts print as 10.
func plain(v any) any {
	if f, ok := v.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return int64(f)
	}
	return v
}

// StateWrite is a durable state change that must be committed with the
// events Observe returned alongside it.
type StateWrite struct {
	Name  string
	Value []byte
}

// counterState is a counter rule's durable state.
type counterState struct {
	// Baseline is the counter value counted up to.
	Baseline float64 `json:"baseline"`
	// Seq is the number of the last event.
	Seq uint64 `json:"seq"`
	// At is the time of the sample that set Baseline.
	At time.Time `json:"at"`
}

type heldState struct {
	equal bool
	since time.Time
	fired bool
}

// Engine evaluates rules over samples. It is not safe for concurrent use.
type Engine struct {
	rules    []Rule
	byValue  map[string][]int
	last     map[string]Sample // latest good sample per value
	counters map[string]*counterState
	held     map[string]*heldState
}

// StatePrefix prefixes the state names the engine writes.
const StatePrefix = "rule."

// New builds an engine; load is called for each counter rule to read its
// committed state (nil, nil when none).
func New(rules []Rule, load func(name string) ([]byte, error)) (*Engine, error) {
	e := &Engine{byValue: map[string][]int{}, last: map[string]Sample{}, counters: map[string]*counterState{}, held: map[string]*heldState{}}
	seen := map[string]bool{}
	var errs []error
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("rule %s appears twice", r.Name))
			continue
		}
		seen[r.Name] = true
		e.rules = append(e.rules, r)
		e.byValue[r.Value] = append(e.byValue[r.Value], len(e.rules)-1)
		if r.Kind == KindCounter && load != nil {
			b, err := load(StatePrefix + r.Name)
			if err != nil {
				errs = append(errs, fmt.Errorf("rule %s: read state: %w", r.Name, err))
				continue
			}
			if b != nil {
				var st counterState
				if err := json.Unmarshal(b, &st); err != nil {
					errs = append(errs, fmt.Errorf("rule %s: stored state %q does not decode: %w", r.Name, b, err))
					continue
				}
				e.counters[r.Name] = &st
			}
		}
		if r.Kind == KindHeld {
			e.held[r.Name] = &heldState{}
		}
	}
	return e, errors.Join(errs...)
}

// Rules returns the engine's rules.
func (e *Engine) Rules() []Rule { return e.rules }

// Watches reports whether a rule watches the value name.
func (e *Engine) Watches(name string) bool { return len(e.byValue[name]) > 0 }

// Latest returns the latest good sample of a value.
func (e *Engine) Latest(name string) (Sample, bool) {
	s, ok := e.last[name]
	return s, ok
}

// Baseline returns a counter rule's committed-or-pending baseline.
func (e *Engine) Baseline(rule string) (float64, uint64, bool) {
	st, ok := e.counters[rule]
	if !ok {
		return 0, 0, false
	}
	return st.Baseline, st.Seq, true
}

// RuleError is a sample a rule could not use (a counter value that is not
// a number, a counter that went backwards). The rule keeps running.
type RuleError struct {
	Rule, Value string
	Err         error
}

func (e *RuleError) Error() string { return "rule " + e.Rule + " (" + e.Value + "): " + e.Err.Error() }
func (e *RuleError) Unwrap() error { return e.Err }

// Observe feeds one sample. It returns the events it triggers, the state
// to commit with them, and problems worth reporting (each a *RuleError);
// a problem does not stop the other rules. The engine's in-memory state
// moves on at once: a caller whose commit fails must retry the same events
// and state until they are committed (or stop the process), or the events
// are lost until the next restart recomputes them.
func (e *Engine) Observe(s Sample) ([]Event, []StateWrite, []error) {
	if !s.Good {
		return nil, nil, nil
	}
	prev, hadPrev := e.last[s.Name]
	e.last[s.Name] = s
	var events []Event
	var states []StateWrite
	var errs []error
	for _, i := range e.byValue[s.Name] {
		r := e.rules[i]
		var ev *Event
		var err error
		switch r.Kind {
		case KindCounter:
			var st *StateWrite
			ev, st, err = e.counter(r, s)
			if st != nil {
				states = append(states, *st)
			}
		case KindRising, KindFalling:
			ev, err = edge(r, s, prev, hadPrev)
		case KindChange:
			ev = change(r, s, prev, hadPrev)
		case KindHeld:
			e.heldObserve(r, s)
		}
		if err != nil {
			errs = append(errs, &RuleError{Rule: r.Name, Value: r.Value, Err: err})
		}
		if ev != nil {
			ev.Rule, ev.Kind, ev.Value = r.Name, r.Kind, r.Value
			if ev.Time.IsZero() {
				ev.Time = s.Time
			}
			ev.Values = e.values(r)
			events = append(events, *ev)
		}
	}
	return events, states, errs
}

// Tick fires held rules whose value has stayed equal long enough by now.
func (e *Engine) Tick(now time.Time) []Event {
	var events []Event
	for _, r := range e.rules {
		if r.Kind != KindHeld {
			continue
		}
		h := e.held[r.Name]
		if !h.equal || h.fired || now.Sub(h.since) < r.For {
			continue
		}
		h.fired = true
		cur := e.last[r.Value]
		events = append(events, Event{Rule: r.Name, Kind: r.Kind, Value: r.Value, Time: h.since.Add(r.For), Current: cur.Value, Since: h.since, Values: e.values(r)})
	}
	return events
}

func (e *Engine) values(r Rule) map[string]any {
	out := map[string]any{}
	if len(r.Include) > 0 {
		for _, n := range r.Include {
			if s, ok := e.last[n]; ok {
				out[n] = s.Value
			}
		}
		return out
	}
	for n, s := range e.last {
		out[n] = s.Value
	}
	return out
}

func (e *Engine) counter(r Rule, s Sample) (*Event, *StateWrite, error) {
	v, ok := number(s.Value)
	if !ok {
		return nil, nil, fmt.Errorf("a counter needs a number, got %T %v", s.Value, s.Value)
	}
	if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, nil, fmt.Errorf("a counter cannot be %v", v)
	}
	st, ok := e.counters[r.Name]
	if !ok {
		// The first value ever seen: the baseline, nothing counted yet.
		st = &counterState{Baseline: v, At: s.Time}
		e.counters[r.Name] = st
		return nil, encodeState(r.Name, st), nil
	}
	if v == st.Baseline {
		return nil, nil, nil
	}
	ev := &Event{Previous: st.Baseline, Current: v}
	var problem error
	switch {
	case v > st.Baseline:
		ev.Increase = v - st.Baseline
	case r.WrapAt > 0 && st.Baseline >= r.WrapAt/2 && v < r.WrapAt/2:
		ev.Increase = r.WrapAt - st.Baseline + v
		ev.Wrapped = true
	default:
		// Backwards: the PLC reset its counter (a shift change, a power
		// cycle). The parts since the reset are the new value.
		ev.Increase = v
		ev.Reset = true
		problem = fmt.Errorf("counter went backwards from %v to %v: taken as a reset to zero", plain(st.Baseline), plain(v))
	}
	st.Baseline, st.At = v, s.Time
	if ev.Increase == 0 {
		return nil, encodeState(r.Name, st), problem
	}
	st.Seq++
	ev.Seq = st.Seq
	return ev, encodeState(r.Name, st), problem
}

func encodeState(rule string, st *counterState) *StateWrite {
	b, _ := json.Marshal(st)
	return &StateWrite{Name: StatePrefix + rule, Value: b}
}

func edge(r Rule, s Sample, prev Sample, hadPrev bool) (*Event, error) {
	cur, ok := boolean(s.Value)
	if !ok {
		return nil, fmt.Errorf("an edge rule needs a boolean (or 0/1), got %T %v", s.Value, s.Value)
	}
	if !hadPrev {
		return nil, nil
	}
	was, ok := boolean(prev.Value)
	if !ok || was == cur {
		return nil, nil
	}
	if (r.Kind == KindRising && cur) || (r.Kind == KindFalling && !cur) {
		return &Event{Current: cur, Previous: was}, nil
	}
	return nil, nil
}

func change(r Rule, s Sample, prev Sample, hadPrev bool) *Event {
	if !hadPrev || Equal(prev.Value, s.Value) {
		return nil
	}
	if r.To != nil && !Equal(s.Value, r.To) {
		return nil
	}
	if r.From != nil && !Equal(prev.Value, r.From) {
		return nil
	}
	return &Event{Current: s.Value, Previous: prev.Value}
}

func (e *Engine) heldObserve(r Rule, s Sample) {
	h := e.held[r.Name]
	want := r.Equals
	if want == nil {
		want = true
	}
	eq := Equal(s.Value, want)
	switch {
	case eq && !h.equal:
		h.equal, h.since, h.fired = true, s.Time, false
	case !eq:
		h.equal, h.fired = false, false
	}
}

// Equal compares two values the way a config author means them: numbers
// by value whatever their type, booleans and strings exactly, a string in
// the config against a boolean or number by its text.
func Equal(a, b any) bool {
	if x, ok := number(a); ok {
		if y, ok := number(b); ok {
			return x == y
		}
	}
	if x, ok := a.(bool); ok {
		if y, ok := b.(bool); ok {
			return x == y
		}
	}
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int8:
		return float64(x), true
	case int16:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint:
		return float64(x), true
	case uint8:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

func boolean(v any) (bool, bool) {
	if b, ok := v.(bool); ok {
		return b, true
	}
	if f, ok := number(v); ok && (f == 0 || f == 1) {
		return f == 1, true
	}
	return false, false
}

// Names returns the sorted names of the values in m (for stable output).
func Names(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
