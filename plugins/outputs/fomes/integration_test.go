package fomes

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// startedQuantities returns, per production order, the StartedQuantity of
// each message F&O received, in the order received.
func startedQuantities(t testing.TB, em *foemu.Emulator) (map[string][]int, int) {
	t.Helper()
	out := map[string][]int{}
	msgs := em.Messages()
	for _, m := range msgs {
		var c struct{ StartedQuantity int }
		if err := json.Unmarshal([]byte(m.Content), &c); err != nil {
			t.Fatalf("message content %q: %v", m.Content, err)
		}
		out[m.ProductionOrder] = append(out[m.ProductionOrder], c.StartedQuantity)
	}
	return out, len(msgs)
}

// TestIntegrationOutage sends messages through a queue and a runner while
// F&O answers 503 for a while (compressed "outage"): the breaker stops the
// sink from hammering it, the sink reports not ready, and every message
// arrives once, in order per production order, after the outage.
func TestIntegrationOutage(t *testing.T) {
	testOutage(t, 200, 8*time.Millisecond, 1200*time.Millisecond)
}

// TestLongOutage is the soak variant: 3000 messages over a 30 s outage.
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
	s := newSink(t, mesConfig("ProdProductionOrderStart", InDoubtHold), fe, st)
	stream := "start.mes"
	d365test.Runner(t, st, stream, s, flow.RunnerConfig{MaxBatch: 10, Parallelism: 4})
	var notReady atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := s.Probe(context.Background()); errors.Is(err, pipeline.ErrNotReady) {
				notReady.Add(1)
			}
		}
	}()
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteMES, Outage: &foemu.Outage{Mode: foemu.Outage503,
		StartIn: foemu.Duration(300 * time.Millisecond), Duration: foemu.Duration(outage)}}}}); err != nil {
		t.Fatal(err)
	}
	orders := []string{"P000101", "P000102", "P000103", "P000104"}
	want := map[string]int{}
	tick := time.NewTicker(every)
	for i := range n {
		<-tick.C
		o := orders[i%len(orders)]
		want[o]++
		d365test.Append(t, st, stream, pipeline.Record{Key: o, Fields: map[string]any{"ProductionOrderNumber": o, "StartedQuantity": want[o]}})
	}
	tick.Stop()
	d365test.Drained(t, st, stream, 60*time.Second)
	close(stop)
	wg.Wait()
	got, total := startedQuantities(t, em)
	if total != n {
		t.Errorf("%d messages in F&O, want %d", total, n)
	}
	for o, k := range want {
		q := got[o]
		ok := len(q) == k
		for i := 0; ok && i < len(q); i++ {
			ok = q[i] == i+1
		}
		if !ok {
			t.Errorf("order %s: messages %v, want 1..%d in order", o, q, k)
		}
	}
	if dead := d365test.Dead(t, st, stream); len(dead) != 0 {
		t.Errorf("%d dead letters, first: %s", len(dead), dead[0].Reason)
	}
	if notReady.Load() == 0 {
		t.Error("the sink never reported not ready during the outage")
	}
	if c := em.Stats().Count(foemu.RouteMES, 503); c > 40 {
		t.Errorf("%d requests answered 503 during the outage: the sink kept hammering F&O", c)
	}
	t.Logf("%d messages across a %v outage: all delivered once and in order; %d requests hit the outage", n, outage, em.Stats().Count(foemu.RouteMES, 503))
}
