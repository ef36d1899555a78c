package d365

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plantgate/plantgate/internal/metrics"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// A sink keeps its in-doubt bookkeeping in its durable state (scope
// "sink.<name>" of the queue file), so it survives a crash:
//
//	m/<stream>/<seq, 20 digits>  Marker  written (fsync) before a record's request leaves
//	held                         HeldIndex of the records held for an operator
//
// A marker "sending" that survives a crash means the record's outcome is
// unknown. A marker "delivered" means F&O confirmed the record; if the
// gateway stops before the ack, the record is acked on the next start
// without being sent again. Markers are deleted a while after the record
// was acked (and at start for records no longer queued).
const (
	markerPrefix = "m/"
	// HeldIndexName is the state name of the held index.
	HeldIndexName = "held"
)

// Marker states.
const (
	MarkerSending   = "sending"
	MarkerDelivered = "delivered"
)

// Held record states.
const (
	// HeldInDoubt: the record was sent and its outcome is unknown; it waits
	// for an operator (plantgate queue release or drop).
	HeldInDoubt = "held"
	// HeldParked: a later record of the same key, set aside so the key's
	// order is kept; released or freed together with its holder.
	HeldParked = "parked"
)

// Dead-letter reasons of records set aside by the in-doubt policy. The
// CLI recognises dead letters by these prefixes.
const (
	ReasonHeldPrefix   = "in doubt: held for an operator"
	ReasonParkedPrefix = "in doubt: parked behind held record"
	// ReasonDropped is the reason of a held record an operator dropped.
	ReasonDropped = "dropped by operator while in doubt"
)

// Marker is the durable in-flight record of one record.
type Marker struct {
	State string    `json:"state"`
	At    time.Time `json:"at"`
}

// MarkerName returns the state name of the marker of a record.
func MarkerName(stream string, seq uint64) string {
	return markerPrefix + stream + "/" + fmt.Sprintf("%020d", seq)
}

