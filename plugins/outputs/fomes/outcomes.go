package fomes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// Outcomes (track_outcomes: true). F&O answers SendMessage before it
// processes the message; the result comes later as the "message
// processed" business event, which carries the message's type, company
// and content but no id plantgate gave it. So before each request leaves,
// the sink writes a *send entry* to its queue state, keyed by the record's
// stream and sequence (never reused within a queue file):
//
//	o/<stream>/<seq>  {fp, sent_at, type, company, record ...}
//
// fp is d365.MessageFingerprint(type, company, content): a hash of exactly
// what was sent (the content as canonical JSON). An event matches the
// *oldest* entry with the same fingerprint that has no outcome yet and was
// sent before the event (allowing clock_skew), and records its EventId in
// that entry. Two different messages never share a fingerprint; two
// identical ones (the same content sent twice) are processed by F&O in the
// order received, one production order at a time, so oldest-first gives
// each send its own event. An EventId already recorded is a duplicate and
// changes nothing.
//
// A Processed outcome confirms the send; if the record is held in doubt
// its hold is dropped (it is delivered) and the records parked behind it
// go on. A Failed outcome puts the record back as a dead letter of the
// sink's stream with F&O's infolog (a held record becomes that dead
// letter), to replay after the cause is fixed in F&O. Entries without an
// outcome after outcome_timeout are reported (log, status, metrics);
// entries are forgotten after outcome_retention.

const sentPrefix = "o/"

// SentEntry is a send awaiting, or having, its outcome.
type SentEntry struct {
	Stream      string    `json:"stream"`
	Seq         uint64    `json:"seq"`
	Fingerprint string    `json:"fp"`
	SentAt      time.Time `json:"sent_at"`
	Type        string    `json:"type"`
	Company     string    `json:"company"`
	Order       string    `json:"order,omitempty"`
	// The record as sent, to dead-letter it when F&O fails it.
	Key    string         `json:"key,omitempty"`
	ID     string         `json:"id,omitempty"`
	Flow   string         `json:"flow,omitempty"`
	Source string         `json:"source,omitempty"`
	Time   time.Time      `json:"time"`
	Fields map[string]any `json:"fields,omitempty"`
	Meta   map[string]any `json:"meta,omitempty"`
	Raw    []byte         `json:"raw,omitempty"`
	// Outcome: State is "" (awaiting), Processed or Failed.
	State     string    `json:"state,omitempty"`
	EventID   string    `json:"event_id,omitempty"`
	OutcomeAt time.Time `json:"outcome_at,omitzero"`
	Infolog   string    `json:"infolog,omitempty"`
	Overdue   bool      `json:"overdue,omitempty"`
	// Held: the record was held in doubt when its outcome arrived. Done:
	// the outcome's effects on the queue are applied.
	Held bool `json:"held,omitempty"`
	Done bool `json:"done,omitempty"`
}

func (e *SentEntry) name() string { return fmt.Sprintf("%s%s/%020d", sentPrefix, e.Stream, e.Seq) }

// Outcome is what a "message processed" event says of one message.
type Outcome struct {
	EventID string
	Type    string
	Company string
	Content string
	// State is F&O's MessageState: Processed or Failed (others are
	// refused).
	State   string
	Infolog string
	At      time.Time
}

// Match results.
const (
	MatchConfirmed = "confirmed"
	MatchFailed    = "failed"
	MatchDuplicate = "duplicate"
	MatchUnknown   = "unknown"
)

// stateLister is the queue state as the sink reads it back at start.
type stateLister interface {
	List() (map[string][]byte, error)
}

// deadAdder is the queue's AddDead: a failed message's record, acked when
// F&O accepted it, becomes a dead letter of its stream again.
type deadAdder interface {
	AddDead(ctx context.Context, stream string, recs []pipeline.Record, reasons []string) (int, error)
}

