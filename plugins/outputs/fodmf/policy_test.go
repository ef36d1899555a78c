package fodmf

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
)

func qtyLines(n int) []pipeline.Record {
	var recs []pipeline.Record
	for i := range n {
		recs = append(recs, pline("P000101", "RM-2000", json.Number(fmt.Sprint(i+1))))
	}
	return recs
}

func onceEach(t *testing.T, recs []map[string]any, n int) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range recs {
		seen[fmt.Sprint(r["ConsumptionBomQuantity"])]++
	}
	if len(recs) != n || len(seen) != n {
		t.Errorf("%d lines in F&O (%d distinct), want %d exactly once", len(recs), len(seen), n)
	}
}

// TestIntegrationScheduledBatch: a batch under every limit closes at the
// schedule's next time.
func TestIntegrationScheduledBatch(t *testing.T) {
	em := foemutest.Start(t)
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Batch.Schedule = "@every 1s"
	appendLines(t, store, qtyLines(7)...)
	start(t, em, store, cfg)
	d365test.WaitFor(t, 10*time.Second, "the scheduled batch imported", func() bool { return pending(store) == 0 })
	onceEach(t, imported(t, em), 7)
}

// TestScheduleInThePlantsTimeZone: a cron schedule is read in time_zone.
func TestScheduleInThePlantsTimeZone(t *testing.T) {
	c := pickingConfig()
	c.Batch.Schedule, c.Batch.TimeZone = "0 6,14,22 * * *", "Europe/Berlin"
	s, err := c.schedule()
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC) // 13:00 in Berlin
	if got, want := s.Next(from).UTC(), time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("next end of shift after %s = %s, want %s (14:00 Berlin)", from, got, want)
	}
	c.Batch.Schedule = "every shift"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "batch.schedule") {
		t.Errorf("a bad schedule: %v", err)
	}
}

// TestIntegrationFailedImport: an import F&O answers Failed dead-letters
// every line with F&O's errors (on_failed: dead_letter), or is imported
// again under a new executionId (on_failed: retry), once.
func TestIntegrationFailedImport(t *testing.T) {
	for _, policy := range []string{OnFailedDeadLetter, OnFailedRetry} {
		t.Run(policy, func(t *testing.T) {
			em := foemutest.Start(t)
			if err := em.SetFaults(foemu.Faults{DMF: foemu.DMFFaults{FailNextImports: 1}}); err != nil {
				t.Fatal(err)
			}
			store := d365test.Store(t)
			cfg := pickingConfig()
			cfg.Batch.MaxRecords, cfg.OnFailed = 4, policy
			appendLines(t, store, qtyLines(4)...)
			start(t, em, store, cfg)
			d365test.WaitFor(t, 15*time.Second, "the batch settled", func() bool { return pending(store) == 0 })
			ex := em.Executions()
			dead := d365test.Dead(t, store, "dmf")
			if policy == OnFailedDeadLetter {
				if len(dead) != 4 || !strings.Contains(dead[0].Reason, "failed (Failed)") || len(ex) != 1 {
					t.Fatalf("%d dead letters (%v), %d executions", len(dead), dead, len(ex))
				}
				onceEach(t, imported(t, em), 0)
				return
			}
			if len(dead) != 0 || len(ex) != 2 || ex[0].ID == ex[1].ID || ex[1].Status != foemu.StatusSucceeded {
				t.Fatalf("%d dead letters, executions %+v", len(dead), ex)
			}
			onceEach(t, imported(t, em), 4)
		})
	}
}

