package d365

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

func TestTracker(t *testing.T) {
	s, err := queue.Open(filepath.Join(t.TempDir(), "q.db"), queue.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	open := func() *Tracker {
		tr, err := NewTracker(s.Scope("sink.mes"), "mes", TrackerOptions{ForgetAfter: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	tr := open()
	r1 := pipeline.Record{Stream: "f.mes", Seq: 1, Key: "P1"}
	r2 := pipeline.Record{Stream: "f.mes", Seq: 2, Key: "P1"}
	r3 := pipeline.Record{Stream: "f.mes", Seq: 3, Key: "P2"}
	check := func(tr *Tracker, r pipeline.Record, want Verdict) HeldRecord {
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
	if err := tr.Delivered(ctx, r3, true); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	// After a crash: r1 is in doubt, r3 was delivered.
	tr = open()
	check(tr, r1, VerdictInDoubt)
	check(tr, r3, VerdictDelivered)
	h, err := tr.Hold(ctx, r1, "timeout", "ProdProductionOrderStart")
	if err != nil {
		t.Fatal(err)
	}
	if got := check(tr, r2, VerdictBlocked); got.Seq != 1 {
		t.Fatalf("r2 blocked behind %d, want 1", got.Seq)
	}
	if _, err := tr.Park(ctx, r2, h); err != nil {
		t.Fatal(err)
	}
	check(tr, r3, VerdictDelivered) // another key is not blocked
	tr.Close()
	tr = open()
	if held, parked := tr.Counts(); held != 1 || parked != 1 {
		t.Fatalf("counts after reopen = %d held, %d parked", held, parked)
	}
	if got := check(tr, r1, VerdictHeld); got.State != HeldInDoubt || got.Reason != "timeout" {
		t.Errorf("held record %+v", got)
	}
	if got := check(tr, r2, VerdictHeld); got.State != HeldParked || got.Behind != 1 {
		t.Errorf("parked record %+v", got)
	}
	// Markers of delivered records are forgotten a while later.
	tr.Settled(r1)
	if err := tr.Delivered(ctx, r3, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		names, _ := s.ListState("sink.mes")
		_, ok := names[MarkerName("f.mes", 3)]
		return !ok
	})
	tr.Close()
	tr.Close()
	if !strings.HasPrefix(HeldReason("mes", 7, "x"), ReasonHeldPrefix) || !strings.HasPrefix(ParkedReason("mes", h), ReasonParkedPrefix) {
		t.Error("reasons do not start with their prefixes")
	}
	if st, seq, ok := ParseMarkerName(MarkerName("a.b", 42)); !ok || st != "a.b" || seq != 42 {
		t.Errorf("ParseMarkerName = %q %d %v", st, seq, ok)
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