type outcomes struct {
	s         *Sink
	state     pipeline.StateStore
	settle    func(ctx context.Context, stream string, seq uint64, delivered bool, reason string) error
	dead      deadAdder
	timeout   time.Duration
	retention time.Duration
	skew      time.Duration
	now       func() time.Time

	// eff serialises applying outcomes (events, sweeps). mu guards the
	// entries; it is never held while a hold is settled, which pauses the
	// sink's stream and so waits for sends that take mu.
	eff     sync.Mutex
	mu      sync.Mutex
	entries map[string]*SentEntry // by name
	byEvent map[string]*SentEntry

	confirmed, failed, duplicates, unknown prometheus.Counter
	awaiting, overdue                      prometheus.Gauge
	nConfirmed, nFailed, nDup, nUnknown    int64
	lastSweep                              time.Time
}

func newOutcomes(s *Sink, env pipeline.Env, cfg *Config) (*outcomes, error) {
	o := &outcomes{s: s, state: env.State, settle: env.Settle, timeout: cfg.OutcomeTimeout, retention: cfg.OutcomeRetention,
		skew: cfg.ClockSkew, now: env.Now, entries: map[string]*SentEntry{}, byEvent: map[string]*SentEntry{}}
	if o.now == nil {
		o.now = time.Now
	}
	o.dead, _ = env.Records.(deadAdder)
	reg := env.Metrics
	l := []string{"sink"}
	cv := func(name, help string) prometheus.Counter {
		return pipeline.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, l)).WithLabelValues(env.Name)
	}
	gv := func(name, help string) prometheus.Gauge {
		return pipeline.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, l)).WithLabelValues(env.Name)
	}
	o.confirmed = cv("plantgate_fo_mes_confirmed_total", "MES messages F&O reported Processed (message processed business event).")
	o.failed = cv("plantgate_fo_mes_failed_total", "MES messages F&O reported Failed; each became a dead letter with F&O's infolog.")
	o.duplicates = cv("plantgate_fo_mes_outcome_duplicates_total", "Message processed events received again (same EventId); ignored.")
	o.unknown = cv("plantgate_fo_mes_outcome_unknown_total", "Message processed events that match no message this sink sent.")
	o.awaiting = gv("plantgate_fo_mes_awaiting_outcome", "MES messages sent whose outcome has not arrived.")
	o.overdue = gv("plantgate_fo_mes_outcome_overdue", "MES messages without an outcome after outcome_timeout.")
	if l, ok := env.State.(stateLister); ok && env.State != nil {
		all, err := l.List()
		if err != nil {
			return nil, fmt.Errorf("read send entries: %w", err)
		}
		for n, v := range all {
			if !strings.HasPrefix(n, sentPrefix) {
				continue
			}
			var e SentEntry
			if err := json.Unmarshal(v, &e); err != nil {
				s.log.Warn().Str("name", n).Err(err).Msg("damaged send entry; forgotten")
				continue
			}
			o.entries[n] = &e
			if e.EventID != "" {
				o.byEvent[e.EventID] = &e
			}
		}
	}
	o.gauges()
	return o, nil
}

// sending writes r's send entry; called right before the request leaves
// (after the in-flight mark), so every message F&O can have got has one.
func (o *outcomes) sending(ctx context.Context, r pipeline.Record, company, typ, content string) error {
	if o.state == nil {
		return nil
	}
	order, _ := r.Fields["ProductionOrderNumber"].(string)
	e := &SentEntry{Stream: r.Stream, Seq: r.Seq, Fingerprint: d365.MessageFingerprint(typ, company, content), SentAt: o.now().UTC(),
		Type: typ, Company: strings.ToUpper(company), Order: order, Key: r.Key, ID: r.ID, Flow: r.Flow, Source: r.Source,
		Time: r.Time, Fields: r.Fields, Meta: r.Meta, Raw: r.Raw}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode send entry: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if old := o.entries[e.name()]; old != nil && old.State == "" {
		return nil // sent before (a resend): the first send's entry stands
	}
	if err := o.state.Put(ctx, e.name(), b); err != nil {
		return fmt.Errorf("write send entry: %w", err)
	}
	o.entries[e.name()] = e
	o.gauges()
	return nil
}

// notSent forgets r's send entry: F&O refused the request or certainly
// did not get it, so no outcome will come.
func (o *outcomes) notSent(ctx context.Context, r pipeline.Record) {
	if o == nil || o.state == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	n := (&SentEntry{Stream: r.Stream, Seq: r.Seq}).name()
	if e := o.entries[n]; e == nil || e.State != "" {
		return
	}
	if err := o.state.Delete(ctx, n); err != nil {
		o.s.log.Warn().Err(err).Uint64(logging.FieldSeq, r.Seq).Msg("forget send entry")
		return
	}
	delete(o.entries, n)
	o.gauges()
}

