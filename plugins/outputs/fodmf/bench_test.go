package fodmf

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// BenchmarkBacklogDrain1M drains a backlog of 1,000,000 queued records
// through DMF packages of 50,000 lines into the emulator. It reports the
// whole drain, the time spent waiting for F&O's imports (polling), and the
// gateway side (the rest: closing, packaging, uploading, acking).
// PLANTGATE_DMF_BACKLOG sets another size.
func BenchmarkBacklogDrain1M(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("PLANTGATE_DMF_BACKLOG")); err == nil && v > 0 {
		n = v
	}
	for range b.N {
		b.StopTimer()
		em := foemutest.Start(b)
		store, err := queue.Open(b.TempDir()+"/q.db", queue.Options{})
		if err != nil {
			b.Fatal(err)
		}
		batch := make([]queue.Entry, 0, 1000)
		for i := range n {
			batch = append(batch, queue.Entry{Stream: "dmf", Record: pipeline.Record{Key: "P000101", Fields: map[string]any{
				"PRODUCTIONORDERNUMBER": "P000101", "ITEMNUMBER": "RM-2000", "CONSUMPTIONBOMQUANTITY": json.Number(fmt.Sprint(i + 1)),
			}}})
			if len(batch) == cap(batch) || i == n-1 {
				if _, err := store.Append(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		cfg := pickingConfig()
		cfg.Batch.MaxRecords, cfg.Batch.MaxBytes = 50000, 1<<30
		cfg.PollInitial, cfg.PollMax = 5*time.Millisecond, 20*time.Millisecond
		fe := d365test.Env(b, em)
		env := d365test.PluginEnv(b, "dmf", fe, store)
		env.DataDir = b.TempDir()
		s, err := New(cfg, env)
		if err != nil {
			b.Fatal(err)
		}
		var polling atomic.Int64
		s.onStep = func(step string, d time.Duration) {
			if step == StepPolling {
				polling.Add(int64(d))
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		b.StartTimer()
		start := time.Now()
		go func() { _ = s.RunStream(ctx, "dmf", store.StreamQueue("dmf", "sink.dmf", nil)); close(done) }()
		for pendingOf(store) > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		total := time.Since(start)
		b.StopTimer()
		cancel()
		<-done
		recs, _ := em.Records("ProductionPickingListJournalEntries")
		if len(recs) != n {
			b.Fatalf("%d lines in F&O, want %d", len(recs), n)
		}
		wait := time.Duration(polling.Load())
		b.ReportMetric(total.Seconds(), "drain_s")
		b.ReportMetric(wait.Seconds(), "fo_import_wait_s")
		b.ReportMetric((total - wait).Seconds(), "gateway_s")
		b.ReportMetric(float64(n)/(total-wait).Seconds(), "gateway_lines/s")
		_ = store.Close()
	}
}

func pendingOf(s *queue.Store) int64 {
	st, _ := s.Stats()
	return st.Records
}
