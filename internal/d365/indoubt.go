package d365

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// A sink's in-doubt bookkeeping lives in the queue, beside the records
// (pipeline.RecordStore), keyed by the record's sequence, which is never
// reused within a queue file:
//
//	mark   Marker "sending"   written (fsync) before a record's request leaves
//	mark   Marker "delivered" written after F&O confirmed a send that cannot be verified
//	hold   pipeline.Hold      a record held for an operator, or parked behind one
//
// A mark lives exactly as long as its record: the queue deletes it in the
// transaction that acks, dead-letters or purges the record, so there is no
// timer in the correctness path and a record acked once is never sent
// again. A "sending" mark found before a send means the record's outcome is
// unknown (the gateway stopped after the request left); a "delivered" mark
// means F&O confirmed it before the gateway stopped and the ack was lost
// with the process: the record is acked without being sent again.

// Legacy state of queue files written before marks and holds moved into
// the queue (schema version 1): markers as sink state names
// "m/<stream>/<seq>" and one "held" index. app migrates them at start.
const (
	LegacyMarkerPrefix = "m/"
	// HeldIndexName is the legacy state name of the held index.
	HeldIndexName = "held"
)

// Marker states.
const (
	MarkerSending   = "sending"
	MarkerDelivered = "delivered"
)

// Held record states (the queue's hold states).
const (
	// HeldInDoubt: the record was sent and its outcome is unknown; it waits
	// for an operator (plantgate queue release or drop).
	HeldInDoubt = pipeline.HoldInDoubt
	// HeldParked: a later record of the same key, set aside so the key's
	// order is kept; released or freed together with its holder.
	HeldParked = pipeline.HoldParked
)

// Dead-letter reasons of records set aside by the in-doubt policy. The
// CLI recognises dead letters by these prefixes.
const (
	ReasonHeldPrefix   = "in doubt: held for an operator"
	ReasonParkedPrefix = "in doubt: parked behind held record"
	// ReasonDropped is the reason of a held record an operator dropped.
	ReasonDropped = "dropped by operator while in doubt"
)

// Marker is the durable in-flight mark of one record.
type Marker struct {
	State string    `json:"state"`
	At    time.Time `json:"at"`
}

// DecodeMarker reads a mark; a damaged one reads as "sending" (assume the
// worst: the outcome is unknown).
func DecodeMarker(b []byte) Marker {
	var m Marker
	if json.Unmarshal(b, &m) != nil || (m.State != MarkerSending && m.State != MarkerDelivered) {
		m.State = MarkerSending
	}
	return m
}