// TestIntegrationStalledImportIsHeld: an import still running past
// import_deadline is reported stalled and polled on; it is never imported
// again, and settles when F&O finishes it.
func TestIntegrationStalledImportIsHeld(t *testing.T) {
	em := foemutest.Start(t)
	if err := em.SetFaults(foemu.Faults{DMF: foemu.DMFFaults{HangFor: foemu.Duration(1500 * time.Millisecond)}}); err != nil {
		t.Fatal(err)
	}
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Batch.MaxRecords, cfg.ImportDeadline = 3, 300*time.Millisecond
	appendLines(t, store, qtyLines(3)...)
	reg := prometheus.NewRegistry()
	h := startWith(t, em, store, cfg, reg)
	d365test.WaitFor(t, 10*time.Second, "the batch reported stalled", func() bool {
		bs, _ := h.sink.Status()["batches"].([]map[string]any)
		return len(bs) == 1 && bs[0]["stalled"] == true
	})
	want := `
# HELP plantgate_dmf_stalled_batches DMF batches whose import is still running past import_deadline: reported and held, never imported again.
# TYPE plantgate_dmf_stalled_batches gauge
plantgate_dmf_stalled_batches{sink="dmf"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "plantgate_dmf_stalled_batches"); err != nil {
		t.Errorf("the stalled batch in the metrics: %v", err)
	}
	d365test.WaitFor(t, 10*time.Second, "the batch settled", func() bool { return pending(store) == 0 })
	if ex := em.Executions(); len(ex) != 1 || ex[0].Submissions != 1 {
		t.Errorf("executions %+v, want one, submitted once", ex)
	}
	onceEach(t, imported(t, em), 3)
}

// TestIntegrationUnknownStatusIsNotFinal: a status outside F&O's enum is
// shown and polled on, never taken for an outcome.
func TestIntegrationUnknownStatusIsNotFinal(t *testing.T) {
	em := foemutest.Start(t)
	if err := em.SetFaults(foemu.Faults{DMF: foemu.DMFFaults{SummaryStatus: "Pending"}}); err != nil {
		t.Fatal(err)
	}
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Batch.MaxRecords = 2
	appendLines(t, store, qtyLines(2)...)
	h := start(t, em, store, cfg)
	d365test.WaitFor(t, 10*time.Second, "the unknown status shown", func() bool {
		bs, _ := h.sink.Status()["batches"].([]map[string]any)
		return len(bs) == 1 && strings.Contains(fmt.Sprint(bs[0]["last_error"]), `"Pending"`)
	})
	time.Sleep(200 * time.Millisecond)
	if pending(store) != 2 {
		t.Fatal("lines acked on an unknown status")
	}
	if err := em.SetFaults(foemu.Faults{}); err != nil {
		t.Fatal(err)
	}
	d365test.WaitFor(t, 10*time.Second, "the batch settled", func() bool { return pending(store) == 0 })
	if ex := em.Executions(); len(ex) != 1 {
		t.Errorf("%d executions, want 1", len(ex))
	}
	onceEach(t, imported(t, em), 2)
}

// TestIntegrationOversizePackageIsSplit: a batch whose package is over
// max_package_bytes is split until each package fits; every line is
// imported once.
func TestIntegrationOversizePackageIsSplit(t *testing.T) {
	em := foemutest.Start(t)
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Batch.MaxRecords, cfg.MaxPackageBytes = 200, 3<<10
	var recs []pipeline.Record
	for i := range 200 {
		recs = append(recs, pline("P000101", fmt.Sprintf("RM-%d", 2000+i%3), json.Number(fmt.Sprintf("%d.%06d", i+1, i*7919%1000000))))
	}
	appendLines(t, store, recs...)
	start(t, em, store, cfg)
	d365test.WaitFor(t, 20*time.Second, "all lines imported", func() bool { return pending(store) == 0 })
	if ex := em.Executions(); len(ex) < 2 {
		t.Errorf("%d executions: the package was not split", len(ex))
	}
	got := imported(t, em)
	if len(got) != 200 {
		t.Errorf("%d lines in F&O, want 200", len(got))
	}
}

// TestIntegrationAzurite: the whole path against a real Azurite holding
// F&O's packages.
func TestIntegrationAzurite(t *testing.T) {
	endpoint := foemutest.StartAzurite(t)
	em := foemutest.Start(t, func(c *foemu.Config) { c.DMF.Blob = foemu.BlobConfig{Mode: foemu.BlobAzurite, Endpoint: endpoint} })
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Batch.MaxRecords = 25
	appendLines(t, store, qtyLines(50)...)
	start(t, em, store, cfg)
	d365test.WaitFor(t, 20*time.Second, "all lines imported", func() bool { return pending(store) == 0 })
	onceEach(t, imported(t, em), 50)
	if ex := em.Executions(); len(ex) != 2 {
		t.Errorf("%d executions, want 2", len(ex))
	}
}

// TestIntegrationLongPollOutlivesTheToken: an import that runs longer than
// an access token lives is polled to its end with fresh tokens (an F&O
// token is never refreshed by F&O itself: a poll with an expired one gets
// 401).
func TestIntegrationLongPollOutlivesTheToken(t *testing.T) {
	em := foemutest.Start(t, func(c *foemu.Config) { c.Identity.TokenLifetime = foemu.Duration(time.Second) })
	if err := em.SetFaults(foemu.Faults{DMF: foemu.DMFFaults{HangFor: foemu.Duration(3 * time.Second)}}); err != nil {
		t.Fatal(err)
	}
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Batch.MaxRecords = 3
	appendLines(t, store, qtyLines(3)...)
	start(t, em, store, cfg)
	d365test.WaitFor(t, 15*time.Second, "the batch settled", func() bool { return pending(store) == 0 })
	onceEach(t, imported(t, em), 3)
	if n := em.Stats().Total(foemu.RouteToken); n < 3 {
		t.Errorf("%d token requests during a 3 s import with 1 s tokens", n)
	}
}

// TestIntegrationTwoEntitiesInOnePackage: records naming two entities go
// into one package, one data file each, imported in the configured order.
func TestIntegrationTwoEntitiesInOnePackage(t *testing.T) {
	em := foemutest.Start(t)
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Entity, cfg.Columns, cfg.LineField = "", nil, ""
	cfg.Entities = []Entity{
		{Name: pickingLabel, Columns: []string{"JOURNALLINENUMBER", "PRODUCTIONORDERNUMBER", "ITEMNUMBER", "CONSUMPTIONBOMQUANTITY"}, LineField: "JOURNALLINENUMBER"},
		{Name: "Production order route card journal lines", Columns: []string{"JOURNALLINENUMBER", "PRODUCTIONORDERNUMBER", "ROUTEOPERATIONNUMBER", "REGISTEREDHOURS"}, LineField: "JOURNALLINENUMBER"},
	}
	cfg.Batch.MaxRecords = 6
	var recs []pipeline.Record
	for i := range 3 {
		p := pline("P000101", "RM-2000", json.Number(fmt.Sprint(i+1)))
		p.Fields["_entity"] = pickingLabel
		r := pipeline.Record{Key: "P000101", Fields: map[string]any{"_entity": "production order ROUTE card journal lines",
			"PRODUCTIONORDERNUMBER": "P000101", "ROUTEOPERATIONNUMBER": 10, "REGISTEREDHOURS": json.Number(fmt.Sprintf("%d.5", i))}}
		recs = append(recs, p, r)
	}
	appendLines(t, store, recs...)
	start(t, em, store, cfg)
	d365test.WaitFor(t, 15*time.Second, "the batch settled", func() bool { return pending(store) == 0 })
	if d := d365test.Dead(t, store, "dmf"); len(d) != 0 {
		t.Fatalf("dead letters: %+v", d)
	}
	onceEach(t, imported(t, em), 3)
	cards, _ := em.Records("RouteCardProductionJournalEntries")
	if len(cards) != 3 {
		t.Errorf("%d route card lines, want 3", len(cards))
	}
	ex := em.Executions()
	if len(ex) != 1 || len(ex[0].Entities) != 2 || ex[0].Entities[0].EntityName != pickingLabel {
		t.Errorf("executions %+v, want one with both entities, picking list first", ex)
	}
}

// TestIntegrationClosesOnlyWhileFOIsReachable: while F&O's identity
// platform refuses, no batch closes (records arriving meanwhile can still
// join it) and status says why; once it answers, the batch goes.
func TestIntegrationClosesOnlyWhileFOIsReachable(t *testing.T) {
	em := foemutest.Start(t)
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteToken, ErrorRate: 1, ErrorStatus: 503}}}); err != nil {
		t.Fatal(err)
	}
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Batch.MaxRecords = 2
	appendLines(t, store, qtyLines(2)...)
	h := start(t, em, store, cfg)
	d365test.WaitFor(t, 10*time.Second, "status says it waits for F&O", func() bool {
		streams, _ := h.sink.Status()["streams"].(map[string]any)
		v, _ := streams["dmf"].(map[string]any)
		return strings.Contains(fmt.Sprint(v["waiting"]), "waiting for F&O")
	})
	if bs := h.sink.Batches(); len(bs) != 0 {
		t.Fatalf("a batch closed while F&O was unreachable: %+v", bs)
	}
	if err := em.SetFaults(foemu.Faults{}); err != nil {
		t.Fatal(err)
	}
	d365test.WaitFor(t, 15*time.Second, "the batch imported", func() bool { return pending(store) == 0 })
	onceEach(t, imported(t, em), 2)
}

// TestStalePackagesRemovedAtStart: package directories of batches no
// longer in flight (left by a crash) are removed when the sink starts.
func TestStalePackagesRemovedAtStart(t *testing.T) {
	em := foemutest.Start(t)
	store := d365test.Store(t)
	env := d365test.PluginEnv(t, "dmf", d365test.Env(t, em), store)
	env.DataDir = t.TempDir()
	stale := filepath.Join(env.DataDir, "packages", "20260101T000000Z-dead", "spool-1")
	if err := os.MkdirAll(filepath.Dir(stale), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(pickingConfig(), env); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(stale)); !os.IsNotExist(err) {
		t.Errorf("stale package dir still there: %v", err)
	}
}
