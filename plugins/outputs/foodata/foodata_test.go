package foodata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

var orderKey = []string{"dataAreaId", "ProductionOrderNumber"}

func orderConfig(mode string, batch bool) *Config {
	return &Config{Env: "test", Entity: "ProductionOrderHeaders", Mode: mode, Key: orderKey, CompanyField: "dataAreaId",
		InDoubt: "hold", Batch: Batch{Enabled: batch, ChangesetSize: 3}}
}

func newSink(t *testing.T, cfg *Config, fe *d365.Env, st *queue.Store) *Sink {
	t.Helper()
	s, err := New(cfg, d365test.PluginEnv(t, "orders", fe, st))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func order(seq uint64, no string, fields map[string]any) pipeline.Record {
	f := map[string]any{"ProductionOrderNumber": no}
	for k, v := range fields {
		f[k] = v
	}
	return pipeline.Record{Stream: "f.orders", Seq: seq, Key: no, Fields: f}
}

// orders returns the emulator's production orders by number.
// queued appends recs to st in order (each to its stream) and returns
// them with the sequences the queue gave them, as a runner leases them:
// the sink keeps its marks and holds beside queued records.
func queued(t *testing.T, st *queue.Store, recs ...pipeline.Record) []pipeline.Record {
	t.Helper()
	out := make([]pipeline.Record, len(recs))
	for i, r := range recs {
		r.Seq = d365test.Append(t, st, r.Stream, r)[0]
		out[i] = r
	}
	return out
}

func orders(t *testing.T, em *foemu.Emulator) map[string]map[string]any {
	t.Helper()
	recs, err := em.Records("ProductionOrderHeaders")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, r := range recs {
		out[fmt.Sprint(r["ProductionOrderNumber"])] = r
	}
	return out
}

func TestIntegrationWriteModes(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em)
	ctx := context.Background()
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			st := d365test.Store(t)
			n := "1"
			if batch {
				n = "2"
			}
			create := newSink(t, orderConfig(ModeCreate, batch), fe, st)
			if err := create.Write(ctx, queued(t, st,
				order(1, "PC"+n+"1", map[string]any{"ItemNumber": "FG-1000", "ScheduledQuantity": json.Number("5")}),
				order(2, "PC"+n+"2", map[string]any{"ItemNumber": "FG-1000", "dataAreaId": "DEMF"}),
			)); err != nil {
				t.Fatalf("create: %v", err)
			}
			update := newSink(t, orderConfig(ModeUpdate, batch), fe, st)
			if err := update.Write(ctx, queued(t, st,
				order(3, "PC"+n+"1", map[string]any{"ProductionOrderStatus": "Released"}),
				order(4, "PC"+n+"2", map[string]any{"ProductionOrderStatus": "Scheduled", "dataAreaId": "DEMF"}),
			)); err != nil {
				t.Fatalf("update: %v", err)
			}
			upsert := newSink(t, orderConfig(ModeUpsert, batch), fe, st)
			if err := upsert.Write(ctx, queued(t, st,
				order(5, "PC"+n+"1", map[string]any{"ItemNumber": "FG-1000", "ScheduledQuantity": json.Number("8")}),
				order(6, "PC"+n+"3", map[string]any{"ItemNumber": "FG-1000", "ScheduledQuantity": json.Number("9")}),
			)); err != nil {
				t.Fatalf("upsert: %v", err)
			}
			got := orders(t, em)
			for no, want := range map[string]string{"PC" + n + "1": "usmf Released 8", "PC" + n + "2": "demf Scheduled 0", "PC" + n + "3": "usmf Created 9"} {
				r := got[no]
				if s := fmt.Sprint(r["dataAreaId"], " ", r["ProductionOrderStatus"], " ", r["ScheduledQuantity"]); s != want {
					t.Errorf("%s = %q, want %q", no, s, want)
				}
			}
		})
	}
}