func (o *outcomes) put(ctx context.Context, e *SentEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return o.state.Put(ctx, e.name(), b)
}

// apply records an outcome; see the comment at the top of the file. The
// outcome is written first (it is counted then, once); its effects on
// the queue (a hold settled, a dead letter added) follow and are marked
// done in the entry, so an event delivered again after a crash finishes
// them and one delivered again later changes nothing.
func (o *outcomes) apply(ctx context.Context, oc Outcome) (string, *SentEntry, error) {
	if !strings.EqualFold(oc.State, "Processed") && !strings.EqualFold(oc.State, "Failed") {
		return "", nil, pipeline.Permanent(fmt.Errorf("message state %q is not Processed or Failed", oc.State))
	}
	if oc.EventID == "" {
		return "", nil, pipeline.Permanent(errors.New("the event has no EventId"))
	}
	o.eff.Lock()
	defer o.eff.Unlock()
	o.mu.Lock()
	if e := o.byEvent[oc.EventID]; e != nil {
		if !e.Done {
			o.mu.Unlock()
			if err := o.effects(ctx, e); err != nil {
				return "", e, err
			}
			return o.result(e), e, nil
		}
		o.duplicates.Inc()
		o.nDup++
		o.mu.Unlock()
		return MatchDuplicate, e, nil
	}
	fp := d365.MessageFingerprint(oc.Type, oc.Company, oc.Content)
	var best *SentEntry
	for _, e := range o.entries {
		if e.Fingerprint != fp || e.State != "" || (!oc.At.IsZero() && e.SentAt.After(oc.At.Add(o.skew))) {
			continue
		}
		if best == nil || e.SentAt.Before(best.SentAt) || (e.SentAt.Equal(best.SentAt) && e.Seq < best.Seq) {
			best = e
		}
	}
	if best == nil {
		o.unknown.Inc()
		o.nUnknown++
		o.mu.Unlock()
		return MatchUnknown, nil, nil
	}
	e := *best
	e.EventID, e.OutcomeAt, e.Infolog = oc.EventID, oc.At, clip(oc.Infolog, 4000)
	if e.OutcomeAt.IsZero() {
		e.OutcomeAt = o.now().UTC()
	}
	e.State = "Processed"
	if strings.EqualFold(oc.State, "Failed") {
		e.State = "Failed"
	}
	held, err := o.held(&e)
	if err != nil {
		o.mu.Unlock()
		return "", nil, err
	}
	e.Held = held
	if err := o.put(ctx, &e); err != nil {
		o.mu.Unlock()
		return "", nil, fmt.Errorf("write outcome: %w", err)
	}
	*best = e
	o.byEvent[e.EventID] = best
	if e.State == "Processed" {
		o.confirmed.Inc()
		o.nConfirmed++
	} else {
		o.failed.Inc()
		o.nFailed++
	}
	lvl := zerolog.InfoLevel
	if e.State == "Failed" {
		lvl = zerolog.WarnLevel
	}
	o.s.log.WithLevel(lvl).Str(logging.FieldStream, e.Stream).Uint64(logging.FieldSeq, e.Seq).Str(logging.FieldKey, e.Key).Str("event_id", e.EventID).
		Str(logging.FieldMessageType, e.Type).Str(logging.FieldReason, e.Infolog).Msg("MES message " + resultOf(&e) + " by F&O")
	o.gauges()
	o.mu.Unlock()
	if err := o.effects(ctx, best); err != nil {
		return "", best, err
	}
	return o.result(best), best, nil
}

func (o *outcomes) result(e *SentEntry) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return resultOf(e)
}

func resultOf(e *SentEntry) string {
	if e.State == "Failed" {
		return MatchFailed
	}
	return MatchConfirmed
}

// failedReason is the dead-letter reason of a message F&O failed.
func failedReason(e *SentEntry) string {
	return fmt.Sprintf("F&O failed to process the message (message processed event %s at %s): %s. Fix the cause in F&O, then replay this dead letter",
		e.EventID, e.OutcomeAt.UTC().Format(time.RFC3339), e.Infolog)
}