// ParseMarkerName splits a marker's state name; ok is false for other names.
func ParseMarkerName(name string) (stream string, seq uint64, ok bool) {
	rest, found := strings.CutPrefix(name, markerPrefix)
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

// HeldRecord is a record set aside by the in-doubt policy.
type HeldRecord struct {
	Stream string `json:"stream"`
	// Seq is the record's sequence in its stream when it was set aside.
	Seq uint64 `json:"seq"`
	Key string `json:"key,omitempty"`
	// State is HeldInDoubt or HeldParked.
	State string `json:"state"`
	// Behind is, for a parked record, the Seq of the held record it waits for.
	Behind uint64    `json:"behind,omitempty"`
	Since  time.Time `json:"since"`
	// Reason is why the record is in doubt (the error of the last attempt).
	Reason string `json:"reason,omitempty"`
	// Target says what the record was for (message type, entity path).
	Target string `json:"target,omitempty"`
}

// HeldIndex is the state value listing a sink's held records.
type HeldIndex struct {
	Records []HeldRecord `json:"records"`
}

// DecodeHeldIndex parses the held index (empty input: an empty index).
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

// Encode returns the index as stored.
func (h HeldIndex) Encode() []byte {
	sort.Slice(h.Records, func(i, j int) bool {
		a, b := h.Records[i], h.Records[j]
		if a.Stream != b.Stream {
			return a.Stream < b.Stream
		}
		return a.Seq < b.Seq
	})
	b, _ := json.Marshal(h) // plain strings, numbers and times always marshal
	return b
}

// HeldReason is the dead-letter reason of a held record.
func HeldReason(sink string, seq uint64, cause string) string {
	return fmt.Sprintf("%s: sent but its outcome is unknown (%s); F&O may have received it. "+
		"Check F&O, then run plantgate queue release --sink %s --seq %d to send it again, or plantgate queue drop --sink %s --seq %d --yes",
		ReasonHeldPrefix, cause, sink, seq, sink, seq)
}

// ParkedReason is the dead-letter reason of a record parked behind a held one.
func ParkedReason(sink string, holder HeldRecord) string {
	return fmt.Sprintf("%s seq %d of key %q (order per key); it is delivered after plantgate queue release or drop --sink %s --seq %d",
		ReasonParkedPrefix, holder.Seq, holder.Key, sink, holder.Seq)
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
	// Gauge receives the number of held and parked records (may be nil).
	Gauge metrics.Gauge
	// Now is the clock (default time.Now).
	Now func() time.Time
	// ForgetAfter is how long after a record was last reported delivered
	// its marker is deleted (default 30 s): the flow engine acks a record
	// as soon as Write returns, so by then it is long gone from the queue.
	ForgetAfter time.Duration
}

// Tracker keeps a sink's in-doubt bookkeeping (see the state layout
// above). With a nil state store it tracks nothing and every record is
// fresh. It is safe for concurrent use.
type Tracker struct {
	state  pipeline.StateStore
	sink   string
	o      TrackerOptions
	mu     sync.Mutex // guards the fields below; held while the index is written
	held   map[string]HeldRecord
	keys   map[string]uint64 // stream \x00 key -> seq of the held record
	forget map[string]time.Time
	stop   chan struct{}
	done   chan struct{}
	closed bool
}

// NewTracker loads a sink's held index. It reads local state only.
func NewTracker(state pipeline.StateStore, sink string, o TrackerOptions) (*Tracker, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ForgetAfter <= 0 {
		o.ForgetAfter = 30 * time.Second
	}
	t := &Tracker{state: state, sink: sink, o: o, held: map[string]HeldRecord{}, keys: map[string]uint64{}, forget: map[string]time.Time{}}
	if state == nil {
		return t, nil
	}
	b, _, err := state.Get(HeldIndexName)
	if err != nil {
		return nil, fmt.Errorf("read held index of sink %s: %w", sink, err)
	}
	idx, err := DecodeHeldIndex(b)
	if err != nil {
		return nil, fmt.Errorf("sink %s: %w", sink, err)
	}
	for _, h := range idx.Records {
		t.held[recKey(h.Stream, h.Seq)] = h
		if h.State == HeldInDoubt {
			t.keys[h.Stream+"\x00"+h.Key] = h.Seq
		}
	}
	t.setGauge()
	return t, nil
}

func recKey(stream string, seq uint64) string { return stream + "\x00" + strconv.FormatUint(seq, 10) }

// Enabled reports whether the tracker has a state store.
func (t *Tracker) Enabled() bool { return t.state != nil }

// Check tells what is known about r. For VerdictHeld and VerdictBlocked
// it also returns the held record (r itself, or the one r waits for).
func (t *Tracker) Check(r pipeline.Record) (Verdict, HeldRecord, error) {
	if t.state == nil {
		return VerdictFresh, HeldRecord{}, nil
	}
	t.mu.Lock()
	if h, ok := t.held[recKey(r.Stream, r.Seq)]; ok {
		t.mu.Unlock()
		return VerdictHeld, h, nil
	}
	if seq, ok := t.keys[r.Stream+"\x00"+r.Key]; ok {
		h := t.held[recKey(r.Stream, seq)]
		t.mu.Unlock()
		return VerdictBlocked, h, nil
	}
	t.mu.Unlock()
	b, ok, err := t.state.Get(MarkerName(r.Stream, r.Seq))
	if err != nil {
		return VerdictFresh, HeldRecord{}, fmt.Errorf("read in-flight marker: %w", err)
	}
	if !ok {
		return VerdictFresh, HeldRecord{}, nil
	}
	var m Marker
	_ = json.Unmarshal(b, &m) // a damaged marker reads as in doubt: assume the worst
	if m.State == MarkerDelivered {
		return VerdictDelivered, HeldRecord{}, nil
	}
	return VerdictInDoubt, HeldRecord{}, nil
}

// Sending durably marks r as in flight; call it right before the request
// leaves (Request.BeforeSend).
func (t *Tracker) Sending(ctx context.Context, r pipeline.Record) error {
	return t.put(ctx, r, MarkerSending)
}

func (t *Tracker) put(ctx context.Context, r pipeline.Record, state string) error {
	if t.state == nil {
		return nil
	}
	name := MarkerName(r.Stream, r.Seq)
	t.mu.Lock()
	delete(t.forget, name)
	t.mu.Unlock()
	b, _ := json.Marshal(Marker{State: state, At: t.o.Now().UTC()}) // always marshals
	return t.state.Put(ctx, name, b)
}

// Delivered records that F&O confirmed r. With durable set the marker
// becomes "delivered" before Delivered returns, so a restart before the
// ack does not send r again (for sends that cannot be verified, such as
// MES messages). Without it, the marker is only scheduled for deletion
// (sends that a restart verifies, such as keyed OData entities).
func (t *Tracker) Delivered(ctx context.Context, r pipeline.Record, durable bool) error {
	if t.state == nil {
		return nil
	}
	if durable {
		if err := t.put(ctx, r, MarkerDelivered); err != nil {
			return err
		}
	}
	t.forgetLater(MarkerName(r.Stream, r.Seq), t.o.ForgetAfter)
	return nil
}

// NotSent records that r's request certainly did not reach F&O (or was
// refused), so a restart must not treat it as in doubt.
func (t *Tracker) NotSent(ctx context.Context, r pipeline.Record) error {
	if t.state == nil {
		return nil
	}
	name := MarkerName(r.Stream, r.Seq)
	t.mu.Lock()
	delete(t.forget, name)
	t.mu.Unlock()
	return t.state.Delete(ctx, name)
}

// Settled schedules r's marker for deletion: its outcome is final (it is
// being dead-lettered) and a resend after a restart is harmless.
func (t *Tracker) Settled(r pipeline.Record) {
	if t.state != nil {
		t.forgetLater(MarkerName(r.Stream, r.Seq), t.o.ForgetAfter)
	}
}

// Hold sets r aside for an operator and returns the held record; the sink
// returns pipeline.Permanent with HeldReason, so r becomes a dead letter
// that plantgate queue release sends again.
func (t *Tracker) Hold(ctx context.Context, r pipeline.Record, cause, target string) (HeldRecord, error) {
	h := HeldRecord{Stream: r.Stream, Seq: r.Seq, Key: r.Key, State: HeldInDoubt, Since: t.o.Now().UTC(), Reason: clip(cause), Target: target}
	if t.state == nil {
		return h, nil
	}
	if err := t.add(ctx, h); err != nil {
		return h, err
	}
	t.o.Log.Error().Str(logging.FieldStream, r.Stream).Uint64(logging.FieldSeq, r.Seq).Str(logging.FieldKey, r.Key).
		Str(logging.FieldReason, h.Reason).Msg("record in doubt, held for an operator")
	t.forgetLater(MarkerName(r.Stream, r.Seq), t.o.ForgetAfter)
	return h, nil
}

// Park sets r aside behind holder, which holds r's key.
func (t *Tracker) Park(ctx context.Context, r pipeline.Record, holder HeldRecord) (HeldRecord, error) {
	h := HeldRecord{Stream: r.Stream, Seq: r.Seq, Key: r.Key, State: HeldParked, Behind: holder.Seq, Since: t.o.Now().UTC()}
	if t.state == nil {
		return h, nil
	}
	return h, t.add(ctx, h)
}

func (t *Tracker) add(ctx context.Context, h HeldRecord) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := recKey(h.Stream, h.Seq)
	prev, had := t.held[k]
	t.held[k] = h
	if err := t.state.Put(ctx, HeldIndexName, t.indexLocked().Encode()); err != nil {
		if had {
			t.held[k] = prev
		} else {
			delete(t.held, k)
		}
		return fmt.Errorf("write held index: %w", err)
	}
	if h.State == HeldInDoubt {
		t.keys[h.Stream+"\x00"+h.Key] = h.Seq
	}
	t.setGaugeLocked()
	return nil
}

