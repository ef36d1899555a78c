package fomes

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// TestPreviewIsWhatIsSent: the previewed SendMessage call is the request
// the sink sends to the emulator for the same record, envelope and
// headers, byte for byte.
func TestPreviewIsWhatIsSent(t *testing.T) {
	if testing.Short() {
		t.Skip("against fo-emulator")
	}
	em := foemutest.StartRecorded(t)
	fe := d365test.Env(t, em.Emulator)
	s, err := New(&Config{Env: "test", Queue: "JmgMES3P", CompanyField: "dataAreaId", MessageTypeField: "_messageType", InDoubt: InDoubtHold},
		d365test.PluginEnv(t, "mes", fe, nil))
	if err != nil {
		t.Fatal(err)
	}
	rec := pipeline.Record{Stream: "mes", Key: "P000101", Fields: map[string]any{
		"_messageType": "ProdProductionOrderReportFinished", "dataAreaId": "USMF", "ProductionOrderNumber": "P000101",
		"ReportFinishedLines": []any{map[string]any{"ReportedGoodQuantity": json.Number("5"), "AcceptError": true}},
	}}
	p, err := s.PreviewRequest(rec)
	if err != nil {
		t.Fatal(err)
	}
	if p.Method != "POST" || p.Path != SendMessagePath || !strings.Contains(p.Note, "ProdProductionOrderReportFinished") {
		t.Fatalf("preview %+v: want the SendMessage call of a report as finished", p)
	}
	var env map[string]string
	if err := json.Unmarshal(p.Body, &env); err != nil || env["_messageQueue"] != "JmgMES3P" || env["_companyId"] != "USMF" ||
		!strings.Contains(env["_messageContent"], `"AcceptError":"Yes"`) {
		t.Errorf("previewed envelope %s (%v)", p.Body, err)
	}
	if err := s.Write(context.Background(), []pipeline.Record{rec}); err != nil {
		t.Fatal(err)
	}
	sent := em.Requests(SendMessagePath)
	if len(sent) != 1 {
		t.Fatalf("sent %d SendMessage calls, want 1", len(sent))
	}
	foemutest.SamePreview(t, "SendMessage", p, sent[0])
}

// TestPreviewRefusesWhatWriteRefuses: a message that is not valid for its
// type is refused by the preview with the reason Write dead-letters it
// with, and nothing is sent.
func TestPreviewRefusesWhatWriteRefuses(t *testing.T) {
	if testing.Short() {
		t.Skip("against fo-emulator")
	}
	em := foemutest.StartRecorded(t)
	fe := d365test.Env(t, em.Emulator)
	s, err := New(&Config{Env: "test", Queue: "JmgMES3P", CompanyField: "dataAreaId", MessageTypeField: "_messageType",
		MessageType: "ProdProductionOrderStart", InDoubt: InDoubtHold}, d365test.PluginEnv(t, "mes", fe, nil))
	if err != nil {
		t.Fatal(err)
	}
	rec := pipeline.Record{Stream: "mes", Key: "P1", Fields: map[string]any{"ProductionOrderNumber": "P1", "StartedQuantity": "many"}}
	_, perr := s.PreviewRequest(rec)
	werr := s.Write(context.Background(), []pipeline.Record{rec})
	if perr == nil || werr == nil || !strings.Contains(werr.Error(), perr.Error()) {
		t.Fatalf("preview: %v; write: %v; want the same reason", perr, werr)
	}
	if n := len(em.Requests(SendMessagePath)); n != 0 {
		t.Errorf("%d messages sent for a refused record", n)
	}
}
