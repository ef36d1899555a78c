package fodmf

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

const pickingLabel = "Production order picking list journal lines"

func pickingConfig() *Config {
	c := New0()
	c.Env, c.DefinitionGroup = "test", "MES-PickingList"
	c.Entity = pickingLabel
	c.Columns = []string{"JOURNALLINENUMBER", "PRODUCTIONORDERNUMBER", "ITEMNUMBER", "CONSUMPTIONBOMQUANTITY"}
	c.LineField = "JOURNALLINENUMBER"
	c.PollInitial, c.PollMax = 10*time.Millisecond, 100*time.Millisecond
	c.NotFoundGrace = 5 * time.Second
	c.Batch.MaxAge = time.Hour
	return c
}

// New0 returns the defaults the registry gives a new config.
func New0() *Config {
	f, _ := lookup()
	return f.NewConfig().(*Config)
}

type harness struct {
	t     *testing.T
	em    *foemu.Emulator
	store *queue.Store
	sink  *Sink
	stop  func()
}

func start(t *testing.T, em *foemu.Emulator, store *queue.Store, cfg *Config) *harness {
	t.Helper()
	return startWith(t, em, store, cfg, nil)
}

func startWith(t *testing.T, em *foemu.Emulator, store *queue.Store, cfg *Config, reg *prometheus.Registry) *harness {
	t.Helper()
	fe := d365test.Env(t, em)
	env := d365test.PluginEnv(t, "dmf", fe, store)
	if reg != nil {
		env.Metrics = reg
	}
	env.DataDir = t.TempDir()
	env.GatewayID = "test"
	s, err := New(cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.RunStream(ctx, "dmf", store.StreamQueue("dmf", "sink.dmf", nil)) }()
	h := &harness{t: t, em: em, store: store, sink: s}
	h.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunStream: %v", err)
		}
	}
	t.Cleanup(func() {
		if h.stop != nil {
			h.stop()
			h.stop = nil
		}
	})
	return h
}

func pline(order, item string, qty any) pipeline.Record {
	return pipeline.Record{Key: order, Fields: map[string]any{"PRODUCTIONORDERNUMBER": order, "ITEMNUMBER": item, "CONSUMPTIONBOMQUANTITY": qty}}
}

func appendLines(t *testing.T, s *queue.Store, recs ...pipeline.Record) {
	t.Helper()
	d365test.Append(t, s, "dmf", recs...)
}

