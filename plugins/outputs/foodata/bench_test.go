package foodata

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// BenchmarkThrottledDelivery delivers journal lines through queue ->
// runner -> fo.odata against an emulator whose budget is budget requests
// per second (a bucket of five seconds), with the sink's ceiling at twice
// the budget, and reports the delivered rate and the share of requests
// answered 429 once the limiter has learned the budget. In the same run a
// naive client (8 workers, no limiter, retrying after Retry-After) sends
// the same records, for comparison.
func BenchmarkThrottledDelivery(b *testing.B) {
	const budget = 40.0
	measured := int(8 * budget)
	em := foemutest.Start(b)
	throttle := func() {
		if err := em.SetFaults(foemu.Faults{Throttling: &foemu.ThrottleConfig{RequestsPerSecond: budget, Burst: 5 * budget, Concurrent: 52}}); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < b.N; i++ {
		if err := em.Reset(); err != nil {
			b.Fatal(err)
		}
		throttle()
		fe := d365test.Env(b, em, func(c *config.FOEnv, _ *d365.Options) { c.MaxRequestsPerSecond, c.MaxConcurrent = 2*budget, 8 })
		st := d365test.Store(b)
		s, err := New(lineConfig(), d365test.PluginEnv(b, "lines", fe, st))
		if err != nil {
			b.Fatal(err)
		}
		stream := "bench.lines"
		d365test.Runner(b, st, stream, s, flow.RunnerConfig{MaxBatch: 10, Parallelism: 8})
		// Warm up until F&O has throttled: the bucket's initial burst is spent
		// and the limiter has met the budget.
		for w := 0; em.Stats().Clients[foemu.DefaultClientID].Throttled == 0; w++ {
			appendLines(b, st, stream, fmt.Sprintf("W%d-", w), 20)
			d365test.WaitFor(b, time.Minute, "warm-up batch", func() bool {
				recs, _ := st.List(stream, 0, 0)
				return len(recs) < 10 || em.Stats().Clients[foemu.DefaultClientID].Throttled > 0
			})
		}
		d365test.Drained(b, st, stream, 2*time.Minute)
		before := em.Stats().Clients[foemu.DefaultClientID]
		start := time.Now()
		appendLines(b, st, stream, "M", measured)
		d365test.Drained(b, st, stream, 2*time.Minute)
		el := time.Since(start)
		after := em.Stats().Clients[foemu.DefaultClientID]
		reqs, t429 := after.Requests-before.Requests, after.Throttled-before.Throttled
		rate := float64(measured) / el.Seconds()
		b.ReportMetric(rate, "plantgate-records/s")
		b.ReportMetric(rate/budget, "plantgate-of-budget")
		b.ReportMetric(100*float64(t429)/float64(reqs), "plantgate-429-%")
		if dead := d365test.Dead(b, st, stream); len(dead) != 0 {
			b.Fatalf("%d dead letters: %s", len(dead), dead[0].Reason)
		}
		_ = s.Close(context.Background())

		// The naive client, on a fresh budget.
		if err := em.Reset(); err != nil {
			b.Fatal(err)
		}
		throttle()
		tok := foemutest.Token(b, em)
		for w := 0; em.Stats().Clients[foemu.DefaultClientID].Throttled == 0; w++ {
			naive(b, em, tok, fmt.Sprintf("W%d-", w), 20)
		}
		before = em.Stats().Clients[foemu.DefaultClientID]
		start = time.Now()
		naive(b, em, tok, "M", measured)
		el = time.Since(start)
		after = em.Stats().Clients[foemu.DefaultClientID]
		reqs, t429 = after.Requests-before.Requests, after.Throttled-before.Throttled
		b.ReportMetric(float64(measured)/el.Seconds(), "naive-records/s")
		b.ReportMetric(100*float64(t429)/float64(reqs), "naive-429-%")
		b.ReportMetric(budget, "budget-req/s")
	}
}

func appendLines(b testing.TB, st *queue.Store, stream, prefix string, n int) {
	recs := make([]pipeline.Record, n)
	for i := range recs {
		recs[i] = lineRecord(fmt.Sprintf("%s%d", prefix, i%10), i/10+1)
	}
	d365test.Append(b, st, stream, recs...)
}

// naive sends n journal lines with 8 workers as fast as F&O lets them,
// retrying a throttled request after its Retry-After.
func naive(b *testing.B, em *foemu.Emulator, tok, prefix string, n int) {
	b.Helper()
	hc := em.HTTPClient()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				body, _ := json.Marshal(map[string]any{"dataAreaId": "USMF", "JournalNumber": fmt.Sprintf("%s%d", prefix, i%10), "LineNumber": i/10 + 1, "ItemNumber": "RM-2000"})
				for {
					req, _ := http.NewRequest(http.MethodPost, em.BaseURL()+"/data/InventoryCountingJournalLines", bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+tok)
					req.Header.Set("Content-Type", "application/json")
					resp, err := hc.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusTooManyRequests {
						break
					}
					ra, _ := d365.RetryAfter(resp.Header, time.Now())
					t := time.NewTimer(ra)
					<-t.C
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkAddedLatency measures, at 100 records per second, how much
// later a record reaches F&O through plantgate (queue append with fsync ->
// runner -> fo.odata, with its in-flight marker) than with a direct POST
// of the same entity over the same connection, and reports the added p50
// and p99.
func BenchmarkAddedLatency(b *testing.B) {
	n := 500
	em := foemutest.Start(b, func(c *foemu.Config) { f := false; c.Throttling.Enabled = &f })
	for i := 0; i < b.N; i++ {
		fe := d365test.Env(b, em)
		st := d365test.Store(b)
		inner, err := New(lineConfig(), d365test.PluginEnv(b, "lines", fe, st))
		if err != nil {
			b.Fatal(err)
		}
		done := make([]time.Time, n+1)
		var mu sync.Mutex
		sink := writeFunc(func(ctx context.Context, batch []pipeline.Record) error {
			err := inner.Write(ctx, batch)
			now := time.Now()
			mu.Lock()
			for _, r := range batch {
				idx, _ := strconv.Atoi(r.ID)
				done[idx] = now
			}
			mu.Unlock()
			return err
		})
		stream := fmt.Sprintf("lat%d.lines", i)
		d365test.Runner(b, st, stream, sink, flow.RunnerConfig{MaxBatch: 10, Parallelism: 4})
		// The direct POST goes through the same F&O client (connection,
		// token, limiter) without the queue, the runner and the sink.
		post := func(j string, line int) time.Duration {
			body, _ := json.Marshal(map[string]any{"dataAreaId": "USMF", "JournalNumber": j, "LineNumber": line, "ItemNumber": "RM-2000"})
			t0 := time.Now()
			if _, err := fe.Do(context.Background(), &d365.Request{Method: http.MethodPost, Path: "/data/InventoryCountingJournalLines", Body: body, Op: "odata"}); err != nil {
				b.Fatalf("direct POST: %v", err)
			}
			return time.Since(t0)
		}
		post("D-warm", 1)
		// Every 10 ms a record is appended, and 5 ms later the same kind of
		// entity is POSTed directly: both paths are measured in the same
		// moments of the run.
		appended := make([]time.Time, n+1)
		var direct []time.Duration
		tick := time.NewTicker(5 * time.Millisecond)
		for k := 1; k <= n; k++ {
			<-tick.C
			r := lineRecord(fmt.Sprintf("L%d-%d", i, k%20), k)
			r.ID = strconv.Itoa(k)
			appended[k] = time.Now()
			d365test.Append(b, st, stream, r)
			<-tick.C
			direct = append(direct, post(fmt.Sprintf("D%d-%d", i, k%20), k))
		}
		tick.Stop()
		d365test.Drained(b, st, stream, time.Minute)
		var queued []time.Duration
		for k := 1; k <= n; k++ {
			queued = append(queued, done[k].Sub(appended[k]))
		}
		q50, q99 := pct(queued, 50), pct(queued, 99)
		d50, d99 := pct(direct, 50), pct(direct, 99)
		b.ReportMetric(ms(q50-d50), "p50-added-ms")
		b.ReportMetric(ms(q99-d99), "p99-added-ms")
		b.ReportMetric(ms(q50), "p50-queued-ms")
		b.ReportMetric(ms(q99), "p99-queued-ms")
		b.ReportMetric(ms(d50), "p50-direct-ms")
		b.ReportMetric(ms(d99), "p99-direct-ms")
		_ = inner.Close(context.Background())
	}
}

type writeFunc func(ctx context.Context, batch []pipeline.Record) error

func (f writeFunc) Write(ctx context.Context, batch []pipeline.Record) error { return f(ctx, batch) }

func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
