package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// inDoubtEntry is one line of plantgate queue in-doubt.
type inDoubtEntry struct {
	Sink   string `json:"sink"`
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
	Key    string `json:"key,omitempty"`
	// State is held, parked, or in_flight (sent when the gateway stopped;
	// resolved at the next start: verified, held or resent by policy).
	State  string    `json:"state"`
	Behind uint64    `json:"behind,omitempty"`
	Since  time.Time `json:"since"`
	// Where the record is now: "dead letter N", "queued", or "gone".
	Where  string `json:"where"`
	Target string `json:"target,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// locate finds a record of stream by its original sequence: among the
// dead letters (returning the dead letter's own sequence) or the items.
type locator struct {
	s     *queue.Store
	dead  map[string]map[uint64]queue.DeadLetterRecord // stream -> orig seq -> dead letter
	items map[string]map[uint64]pipeline.Record
}

func newLocator(s *queue.Store) *locator {
	return &locator{s: s, dead: map[string]map[uint64]queue.DeadLetterRecord{}, items: map[string]map[uint64]pipeline.Record{}}
}

func (l *locator) load(stream string) error {
	if _, ok := l.dead[stream]; ok {
		return nil
	}
	l.dead[stream] = map[uint64]queue.DeadLetterRecord{}
	l.items[stream] = map[uint64]pipeline.Record{}
	if !l.known(stream) {
		return nil // an unknown stream holds nothing
	}
	dl, err := l.s.ListDead(stream, 0, 0)
	if err != nil {
		return err
	}
	for _, d := range dl {
		if d.OrigSeq != 0 {
			l.dead[stream][d.OrigSeq] = d
		}
	}
	recs, err := l.s.List(stream, 0, 0)
	if err != nil {
		return err
	}
	for _, r := range recs {
		l.items[stream][r.Seq] = r
	}
	return nil
}

func (l *locator) known(stream string) bool {
	for _, s := range l.s.Streams() {
		if s == stream {
			return true
		}
	}
	return false
}

func (l *locator) where(stream string, seq uint64) string {
	if err := l.load(stream); err != nil {
		return "unknown: " + err.Error()
	}
	if d, ok := l.dead[stream][seq]; ok {
		return fmt.Sprintf("dead letter %d", d.Seq)
	}
	if _, ok := l.items[stream][seq]; ok {
		return "queued"
	}
	return "gone"
}

func listInDoubt(s *queue.Store, sinks []string) ([]inDoubtEntry, error) {
	var out []inDoubtEntry
	loc := newLocator(s)
	for _, sink := range sinks {
		names, err := s.ListState(flow.SinkStateScope(sink))
		if err != nil {
			return nil, err
		}
		idx, err := d365.DecodeHeldIndex(names[d365.HeldIndexName])
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", sink, err)
		}
		held := map[string]bool{}
		for _, h := range idx.Records {
			held[fmt.Sprintf("%s/%d", h.Stream, h.Seq)] = true
			out = append(out, inDoubtEntry{Sink: sink, Stream: h.Stream, Seq: h.Seq, Key: h.Key, State: h.State, Behind: h.Behind,
				Since: h.Since, Where: loc.where(h.Stream, h.Seq), Target: h.Target, Reason: h.Reason})
		}
		keys := make([]string, 0, len(names))
		for n := range names {
			keys = append(keys, n)
		}
		sort.Strings(keys)
		for _, n := range keys {
			stream, seq, ok := d365.ParseMarkerName(n)
			if !ok || held[fmt.Sprintf("%s/%d", stream, seq)] {
				continue
			}
			var m d365.Marker
			if json.Unmarshal(names[n], &m) != nil || m.State != d365.MarkerSending {
				continue
			}
			w := loc.where(stream, seq)
			if w != "queued" {
				continue // acked or dead-lettered: nothing in doubt
			}
			rec := loc.items[stream][seq]
			out = append(out, inDoubtEntry{Sink: sink, Stream: stream, Seq: seq, Key: rec.Key, State: "in_flight", Since: m.At, Where: w,
				Reason: "sent when the gateway stopped, no answer recorded; checked at the next start (verified, or handled by in_doubt)"})
		}
	}
	return out, nil
}

func cmdInDoubt(s *queue.Store, sinks []string, asJSON bool, stdout, stderr io.Writer) int {
	entries, err := listInDoubt(s, sinks)
	if err != nil {
		return queueErr(err, stderr)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if entries == nil {
			entries = []inDoubtEntry{}
		}
		_ = enc.Encode(entries)
		return exitOK
	}
	if len(entries) == 0 {
		fmt.Fprintln(stdout, "no records in doubt")
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SINK\tSTREAM\tSEQ\tKEY\tSTATE\tSINCE\tWHERE\tREASON")
	for _, e := range entries {
		state := e.State
		if e.Behind != 0 {
			state += fmt.Sprintf(" (behind %d)", e.Behind)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", e.Sink, e.Stream, e.Seq, e.Key, state, e.Since.Format(time.RFC3339), e.Where, truncate([]byte(e.Reason), 160))
	}
	_ = tw.Flush()
	fmt.Fprintln(stdout, "release a held record: plantgate queue release --sink S --seq N  (sends it again, then the records parked behind it)")
	fmt.Fprintln(stdout, "drop a held record:    plantgate queue drop --sink S --seq N --yes  (F&O has it: it becomes a dead letter; the parked records are delivered)")
	return exitOK
}

// resolveHeld releases (drop false) or drops a held record of sink and
// frees the records parked behind it, keeping their order: every record
// of the key that must go out again is put back at the end of its stream
// in its original order. The held index is updated first, so a crash in
// between leaves records as dead letters (replayable), never sent twice.
func resolveHeld(ctx context.Context, s *queue.Store, sink string, seq uint64, drop bool, stdout io.Writer) error {
	scope := flow.SinkStateScope(sink)
	b, _, err := s.GetState(scope, d365.HeldIndexName)
	if err != nil {
		return err
	}
	idx, err := d365.DecodeHeldIndex(b)
	if err != nil {
		return err
	}
	var h *d365.HeldRecord
	var heldSeqs []string
	for i, x := range idx.Records {
		if x.State == d365.HeldInDoubt {
			heldSeqs = append(heldSeqs, fmt.Sprintf("%d", x.Seq))
		}
		if x.Seq == seq {
			h = &idx.Records[i]
		}
	}
	switch {
	case h == nil && len(heldSeqs) == 0:
		return fmt.Errorf("sink %s holds no records in doubt", sink)
	case h == nil:
		return fmt.Errorf("sink %s holds no record with seq %d (held: %s; see plantgate queue in-doubt)", sink, seq, strings.Join(heldSeqs, ", "))
	case h.State != d365.HeldInDoubt:
		return fmt.Errorf("seq %d is parked behind held record %d; release or drop %d", seq, h.Behind, h.Behind)
	}
	held := *h
	// The chain: the held record and those parked behind it, plus records
	// of its key still queued.
	var chain []d365.HeldRecord
	var rest []d365.HeldRecord
	for _, x := range idx.Records {
		if x.Stream == held.Stream && (x.Seq == held.Seq || x.State == d365.HeldParked && x.Behind == held.Seq) {
			chain = append(chain, x)
		} else {
			rest = append(rest, x)
		}
	}
	loc := newLocator(s)
	if err := loc.load(held.Stream); err != nil {
		return err
	}
	inChain := map[uint64]bool{}
	for _, x := range chain {
		inChain[x.Seq] = true
	}
	var queued []uint64
	for q, r := range loc.items[held.Stream] {
		if r.Key == held.Key && !inChain[q] && q > held.Seq {
			queued = append(queued, q)
		}
	}
	sort.Slice(queued, func(i, j int) bool { return queued[i] < queued[j] })

	// 1. The index first.
	idx.Records = rest
	w := queue.StateWrite{Scope: scope, Name: d365.HeldIndexName, Value: idx.Encode()}
	if len(rest) == 0 {
		w = queue.StateWrite{Scope: scope, Name: d365.HeldIndexName, Delete: true}
	}
	marks := []queue.StateWrite{w}
	for _, x := range chain {
		marks = append(marks, queue.StateWrite{Scope: scope, Name: d365.MarkerName(x.Stream, x.Seq), Delete: true})
	}
	if err := s.PutState(ctx, marks...); err != nil {
		return err
	}
	stream := held.Stream
	// 2. The held record.
	replay := map[uint64]bool{} // original seqs to put back at the end, in order
	heldDead, heldIsDead := loc.dead[stream][held.Seq]
	switch {
	case drop && heldIsDead:
		if err := s.AddDead(ctx, stream, []pipeline.Record{heldDead.Record}, []string{d365.ReasonDropped}); err != nil {
			return err
		}
		if _, err := s.Purge(ctx, stream, queue.PurgeDead, []uint64{heldDead.Seq}); err != nil {
			return err
		}
	case drop:
		if _, ok := loc.items[stream][held.Seq]; ok {
			if err := s.DeadLetter(ctx, stream, []queue.Dead{{Seq: held.Seq, Reason: d365.ReasonDropped}}); err != nil {
				return err
			}
		}
	case heldIsDead:
		replay[held.Seq] = true
	}
	// 3. The parked records, and the key's queued records behind them.
	for _, x := range chain {
		if x.Seq == held.Seq {
			continue
		}
		if _, ok := loc.dead[stream][x.Seq]; ok {
			replay[x.Seq] = true
		} else if _, ok := loc.items[stream][x.Seq]; ok {
			queued = append(queued, x.Seq)
		}
	}
	if len(replay) > 0 && len(queued) > 0 {
		// They would be delivered before the replayed ones: move them behind.
		sort.Slice(queued, func(i, j int) bool { return queued[i] < queued[j] })
		dead := make([]queue.Dead, len(queued))
		for i, q := range queued {
			dead[i] = queue.Dead{Seq: q, Reason: "in doubt: moved behind released records of key " + held.Key}
			replay[q] = true
		}
		if err := s.DeadLetter(ctx, stream, dead); err != nil {
			return err
		}
		loc = newLocator(s)
		if err := loc.load(stream); err != nil {
			return err
		}
	}
	var orig []uint64
	for q := range replay {
		orig = append(orig, q)
	}
	sort.Slice(orig, func(i, j int) bool { return orig[i] < orig[j] })
	var dls []uint64
	for _, q := range orig {
		if d, ok := loc.dead[stream][q]; ok {
			dls = append(dls, d.Seq)
		}
	}
	n := 0
	if len(dls) > 0 {
		if n, err = s.Replay(ctx, stream, dls); err != nil {
			return err
		}
	}
	verb := "released"
	if drop {
		verb = "dropped"
	}
	fmt.Fprintf(stdout, "%s seq %d of sink %s (stream %s, key %s)", verb, held.Seq, sink, stream, held.Key)
	if drop {
		fmt.Fprintf(stdout, "; it is a dead letter %q", d365.ReasonDropped)
	}
	fmt.Fprintf(stdout, "; %d records of the key requeued in order; they are delivered when the gateway starts\n", n)
	return nil
}