func imported(t *testing.T, em *foemu.Emulator) []map[string]any {
	t.Helper()
	recs, err := em.Records("ProductionPickingListJournalEntries")
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func pending(s *queue.Store) int64 {
	st, _ := s.Stats()
	for _, x := range st.Streams {
		if x.Stream == "dmf" {
			return x.Records
		}
	}
	return 0
}

// TestIntegrationSizeTriggeredBatches: 120 lines with max_records 50 make
// two packages of 50 at once; the last 20 wait (max_age is an hour) until
// an operator closes the batch. Every line is imported exactly once, by
// the emulator's records, each execution submitted once.
func TestIntegrationSizeTriggeredBatches(t *testing.T) {
	em := foemutest.Start(t)
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Batch.MaxRecords = 50
	var recs []pipeline.Record
	for i := range 120 {
		recs = append(recs, pline(fmt.Sprintf("P%06d", 101+i%3), "RM-2000", json.Number(fmt.Sprint(i+1))))
	}
	appendLines(t, store, recs...)
	h := start(t, em, store, cfg)
	d365test.WaitFor(t, 20*time.Second, "100 lines imported and acked", func() bool { return len(imported(t, em)) == 100 && pending(store) == 20 })
	time.Sleep(300 * time.Millisecond) // the rest is under max_records and max_age: it waits
	if n := pending(store); n != 20 {
		t.Fatalf("%d lines pending, want 20 waiting for the next batch", n)
	}
	h.sink.CloseNow()
	d365test.WaitFor(t, 20*time.Second, "all lines imported", func() bool { return pending(store) == 0 })
	got := imported(t, em)
	seen := map[string]int{}
	for _, r := range got {
		seen[fmt.Sprint(r["ConsumptionBomQuantity"])]++
	}
	if len(got) != 120 || len(seen) != 120 {
		t.Errorf("%d lines in F&O (%d distinct), want 120", len(got), len(seen))
	}
	ex := em.Executions()
	if len(ex) != 3 {
		t.Errorf("%d executions, want 3", len(ex))
	}
	for _, e := range ex {
		if e.Submissions != 1 || e.Status != foemu.StatusSucceeded || !strings.HasPrefix(e.ID, "plantgate-test-dmf-") {
			t.Errorf("execution %s: %d submissions, %s", e.ID, e.Submissions, e.Status)
		}
	}
	if err := store.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestIntegrationPartialSuccessDeadLettersExactlyTheBadLines: F&O imports
// a package partly; exactly the lines it refused become dead letters with
// its reason, the others are acked.
func TestIntegrationPartialSuccessDeadLettersExactlyTheBadLines(t *testing.T) {
	em := foemutest.Start(t)
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Batch.MaxRecords = 5
	appendLines(t, store,
		pline("P000101", "RM-2000", json.Number("1")),
		pline("P000101", "RM-2001", "lots"),    // staging: not a number
		pline("P000101", "", json.Number("1")), // target: ItemNumber is mandatory
		pline("P000101", "RM-2002", json.Number("2")),
		pline("P000101", "RM-2002", json.Number("3")),
	)
	start(t, em, store, cfg)
	d365test.WaitFor(t, 20*time.Second, "the batch settled", func() bool { return pending(store) == 0 })
	dead := d365test.Dead(t, store, "dmf")
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want 2: %+v", len(dead), dead)
	}
	byItem := map[string]string{}
	for _, d := range dead {
		byItem[fmt.Sprint(d.Record.Fields["ITEMNUMBER"])] = d.Reason
	}
	if r := byItem["RM-2001"]; !strings.Contains(r, "line 2") || !strings.Contains(r, "PartiallySucceeded") {
		t.Errorf("staging failure reason %q", r)
	}
	if r := byItem[""]; !strings.Contains(r, "ItemNumber") || !strings.Contains(r, "line 3") {
		t.Errorf("target failure reason %q", r)
	}
	if got := imported(t, em); len(got) != 3 {
		t.Errorf("%d lines in F&O, want 3", len(got))
	}
}

// TestIntegrationInvalidRecordDeadLetteredAtClose: a record that can never
// go into a data file (an unknown column) is dead-lettered with the list of
// expected columns; the others are imported.
func TestIntegrationInvalidRecordDeadLetteredAtClose(t *testing.T) {
	em := foemutest.Start(t)
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Batch.MaxRecords = 2
	bad := pline("P000101", "RM-2000", json.Number("1"))
	bad.Fields["COLOUR"] = "red"
	appendLines(t, store, pline("P000101", "RM-2000", json.Number("1")), bad, pline("P000101", "RM-2000", json.Number("2")))
	start(t, em, store, cfg)
	d365test.WaitFor(t, 20*time.Second, "the batch settled", func() bool { return pending(store) == 0 && len(imported(t, em)) == 2 })
	dead := d365test.Dead(t, store, "dmf")
	if len(dead) != 1 || !strings.Contains(dead[0].Reason, "unknown column COLOUR") || !strings.Contains(dead[0].Reason, "PRODUCTIONORDERNUMBER") {
		t.Fatalf("dead letters %+v", dead)
	}
}

// TestIntegrationExpiredSASIsReplaced: the first upload URL F&O hands out
// is refused by the blob store; the sink asks for a new one.
func TestIntegrationExpiredSASIsReplaced(t *testing.T) {
	em := foemutest.Start(t)
	store := d365test.Store(t)
	cfg := pickingConfig()
	cfg.Batch.MaxRecords = 1
	appendLines(t, store, pline("P000101", "RM-2000", json.Number("1")))
	fe := d365test.Env(t, em)
	env := d365test.PluginEnv(t, "dmf", fe, store)
	env.DataDir = t.TempDir()
	s, err := New(cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	refusals := 0
	real := s.uploadFn
	s.uploadFn = func(ctx context.Context, sasURL, file string) error {
		if refusals == 0 {
			refusals++
			// As an expired SAS: the signature's end time in the past.
			return real(ctx, expire(sasURL), file)
		}
		return real(ctx, sasURL, file)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.RunStream(ctx, "dmf", store.StreamQueue("dmf", "sink.dmf", nil)) }()
	defer func() { cancel(); <-done }()
	d365test.WaitFor(t, 20*time.Second, "the line imported", func() bool { return len(imported(t, em)) == 1 && pending(store) == 0 })
	if refusals != 1 {
		t.Errorf("%d refused uploads", refusals)
	}
}

// expire rewrites a SAS URL's expiry (se=) into the past; the signature
// then no longer matches either, and the blob store refuses it with 403.
func expire(u string) string {
	i := strings.Index(u, "se=")
	if i < 0 {
		return u + "&se=2000-01-01T00%3A00%3A00Z"
	}
	j := strings.IndexByte(u[i:], '&')
	if j < 0 {
		return u[:i] + "se=2000-01-01T00%3A00%3A00Z"
	}
	return u[:i] + "se=2000-01-01T00%3A00%3A00Z" + u[i+j:]
}

var _ = d365.DMFSucceeded