func (t *Tracker) indexLocked() HeldIndex {
	idx := HeldIndex{Records: make([]HeldRecord, 0, len(t.held))}
	for _, h := range t.held {
		idx.Records = append(idx.Records, h)
	}
	return idx
}

// Held returns the held and parked records, oldest first.
func (t *Tracker) Held() []HeldRecord {
	t.mu.Lock()
	idx := t.indexLocked()
	t.mu.Unlock()
	sort.Slice(idx.Records, func(i, j int) bool { return idx.Records[i].Since.Before(idx.Records[j].Since) })
	return idx.Records
}

// Counts returns the numbers of held and parked records.
func (t *Tracker) Counts() (held, parked int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.countsLocked()
}

func (t *Tracker) countsLocked() (held, parked int) {
	for _, h := range t.held {
		if h.State == HeldInDoubt {
			held++
		} else {
			parked++
		}
	}
	return held, parked
}

func (t *Tracker) setGauge() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.setGaugeLocked()
}

func (t *Tracker) setGaugeLocked() {
	if t.o.Gauge != nil {
		h, p := t.countsLocked()
		t.o.Gauge.Set(float64(h + p))
	}
}

// forgetLater deletes a marker after d, unless the record is marked again
// meanwhile. A goroutine started on first use does the deletions; Close
// stops it.
func (t *Tracker) forgetLater(name string, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.forget[name] = t.o.Now().Add(d)
	if t.stop == nil && !t.closed {
		t.stop, t.done = make(chan struct{}), make(chan struct{})
		go t.forgetLoop(t.stop, t.done)
	}
}

func (t *Tracker) forgetLoop(stop, done chan struct{}) {
	defer close(done)
	// Small, frequent rounds keep the deletions from delaying deliveries.
	tick := time.NewTicker(max(t.o.ForgetAfter/30, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		now := t.o.Now()
		var due []string
		t.mu.Lock()
		for name, at := range t.forget {
			if !now.Before(at) {
				due = append(due, name)
			}
		}
		t.mu.Unlock()
		if len(due) == 0 {
			continue
		}
		// Concurrent deletes share the queue's group commits.
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for _, name := range due {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				t.mu.Lock()
				at, ok := t.forget[name]
				t.mu.Unlock()
				if !ok || now.Before(at) {
					return // marked again meanwhile
				}
				// A record whose marker is due is acked or dead-lettered, so
				// nothing marks it again while it is deleted.
				if err := t.state.Delete(context.Background(), name); err != nil {
					t.o.Log.Warn().Err(err).Str(logging.FieldPath, name).Msg("delete in-flight marker")
					return
				}
				t.mu.Lock()
				if at2, ok := t.forget[name]; ok && at2.Equal(at) {
					delete(t.forget, name)
				}
				t.mu.Unlock()
			}()
		}
		wg.Wait()
	}
}

// Close stops the deletion goroutine; markers not yet due stay (the
// gateway prunes those of acked records at its next start). Safe to call
// twice and before use.
func (t *Tracker) Close() {
	t.mu.Lock()
	stop, done := t.stop, t.done
	t.stop, t.closed = nil, true
	t.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}
