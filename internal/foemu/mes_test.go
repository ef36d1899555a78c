package foemu_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

const sendPath = "/api/services/SysMessageServices/SysMessageService/SendMessage"

// send posts a SendMessage envelope; content is marshalled into the
// _messageContent string unless it already is a string.
func (a *api) send(company, typ string, content any) reply {
	a.t.Helper()
	c, ok := content.(string)
	if !ok {
		b, err := json.Marshal(content)
		if err != nil {
			a.t.Fatal(err)
		}
		c = string(b)
	}
	env, _ := json.Marshal(map[string]any{"_companyId": company, "_messageQueue": "JmgMES3P", "_messageType": typ, "_messageContent": c})
	return a.do(http.MethodPost, sendPath, string(env))
}

func waitMessages(t *testing.T, em *foemu.Emulator, n int) []foemu.Message {
	t.Helper()
	var msgs []foemu.Message
	foemutest.WaitFor(t, 5*time.Second, "messages to be processed or failed", func() bool {
		msgs = em.Messages()
		done := 0
		for _, m := range msgs {
			if m.State != foemu.MessageQueued {
				done++
			}
		}
		return len(msgs) == n && done == n
	})
	return msgs
}

func order(t *testing.T, em *foemu.Emulator, number string) foemu.ProductionOrder {
	t.Helper()
	for _, po := range em.ProductionOrders() {
		if po.Number == number && po.Company == "USMF" {
			return po
		}
	}
	t.Fatalf("no production order %s", number)
	return foemu.ProductionOrder{}
}

func TestMESLifecycle(t *testing.T) {
	a := newAPI(t)
	steps := []struct {
		typ     string
		content map[string]any
	}{
		{"ProdProductionOrderStart", map[string]any{"ProductionOrderNumber": "P000101", "StartedQuantity": 100}},
		{"ProdProductionOrderPickingList", map[string]any{"ProductionOrderNumber": "P000101", "PickingListLines": []any{
			map[string]any{"ItemNumber": "RM-2000", "ConsumptionBOMQuantity": 40}, map[string]any{"ItemNumber": "RM-2002", "ConsumptionBOMQuantity": 80.5}}}},
		{"ProdProductionOrderRouteCard", map[string]any{"ProductionOrderNumber": "P000101", "RouteCardLines": []any{
			map[string]any{"OperationNumber": 10, "Hours": 2.5, "GoodQuantity": 40, "OperationCompleted": "No"}}}},
		{"ProdProductionOrderReportFinished", map[string]any{"ProductionOrderNumber": "P000101", "ReportFinishedLines": []any{
			map[string]any{"ItemNumber": "FG-1000", "ReportedGoodQuantity": 40, "ReportedErrorQuantity": 2, "ReportAsFinishedDate": "2025-03-03"}}}},
		{"ProdProductionOrderReportFinished", map[string]any{"ProductionOrderNumber": "P000101", "ReportFinishedLines": []any{
			map[string]any{"ReportedGoodQuantity": 60, "EndJob": "Yes"}}}},
		{"ProdProductionOrderEnd", map[string]any{"ProductionOrderNumber": "P000101"}},
	}
	for _, s := range steps {
		r := a.send("USMF", s.typ, s.content)
		if r.status != 200 || r.header.Get("X-FOEmulator-Message-Id") == "" {
			t.Fatalf("%s: status %d: %s", s.typ, r.status, r.body)
		}
	}
	msgs := waitMessages(t, a.em, len(steps))
	for _, m := range msgs {
		if m.State != foemu.MessageProcessed {
			t.Errorf("message %d (%s): %s, %s", m.ID, m.Type, m.State, m.Infolog)
		}
	}
	po := order(t, a.em, "P000101")
	if po.Status != "Completed" || po.StartedQuantity != 100 || po.ReportedGood != 100 || po.ReportedError != 2 || po.RemainingQuantity != 0 {
		t.Errorf("order = %+v", po)
	}
	if po.Consumption["RM-2000"] != 40 || po.Consumption["RM-2002"] != 80.5 {
		t.Errorf("consumption = %v", po.Consumption)
	}
	if op := po.Operations["10"]; op.Hours != 2.5 || op.GoodQuantity != 40 {
		t.Errorf("operation 10 = %+v", op)
	}
	for set, want := range map[string]int{"ProductionPickingListJournalEntries": 2, "RouteCardProductionJournalEntries": 1, "ReportAsFinishedProductionJournalEntries": 2} {
		recs, _ := a.em.Records(set)
		if len(recs) != want {
			t.Errorf("%s: %d records, want %d", set, len(recs), want)
		}
	}
}

