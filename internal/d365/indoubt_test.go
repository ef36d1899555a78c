package d365

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

func openQueue(t *testing.T) *queue.Store {
	t.Helper()
	s, err := queue.Open(filepath.Join(t.TempDir(), "q.db"), queue.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// queued appends records of keys to stream and returns them as leased.
func queued(t *testing.T, s *queue.Store, stream string, keys ...string) []pipeline.Record {
	t.Helper()
	var es []queue.Entry
	for _, k := range keys {
		es = append(es, queue.Entry{Stream: stream, Record: pipeline.Record{Key: k, Fields: map[string]any{"k": k}}})
	}
	if _, err := s.Append(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	recs, err := s.Lease(stream, len(keys), -1)
	if err != nil || len(recs) != len(keys) {
		t.Fatalf("lease: %v (%d)", err, len(recs))
	}
	return recs
}

func TestTracker(t *testing.T) {
	s := openQueue(t)
	ctx := context.Background()
	open := func() *Tracker { return NewTracker(s, "mes", TrackerOptions{Streams: []string{"f.mes"}}) }
	tr := open()
	recs := queued(t, s, "f.mes", "P1", "P1", "P2")
	r1, r2, r3 := recs[0], recs[1], recs[2]
	check := func(tr *Tracker, r pipeline.Record, want Verdict) pipeline.Hold {
		t.Helper()
		v, h, err := tr.Check(r)
		if err != nil || v != want {
			t.Fatalf("Check(seq %d) = %v, %v; want %v", r.Seq, v, err, want)
		}
		return h
	}
	check(tr, r1, VerdictFresh)
	if err := tr.Sending(ctx, r1); err != nil {
		t.Fatal(err)
	}
	if err := tr.Sending(ctx, r3); err != nil {
		t.Fatal(err)
	}
	if err := tr.Delivered(ctx, r3); err != nil {
		t.Fatal(err)
	}
	// After a crash (a new tracker over the same file): r1 is in doubt, r3
	// was delivered.
	tr = open()
	check(tr, r1, VerdictInDoubt)
	check(tr, r3, VerdictDelivered)
	h, err := tr.Hold(ctx, r1, "timeout", "ProdProductionOrderStart")
	if err != nil {
		t.Fatal(err)
	}
	if got := check(tr, r2, VerdictBlocked); got.Seq != r1.Seq {
		t.Fatalf("r2 blocked behind %d, want %d", got.Seq, r1.Seq)
	}
	if _, err := tr.Park(ctx, r2, h); err != nil {
		t.Fatal(err)
	}
	check(tr, r3, VerdictDelivered) // another key is not blocked
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	tr = NewTracker(s, "mes", TrackerOptions{Streams: []string{"f.mes"}, Held: m.InDoubt.WithLabelValues("mes"), Parked: m.Parked.WithLabelValues("mes")})
	if held, parked := tr.Counts(); held != 1 || parked != 1 {
		t.Fatalf("counts after reopen = %d held, %d parked", held, parked)
	}
	// The in-doubt gauge counts held records only; parked ones have their own.
	want := `
# HELP plantgate_fo_in_doubt_records Records sent without a known outcome, held for an operator to release or drop.
# TYPE plantgate_fo_in_doubt_records gauge
plantgate_fo_in_doubt_records{sink="mes"} 1
# HELP plantgate_fo_parked_records Records of the same key parked behind a held record, delivered once it is released or dropped.
# TYPE plantgate_fo_parked_records gauge
plantgate_fo_parked_records{sink="mes"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "plantgate_fo_in_doubt_records", "plantgate_fo_parked_records"); err != nil {
		t.Error(err)
	}
	if got := check(tr, r1, VerdictHeld); got.State != HeldInDoubt || got.Reason != "timeout" || got.Sink != "mes" {
		t.Errorf("held record %+v", got)
	}
	if got := check(tr, r2, VerdictHeld); got.State != HeldParked || got.Behind != r1.Seq {
		t.Errorf("parked record %+v", got)
	}
	// NotSent clears a mark: the record is fresh again.
	if err := tr.NotSent(ctx, r3); err != nil {
		t.Fatal(err)
	}
	check(tr, r3, VerdictFresh)
	if !strings.HasPrefix(HeldReason("f.mes", 7, "x"), ReasonHeldPrefix) || !strings.HasPrefix(ParkedReason("f.mes", h), ReasonParkedPrefix) {
		t.Error("reasons do not start with their prefixes")
	}
	if st, seq, ok := ParseLegacyMarkerName("m/a.b/00000000000000000042"); !ok || st != "a.b" || seq != 42 {
		t.Errorf("ParseLegacyMarkerName = %q %d %v", st, seq, ok)
	}
}

// TestMarkLivesUntilAck: a delivered record's mark is removed by its ack,
// in the ack's transaction, and by nothing else: however long the batch
// takes, a restart before the ack finds it delivered and does not send it
// again; after the ack no mark is left behind.
func TestMarkLivesUntilAck(t *testing.T) {
	s := openQueue(t)
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	tr := NewTracker(s, "mes", TrackerOptions{Streams: []string{"f.mes"}, Now: func() time.Time { return now }})
	r := queued(t, s, "f.mes", "P1")[0]
	if err := tr.Sending(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := tr.Delivered(ctx, r); err != nil {
		t.Fatal(err)
	}
	// The batch goes on for an hour; the gateway dies before the ack.
	time.Sleep(50 * time.Millisecond)
	now = now.Add(time.Hour)
	again := NewTracker(s, "mes", TrackerOptions{Streams: []string{"f.mes"}})
	if v, _, err := again.Check(r); err != nil || v != VerdictDelivered {
		t.Fatalf("after a long batch, Check = %v, %v; want delivered (never resent)", v, err)
	}
	if err := s.Ack(ctx, "f.mes", []uint64{r.Seq}); err != nil {
		t.Fatal(err)
	}
	marks, err := s.Marks("f.mes")
	if err != nil || len(marks) != 0 {
		t.Fatalf("marks after the ack = %v, %v; want none", marks, err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestEntityPath(t *testing.T) {
	p, err := EntityPath("ProductionOrderHeaders", []KeyValue{{"dataAreaId", "usmf"}, {"ProductionOrderNumber", "P 1/it's"}, {"LineNumber", 2.5}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P%201%2Fit%27%27s',LineNumber=2.5)"; p != want {
		t.Errorf("EntityPath = %s, want %s", p, want)
	}
	if _, err := EntityPath("X", []KeyValue{{"K", ""}}); err == nil {
		t.Error("empty key value accepted")
	}
}