func TestIntegrationValidationErrorIsDeadLetteredWithFOText(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em)
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			st := d365test.Store(t)
			s := newSink(t, orderConfig(ModeCreate, batch), fe, st)
			stream := "bad.orders"
			var recs []pipeline.Record
			for i := range 7 {
				no := fmt.Sprintf("PV%d%02d", map[bool]int{false: 1, true: 2}[batch], i)
				f := map[string]any{"ProductionOrderNumber": no, "ItemNumber": "FG-1000"}
				if i == 2 {
					delete(f, "ItemNumber") // mandatory in F&O
				}
				if i == 5 {
					f["ProductionOrderName"] = strings.Repeat("x", 61) // too long
				}
				recs = append(recs, pipeline.Record{Key: no, Fields: f})
			}
			d365test.Append(t, st, stream, recs...)
			d365test.Runner(t, st, stream, s, flow.RunnerConfig{MaxBatch: 10})
			d365test.Drained(t, st, stream, 10*time.Second)
			dead := d365test.Dead(t, st, stream)
			sort.Slice(dead, func(i, j int) bool { return dead[i].OrigSeq < dead[j].OrigSeq })
			if len(dead) != 2 {
				t.Fatalf("%d dead letters, want 2: %+v", len(dead), dead)
			}
			for i, want := range []string{
				"Write failed for table row of type 'ProdProductionOrderHeaderEntity'. Infolog: Warning: Field 'ItemNumber' must be filled in.",
				"Warning: The value '" + strings.Repeat("x", 61) + "' of field 'ProductionOrderName' is too long",
			} {
				if !strings.Contains(dead[i].Reason, want) {
					t.Errorf("dead letter %d reason %q lacks F&O's text %q", i, dead[i].Reason, want)
				}
			}
			got := orders(t, em)
			for i, r := range recs {
				_, ok := got[r.Key]
				if ok != (i != 2 && i != 5) {
					t.Errorf("order %s in F&O: %v", r.Key, ok)
				}
			}
		})
	}
}

func TestIntegrationBatchThrottledChangeset(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em)
	st := d365test.Store(t)
	// 4 operations of budget: the first changeset (3) fits, the second not.
	if err := em.SetFaults(foemu.Faults{Throttling: &foemu.ThrottleConfig{RequestsPerSecond: 0.5, Burst: 5}}); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, orderConfig(ModeCreate, true), fe, st)
	var recs []pipeline.Record
	for i := range 6 {
		recs = append(recs, order(uint64(i+1), fmt.Sprintf("PT%02d", i), map[string]any{"ItemNumber": "FG-1000"}))
	}
	err := s.Write(context.Background(), queued(t, st, recs...))
	var pe *pipeline.PartialError
	var te *pipeline.ThrottleError
	if !errors.As(err, &pe) || !errors.As(err, &te) || len(pe.Accepted) != 3 || len(pe.Rejected) != 0 {
		t.Fatalf("Write = %v; want 3 accepted and a throttle for the rest", err)
	}
	if te.After < time.Second {
		t.Errorf("Retry-After %v", te.After)
	}
	if st := em.Stats(); st.Clients[foemu.DefaultClientID].ThrottledOperations != 3 {
		t.Errorf("throttled operations = %d, want 3", st.Clients[foemu.DefaultClientID].ThrottledOperations)
	}
}

