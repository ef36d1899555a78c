package fomes

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

func mesConfig(typ, inDoubt string) *Config {
	return &Config{Env: "test", MessageType: typ, Queue: "JmgMES3P", CompanyField: "dataAreaId", InDoubt: inDoubt}
}

func newSink(t *testing.T, cfg *Config, fe *d365.Env, st *queue.Store) *Sink {
	t.Helper()
	s, err := New(cfg, d365test.PluginEnv(t, "mes", fe, st))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func rec(seq uint64, order string, fields map[string]any) pipeline.Record {
	f := map[string]any{"ProductionOrderNumber": order}
	for k, v := range fields {
		f[k] = v
	}
	return pipeline.Record{Stream: "f.mes", Seq: seq, Key: order, Fields: f}
}

// queued appends recs to st's stream f.mes in order and returns them with
// the sequences the queue gave them (1, 2, ... in a fresh store), as a
// runner would lease them.
func queued(t *testing.T, st *queue.Store, recs ...pipeline.Record) []pipeline.Record {
	t.Helper()
	seqs := d365test.Append(t, st, "f.mes", recs...)
	out := make([]pipeline.Record, len(recs))
	for i, r := range recs {
		r.Seq = seqs[i]
		out[i] = r
	}
	return out
}

func TestIntegrationSendMessage(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em)
	st := d365test.Store(t)
	s := newSink(t, mesConfig("ProdProductionOrderReportFinished", InDoubtHold), fe, st)
	err := s.Write(context.Background(), queued(t, st,
		rec(1, "P000101", map[string]any{"ReportFinishedLines": []any{map[string]any{
			"ItemNumber": "FG-1000", "ReportedGoodQuantity": json.Number("10"), "ReportedErrorQuantity": "1.5",
			"AcceptError": true, "ReportAsFinishedDate": "2025-03-03T08:00:00Z", "ErrorCause": "material"}}}),
		rec(2, "P000201", map[string]any{"dataAreaId": "DEMF", "ReportFinishedLines": map[string]any{"ItemNumber": "FG-1000", "ReportedGoodQuantity": 2}}),
	))
	if err != nil {
		t.Fatal(err)
	}
	msgs := em.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages in F&O, want 2", len(msgs))
	}
	m := msgs[0]
	if m.Company != "USMF" || m.Queue != "JmgMES3P" || m.Type != "ProdProductionOrderReportFinished" || m.ProductionOrder != "P000101" {
		t.Errorf("message %+v", m)
	}
	want := `{"ProductionOrderNumber":"P000101","ReportFinishedLines":[{"AcceptError":"Yes","ErrorCause":"Material","ItemNumber":"FG-1000","ReportAsFinishedDate":"2025-03-03","ReportedErrorQuantity":1.5,"ReportedGoodQuantity":10}]}`
	if m.Content != want {
		t.Errorf("content\n got %s\nwant %s", m.Content, want)
	}
	if msgs[1].Company != "DEMF" || strings.Contains(msgs[1].Content, "dataAreaId") {
		t.Errorf("company override: %+v", msgs[1])
	}
}