// deliveredReason marks the drop of a held record F&O processed.
func deliveredReason(e *SentEntry) string {
	return fmt.Sprintf("delivered: F&O processed the message (message processed event %s)", e.EventID)
}

// recordState reads the hold and mark of e's record.
func (o *outcomes) recordState(e *SentEntry) (held, marked bool, err error) {
	if o.s.tracker == nil || !o.s.tracker.Enabled() {
		return false, false, nil
	}
	st, err := o.s.tracker.State(e.Stream, e.Seq)
	if err != nil {
		return false, false, err
	}
	return st.Hold != nil && st.Hold.State == pipeline.HoldInDoubt, st.Mark != nil, nil
}

// held reports whether e's record is held in doubt.
func (o *outcomes) held(e *SentEntry) (bool, error) {
	h, _, err := o.recordState(e)
	return h, err
}

// effects applies e's outcome to the queue once. A record held in doubt
// is settled: as delivered (Processed) or as a dead letter with the
// infolog (Failed). A record still queued with its in-flight mark is
// left to the sink, which resolves it when it next handles it
// (resolveInFlight). Otherwise the record was acked: a Failed one is
// added to the stream's dead letters as it was sent, under an id of the
// record's and the event's, so that a retry adds nothing.
//
// The caller holds o.eff, not o.mu.
func (o *outcomes) effects(ctx context.Context, entry *SentEntry) error {
	o.mu.Lock()
	snap := *entry
	o.mu.Unlock()
	e := &snap
	if e.Done {
		return nil
	}
	held, marked, err := o.recordState(e)
	if err != nil {
		return err
	}
	switch {
	case (held || e.Held) && o.settle == nil:
		return errors.New("no gateway to settle the record in doubt")
	case (held || e.Held) && e.State == "Processed":
		// Also when no longer held: a crash may have left the dead letter
		// of the drop, which settle removes.
		if err := o.settle(ctx, e.Stream, e.Seq, true, deliveredReason(e)); err != nil {
			return fmt.Errorf("drop the hold of seq %d: %w", e.Seq, err)
		}
		o.s.log.Info().Str(logging.FieldStream, e.Stream).Uint64(logging.FieldSeq, e.Seq).Str(logging.FieldKey, e.Key).
			Msg("record in doubt resolved by F&O's message processed event: delivered; the records parked behind it go on")
	case held:
		if err := o.settle(ctx, e.Stream, e.Seq, false, failedReason(e)); err != nil {
			return fmt.Errorf("settle the hold of seq %d: %w", e.Seq, err)
		}
		o.s.log.Info().Str(logging.FieldStream, e.Stream).Uint64(logging.FieldSeq, e.Seq).Str(logging.FieldKey, e.Key).
			Msg("record in doubt resolved by F&O's message processed event: failed in F&O, now a dead letter with the infolog")
	case marked:
		return nil // the sink still has the record: resolveInFlight
	case e.State == "Failed" && !e.Held:
		if o.dead == nil {
			return errors.New("the queue does not take dead letters from this sink")
		}
		r := pipeline.Record{Stream: e.Stream, Key: e.Key, ID: e.ID + "#failed:" + e.EventID, Source: e.Source, Flow: e.Flow,
			Time: e.Time, Fields: e.Fields, Meta: e.Meta, Raw: e.Raw}
		if _, err := o.dead.AddDead(ctx, e.Stream, []pipeline.Record{r}, []string{failedReason(e)}); err != nil {
			return fmt.Errorf("dead-letter the failed message: %w", err)
		}
	}
	// (Held and no longer held: settled already, by this or an operator.)
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.done(ctx, entry)
}

// done marks e's effects applied; the caller holds o.mu.
func (o *outcomes) done(ctx context.Context, e *SentEntry) error {
	c := *e
	c.Done = true
	if e.State == "Failed" {
		c.Fields, c.Meta, c.Raw = nil, nil, nil // the dead letter holds them now
	}
	if err := o.put(ctx, &c); err != nil {
		return fmt.Errorf("write outcome: %w", err)
	}
	*e = c
	return nil
}

