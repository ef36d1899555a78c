package fomes

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

func outcomesOver(t *testing.T, q *queue.Store, now func() time.Time) *outcomes {
	t.Helper()
	env := pipeline.Env{Name: "mes", Log: zerolog.Nop(), State: q.Scope("sink.mes"), Records: q, Now: now}
	s := &Sink{name: "mes", log: zerolog.Nop(), tracker: d365.NewTracker(q, "mes", d365.TrackerOptions{Streams: []string{"mes"}})}
	o, err := newOutcomes(s, env, &Config{OutcomeTimeout: time.Minute, OutcomeRetention: time.Hour, ClockSkew: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s.out = o
	return o
}

// Each event takes the oldest unmatched send of its fingerprint: two
// identical messages get one event each, in order; a copy of an event,
// an event for content never sent and one from before the send change
// nothing; a Failed one becomes one dead letter with the infolog, also
// when applied again or after a restart.
func TestOutcomeMatching(t *testing.T) {
	q, err := queue.Open(filepath.Join(t.TempDir(), "queue.db"), queue.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()
	clock := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	o := outcomesOver(t, q, now)
	same := `{"ProductionOrderNumber":"P1","StartedQuantity":5}`
	other := `{"ProductionOrderNumber":"P2","StartedQuantity":5}`
	for i, c := range []string{same, same, other} {
		r := pipeline.Record{Stream: "mes", Seq: uint64(i + 1), Key: "P", ID: "m" + string(rune('1'+i)), Raw: []byte(c), Flow: "starts"}
		if err := o.sending(ctx, r, "usmf", "ProdProductionOrderStart", c); err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(time.Second)
	}
	ev := func(id, content, state string, at time.Time) (string, *SentEntry) {
		t.Helper()
		res, e, err := o.apply(ctx, Outcome{EventID: id, Type: "ProdProductionOrderStart", Company: "USMF", Content: content, State: state, Infolog: "Error: no such order", At: at})
		if err != nil {
			t.Fatal(err)
		}
		return res, e
	}
	later := clock.Add(time.Minute)
	if res, _ := ev("early", same, "Processed", clock.Add(-time.Hour)); res != MatchUnknown {
		t.Errorf("an event from before every send: %s", res)
	}
	if res, e := ev("a", `{ "StartedQuantity": 5, "ProductionOrderNumber": "P1" }`, "Processed", later); res != MatchConfirmed || e.Seq != 1 {
		t.Errorf("first event: %s seq %v", res, e)
	}
	if res, e := ev("b", same, "Processed", later); res != MatchConfirmed || e.Seq != 2 {
		t.Errorf("second event: %s seq %v", res, e)
	}
	if res, _ := ev("a", same, "Processed", later); res != MatchDuplicate {
		t.Errorf("copy: %s", res)
	}
	if res, _ := ev("c", same, "Processed", later); res != MatchUnknown {
		t.Errorf("a third event for two sends: %s", res)
	}
	if res, e := ev("d", other, "Failed", later); res != MatchFailed || e.Seq != 3 || !e.Done {
		t.Errorf("failed: %s %+v", res, e)
	}
	if res, _ := ev("d", other, "Failed", later); res != MatchDuplicate {
		t.Errorf("failed copy: %s", res)
	}
	if _, _, err := o.apply(ctx, Outcome{EventID: "x", Type: "T", Company: "C", Content: "{}", State: "Queued"}); !pipeline.IsPermanent(err) {
		t.Errorf("state Queued: %v", err)
	}
	// After a restart the outcomes are known; a copy still changes nothing.
	o2 := outcomesOver(t, q, now)
	if res, _, err := o2.apply(ctx, Outcome{EventID: "d", Type: "ProdProductionOrderStart", Company: "USMF", Content: other, State: "Failed", At: later}); err != nil || res != MatchDuplicate {
		t.Errorf("after restart: %s %v", res, err)
	}
	dead, err := q.ListDead("mes", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].Record.ID != "m3#failed:d" || string(dead[0].Record.Raw) != other {
		t.Fatalf("dead letters: %+v", dead)
	}
	st := o2.status()
	if st["awaiting_outcome"] != 0 {
		t.Errorf("status %v", st)
	}
	// Overdue and retention.
	if err := o2.sending(ctx, pipeline.Record{Stream: "mes", Seq: 9, Key: "P9"}, "USMF", "ProdProductionOrderStart", `{"ProductionOrderNumber":"P9"}`); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * time.Minute)
	o2.sweep(ctx)
	if st := o2.status(); st["overdue"] != 1 || st["awaiting_outcome"] != 1 {
		t.Errorf("after the timeout: %v", st)
	}
	if c := o2.s.Concerns(); len(c) != 1 {
		t.Errorf("no concern for the overdue message: %v", c)
	}
	clock = clock.Add(2 * time.Hour)
	o2.sweep(ctx)
	if left, _ := q.ListState("sink.mes"); len(left) != 0 {
		t.Errorf("entries after the retention: %d", len(left))
	}
	if c := o2.s.Concerns(); len(c) != 0 {
		t.Errorf("concerns after the retention: %v", c)
	}
}