// ParseLegacyMarkerName splits a legacy marker's state name; ok is false
// for other names.
func ParseLegacyMarkerName(name string) (stream string, seq uint64, ok bool) {
	rest, found := strings.CutPrefix(name, LegacyMarkerPrefix)
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(rest[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return rest[:i], n, true
}

// HeldRecord is a record set aside by the in-doubt policy, with its stream.
type HeldRecord struct {
	Stream string `json:"stream"`
	pipeline.Hold
}

// HeldIndex is the legacy state value listing a sink's held records.
type HeldIndex struct {
	Records []HeldRecord `json:"records"`
}

// DecodeHeldIndex parses the legacy held index (empty input: an empty index).
func DecodeHeldIndex(b []byte) (HeldIndex, error) {
	var h HeldIndex
	if len(b) == 0 {
		return h, nil
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return HeldIndex{}, fmt.Errorf("decode held index: %w", err)
	}
	return h, nil
}

// HeldReason is the dead-letter reason of a held record.
func HeldReason(stream string, seq uint64, cause string) string {
	return fmt.Sprintf("%s: sent but its outcome is unknown (%s); F&O may have received it. "+
		"Check F&O, then run plantgate queue release --stream %s --seq %d to send it again, or plantgate queue drop --stream %s --seq %d --yes",
		ReasonHeldPrefix, cause, stream, seq, stream, seq)
}

// ParkedReason is the dead-letter reason of a record parked behind a held one.
func ParkedReason(stream string, holder pipeline.Hold) string {
	return fmt.Sprintf("%s seq %d of key %q (order per key); it is delivered after plantgate queue release or drop --stream %s --seq %d",
		ReasonParkedPrefix, holder.Seq, holder.Key, stream, holder.Seq)
}

// Verdict is what the tracker knows about a record before it is sent.
type Verdict int

// Verdicts.
const (
	// VerdictFresh: never sent (or known not to have arrived): send it.
	VerdictFresh Verdict = iota
	// VerdictDelivered: F&O confirmed it before the gateway stopped: ack it
	// without sending it again.
	VerdictDelivered
	// VerdictInDoubt: sent before without a known outcome.
	VerdictInDoubt
	// VerdictHeld: the record itself is held or parked: dead-letter it
	// with the held reason again.
	VerdictHeld
	// VerdictBlocked: a record of the same key is held: park this one.
	VerdictBlocked
)

// TrackerOptions configure a Tracker.
type TrackerOptions struct {
	Log zerolog.Logger
	// Held and Parked receive the numbers of held and parked records of
	// the sink (may be nil).
	Held, Parked prometheus.Gauge
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Streams are the streams the sink serves (for listing and counting).
	Streams []string
}

// Tracker keeps a sink's in-doubt bookkeeping in the queue (see above).
// With a nil record store it tracks nothing and every record is fresh. It
// keeps no state of its own, so what an operator changes in the queue is
// what the sink sees next. It is safe for concurrent use.
type Tracker struct {
	rs   pipeline.RecordStore
	sink string
	o    TrackerOptions
}

// NewTracker returns the tracker of sink over rs. It does no I/O.
func NewTracker(rs pipeline.RecordStore, sink string, o TrackerOptions) *Tracker {
	if o.Now == nil {
		o.Now = time.Now
	}
	t := &Tracker{rs: rs, sink: sink, o: o}
	t.refreshGauges()
	return t
}

// Enabled reports whether the tracker has a record store.
func (t *Tracker) Enabled() bool { return t.rs != nil }

// Check tells what is known about r. For VerdictHeld and VerdictBlocked
// it also returns the hold (r's own, or the one r waits for).
func (t *Tracker) Check(r pipeline.Record) (Verdict, pipeline.Hold, error) {
	if t.rs == nil {
		return VerdictFresh, pipeline.Hold{}, nil
	}
	st, err := t.rs.RecordState(r.Stream, r.Seq, r.Key)
	if err != nil {
		return VerdictFresh, pipeline.Hold{}, fmt.Errorf("read the record's in-doubt state: %w", err)
	}
	switch {
	case st.Hold != nil:
		return VerdictHeld, *st.Hold, nil
	case st.KeyHolder != nil && st.KeyHolder.Seq != r.Seq && st.KeyHolder.Seq < r.Seq:
		return VerdictBlocked, *st.KeyHolder, nil
	case st.Mark == nil:
		return VerdictFresh, pipeline.Hold{}, nil
	}
	if DecodeMarker(st.Mark).State == MarkerDelivered {
		return VerdictDelivered, pipeline.Hold{}, nil
	}
	return VerdictInDoubt, pipeline.Hold{}, nil
}

// State reads what the queue keeps beside record seq of stream (its mark
// and hold).
func (t *Tracker) State(stream string, seq uint64) (pipeline.RecordState, error) {
	if t.rs == nil {
		return pipeline.RecordState{}, nil
	}
	return t.rs.RecordState(stream, seq, "")
}

// Sending durably marks r as in flight; call it right before the request
// leaves (Request.BeforeSend).
func (t *Tracker) Sending(ctx context.Context, r pipeline.Record) error {
	return t.mark(ctx, r, MarkerSending)
}

func (t *Tracker) mark(ctx context.Context, r pipeline.Record, state string) error {
	if t.rs == nil {
		return nil
	}
	b, _ := json.Marshal(Marker{State: state, At: t.o.Now().UTC()}) // always marshals
	return t.rs.SetMark(ctx, r.Stream, r.Seq, b)
}

// Delivered records that F&O confirmed r, for sends that cannot be
// verified (MES messages, keyless entities): the mark becomes "delivered"
// before Delivered returns, so a restart before the ack does not send r
// again. Sends that a restart verifies (keyed OData entities) need not
// call it. The mark goes with the record's ack.
func (t *Tracker) Delivered(ctx context.Context, r pipeline.Record) error {
	return t.mark(ctx, r, MarkerDelivered)
}

// NotSent records that r's request certainly did not reach F&O (or was
// refused), so a restart must not treat it as in doubt.
func (t *Tracker) NotSent(ctx context.Context, r pipeline.Record) error {
	if t.rs == nil {
		return nil
	}
	return t.rs.SetMark(ctx, r.Stream, r.Seq, nil)
}

// Hold sets r aside for an operator and returns the hold; the sink
// returns pipeline.Permanent with HeldReason, so r becomes a dead letter
// that plantgate queue release sends again.
func (t *Tracker) Hold(ctx context.Context, r pipeline.Record, cause, target string) (pipeline.Hold, error) {
	h := pipeline.Hold{Seq: r.Seq, Key: r.Key, State: HeldInDoubt, Since: t.o.Now().UTC(), Reason: clip(cause), Target: target, Sink: t.sink}
	if t.rs == nil {
		return h, nil
	}
	if err := t.rs.PutHold(ctx, r.Stream, h); err != nil {
		return h, fmt.Errorf("write hold: %w", err)
	}
	t.o.Log.Error().Str(logging.FieldStream, r.Stream).Uint64(logging.FieldSeq, r.Seq).Str(logging.FieldKey, r.Key).
		Str(logging.FieldReason, h.Reason).Msg("record in doubt, held for an operator")
	t.refreshGauges()
	return h, nil
}

// Park sets r aside behind holder, which holds r's key.
func (t *Tracker) Park(ctx context.Context, r pipeline.Record, holder pipeline.Hold) (pipeline.Hold, error) {
	h := pipeline.Hold{Seq: r.Seq, Key: r.Key, State: HeldParked, Behind: holder.Seq, Since: t.o.Now().UTC(), Sink: t.sink, Target: holder.Target}
	if t.rs == nil {
		return h, nil
	}
	if err := t.rs.PutHold(ctx, r.Stream, h); err != nil {
		return h, fmt.Errorf("write hold: %w", err)
	}
	t.refreshGauges()
	return h, nil
}

// Held returns the held and parked records of the sink's streams, oldest
// first.
func (t *Tracker) Held() []HeldRecord {
	if t.rs == nil {
		return nil
	}
	var out []HeldRecord
	for _, st := range t.o.Streams {
		hs, err := t.rs.Holds(st)
		if err != nil {
			t.o.Log.Warn().Err(err).Str(logging.FieldStream, st).Msg("list holds")
			continue
		}
		for _, h := range hs {
			out = append(out, HeldRecord{Stream: st, Hold: h})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}

// Counts returns the numbers of held and parked records, and sets the
// gauges.
func (t *Tracker) Counts() (held, parked int) {
	for _, h := range t.Held() {
		if h.State == HeldInDoubt {
			held++
		} else {
			parked++
		}
	}
	if t.o.Held != nil {
		t.o.Held.Set(float64(held))
	}
	if t.o.Parked != nil {
		t.o.Parked.Set(float64(parked))
	}
	return held, parked
}

func (t *Tracker) refreshGauges() { _, _ = t.Counts() }
