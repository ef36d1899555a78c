package flow

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/backoff"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

func openQueue(t *testing.T) *queue.Store {
	t.Helper()
	s, err := queue.Open(filepath.Join(t.TempDir(), "q.db"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ex(src string) config.Expr {
	return config.Expr{Src: src, Pos: config.Pos{File: "p.yaml", Line: 10, Column: 11}}
}

func testConfig() *config.Config {
	return &config.Config{
		FlowOrder: []string{"finished", "all"},
		Flows: map[string]*config.Flow{
			"finished": {From: "mes", When: ex(`topic matches "^mes/line3/finished$"`), Key: ex("payload.order"), ID: ex("payload.id"),
				Map: []config.MapField{{Name: "ProductionOrderNumber", Expr: ex("payload.order")}, {Name: "Good", Expr: ex("payload.good")}}, To: []string{"mes", "rec"}},
			"all": {From: "mes", When: ex(`mqttMatch(topic, "mes/+/consumption")`), Key: ex("payload.order"), To: []string{"rec"}},
		},
	}
}

func TestCompileReportsPositions(t *testing.T) {
	cfg := &config.Config{FlowOrder: []string{"f"}, Flows: map[string]*config.Flow{
		"f": {From: "s", When: ex("payload.x =="), Key: ex("nosuchvar"), Map: []config.MapField{{Name: "A", Expr: ex("payload.a +")}}, To: []string{"k"}},
	}}
	_, err := Compile(cfg)
	probs := config.AsProblems(err)
	if len(probs) != 3 {
		t.Fatalf("got %d problems (%v), want 3", len(probs), err)
	}
	for _, p := range probs {
		if p.Pos.File != "p.yaml" || p.Pos.Line != 10 || p.Pos.Column < 11 {
			t.Errorf("problem %q at %+v, want p.yaml line 10 after column 11", p.Msg, p.Pos)
		}
	}
	if !strings.Contains(err.Error(), "nosuchvar") {
		t.Errorf("error %q does not name the unknown variable", err)
	}
}

func TestRouteMapsDeadLettersAndDedups(t *testing.T) {
	q := openQueue(t)
	flows, err := Compile(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(nil)
	r := NewRouter(q, flows, zerolog.Nop(), m)
	em := r.Emitter("mes")
	ctx := context.Background()
	msgs := []pipeline.Message{
		{Raw: []byte(`{"order":"P1","good":5,"id":"a"}`), Payload: map[string]any{"order": "P1", "good": 5, "id": "a"}, Meta: map[string]any{"topic": "mes/line3/finished"}},
		{Raw: []byte(`{"order":"P1","good":5,"id":"a"}`), Payload: map[string]any{"order": "P1", "good": 5, "id": "a"}, Meta: map[string]any{"topic": "mes/line3/finished"}}, // redelivery
		{Raw: []byte(`{"order":"P2","id":"b"}`), Payload: map[string]any{"order": "P2", "id": "b"}, Meta: map[string]any{"topic": "mes/line3/finished"}},                     // no good
		{Raw: []byte(`{oops`), DecodeErr: errors.New("invalid character 'o'"), Meta: map[string]any{"topic": "mes/line3/finished"}},
		{Raw: []byte(`{"order":"P3"}`), Payload: map[string]any{"order": "P3"}, Meta: map[string]any{"topic": "mes/line9/consumption"}},
		{Raw: []byte(`{}`), Payload: map[string]any{}, Meta: map[string]any{"topic": "other"}},
	}
	if err := em.Emit(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	count := func(stream string) int {
		recs, _ := q.List(stream, 0, 0)
		return len(recs)
	}
	if got := count("finished.mes"); got != 1 {
		t.Errorf("finished.mes holds %d, want 1 (the redelivery deduplicated)", got)
	}
	if got := count("finished.rec"); got != 1 {
		t.Errorf("finished.rec holds %d, want 1", got)
	}
	if got := count("all.rec"); got != 1 {
		t.Errorf("all.rec holds %d, want 1", got)
	}
	recs, _ := q.List("finished.mes", 0, 0)
	if recs[0].Key != "P1" || fmt.Sprint(recs[0].Fields["Good"]) != "5" || recs[0].ID != "a" {
		t.Errorf("record = %+v", recs[0])
	}
	dead, _ := q.ListDead(SourceDeadStream("mes"), 0, 0)
	if len(dead) != 2 {
		t.Fatalf("source dead letters = %d, want 2", len(dead))
	}
	if !strings.Contains(dead[0].Reason, "map.Good") || string(dead[0].Record.Raw) != `{"order":"P2","id":"b"}` {
		t.Errorf("map failure dead letter = %q raw %q", dead[0].Reason, dead[0].Record.Raw)
	}
	if !strings.HasPrefix(dead[1].Reason, "decode: ") || string(dead[1].Record.Raw) != `{oops` {
		t.Errorf("decode dead letter = %q raw %q", dead[1].Reason, dead[1].Record.Raw)
	}
}

// testSink records what it delivered per key and fails as told.
type testSink struct {
	mu        sync.Mutex
	delivered map[string][]int
	calls     int
	fail      func(call int, r pipeline.Record) error
	inFlight  map[string]bool
	overlap   bool
}

func (s *testSink) Write(ctx context.Context, batch []pipeline.Record) error {
	s.mu.Lock()
	s.calls++
	call := s.calls
	keys := map[string]bool{}
	for _, r := range batch {
		keys[r.Key] = true
	}
	for k := range keys {
		if s.inFlight[k] {
			s.overlap = true
		}
		s.inFlight[k] = true
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		for _, r := range batch {
			delete(s.inFlight, r.Key)
		}
		s.mu.Unlock()
	}()
	return pipeline.ForEach(ctx, batch, func(_ int, r pipeline.Record) error {
		if s.fail != nil {
			if err := s.fail(call, r); err != nil {
				return err
			}
		}
		n, _ := r.Fields["n"].(interface{ String() string })
		var v int
		if n != nil {
			fmt.Sscan(n.String(), &v)
		}
		s.mu.Lock()
		s.delivered[r.Key] = append(s.delivered[r.Key], v)
		s.mu.Unlock()
		return nil
	})
}

func fill(t *testing.T, q *queue.Store, stream string, keys, per int) {
	t.Helper()
	var entries []queue.Entry
	for i := 0; i < per; i++ {
		for k := 0; k < keys; k++ {
			entries = append(entries, queue.Entry{Stream: stream, Record: pipeline.Record{Key: fmt.Sprintf("P%d", k), Fields: map[string]any{"n": i}}})
		}
	}
	if _, err := q.Append(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		_ = backoff.Wait(context.Background(), 5*time.Millisecond)
	}
}

func TestRunnerKeepsOrderPerKeyAcrossRetries(t *testing.T) {
	q := openQueue(t)
	const keys, per = 8, 50
	fill(t, q, "f.s", keys, per)
	// Every fourth call fails transiently on its first record; record n=7 of
	// key P3 is rejected for good.
	sink := &testSink{delivered: map[string][]int{}, inFlight: map[string]bool{}, fail: func(call int, r pipeline.Record) error {
		if r.Key == "P3" && fmt.Sprint(r.Fields["n"]) == "7" {
			return pipeline.Permanent(errors.New("Write failed for table row of type 'JmgTermReg'"))
		}
		if call%4 == 0 {
			return errors.New("connection reset")
		}
		return nil
	}}
	run := NewRunner(RunnerConfig{Stream: "f.s", MaxBatch: 7, Parallelism: 4, Retry: backoff.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond}}, q, sink, zerolog.Nop(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run.Run(ctx) }()
	waitFor(t, "delivery", func() bool { st, _ := q.Stats(); return st.Records == 0 })
	cancel()
	<-done
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.overlap {
		t.Error("two writes of the same key overlapped")
	}
	for k := 0; k < keys; k++ {
		key := fmt.Sprintf("P%d", k)
		got := sink.delivered[key]
		var want []int
		for i := 0; i < per; i++ {
			if key != "P3" || i != 7 {
				want = append(want, i)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("key %s delivered %v, want %v", key, got, want)
		}
	}
	dead, _ := q.ListDead("f.s", 0, 0)
	if len(dead) != 1 || !strings.Contains(dead[0].Reason, "Write failed for table row") || dead[0].Record.Key != "P3" {
		t.Errorf("dead letters = %+v, want P3's record with the sink's text", dead)
	}
}

func TestRunnerStopReleasesAndRestartResumesInOrder(t *testing.T) {
	q := openQueue(t)
	fill(t, q, "f.s", 3, 100)
	var mu sync.Mutex
	gate := make(chan struct{})
	sink := &testSink{delivered: map[string][]int{}, inFlight: map[string]bool{}, fail: func(call int, r pipeline.Record) error {
		mu.Lock()
		defer mu.Unlock()
		if call > 5 {
			<-gate // block so the stop catches records in flight
		}
		return nil
	}}
	run := NewRunner(RunnerConfig{Stream: "f.s", MaxBatch: 10, Parallelism: 2, DrainTimeout: 50 * time.Millisecond}, q, sink, zerolog.Nop(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run.Run(ctx) }()
	waitFor(t, "some delivery", func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.calls > 5 })
	cancel()
	close(gate)
	<-done
	if n := q.Leased("f.s"); n != 0 {
		t.Fatalf("%d records still leased after stop", n)
	}
	// Restart with a healthy sink: everything is delivered, in order per key.
	sink.fail = nil
	run2 := NewRunner(RunnerConfig{Stream: "f.s", MaxBatch: 10, Parallelism: 2}, q, sink, zerolog.Nop(), nil)
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { done <- run2.Run(ctx2) }()
	waitFor(t, "full delivery", func() bool { st, _ := q.Stats(); return st.Records == 0 })
	cancel2()
	<-done
	sink.mu.Lock()
	defer sink.mu.Unlock()
	for k, got := range sink.delivered {
		// At least once: a record may repeat only as a replay of a batch cut
		// by the stop, never out of order.
		last := -1
		seen := map[int]bool{}
		for _, v := range got {
			if v < last && !seen[v] {
				t.Fatalf("key %s out of order: %v", k, got)
			}
			if v > last {
				last = v
			}
			seen[v] = true
		}
		if len(seen) != 100 {
			t.Fatalf("key %s delivered %d distinct records, want 100", k, len(seen))
		}
	}
}

func TestRunnerHonoursThrottle(t *testing.T) {
	q := openQueue(t)
	fill(t, q, "f.s", 1, 3)
	var first time.Time
	var second time.Time
	sink := &testSink{delivered: map[string][]int{}, inFlight: map[string]bool{}, fail: func(call int, r pipeline.Record) error {
		if call == 1 {
			first = time.Now()
			return pipeline.Throttle(300*time.Millisecond, errors.New("429 Too Many Requests"))
		}
		if second.IsZero() {
			second = time.Now()
		}
		return nil
	}}
	run := NewRunner(RunnerConfig{Stream: "f.s", MaxBatch: 10, Parallelism: 1, Retry: backoff.Policy{Initial: time.Millisecond}}, q, sink, zerolog.Nop(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run.Run(ctx) }()
	waitFor(t, "delivery", func() bool { st, _ := q.Stats(); return st.Records == 0 })
	cancel()
	<-done
	if gap := second.Sub(first); gap < 300*time.Millisecond {
		t.Fatalf("retried after %s, want at least the 300ms Retry-After", gap)
	}
}

func TestMQTTMatch(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"mes/#", "mes/line3/finished", true},
		{"mes/+/finished", "mes/line3/finished", true},
		{"mes/+/finished", "mes/line3/started", false},
		{"mes/line3", "mes/line3/x", false},
		{"$share/g/mes/#", "mes/a", true},
		{"#", "anything/at/all", true},
	} {
		if got := MQTTMatch(tc.filter, tc.topic); got != tc.want {
			t.Errorf("MQTTMatch(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

// Expressions see the message's bytes as raw, in every part of a flow
// (apply only copies them for a flow whose expressions mention raw).
func TestExpressionsSeeRaw(t *testing.T) {
	cfg := &config.Config{FlowOrder: []string{"f"}, Flows: map[string]*config.Flow{
		"f": {From: "s", When: ex(`raw contains "ok"`), Key: ex(`raw[0:2]`),
			Map: []config.MapField{{Name: "Text", Expr: ex("raw")}, {Name: "N", Expr: ex("payload.n")}}, To: []string{"k"}},
	}}
	flows, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter(openQueue(t), flows, zerolog.Nop(), NewMetrics(nil))
	es, errs := r.Route("s", pipeline.Message{Raw: []byte(`ok 7`), Payload: map[string]any{"n": 7}})
	if len(errs) > 0 || len(es) != 1 {
		t.Fatalf("entries %v, errors %v", es, errs)
	}
	if rec := es[0].Record; rec.Key != "ok" || rec.Fields["Text"] != "ok 7" || rec.Fields["N"] != 7 {
		t.Fatalf("record %+v", rec)
	}
	if es, _ := r.Route("s", pipeline.Message{Raw: []byte(`no`), Payload: map[string]any{"n": 1}}); len(es) != 0 {
		t.Fatalf("when on raw did not filter: %v", es)
	}
}
