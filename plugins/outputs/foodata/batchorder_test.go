package foodata

import (
	"context"
	"testing"

	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// TestBatchSinglesKeepKeyOrder: records moved to the one-by-one fallback
// (here: F&O refuses a whole $batch because it holds too many operations)
// must not be overtaken by later records of their key that go out in a
// later $batch round of the same write.
//
// With changesets of 3 and an emulator that takes at most 3 operations per
// $batch, the first round holds PK1/1, A/1, PK1/2 | B/1 (4 operations:
// refused, so those four go to the fallback); PK1/3, PK1/4 and A/2 waited
// for the next round, which fits. Before the fix that round applied PK1/3
// and PK1/4 before the fallback wrote PK1/1 and PK1/2 (order 3, 4, 1, 2).
func TestBatchSinglesKeepKeyOrder(t *testing.T) {
	em := foemutest.Start(t, func(c *foemu.Config) { c.OData.MaxBatchOperations = 3 })
	fe := d365test.Env(t, em)
	cfg := lineConfig()
	cfg.Batch = Batch{Enabled: true, ChangesetSize: 3}
	st := d365test.Store(t)
	s := newSink(t, cfg, fe, st)
	recs := []pipeline.Record{
		lineRecord("PK1", 1), lineRecord("A", 1), lineRecord("PK1", 2), lineRecord("B", 1),
		lineRecord("PK1", 3), lineRecord("PK1", 4), lineRecord("A", 2),
	}
	for i := range recs {
		recs[i].Stream = "count.lines"
	}
	recs = queued(t, st, recs...)
	if err := s.Write(context.Background(), recs); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if n := em.Stats().Count(foemu.RouteBatch, 400); n == 0 {
		t.Fatal("the emulator refused no $batch: the fallback was not exercised")
	}
	// The etag versions are the emulator's global write order.
	got, total := journalLines(t, em)
	if total != len(recs) {
		t.Errorf("%d lines in F&O, want %d", total, len(recs))
	}
	checkInOrder(t, got, map[string]int{"PK1": 4, "A": 2, "B": 1})
	t.Logf("write order per key: %v", got)
}