// resolveInFlight is called by the sink for a record whose outcome it
// does not know (inDoubt: a timeout, or a restart after the request left)
// or has just been told (a 2xx, or a delivered mark). If F&O's event came
// first: in doubt and Processed, the record is marked delivered and
// handled (ack it); in doubt and Failed, it is handled with the error to
// dead-letter it with (the record itself is the dead letter); after a
// 2xx and Failed, the record as sent is added to the dead letters.
func (o *outcomes) resolveInFlight(ctx context.Context, r pipeline.Record, inDoubt bool) (bool, error) {
	if o == nil {
		return false, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.entries[(&SentEntry{Stream: r.Stream, Seq: r.Seq}).name()]
	if e == nil || e.State == "" {
		return false, nil
	}
	if !inDoubt {
		return false, o.effectsAcked(ctx, e)
	}
	if e.State == "Processed" {
		if err := o.s.tracker.Delivered(ctx, r); err != nil {
			return true, err
		}
		o.s.log.Info().Str(logging.FieldStream, r.Stream).Uint64(logging.FieldSeq, r.Seq).Str(logging.FieldKey, r.Key).
			Msg("send in doubt resolved by F&O's message processed event: delivered")
		return true, o.done(ctx, e)
	}
	c := *e
	c.Held = true // the record becomes the dead letter itself
	if err := o.done(ctx, &c); err != nil {
		return true, err
	}
	*e = c
	return true, pipeline.Permanent(errors.New(failedReason(e)))
}

// effectsAcked finishes e's outcome for a record about to be acked.
func (o *outcomes) effectsAcked(ctx context.Context, e *SentEntry) error {
	if e.Done {
		return nil
	}
	if e.State == "Failed" && !e.Held {
		if o.dead == nil {
			return errors.New("the queue does not take dead letters from this sink")
		}
		r := pipeline.Record{Stream: e.Stream, Key: e.Key, ID: e.ID + "#failed:" + e.EventID, Source: e.Source, Flow: e.Flow,
			Time: e.Time, Fields: e.Fields, Meta: e.Meta, Raw: e.Raw}
		if _, err := o.dead.AddDead(ctx, e.Stream, []pipeline.Record{r}, []string{failedReason(e)}); err != nil {
			return fmt.Errorf("dead-letter the failed message: %w", err)
		}
	}
	return o.done(ctx, e)
}

// sweep reports entries without an outcome after the timeout and forgets
// entries older than the retention.
func (o *outcomes) sweep(ctx context.Context) {
	o.eff.Lock()
	defer o.eff.Unlock()
	o.mu.Lock()
	var pending []*SentEntry
	for _, e := range o.entries {
		if e.State != "" && !e.Done {
			pending = append(pending, e)
		}
	}
	o.mu.Unlock()
	for _, e := range pending {
		if err := o.effects(ctx, e); err != nil {
			o.s.log.Warn().Err(err).Uint64(logging.FieldSeq, e.Seq).Msg("apply a message outcome")
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	o.lastSweep = now
	for n, e := range o.entries {
		age := now.Sub(e.SentAt)
		switch {
		case o.retention > 0 && age > o.retention:
			if e.State == "" {
				o.s.log.Warn().Str(logging.FieldStream, e.Stream).Uint64(logging.FieldSeq, e.Seq).Str(logging.FieldKey, e.Key).
					Msg("MES message forgotten without an outcome from F&O (outcome_retention)")
			}
			if err := o.state.Delete(ctx, n); err != nil {
				o.s.log.Warn().Err(err).Msg("forget send entry")
				continue
			}
			delete(o.entries, n)
			if e.EventID != "" {
				delete(o.byEvent, e.EventID)
			}
		case e.State == "" && !e.Overdue && o.timeout > 0 && age > o.timeout:
			c := *e
			c.Overdue = true
			if err := o.put(ctx, &c); err != nil {
				continue
			}
			*e = c
			o.s.log.Warn().Str(logging.FieldStream, e.Stream).Uint64(logging.FieldSeq, e.Seq).Str(logging.FieldKey, e.Key).
				Str(logging.FieldMessageType, e.Type).Dur("age", age).
				Msg("MES message without an outcome from F&O after outcome_timeout: check its state in F&O (message processor messages)")
		}
	}
	o.gauges()
}

// gauges sets the awaiting and overdue gauges; the caller holds o.mu.
func (o *outcomes) gauges() {
	aw, od := 0, 0
	for _, e := range o.entries {
		if e.State == "" {
			aw++
			if e.Overdue {
				od++
			}
		}
	}
	o.awaiting.Set(float64(aw))
	o.overdue.Set(float64(od))
}

// OutcomeView is a send as status shows it.
type OutcomeView struct {
	Stream  string    `json:"stream"`
	Seq     uint64    `json:"seq"`
	Key     string    `json:"key,omitempty"`
	Type    string    `json:"type"`
	SentAt  time.Time `json:"sent_at"`
	State   string    `json:"state"`
	Infolog string    `json:"infolog,omitempty"`
	EventID string    `json:"event_id,omitempty"`
}

func (o *outcomes) status() map[string]any {
	o.mu.Lock()
	defer o.mu.Unlock()
	aw, od := 0, 0
	var overdue, recent []OutcomeView
	for _, e := range o.entries {
		v := OutcomeView{Stream: e.Stream, Seq: e.Seq, Key: e.Key, Type: e.Type, SentAt: e.SentAt, State: e.State, Infolog: e.Infolog, EventID: e.EventID}
		if e.State == "" {
			aw++
			v.State = "awaiting"
			if e.Overdue {
				od++
				overdue = append(overdue, v)
			}
		} else {
			recent = append(recent, v)
		}
	}
	sort.Slice(overdue, func(i, j int) bool { return overdue[i].SentAt.Before(overdue[j].SentAt) })
	sort.Slice(recent, func(i, j int) bool { return recent[i].SentAt.After(recent[j].SentAt) })
	if len(recent) > 20 {
		recent = recent[:20]
	}
	if len(overdue) > 50 {
		overdue = overdue[:50]
	}
	return map[string]any{
		"confirmed": o.nConfirmed, "failed_in_fo": o.nFailed, "awaiting_outcome": aw, "overdue": od,
		"duplicate_events": o.nDup, "unknown_events": o.nUnknown, "timeout": o.timeout.String(),
		"overdue_messages": overdue, "recent_outcomes": recent,
	}
}

// Entries returns the send entries, oldest first (tests, status).
func (s *Sink) Entries() []SentEntry {
	if s.out == nil {
		return nil
	}
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	out := make([]SentEntry, 0, len(s.out.entries))
	for _, e := range s.out.entries {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SentAt.Before(out[j].SentAt) })
	return out
}

// ApplyOutcome records the outcome of a "message processed" event: it
// returns MatchConfirmed, MatchFailed, MatchDuplicate or MatchUnknown. An
// error wrapped by pipeline.Permanent means the event is not a usable
// outcome; any other error is transient.
func (s *Sink) ApplyOutcome(ctx context.Context, oc Outcome) (string, error) {
	if s.out == nil {
		return "", pipeline.Permanent(fmt.Errorf("sink %s does not track outcomes: set track_outcomes: true on it", s.name))
	}
	res, _, err := s.out.apply(ctx, oc)
	return res, err
}

// TracksOutcomes reports whether the sink keeps send entries.
func (s *Sink) TracksOutcomes() bool { return s.out != nil }

// SweepOutcomes runs the outcome timeout and retention check now.
func (s *Sink) SweepOutcomes(ctx context.Context) {
	if s.out != nil {
		s.out.sweep(ctx)
	}
}

func (s *Sink) runSweeps(stop <-chan struct{}) {
	t := time.NewTicker(min(max(s.out.timeout/10, time.Second), time.Minute))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.out.sweep(context.Background())
		}
	}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Concerns implements pipeline.ConcernReporter: messages without an
// outcome after outcome_timeout make the gateway degraded.
func (s *Sink) Concerns() []string {
	if s.out == nil {
		return nil
	}
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	n := 0
	for _, e := range s.out.entries {
		if e.State == "" && e.Overdue {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return []string{fmt.Sprintf("sink %s: %d MES messages without an outcome from F&O after %s (no message processed event): check them in F&O's message processor; the status lists them under outcomes.overdue_messages",
		s.name, n, s.out.timeout)}
}
