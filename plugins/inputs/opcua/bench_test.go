package opcua

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/plantgate/plantgate/internal/opcuasim"
)

// The OPC UA benchmark: a gopcua line simulator in a process of its own
// changes each of benchItems variables every benchEvery; a null client
// (gopcua's own subscription loop; it counts the values and does nothing
// else) and then the opcua source (every value change a record, committed
// with fsync into the queue) each subscribe for benchWindow. Each client
// gets a fresh server process of the same binary and settings: the gopcua
// server deadlocks when a subscription is deleted while its items change
// (ChangeNotification holds the monitored-item lock while it sends to the
// dead subscription's full channel), so the second client could not
// subscribe after the first left. Reported: value changes per
// second for both, their ratio, and the CPU of this process (the client
// side only) in cores during each window. make bench runs it; make test
// does not.

const (
	benchItems  = 10_000
	benchEvery  = 250 * time.Millisecond
	benchWindow = 5 * time.Second
)

// TestOPCUABenchServerHelper is not a test: BenchmarkOPCUAIngest runs the
// test binary again with PLANTGATE_OPCUA_BENCH_SERVER set to a port, and
// this function serves benchItems variables, each changed every
// benchEvery, printing "ready" once it listens.
func TestOPCUABenchServerHelper(t *testing.T) {
	port := os.Getenv("PLANTGATE_OPCUA_BENCH_SERVER")
	if port == "" {
		t.Skip("helper process for BenchmarkOPCUAIngest")
	}
	p, _ := strconv.Atoi(port)
	sim, err := opcuasim.Start(context.Background(), opcuasim.Options{Port: p, Extra: benchItems})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	v := uint32(0)
	tk := time.NewTicker(benchEvery)
	for range tk.C {
		v++
		for i := 0; i < benchItems; i++ {
			sim.SetExtra(i, v)
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// window measures count over benchWindow after a warm-up of warm, and
// returns changes per second and cores used.
func window(warm time.Duration, count func() int64) (float64, float64) {
	time.Sleep(warm)
	n0, c0, t0 := count(), cpuTime(), time.Now()
	time.Sleep(benchWindow)
	n1, c1, el := count(), cpuTime(), time.Since(t0)
	return float64(n1-n0) / el.Seconds(), (c1 - c0).Seconds() / el.Seconds()
}

// benchServer starts the helper server process and returns its endpoint;
// the benchmark's cleanup kills it.
func benchServer(b *testing.B) string {
	port, err := opcuasim.FreePort("127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOPCUABenchServerHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PLANTGATE_OPCUA_BENCH_SERVER="+strconv.Itoa(port))
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		b.Fatalf("bench server: %q", sc.Text())
	}
	go func() {
		for sc.Scan() {
		}
	}()
	return fmt.Sprintf("opc.tcp://127.0.0.1:%d", port)
}

func BenchmarkOPCUAIngest(b *testing.B) {
	ids := make([]string, benchItems)
	for i := range ids {
		ids[i] = "nsu=" + opcuasim.DefaultNamespace + ";s=Bench." + strconv.Itoa(i)
	}
	for range b.N {
		nullRate, nullCPU := benchNull(b, benchServer(b), ids)
		pgRate, pgCPU := benchSource(b, benchServer(b), ids)
		b.ReportMetric(pgRate, "changes/s")
		b.ReportMetric(pgCPU, "cores")
		b.ReportMetric(nullRate, "null-changes/s")
		b.ReportMetric(nullCPU, "null-cores")
		b.ReportMetric(pgRate/nullRate, "x-null")
		b.Logf("%d items changed every %s: plantgate %.0f changes/s into the queue at %.2f cores; null client %.0f changes/s at %.2f cores; ratio %.2f",
			benchItems, benchEvery, pgRate, pgCPU, nullRate, nullCPU, pgRate/nullRate)
	}
}

// benchNull subscribes with gopcua's own subscription loop and counts.
func benchNull(b *testing.B, endpoint string, ids []string) (float64, float64) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := opcua.NewClient(endpoint, opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.RequestTimeout(30*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() { go c.Close(context.Background()) }()
	ns, err := c.NamespaceArray(ctx)
	if err != nil {
		b.Fatal(err)
	}
	notify := make(chan *opcua.PublishNotificationData, 256)
	sub, err := c.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: 100 * time.Millisecond}, notify)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < len(ids); i += maxPerCall {
		var reqs []*ua.MonitoredItemCreateRequest
		for j := i; j < min(i+maxPerCall, len(ids)); j++ {
			ref, _ := ParseNodeRef(ids[j])
			nid, err := ref.Resolve(ns)
			if err != nil {
				b.Fatal(err)
			}
			reqs = append(reqs, opcua.NewMonitoredItemCreateRequestWithDefaults(nid, ua.AttributeIDValue, uint32(j+1)))
		}
		if _, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, reqs...); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case d := <-notify:
				if dc, ok := d.Value.(*ua.DataChangeNotification); ok {
					n.Add(int64(len(dc.MonitoredItems)))
				}
			}
		}
	}()
	return window(2*time.Second, n.Load)
}

// benchSource runs the opcua source into a queue (fsync on) and counts the
// records committed.
func benchSource(b *testing.B, endpoint string, ids []string) (float64, float64) {
	var cfg strings.Builder
	cfg.WriteString("endpoint: " + endpoint + "\nsecurity: {policy: None, mode: None}\npublishing_interval: 100ms\nemit_values: true\nnodes:\n")
	for i, id := range ids {
		fmt.Fprintf(&cfg, "  b%d: {node: %q, sampling: 0s, queue_size: 1}\n", i, id)
	}
	// One flow, for the values: what a config that records values has.
	g := newGatewayFlows(b, b.TempDir(), cfg.String(), "values: {from: line, when: 'meta.kind == \"value\"', to: out}")
	g.start()
	defer g.stop()
	count := func() int64 {
		st, err := g.store.Stats()
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range st.Streams {
			if s.Stream == valueStream {
				return s.Records
			}
		}
		return 0
	}
	deadline := time.Now().Add(60 * time.Second)
	for count() < benchItems {
		if time.Now().After(deadline) {
			b.Fatalf("the source did not subscribe to %d items within 60s: %v", benchItems, g.status()["last_error"])
		}
		time.Sleep(100 * time.Millisecond)
	}
	return window(time.Second, count)
}
