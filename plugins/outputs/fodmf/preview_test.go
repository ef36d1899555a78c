package fodmf

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

// TestPreviewIsWhatIsSent: the previewed row is the row of the data file
// in the package the sink uploads to the emulator for the same record
// (line field, number formatting and column order included).
func TestPreviewIsWhatIsSent(t *testing.T) {
	if testing.Short() {
		t.Skip("against fo-emulator")
	}
	em := foemutest.StartRecorded(t)
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Batch.MaxRecords = 1
	rec := pline("P000101", "RM-2000", json.Number("1.50"))
	lay, err := NewLayout(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec.Stream = "dmf"
	p, err := lay.PreviewRequest(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Columns, cfg.Columns) || len(p.Row) != len(p.Columns) || !strings.Contains(p.Note, "MES-PickingList") {
		t.Fatalf("preview %+v", p)
	}
	appendLines(t, store, rec)
	start(t, em.Emulator, store, cfg)
	d365test.WaitFor(t, 20*time.Second, "the line imported", func() bool { return pending(store) == 0 && len(imported(t, em.Emulator)) == 1 })
	var uploads []foemutest.Request
	for _, q := range em.Requests("/_blob/") {
		if q.Method == "PUT" {
			uploads = append(uploads, q)
		}
	}
	if len(uploads) != 1 {
		t.Fatalf("%d package uploads, want 1", len(uploads))
	}
	rows, err := readDataFile(uploads[0].Body, p.File)
	if err != nil {
		t.Fatalf("the uploaded package: %v", err)
	}
	if len(rows) != 2 || !slices.Equal(rows[0], p.Columns) || !slices.Equal(rows[1], p.Row) {
		t.Errorf("uploaded data file %s holds %q, previewed %q %q", p.File, rows, p.Columns, p.Row)
	}
}

// TestPreviewRefusesWhatTheSinkRefuses: a record with a column the entity
// lacks is refused with the reason the sink dead-letters it with.
func TestPreviewRefusesWhatTheSinkRefuses(t *testing.T) {
	lay, err := NewLayout(pickingConfig())
	if err != nil {
		t.Fatal(err)
	}
	bad := pline("P000101", "RM-2000", json.Number("1"))
	bad.Fields["COLOUR"] = "red"
	if _, err := lay.PreviewRequest(bad); err == nil || !strings.Contains(err.Error(), "unknown column COLOUR") {
		t.Fatalf("preview of a record with an unknown column: %v", err)
	}
}