func TestMESFailsAfterThreeAttempts(t *testing.T) {
	a := newAPI(t)
	r := a.send("USMF", "ProdProductionOrderReportFinished", map[string]any{"ProductionOrderNumber": "P000104", "ReportFinishedLines": []any{map[string]any{"ReportedGoodQuantity": 1}}})
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	m := waitMessages(t, a.em, 1)[0]
	if m.State != foemu.MessageFailed || m.Attempts != 3 || len(m.Log) != 3 {
		t.Errorf("message = %s after %d attempts (%d log lines), want Failed after 3", m.State, m.Attempts, len(m.Log))
	}
	if !strings.Contains(m.Infolog, "P000104 has status Created and has not been released") {
		t.Errorf("infolog = %q", m.Infolog)
	}
	if po := order(t, a.em, "P000104"); po.Status != "Created" || po.ReportedGood != 0 {
		t.Errorf("order changed: %+v", po)
	}
}

func TestMESOrderingPerOrder(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) { c.MES.Workers = 4 })
	// The start comes first; a report processed before it would auto-start
	// the whole scheduled quantity (50), so a started quantity of 7 proves
	// the per-order sequence. P000103's messages run in parallel.
	a.send("USMF", "ProdProductionOrderStart", map[string]any{"ProductionOrderNumber": "P000102", "StartedQuantity": 7})
	for range 5 {
		a.send("USMF", "ProdProductionOrderReportFinished", map[string]any{"ProductionOrderNumber": "P000102", "ReportFinishedLines": []any{map[string]any{"ReportedGoodQuantity": 1}}})
		a.send("USMF", "ProdProductionOrderPickingList", map[string]any{"ProductionOrderNumber": "P000103", "PickingListLines": []any{map[string]any{"ItemNumber": "RM-2001", "ConsumptionBOMQuantity": 1}}})
	}
	msgs := waitMessages(t, a.em, 11)
	var last time.Time
	for _, m := range msgs {
		if m.State != foemu.MessageProcessed {
			t.Errorf("message %d: %s %s", m.ID, m.State, m.Infolog)
		}
		if m.ProductionOrder == "P000102" {
			if m.ProcessedAt.Before(last) {
				t.Errorf("message %d processed before an earlier message of the same order", m.ID)
			}
			last = *m.ProcessedAt
		}
	}
	if po := order(t, a.em, "P000102"); po.StartedQuantity != 7 || po.ReportedGood != 5 {
		t.Errorf("P000102 = %+v", po)
	}
	if po := order(t, a.em, "P000103"); po.Consumption["RM-2001"] != 5 {
		t.Errorf("P000103 consumption = %v", po.Consumption)
	}
}