func TestValidationDeadLettersLocally(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em)
	for _, tc := range []struct {
		typ    string
		fields map[string]any
		want   string
	}{
		{"ProdProductionOrderStart", map[string]any{"ProductionOrderNumber": ""}, "ProductionOrderNumber is mandatory"},
		{"ProdProductionOrderStart", map[string]any{"StartedQuantity": 5}, "ProductionOrderNumber is mandatory"},
		{"ProdProductionOrderStart", map[string]any{"ProductionOrderNumber": "P1", "StartedQuantity": "many"}, "StartedQuantity: want a number, got a string"},
		{"ProdProductionOrderStart", map[string]any{"ProductionOrderNumber": "P1", "StartedDate": "03/03/2025"}, `StartedDate: want a date (YYYY-MM-DD), got "03/03/2025"`},
		{"ProdProductionOrderStart", map[string]any{"ProductionOrderNumber": "P1", "AutomaticBOMConsumptionRule": "Sometimes"}, "want one of FlushingPrincip, Always, Never"},
		{"ProdProductionOrderStart", map[string]any{"ProductionOrderNumber": "P1", "Colour": "red"}, "Colour is not a field of this message type"},
		{"ProdProductionOrderReportFinished", map[string]any{"ProductionOrderNumber": "P1"}, "ReportFinishedLines is mandatory and must hold at least one line"},
		{"ProdProductionOrderReportFinished", map[string]any{"ProductionOrderNumber": "P1", "ReportFinishedLines": []any{}}, "ReportFinishedLines must hold at least one line"},
		{"ProdProductionOrderReportFinished", map[string]any{"ProductionOrderNumber": "P1", "ReportFinishedLines": "x"}, "ReportFinishedLines must be a list of lines"},
		{"ProdProductionOrderPickingList", map[string]any{"ProductionOrderNumber": "P1", "PickingListLines": []any{map[string]any{"ConsumptionBOMQuantity": 1}}}, "PickingListLines[0].ItemNumber is mandatory"},
		{"ProdProductionOrderRouteCard", map[string]any{"ProductionOrderNumber": "P1", "RouteCardLines": []any{map[string]any{"OperationNumber": 10.5}}}, "RouteCardLines[0].OperationNumber: want an integer"},
		{"ProdProductionOrderRouteCard", map[string]any{"ProductionOrderNumber": "P1", "RouteCardLines": []any{map[string]any{"OperationNumber": 10, "TaskType": "Lunch"}}}, "RouteCardLines[0].TaskType: want one of"},
		{"ProdProductionOrderEnd", map[string]any{"ProductionOrderNumber": "P1", "AutoUpdate": "maybe"}, `AutoUpdate: want Yes or No, got "maybe"`},
		{"ProdProductionOrderEnd", map[string]any{"ProductionOrderNumber": "P1", "ExecutedDateTime": "soon"}, "ExecutedDateTime: want a date and time"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			s := newSink(t, mesConfig(tc.typ, InDoubtHold), fe, nil)
			err := s.Write(context.Background(), []pipeline.Record{{Stream: "f.mes", Seq: 1, Fields: tc.fields}})
			if !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "invalid "+tc.typ+" message") {
				t.Errorf("Write = %v; want a permanent error with %q", err, tc.want)
			}
		})
	}
	if n := em.Stats().Total(foemu.RouteMES); n != 0 {
		t.Errorf("%d invalid messages were sent", n)
	}
	// Every valid type passes the emulator's own checks.
	s := newSink(t, mesConfig("ProdProductionOrderRouteCard", InDoubtHold), fe, nil)
	if err := s.Write(context.Background(), []pipeline.Record{rec(1, "P000103", map[string]any{"RouteCardLines": []any{
		map[string]any{"OperationNumber": json.Number("10"), "Hours": 1.5, "OperationPriority": "secondary2", "TaskType": "Setup", "OperationCompleted": false}}})}); err != nil {
		t.Fatal(err)
	}
}

