package foodata

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// TestPreviewIsWhatIsSent: for an upsert the previewed POST is the request
// the sink sends to the emulator for the same record, byte for byte, and
// the previewed PATCH is what it sends when F&O answers that the entity
// exists; for an update the PATCH alone.
func TestPreviewIsWhatIsSent(t *testing.T) {
	if testing.Short() {
		t.Skip("against fo-emulator")
	}
	em := foemutest.StartRecorded(t)
	fe := d365test.Env(t, em.Emulator)
	cfg := lineConfig()
	cfg.Mode = ModeUpsert
	s, err := New(cfg, d365test.PluginEnv(t, "lines", fe, nil))
	if err != nil {
		t.Fatal(err)
	}
	rec := pipeline.Record{Stream: "f.lines", Key: "J-PREVIEW", Fields: map[string]any{
		"JournalNumber": "J-PREVIEW", "LineNumber": json.Number("1"), "ItemNumber": "RM-2000", "CountedQuantity": json.Number("7.50"),
	}}
	p, err := s.PreviewRequest(rec)
	if err != nil {
		t.Fatal(err)
	}
	if p.Method != http.MethodPost || len(p.Then) != 1 || p.Then[0].Method != http.MethodPatch || p.URL != em.BaseURL() {
		t.Fatalf("preview %+v: want a POST to %s, then a PATCH", p, em.BaseURL())
	}
	if !strings.Contains(p.Header["Authorization"], "<access token") {
		t.Errorf("preview shows the Authorization header %q, want the placeholder", p.Header["Authorization"])
	}
	ctx := context.Background()
	// First write: the POST creates the line.
	if err := s.Write(ctx, []pipeline.Record{rec}); err != nil {
		t.Fatal(err)
	}
	sent := em.Requests("/data/")
	if len(sent) != 1 {
		t.Fatalf("sent %d requests, want 1 POST", len(sent))
	}
	foemutest.SamePreview(t, "POST", p, sent[0])
	// The same record again: F&O answers that it exists, so the PATCH.
	if err := s.Write(ctx, []pipeline.Record{rec}); err != nil {
		t.Fatal(err)
	}
	sent = em.Requests("/data/")
	if len(sent) != 3 {
		t.Fatalf("sent %d requests, want POST, POST, PATCH", len(sent))
	}
	foemutest.SamePreview(t, "PATCH", p.Then[0], sent[2])

	// mode update: the PATCH alone.
	cfg = lineConfig()
	cfg.Mode = ModeUpdate
	u, err := New(cfg, d365test.PluginEnv(t, "update", fe, nil))
	if err != nil {
		t.Fatal(err)
	}
	rec.Fields["CountedQuantity"] = json.Number("9")
	pu, err := u.PreviewRequest(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Write(ctx, []pipeline.Record{rec}); err != nil {
		t.Fatal(err)
	}
	sent = em.Requests("/data/")
	if len(pu.Then) != 0 || len(sent) != 4 {
		t.Fatalf("update: preview %+v, %d requests", pu, len(sent))
	}
	foemutest.SamePreview(t, "update PATCH", pu, sent[3])
}

// TestPreviewRefusesWhatWriteRefuses: a record without its key fields is
// refused by the preview with the reason Write dead-letters it with.
func TestPreviewRefusesWhatWriteRefuses(t *testing.T) {
	if testing.Short() {
		t.Skip("against fo-emulator")
	}
	em := foemutest.StartRecorded(t)
	fe := d365test.Env(t, em.Emulator)
	s, err := New(lineConfig(), d365test.PluginEnv(t, "lines", fe, nil))
	if err != nil {
		t.Fatal(err)
	}
	rec := pipeline.Record{Stream: "f.lines", Key: "J", Fields: map[string]any{"JournalNumber": "J"}}
	_, perr := s.PreviewRequest(rec)
	werr := s.Write(context.Background(), []pipeline.Record{rec})
	if perr == nil || werr == nil || !strings.Contains(werr.Error(), perr.Error()) {
		t.Fatalf("preview: %v; write: %v; want the same reason", perr, werr)
	}
	if n := len(em.Requests("/data/")); n != 0 {
		t.Errorf("%d requests sent for a refused record", n)
	}
}