func TestMESRejects(t *testing.T) {
	a := newAPI(t)
	env := func(fields map[string]any) string {
		b, _ := json.Marshal(fields)
		return string(b)
	}
	good := map[string]any{"_companyId": "USMF", "_messageQueue": "JmgMES3P", "_messageType": "ProdProductionOrderStart", "_messageContent": `{"ProductionOrderNumber":"P000101"}`}
	with := func(k string, v any) string {
		m := map[string]any{}
		for kk, vv := range good {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return env(m)
	}
	tests := []struct {
		name, body, want string
	}{
		{"nested content object", with("_messageContent", map[string]any{"ProductionOrderNumber": "P000101"}), "_messageContent must be the message JSON serialized into a string"},
		{"missing parameter", with("_messageQueue", nil), "Parameter '_messageQueue' is not found within the request content body."},
		{"unknown queue", with("_messageQueue", "OtherQueue"), "Message queue 'OtherQueue' does not exist."},
		{"unknown type", with("_messageType", "ProdRouteCard"), "Message type 'ProdRouteCard' is not valid for message queue 'JmgMES3P'."},
		{"unknown company", with("_companyId", "ZZZ"), "Company 'ZZZ' does not exist."},
		{"missing order number", with("_messageContent", `{"StartedQuantity":1}`), "Field 'ProductionOrderNumber' is mandatory."},
		{"missing lines", with("_messageType", "ProdProductionOrderReportFinished"), "Field 'ReportFinishedLines' is mandatory and must hold at least one line."},
		{"line mandatory field", env(map[string]any{"_companyId": "USMF", "_messageQueue": "JmgMES3P", "_messageType": "ProdProductionOrderPickingList", "_messageContent": `{"ProductionOrderNumber":"P000101","PickingListLines":[{"ConsumptionBOMQuantity":1}]}`}), "Field 'PickingListLines[0].ItemNumber' is mandatory."},
		{"unknown field", with("_messageContent", `{"ProductionOrderNumber":"P000101","Qty":1}`), "Field 'Qty' is not a field of this message type."},
		{"wrong type", with("_messageContent", `{"ProductionOrderNumber":"P000101","StartedQuantity":"many"}`), "Field 'StartedQuantity': a number was expected."},
		{"bad enum", with("_messageContent", `{"ProductionOrderNumber":"P000101","AutomaticBOMConsumptionRule":"Sometimes"}`), "'Sometimes' is not one of FlushingPrincip, Always, Never."},
		{"content not JSON", with("_messageContent", `ProductionOrderNumber=P1`), "The message content is not a JSON object"},
		{"body not JSON", "{", "An exception occured when deserializing a parameters"}, //nolint:misspell // F&O's text
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.do(http.MethodPost, sendPath, tt.body)
			if r.status != 400 {
				t.Fatalf("status = %d, want 400: %s", r.status, r.body)
			}
			m := r.json(t)
			if msg, _ := m["Message"].(string); !strings.Contains(msg, tt.want) {
				t.Errorf("Message = %q, want it to contain %q", msg, tt.want)
			}
			if m["ExceptionType"] == nil {
				t.Error("no ExceptionType")
			}
		})
	}
	if n := len(a.em.Messages()); n != 0 {
		t.Errorf("%d rejected messages were stored", n)
	}
}

func TestMESValidateInProcessor(t *testing.T) {
	off := false
	a := newAPI(t, func(c *foemu.Config) { c.MES.ValidateOnSend = &off })
	if r := a.send("USMF", "ProdProductionOrderStart", `{"StartedQuantity":1}`); r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	m := waitMessages(t, a.em, 1)[0]
	if m.State != foemu.MessageFailed || !strings.Contains(m.Infolog, "Field 'ProductionOrderNumber' is mandatory.") {
		t.Errorf("message = %s %q", m.State, m.Infolog)
	}
}

func TestMESProcessingDelay(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) { c.MES.ProcessingDelay = foemu.Duration(150 * time.Millisecond) })
	sent := time.Now()
	a.send("USMF", "ProdProductionOrderStart", map[string]any{"ProductionOrderNumber": "P000102"})
	if m := a.em.Messages()[0]; m.State != foemu.MessageQueued {
		t.Fatalf("state right after send = %s, want Queued", m.State)
	}
	m := waitMessages(t, a.em, 1)[0]
	if d := m.ProcessedAt.Sub(sent); d < 150*time.Millisecond {
		t.Errorf("processed after %v, want at least 150ms", d)
	}
}
