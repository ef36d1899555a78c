package foemu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadExampleConfig(t *testing.T) {
	c, err := LoadConfig("fo-emulator.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Identity.Clients[0]; got.ClientID != "plantgate-line3" || len(got.Secrets) != 1 || got.Priority != "Medium" {
		t.Errorf("client = %+v", got)
	}
	if c.DMF.NotFoundWindow.D() != time.Second || c.MES.ProcessingDelay.D() != 500*time.Millisecond || c.OData.PageSize != 10000 {
		t.Errorf("timings = %v %v %d", c.DMF.NotFoundWindow, c.MES.ProcessingDelay, c.OData.PageSize)
	}
	if _, ok := c.schema.Entity("ProductionPickingListJournalEntries"); !ok {
		t.Error("built-in schema not loaded")
	}
}

func TestConfigExplicitZeroKept(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "c.yaml")
	writeFile(t, f, "dmf:\n  not_found_window: 0s\nmes:\n  processing_delay: 0s\n")
	c, err := LoadConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	if c.DMF.NotFoundWindow != 0 || c.MES.ProcessingDelay != 0 || c.DMF.QueuedTime.D() != time.Second {
		t.Errorf("got not_found_window %v processing_delay %v queued_time %v", c.DMF.NotFoundWindow, c.MES.ProcessingDelay, c.DMF.QueuedTime)
	}
	if c.Identity.Clients[0].ClientID != DefaultClientID {
		t.Errorf("default client missing: %+v", c.Identity.Clients)
	}
}

func TestLoadBadConfigs(t *testing.T) {
	// Line numbers of YAML syntax errors are the YAML parser's own.
	tests := []struct{ file, want string }{
		{"unknown-field.yaml", "testdata/bad/unknown-field.yaml:2: field listn not found in type foemu.Config"},
		{"bad-duration.yaml", `testdata/bad/bad-duration.yaml:2: invalid duration "soon" (want e.g. 250ms, 2s, 1m)`},
		{"bad-priority.yaml", `testdata/bad/bad-priority.yaml:5: priority "Urgent" is not Low, Medium or High`},
		{"duplicate-client.yaml", "testdata/bad/duplicate-client.yaml:5: client A defined twice"},
		{"blob-mode.yaml", `testdata/bad/blob-mode.yaml:3: blob mode "s3" is not builtin or azurite`},
		{"azurite-endpoint.yaml", "testdata/bad/azurite-endpoint.yaml:2: azurite mode needs an endpoint such as http://127.0.0.1:10000/devstoreaccount1"},
		{"fault-route.yaml", `testdata/bad/fault-route.yaml:5: fault route "sftp" is not one of discovery, token, odata, batch, dmf, mes, blob or *`},
		{"syntax.yaml", "testdata/bad/syntax.yaml:1: did not find expected ',' or ']'"},
		{"reuse-mode.yaml", `testdata/bad/reuse-mode.yaml:2: reused_execution_id "sometimes" is not idempotent, reimport or reject`},
		{"negative-duration.yaml", "testdata/bad/negative-duration.yaml:2: dmf.queued_time must not be negative"},
		{"schema-ref.yaml", `testdata/bad/bad-schema.yaml:6: field Widgets.Color uses unknown enum "Colour"`},
		{"seed-ref.yaml", "testdata/bad/bad-seed.yaml:3: entity set Gadgets is not in the schema"},
		{"client-company.yaml", "testdata/bad/client-company.yaml:5: company XXXX is not in the seed data"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := LoadConfig(filepath.Join("testdata", "bad", tt.file))
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
			got := strings.TrimPrefix(err.Error(), ErrConfig.Error()+": ")
			if got != tt.want {
				t.Errorf("error:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestDefaultSchemaAndSeed(t *testing.T) {
	s := DefaultSchema()
	for _, set := range []string{
		"ProductionOrderHeaders", "ProductionPickingListJournalEntries", "RouteCardProductionJournalEntries",
		"ReportAsFinishedProductionJournalEntries", "InventoryMovementJournalHeaders", "InventoryMovementJournalEntriesV4",
		"InventoryCountingJournalHeaders", "InventoryCountingJournalLines",
	} {
		if _, ok := s.Entity(set); !ok {
			t.Errorf("built-in schema lacks %s", set)
		}
	}
	e, ok := s.entityByLabel("production ORDER picking list journal lines", "")
	if !ok || e.Set != "ProductionPickingListJournalEntries" {
		t.Errorf("label lookup = %v, %v", e, ok)
	}
	if e, ok := s.entityByLabel("unknown label", "ProdRouteCardProductionJournalEntryEntity"); !ok || e.Set != "RouteCardProductionJournalEntries" {
		t.Errorf("target lookup = %v, %v", e, ok)
	}
	seed := defaultSeed()
	if err := seed.validate(nil, s); err != nil {
		t.Fatal(err)
	}
	if _, err := newStore(s, seed); err != nil {
		t.Fatalf("seed does not load: %v", err)
	}
}

func TestFromText(t *testing.T) {
	s := DefaultSchema()
	e, _ := s.Entity("ProductionPickingListJournalEntries")
	tests := []struct {
		field, text string
		excel       bool
		want        any
		wantErr     bool
	}{
		{"ConsumptionBomQuantity", "12.5", false, 12.5, false},
		{"ConsumptionBomQuantity", "1,5", false, nil, true},
		{"OperationNumber", "10", false, int64(10), false},
		{"OperationNumber", "10.0", false, int64(10), false},
		{"OperationNumber", "10.5", false, nil, true},
		{"ConsumptionDate", "2025-03-01", false, "2025-03-01T12:00:00Z", false},
		{"ConsumptionDate", "3/1/2025", false, "2025-03-01T12:00:00Z", false},
		{"ConsumptionDate", "45717", true, "2025-03-01T12:00:00Z", false},
		{"ConsumptionDate", "45717", false, nil, true},
		{"ConsumptionDate", "", false, emptyDate, false},
		{"IsPosted", "yes", false, "Yes", false},
		{"IsPosted", "1", false, "Yes", false},
		{"IsPosted", "maybe", false, nil, true},
		{"ItemNumber", "  RM-1 ", false, "RM-1", false},
	}
	for _, tt := range tests {
		t.Run(tt.field+"="+tt.text, func(t *testing.T) {
			f, _ := e.FieldByName(tt.field)
			got, err := s.fromText(f, tt.text, tt.excel)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