func TestIntegrationInDoubtVerifiedByKey(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em)
	st := d365test.Store(t)
	ctx := context.Background()
	s := newSink(t, orderConfig(ModeCreate, false), fe, st)
	recs := queued(t, st, order(1, "PD01", map[string]any{"ItemNumber": "FG-1000"}), order(2, "PD02", map[string]any{"ItemNumber": "FG-1000"}))
	there, absent := recs[0], recs[1]
	if err := s.Write(ctx, []pipeline.Record{there}); err != nil {
		t.Fatal(err)
	}
	// As after a crash: both records were marked in flight; one reached F&O.
	for _, r := range []pipeline.Record{there, absent} {
		if err := s.tracker.Sending(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	s2 := newSink(t, orderConfig(ModeCreate, false), fe, st)
	before := em.Stats()
	if err := s2.Write(ctx, []pipeline.Record{there, absent}); err != nil {
		t.Fatalf("Write after the crash: %v", err)
	}
	after := em.Stats()
	if gets := after.Count(foemu.RouteOData, 200) - before.Count(foemu.RouteOData, 200); gets != 1 {
		t.Errorf("%d verifications found the record, want 1", gets)
	}
	if posts := after.Count(foemu.RouteOData, 201) - before.Count(foemu.RouteOData, 201); posts != 1 {
		t.Errorf("%d records created, want 1 (the absent one)", posts)
	}
	if dup := after.Count(foemu.RouteOData, 400) - before.Count(foemu.RouteOData, 400); dup != 0 {
		t.Errorf("%d duplicate creates", dup)
	}
	if len(orders(t, em)) != 7 {
		t.Errorf("orders: %d, want 5 seeded + 2", len(orders(t, em)))
	}
}

func TestIntegrationKeylessInDoubtIsHeld(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em)
	st := d365test.Store(t)
	ctx := context.Background()
	cfg := &Config{Env: "test", Entity: "InventoryCountingJournalLines", Mode: ModeCreate, CompanyField: "dataAreaId", InDoubt: "hold", Batch: Batch{ChangesetSize: 10}}
	s := newSink(t, cfg, fe, st)
	line := func(seq uint64, journal string) pipeline.Record {
		return pipeline.Record{Stream: "f.orders", Seq: seq, Key: journal, Fields: map[string]any{"JournalNumber": journal, "ItemNumber": "RM-2000", "CountedQuantity": json.Number(fmt.Sprint(seq))}}
	}
	batch := queued(t, st, line(1, "J1"), line(2, "J1"), line(3, "J2"))
	if err := s.tracker.Sending(ctx, batch[0]); err != nil {
		t.Fatal(err)
	}
	err := s.Write(ctx, batch)
	var pe *pipeline.PartialError
	if !errors.As(err, &pe) || len(pe.Accepted) != 1 || pe.Accepted[0] != 2 || len(pe.Rejected) != 2 {
		t.Fatalf("Write = %v; want J2 delivered, J1's two records set aside", err)
	}
	if !strings.HasPrefix(pe.Rejected[0].Error(), d365.ReasonHeldPrefix) || !strings.Contains(pe.Rejected[0].Error(), "plantgate queue release --stream f.orders --seq 1") {
		t.Errorf("held reason %q", pe.Rejected[0])
	}
	if !strings.HasPrefix(pe.Rejected[1].Error(), d365.ReasonParkedPrefix) {
		t.Errorf("parked reason %q", pe.Rejected[1])
	}
	recs, _ := em.Records("InventoryCountingJournalLines")
	if len(recs) != 1 {
		t.Errorf("%d journal lines in F&O, want 1", len(recs))
	}
	if st := s.Status(); st["held"] != 1 || st["parked"] != 1 {
		t.Errorf("status held=%v parked=%v", st["held"], st["parked"])
	}
}

func TestIntegrationForbidden(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em)
	st := d365test.Store(t)
	ctx := context.Background()
	s := newSink(t, orderConfig(ModeCreate, false), fe, st)
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteOData, ErrorRate: 1, ErrorStatus: 403}}}); err != nil {
		t.Fatal(err)
	}
	err := s.Write(ctx, queued(t, st, order(1, "PF01", map[string]any{"ItemNumber": "FG-1000"})))
	if !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "403 Forbidden") {
		t.Fatalf("Write = %v; want a permanent 403", err)
	}
	if perr := s.Probe(ctx); !errors.Is(perr, pipeline.ErrNotReady) {
		t.Errorf("Probe after a 403 = %v", perr)
	}
	if s.Status()["healthy"] != false {
		t.Errorf("status %v", s.Status())
	}
	if err := em.SetFaults(foemu.Faults{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, queued(t, st, order(2, "PF02", map[string]any{"ItemNumber": "FG-1000"}))); err != nil {
		t.Fatal(err)
	}
	if err := s.Probe(ctx); err != nil {
		t.Errorf("Probe after a success = %v", err)
	}
}

func TestMapErrors(t *testing.T) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em)
	s := newSink(t, orderConfig(ModeUpsert, false), fe, nil)
	for _, tc := range []struct {
		fields map[string]any
		want   string
	}{
		{map[string]any{"ItemNumber": "FG-1000"}, "key field ProductionOrderNumber is missing from the record"},
		{map[string]any{"ProductionOrderNumber": "P1", "dataAreaId": 5}, "field dataAreaId: want a company id"},
		{map[string]any{"ProductionOrderNumber": map[string]any{"a": 1}}, "cannot be a key"},
	} {
		err := s.Write(context.Background(), []pipeline.Record{{Stream: "f.o", Seq: 1, Fields: tc.fields}})
		if !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("fields %v: %v; want a permanent error with %q", tc.fields, err, tc.want)
		}
	}
	if em.Stats().Total(foemu.RouteOData) != 0 {
		t.Error("a record that cannot be mapped was sent")
	}
	cfg := orderConfig(ModeUpdate, false)
	cfg.Key = nil
	if _, err := New(cfg, d365test.PluginEnv(t, "x", fe, nil)); err == nil || !strings.Contains(err.Error(), "mode update needs key") {
		t.Errorf("update without key: %v", err)
	}
}
