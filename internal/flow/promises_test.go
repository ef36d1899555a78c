package flow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plantgate/plantgate/internal/backoff"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

func oneFlow(t *testing.T, qty string) []*Flow {
	t.Helper()
	cfg := &config.Config{FlowOrder: []string{"fin"}, Flows: map[string]*config.Flow{
		"fin": {From: "mes", Key: ex("payload.order"), ID: ex("payload.id"),
			Map: []config.MapField{{Name: "Order", Expr: ex("payload.order")}, {Name: "Qty", Expr: ex(qty)}}, To: []string{"mes"}},
	}}
	flows, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	AssignStreams(flows, nil)
	return flows
}

func msg(raw string) pipeline.Message {
	d := map[string]any{}
	for _, kv := range strings.Split(strings.Trim(raw, "{}"), ",") {
		k, v, _ := strings.Cut(kv, ":")
		k, v = strings.Trim(k, `"`), strings.Trim(v, `"`)
		var n int
		if _, err := fmt.Sscan(v, &n); err == nil {
			d[k] = n
		} else {
			d[k] = v
		}
	}
	return pipeline.Message{Raw: []byte(raw), Payload: d, Meta: map[string]any{"topic": "mes/fin"}}
}

// TestRecordThatCannotBeQueuedIsDeadLetteredAtTheSource: a message whose
// record can never be stored (an id over the limit) becomes a dead letter
// of its source with the reason, its neighbours are stored, the file stays
// sound, and a redelivery does not loop or make a second dead letter.
func TestRecordThatCannotBeQueuedIsDeadLetteredAtTheSource(t *testing.T) {
	q := openQueue(t)
	r := NewRouter(q, oneFlow(t, "payload.good"), zerolog.Nop(), nil)
	em := r.Emitter("mes")
	long := fmt.Sprintf(`{"order":"P1","good":5,"id":"%s"}`, strings.Repeat("x", 40<<10))
	for range 2 { // the second Emit is the broker's redelivery
		if err := em.Emit(context.Background(), msg(long), msg(`{"order":"P2","good":1,"id":"ok-1"}`)); err != nil {
			t.Fatalf("emit: %v", err)
		}
	}
	recs, _ := q.List("fin.mes", 0, 0)
	if len(recs) != 1 || recs[0].Key != "P2" {
		t.Fatalf("queued %+v, want only P2", recs)
	}
	dead, _ := q.ListDead(SourceDeadStream("mes"), 0, 0)
	if len(dead) != 1 || !strings.Contains(dead[0].Reason, "cannot be queued") || !strings.Contains(dead[0].Reason, "record id of") || len(dead[0].Record.Raw) != len(long) {
		t.Fatalf("source dead letters %+v, want one with the reason and the raw bytes", dead)
	}
	if err := q.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestKnownIDWithOtherContentIsAConflict: good 7 after good 5 under one id
// is dead-lettered with both versions and counted, never dropped.
func TestKnownIDWithOtherContentIsAConflict(t *testing.T) {
	q := openQueue(t)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	r := NewRouter(q, oneFlow(t, "payload.good"), zerolog.Nop(), m)
	em := r.Emitter("mes")
	ctx := context.Background()
	for _, raw := range []string{`{"order":"P1","good":5,"id":"a"}`, `{"order":"P1","good":5,"id":"a"}`, `{"order":"P1","good":7,"id":"a"}`} {
		if err := em.Emit(ctx, msg(raw)); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP plantgate_queue_conflicts_total Records whose id was seen within the dedup window with different content: dead-lettered with both versions.
# TYPE plantgate_queue_conflicts_total counter
plantgate_queue_conflicts_total{stream="fin.mes"} 1
# HELP plantgate_queue_duplicates_total Records dropped because their id was seen within the dedup window.
# TYPE plantgate_queue_duplicates_total counter
plantgate_queue_duplicates_total{stream="fin.mes"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "plantgate_queue_duplicates_total", "plantgate_queue_conflicts_total"); err != nil {
		t.Error(err)
	}
	dead, _ := q.ListDead("fin.mes", 0, 0)
	if len(dead) != 1 || !strings.Contains(string(dead[0].Record.Raw), `"good":7`) {
		t.Fatalf("dead letters %+v", dead)
	}
	first, _ := dead[0].Record.Meta["conflict_first_version"].(map[string]any)
	if raw, _ := first["raw"].(string); !strings.Contains(raw, `"good":5`) {
		t.Errorf("first version %v", first)
	}
}

// negSink refuses records with a negative Qty, as F&O would.
type negSink struct {
	mu  sync.Mutex
	got []pipeline.Record
}

func (s *negSink) Write(_ context.Context, batch []pipeline.Record) error {
	pe := &pipeline.PartialError{Rejected: map[int]error{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range batch {
		if strings.HasPrefix(fmt.Sprint(r.Fields["Qty"]), "-") {
			pe.Rejected[i] = errors.New("quantity must not be negative")
			continue
		}
		s.got = append(s.got, r)
		pe.Accepted = append(pe.Accepted, i)
	}
	if len(pe.Rejected) == 0 {
		return nil
	}
	return pe
}

func (s *negSink) records() []pipeline.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]pipeline.Record(nil), s.got...)
}

// TestReplayedSinkDeadLetterIsMappedAgain: a record F&O refused because the
// flow mapped the wrong field keeps its source message; after the flow is
// fixed, a replay maps it again through the current config.
func TestReplayedSinkDeadLetterIsMappedAgain(t *testing.T) {
	q := openQueue(t)
	ctx := context.Background()
	sink := &negSink{}
	run := func(r *Router) func() {
		c, cancel := context.WithCancel(ctx)
		rn := NewRunner(RunnerConfig{Stream: "fin.mes", Retry: backoff.Policy{Initial: time.Millisecond, Max: time.Millisecond}, Remap: r.Remap}, q, sink, zerolog.Nop(), nil)
		done := make(chan struct{})
		go func() { _ = rn.Run(c); close(done) }()
		return func() { cancel(); <-done }
	}
	// The flow maps the scrap count where the good count belongs.
	bad := NewRouter(q, oneFlow(t, "payload.scrap"), zerolog.Nop(), nil)
	stop := run(bad)
	if err := bad.Emitter("mes").Emit(ctx, msg(`{"order":"P1","good":5,"scrap":-1,"id":"a"}`)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { d, _ := q.ListDead("fin.mes", 0, 0); return len(d) == 1 })
	stop()
	dead, _ := q.ListDead("fin.mes", 0, 0)
	if len(dead[0].Record.Raw) == 0 {
		t.Fatal("the sink's dead letter lacks the source message")
	}
	// Fixed config, replay.
	good := NewRouter(q, oneFlow(t, "payload.good"), zerolog.Nop(), nil)
	stop = run(good)
	defer stop()
	if n, err := q.Replay(ctx, "fin.mes", nil); err != nil || n != 1 {
		t.Fatalf("replay = %d, %v", n, err)
	}
	waitUntil(t, func() bool { return len(sink.records()) == 1 })
	got := sink.records()[0]
	if fmt.Sprint(got.Fields["Qty"]) != "5" || got.Key != "P1" {
		t.Errorf("delivered %+v, want Qty 5 from the fixed mapping", got.Fields)
	}
	if d, _ := q.ListDead("fin.mes", 0, 0); len(d) != 0 {
		t.Errorf("dead letters left %+v", d)
	}
}

// failAckOnce is a queue whose first Ack fails.
type failAckOnce struct {
	*queue.Store
	failed bool
}

func (f *failAckOnce) Ack(ctx context.Context, stream string, seqs []uint64, states ...queue.StateWrite) error {
	if !f.failed {
		f.failed = true
		return errors.New("disk I/O error")
	}
	return f.Store.Ack(ctx, stream, seqs, states...)
}

type countSink struct {
	mu sync.Mutex
	n  map[uint64]int
}

func (c *countSink) Write(_ context.Context, batch []pipeline.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range batch {
		c.n[r.Seq]++
	}
	return nil
}

// TestFailedBookingNeverResends: when the queue cannot book a delivered
// batch, the runner retries the booking, not the delivery.
func TestFailedBookingNeverResends(t *testing.T) {
	s := openQueue(t)
	q := &failAckOnce{Store: s}
	ctx := context.Background()
	if _, err := s.Append(ctx, []queue.Entry{{Stream: "f.s", Record: pipeline.Record{Key: "k", Fields: map[string]any{"n": 1}}}}); err != nil {
		t.Fatal(err)
	}
	sink := &countSink{n: map[uint64]int{}}
	c, cancel := context.WithCancel(ctx)
	rn := NewRunner(RunnerConfig{Stream: "f.s"}, q, sink, zerolog.Nop(), nil)
	done := make(chan struct{})
	go func() { _ = rn.Run(c); close(done) }()
	waitUntil(t, func() bool { st, _ := s.Stats(); return st.Records == 0 })
	cancel()
	<-done
	if sink.n[1] != 1 {
		t.Fatalf("record written %d times, want once", sink.n[1])
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOverflowNeverSplitsAKey: under pressure a key with records pending in
// the OData stream stays there; without pressure a key with records pending
// in the DMF stream stays there; the others follow the pressure.
func TestOverflowNeverSplitsAKey(t *testing.T) {
	q := openQueue(t)
	ctx := context.Background()
	cfg := &config.Config{FlowOrder: []string{"fin"}, Flows: map[string]*config.Flow{
		"fin": {From: "mes", Key: ex("payload.order"), Map: []config.MapField{{Name: "Qty", Expr: ex("payload.good")}}, To: []string{"odata"},
			Overflow: config.Overflow{Sink: "dmf", Backlog: 2}},
	}}
	flows, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	AssignStreams(flows, func(s string) bool { return s == "dmf" })
	r := NewRouter(q, flows, zerolog.Nop(), nil)
	for _, st := range r.OverflowStreams() {
		if err := q.TrackKeys(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	pressed := false
	r.SetPressure(func(string) (int64, time.Duration) {
		if pressed {
			return 100, 0
		}
		return 0, 0
	})
	em := r.Emitter("mes")
	emit := func(order string, good int) {
		t.Helper()
		if err := em.Emit(ctx, msg(fmt.Sprintf(`{"order":"%s","good":%d}`, order, good))); err != nil {
			t.Fatal(err)
		}
	}
	streamOf := func(order string) []string {
		var out []string
		for _, st := range []string{"fin.odata", "dmf"} {
			recs, _ := q.List(st, 0, 0)
			for _, rec := range recs {
				if rec.Key == order {
					out = append(out, st)
				}
			}
		}
		return out
	}
	emit("A", 1) // no pressure: OData
	pressed = true
	emit("A", 2) // A pending in OData: stays there
	emit("B", 1) // new key under pressure: DMF
	pressed = false
	emit("B", 2) // B pending in DMF: stays there
	emit("C", 1) // new key, no pressure: OData
	for order, want := range map[string]string{"A": "fin.odata,fin.odata", "B": "dmf,dmf", "C": "fin.odata"} {
		if got := strings.Join(streamOf(order), ","); got != want {
			t.Errorf("key %s went to %s, want %s", order, got, want)
		}
	}
	recs, _ := q.List("dmf", 0, 0)
	if len(recs) != 2 || recs[0].Fields["QTY"] == nil {
		t.Errorf("DMF records %+v, want fields in upper case", recs)
	}
	if ov := r.Overflows(); len(ov) != 1 || ov[0].Moved != 2 || ov[0].Active {
		t.Errorf("overflow status %+v", ov)
	}
}
