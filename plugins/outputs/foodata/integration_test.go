package foodata

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
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
)

// lineConfig writes counting journal lines by their full key, so every
// record is one entity and a record in doubt can be read back.
func lineConfig() *Config {
	return &Config{Env: "test", Entity: "InventoryCountingJournalLines", Mode: ModeCreate, Key: []string{"dataAreaId", "JournalNumber", "LineNumber"},
		CompanyField: "dataAreaId", InDoubt: "hold", Batch: Batch{ChangesetSize: 10}}
}

func lineRecord(journal string, line int) pipeline.Record {
	return pipeline.Record{Key: journal, Fields: map[string]any{
		"JournalNumber": journal, "LineNumber": json.Number(strconv.Itoa(line)), "ItemNumber": "RM-2000", "CountedQuantity": json.Number(strconv.Itoa(line)),
	}}
}

// journalLines reads the counting journal lines back through OData and
// returns, per journal, the line numbers in the order F&O stored them
// (the version in each line's @odata.etag is F&O's global write order).
func journalLines(t testing.TB, em *foemu.Emulator) (map[string][]int, int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, em.BaseURL()+"/data/InventoryCountingJournalLines?cross-company=true", nil)
	req.Header.Set("Authorization", "Bearer "+foemutest.Token(t, em))
	resp, err := em.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Value []struct {
			Etag          string  `json:"@odata.etag"`
			JournalNumber string  `json:"JournalNumber"`
			LineNumber    float64 `json:"LineNumber"`
		} `json:"value"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	type line struct {
		n       int
		version int
	}
	byJournal := map[string][]line{}
	for _, v := range body.Value {
		b64 := strings.TrimSuffix(strings.TrimPrefix(v.Etag, `W/"`), `"`)
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatalf("etag %q: %v", v.Etag, err)
		}
		_, ver, _ := strings.Cut(string(raw), ",")
		n, _ := strconv.Atoi(ver)
		byJournal[v.JournalNumber] = append(byJournal[v.JournalNumber], line{int(v.LineNumber), n})
	}
	out := map[string][]int{}
	for j, ls := range byJournal {
		// Sort by write order.
		for i := 1; i < len(ls); i++ {
			for k := i; k > 0 && ls[k].version < ls[k-1].version; k-- {
				ls[k], ls[k-1] = ls[k-1], ls[k]
			}
		}
		for _, l := range ls {
			out[j] = append(out[j], l.n)
		}
	}
	return out, len(body.Value)
}

// checkInOrder fails unless each journal holds lines 1..want[j] written in order.
func checkInOrder(t testing.TB, got map[string][]int, want map[string]int) {
	t.Helper()
	for j, n := range want {
		lines := got[j]
		if len(lines) != n {
			t.Errorf("journal %s: %d lines in F&O, want %d", j, len(lines), n)
			continue
		}
		for i, l := range lines {
			if l != i+1 {
				t.Errorf("journal %s written in the order %v", j, lines)
				break
			}
		}
	}
}

// TestIntegrationOutage runs records through a queue and a runner while
// F&O goes away (connections refused) and comes back, compressed into
// seconds: the sink stops hammering it, reports not ready, and delivers
// everything in order per key once it is back.
func TestIntegrationOutage(t *testing.T) {
	testOutage(t, 240, 8*time.Millisecond, 1200*time.Millisecond)
}

// TestLongOutage is the soak variant: 3000 records over a 30 s outage.
func TestLongOutage(t *testing.T) {
	if os.Getenv("PLANTGATE_LONG") == "" {
		t.Skip("set PLANTGATE_LONG=1 (make e2e-long)")
	}
	testOutage(t, 3000, 10*time.Millisecond, 30*time.Second)
}

func testOutage(t *testing.T, n int, every, outage time.Duration) {
	em := foemutest.Start(t)
	fe := d365test.Env(t, em, d365test.FastBreaker)
	st := d365test.Store(t)
	s := newSink(t, lineConfig(), fe, st)
	stream := "count.lines"
	d365test.Runner(t, st, stream, s, flow.RunnerConfig{MaxBatch: 10, Parallelism: 4})

	var notReady atomic.Int64
	stopProbe := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopProbe:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if err := s.Probe(ctx); errors.Is(err, pipeline.ErrNotReady) {
				notReady.Add(1)
			}
			cancel()
		}
	}()
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: "*", Outage: &foemu.Outage{Mode: foemu.OutageRefuse,
		StartIn: foemu.Duration(300 * time.Millisecond), Duration: foemu.Duration(outage)}}}}); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	tick := time.NewTicker(every)
	for i := range n {
		<-tick.C
		j := fmt.Sprintf("J%d", i%6)
		want[j]++
		d365test.Append(t, st, stream, lineRecord(j, want[j]))
	}
	tick.Stop()
	d365test.Drained(t, st, stream, 60*time.Second)
	close(stopProbe)
	wg.Wait()
	got, total := journalLines(t, em)
	if total != n {
		t.Errorf("%d lines in F&O, want %d", total, n)
	}
	checkInOrder(t, got, want)
	if dead := d365test.Dead(t, st, stream); len(dead) != 0 {
		t.Errorf("%d dead letters, first: %s", len(dead), dead[0].Reason)
	}
	if notReady.Load() == 0 {
		t.Error("the sink never reported not ready during the outage")
	}
	t.Logf("%d records across a %v outage: all delivered in order; probe not ready %d times", n, outage, notReady.Load())
}

// TestIntegrationThrottling delivers through a budget far below the
// sink's ceiling: F&O answers 429 at first, the limiter adapts, and every
// record arrives exactly once.
func TestIntegrationThrottling(t *testing.T) { testThrottling(t, 150) }

// TestLongThrottling is the soak variant: 3000 records through the budget.
func TestLongThrottling(t *testing.T) {
	if os.Getenv("PLANTGATE_LONG") == "" {
		t.Skip("set PLANTGATE_LONG=1 (make e2e-long)")
	}
	testThrottling(t, 3000)
}

func testThrottling(t *testing.T, n int) {
	em := foemutest.Start(t)
	if err := em.SetFaults(foemu.Faults{Throttling: &foemu.ThrottleConfig{RequestsPerSecond: 60, Burst: 20, Concurrent: 4}}); err != nil {
		t.Fatal(err)
	}
	fe := d365test.Env(t, em, func(c *config.FOEnv, _ *d365.Options) { c.MaxRequestsPerSecond, c.MaxConcurrent = 200, 8 })
	st := d365test.Store(t)
	s := newSink(t, lineConfig(), fe, st)
	stream := "count.lines"
	want := map[string]int{}
	var recs []pipeline.Record
	for i := range n {
		j := fmt.Sprintf("T%d", i%10)
		want[j]++
		recs = append(recs, lineRecord(j, want[j]))
	}
	d365test.Append(t, st, stream, recs...)
	// The limiter wins its rate back as requests succeed: watch its lowest.
	startRate, minRate := fe.Limiter().Rate(), fe.Limiter().Rate()
	stopWatch, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			minRate = min(minRate, fe.Limiter().Rate())
			select {
			case <-stopWatch:
				return
			case <-tick.C:
			}
		}
	}()
	d365test.Runner(t, st, stream, s, flow.RunnerConfig{MaxBatch: 10, Parallelism: 8})
	d365test.Drained(t, st, stream, time.Duration(n/60*2+30)*time.Second)
	close(stopWatch)
	<-watched
	if c := em.Stats().Count(foemu.RouteOData, http.StatusTooManyRequests); c == 0 {
		t.Error("the emulator answered no 429: the test did not throttle")
	}
	if th := fe.Limiter().Status().Throttled; th == 0 {
		t.Error("the limiter saw no 429")
	}
	if minRate >= startRate {
		t.Errorf("the limiter never slowed down: lowest rate %.1f/s, start %.1f/s", minRate, startRate)
	}
	got, total := journalLines(t, em)
	if total != n {
		t.Errorf("%d lines in F&O, want %d", total, n)
	}
	checkInOrder(t, got, want)
	if dead := d365test.Dead(t, st, stream); len(dead) != 0 {
		t.Errorf("%d dead letters, first: %s", len(dead), dead[0].Reason)
	}
	cs := em.Stats().Clients[foemu.DefaultClientID]
	t.Logf("%d records, %d requests, %d answered 429; limiter from %.1f/s down to %.1f/s, now %.1f/s", n, cs.Requests, cs.Throttled, startRate, minRate, fe.Limiter().Rate())
}