func TestWriteUsesForEach(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em)
	st := d365test.Store(t)
	s := newSink(t, mesConfig("ProdProductionOrderStart", InDoubtHold), fe, st)
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteMES, ErrorRate: 1, ErrorStatus: 500}}}); err != nil {
		t.Fatal(err)
	}
	batch := queued(t, st, rec(1, "P000101", nil), rec(2, "P000102", nil), rec(3, "P000101", nil), rec(4, "P000102", nil))
	err := s.Write(context.Background(), batch)
	if err == nil || pipeline.IsPermanent(err) {
		t.Fatalf("Write = %v; want transient", err)
	}
	// The first message of each order failed; the second of each was not tried.
	if n := em.Stats().Total(foemu.RouteMES); n != 2 {
		t.Errorf("%d requests, want 2 (one per order)", n)
	}
	if err := em.SetFaults(foemu.Faults{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	var orders []string
	for _, m := range em.Messages() {
		orders = append(orders, m.ProductionOrder)
	}
	if got := strings.Join(orders, ","); got != "P000101,P000102,P000101,P000102" {
		t.Errorf("messages %s", got)
	}
}

func TestInDoubtPolicies(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em)
	ctx := context.Background()
	for _, policy := range []string{InDoubtHold, InDoubtResend} {
		t.Run(policy, func(t *testing.T) {
			st := d365test.Store(t)
			s := newSink(t, mesConfig("ProdProductionOrderStart", policy), fe, st)
			before := len(em.Messages())
			batch := queued(t, st, rec(1, "P000101", nil), rec(2, "P000101", nil), rec(3, "P000102", nil))
			// As after a crash while message 1 of P000101 was in flight.
			if err := s.tracker.Sending(ctx, batch[0]); err != nil {
				t.Fatal(err)
			}
			s2 := newSink(t, mesConfig("ProdProductionOrderStart", policy), fe, st)
			err := s2.Write(ctx, batch)
			sent := len(em.Messages()) - before
			if policy == InDoubtResend {
				if err != nil || sent != 3 {
					t.Fatalf("resend: Write = %v, %d sent; want all 3 sent", err, sent)
				}
				return
			}
			var pe *pipeline.PartialError
			if !errors.As(err, &pe) || len(pe.Accepted) != 1 || pe.Accepted[0] != 2 || sent != 1 {
				t.Fatalf("hold: Write = %v, %d sent; want only P000102 sent", err, sent)
			}
			if !strings.Contains(pe.Rejected[0].Error(), "plantgate queue release --stream f.mes --seq 1") || !strings.HasPrefix(pe.Rejected[1].Error(), d365.ReasonParkedPrefix) {
				t.Errorf("reasons %v", pe.Rejected)
			}
			held := s2.Status()["in_doubt"].([]d365.HeldRecord)
			if len(held) != 2 || held[0].State != d365.HeldInDoubt || held[1].Behind != 1 {
				t.Errorf("status in_doubt %+v", held)
			}
		})
	}
}

func TestIntegrationTimeoutIsHeld(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em, func(c *config.FOEnv, _ *d365.Options) { c.Timeout = config.Duration(300 * time.Millisecond) })
	st := d365test.Store(t)
	s := newSink(t, mesConfig("ProdProductionOrderStart", InDoubtHold), fe, st)
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteMES, Latency: foemu.Duration(2 * time.Second)}}}); err != nil {
		t.Fatal(err)
	}
	err := s.Write(context.Background(), queued(t, st, rec(7, "P000101", nil)))
	if !pipeline.IsPermanent(err) || !strings.HasPrefix(errors.Unwrap(err).Error(), d365.ReasonHeldPrefix) || !strings.Contains(err.Error(), "outcome is unknown") {
		t.Fatalf("Write after a timeout = %v; want held", err)
	}
	if h, _ := s.tracker.Counts(); h != 1 {
		t.Errorf("%d held", h)
	}
}

func TestIntegrationGatewayTimeoutIsHeld(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em)
	st := d365test.Store(t)
	s := newSink(t, mesConfig("ProdProductionOrderStart", InDoubtHold), fe, st)
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteMES, ErrorRate: 1, ErrorStatus: 504}}}); err != nil {
		t.Fatal(err)
	}
	err := s.Write(context.Background(), queued(t, st, rec(1, "P000101", nil)))
	if !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), d365.ReasonHeldPrefix) || !strings.Contains(err.Error(), "504 Gateway Timeout") {
		t.Fatalf("Write after a 504 = %v; want held", err)
	}
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteMES, ErrorRate: 1, ErrorStatus: 502}}}); err != nil {
		t.Fatal(err)
	}
	// A proxy's 502 may follow a request that reached F&O: in doubt too.
	err = s.Write(context.Background(), queued(t, st, rec(2, "P000102", nil)))
	if !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), d365.ReasonHeldPrefix) || !strings.Contains(err.Error(), "502 Bad Gateway") {
		t.Fatalf("Write after a 502 = %v; want held", err)
	}
}
