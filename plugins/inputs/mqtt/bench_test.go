package mqtt

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/plantgate/plantgate/internal/queue"
)

// Ingest benchmarks: b.N QoS 1 messages of about 200 bytes through a
// mosquitto started by the benchmark, into the queue (fsync on), beside a
// null subscriber (acknowledges at once, stores nothing) on the same
// broker in the same run. They report msg/s for both and their ratio.
// make bench runs them; make test does not.

// nullSubscriber connects with a persistent session and counts messages.
type nullSubscriber struct {
	c paho.Client
	n atomic.Int64
}

func newNullSubscriber(b *testing.B, url, id, topic string) *nullSubscriber {
	ns := &nullSubscriber{}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(false).SetOrderMatters(true).
		SetDefaultPublishHandler(func(paho.Client, paho.Message) { ns.n.Add(1) })
	ns.c = paho.NewClient(o)
	if tok := ns.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	if tok := ns.c.Subscribe(topic, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	return ns
}

func (ns *nullSubscriber) reconnect(b *testing.B) {
	if tok := ns.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
}

func waitCount(b *testing.B, what string, n int64, count func() int64) {
	deadline := time.Now().Add(5 * time.Minute)
	tk := time.NewTicker(time.Millisecond)
	defer tk.Stop()
	for count() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d of %d after 5 minutes", what, count(), n)
		}
		<-tk.C
	}
}

func benchGateway(b *testing.B, m *mosquitto, id, topic string) *gateway {
	cfg := clientConfig(m, id, topic)
	g := newGateway(b, filepath.Join(b.TempDir(), "q.db"), cfg, queue.Options{})
	return g
}

// cpuClock reads the CPU time (user and system) of this process and of
// the broker, so a benchmark can say where the time of each phase went.
type cpuClock struct {
	m          *mosquitto
	self, brok time.Duration
}

func (c *cpuClock) read() (self, broker time.Duration) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.m.cmd.Process.Pid)); err == nil {
		// Fields after the command name: utime and stime are the 12th
		// and 13th, in clock ticks (100 a second on Linux).
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				s, _ := strconv.ParseInt(f[12], 10, 64)
				broker = time.Duration(u+s) * 10 * time.Millisecond
			}
		}
	}
	return self, broker
}

func (c *cpuClock) start() { c.self, c.brok = c.read() }

// perMsg is the CPU microseconds per message of this process and of the
// broker since start.
func (c *cpuClock) perMsg(n int64) (self, broker float64) {
	s, br := c.read()
	return float64((s - c.self).Microseconds()) / float64(n), float64((br - c.brok).Microseconds()) / float64(n)
}

// reportCPU reports what perMsg measured for a phase, under the names
// <what>_cpu_us/msg and <what>_broker_cpu_us/msg.
func reportCPU(b *testing.B, what string, self, broker float64) {
	b.ReportMetric(self, what+"_cpu_us/msg")
	b.ReportMetric(broker, what+"_broker_cpu_us/msg")
}

// BenchmarkIngestLive publishes while the subscriber is connected.
func BenchmarkIngestLive(b *testing.B) {
	m := startMosquitto(b)
	n := int64(b.N)
	pub := newPublisher(b, m.url(), "bench-pub")

	ns := newNullSubscriber(b, m.url(), "bench-null", "null/#")
	start := time.Now()
	pub.send("null/a", 1, "n", 0, b.N)
	waitCount(b, "null subscriber", n, ns.n.Load)
	nullRate := float64(n) / time.Since(start).Seconds()
	ns.c.Disconnect(100)

	g := benchGateway(b, m, "bench-gw", "gw/#").start()
	g.waitSubscribed()
	b.ResetTimer()
	start = time.Now()
	pub.send("gw/a", 1, "g", 0, b.N)
	waitCount(b, "gateway", n, g.src.acked.Load)
	gwRate := float64(n) / time.Since(start).Seconds()
	b.StopTimer()
	b.ReportMetric(gwRate, "msg/s")
	b.ReportMetric(nullRate, "null_msg/s")
	b.ReportMetric(gwRate/nullRate, "ratio")
	g.close()
}

// BenchmarkIngestBacklog drains b.N messages the broker queued while the
// subscriber was away.
func BenchmarkIngestBacklog(b *testing.B) {
	m := startMosquitto(b)
	n := int64(b.N)
	pub := newPublisher(b, m.url(), "bench-pub")

	ns := newNullSubscriber(b, m.url(), "bench-null", "null/#")
	ns.c.Disconnect(100)
	pub.send("null/a", 1, "n", 0, b.N)
	clk := &cpuClock{m: m}
	clk.start()
	start := time.Now()
	ns.reconnect(b)
	waitCount(b, "null subscriber", n, ns.n.Load)
	nullRate := float64(n) / time.Since(start).Seconds()
	nullCPU, nullBroker := clk.perMsg(n)
	ns.c.Disconnect(100)

	g := benchGateway(b, m, "bench-gw", "gw/#").start()
	g.waitSubscribed()
	g.stop()
	pub.send("gw/a", 1, "g", 0, b.N)
	b.ResetTimer()
	clk.start()
	start = time.Now()
	g.start()
	waitCount(b, "gateway", n, g.src.acked.Load)
	gwRate := float64(n) / time.Since(start).Seconds()
	b.StopTimer()
	gwCPU, gwBroker := clk.perMsg(n)
	reportCPU(b, "gw", gwCPU, gwBroker)
	reportCPU(b, "null", nullCPU, nullBroker)
	b.ReportMetric(gwRate, "msg/s")
	b.ReportMetric(nullRate, "null_msg/s")
	b.ReportMetric(gwRate/nullRate, "ratio")
	if got := g.count(); got != b.N {
		b.Fatalf("queue holds %d records, want %d", got, b.N)
	}
	g.close()
}
